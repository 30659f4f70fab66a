/* stress_region.c — a heap whose region is full (built with a tiny region:
 * -DNMM_TEST_REGION_BYTES, see tests/test_c_stress.py).
 * usage: stress_region LEVEL
 * Fills the region with one class, checks another class then fails cleanly,
 * frees everything (retain 0: every slab given back), then fills it again with
 * a class of bigger blocks, which reuses the given-back ranges (their
 * descriptors are big enough); then, on a new heap, the other way round (the
 * class with more blocks per slab gets new descriptors for the ranges). Patterns prove no block is handed out twice;
 * validate is clean throughout (slab sweeps and releases on a region that is
 * only page aligned); stats add up and every slab comes back.
 */
#include "stress_common.h"

#include <errno.h>

#define MAX_BLOCKS 100000

static void *blocks[MAX_BLOCKS];

/* Allocate `size` until the heap says no; returns how many, each filled. */
static size_t fill(nmm_heap_t *h, size_t size, uint64_t salt)
{
    size_t n = 0;
    while (n < MAX_BLOCKS) {
        void *p = nmm_alloc(h, size, 0);
        if (!p) {
            CHECK_EQ(errno, ENOMEM);
            break;
        }
        CHECK(((uintptr_t)p & 15) == 0);
        block_fill(p, size, salt + n);
        blocks[n++] = p;
    }
    CHECK(n < MAX_BLOCKS);
    return n;
}

static void verify_and_free(nmm_heap_t *h, size_t n, size_t size, uint64_t salt)
{
    for (size_t i = 0; i < n; i++)
        block_verify(blocks[i], size, salt + i);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(nmm_free(h, blocks[i], 0), NMM_OK);
}

/* The end of each scenario: stats add up, nothing live, no event, validate clean. */
static void check_empty_and_clean(nmm_heap_t *h)
{
    nmm_stats_t st = stats_of(h);
    stats_match_heap(h, &st, 0);
    CHECK_EQ(st.events, 0);
    CHECK_EQ(nmm_validate(h), 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LEVEL\n", argv[0]);
        return 2;
    }
    nmm_heap_t *h = heap_with("level=%s:tcache=0:retain=0", argv[1]);

    size_t small = fill(h, 40, 1);          /* 48/64-B class until the region is full */
    CHECK(small > 1000);
    CHECK(nmm_alloc(h, 80, 0) == NULL);     /* another class: no range left */
    CHECK_EQ(nmm_validate(h), 0);
    verify_and_free(h, small, 40, 1);
    nmm_stats_t st = stats_of(h);
    CHECK_EQ(st.slabs_returned, st.slabs_mapped);

    size_t big = fill(h, 80, 7);            /* 96/112-B class: borrows every range back */
    CHECK(big > small / 3);
    CHECK_EQ(nmm_validate(h), 0);
    verify_and_free(h, big, 80, 7);

    check_empty_and_clean(h);
    nmm_heap_destroy(h);

    /* The reverse: the bigger blocks first, then the class with more blocks per
     * slab, whose blocks no kept descriptor has room for: each range gets a
     * descriptor sized for it, so it gets exactly what a fresh region gives. */
    h = heap_with("level=%s:tcache=0:retain=0", argv[1]);
    size_t first = fill(h, 80, 11);
    CHECK(first > 1000);
    verify_and_free(h, first, 80, 11);
    st = stats_of(h);
    CHECK_EQ(st.slabs_returned, st.slabs_mapped);
    size_t reused = fill(h, 40, 13);
    CHECK_EQ(reused, small);
    CHECK_EQ(nmm_validate(h), 0);
    verify_and_free(h, reused, 40, 13);
    size_t back = fill(h, 80, 17);           /* and back: the ranges still serve both */
    CHECK_EQ(back, first);
    verify_and_free(h, back, 80, 17);
    check_empty_and_clean(h);
    printf("ok level=%s small=%zu big=%zu reversed=%zu/%zu\n", argv[1], small, big, first, reused);
    nmm_heap_destroy(h);
    return 0;
}
