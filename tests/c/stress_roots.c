/* stress_roots.c — the leak check's roots scan counts the calling thread's stack
 * from where the check was entered up, never the check's own frames below that.
 *
 * usage: stress_roots LEVEL
 * The check walks the heap (roots_collect, the stats, the exit sweep) and the walk
 * leaves live blocks' addresses in stack slots that the later frames of the scan do
 * not all overwrite: scanned from roots_mark's own frame, one of them kept a lost
 * block "still reachable" (the exit report listed 8 of 9 lost blocks once the slab
 * descriptors' layout moved a spill slot). Here check_entry stands for leakcheck_run:
 * its own frame is filled with the address of a block nothing else holds, and the scan
 * runs from its CFA, as leakcheck_run's does. That block must be definitely lost; a
 * block whose address sits in the caller's frame (a root) must be reachable.
 */
#include "internal.h"
#include "stress_common.h"

#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aull) /* hides an address from the scan */
#define OWN_WORDS 2048

static NMM_NOINLINE void check_entry(roots_set_t *s, uintptr_t hidden)
{
    volatile uintptr_t own[OWN_WORDS]; /* what the check's walk leaves in its frames */
    for (size_t i = 0; i < OWN_WORDS; i++)
        own[i] = hidden ^ MASK;
    roots_mark(s, (uintptr_t)__builtin_dwarf_cfa());
    CHECK(own[OWN_WORDS - 1] == (hidden ^ MASK));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LEVEL\n", argv[0]);
        return 2;
    }
    nmm_heap_t *h = heap_with("level=%s", argv[1]);
    uintptr_t hidden = (uintptr_t)nmm_alloc(h, 24, 0) ^ MASK;
    void *volatile kept = nmm_alloc(h, 40, 0); /* in this frame: a root */
    CHECK(hidden != MASK && kept != NULL);

    roots_set_t s;
    CHECK(roots_collect(h, &s, 2));
    CHECK_EQ(s.n, 2);
    check_entry(&s, hidden);
    int lost = -1, reachable = -1;
    for (size_t i = 0; i < s.n; i++) {
        if (s.b[i].ptr == (hidden ^ MASK))
            lost = s.b[i].state;
        else if (s.b[i].ptr == (uintptr_t)kept)
            reachable = s.b[i].state;
    }
    CHECK_EQ(lost, ROOTS_LOST);
    CHECK_EQ(reachable, ROOTS_REACHABLE);
    roots_release(&s);

    CHECK_EQ(nmm_free(h, (void *)(hidden ^ MASK), 0), NMM_OK);
    CHECK_EQ(nmm_free(h, kept, 0), NMM_OK);
    printf("ok level=%s\n", argv[1]);
    nmm_heap_destroy(h);
    return 0;
}
