/* stress_trim.c — a slab kept empty gives back the pages a decay step did not need.
 *
 * A slab that stays on its class's empty list (kept for reuse, not released) had
 * every page any of its blocks ever used resident for good: a burst of 48 blocks of
 * 4 KiB left 48 pages behind while the program went on using one block at a time.
 * Now a decay step (every CORE_DECAY_EVENTS slabs of the class that become empty)
 * looks at each kept empty slab: the pages only blocks past the most it had out at
 * once during the step occupy go back to the OS, and its free stack is rewritten so
 * that block 0, 1, 2, ... are handed out first (slab_trim).
 *
 * usage: stress_trim OPTIONS     (e.g. level=standard; caches off is added)
 * 1. A burst: 48 blocks of 4000 bytes, every byte written, all freed (the slab is
 *    now empty and kept). Two of them are remembered, freed once already.
 * 2. One block at a time, allocated, written, freed: each free empties the slab, so
 *    each is a decay event; 2 * CORE_DECAY_EVENTS + 1 of them. The first step still
 *    saw the burst; the second saw one block out at a time.
 * 3. What is resident of the slab (mincore) must be at most the pages block 0 spans
 *    (1 at off, 2 at standard: the 8-byte lead) and one more; 48 without the trim.
 *    (Not for paranoid, which trims nothing: free blocks keep their poison there, and
 *    its quarantine keeps the slab from being empty in this program.)
 * 4. The remembered blocks, freed again, are still double frees (their state stays
 *    free; their zeroed header no longer names the size, nothing else changes), and
 *    48 blocks taken again are distinct, in address order from block 0, keep their
 *    patterns; validate clean, nothing live.
 * 5. With caches on (a new heap): two blocks of a fresh slab come out in address
 *    order (the bin hands a refill out in the order the slab gave it).
 */
#include "core.h"
#include "stress_common.h"

#include <unistd.h>

#define BURST 48
#define SIZE 4000

/* Resident pages of the slab's [base, base + bytes). */
static uint64_t resident_pages(uintptr_t base, size_t bytes)
{
    return resident_bytes(base, bytes) / (uint64_t)sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OPTIONS\n", argv[0]);
        return 2;
    }
    nmm_heap_t *heap = heap_with("%s:tcache=0", argv[1]);
    CHECK(!heap->paranoid);
    void *burst[BURST];
    for (int i = 0; i < BURST; i++) {
        CHECK((burst[i] = nmm_alloc(heap, SIZE, 0)) != NULL);
        block_fill(burst[i], SIZE, (uint64_t)i);
    }
    slab_t *s = slab_of(heap, (uintptr_t)burst[0]);
    CHECK(s != NULL);
    for (int i = 1; i < BURST; i++)
        CHECK(slab_of(heap, (uintptr_t)burst[i]) == s);  /* one slab: 64 blocks of 4 KiB */
    uintptr_t base = slab_base(s);
    size_t bytes = sizeclass_slab_bytes[s->cls];
    void *late[2] = {burst[BURST - 1], burst[BURST / 2]};
    for (int i = 0; i < BURST; i++) {
        block_verify(burst[i], SIZE, (uint64_t)i);
        CHECK_EQ(nmm_free(heap, burst[i], 0), NMM_OK);
    }
    uint64_t after_burst = resident_pages(base, bytes);
    CHECK(after_burst >= BURST);

    for (int i = 0; i < 2 * CORE_DECAY_EVENTS + 1; i++) {
        void *p = nmm_alloc(heap, SIZE, 0);
        CHECK(p != NULL && slab_of(heap, (uintptr_t)p) == s);
        block_fill(p, SIZE, 1000u + (uint64_t)i);
        block_verify(p, SIZE, 1000u + (uint64_t)i);
        CHECK_EQ(nmm_free(heap, p, 0), NMM_OK);
    }
    CHECK(s->list == SL_EMPTY);  /* kept all along: the trim, not a release */
    uint64_t settled = resident_pages(base, bytes);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t first_block_pages = ((uintptr_t)s->data - base + s->block_size + page - 1) / page;
    if (settled > first_block_pages + 1) {
        printf("FAIL burst=%llu settled=%llu pages (block 0: %llu): the kept slab was not trimmed\n",
               (unsigned long long)after_burst, (unsigned long long)settled,
               (unsigned long long)first_block_pages);
        return 1;
    }

    for (int i = 0; i < 2; i++)
        CHECK_EQ(nmm_free(heap, late[i], 0), NMM_E_DOUBLE_FREE);
    nmm_event_t ev[4];
    CHECK_EQ(nmm_events_drain(heap, ev, 4), 2);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(ev[i].kind, NMM_EV_DOUBLE_FREE);
        CHECK(ev[i].address == (uintptr_t)late[i]);
    }

    void *again[BURST];
    for (int i = 0; i < BURST; i++) {
        CHECK((again[i] = nmm_alloc(heap, SIZE, 0)) != NULL);
        CHECK(slab_of(heap, (uintptr_t)again[i]) == s);
        /* handed out from block 0 up: the trim sorted the free stack */
        CHECK((uint8_t *)again[i] == s->data + heap->user_off + (size_t)i * s->block_size);
        for (int j = 0; j < i; j++)
            CHECK(again[j] != again[i]);
        block_fill(again[i], SIZE, 2000u + (uint64_t)i);
    }
    for (int i = 0; i < BURST; i++) {
        block_verify(again[i], SIZE, 2000u + (uint64_t)i);
        CHECK_EQ(nmm_free(heap, again[i], 0), NMM_OK);
    }
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    nmm_heap_destroy(heap);

    /* caches on: a refill's blocks come out in the slab's order (block 0 first) */
    heap = heap_with("%s", argv[1]);
    uint8_t *a = nmm_alloc(heap, SIZE, 0), *b = nmm_alloc(heap, SIZE, 0);
    CHECK(a != NULL && b != NULL && slab_of(heap, (uintptr_t)a) == slab_of(heap, (uintptr_t)b));
    bool ordered = b > a;
    CHECK_EQ(nmm_free(heap, a, 0), NMM_OK);
    CHECK_EQ(nmm_free(heap, b, 0), NMM_OK);
    nmm_heap_destroy(heap);

    printf("%s burst=%llu settled=%llu pages (block 0: %llu) ordered=%d\n", ordered ? "ok" : "FAIL",
           (unsigned long long)after_burst, (unsigned long long)settled,
           (unsigned long long)first_block_pages, (int)ordered);
    return ordered ? 0 : 1;
}
