/* stress_stats.c — nmm_stats_get while a thread cache's owner is half way
 * through updating its counters (built with -DNMM_CHAOS: this program is the
 * scheduler, and the allocator's "tcache.*" yield points sit between the stores
 * of an alloc, a refill, a flush and a quarantine release).
 * usage: stress_stats OPTIONS ROUNDS
 * The worker allocates KEEP blocks of two sizes (two classes) and frees them, ROUNDS times;
 * at each yield point it stops and the main thread reads the stats, and compares
 * them with the worker's own tally of the calls it finished: allocs are those
 * (plus the one in progress), frees at least those (a reader that finds the books
 * open may count a free early, never one late; a derived free count once read as
 * 2^64 - 1), allocs never go backwards per class, live blocks never exceed what the
 * worker holds (plus the one it is allocating), and at the end the peak the stats
 * folded in is no more than KEEP of the bigger blocks.
 */
#include "stress_common.h"

#include <pthread.h>

#define NMM_CHAOS_IMPL 1 /* this program's own locks and atomics are not yield points */
#include "chaos.h"

#define KEEP 1000

static nmm_heap_t *heap;
static long rounds;
/* A stop: read the stats now (3365 of them at paranoid: the gate blocks, spinning
 * made one run 17 s instead of 4 on a loaded machine). */
static pause_gate_t gate = PAUSE_GATE_INIT;
static uint64_t held;        /* atomic: blocks the worker holds or is allocating */
static uint64_t allocs_done; /* atomic: the worker's own tally of finished calls */
static uint64_t frees_done;
static __thread int is_worker;
static long pauses[4];       /* alloc, refill, flush, release: worker only */

/* The allocator's yield points (NMM_CHAOS; installed as chaos_hooks.yield): the
 * worker waits there until the main thread has read the stats. Other points (locks,
 * atomics) are passed through. */
static void yield_point(const char *where)
{
    static const char *const kinds[] = {"tcache.alloc", "tcache.refill", "tcache.flush",
                                        "tcache.release"};
    int kind = -1;
    for (int k = 0; k < 4 && is_worker; k++)
        if (strcmp(where, kinds[k]) == 0)
            kind = k;
    if (kind < 0)
        return;  /* not a worker, or not one of the four points (e.g. "tcache.c:55") */
    pauses[kind]++;
    pause_gate_stop(&gate);
}

static void *worker(void *arg)
{
    (void)arg;
    static void *blocks[KEEP];
    is_worker = 1;
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < KEEP; i++) {
            __atomic_store_n(&held, (uint64_t)i + 1, __ATOMIC_RELEASE);
            blocks[i] = nmm_alloc(heap, i % 3 ? 40 : 100, 0);  /* 128 (the ring) % 3 != 0 */
            CHECK(blocks[i] != NULL);
            __atomic_store_n(&allocs_done, allocs_done + 1, __ATOMIC_RELEASE);
        }
        for (int i = 0; i < KEEP; i++) {
            CHECK_EQ(nmm_free(heap, blocks[i], 0), NMM_OK);
            __atomic_store_n(&frees_done, frees_done + 1, __ATOMIC_RELEASE);
            __atomic_store_n(&held, (uint64_t)(KEEP - i - 1), __ATOMIC_RELEASE);
        }
    }
    is_worker = 0;  /* its cache is retired at exit under the registry lock */
    pause_gate_finish(&gate);
    return NULL;
}

static uint64_t last_allocs[NMM_MAX_CLASSES];

static void check_stats(long poll)
{
    uint64_t bound = __atomic_load_n(&held, __ATOMIC_ACQUIRE);
    uint64_t allocs = __atomic_load_n(&allocs_done, __ATOMIC_ACQUIRE);
    uint64_t frees = __atomic_load_n(&frees_done, __ATOMIC_ACQUIRE);
    nmm_stats_t st = stats_of(heap);
    if (st.allocs < allocs || st.allocs > allocs + 1 || st.frees < frees) {
        fprintf(stderr, "poll %ld: heap allocs %llu frees %llu, the worker finished %llu allocs "
                "and %llu frees\n", poll, (unsigned long long)st.allocs,
                (unsigned long long)st.frees, (unsigned long long)allocs,
                (unsigned long long)frees);
        exit(1);
    }
    for (uint32_t c = 0; c < st.class_count; c++) {
        const nmm_class_stats_t *cs = &st.classes[c];
        if (cs->live > bound || cs->allocs < last_allocs[c]) {
            fprintf(stderr,
                    "poll %ld class %u (%llu B): allocs %llu (was %llu) frees %llu live %llu, "
                    "worker holds %llu\n",
                    poll, c, (unsigned long long)cs->block_size, (unsigned long long)cs->allocs,
                    (unsigned long long)last_allocs[c], (unsigned long long)cs->frees,
                    (unsigned long long)cs->live, (unsigned long long)bound);
            exit(1);
        }
        last_allocs[c] = cs->allocs;
    }
    CHECK(st.live_blocks <= bound);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s OPTIONS ROUNDS\n", argv[0]);
        return 2;
    }
    rounds = atol(argv[2]);
    nmm_config_t cfg = config_of(argv[1]);
    heap = nmm_heap_create(&cfg);
    CHECK(heap != NULL);
    chaos_hooks.yield = yield_point;

    long polls = 0;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, worker, NULL) == 0);
    pthread_mutex_lock(&gate.lock);
    while (pause_gate_next(&gate)) {
        pthread_mutex_unlock(&gate.lock);
        check_stats(++polls);  /* the worker stands at its yield point meanwhile */
        pthread_mutex_lock(&gate.lock);
        pause_gate_resume(&gate);
    }
    pthread_mutex_unlock(&gate.lock);
    CHECK(pthread_join(t, NULL) == 0);
    /* every kind of half-done update was seen (the paranoid quarantine too) */
    CHECK(pauses[1] > 0 && pauses[2] > 0);
    CHECK(pauses[0] > 0 || cfg.level != NMM_LEVEL_OFF);
    CHECK(pauses[3] > 0 || cfg.level != NMM_LEVEL_PARANOID);

    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(st.allocs, (uint64_t)rounds * KEEP);
    uint64_t biggest = 0;
    for (uint32_t c = 0; c < st.class_count; c++)
        if (st.classes[c].allocs)
            biggest = st.classes[c].block_size;
    if (st.peak_bytes > (uint64_t)KEEP * biggest) {
        fprintf(stderr, "peak_bytes %llu > %d blocks of %llu B\n",
                (unsigned long long)st.peak_bytes, KEEP, (unsigned long long)biggest);
        return 1;
    }
    printf("ok %s polls=%ld pauses=%ld/%ld/%ld/%ld peak=%llu\n", argv[1], polls, pauses[0],
           pauses[1], pauses[2], pauses[3], (unsigned long long)st.peak_bytes);
    nmm_heap_destroy(heap);
    return 0;
}
