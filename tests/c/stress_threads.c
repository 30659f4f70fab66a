/* stress_threads.c — many short-lived threads on one heap.
 * usage: stress_threads LEVEL THREADS OPS SEED [BATCH]
 * THREADS threads (up to 1024, BATCH alive at once) each churn OPS operations and
 * exit with blocks still in their thread cache, and half of them also exit holding
 * a full cache of blocks freed for another thread. Afterwards: stats add up,
 * nothing is live, no block is stranded in a dead thread's cache (with retain=0
 * every slab went back to the OS), validate is clean.
 */
#include "stress_common.h"

#include <pthread.h>

static nmm_heap_t *heap;
static long ops;
static uint64_t seed;

typedef struct handoff {
    void *blocks[96];
    int count;
} handoff_t;

static void *worker(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed ^ (t * 0x9E3779B97F4A7C15ull);
    void *live[32] = {0};
    for (long i = 0; i < ops; i++) {
        int k = (int)(rng_next(&rng) % 32);
        if (live[k]) {
            CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
            live[k] = NULL;
        } else {
            size_t n = rng_size(&rng, 1, 2048);
            live[k] = nmm_alloc(heap, n, 0);
            CHECK(live[k] != NULL);
            memset(live[k], (int)t, n);
        }
    }
    for (int k = 0; k < 32; k++)
        if (live[k])
            CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
    return NULL;
}

/* Frees, on this thread, blocks another thread allocated: its cache fills up
 * (flushes included) and the thread exits holding it. */
static void *freer(void *arg)
{
    handoff_t *ho = arg;
    for (int i = 0; i < ho->count; i++)
        CHECK_EQ(nmm_free(heap, ho->blocks[i], 0), NMM_OK);
    return NULL;
}

static void *allocator_then_handoff(void *arg)
{
    handoff_t *ho = arg;
    for (int i = 0; i < ho->count; i++) {
        ho->blocks[i] = nmm_alloc(heap, 48, 0);
        CHECK(ho->blocks[i] != NULL);
    }
    pthread_t f;
    CHECK(pthread_create(&f, NULL, freer, ho) == 0);
    pthread_join(f, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s LEVEL THREADS OPS SEED [BATCH]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    ops = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 10);
    int batch = argc > 5 ? atoi(argv[5]) : threads;
    CHECK(threads > 0 && threads <= 1024 && batch > 0);
    heap = heap_at(argv[1], 0);

    static pthread_t tid[1024];
    static handoff_t ho[1024];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int start = 0; start < threads; start += batch) {
        int end = start + batch < threads ? start + batch : threads;
        for (int t = start; t < end; t++) {
            int rc;
            if (t % 2) {
                ho[t].count = 96;
                rc = pthread_create(&tid[t], &attr, allocator_then_handoff, &ho[t]);
            } else {
                rc = pthread_create(&tid[t], &attr, worker, (void *)(uintptr_t)t);
            }
            CHECK(rc == 0);
        }
        for (int t = start; t < end; t++)
            pthread_join(tid[t], NULL);
    }
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK(st.allocs >= (uint64_t)(threads / 2) * 96);
    CHECK_EQ(st.events, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    if (strcmp(argv[1], "paranoid") != 0) {
        for (uint32_t c = 0; c < st.class_count; c++) {
            CHECK_EQ(st.classes[c].slabs, 0);
            CHECK_EQ(st.classes[c].free_blocks, 0);
        }
        CHECK_EQ(st.mapped_bytes, 0);
    }
    printf("ok threads=%d allocs=%llu\n", threads, (unsigned long long)st.allocs);
    nmm_heap_destroy(heap);
    return 0;
}
