/* workload.c — runs a trial: worker threads replay their op streams against the
 * target, keep a live set per worker, hand frees across threads, churn threads and
 * fork children, then tear down and write the result line. A logical worker is run
 * by one OS thread at a time; the main thread only supervises, then finishes. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver.h"
#include "sched.h"

#define INBOX_DRAIN_MASK 15u
#define DEADLINE_MASK 1023u
#define FORK_CHILD_BLOCKS 64
#define WORKER_STACK_BYTES (256u * 1024u)

/* ---- supervisor hand-off: a finished thread posts its worker index */
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static uint32_t *done_queue;
static uint32_t done_count;

static bool slot_occupied(void *ctx, uint32_t slot)
{
    return ((worker_t *)ctx)->slots[slot].ptr != NULL;
}

static inline bool checking(const trial_t *tr) { return !tr->o->no_check; }

bool workload_detail_line(trial_t *tr)
{
    return atomic_fetch_add_explicit(&tr->detail_lines, 1, memory_order_relaxed) <
           DRV_MAX_DETAIL_LINES;
}

/* A block that does not hold what it should: counted, and named in a pattern_error
 * line (address, requested size, first wrong byte) while detail lines last. */
static void pattern_error(trial_t *tr, worker_t *w, const void *p, uint64_t size, long offset,
                          const char *what, const void *source)
{
    atomic_fetch_add_explicit(&w->pattern_errors, 1, memory_order_relaxed);
    if (!workload_detail_line(tr))
        return;
    jline_t j;
    jl_begin(&j, "pattern_error");
    jl_str(&j, "what", what);
    jl_hex(&j, "address", (uintptr_t)p);
    if (source != p) /* realloc: the bytes came from the old block */
        jl_hex(&j, "source", (uintptr_t)source);
    jl_u64(&j, "size", size);
    jl_i64(&j, "offset", offset);
    jl_u64(&j, "worker", w->index);
    jl_u64(&j, "op", w->op);
    jl_end(&j);
}

void workload_check_block(trial_t *tr, worker_t *w, const slot_t *s)
{
    if (!checking(tr))
        return;
    long bad = pattern_check(s->ptr, s->size, s->key);
    if (bad >= 0)
        pattern_error(tr, w, s->ptr, s->size, bad, "check", s->ptr);
}

static void fill_block(trial_t *tr, worker_t *w, slot_t *s, void *p, uint64_t size)
{
    s->ptr = p;
    s->size = size;
    s->id = ((uint64_t)w->index << 40) | w->next_block++;
    if (checking(tr)) {
        s->key = pattern_key(tr->o->seed, s->id);
        pattern_fill(p, size, s->key);
    }
}

/* A NULL for a zero-byte request from a target that is not an NMM heap: C lets
 * malloc(0), calloc with a zero count or size and aligned_alloc(a, 0) return NULL (no
 * block, nothing to free), so it is counted apart (zero_nulls), not as a failure. An
 * NMM heap always returns a zero-size block: its NULL is a failure like any other. */
static bool zero_null(trial_t *tr, worker_t *w, uint64_t size)
{
    if (size != 0 || target_is_nmm(&tr->target))
        return false;
    w->zero_nulls++;
    return true;
}

bool workload_alloc_slot(trial_t *tr, worker_t *w, slot_t *s, uint64_t size)
{
    void *p = tr->target.alloc(tr->target.heap, size);
    if (!p) {
        if (!zero_null(tr, w, size))
            w->alloc_failures++;
        return false;
    }
    w->allocs++;
    fill_block(tr, w, s, p, size);
    return true;
}

/* A call's unexpected outcome: counted, and a status_error line (call, address, size,
 * status, worker, op) while detail lines are still written. */
static void status_error_line(trial_t *tr, worker_t *w, const char *call, const void *ptr,
                              uint64_t size, int status)
{
    w->unexpected_status++;
    if (!workload_detail_line(tr))
        return;
    jline_t j;
    jl_begin(&j, "status_error");
    jl_str(&j, "call", call);
    jl_hex(&j, "address", (uintptr_t)ptr);
    jl_u64(&j, "size", size);
    jl_i64(&j, "status", status);
    jl_u64(&j, "worker", w->index);
    jl_u64(&j, "op", w->op);
    jl_end(&j);
}

void workload_count_free(trial_t *tr, worker_t *w, const void *ptr, uint64_t size, int status,
                         const char *call)
{
    if (status == NMM_OK || status == NMM_E_CORRUPTED)
        w->frees++;
    else
        w->dropped++;
    if (status == NMM_OK)
        return;
    status_error_line(tr, w, call, ptr, size, status);
}

void workload_free_slot(trial_t *tr, worker_t *w, slot_t *s)
{
    workload_check_block(tr, w, s);
    int st = tr->target.free(tr->target.heap, s->ptr);
    workload_count_free(tr, w, s->ptr, s->size, st, "free");
    s->ptr = NULL;
}

static void op_alloc(trial_t *tr, worker_t *w, const op_t *op, bool sample)
{
    const target_t *t = &tr->target;
    uint64_t t0 = sample ? drv_now_ns() : 0;
    void *p;
    if (op->flavor == AF_CALLOC && op->zero_count)
        p = t->calloc(t->heap, 0, op->count);
    else if (op->flavor == AF_CALLOC)
        p = t->calloc(t->heap, op->count ? op->count : 1, op->size / (op->count ? op->count : 1));
    else if (op->flavor == AF_ALIGNED)
        p = t->aligned_alloc(t->heap, op->alignment, op->size);
    else
        p = t->alloc(t->heap, op->size);
    if (sample)
        hist_add(&w->hist, drv_now_ns() - t0);
    if (!p) {
        if (!zero_null(tr, w, op->size))
            w->alloc_failures++;
        return;
    }
    w->allocs++;
    if (checking(tr)) {
        if (op->flavor == AF_ALIGNED && ((uintptr_t)p & (op->alignment - 1)))
            pattern_error(tr, w, p, op->size, (long)((uintptr_t)p & (op->alignment - 1)),
                          "aligned", p);
        long bad;
        if (op->flavor == AF_CALLOC && (bad = pattern_check_zero(p, op->size)) >= 0)
            pattern_error(tr, w, p, op->size, bad, "calloc", p);
    }
    fill_block(tr, w, &w->slots[op->slot], p, op->size);
}

static bool inbox_push(inbox_t *in, const slot_t *s)
{
    uint64_t tail = atomic_load_explicit(&in->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&in->head, memory_order_acquire);
    if (tail - head >= INBOX_CAP)
        return false;
    in->items[tail % INBOX_CAP] = *s;
    atomic_store_explicit(&in->tail, tail + 1, memory_order_release);
    return true;
}

/* Consumer side: check each handed-over block, then free it on this thread. */
static void inbox_drain(trial_t *tr, worker_t *w)
{
    inbox_t *in = w->inbox;
    uint64_t head = atomic_load_explicit(&in->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&in->tail, memory_order_acquire);
    for (; head != tail; head++) {
        slot_t s = in->items[head % INBOX_CAP];
        workload_free_slot(tr, w, &s);
        w->cross_received++;
    }
    atomic_store_explicit(&in->head, head, memory_order_release);
}

static void op_free(trial_t *tr, worker_t *w, const op_t *op, bool sample)
{
    slot_t *s = &w->slots[op->slot];
    if (op->cross) {
        worker_t *to = &tr->workers[(w->index + 1) % tr->o->threads];
        if (inbox_push(to->inbox, s)) {
            w->cross_sent++;
            s->ptr = NULL;
            return;
        }
        w->cross_fallback++;
    }
    workload_check_block(tr, w, s);
    uint64_t t0 = sample ? drv_now_ns() : 0;
    int st = tr->target.free(tr->target.heap, s->ptr);
    if (sample)
        hist_add(&w->hist, drv_now_ns() - t0);
    workload_count_free(tr, w, s->ptr, s->size, st, "free");
    s->ptr = NULL;
}

static void op_realloc(trial_t *tr, worker_t *w, const op_t *op, bool sample)
{
    slot_t *s = &w->slots[op->slot];
    uint64_t old_key = s->key, old_size = s->size;
    void *old = s->ptr;
    workload_check_block(tr, w, s);
    uint64_t t0 = sample ? drv_now_ns() : 0;
    void *p = tr->target.realloc(tr->target.heap, s->ptr, op->size);
    if (sample)
        hist_add(&w->hist, drv_now_ns() - t0);
    if (!p) {
        if (zero_null(tr, w, op->size)) {
            /* realloc(p, 0) returned NULL: glibc (and most peers) freed p. C17 leaves
             * whether it did to the implementation; taking it as freed never frees it
             * twice (a peer that kept it only leaks it) */
            w->frees++;
            s->ptr = NULL;
            return;
        }
        int st = tr->target.last_status();
        if (st == NMM_E_NOMEM) { /* the old block stays valid and in its slot */
            w->alloc_failures++;
            return;
        }
        /* refused: the target says the block is not a live one of its own */
        workload_count_free(tr, w, s->ptr, s->size, st, "realloc");
        s->ptr = NULL;
        return;
    }
    w->reallocs++;
    if (p != s->ptr)
        w->reallocs_moved++;
    long bad;
    if (checking(tr) && (bad = pattern_check_prefix(p, old_size, op->size, old_key)) >= 0)
        pattern_error(tr, w, p, op->size, bad, "realloc", old);
    fill_block(tr, w, s, p, op->size);
}

/* ---- edge requests: calls every allocator must refuse with NULL (the heap counts
 * each as a failed allocation, so the driver counts them apart: edge_nulls). A block
 * returned for one is the allocator's bug: a status_error line (status 0) names it. */

/* A block an edge request should not have returned: counted as the driver's, freed. */
static void edge_block(trial_t *tr, worker_t *w, const char *call, void *p, uint64_t size)
{
    if (!p) {
        w->edge_nulls++;
        return;
    }
    w->allocs++;
    status_error_line(tr, w, call, p, size, NMM_OK);
    workload_count_free(tr, w, p, 0, tr->target.free(tr->target.heap, p), "free");
}

static void edge_requests(trial_t *tr, worker_t *w)
{
    const target_t *t = &tr->target;
    uint64_t round = w->op / tr->o->edge_every;
    size_t count = 2 + (size_t)(round % 63); /* 2..64 */
    /* the product overflows by one element, then fits in size_t but no heap holds it */
    edge_block(tr, w, "calloc-overflow", t->calloc(t->heap, count, SIZE_MAX / count + 1),
               SIZE_MAX);
    edge_block(tr, w, "calloc-huge", t->calloc(t->heap, count, SIZE_MAX / count),
               SIZE_MAX / count * count);
    edge_block(tr, w, "malloc-huge", t->alloc(t->heap, SIZE_MAX - round % 4096), SIZE_MAX);
    edge_block(tr, w, "aligned-huge", t->aligned_alloc(t->heap, 4096, SIZE_MAX - 8192),
               SIZE_MAX - 8192);
    /* a live block grown past any heap: NULL, and the block stays as it was */
    slot_t *s = &w->slots[round % tr->o->live];
    if (!s->ptr)
        return;
    void *p = t->realloc(t->heap, s->ptr, SIZE_MAX / 2);
    if (!p) {
        int st = t->last_status();
        if (st == NMM_E_NOMEM) {
            w->edge_nulls++;
            return;
        }
        workload_count_free(tr, w, s->ptr, s->size, st, "realloc-huge");
        s->ptr = NULL;
        return;
    }
    w->reallocs++;
    if (p != s->ptr)
        w->reallocs_moved++;
    status_error_line(tr, w, "realloc-huge", p, SIZE_MAX / 2, NMM_OK);
    s->ptr = p; /* the old bytes are its prefix, if it really holds them */
}

/* ---- fork storm: the child uses the target a little and reports by exit code */

enum { FORK_OK = 0, FORK_NULL = 3, FORK_PATTERN = 4, FORK_STATUS = 5 };

static int fork_child(trial_t *tr, worker_t *w)
{
    xoshiro_t rng;
    xoshiro_seed(&rng, prng_mix(tr->o->seed ^ 0xF0F0F0F0ull, w->fork_children));
    void *blocks[FORK_CHILD_BLOCKS];
    uint64_t sizes[FORK_CHILD_BLOCKS];
    int rc = FORK_OK;
    for (int i = 0; i < FORK_CHILD_BLOCKS; i++) {
        sizes[i] = plan_size(&rng, tr->o);
        blocks[i] = tr->target.alloc(tr->target.heap, sizes[i]);
        if (!blocks[i] && (sizes[i] != 0 || target_is_nmm(&tr->target)))
            rc = FORK_NULL; /* may be a fail point the parent armed: said apart */
        else
            pattern_fill(blocks[i], sizes[i], pattern_key(tr->o->seed, (uint64_t)i));
    }
    for (int i = 0; i < FORK_CHILD_BLOCKS; i++) {
        if (!blocks[i])
            continue;
        if (pattern_check(blocks[i], sizes[i], pattern_key(tr->o->seed, (uint64_t)i)) >= 0)
            return FORK_PATTERN;
        if (tr->target.free(tr->target.heap, blocks[i]) != NMM_OK)
            return FORK_STATUS;
    }
    return rc;
}

static void fork_failure(trial_t *tr, worker_t *w, int status)
{
    w->fork_failures++;
    if (!workload_detail_line(tr))
        return;
    jline_t j;
    jl_begin(&j, "fork_failure");
    jl_u64(&j, "worker", w->index);
    jl_u64(&j, "op", w->op);
    if (WIFSIGNALED(status)) {
        jl_i64(&j, "signal", WTERMSIG(status));
    } else {
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        jl_i64(&j, "exit", code);
        jl_str(&j, "why", code == FORK_PATTERN  ? "a block lost its pattern"
                          : code == FORK_STATUS ? "a free returned an error status"
                                                : "unknown");
    }
    jl_end(&j);
}

#ifdef NMM_CHAOS_COVERAGE
/* The gcov build (harness/coverage.py): gcc's --coverage turns a call of fork into
 * __gcov_fork, which zeroes the child's counters after fork returns (so the heap's
 * atfork child handlers, which ran inside it, are lost), and _exit writes none: nothing
 * a fork child ran was ever counted. Called through a pointer, fork is not replaced;
 * the child writes its counters (the parent's up to the fork among them: the counts
 * grow, which lines and branches ran does not change) before it exits. */
extern void __gcov_dump(void);
static pid_t (*volatile fork_call)(void) = fork;
#define coverage_fork() fork_call()
#define coverage_child_exit(code) (__gcov_dump(), _exit(code))
#else
#define coverage_fork() fork()
#define coverage_child_exit(code) _exit(code)
#endif

static void do_fork(trial_t *tr, worker_t *w)
{
    pid_t pid = coverage_fork();
    if (pid == 0)
        coverage_child_exit(fork_child(tr, w));
    w->fork_children++;
    if (pid < 0) { /* the machine's limits, not the allocator */
        w->fork_errors++;
        return;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) == FORK_NULL)
        w->fork_alloc_failures++;
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != FORK_OK)
        fork_failure(tr, w, status);
}

/* ---- progress */

static void emit_progress(trial_t *tr, worker_t *w)
{
    uint64_t ev = out_drain_events(tr->target.heap, (int)w->index, w->op);
    uint64_t events = atomic_fetch_add(&tr->events, ev) + ev;
    uint64_t ops = 0, perr = 0;
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        ops += atomic_load_explicit(&tr->workers[i].ops_done, memory_order_relaxed);
        perr += atomic_load_explicit(&tr->workers[i].pattern_errors, memory_order_relaxed);
    }
    jline_t j;
    jl_begin(&j, "progress");
    jl_u64(&j, "ops", ops);
    jl_u64(&j, "faults", atomic_load(&tr->faults_done));
    jl_u64(&j, "events", events);
    jl_u64(&j, "pattern_errors", perr);
    jl_u64(&j, "worker", w->index);
    jl_u64(&j, "worker_op", w->op);
    jl_end(&j);
}

/* ---- worker threads */

/* The last op index (exclusive) of worker w's whole stream: --ops, the recorded count
 * of --worker-ops, or "until the deadline" (UINT64_MAX) with --duration. */
static uint64_t stream_end(const options_t *o, const worker_t *w)
{
    if (o->worker_ops)
        return o->worker_ops[w->index];
    return o->duration_ns ? UINT64_MAX : o->ops;
}

/* --duration: the clock is read once per DEADLINE_MASK + 1 ops (and when the floor is
 * reached), so a stop costs nothing measurable and lands on a round op count. Every
 * op before the stop is the same stream an --ops/--worker-ops run replays. */
static inline bool is_past_deadline(const trial_t *tr, const worker_t *w)
{
    return w->op >= tr->o->ops && ((w->op & DEADLINE_MASK) == 0 || w->op == tr->o->ops) &&
           drv_now_ns() >= tr->deadline_ns;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    trial_t *tr = w->trial;
    const options_t *o = tr->o;
    uint64_t last = stream_end(o, w), end = last;
    if (o->thread_churn) {
        uint64_t seg_end = (w->op / o->thread_churn + 1) * o->thread_churn;
        if (seg_end < end)
            end = seg_end;
    }
    bool timed = tr->deadline_ns != 0;
    uint32_t mask = o->sample_every - 1;
    sched_thread_begin(w->index, last - w->op);
    while (w->op < end) {
        while (w->fault_next < w->fault_count && w->faults[w->fault_next].op <= w->op)
            faults_inject(tr, w, &w->faults[w->fault_next++]);
        op_t op;
        plan_next(&w->rng, o, slot_occupied, w, &op);
        bool sample = (w->op & mask) == 0;
        if (op.kind == OP_ALLOC)
            op_alloc(tr, w, &op, sample);
        else if (op.kind == OP_FREE)
            op_free(tr, w, &op, sample);
        else
            op_realloc(tr, w, &op, sample);
        if ((w->op & INBOX_DRAIN_MASK) == 0)
            inbox_drain(tr, w);
        w->op++;
        atomic_store_explicit(&w->ops_done, w->op, memory_order_relaxed);
        if (o->edge_every && w->op % o->edge_every == 0)
            edge_requests(tr, w);
        if (o->fork_every && w->index == 0 && w->op % o->fork_every == 0)
            do_fork(tr, w);
        if (o->progress_every && w->op % o->progress_every == 0)
            emit_progress(tr, w);
        if (timed && is_past_deadline(tr, w)) {
            last = w->op;
            break;
        }
        sched_between_ops(w->index, last - w->op);
    }
    w->finished = w->op >= last;
    sched_thread_end(w->index, w->finished);
    pthread_mutex_lock(&done_mu);
    done_queue[done_count++] = w->index;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
    return NULL;
}

static bool spawn(worker_t *w, pthread_t *th)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK_BYTES);
    int rc = pthread_create(th, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        out_error("pthread_create failed: %s", strerror(rc));
        return false;
    }
    w->threads_spawned++;
    return true;
}

/* Run every logical worker to the end of its stream, replacing exited threads. */
static bool supervise(trial_t *tr, pthread_t *threads)
{
    uint32_t n = tr->o->threads, active = n;
    for (uint32_t i = 0; i < n; i++)
        if (!spawn(&tr->workers[i], &threads[i]))
            return false;
    while (active) {
        pthread_mutex_lock(&done_mu);
        while (done_count == 0)
            pthread_cond_wait(&done_cv, &done_mu);
        uint32_t wi = done_queue[--done_count];
        pthread_mutex_unlock(&done_mu);
        pthread_join(threads[wi], NULL);
        worker_t *w = &tr->workers[wi];
        if (!w->finished) {
            if (!spawn(w, &threads[wi]))
                return false;
        } else {
            active--;
        }
    }
    return true;
}

/* ---- set-up and tear-down */

static bool setup(trial_t *tr, const options_t *o)
{
    memset(tr, 0, sizeof *tr);
    tr->o = o;
    char err[600];
    bool on_default = o->exit_leaks > 0;
    if (on_default && !exit_leak_configure(o->bad_options, o->nmm_options,
                                                o->exit_symbolizer, o->seed, err,
                                                sizeof err)) {
        out_error("%s", err);
        return false;
    }
    if (!target_open(&tr->target, on_default ? "nmm-default" : o->target, o->nmm_options, err,
                     sizeof err)) {
        out_error("%s", err);
        return false;
    }
    tr->faults = out_map(sizeof(fault_inst_t) * DRV_MAX_FAULTS);
    tr->workers = out_map(sizeof(worker_t) * o->threads);
    done_queue = out_map(sizeof(uint32_t) * o->threads);
    if (!tr->faults || !tr->workers || !done_queue) {
        out_error("cannot map driver state for %u workers", o->threads);
        return false;
    }
    tr->fault_count = faults_plan(o, tr->faults, DRV_MAX_FAULTS);
    for (int i = 0; i < o->fault_spec_count; i++) {
        if (o->faults[i].kind == FK_INVALID_FREE && o->faults[i].variant == FV_FOREIGN_HEAP &&
            target_is_nmm(&tr->target) &&
            !target_open(&tr->foreign, "nmm", o->nmm_options, err, sizeof err)) {
            out_error("foreign heap: %s", err);
            return false;
        }
    }
    uint32_t next_fault = 0;
    for (uint32_t i = 0; i < o->threads; i++) {
        worker_t *w = &tr->workers[i];
        w->index = i;
        w->trial = tr;
        plan_stream_seed(&w->rng, o, i);
        w->slots = out_map(sizeof(slot_t) * o->live);
        w->inbox = out_map(sizeof(inbox_t));
        if (!w->slots || !w->inbox) {
            out_error("cannot map the live set of worker %u", i);
            return false;
        }
        w->faults = &tr->faults[next_fault];
        while (next_fault < tr->fault_count && tr->faults[next_fault].worker == i) {
            if (o->faults[tr->faults[next_fault].spec].kind == FK_EXIT_ONLY_OVERFLOW)
                w->kept_cap++;
            next_fault++;
            w->fault_count++;
        }
        if (w->kept_cap && !(w->kept = out_map(sizeof(slot_t) * w->kept_cap))) {
            out_error("cannot map the kept blocks of worker %u", i);
            return false;
        }
    }
    for (int i = 0; i < o->fault_spec_count; i++) {
        fault_kind_t k = o->faults[i].kind;
        if ((k == FK_DEALLOC_MISMATCH || k == FK_SIZED_DELETE) &&
            !target_cxx_open(&tr->target, err, sizeof err)) {
            out_error("--fault %s: %s", fault_kind_name(k), err);
            return false;
        }
    }
    return true;
}

static void teardown_blocks(trial_t *tr)
{
    for (uint32_t i = 0; i < tr->o->threads; i++)
        inbox_drain(tr, &tr->workers[i]);
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        worker_t *w = &tr->workers[i];
        for (uint32_t s = 0; s < tr->o->live; s++) {
            if (w->slots[s].ptr) {
                workload_free_slot(tr, w, &w->slots[s]);
                monitor_step();
            }
        }
        if (w->foreign_block && tr->foreign.heap)
            nmm_free(tr->foreign.heap, w->foreign_block, 0);
        else if (w->foreign_block)
            out_unmap((void *)((uintptr_t)w->foreign_block & ~(uintptr_t)4095), 4096);
        w->foreign_block = NULL;
    }
}

/* exit_only_overflow's blocks, kept live through the sweep that is their only chance
 * of being seen: given back once it ran, so the heap still ends empty. The sweep
 * already reported each (the block is marked so): its free is refused as corrupted
 * (or, at level off, taken) without a second report. */
static void free_kept_blocks(trial_t *tr)
{
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        worker_t *w = &tr->workers[i];
        for (uint32_t k = 0; k < w->kept_count; k++) {
            int st = tr->target.free(tr->target.heap, w->kept[k].ptr);
            if (st == NMM_OK || st == NMM_E_CORRUPTED)
                w->frees++;
            else
                w->dropped++;
        }
        w->kept_count = 0;
    }
}

/* ---- the quiescent heap: the driver's own live set against a walk of the target's
 * block map. Both sorted by address and merged: a block only the walk has is one the
 * driver never got (or freed), one only the driver has is one the target lost. */

typedef struct blk {
    uintptr_t ptr;
    uint64_t size;
} blk_t;

typedef struct live_set {
    blk_t *items;
    size_t cap, n, overflow;
    uint64_t bytes;
} live_set_t;

static void live_add(live_set_t *ls, const void *ptr, uint64_t size)
{
    ls->bytes += size;
    if (ls->n == ls->cap) {
        ls->overflow++;
        return;
    }
    ls->items[ls->n].ptr = (uintptr_t)ptr;
    ls->items[ls->n].size = size;
    ls->n++;
}

static void walk_visit(void *ctx, const void *ptr, size_t size) { live_add(ctx, ptr, size); }

static void blk_sift(blk_t *a, size_t i, size_t n)
{
    for (;;) {
        size_t big = i, l = 2 * i + 1, r = l + 1;
        if (l < n && a[l].ptr > a[big].ptr)
            big = l;
        if (r < n && a[r].ptr > a[big].ptr)
            big = r;
        if (big == i)
            return;
        blk_t t = a[i];
        a[i] = a[big];
        a[big] = t;
        i = big;
    }
}

/* Heap sort: no allocation from the target, and the sets may be large. */
static void blk_sort(blk_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        blk_sift(a, i, n);
    for (size_t end = n; end-- > 1;) {
        blk_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        blk_sift(a, 0, end);
    }
}

typedef struct walk_result {
    uint64_t blocks, bytes, unknown, missing, size_mismatch;
} walk_result_t;

static void walk_mismatch(trial_t *tr, const char *what, uintptr_t ptr, uint64_t size,
                          uint64_t walk_size)
{
    if (!workload_detail_line(tr))
        return;
    jline_t j;
    jl_begin(&j, "walk_mismatch");
    jl_str(&j, "what", what);
    jl_hex(&j, "address", ptr);
    jl_u64(&j, "size", size);
    jl_u64(&j, "walk_size", walk_size);
    jl_end(&j);
}

/* The heap's answers about one of the driver's live blocks of `want` requested bytes,
 * held against the driver's own books: its requested size (exact where blocks keep it,
 * else at least want), its usable size (at least that) and malloc_usable_size's checked
 * form (the same, and no invalid_pointer event for a live block). Returns the query
 * that answered wrong (named in a walk_mismatch line, its answer in *got), or NULL. */
static const char *size_query_problem(trial_t *tr, const void *p, uint64_t want, uint64_t *got)
{
    nmm_heap_t *heap = tr->target.heap;
    size_t requested = nmm_requested_size(heap, p);
    if (tr->target.exact_sizes ? requested != want : requested < want) {
        *got = requested;
        return "requested_size";
    }
    size_t usable = nmm_usable_size(heap, p);
    if (usable < requested) {
        *got = usable;
        return "usable_size";
    }
    size_t checked = nmm_usable_size_checked(heap, p, 0);
    if (checked != usable) {
        *got = checked;
        return "usable_size_checked";
    }
    return NULL;
}

/* The driver's live set (slots, kept blocks and blocks in hand-over queues). */
static bool driver_live(trial_t *tr, live_set_t *mine, size_t extra)
{
    size_t n = 0;
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        worker_t *w = &tr->workers[i];
        for (uint32_t s = 0; s < tr->o->live; s++)
            n += w->slots[s].ptr != NULL;
        n += w->kept_count;
        n += atomic_load(&w->inbox->tail) - atomic_load(&w->inbox->head);
    }
    memset(mine, 0, sizeof *mine);
    mine->cap = n + extra;
    mine->items = out_map(sizeof(blk_t) * (mine->cap ? mine->cap : 1));
    if (!mine->items)
        return false;
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        worker_t *w = &tr->workers[i];
        for (uint32_t s = 0; s < tr->o->live; s++)
            if (w->slots[s].ptr)
                live_add(mine, w->slots[s].ptr, w->slots[s].size);
        for (uint32_t k = 0; k < w->kept_count; k++)
            live_add(mine, w->kept[k].ptr, w->kept[k].size);
        inbox_t *in = w->inbox;
        for (uint64_t h = atomic_load(&in->head); h != atomic_load(&in->tail); h++)
            live_add(mine, in->items[h % INBOX_CAP].ptr, in->items[h % INBOX_CAP].size);
    }
    return true;
}

/* Compare the driver's live set with a walk of the heap (target must be NMM). */
static walk_result_t walk_compare(trial_t *tr, const live_set_t *mine_in)
{
    walk_result_t r = {0};
    live_set_t mine = *mine_in, walk;
    memset(&walk, 0, sizeof walk);
    walk.cap = mine.n + 4096;
    walk.items = out_map(sizeof(blk_t) * walk.cap);
    if (!walk.items) {
        out_error("cannot map the heap walk");
        r.unknown = UINT64_MAX;
        return r;
    }
    nmm_heap_visit(tr->target.heap, walk_visit, &walk);
    r.blocks = walk.n + walk.overflow;
    r.bytes = walk.bytes;
    r.unknown = walk.overflow; /* past the room kept: not compared, so not vouched for */
    blk_sort(mine.items, mine.n);
    blk_sort(walk.items, walk.n);
    size_t a = 0, b = 0;
    while (a < mine.n || b < walk.n) {
        if (b == walk.n || (a < mine.n && mine.items[a].ptr < walk.items[b].ptr)) {
            r.missing++;
            walk_mismatch(tr, "missing", mine.items[a].ptr, mine.items[a].size, 0);
            a++;
        } else if (a == mine.n || walk.items[b].ptr < mine.items[a].ptr) {
            r.unknown++;
            walk_mismatch(tr, "unknown", walk.items[b].ptr, 0, walk.items[b].size);
            b++;
        } else {
            uint64_t want = mine.items[a].size, got = walk.items[b].size;
            uint64_t asked = 0;
            const char *query = NULL;
            if (tr->target.exact_sizes ? got != want : got < want) {
                r.size_mismatch++;
                walk_mismatch(tr, "size", mine.items[a].ptr, want, got);
            } else if ((query = size_query_problem(tr, (const void *)mine.items[a].ptr, want,
                                                   &asked)) != NULL) {
                r.size_mismatch++;  /* one per block: the oracle excuses a damaged header once */
                walk_mismatch(tr, query, mine.items[a].ptr, want, asked);
            }
            a++;
            b++;
        }
    }
    out_unmap(walk.items, sizeof(blk_t) * walk.cap);
    return r;
}

static void jl_walk(jline_t *j, const char *key, const walk_result_t *r)
{
    char buf[256];
    snprintf(buf, sizeof buf,
             "{\"blocks\":%llu,\"bytes\":%llu,\"unknown\":%llu,\"missing\":%llu,"
             "\"size_mismatch\":%llu}",
             (unsigned long long)r->blocks, (unsigned long long)r->bytes,
             (unsigned long long)r->unknown, (unsigned long long)r->missing,
             (unsigned long long)r->size_mismatch);
    jl_key(j, key);
    jl_raw(j, buf);
}

/* The heap's own reports on the quiescent heap, before teardown: the leak report (its
 * JSON's totals, an aggregation of its own over the live blocks, for the oracle to hold
 * against the driver's live set) and the lengths of the text leak report and the heap's
 * JSON report (with tracking: sites and sampled stacks, symbolized), which must not
 * crash or damage a heap that took injected faults. */
static void leak_report(trial_t *tr, jline_t *j)
{
    size_t cap = 8u << 20;
    char *buf = out_map(cap);
    if (!buf)
        return;
    unsigned long long blocks = 0, bytes = 0;
    size_t json = nmm_leaks_report(tr->target.heap, 1, buf, cap);
    bool parsed = json < cap &&
                  sscanf(buf, "{\"live_blocks\":%llu,\"live_bytes\":%llu", &blocks, &bytes) == 2;
    size_t text = nmm_leaks_report(tr->target.heap, 0, buf, cap);
    size_t heap_json = nmm_report_json(tr->target.heap, buf, cap);
    out_unmap(buf, cap);
    char line[256];
    snprintf(line, sizeof line,
             "{\"parsed\":%s,\"live_blocks\":%llu,\"live_bytes\":%llu,\"json_bytes\":%zu,"
             "\"text_bytes\":%zu,\"heap_json_bytes\":%zu}",
             parsed ? "true" : "false", blocks, bytes, json, text, heap_json);
    jl_key(j, "leak_report");
    jl_raw(j, line);
}

/* CPU time of the whole process (every thread), ns: robust against a loaded machine. */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* Sums over workers of what the result line reports. */
typedef struct totals {
    uint64_t ops, perr, afail, unexpected, cross, fallback, spawned, forks, fork_fail;
    uint64_t fork_errors, fork_nulls, most_ops, allocs, frees, reallocs, moved, dropped;
    uint64_t edge_nulls, zero_nulls;
} totals_t;

static void sum_workers(const trial_t *tr, totals_t *t, hist_t *h)
{
    memset(t, 0, sizeof *t);
    for (uint32_t i = 0; i < tr->o->threads; i++) {
        worker_t *w = &tr->workers[i];
        if (w->op > t->most_ops)
            t->most_ops = w->op;
        if (h)
            hist_merge(h, &w->hist);
        t->ops += w->op;
        t->perr += atomic_load(&w->pattern_errors);
        t->afail += w->alloc_failures;
        t->unexpected += w->unexpected_status;
        t->cross += w->cross_received;
        t->fallback += w->cross_fallback;
        t->spawned += w->threads_spawned;
        t->forks += w->fork_children;
        t->fork_fail += w->fork_failures;
        t->fork_errors += w->fork_errors;
        t->fork_nulls += w->fork_alloc_failures;
        t->allocs += w->allocs;
        t->frees += w->frees;
        t->reallocs += w->reallocs;
        t->moved += w->reallocs_moved;
        t->dropped += w->dropped;
        t->edge_nulls += w->edge_nulls;
        t->zero_nulls += w->zero_nulls;
    }
}

/* After the workers: compare the quiescent heap with the driver's own view, free every
 * block, sweep, and write the result line. */
static void finish_trial(trial_t *tr, uint64_t elapsed_ns, uint64_t cpu)
{
    const options_t *o = tr->o;
    bool nmm = target_is_nmm(&tr->target);
    jline_t *j = out_map(sizeof *j);
    hist_t *h = out_map(sizeof *h);
    if (!j) {
        out_error("cannot map the result line");
        return;
    }
    jl_begin(j, "result");
    jl_str(j, "target", tr->target.name);
    sched_result(j);

    /* the quiescent heap before teardown: counters, walk, the driver's live set */
    monitor_phase(PH_CHECK);
    live_set_t mine;
    if (!driver_live(tr, &mine, 0)) {
        out_error("cannot map the driver's live set");
        return;
    }
    uint64_t live_blocks = mine.n + mine.overflow, live_bytes = mine.bytes;
    if (nmm) {
        uint64_t ignored;
        out_stats(j, "stats_before", tr->target.heap, &ignored);
        walk_result_t before = walk_compare(tr, &mine);
        jl_walk(j, "walk", &before);
        leak_report(tr, j);
    }
    out_unmap(mine.items, sizeof(blk_t) * (mine.cap ? mine.cap : 1));
    if (nmm) { /* damage to the books, probed and undone while the blocks are still live */
        monitor_phase(PH_CORRUPT);
        faults_corrupt(tr);
    }

    monitor_phase(PH_TEARDOWN);
    teardown_blocks(tr);
    monitor_phase(PH_VALIDATE);
    uint64_t validate_problems = nmm ? nmm_validate(tr->target.heap) : 0;
    free_kept_blocks(tr);
    totals_t t;
    sum_workers(tr, &t, h);
    monitor_phase(PH_DRAIN);
    uint64_t ev = out_drain_events(tr->target.heap, -1, t.most_ops);
    uint64_t events = atomic_fetch_add(&tr->events, ev) + ev;

    jl_u64(j, "ops", t.ops);
    /* what each worker did: with --duration the only record of where its stream
     * stopped, so `--worker-ops` can replay it (1024 x 14 digits fit the line) */
    uint64_t *done = out_map(sizeof(uint64_t) * o->threads);
    for (uint32_t i = 0; done && i < o->threads; i++)
        done[i] = tr->workers[i].op;
    if (done)
        jl_u64_array(j, "worker_ops", done, o->threads);
    out_unmap(done, sizeof(uint64_t) * o->threads);
    jl_u64(j, "elapsed_ns", elapsed_ns);
    jl_dbl(j, "ops_per_sec", elapsed_ns ? (double)t.ops * 1e9 / (double)elapsed_ns : 0.0);
    jl_u64(j, "cpu_ns", cpu);
    jl_u64(j, "peak_rss", proc_status_kib("VmHWM:") * 1024);
    jl_u64(j, "faults", atomic_load(&tr->faults_done));
    jl_u64(j, "events", events);
    jl_u64(j, "pattern_errors", t.perr);
    jl_u64(j, "alloc_failures", t.afail);
    jl_u64(j, "edge_nulls", t.edge_nulls);
    jl_u64(j, "zero_nulls", t.zero_nulls);
    jl_u64(j, "unexpected_status", t.unexpected);
    jl_u64(j, "cross_frees", t.cross);
    jl_u64(j, "cross_fallback", t.fallback);
    jl_u64(j, "threads_spawned", t.spawned);
    jl_u64(j, "fork_children", t.forks);
    jl_u64(j, "fork_failures", t.fork_fail);
    jl_u64(j, "fork_errors", t.fork_errors);
    jl_u64(j, "fork_alloc_failures", t.fork_nulls);
    uint64_t detail = atomic_load(&tr->detail_lines);
    jl_u64(j, "detail_lines_dropped", detail > DRV_MAX_DETAIL_LINES ? detail - DRV_MAX_DETAIL_LINES : 0);
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"allocs\":%llu,\"frees\":%llu,\"reallocs\":%llu,\"reallocs_moved\":%llu,"
             "\"dropped\":%llu,\"live_blocks\":%llu,\"live_bytes\":%llu}",
             (unsigned long long)t.allocs, (unsigned long long)t.frees,
             (unsigned long long)t.reallocs, (unsigned long long)t.moved,
             (unsigned long long)t.dropped, (unsigned long long)live_blocks,
             (unsigned long long)live_bytes);
    jl_key(j, "counts");
    jl_raw(j, buf);
    jl_key(j, "latency_ns");
    char lat[256];
    snprintf(lat, sizeof lat,
             "{\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu,\"samples\":%llu}",
             (unsigned long long)(h ? hist_percentile(h, 0.50) : 0),
             (unsigned long long)(h ? hist_percentile(h, 0.99) : 0),
             (unsigned long long)(h ? hist_percentile(h, 0.999) : 0),
             (unsigned long long)(h ? h->max_ns : 0), (unsigned long long)(h ? h->samples : 0));
    jl_raw(j, lat);
    if (nmm) {
        monitor_phase(PH_STATS);
        uint64_t live = 0;
        out_stats(j, "stats", tr->target.heap, &live);
        live_set_t none;
        memset(&none, 0, sizeof none);
        walk_result_t after = walk_compare(tr, &none);
        jl_walk(j, "walk_after", &after);
        jl_u64(j, "validate_problems", validate_problems);
        jl_u64(j, "leaked_blocks", live);
        if (o->exit_leaks)
            exit_leak_blocks(o, &tr->target, j);
    } else { /* the malloc family has no stats (key left out), validate or leak count */
        jl_null(j, "validate_problems");
        jl_null(j, "leaked_blocks");
    }
    jl_str(j, "exit", "ok");
    monitor_result(j); /* and the destroy phase: no earlier phase's beat comes after it */
    out_unmap(j, sizeof *j);
    out_unmap(h, sizeof *h);
}

int workload_run(const options_t *o)
{
    static trial_t tr;
    if (!setup(&tr, o))
        return 1;
    jline_t j;
    jl_begin(&j, "start");
    jl_u64(&j, "protocol", DRV_PROTOCOL);
    jl_u64(&j, "seed", o->seed);
    jl_u64(&j, "threads", o->threads);
    jl_u64(&j, "ops", o->ops);
    if (o->duration_ns)
        jl_dbl(&j, "duration_s", (double)o->duration_ns / 1e9);
    if (o->worker_ops)
        jl_u64_array(&j, "worker_ops", o->worker_ops, o->threads);
    jl_str(&j, "target", o->target);
    jl_str(&j, "nmm_options", o->nmm_options);
    jl_u64(&j, "faults_planned", tr.fault_count);
    jl_bool(&j, "check", !o->no_check);
    jl_i64(&j, "pid", (int64_t)getpid());
    jl_u64(&j, "beat_ms", DRV_BEAT_MS);
    jl_end(&j);

    monitor_start(&tr);
    monitor_phase(PH_OPS);
    pthread_t *threads = out_map(sizeof(pthread_t) * o->threads);
    uint64_t t0 = drv_now_ns(), c0 = cpu_ns();
    if (o->duration_ns)
        tr.deadline_ns = t0 + o->duration_ns;
    sched_start(o);
    if (!threads || !supervise(&tr, threads))
        return 1;
    sched_finish();
    uint64_t elapsed = drv_now_ns() - t0, cpu = cpu_ns() - c0;

    finish_trial(&tr, elapsed, cpu);
    monitor_phase(PH_DESTROY); /* done by monitor_result, unless the result line failed */
    target_close(&tr.foreign);
    target_close(&tr.target);
    monitor_stop();
    return 0;
}
