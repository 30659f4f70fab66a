/* stress_churn.c — multi-thread churn with cross-thread frees on one NMM heap.
 * usage: stress_churn LEVEL THREADS OPS SEED
 * Each thread keeps a live set, fills every block with a pattern from its id and
 * verifies it before freeing; a share of frees goes through a shared exchange so
 * another thread frees the block; some large blocks are resized large to large
 * at once (the in-place/mremap path). At the end: every block freed, stats add up,
 * live = 0, no events (no false positives), validate clean, every slab returned.
 */
#include "stress_common.h"

#include <pthread.h>
#include <stdatomic.h>

#define LIVE 128
#define EXCHANGE 256

typedef struct rec {
    uint64_t id;
    uint64_t size;
} rec_t;

static nmm_heap_t *heap;
static _Atomic(rec_t *) exchange[EXCHANGE];
static long ops_per_thread;
static uint64_t seed;

static rec_t *make_block(uint64_t *rng, uint64_t id)
{
    size_t size = (rng_next(rng) % 64 == 0) ? rng_size(rng, 70000, 300000) : rng_size(rng, 16, 8192);
    rec_t *r = nmm_alloc(heap, size, 0);
    CHECK(r != NULL);
    CHECK(nmm_usable_size(heap, r) >= size);
    r->id = id;
    r->size = size;
    block_fill(r + 1, size - sizeof *r, id);
    if (size > 131072 && rng_next(rng) % 2 == 0) {
        /* large to large realloc (mremap, or growth into a reused mapping's slack)
         * while other threads free and allocate large blocks: contents kept */
        size_t n = rng_size(rng, 140000, 600000);
        size_t keep = n < size ? n : size;
        rec_t *q = nmm_realloc(heap, r, n, 0);
        CHECK(q != NULL);
        CHECK(nmm_usable_size(heap, q) >= n);
        block_verify(q + 1, keep - sizeof *q, id);
        q->size = n;
        block_fill(q + 1, n - sizeof *q, id);
        r = q;
    }
    return r;
}

static void drop_block(rec_t *r)
{
    block_verify(r + 1, r->size - sizeof *r, r->id);
    CHECK_EQ(nmm_free(heap, r, 0), NMM_OK);
}

static void *worker(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed * 1000003 + t;
    rec_t *live[LIVE] = {0};
    for (long i = 0; i < ops_per_thread; i++) {
        uint64_t k = rng_next(&rng) % LIVE;
        if (live[k]) {
            if (rng_next(&rng) % 4 == 0) {
                /* cross-thread: park it; free whatever another thread parked */
                rec_t *old = atomic_exchange(&exchange[rng_next(&rng) % EXCHANGE], live[k]);
                if (old)
                    drop_block(old);
            } else {
                drop_block(live[k]);
            }
            live[k] = NULL;
        } else {
            live[k] = make_block(&rng, (t << 40) | (uint64_t)i);
        }
        if (rng_next(&rng) % 512 == 0) {
            /* realloc keeps the contents up to the smaller size */
            uint64_t j = rng_next(&rng) % LIVE;
            if (live[j]) {
                size_t n = rng_size(&rng, 16, 4096);
                size_t keep = n < live[j]->size ? n : live[j]->size;
                rec_t *q = nmm_realloc(heap, live[j], n, 0);
                CHECK(q != NULL);
                if (keep >= sizeof *q)
                    block_verify(q + 1, keep - sizeof *q, q->id);
                q->size = n;
                block_fill(q + 1, n - sizeof *q, q->id);
                live[j] = q;
            }
        }
    }
    for (int k = 0; k < LIVE; k++)
        if (live[k])
            drop_block(live[k]);
    return NULL;
}

/* Runs on its own thread so the blocks it frees leave with its cache at exit. */
static void *drain_exchange(void *arg)
{
    (void)arg;
    for (int e = 0; e < EXCHANGE; e++) {
        rec_t *r = atomic_exchange(&exchange[e], NULL);
        if (r)
            drop_block(r);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s LEVEL THREADS OPS SEED\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    ops_per_thread = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 10);
    heap = heap_at(argv[1], 0);
    pthread_t tid[64];
    CHECK(threads > 0 && threads <= 64);
    for (int t = 0; t < threads; t++)
        CHECK(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t) == 0);
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    CHECK(pthread_create(&tid[0], NULL, drain_exchange, NULL) == 0);
    pthread_join(tid[0], NULL);
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK(st.allocs >= (uint64_t)threads * (uint64_t)ops_per_thread / 4);
    CHECK_EQ(st.events, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    nmm_event_t ev[4];
    CHECK_EQ(drain_events(heap, ev, 4), 0);
    /* Thread caches were flushed at exit and retain=0: every slab went back. */
    if (strcmp(argv[1], "paranoid") != 0) {
        for (uint32_t c = 0; c < st.class_count; c++)
            CHECK_EQ(st.classes[c].slabs, 0);
        CHECK(st.slabs_returned == st.slabs_mapped);
    }
    printf("ok allocs=%llu frees=%llu peak=%llu contention=%llu\n", (unsigned long long)st.allocs,
           (unsigned long long)st.frees, (unsigned long long)st.peak_bytes,
           (unsigned long long)st.lock_contention);
    nmm_heap_destroy(heap);
    return 0;
}
