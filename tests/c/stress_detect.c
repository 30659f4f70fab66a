/* stress_detect.c — detection under concurrency with cross-thread frees.
 * usage: stress_detect LEVEL THREADS OPS SEED   (LEVEL standard or paranoid)
 * Threads churn with cross-thread frees; in the middle, thread 0 and thread 1
 * inject exactly: one double free (allocated by 0, freed by 1, freed again by 0)
 * and one 1-byte overflow (allocated and overrun by 1, freed by 0); at paranoid
 * also one use-after-free write (found by nmm_validate). Expected: exactly those
 * events, with the right addresses and statuses, nothing else (no false
 * positives), stats add up, and a clean validate afterwards.
 */
#include "stress_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define EXCHANGE 128

static nmm_heap_t *heap;
static long ops;
static uint64_t seed;
static _Atomic(void *) exchange[EXCHANGE];
static _Atomic(void *) to_free_by_1, to_free_by_0;
static atomic_int phase;
static void *double_freed, *overflowed;

static void churn(uint64_t t, uint64_t *rng, long n)
{
    void *live[32] = {0};
    for (long i = 0; i < n; i++) {
        int k = (int)(rng_next(rng) % 32);
        if (live[k]) {
            if (rng_next(rng) % 3 == 0) {
                void *old = atomic_exchange(&exchange[rng_next(rng) % EXCHANGE], live[k]);
                if (old)
                    CHECK_EQ(nmm_free(heap, old, 0), NMM_OK);
            } else {
                CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
            }
            live[k] = NULL;
        } else {
            size_t size = rng_size(rng, 1, 3000);
            live[k] = nmm_alloc(heap, size, 0);
            CHECK(live[k] != NULL);
            memset(live[k], (int)t, size);  /* exactly the requested bytes */
        }
    }
    for (int k = 0; k < 32; k++)
        if (live[k])
            CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
}

static void wait_phase(int p)
{
    while (atomic_load(&phase) < p) {
    }
}

static void *worker(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed * 31 + t;
    churn(t, &rng, ops);
    if (t == 0) {
        /* 5000 bytes: a class the churn never uses, so nobody reallocates it
         * between the two frees */
        double_freed = nmm_alloc(heap, 5000, 0);
        atomic_store(&to_free_by_1, double_freed);
        atomic_store(&phase, 1);
        wait_phase(2);
        /* thread 1 freed it: this is the injected double free */
        CHECK_EQ(nmm_free(heap, double_freed, 0), NMM_E_DOUBLE_FREE);
        atomic_store(&phase, 3);
        wait_phase(4);
        void *p = atomic_exchange(&to_free_by_0, NULL);
        CHECK_EQ(nmm_free(heap, p, 0), NMM_E_CORRUPTED);
        atomic_store(&phase, 5);
    } else if (t == 1) {
        wait_phase(1);
        CHECK_EQ(nmm_free(heap, atomic_exchange(&to_free_by_1, NULL), 0), NMM_OK);
        atomic_store(&phase, 2);
        wait_phase(3);
        overflowed = nmm_alloc(heap, 40, 0);
        ((unsigned char *)overflowed)[40] ^= 0x5a;  /* the injected 1-byte overflow */
        atomic_store(&to_free_by_0, overflowed);
        atomic_store(&phase, 4);
        wait_phase(5);
    }
    churn(t, &rng, ops);
    return NULL;
}

static void drain_exchange(void)
{
    for (int e = 0; e < EXCHANGE; e++) {
        void *p = atomic_exchange(&exchange[e], NULL);
        if (p)
            CHECK_EQ(nmm_free(heap, p, 0), NMM_OK);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s LEVEL THREADS OPS SEED\n", argv[0]);
        return 2;
    }
    bool paranoid = strcmp(argv[1], "paranoid") == 0;
    int threads = atoi(argv[2]);
    ops = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 10);
    CHECK(threads >= 2 && threads <= 16);
    heap = heap_at(argv[1], 1 << 20);
    pthread_t tid[16];
    for (int t = 0; t < threads; t++)
        CHECK(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t) == 0);
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    CHECK_EQ(atomic_load(&phase), 5);
    drain_exchange();

    void *uaf = NULL;
    if (paranoid) {
        uaf = nmm_alloc(heap, 64, 0);
        CHECK_EQ(nmm_free(heap, uaf, 0), NMM_OK);
        ((unsigned char *)uaf)[10] = 1;  /* the injected use-after-free write */
    }
    size_t problems = nmm_validate(heap);
    CHECK_EQ(problems, paranoid ? 1 : 0);
    CHECK_EQ(nmm_validate(heap), 0);

    nmm_event_t ev[16];
    size_t n = drain_events(heap, ev, 16);
    CHECK_EQ(n, paranoid ? 3 : 2);
    CHECK_EQ(ev[0].kind, NMM_EV_DOUBLE_FREE);
    CHECK_EQ(ev[0].address, (uintptr_t)double_freed);
    CHECK_EQ(ev[0].size, 5000);
    CHECK_EQ(ev[1].kind, NMM_EV_OVERFLOW);
    CHECK_EQ(ev[1].address, (uintptr_t)overflowed);
    CHECK_EQ(ev[1].detail, 40);
    CHECK_EQ(ev[1].size, 40);
    if (paranoid) {
        CHECK_EQ(ev[2].kind, NMM_EV_USE_AFTER_FREE);
        CHECK_EQ(ev[2].address, (uintptr_t)uaf);
        CHECK_EQ(ev[2].detail, 10);
    }
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(st.events, n);
    printf("ok level=%s events=%zu allocs=%llu\n", argv[1], n, (unsigned long long)st.allocs);
    nmm_heap_destroy(heap);
    return 0;
}
