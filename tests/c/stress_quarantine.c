/* stress_quarantine.c — paranoid's shared quarantine (periodic sweeps on, so no
 * thread caches) keeps a freed block until the thread that freed it has made
 * another allocator call, however much other threads free meanwhile.
 * usage: stress_quarantine ROUNDS SEED
 * Each round, in lock step: thread A frees a block X and stalls before touching
 * it; thread B frees and reallocates 8x the quarantine's bytes in X's size class
 * (everything else leaves the quarantine, and X would be handed to B if it left
 * too); A then writes one byte in the middle of X (a use after free) and makes its
 * next call; B checks its blocks and frees them. Expected: B's blocks intact and
 * exactly one use-after-free event per round, at X, with X's size and offset.
 */
#include "stress_common.h"

#include <pthread.h>

#define QUARANTINE (64 * 1024)
#define MAX_ROUNDS 64

static nmm_heap_t *heap;
static pthread_barrier_t step;
static int rounds;
static uint64_t seed;
static void *freed[MAX_ROUNDS];
static size_t sizes[MAX_ROUNDS];

static void *thread_a(void *arg)
{
    (void)arg;
    for (int r = 0; r < rounds; r++) {
        unsigned char *x = nmm_alloc(heap, sizes[r], 0);
        CHECK(x != NULL);
        memset(x, 0x5A, sizes[r]);
        CHECK_EQ(nmm_free(heap, x, 0), NMM_OK);
        freed[r] = x;
        pthread_barrier_wait(&step);  /* 1: X freed, A stalls */
        pthread_barrier_wait(&step);  /* 2: B has churned */
        x[sizes[r] / 2] ^= 0xFF;      /* the use after free */
        void *next = nmm_alloc(heap, 8, 0);  /* A's next call */
        CHECK(next != NULL);
        CHECK_EQ(nmm_free(heap, next, 0), NMM_OK);
        pthread_barrier_wait(&step);  /* 3: written, A moved on */
    }
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    size_t n = 8 * QUARANTINE / 48 + 1;  /* blocks of >= 48 bytes: 8x the quarantine */
    void **mine = calloc(n, sizeof *mine);
    CHECK(mine != NULL);
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < n; i++) {
            mine[i] = nmm_alloc(heap, sizes[r], 0);
            CHECK(mine[i] != NULL);
        }
        pthread_barrier_wait(&step);  /* 1 */
        for (size_t i = 0; i < n; i++)
            CHECK_EQ(nmm_free(heap, mine[i], 0), NMM_OK);
        for (size_t i = 0; i < n; i++) {
            mine[i] = nmm_alloc(heap, sizes[r], 0);
            CHECK(mine[i] != NULL);
            CHECK(mine[i] != freed[r]);
            block_fill(mine[i], sizes[r], i);
        }
        pthread_barrier_wait(&step);  /* 2 */
        pthread_barrier_wait(&step);  /* 3 */
        for (size_t i = 0; i < n; i++) {
            block_verify(mine[i], sizes[r], i);
            CHECK_EQ(nmm_free(heap, mine[i], 0), NMM_OK);
        }
    }
    free(mine);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ROUNDS SEED\n", argv[0]);
        return 2;
    }
    rounds = atoi(argv[1]);
    seed = strtoull(argv[2], NULL, 10);
    CHECK(rounds >= 1 && rounds <= MAX_ROUNDS);
    uint64_t rng = seed;
    for (int r = 0; r < rounds; r++)
        sizes[r] = rng_size(&rng, 48, 400);

    heap = heap_with("level=paranoid:sweep=100000000:quarantine=64K");
    CHECK(pthread_barrier_init(&step, NULL, 2) == 0);
    pthread_t a, b;
    CHECK(pthread_create(&a, NULL, thread_a, NULL) == 0);
    CHECK(pthread_create(&b, NULL, thread_b, NULL) == 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);

    /* Blocks still quarantined are checked by validate; the rest were checked
     * when they left. */
    nmm_validate(heap);
    CHECK_EQ(nmm_validate(heap), 0);
    nmm_event_t ev[MAX_ROUNDS + 4];
    size_t n = nmm_events_drain(heap, ev, MAX_ROUNDS + 4);
    CHECK_EQ(n, rounds);
    for (size_t i = 0; i < n; i++) {
        int r = -1;
        for (int k = 0; k < rounds; k++)
            if (ev[i].address == (uintptr_t)freed[k])
                r = k;
        CHECK(r >= 0);
        CHECK_EQ(ev[i].kind, NMM_EV_USE_AFTER_FREE);
        CHECK_EQ(ev[i].size, sizes[r]);
        CHECK_EQ(ev[i].detail, sizes[r] / 2);
    }
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    pthread_barrier_destroy(&step);
    nmm_heap_destroy(heap);
    printf("ok rounds=%d events=%zu\n", rounds, n);
    return 0;
}
