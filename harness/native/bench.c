/* bench.c — the benchmark kernels (`nmm-driver bench NAME`): tight loops over the
 * target with no pattern work, each printing one JSON line. Measures, never judges;
 * kernel threads are started and joined here, and touch only their own state (and,
 * for the kernels that hand blocks between threads, the queues between them).
 * A kernel repeated in one process reports the median of its runs, with the min and
 * max beside it: the best run hides how unstable a multi-threaded allocator is. For
 * an NMM heap the line also carries the heap's own contention and refill counts,
 * which mean the same on a busy machine as on a quiet one. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"

#define SIZE_TABLE 4096
#define CHURN_SLOTS 1000
#define WORKSET_SLOTS 1024
#define CROSS_RING 4096
#define MEMCPY_BYTES (64ull << 20) /* well past the caches: the memory bus, not L3 */
#define KERNEL_STACK (256u << 10) /* 1024 oversubscribed threads: 256 MiB of stacks, not 8 GiB */

static inline void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static uint64_t rss_bytes(void) { return proc_status_kib("VmRSS:") * 1024; }
static uint64_t peak_rss_bytes(void) { return proc_status_kib("VmHWM:") * 1024; }
/* Anonymous pages only: the file-backed part of VmRSS (the program's and libc's code,
 * mapped by fault-around from whatever the page cache holds) moved one thread's
 * growth by up to ~150 KB between identical runs; the anonymous part repeats to the
 * page (threadchurn, 3 runs at off: one_thread_bytes 327-479 KB by VmRSS, 256 KB
 * every time by RssAnon). */
static uint64_t anon_rss_bytes(void) { return proc_status_kib("RssAnon:") * 1024; }

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

/* The median of n values (sorted in place); n >= 1. */
static double median_of(double *v, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++)
        for (uint32_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct runs {
    double v[64];
    uint32_t n;
    uint32_t repeats;        /* runs the line covers when not n (one value for several) */
} runs_t;

static void runs_add(runs_t *r, double v)
{
    if (r->n < 64)
        r->v[r->n++] = v;
}

/* Extra fields of a kernel's line: up to 4 (key, value) pairs, key NULL ends them. */
typedef struct extras {
    const char *key[4];
    double value[4];
} extras_t;

static void emit_extras(const char *name, const target_t *t, const options_t *o, runs_t *runs,
                        const char *unit, uint32_t threads, uint64_t ops, const extras_t *x);

static void emit_line(const char *name, const target_t *t, const options_t *o, runs_t *runs,
                      const char *unit, uint32_t threads, uint64_t ops, const char *extra_key,
                      double extra, const char *extra_key2, double extra2)
{
    extras_t x = {{extra_key, extra_key ? extra_key2 : NULL}, {extra, extra2}};
    emit_extras(name, t, o, runs, unit, threads, ops, &x);
}

static void emit_extras(const char *name, const target_t *t, const options_t *o, runs_t *runs,
                        const char *unit, uint32_t threads, uint64_t ops, const extras_t *x)
{
    jline_t j;
    jl_begin(&j, "bench");
    jl_str(&j, "name", name);
    jl_str(&j, "target", o->target);
    jl_str(&j, "nmm_options", o->nmm_options);
    double lo = runs->v[0], hi = runs->v[0];
    for (uint32_t i = 0; i < runs->n; i++) {
        lo = runs->v[i] < lo ? runs->v[i] : lo;
        hi = runs->v[i] > hi ? runs->v[i] : hi;
    }
    double all[64];
    memcpy(all, runs->v, sizeof(double) * runs->n);
    jl_dbl(&j, "value", median_of(all, runs->n));
    jl_dbl(&j, "min", lo);
    jl_dbl(&j, "max", hi);
    jl_str(&j, "unit", unit);
    jl_u64(&j, "threads", threads);
    jl_u64(&j, "ops", ops);
    jl_u64(&j, "repeats", runs->repeats ? runs->repeats : runs->n);
    for (int i = 0; i < 4 && x->key[i]; i++)
        jl_dbl(&j, x->key[i], x->value[i]);
    if (t && target_is_nmm(t)) {
        /* the heap's own counts: what the threads cost it, independent of the load */
        nmm_stats_t st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        if (nmm_stats_get(t->heap, &st) == NMM_OK) {
            jl_u64(&j, "lock_contention", st.lock_contention);
            jl_u64(&j, "cache_misses", st.cache_misses);
            jl_u64(&j, "cache_hits", st.cache_hits);
            jl_u64(&j, "slabs_mapped", st.slabs_mapped);
        }
    }
    jl_end(&j);
}

/* A kernel with one measurement (repeats: how many runs it covers). */
static void emit(const char *name, const target_t *t, const options_t *o, double value,
                 const char *unit, uint32_t threads, uint64_t ops, uint32_t repeats,
                 const char *extra_key, double extra)
{
    runs_t r = {{value}, 1, repeats};
    emit_line(name, t, o, &r, unit, threads, ops, extra_key, extra, NULL, 0);
}

/* Start fn(args[i]) on n threads with small stacks; exits the driver on failure. */
static void start_threads(pthread_t *th, uint32_t n, void *(*fn)(void *), void *args,
                          size_t arg_size, const char *what)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, KERNEL_STACK);
    for (uint32_t i = 0; i < n; i++)
        if (pthread_create(&th[i], &attr, fn, (char *)args + i * arg_size) != 0) {
            out_error("%s: pthread_create failed (thread %u of %u)", what, i + 1, n);
            exit(1);
        }
    pthread_attr_destroy(&attr);
}

/* ---- pair64: malloc(64)+free pairs, 1 thread, median of repeats */

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
    runs_t runs = {{0}, 0, 0};
    for (uint32_t r = 0; r < repeats; r++)
        runs_add(&runs, pair64_once(t, n));
    emit_line("pair64", t, o, &runs, "ns/pair", 1, n, NULL, 0, NULL, 0);
    return 0;
}

/* ---- churn / workset / oversub: a working set per thread, a random slot replaced
 * per iteration (its block freed, a new one of a random size allocated) */

typedef struct churn_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t ops;
    uint64_t seed;
    uint32_t slots;
    pthread_barrier_t *start;
    pthread_barrier_t *end;  /* the workers only: nobody frees its set or exits before
                              * all are done */
    uint64_t start_ns;       /* when this thread left the barrier */
    uint64_t done_ns;
    uint64_t cleanup_ns;     /* when it began to free its set and exit */
} churn_arg_t;

static void *churn_thread(void *arg)
{
    churn_arg_t *a = arg;
    const target_t *t = a->t;
    uint32_t nslots = a->slots;
    void **slots = out_map(sizeof(void *) * nslots);
    if (!slots) {
        out_error("churn: cannot map the working set");
        exit(1);
    }
    xoshiro_t rng;
    xoshiro_seed(&rng, a->seed);
    for (uint32_t i = 0; i < nslots; i++) { /* untimed: reach the steady state */
        slots[i] = t->alloc(t->heap, a->sizes[xoshiro_next(&rng) % SIZE_TABLE]);
        if (slots[i])
            *(volatile char *)slots[i] = 1;
    }
    pthread_barrier_wait(a->start);
    a->start_ns = drv_now_ns();
    uint64_t ops = 0;
    while (ops < a->ops) {
        uint64_t r = xoshiro_next(&rng);
        uint32_t s = (uint32_t)(r % nslots);
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
    /* What a thread does once its ops are done (free its set, unmap, exit: the
     * kernel's thread teardown and stack unmap) stays out of the others' timed
     * window: with 1024 threads on 2 cores the exits of the threads done first ran
     * while the rest were still timed, and oversub1024 measured thread teardown
     * (glibc 149 -> 14.5 Mops/s from 8 to 1024 threads, NMM 133 -> 27.6). */
    pthread_barrier_wait(a->end);
    a->cleanup_ns = drv_now_ns();
    for (uint32_t i = 0; i < nslots; i++)
        if (slots[i])
            t->free(t->heap, slots[i]);
    out_unmap(slots, sizeof(void *) * nslots);
    return NULL;
}

/* One run of `threads` threads doing `ops` each; returns ops/s over all of them.
 * *early (if given): threads that began their cleanup inside the timed window (the
 * end barrier keeps it 0). */
static double churn_once(const target_t *t, const options_t *o, uint32_t threads, uint64_t ops,
                         uint32_t slots, const uint64_t *sizes, uint32_t round, uint32_t *early)
{
    pthread_t *th = out_map(sizeof(pthread_t) * threads);
    churn_arg_t *args = out_map(sizeof(churn_arg_t) * threads);
    if (!th || !args) {
        out_error("churn: cannot map the thread table");
        exit(1);
    }
    pthread_barrier_t start, end;
    pthread_barrier_init(&start, NULL, threads + 1);
    pthread_barrier_init(&end, NULL, threads);
    for (uint32_t i = 0; i < threads; i++)
        args[i] = (churn_arg_t){t, sizes, ops, prng_mix(o->seed + round, i), slots, &start, &end,
                                0, 0, 0};
    start_threads(th, threads, churn_thread, args, sizeof *args, "churn");
    pthread_barrier_wait(&start);
    /* from the first thread's start to the last one's end: on a busy machine this
     * thread may only run again after the workers are done */
    uint64_t t0 = UINT64_MAX, t1 = 0;
    for (uint32_t i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        t0 = args[i].start_ns < t0 ? args[i].start_ns : t0;
        t1 = args[i].done_ns > t1 ? args[i].done_ns : t1;
    }
    for (uint32_t i = 0; early && i < threads; i++)
        *early += args[i].cleanup_ns < t1;
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&end);
    out_unmap(th, sizeof(pthread_t) * threads);
    out_unmap(args, sizeof(churn_arg_t) * threads);
    return (double)(ops * threads) * 1e9 / (double)(t1 - t0 ? t1 - t0 : 1);
}

/* Bytes per second memcpy moves between two buffers of `bytes` (mapped here, never
 * the target's, and touched first so no page fault is timed), the median of 5:
 * the machine's memory-copy bandwidth, measured in the same process as the kernel
 * it is set against. */
static double memcpy_bandwidth(uint64_t bytes)
{
    uint8_t *src = out_map(bytes), *dst = out_map(bytes);
    if (!src || !dst) {
        out_error("memcpy bandwidth: cannot map 2 x %llu bytes", (unsigned long long)bytes);
        exit(1);
    }
    memset(src, 0x5A, bytes);
    memset(dst, 0, bytes);
    double v[5];
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = drv_now_ns();
        memcpy(dst, src, bytes);
        escape(dst);
        uint64_t ns = drv_now_ns() - t0;
        v[i] = (double)bytes * 1e9 / (double)(ns ? ns : 1);
    }
    out_unmap(src, bytes);
    out_unmap(dst, bytes);
    return median_of(v, 5);
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
    runs_t runs = {{0}, 0, 0};
    for (uint32_t r = 0; r < repeats; r++)
        runs_add(&runs, churn_once(t, o, threads, ops, CHURN_SLOTS, sizes, r, NULL));
    if (peak) {
        uint64_t hwm = peak_rss_bytes();
        emit("peak_rss", t, o, (double)(hwm > base ? hwm - base : 0), "bytes", threads, ops, repeats,
             "process_peak_bytes", (double)hwm);
    } else {
        /* what the churn moves through memory (paranoid poisons each freed block
         * and checks it again when it is handed out: ~ops/s x mean size) against
         * what memcpy moves per second on this machine in this run */
        double mean = 0;
        for (int i = 0; i < SIZE_TABLE; i++)
            mean += (double)sizes[i];
        mean /= SIZE_TABLE;
        emit_line("churn", t, o, &runs, "ops/s", threads, ops, "mean_size", mean,
                  "memcpy_bytes_per_s", memcpy_bandwidth(MEMCPY_BYTES));
    }
    out_unmap(sizes, sizeof(uint64_t) * SIZE_TABLE);
    return 0;
}

/* workset: each thread keeps 1024 live blocks of 4 B .. 32 KiB (density 1/size) and
 * replaces a random one per iteration: the program whose second thread halved NMM. */
static int bench_workset(const target_t *t, const options_t *o)
{
    uint32_t threads = o->threads_given ? o->threads : 1;
    uint64_t ops = o->ops_given ? o->ops : 2000000;
    uint32_t repeats = o->repeat ? o->repeat : 1;
    uint64_t *sizes = size_table(o, "4-32768", o->seed);
    if (!sizes)
        return 1;
    runs_t runs = {{0}, 0, 0};
    for (uint32_t r = 0; r < repeats; r++)
        runs_add(&runs, churn_once(t, o, threads, ops, WORKSET_SLOTS, sizes, r, NULL));
    emit_line("workset", t, o, &runs, "ops/s", threads, ops * threads, NULL, 0, NULL, 0);
    return 0;
}

/* oversub: --threads threads (8, 64, 1024 on 2 cores), each doing --ops ops with 64
 * live blocks of 16 B .. 1 KiB: the cost of many more threads than cores. Every thread
 * count does the same work per thread, so a thread's ops outlast a scheduler time slice
 * and what differs is the allocator's (a lock holder preempted, per-thread caches, cold
 * lines); with a fixed total split over the threads (2M ops: ~2000 per thread at 1024)
 * each thread's work was shorter than its wake-up from the start barrier, and
 * oversub1024 timed the kernel waking 1024 threads (every allocator at 16-34% of its
 * 8-thread rate). Timed from the first thread's start to the last one's end of its
 * ops: the threads' creation and warm-up come before (a barrier), their cleanup and
 * exit after (a barrier: exits_in_window, threads that began theirs inside the
 * window, is 0). */
static int bench_oversub(const target_t *t, const options_t *o)
{
    uint32_t threads = o->threads_given ? o->threads : 64;
    uint64_t per = o->ops_given ? o->ops : 200000;
    uint32_t repeats = o->repeat ? o->repeat : 1;
    uint64_t *sizes = size_table(o, "16-1024", o->seed);
    if (!sizes)
        return 1;
    runs_t runs = {{0}, 0, 0};
    uint32_t early = 0;
    for (uint32_t r = 0; r < repeats; r++)
        runs_add(&runs, churn_once(t, o, threads, per, 64, sizes, r, &early));
    emit_line("oversub", t, o, &runs, "ops/s", threads, per * threads, "exits_in_window",
              (double)early, NULL, 0);
    return 0;
}

/* ---- rings between threads: single producer, single consumer */

typedef struct cross_ring {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) void *items[CROSS_RING];
} cross_ring_t;

static void ring_push(cross_ring_t *q, uint64_t *tail, void *p)
{
    for (unsigned spins = 0;
         *tail - atomic_load_explicit(&q->head, memory_order_acquire) >= CROSS_RING; spins++)
        if (spins > 64)
            sched_yield();
    q->items[*tail % CROSS_RING] = p;
    atomic_store_explicit(&q->tail, ++*tail, memory_order_release);
}

/* Frees what q holds past *head; returns how many. */
static uint64_t ring_drain(const target_t *t, cross_ring_t *q, uint64_t *head)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire), n = tail - *head;
    for (; *head < tail; (*head)++)
        if (q->items[*head % CROSS_RING])
            t->free(t->heap, q->items[*head % CROSS_RING]);
    if (n)
        atomic_store_explicit(&q->head, *head, memory_order_release);
    return n;
}

/* ---- cross: one producer allocates, one consumer frees */

typedef struct cross_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t blocks;
    cross_ring_t *ring;
    pthread_barrier_t *start;
    uint64_t start_ns;       /* producer: when it left the barrier */
    uint64_t done_ns;        /* consumer: when it freed the last block */
} cross_arg_t;

static void *cross_producer(void *arg)
{
    cross_arg_t *a = arg;
    pthread_barrier_wait(a->start);
    a->start_ns = drv_now_ns();
    uint64_t tail = 0;
    for (uint64_t i = 0; i < a->blocks; i++) {
        void *p = a->t->alloc(a->t->heap, a->sizes[i % SIZE_TABLE]);
        if (p)
            *(volatile char *)p = 1;
        ring_push(a->ring, &tail, p);
    }
    return NULL;
}

static void *cross_consumer(void *arg)
{
    cross_arg_t *a = arg;
    pthread_barrier_wait(a->start);
    uint64_t head = 0;
    unsigned spins = 0;
    while (head < a->blocks)
        if (ring_drain(a->t, a->ring, &head))
            spins = 0;
        else if (++spins > 64)
            sched_yield();
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
    runs_t runs = {{0}, 0, 0};
    for (uint32_t r = 0; r < repeats; r++) {
        memset(ring, 0, sizeof *ring);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 3);
        cross_arg_t a = {t, sizes, blocks, ring, &start, 0, 0};
        pthread_t prod, cons;
        if (pthread_create(&prod, NULL, cross_producer, &a) ||
            pthread_create(&cons, NULL, cross_consumer, &a)) {
            out_error("cross: pthread_create failed");
            return 1;
        }
        pthread_barrier_wait(&start);
        pthread_join(prod, NULL);
        pthread_join(cons, NULL);
        pthread_barrier_destroy(&start);
        uint64_t ns = a.done_ns - a.start_ns;
        runs_add(&runs, (double)(2 * blocks) * 1e9 / (double)(ns ? ns : 1));
    }
    emit_line("cross", t, o, &runs, "ops/s", 2, 2 * blocks, NULL, 0, NULL, 0);
    return 0;
}

/* ---- prodcons: --threads - 1 producers (default 3), one consumer freeing all */

typedef struct prodcons_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t blocks;         /* producer: to make; consumer: to free in all */
    cross_ring_t *rings;     /* one per producer */
    uint32_t producers;
    uint32_t index;          /* producer: its ring and size stride */
    pthread_barrier_t *start;
    uint64_t start_ns;       /* when it left the barrier */
    uint64_t done_ns;        /* consumer: when it freed the last block */
} prodcons_arg_t;

static void *prodcons_producer(void *arg)
{
    prodcons_arg_t *a = arg;
    cross_ring_t *q = &a->rings[a->index];
    pthread_barrier_wait(a->start);
    a->start_ns = drv_now_ns();
    uint64_t tail = 0;
    for (uint64_t i = 0; i < a->blocks; i++) {
        void *p = a->t->alloc(a->t->heap, a->sizes[(i * 7 + a->index * 613) % SIZE_TABLE]);
        if (p)
            *(volatile char *)p = 1;
        ring_push(q, &tail, p);
    }
    return NULL;
}

static void *prodcons_consumer(void *arg)
{
    prodcons_arg_t *a = arg;
    uint64_t *heads = out_map(sizeof(uint64_t) * a->producers);
    if (!heads) {
        out_error("prodcons: cannot map the ring heads");
        exit(1);
    }
    pthread_barrier_wait(a->start);
    uint64_t freed = 0;
    unsigned spins = 0;
    while (freed < a->blocks) {
        uint64_t got = 0;
        for (uint32_t p = 0; p < a->producers; p++)
            got += ring_drain(a->t, &a->rings[p], &heads[p]);
        freed += got;
        if (got)
            spins = 0;
        else if (++spins > 64)
            sched_yield();
    }
    a->done_ns = drv_now_ns();
    out_unmap(heads, sizeof(uint64_t) * a->producers);
    return NULL;
}

static int bench_prodcons(const target_t *t, const options_t *o)
{
    uint32_t threads = o->threads_given ? o->threads : 4;
    uint32_t producers = threads > 1 ? threads - 1 : 1;
    uint64_t blocks = o->ops_given ? o->ops : 2000000;
    uint64_t per = blocks / producers ? blocks / producers : 1;
    uint32_t repeats = o->repeat ? o->repeat : 1;
    uint64_t *sizes = size_table(o, "16-1024", o->seed);
    cross_ring_t *rings = out_map(sizeof(cross_ring_t) * producers);
    pthread_t *th = out_map(sizeof(pthread_t) * (producers + 1));
    prodcons_arg_t *args = out_map(sizeof(prodcons_arg_t) * (producers + 1));
    if (!sizes || !rings || !th || !args)
        return 1;
    runs_t runs = {{0}, 0, 0};
    for (uint32_t r = 0; r < repeats; r++) {
        memset(rings, 0, sizeof(cross_ring_t) * producers);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, producers + 2);
        for (uint32_t i = 0; i <= producers; i++)
            args[i] = (prodcons_arg_t){t, sizes, i < producers ? per : per * producers, rings,
                                       producers, i, &start, 0, 0};
        start_threads(th, producers, prodcons_producer, args, sizeof *args, "prodcons");
        start_threads(th + producers, 1, prodcons_consumer, args + producers, sizeof *args,
                      "prodcons");
        pthread_barrier_wait(&start);
        uint64_t t0 = UINT64_MAX;
        for (uint32_t i = 0; i <= producers; i++) {
            pthread_join(th[i], NULL);
            if (i < producers && args[i].start_ns < t0)
                t0 = args[i].start_ns;
        }
        pthread_barrier_destroy(&start);
        uint64_t ns = args[producers].done_ns - t0;
        runs_add(&runs, (double)(2 * per * producers) * 1e9 / (double)(ns ? ns : 1));
    }
    emit_line("prodcons", t, o, &runs, "ops/s", producers + 1, 2 * per * producers, NULL, 0,
              NULL, 0);
    return 0;
}

/* ---- larson: a server's threads. --threads slot arrays (default 4) of 1000 blocks,
 * 16 B .. 1 KiB; each array is worked by a succession of short-lived threads, every
 * one replacing random slots (freeing blocks its predecessors allocated) for its
 * share of --ops, then exiting, its successor started by the array's coordinator. */

#define LARSON_SLOTS 1000
#define LARSON_LIVES 50 /* thread lifetimes per array */

typedef struct larson_arg {
    const target_t *t;
    const uint64_t *sizes;
    void **slots;
    uint64_t ops;            /* per lifetime */
    uint64_t seed;
    pthread_barrier_t *start;
    uint64_t start_ns;       /* chain: when it left the barrier */
    uint64_t done_ns;        /* chain: when its last lifetime ended */
} larson_arg_t;

static void *larson_life(void *arg)
{
    larson_arg_t *a = arg;
    const target_t *t = a->t;
    xoshiro_t rng;
    xoshiro_seed(&rng, a->seed);
    for (uint64_t i = 0; i < a->ops; i++) {
        uint64_t r = xoshiro_next(&rng);
        uint32_t s = (uint32_t)(r % LARSON_SLOTS);
        if (a->slots[s])
            t->free(t->heap, a->slots[s]);
        void *p = t->alloc(t->heap, a->sizes[(r >> 32) % SIZE_TABLE]);
        if (p)
            *(volatile char *)p = 1;
        a->slots[s] = p;
    }
    return NULL;
}

static void *larson_chain(void *arg)
{
    larson_arg_t *a = arg;
    const target_t *t = a->t;
    for (uint32_t i = 0; i < LARSON_SLOTS; i++) /* made here, freed by the lifetimes */
        a->slots[i] = t->alloc(t->heap, a->sizes[(i * 2654435761u) % SIZE_TABLE]);
    pthread_barrier_wait(a->start);
    a->start_ns = drv_now_ns();
    for (uint32_t life = 0; life < LARSON_LIVES; life++) {
        larson_arg_t one = *a;
        one.seed = prng_mix(a->seed, life);
        pthread_t th;
        start_threads(&th, 1, larson_life, &one, sizeof one, "larson");
        pthread_join(th, NULL);
    }
    a->done_ns = drv_now_ns();
    for (uint32_t i = 0; i < LARSON_SLOTS; i++)
        if (a->slots[i])
            t->free(t->heap, a->slots[i]);
    return NULL;
}

static int bench_larson(const target_t *t, const options_t *o)
{
    uint32_t threads = o->threads_given ? o->threads : 4;
    uint64_t total = o->ops_given ? o->ops : 2000000;
    uint64_t per_life = total / ((uint64_t)threads * LARSON_LIVES);
    per_life = per_life ? per_life : 1;
    uint32_t repeats = o->repeat ? o->repeat : 1;
    uint64_t *sizes = size_table(o, "16-1024", o->seed);
    void **slots = out_map(sizeof(void *) * LARSON_SLOTS * threads);
    pthread_t *th = out_map(sizeof(pthread_t) * threads);
    larson_arg_t *args = out_map(sizeof(larson_arg_t) * threads);
    if (!sizes || !slots || !th || !args)
        return 1;
    runs_t runs = {{0}, 0, 0};
    uint64_t ops = per_life * LARSON_LIVES * threads;
    for (uint32_t r = 0; r < repeats; r++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, threads + 1);
        for (uint32_t i = 0; i < threads; i++)
            args[i] = (larson_arg_t){t, sizes, slots + (size_t)i * LARSON_SLOTS, per_life,
                                     prng_mix(o->seed + r, i), &start, 0, 0};
        start_threads(th, threads, larson_chain, args, sizeof *args, "larson");
        pthread_barrier_wait(&start);
        uint64_t t0 = UINT64_MAX, t1 = 0;
        for (uint32_t i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            t0 = args[i].start_ns < t0 ? args[i].start_ns : t0;
            t1 = args[i].done_ns > t1 ? args[i].done_ns : t1;
        }
        pthread_barrier_destroy(&start);
        /* each op is a free and an allocation, as in churn */
        runs_add(&runs, (double)(2 * ops) * 1e9 / (double)(t1 - t0 ? t1 - t0 : 1));
    }
    emit_line("larson", t, o, &runs, "ops/s", threads, 2 * ops, "lifetimes",
              (double)threads * LARSON_LIVES, NULL, 0);
    return 0;
}

/* ---- threadchurn: --ops thread lifetimes (default 10,000), --threads at a time
 * (default 8); each thread replaces random slots of its own 64 blocks of 16 B ..
 * 4 KiB 256 times, frees them all and exits. The value is the growth of the
 * anonymous RSS (anon_rss_bytes) after all the lifetimes; one_thread_bytes is the
 * growth after the first one alone, and first_wave_bytes after the first --threads
 * at once (the same concurrency as the rest: what all the lifetimes add beyond it is
 * what thread exits leave behind).
 * A wave's threads start their work together (a barrier): a lifetime is shorter than
 * a thread's creation, so without it how many of them lived at once, and with it the
 * RSS, depended on the machine's load (first wave 0.68 MB loaded, 1.59 MB quiet). */

#define CHURN_LIFE_SLOTS 64
#define CHURN_LIFE_OPS 256

typedef struct life_arg {
    const target_t *t;
    const uint64_t *sizes;
    uint64_t seed;
    pthread_barrier_t *start;  /* the wave's threads, all alive before any works */
} life_arg_t;

static void *life_thread(void *arg)
{
    life_arg_t *a = arg;
    const target_t *t = a->t;
    void *slots[CHURN_LIFE_SLOTS] = {0};
    xoshiro_t rng;
    xoshiro_seed(&rng, a->seed);
    pthread_barrier_wait(a->start);
    for (uint32_t i = 0; i < CHURN_LIFE_OPS; i++) {
        uint64_t r = xoshiro_next(&rng);
        uint32_t s = (uint32_t)(r % CHURN_LIFE_SLOTS);
        if (slots[s])
            t->free(t->heap, slots[s]);
        slots[s] = t->alloc(t->heap, a->sizes[(r >> 32) % SIZE_TABLE]);
        if (slots[s])
            *(volatile char *)slots[s] = 1;
    }
    for (uint32_t i = 0; i < CHURN_LIFE_SLOTS; i++)
        if (slots[i])
            t->free(t->heap, slots[i]);
    return NULL;
}

static int bench_threadchurn(const target_t *t, const options_t *o)
{
    uint32_t wave = o->threads_given ? o->threads : 8;
    uint64_t lifetimes = o->ops_given ? o->ops : 10000;
    uint64_t *sizes = size_table(o, "16-4096", o->seed);
    pthread_t *th = out_map(sizeof(pthread_t) * wave);
    life_arg_t *args = out_map(sizeof(life_arg_t) * wave);
    if (!sizes || !th || !args)
        return 1;
    uint64_t base = anon_rss_bytes();
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 1);
    args[0] = (life_arg_t){t, sizes, prng_mix(o->seed, 0), &start};
    start_threads(th, 1, life_thread, args, sizeof *args, "threadchurn");
    pthread_join(th[0], NULL);
    pthread_barrier_destroy(&start);
    uint64_t one = anon_rss_bytes(), wave_one = one;
    uint64_t done = 1, t0 = drv_now_ns();
    while (done < lifetimes) {
        uint32_t n = lifetimes - done < wave ? (uint32_t)(lifetimes - done) : wave;
        pthread_barrier_init(&start, NULL, n);
        for (uint32_t i = 0; i < n; i++)
            args[i] = (life_arg_t){t, sizes, prng_mix(o->seed, done + i), &start};
        start_threads(th, n, life_thread, args, sizeof *args, "threadchurn");
        for (uint32_t i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        if (done == 1)
            wave_one = anon_rss_bytes();
        done += n;
    }
    uint64_t ns = drv_now_ns() - t0;
    uint64_t all = anon_rss_bytes();
    runs_t runs = {{(double)(all > base ? all - base : 0)}, 1, 1};
    extras_t x = {{"one_thread_bytes", "first_wave_bytes", "lifetimes_per_s"},
                  {(double)(one > base ? one - base : 0),
                   (double)(wave_one > base ? wave_one - base : 0),
                   (double)(lifetimes - 1) * 1e9 / (double)(ns ? ns : 1)}};
    emit_extras("threadchurn", t, o, &runs, "bytes", wave, lifetimes, &x);
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
    emit("overhead64", t, o, per_block - 64.0, "bytes/block", 1, got, 1, "rss_per_block", per_block);
    return 0;
}

int bench_run(const char *name, const options_t *o)
{
    static const char *const kernels[] = {"pair64",  "churn",    "cross",  "overhead64",
                                          "peak_rss", "workset", "oversub", "prodcons",
                                          "larson",  "threadchurn"};
    enum { NKERNELS = sizeof kernels / sizeof kernels[0] };
    int k = -1;
    for (int i = 0; i < NKERNELS; i++)
        if (strcmp(name, kernels[i]) == 0)
            k = i;
    if (k < 0) {
        fprintf(stderr,
                "nmm-driver: bench: unknown kernel '%s'; expected pair64, churn, cross, "
                "overhead64, peak_rss, workset, oversub, prodcons, larson, threadchurn\n",
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
    if (k == 0 || k == 2 || k == 3) /* pair64, cross and overhead64 take no --threads */
        local.threads = 1;
    int rc;
    switch (k) {
    case 0: rc = bench_pair64(&t, &local); break;
    case 1: rc = bench_churn(&t, &local, false); break;
    case 2: rc = bench_cross(&t, &local); break;
    case 3: rc = bench_overhead64(&t, &local); break;
    case 4: rc = bench_churn(&t, &local, true); break;
    case 5: rc = bench_workset(&t, &local); break;
    case 6: rc = bench_oversub(&t, &local); break;
    case 7: rc = bench_prodcons(&t, &local); break;
    case 8: rc = bench_larson(&t, &local); break;
    default: rc = bench_threadchurn(&t, &local); break;
    }
    target_close(&t);
    return rc;
}
