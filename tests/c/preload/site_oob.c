/* site_oob.c — allocation sites kept out of band (the slab's site[], flagged in
 * the 8-byte header): events name the site a block was allocated at, through
 * reuse, realloc in place and aligned blocks, and a block handed out again with
 * site 0 never inherits the site its previous owner left in site[].
 * usage: site_oob OPTIONS (e.g. level=standard, level=off:tracking=1); at level=off
 * (a header for the site, no checks) the overflow and underflow steps are skipped.
 * Exit 0 and "ok" when every check holds; a message naming the failed check else.
 */
#include <nmm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nmm_heap_t *heap;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "site_oob.c:%d: check failed: %s\n", __LINE__, #cond); \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* The one event the last call recorded. */
static nmm_event_t one_event(void)
{
    nmm_event_t ev[4];
    size_t n = nmm_events_drain(heap, ev, 4);
    CHECK(n == 1);
    return ev[0];
}

int main(int argc, char **argv)
{
    CHECK(argc == 2);
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    char err[256];
    CHECK(nmm_config_parse(&cfg, argv[1], err, sizeof err) == NMM_OK);
    heap = nmm_heap_create(&cfg);
    CHECK(heap != NULL);
    int checks = cfg.level != NMM_LEVEL_OFF;
    nmm_site_t a = nmm_site(heap, "site_oob.c", 101), f = nmm_site(heap, "site_oob.c", 102);
    nmm_site_t b = nmm_site(heap, "site_oob.c", 103), c = nmm_site(heap, "site_oob.c", 104);
    nmm_site_t d = nmm_site(heap, "site_oob.c", 105), e = nmm_site(heap, "site_oob.c", 106);

    /* a double free names both sites */
    void *p = nmm_alloc(heap, 64, a);
    CHECK(nmm_free(heap, p, f) == NMM_OK);
    CHECK(nmm_free(heap, p, f) == NMM_E_DOUBLE_FREE);
    nmm_event_t ev = one_event();
    CHECK(ev.kind == NMM_EV_DOUBLE_FREE && ev.address == (uintptr_t)p);
    CHECK(ev.alloc_site == a && ev.free_site == f && ev.size == 64);

    /* the same block again (the thread cache is LIFO), now with site 0: the old
     * site[] entry must not come back */
    void *q = nmm_alloc(heap, 64, 0);
    CHECK(q == p);
    CHECK(nmm_free(heap, q, f) == NMM_OK);
    CHECK(nmm_free(heap, q, f) == NMM_E_DOUBLE_FREE);
    ev = one_event();
    CHECK(ev.address == (uintptr_t)q && ev.alloc_site == 0 && ev.size == 64);

    /* and with a new site: that one */
    q = nmm_alloc(heap, 64, b);
    CHECK(q == p);
    if (checks) {
        ((unsigned char *)q)[64] ^= 1;  /* 1-byte overflow */
        CHECK(nmm_free(heap, q, f) == NMM_E_CORRUPTED);
        ev = one_event();
        CHECK(ev.kind == NMM_EV_OVERFLOW && ev.alloc_site == b && ev.detail == 64);
    } else {
        CHECK(nmm_free(heap, q, f) == NMM_OK);
        CHECK(nmm_free(heap, q, f) == NMM_E_DOUBLE_FREE);
        ev = one_event();
        CHECK(ev.alloc_site == b);
    }

    /* realloc in place keeps the allocation site */
    void *r = nmm_alloc(heap, 100, c);
    void *r2 = nmm_realloc(heap, r, 104, d);
    CHECK(r2 == r);
    if (checks)
        ((unsigned char *)r2)[-1] ^= 0x80;  /* underflow by 1 */
    else
        CHECK(nmm_free(heap, r2, f) == NMM_OK);
    CHECK(nmm_free(heap, r2, f) == (checks ? NMM_E_CORRUPTED : NMM_E_DOUBLE_FREE));
    ev = one_event();
    CHECK(ev.kind == (checks ? NMM_EV_UNDERFLOW : NMM_EV_DOUBLE_FREE));
    CHECK(ev.alloc_site == c && ev.size == 104 && (!checks || ev.detail == 1));

    /* aligned blocks keep theirs too */
    void *al = nmm_aligned_alloc(heap, 256, 100, e);
    CHECK(al != NULL && ((uintptr_t)al & 255) == 0);
    CHECK(nmm_free(heap, al, f) == NMM_OK);
    CHECK(nmm_free(heap, al, f) == NMM_E_DOUBLE_FREE);
    ev = one_event();
    CHECK(ev.alloc_site == e && ev.free_site == f);

    CHECK(nmm_validate(heap) == 0);
    nmm_heap_destroy(heap);
    puts("ok");
    return 0;
}
