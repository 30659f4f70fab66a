/* validate_corrupt.c — nmm_validate against a heap whose own books were corrupted, one
 * case per run: a slab list with a cycle, a list flag that disagrees with a slab's free
 * count, pool counts, retained bytes, a quarantine entry twice or a quarantined block in
 * none, quarantine bytes, the limit charge, the live counters, a cache bin or a released
 * range stack gone wrong, a bump pointer moved back over a live block. nmm_stats_get
 * walks the same lists first: it must return too. Built with the allocator's sources and its private core.h (a
 * test may reach inside; nothing else may). usage: validate_corrupt CASE
 * Prints "ok CASE details=..." and exits 0 when the heap validated clean before the
 * corruption and nmm_validate then returned (bounded: no list is looped on) having
 * reported the case's freelist_corrupt detail; exits 1 naming what went wrong. */
#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 4000

static void *blocks[N];

static nmm_heap_t *heap_of(const char *opts)
{
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    char err[256];
    if (nmm_config_parse(&cfg, opts, err, sizeof err) != NMM_OK) {
        fprintf(stderr, "bad options %s: %s\n", opts, err);
        exit(2);
    }
    nmm_heap_t *h = nmm_heap_create(&cfg);
    if (!h)
        exit(2);
    return h;
}

static void fill(nmm_heap_t *h, size_t n, size_t size)
{
    for (size_t i = 0; i < n; i++)
        if (!(blocks[i] = nmm_alloc(h, size, 0)))
            exit(3);
}

static void release(nmm_heap_t *h, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (nmm_free(h, blocks[i], 0) != NMM_OK)
            exit(3);
}

static int class_of_size(nmm_heap_t *h, size_t size)
{
    return sizeclass_of(size + h->user_off + (h->checks ? CORE_CANARY : 0));
}

static void drain(nmm_heap_t *h)
{
    nmm_event_t ev[64];
    while (nmm_events_drain(h, ev, 64))
        ;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    const char *c = argv[1];
    nmm_heap_t *h;
    int want;
    if (!strcmp(c, "empty_cycle") || !strcmp(c, "nempty") || !strcmp(c, "retained")) {
        /* two or more fully free slabs kept on the empty list (no cache: frees go to
         * the slabs) */
        h = heap_of("level=standard:tcache=0:retain=64M");
        fill(h, N, 64);
        release(h, 0, N);
        sizeclass_pool_t *pool = &h->pools[class_of_size(h, 64)];
        if (!pool->empty || !pool->empty->next)
            return 4;
        if (nmm_validate(h))
            return 5;
        if (!strcmp(c, "empty_cycle")) { /* the last slab links back to the first */
            slab_t *s = pool->empty;
            while (s->next)
                s = s->next;
            s->next = pool->empty;
            want = VALIDATE_LIST_LOOP;
        } else if (!strcmp(c, "nempty")) {
            pool->nempty++;
            want = VALIDATE_LIST_COUNT;
        } else {
            h->retained_bytes += 4096;
            want = VALIDATE_RETAINED;
        }
    } else if (!strcmp(c, "list_flag") || !strcmp(c, "unlinked") || !strcmp(c, "lane") ||
               !strcmp(c, "past_bump")) {
        h = heap_of("level=standard:tcache=0");
        fill(h, N, 64);
        release(h, 1, N / 2); /* the first slab partial, the later ones full */
        sizeclass_pool_t *pool = &h->pools[class_of_size(h, 64)];
        if (nmm_validate(h) || !pool->partial[0]) /* no cache: every slab is in lane 0 */
            return 5;
        if (!strcmp(c, "past_bump")) { /* a slab's bump pointer one back over a live block */
            slab_t *s = slab_of(h, (uintptr_t)blocks[N - 1]);
            if (!s->bump)
                return 4;
            s->bump--;
            want = VALIDATE_PAST_BUMP;
        } else if (!strcmp(c, "list_flag")) { /* a full slab claims to be partial */
            slab_t *full = NULL;
            for (size_t i = N / 2; i < N && !full; i++) {
                slab_t *s = slab_of(h, (uintptr_t)blocks[i]);
                if (s->list == SL_NONE)
                    full = s;
            }
            if (!full)
                return 4;
            full->list = SL_PARTIAL;
            want = VALIDATE_LIST_FLAG;
        } else if (!strcmp(c, "lane")) { /* a slab on lane 0's list says it is lane 3's */
            pool->partial[0]->lane = 3;
            want = VALIDATE_LIST_ENTRY;
        } else { /* a partial slab drops off its list: its free blocks are lost */
            slab_t *s = pool->partial[0];
            pool->partial[0] = s->next;
            if (s->next)
                s->next->prev = NULL;
            want = VALIDATE_LIST_COUNT;
        }
    } else if (!strcmp(c, "quar_twice") || !strcmp(c, "quar_lost") || !strcmp(c, "quar_bytes")) {
        /* no cache: frees go to the shared quarantine */
        h = heap_of("level=paranoid:tcache=0:quarantine=1M");
        fill(h, 64, 100);
        release(h, 0, 64);
        if (nmm_validate(h) || h->quar_count < 2)
            return 5;
        if (!strcmp(c, "quar_twice")) { /* the newest entry copied into one more slot */
            quarantine_entry_t *last = &h->quar[(h->quar_head + h->quar_count - 1) % h->quar_cap];
            h->quar[(h->quar_head + h->quar_count) % h->quar_cap] = *last;
            h->quar_count++;
            h->quar_bytes += last->block_size;
            want = VALIDATE_QUAR_ENTRY;
        } else if (!strcmp(c, "quar_lost")) { /* the newest entry dropped, its block not */
            quarantine_entry_t *last = &h->quar[(h->quar_head + h->quar_count - 1) % h->quar_cap];
            h->quar_bytes -= last->block_size;
            h->quar_count--;
            want = VALIDATE_QUAR_LOST;
        } else {
            h->quar_bytes += 16;
            want = VALIDATE_QUAR_BYTES;
        }
    } else if (!strcmp(c, "limit")) {
        h = heap_of("level=standard:limit=64M");
        fill(h, 100, 300);
        if (nmm_validate(h))
            return 5;
        h->limit_used += 320;
        want = VALIDATE_LIMIT;
    } else if (!strcmp(c, "live_count")) {
        h = heap_of("level=standard");
        fill(h, 100, 300);
        if (nmm_validate(h))
            return 5;
        h->pools[class_of_size(h, 300)].allocs++;
        want = VALIDATE_LIVE_COUNT;
    } else if (!strcmp(c, "large_count")) {
        h = heap_of("level=standard");
        fill(h, 4, 1 << 20);
        if (nmm_validate(h))
            return 5;
        h->large_allocs++;
        want = VALIDATE_LIVE_COUNT;
    } else if (!strcmp(c, "bin")) {
        h = heap_of("level=standard");
        fill(h, 10, 64); /* this thread's cache exists and holds a refill */
        if (nmm_validate(h))
            return 5;
        tcache_t *tc = tcache_get(h);
        tbin_t *bin = &tc->bins[class_of_size(h, 64)];
        bin->count = bin->cap + 1000;
        want = VALIDATE_BIN;
    } else if (!strcmp(c, "released")) {
        h = heap_of("level=standard:tcache=0:retain=0"); /* empty slabs go back at once */
        fill(h, N, 64);
        release(h, 0, N);
        slab_t *r = h->released[class_of_size(h, 64)];
        if (nmm_validate(h) || !r)
            return 5;
        r->next_free = r;
        want = VALIDATE_RELEASED;
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    drain(h);
    /* stats walk the same lists: bounded too (a cycle made nmm_stats_get loop forever) */
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (nmm_stats_get(h, &st) != NMM_OK)
        return 6;
    size_t problems = nmm_validate(h);
    nmm_event_t ev[256];
    size_t n = nmm_events_drain(h, ev, 256);
    int seen = 0;
    printf("ok %s details=", c);
    for (size_t i = 0; i < n; i++) {
        printf("%s%u", i ? "," : "", ev[i].detail);
        if (ev[i].kind == NMM_EV_FREELIST_CORRUPT && (int)ev[i].detail == want)
            seen = 1;
    }
    printf("\n");
    if (!problems || !seen) {
        fprintf(stderr, "%s: validate found %zu problem(s), detail %d %s\n", c, problems, want,
                seen ? "reported" : "not reported");
        return 1;
    }
    return 0; /* the heap is left corrupted: not destroyed */
}
