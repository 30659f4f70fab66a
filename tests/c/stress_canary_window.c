/* stress_canary_window.c — the window free_standard prefetches the canary from
 * (detect_canary_window) holds the canary of every slab request, and is no wider.
 *
 * usage: stress_canary_window LEVEL   (standard: the level whose free prefetches)
 * A cross-thread free at standard fetches the canary's possible lines before it
 * reads the header (whose size says where the canary is). Every request size a
 * slab serves is allocated once: its canary's bytes [user + size, user + size + 7]
 * must lie inside the window of the class it landed in, and per class the window's
 * ends must be the smallest request's canary start and the largest one's last byte
 * (a window computed from a stale class table or header layout fails one or the
 * other).
 */
#include "core.h"
#include "stress_common.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LEVEL\n", argv[0]);
        return 2;
    }
    nmm_heap_t *h = heap_with("level=%s", argv[1]);
    CHECK(h->user_off == CORE_HDR && h->checks);
    uint32_t first[CORE_CLASSES], last[CORE_CLASSES];
    memset(first, 0xff, sizeof first);
    memset(last, 0, sizeof last);
    for (uint32_t size = 0; size + CORE_HDR + CORE_CANARY <= CORE_SMALL_MAX; size++) {
        uint8_t *user = nmm_alloc(h, size, 0);
        CHECK(user != NULL);
        slab_t *s = slab_of(h, (uintptr_t)user);
        CHECK(s != NULL);
        CHECK_EQ(s->block_size, sizeclass_table[s->cls]);
        uint32_t lo, hi;
        detect_canary_window(s->cls, s->block_size, &lo, &hi);
        if (size < lo || size + CORE_CANARY - 1 > hi) {
            fprintf(stderr, "size %u (class %u, %u B): canary [%u, %u] outside the window [%u, %u]\n",
                    size, s->cls, s->block_size, size, size + CORE_CANARY - 1, lo, hi);
            return 1;
        }
        if (size < first[s->cls])
            first[s->cls] = size;
        if (size + CORE_CANARY - 1 > last[s->cls])
            last[s->cls] = size + CORE_CANARY - 1;
        CHECK_EQ(nmm_free(h, user, 0), NMM_OK);
    }
    for (uint32_t c = 0; c < CORE_CLASSES; c++) {
        uint32_t lo, hi;
        detect_canary_window(c, sizeclass_table[c], &lo, &hi);
        if (first[c] != lo || last[c] != hi) {
            fprintf(stderr, "class %u (%u B): window [%u, %u], canaries seen [%u, %u]\n", c,
                    sizeclass_table[c], lo, hi, first[c], last[c]);
            return 1;
        }
    }
    nmm_heap_destroy(h);
    printf("ok %u classes\n", CORE_CLASSES);
    return 0;
}
