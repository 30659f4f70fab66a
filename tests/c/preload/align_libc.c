/* align_libc.c — the alignment x size grid through the C library's aligned
 * entry points (aligned_alloc, posix_memalign, memalign, valloc, pvalloc), for
 * running under libnmm_preload.so and, to compare, under glibc's own malloc:
 * every power-of-two alignment from 1 to 2^24 with sizes around the class and
 * page boundaries; memalign's alignments that are not powers of two (rounded up,
 * as glibc does); the refusals (EINVAL, ENOMEM). Prints "grid ok: N blocks" or
 * the first failure (exit 1).
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
#define NSIZES (sizeof sizes / sizeof *sizes)

/* Fill, grow with realloc, check the contents survived, free. */
static int use(unsigned char *p, size_t align, size_t size, int seed)
{
    CHECK(p != NULL, "align %zu size %zu: errno %d", align, size, errno);
    CHECK((uintptr_t)p % align == 0, "align %zu size %zu: %p", align, size, (void *)p);
    CHECK(malloc_usable_size(p) >= size, "align %zu size %zu: usable %zu", align, size,
          malloc_usable_size(p));
    memset(p, seed, size);
    unsigned char *q = realloc(p, size + 100);
    CHECK(q != NULL, "realloc align %zu size %zu", align, size);
    for (size_t k = 0; k < size; k++)
        CHECK(q[k] == (unsigned char)seed, "align %zu size %zu byte %zu", align, size, k);
    free(q);
    return 0;
}

int main(void)
{
    /* volatile: keep the compiler from reasoning about the calls' arguments */
    volatile size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned blocks = 0;
    for (int shift = 0; shift <= 24; shift++) {
        volatile size_t align = (size_t)1 << shift;
        for (size_t i = 0; i < NSIZES; i++) {
            size_t size = sizes[i];
            int seed = (int)(shift * 16 + i + 1);
            /* glibc takes any size (C11 once asked for a multiple of align) */
            if (use(aligned_alloc(align, size), align, size, seed))
                return 1;
            blocks++;
            if (align >= sizeof(void *)) {
                void *m = NULL;
                int rc = posix_memalign(&m, align, size);
                CHECK(rc == 0, "posix_memalign align %zu size %zu: %d", align, size, rc);
                if (use(m, align, size, seed + 1))
                    return 1;
                blocks++;
            }
            if (use(memalign(align, size), align, size, seed + 2))
                return 1;
            blocks++;
        }
    }
    /* memalign rounds an alignment that is not a power of two up to one */
    size_t odd[] = {24, 48, 100, 3000, 5000, 12288, 100000};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        size_t up = 1;
        while (up < odd[i])
            up <<= 1;
        if (use(memalign(odd[i], 1000), up, 1000, (int)i + 3))
            return 1;
        blocks++;
    }
    for (size_t i = 0; i < NSIZES; i++) {
        if (use(valloc(sizes[i]), page, sizes[i], (int)i + 7))
            return 1;
        unsigned char *pv = pvalloc(sizes[i]);
        /* a whole number of pages (glibc rounds 0 to 0) */
        CHECK(pv && malloc_usable_size(pv) >= (sizes[i] + page - 1) / page * page,
              "pvalloc %zu: usable %zu", sizes[i], pv ? malloc_usable_size(pv) : 0);
        if (use(pv, page, sizes[i], (int)i + 9))
            return 1;
        blocks += 2;
    }
    volatile size_t three = 3, huge_align = (size_t)1 << 47, zero = 0;
    void *m = NULL;
    CHECK(posix_memalign(&m, three, 64) == EINVAL, "posix_memalign(3)");
    CHECK(posix_memalign(&m, sizeof(void *) / 2, 64) == EINVAL, "posix_memalign(4)");
    CHECK(posix_memalign(&m, huge_align, 64) == ENOMEM, "posix_memalign(2^47)");
    errno = 0;
    CHECK(aligned_alloc(huge_align, huge_align) == NULL && errno == ENOMEM, "aligned_alloc(2^47)");
    errno = 0;
    CHECK(memalign(huge_align, 64) == NULL && errno == ENOMEM, "memalign(2^47)");
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 2, 64) == NULL && errno == EINVAL, "memalign(2^63 + 1)");
    void *z = memalign(zero, 10);
    CHECK(z != NULL, "memalign(0)");
    free(z);
    printf("grid ok: %u blocks\n", blocks);
    return 0;
}
