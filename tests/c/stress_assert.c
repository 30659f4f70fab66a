/* stress_assert.c — the debug flavour (NMM_DEBUG, on in the sanitizer builds) checks
 * the core's invariants. A slab's free stack is made as long as the blocks it ever
 * handed out, then one more block is given back (a free without a thread cache): the
 * release build would write past what the slab handed out; the debug build must stop
 * at the first broken invariant with one line naming it. Test-only code; reads
 * core.h's layout. usage: stress_assert (exits 0 only when nothing stopped it) */
#include "core.h"
#include "stress_common.h"

int main(void)
{
    nmm_heap_t *h = heap_with("level=off:tcache=0");
    void *a = nmm_alloc(h, 64, 0), *b = nmm_alloc(h, 64, 0);
    CHECK(a && b);
    CHECK_EQ(nmm_free(h, a, 0), NMM_OK);  /* intact: fine */
    slab_t *s = slab_of(h, (uintptr_t)b);
    CHECK(s != NULL);
    s->nstack = s->bump;                  /* every block handed out is free already */
    nmm_free(h, b, 0);                    /* one more: NMM_ASSERT in slab_give_locked */
    printf("ok: not stopped (a release build?)\n");
    return 0;
}
