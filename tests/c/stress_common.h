/* stress_common.h — helpers shared by the C stress programs (tests/c/stress_*.c):
 * a seeded per-thread PRNG, fatal checks that name the failed condition, block
 * fill/verify patterns and the check of the heap's counters against a walk of its
 * blocks. Test-only code.
 */
#ifndef STRESS_COMMON_H
#define STRESS_COMMON_H

#include "nmm.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define CHECK_EQ(a, b)                                                                  \
    do {                                                                                \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);  \
        if (a_ != b_) {                                                                 \
            fprintf(stderr, "%s:%d: %s == %s failed: %llu != %llu\n", __FILE__, __LINE__, \
                    #a, #b, a_, b_);                                                    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static inline uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: a pure function of the seed, never the global rand(). */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Log-uniform size in [lo, hi]. */
static inline size_t rng_size(uint64_t *s, size_t lo, size_t hi)
{
    int lo_bits = 63 - __builtin_clzll(lo | 1), hi_bits = 63 - __builtin_clzll(hi);
    int b = lo_bits + (int)(rng_next(s) % (uint64_t)(hi_bits - lo_bits + 1));
    size_t v = ((size_t)1 << b) + (rng_next(s) & (((size_t)1 << b) - 1));
    return v < lo ? lo : v > hi ? hi : v;
}

/* Every byte of a block derives from its id: a block handed out twice, or
 * corrupted by the allocator, fails verify. */
static inline void block_fill(void *p, size_t n, uint64_t id)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(id * 131 + i);
}

static inline void block_verify(const void *p, size_t n, uint64_t id)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(id * 131 + i)) {
            fprintf(stderr, "block %llu damaged at %zu\n", (unsigned long long)id, i);
            exit(1);
        }
}

/* Resident bytes of [p, p + len), page-rounded (mincore): what a test says the heap
 * gave back to the OS, or kept. */
static inline uint64_t resident_bytes(uintptr_t p, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = p & ~(uintptr_t)(page - 1);
    size_t pages = (p + len - from + page - 1) / page;
    if (!pages)
        return 0;
    unsigned char *v = malloc(pages);
    CHECK(v != NULL);
    CHECK(mincore((void *)from, pages * page, v) == 0);
    uint64_t n = 0;
    for (size_t i = 0; i < pages; i++)
        n += v[i] & 1;
    free(v);
    return n * page;
}

static inline nmm_stats_t stats_of(nmm_heap_t *h)
{
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(nmm_stats_get(h, &st) == NMM_OK);
    return st;
}

static void walk_count(void *ctx, const void *ptr, size_t size)
{
    (void)ptr;
    (void)size;
    ++*(uint64_t *)ctx;
}

/* Live blocks by a walk of the heap's block map. */
static inline uint64_t heap_walk_count(nmm_heap_t *h)
{
    uint64_t walked = 0;
    nmm_heap_visit(h, walk_count, &walked);
    return walked;
}

/* The heap's live-block counter against independent evidence: a walk of its block
 * map (nmm_heap_visit), and the number of blocks the program itself holds. (allocs -
 * frees = live, the check this replaces, holds by construction: nmm_stats_get derives
 * live from the two.) Call on a quiescent heap. */
static inline void stats_match_heap(nmm_heap_t *h, const nmm_stats_t *st, uint64_t held)
{
    CHECK_EQ(heap_walk_count(h), held);
    CHECK_EQ(st->live_blocks, held);
    if (held == 0)
        CHECK_EQ(st->live_bytes, 0);
}

/* The config of an NMM_OPTIONS string (exit 2 naming it when it does not parse). */
static inline nmm_config_t config_of(const char *opts)
{
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    char err[256] = "";
    if (nmm_config_parse(&cfg, opts, err, sizeof err) != NMM_OK) {
        fprintf(stderr, "bad options %s: %s\n", opts, err);
        exit(2);
    }
    return cfg;
}

/* A heap made from an NMM_OPTIONS string, formatted like printf. */
__attribute__((format(printf, 1, 2))) static inline nmm_heap_t *heap_with(const char *fmt, ...)
{
    char opts[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(opts, sizeof opts, fmt, ap);
    va_end(ap);
    nmm_config_t cfg = config_of(opts);
    nmm_heap_t *h = nmm_heap_create(&cfg);
    CHECK(h != NULL);
    return h;
}

static inline nmm_heap_t *heap_at(const char *level, uint64_t retain)
{
    char opts[128];
    snprintf(opts, sizeof opts, "level=%s", level);
    nmm_config_t cfg = config_of(opts);
    cfg.retain_bytes = retain;
    nmm_heap_t *h = nmm_heap_create(&cfg);
    CHECK(h != NULL);
    return h;
}

static inline size_t drain_events(nmm_heap_t *h, nmm_event_t *out, size_t max)
{
    return nmm_events_drain(h, out, max);
}

/* A hand-over between a worker stopped inside the allocator (at a chaos yield point)
 * and the main thread, which does its part (reads stats, forks) meanwhile. Blocking
 * on a condition variable: spinning with sched_yield cost a scheduler tick per point
 * on a loaded machine. The main thread holds lock around pause_gate_next and
 * pause_gate_resume. */
typedef struct pause_gate {
    pthread_mutex_t lock;
    pthread_cond_t turn;
    int request; /* under lock: the worker stopped, waiting for pause_gate_resume */
    int done;    /* under lock: the worker finished */
} pause_gate_t;
#define PAUSE_GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0}

/* Worker: stop here until the main thread has done its part. */
static inline void pause_gate_stop(pause_gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->request = 1;
    pthread_cond_broadcast(&g->turn);
    while (g->request)
        pthread_cond_wait(&g->turn, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

/* Worker: finished, no more stops. */
static inline void pause_gate_finish(pause_gate_t *g)
{
    pthread_mutex_lock(&g->lock);
    g->done = 1;
    pthread_cond_broadcast(&g->turn);
    pthread_mutex_unlock(&g->lock);
}

/* Main thread, lock held: wait for the worker's next stop (true) or its end (false). */
static inline bool pause_gate_next(pause_gate_t *g)
{
    while (!g->request && !g->done)
        pthread_cond_wait(&g->turn, &g->lock);
    return g->request;
}

/* Main thread, lock held: let the stopped worker go on. */
static inline void pause_gate_resume(pause_gate_t *g)
{
    g->request = 0;
    pthread_cond_broadcast(&g->turn);
}

#endif
