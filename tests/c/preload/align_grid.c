/* align_grid.c — the alignment x size grid through the C API (linked with
 * libnmm.a): every power-of-two alignment from 1 to 2^24 with sizes around the
 * class and page boundaries, on a heap of the level given (off, standard,
 * paranoid). Each block must be aligned, usable for its whole size, keep its
 * contents through a realloc, free cleanly and leave no event; alignments that
 * are not powers of two are EINVAL, ones no mapping can hold ENOMEM.
 *   align_grid LEVEL
 * Prints "grid ok: N blocks" or the first failure (exit 1).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nmm.h"

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            printf("FAILED line %d: %s: ", __LINE__, #cond);                \
            printf(__VA_ARGS__);                                            \
            printf("\n");                                                   \
            return 1;                                                       \
        }                                                                   \
    } while (0)

static const size_t sizes[] = {0,    1,     15,    16,     17,     100,    4095,
                               4096, 4097,  65536, 131072, 200000, (1 << 20) + 3};

int main(int argc, char **argv)
{
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    char err[256];
    char opts[64];
    snprintf(opts, sizeof opts, "level=%s", argc > 1 ? argv[1] : "standard");
    if (nmm_config_parse(&cfg, opts, err, sizeof err) != NMM_OK) {
        printf("bad level: %s\n", err);
        return 2;
    }
    nmm_heap_t *h = nmm_heap_create(&cfg);
    CHECK(h != NULL, "heap");
    unsigned blocks = 0;
    for (int shift = 0; shift <= 24; shift++) {
        size_t align = (size_t)1 << shift;
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            size_t size = sizes[i];
            unsigned char *p = nmm_aligned_alloc(h, align, size, 0);
            CHECK(p != NULL, "align %zu size %zu: errno %d", align, size, errno);
            CHECK((uintptr_t)p % align == 0, "align %zu size %zu: %p", align, size, (void *)p);
            CHECK(nmm_usable_size(h, p) >= size, "align %zu size %zu: usable %zu", align, size,
                  nmm_usable_size(h, p));
            memset(p, (int)(shift + i + 1), size);
            /* grow it: the contents stay (the new block need not keep the alignment) */
            unsigned char *q = nmm_realloc(h, p, size + 100, 0);
            CHECK(q != NULL, "realloc align %zu size %zu", align, size);
            for (size_t k = 0; k < size; k++)
                CHECK(q[k] == (unsigned char)(shift + i + 1), "align %zu size %zu byte %zu", align,
                      size, k);
            CHECK(nmm_free(h, q, 0) == NMM_OK, "free align %zu size %zu", align, size);
            /* and one freed as it came */
            p = nmm_aligned_alloc(h, align, size, 0);
            CHECK(p != NULL && (uintptr_t)p % align == 0, "again align %zu size %zu", align, size);
            memset(p, 0xA5, size);
            CHECK(nmm_free(h, p, 0) == NMM_OK, "free again align %zu size %zu", align, size);
            blocks += 2;
        }
    }
    size_t bad[] = {0, 3, 24, 48, 4097, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        CHECK(nmm_aligned_alloc(h, bad[i], 64, 0) == NULL && errno == EINVAL, "alignment %zu",
              bad[i]);
    }
    size_t huge[] = {(size_t)1 << 47, (size_t)1 << 63};
    for (size_t i = 0; i < 2; i++) {
        errno = 0;
        CHECK(nmm_aligned_alloc(h, huge[i], 64, 0) == NULL && errno == ENOMEM, "alignment %zu",
              huge[i]);
    }
    nmm_event_t ev[8];
    size_t n = nmm_events_drain(h, ev, 8);
    CHECK(n == 0, "%zu events, the first %s", n, nmm_event_kind_str(ev[0].kind));
    CHECK(nmm_validate(h) == 0, "validate");
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(nmm_stats_get(h, &st) == NMM_OK && st.live_blocks == 0, "live %llu",
          (unsigned long long)st.live_blocks);
    nmm_heap_destroy(h);
    printf("grid ok: %u blocks\n", blocks);
    return 0;
}
