/* bench.c — the benchmark kernels (`nmm-driver bench NAME`): tight loops over the
 * target with no pattern work, each printing one JSON line. Measures, never judges;
 * kernel threads are started and joined here, and touch only their own state. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

#define SIZE_TABLE 4096
#define CHURN_SLOTS 1000
#define CROSS_RING 4096

static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static uint64_t rss_bytes(void) { return proc_status_kib("VmRSS:") * 1024; }
static uint64_t peak_rss_bytes(void) { return proc_status_kib("VmHWM:") * 1024; }

/* ---- sizes: a table drawn once, so kernels pay no exp() per op */

static uint64_t *size_table(const options_t *o, const char *fallback, uint64_t seed)
{
    options_t local = *o;
    if (!o->sizes_given) {
        /* Re-parse the kernel's default range through the same log-uniform code. */
        uint64_t lo = strtoull(fallback, NULL, 10);
        uint64_t hi = strtoull(strchr(fallback, '-') + 1, NULL, 10);
        local.range_count = 1;
        plan_range_init(&local.ranges[0], lo, hi);
        local.ranges[0].cumulative = 1.0;
        local.weight_total = 1.0;
    }
    uint64_t *t = out_map(sizeof(uint64_t) * SIZE_TABLE);
    if (!t)
        return NULL;
    xoshiro_t rng;
    xoshiro_seed(&rng, seed);
    for (int i = 0; i < SIZE_TABLE; i++)
        t[i] = plan_size(&rng, &local);
    return t;
}

static void emit(const char *name, const options_t *o, double value, const char *unit,
                 uint32_t threads, uint64_t ops, uint32_t repeats, const char *extra_key,
                 double extra)
{
    jline_t j;
    jl_begin(&j, "bench");
    jl_str(&j, "name", name);
    jl_str(&j, "target", o->target);
    jl_str(&j, "nmm_options", o->nmm_options);
    jl_dbl(&j, "value", value);
    jl_str(&j, "unit", unit);
    jl_u64(&j, "threads", threads);
    jl_u64(&j, "ops", ops);
    jl_u64(&j, "repeats", repeats);
    if (extra_key)
        jl_dbl(&j, extra_key, extra);
    jl_end(&j);
}

/* ---- pair64: malloc(64)+free pairs, 1 thread, best of repeats */

static double pair64_once(const target_t *t, uint64_t n)
{
    uint64_t t0 = drv_now_ns();
    if (target_is_nmm(t)) {
        nmm_heap_t *h = t->heap;
        for (uint64_t i = 0; i < n; i++) {
            void *p = nmm_alloc(h, 64, 0);
            escape(p);
            nmm_free(h, p, 0);
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            void *p = malloc(64);
            escape(p);
            free(p);
        }
    }
    return (double)(drv_now_ns() - t0) / (double)n;
}

static int bench_pair64(const target_t *t, const options_t *o)
{
    uint64_t n = o->ops_given ? o->ops : 10000000;
    uint32_t repeats = o->repeat ? o->repeat : 5;
    pair64_once(t, n / 10 + 1); /* warm the caches and the thread cache */
    double best = 1e300;
    for (uint32_t r = 0; r < repeats; r++) {
        double v = pair64_once(t, n);
        if (v < best)
            best = v;
    }
    emit("pair64", o, best, "ns/pair", 1, n, repeats, NULL, 0);
    return 0;
}

/* ---- churn: 1000-block working set per thread, 16 B .. 64 KiB log-uniform */

typedef struct churn_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t ops;
    uint64_t seed;
    pthread_barrier_t *start;
    uint64_t done_ns;
} churn_arg_t;

static void *churn_thread(void *arg)
{
    churn_arg_t *a = arg;
    const target_t *t = a->t;
    void **slots = out_map(sizeof(void *) * CHURN_SLOTS);
    if (!slots) {
        out_error("churn: cannot map the working set");
        exit(1);
    }
    xoshiro_t rng;
    xoshiro_seed(&rng, a->seed);
    for (int i = 0; i < CHURN_SLOTS; i++) { /* untimed: reach the steady state */
        slots[i] = t->alloc(t->heap, a->sizes[xoshiro_next(&rng) % SIZE_TABLE]);
        if (slots[i])
            *(volatile char *)slots[i] = 1;
    }
    pthread_barrier_wait(a->start);
    uint64_t ops = 0;
    while (ops < a->ops) {
        uint64_t r = xoshiro_next(&rng);
        uint32_t s = (uint32_t)(r % CHURN_SLOTS);
        if (slots[s]) {
            t->free(t->heap, slots[s]);
            ops++;
        }
        void *p = t->alloc(t->heap, a->sizes[(r >> 32) % SIZE_TABLE]);
        if (p)
            *(volatile char *)p = 1;
        slots[s] = p;
        ops++;
    }
    a->done_ns = drv_now_ns();
    for (int i = 0; i < CHURN_SLOTS; i++)
        if (slots[i])
            t->free(t->heap, slots[i]);
    out_unmap(slots, sizeof(void *) * CHURN_SLOTS);
    return NULL;
}

/* Returns ops/s, or a negative value if threads could not be started. */
static double churn_once(const target_t *t, const options_t *o, uint32_t threads, uint64_t ops,
                         const uint64_t *sizes, uint32_t round)
{
    pthread_t th[DRV_MAX_THREADS];
    churn_arg_t args[DRV_MAX_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads + 1);
    for (uint32_t i = 0; i < threads; i++) {
        args[i] = (churn_arg_t){t, sizes, ops, prng_mix(o->seed + round, i), &start, 0};
        if (pthread_create(&th[i], NULL, churn_thread, &args[i]) != 0) {
            out_error("churn: pthread_create failed");
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = drv_now_ns(), t1 = t0;
    for (uint32_t i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (args[i].done_ns > t1)
            t1 = args[i].done_ns;
    }
    pthread_barrier_destroy(&start);
    return (double)(ops * threads) * 1e9 / (double)(t1 - t0 ? t1 - t0 : 1);
}

static int bench_churn(const target_t *t, const options_t *o, bool peak)
{
    uint32_t threads = o->threads_given ? o->threads : 1;
    uint64_t ops = o->ops_given ? o->ops : 2000000;
    uint32_t repeats = o->repeat ? o->repeat : (peak ? 1 : 3);
    uint64_t *sizes = size_table(o, "16-65536", o->seed);
    if (!sizes)
        return 1;
    uint64_t base = rss_bytes();
    double best = 0;
    for (uint32_t r = 0; r < repeats; r++) {
        double v = churn_once(t, o, threads, ops, sizes, r);
        if (v > best)
            best = v;
    }
    if (peak) {
        uint64_t hwm = peak_rss_bytes();
        emit("peak_rss", o, (double)(hwm > base ? hwm - base : 0), "bytes", threads, ops, repeats,
             "process_peak_bytes", (double)hwm);
    } else {
        emit("churn", o, best, "ops/s", threads, ops, repeats, NULL, 0);
    }
    return 0;
}

/* ---- cross: one producer allocates, one consumer frees */

typedef struct cross_ring {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) void *items[CROSS_RING];
} cross_ring_t;

typedef struct cross_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t blocks;
    cross_ring_t *ring;
    pthread_barrier_t *start;
    uint64_t done_ns;
} cross_arg_t;

static void *cross_producer(void *arg)
{
    cross_arg_t *a = arg;
    cross_ring_t *q = a->ring;
    pthread_barrier_wait(a->start);
    uint64_t tail = 0;
    for (uint64_t i = 0; i < a->blocks; i++) {
        void *p = a->t->alloc(a->t->heap, a->sizes[i % SIZE_TABLE]);
        if (p)
            *(volatile char *)p = 1;
        for (unsigned spins = 0;
             tail - atomic_load_explicit(&q->head, memory_order_acquire) >= CROSS_RING; spins++)
            if (spins > 64)
                sched_yield();
        q->items[tail % CROSS_RING] = p;
        atomic_store_explicit(&q->tail, ++tail, memory_order_release);
    }
    return NULL;
}

static void *cross_consumer(void *arg)
{
    cross_arg_t *a = arg;
    cross_ring_t *q = a->ring;
    pthread_barrier_wait(a->start);
    uint64_t head = 0;
    while (head < a->blocks) {
        uint64_t tail;
        unsigned spins = 0;
        while ((tail = atomic_load_explicit(&q->tail, memory_order_acquire)) == head)
            if (++spins > 64)
                sched_yield();
        for (; head < tail; head++)
            if (q->items[head % CROSS_RING])
                a->t->free(a->t->heap, q->items[head % CROSS_RING]);
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
    a->done_ns = drv_now_ns();
    return NULL;
}

static int bench_cross(const target_t *t, const options_t *o)
{
    uint64_t blocks = o->ops_given ? o->ops : 2000000;
    uint32_t repeats = o->repeat ? o->repeat : 3;
    uint64_t *sizes = size_table(o, "16-1024", o->seed);
    cross_ring_t *ring = out_map(sizeof *ring);
    if (!sizes || !ring)
        return 1;
    double best = 0;
    for (uint32_t r = 0; r < repeats; r++) {
        memset(ring, 0, sizeof *ring);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 3);
        cross_arg_t a = {t, sizes, blocks, ring, &start, 0};
        pthread_t prod, cons;
        if (pthread_create(&prod, NULL, cross_producer, &a) ||
            pthread_create(&cons, NULL, cross_consumer, &a)) {
            out_error("cross: pthread_create failed");
            return 1;
        }
        pthread_barrier_wait(&start);
        uint64_t t0 = drv_now_ns();
        pthread_join(prod, NULL);
        pthread_join(cons, NULL);
        pthread_barrier_destroy(&start);
        double v = (double)(2 * blocks) * 1e9 / (double)(a.done_ns - t0 ? a.done_ns - t0 : 1);
        if (v > best)
            best = v;
    }
    emit("cross", o, best, "ops/s", 2, 2 * blocks, repeats, NULL, 0);
    return 0;
}

/* ---- overhead64: RSS growth per live 64-byte block, minus the 64 bytes */

static int bench_overhead64(const target_t *t, const options_t *o)
{
    uint64_t n = o->ops_given ? o->ops : 1000000;
    void **ptrs = out_map(sizeof(void *) * n);
    if (!ptrs)
        return 1;
    memset(ptrs, 0, sizeof(void *) * n); /* fault the array in before the baseline */
    void *warm = t->alloc(t->heap, 64);
    t->free(t->heap, warm);
    uint64_t before = rss_bytes();
    uint64_t got = 0;
    for (uint64_t i = 0; i < n; i++) {
        ptrs[i] = t->alloc(t->heap, 64);
        if (!ptrs[i])
            break;
        memset(ptrs[i], (int)i, 64);
        got++;
    }
    uint64_t after = rss_bytes();
    for (uint64_t i = 0; i < got; i++)
        t->free(t->heap, ptrs[i]);
    if (!got) {
        out_error("overhead64: no block could be allocated");
        return 1;
    }
    double per_block = (double)(after > before ? after - before : 0) / (double)got;
    emit("overhead64", o, per_block - 64.0, "bytes/block", 1, got, 1, "rss_per_block", per_block);
    return 0;
}

int bench_run(const char *name, const options_t *o)
{
    static const char *const kernels[] = {"pair64", "churn", "cross", "overhead64", "peak_rss"};
    int k = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(name, kernels[i]) == 0)
            k = i;
    if (k < 0) {
        fprintf(stderr,
                "nmm-driver: bench: unknown kernel '%s'; expected pair64, churn, cross, "
                "overhead64, peak_rss\n",
                name);
        return DRV_EXIT_USAGE;
    }
    target_t t;
    char err[600];
    if (!target_open(&t, o->target, o->nmm_options, err, sizeof err)) {
        out_error("%s", err);
        return DRV_EXIT_USAGE;
    }
    options_t local = *o;
    if (k != 1 && k != 4) /* only churn and peak_rss take --threads */
        local.threads = 1;
    int rc;
    switch (k) {
    case 0: rc = bench_pair64(&t, &local); break;
    case 1: rc = bench_churn(&t, &local, false); break;
    case 2: rc = bench_cross(&t, &local); break;
    case 3: rc = bench_overhead64(&t, &local); break;
    default: rc = bench_churn(&t, &local, true); break;
    }
    target_close(&t);
    return rc;
}
