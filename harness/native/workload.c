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

static void count_pattern_error(worker_t *w)
{
    atomic_fetch_add_explicit(&w->pattern_errors, 1, memory_order_relaxed);
}

void workload_check_block(trial_t *tr, worker_t *w, const slot_t *s)
{
    if (checking(tr) && !pattern_check(s->ptr, s->size, s->key))
        count_pattern_error(w);
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

bool workload_alloc_slot(trial_t *tr, worker_t *w, slot_t *s, uint64_t size)
{
    void *p = tr->target.alloc(tr->target.heap, size);
    if (!p) {
        w->alloc_failures++;
        return false;
    }
    fill_block(tr, w, s, p, size);
    return true;
}

void workload_free_slot(trial_t *tr, worker_t *w, slot_t *s)
{
    workload_check_block(tr, w, s);
    if (tr->target.free(tr->target.heap, s->ptr) != NMM_OK)
        w->unexpected_status++;
    s->ptr = NULL;
}

static bool is_zero_prefix(const void *p, uint64_t size)
{
    const uint8_t *b = p;
    uint64_t n = size < 16 ? size : 16;
    for (uint64_t i = 0; i < n; i++)
        if (b[i] || b[size - 1 - i])
            return false;
    return true;
}

static void op_alloc(trial_t *tr, worker_t *w, const op_t *op, bool sample)
{
    const target_t *t = &tr->target;
    uint64_t t0 = sample ? drv_now_ns() : 0;
    void *p;
    if (op->flavor == AF_CALLOC)
        p = t->calloc(t->heap, 1, op->size);
    else if (op->flavor == AF_ALIGNED)
        p = t->aligned_alloc(t->heap, op->alignment, op->size);
    else
        p = t->alloc(t->heap, op->size);
    if (sample)
        hist_add(&w->hist, drv_now_ns() - t0);
    if (!p) {
        w->alloc_failures++;
        return;
    }
    if (checking(tr)) {
        if (op->flavor == AF_ALIGNED && ((uintptr_t)p & (op->alignment - 1)))
            count_pattern_error(w);
        if (op->flavor == AF_CALLOC && !is_zero_prefix(p, op->size))
            count_pattern_error(w);
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
    if (st != NMM_OK)
        w->unexpected_status++;
    s->ptr = NULL;
}

static void op_realloc(trial_t *tr, worker_t *w, const op_t *op, bool sample)
{
    slot_t *s = &w->slots[op->slot];
    uint64_t old_key = s->key;
    workload_check_block(tr, w, s);
    uint64_t t0 = sample ? drv_now_ns() : 0;
    void *p = tr->target.realloc(tr->target.heap, s->ptr, op->size);
    if (sample)
        hist_add(&w->hist, drv_now_ns() - t0);
    if (!p) { /* the old block stays valid and in its slot */
        w->alloc_failures++;
        return;
    }
    uint64_t kept = s->size < op->size ? s->size : op->size;
    if (checking(tr) && !pattern_check_prefix(p, kept, old_key))
        count_pattern_error(w);
    fill_block(tr, w, s, p, op->size);
}

/* ---- fork storm: the child uses the target a little and reports by exit code */

static int fork_child(trial_t *tr, worker_t *w)
{
    xoshiro_t rng;
    xoshiro_seed(&rng, prng_mix(tr->o->seed ^ 0xF0F0F0F0ull, w->fork_children));
    void *blocks[FORK_CHILD_BLOCKS];
    uint64_t sizes[FORK_CHILD_BLOCKS];
    for (int i = 0; i < FORK_CHILD_BLOCKS; i++) {
        sizes[i] = plan_size(&rng, tr->o);
        blocks[i] = tr->target.alloc(tr->target.heap, sizes[i]);
        if (!blocks[i])
            return 3;
        pattern_fill(blocks[i], sizes[i], pattern_key(tr->o->seed, (uint64_t)i));
    }
    int rc = 0;
    for (int i = 0; i < FORK_CHILD_BLOCKS; i++) {
        if (!pattern_check(blocks[i], sizes[i], pattern_key(tr->o->seed, (uint64_t)i)))
            rc = 4;
        if (tr->target.free(tr->target.heap, blocks[i]) != NMM_OK)
            rc = 5;
    }
    return rc;
}

static void do_fork(trial_t *tr, worker_t *w)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(fork_child(tr, w));
    w->fork_children++;
    if (pid < 0) {
        w->fork_failures++;
        return;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        w->fork_failures++;
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
        if (o->fork_every && w->index == 0 && w->op % o->fork_every == 0)
            do_fork(tr, w);
        if (o->progress_every && w->op % o->progress_every == 0)
            emit_progress(tr, w);
        if (timed && is_past_deadline(tr, w)) {
            last = w->op;
            break;
        }
    }
    w->finished = w->op >= last;
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
    if (!target_open(&tr->target, o->target, o->nmm_options, err, sizeof err)) {
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
            next_fault++;
            w->fault_count++;
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
        for (uint32_t s = 0; s < tr->o->live; s++)
            if (w->slots[s].ptr)
                workload_free_slot(tr, w, &w->slots[s]);
        if (w->foreign_block && tr->foreign.heap)
            nmm_free(tr->foreign.heap, w->foreign_block, 0);
        else if (w->foreign_block)
            out_unmap((void *)((uintptr_t)w->foreign_block & ~(uintptr_t)4095), 4096);
        w->foreign_block = NULL;
    }
}

/* CPU time of the whole process (every thread), ns: robust against a loaded machine. */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static void write_result(trial_t *tr, uint64_t elapsed_ns, uint64_t cpu)
{
    const options_t *o = tr->o;
    hist_t *h = out_map(sizeof *h);
    uint64_t ops = 0, perr = 0, afail = 0, unexpected = 0, cross = 0, fallback = 0;
    uint64_t spawned = 0, forks = 0, fork_fail = 0, most_ops = 0;
    for (uint32_t i = 0; i < o->threads; i++) {
        worker_t *w = &tr->workers[i];
        if (w->op > most_ops)
            most_ops = w->op;
        if (h)
            hist_merge(h, &w->hist);
        ops += w->op;
        perr += atomic_load(&w->pattern_errors);
        afail += w->alloc_failures;
        unexpected += w->unexpected_status;
        cross += w->cross_received;
        fallback += w->cross_fallback;
        spawned += w->threads_spawned;
        forks += w->fork_children;
        fork_fail += w->fork_failures;
    }
    uint64_t validate_problems = 0;
    if (target_is_nmm(&tr->target))
        validate_problems = nmm_validate(tr->target.heap);
    uint64_t ev = out_drain_events(tr->target.heap, -1, most_ops);
    uint64_t events = atomic_fetch_add(&tr->events, ev) + ev;

    jline_t *j = out_map(sizeof *j);
    if (!j) {
        out_error("cannot map the result line");
        return;
    }
    jl_begin(j, "result");
    jl_str(j, "target", tr->target.name);
    jl_u64(j, "ops", ops);
    /* what each worker did: with --duration the only record of where its stream
     * stopped, so `--worker-ops` can replay it (1024 x 14 digits fit the line) */
    uint64_t *done = out_map(sizeof(uint64_t) * o->threads);
    for (uint32_t i = 0; done && i < o->threads; i++)
        done[i] = tr->workers[i].op;
    if (done)
        jl_u64_array(j, "worker_ops", done, o->threads);
    out_unmap(done, sizeof(uint64_t) * o->threads);
    jl_u64(j, "elapsed_ns", elapsed_ns);
    jl_dbl(j, "ops_per_sec", elapsed_ns ? (double)ops * 1e9 / (double)elapsed_ns : 0.0);
    jl_u64(j, "cpu_ns", cpu);
    jl_u64(j, "peak_rss", proc_status_kib("VmHWM:") * 1024);
    jl_u64(j, "faults", atomic_load(&tr->faults_done));
    jl_u64(j, "events", events);
    jl_u64(j, "pattern_errors", perr);
    jl_u64(j, "alloc_failures", afail);
    jl_u64(j, "unexpected_status", unexpected);
    jl_u64(j, "cross_frees", cross);
    jl_u64(j, "cross_fallback", fallback);
    jl_u64(j, "threads_spawned", spawned);
    jl_u64(j, "fork_children", forks);
    jl_u64(j, "fork_failures", fork_fail);
    jl_key(j, "latency_ns");
    char lat[256];
    snprintf(lat, sizeof lat,
             "{\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu,\"samples\":%llu}",
             (unsigned long long)(h ? hist_percentile(h, 0.50) : 0),
             (unsigned long long)(h ? hist_percentile(h, 0.99) : 0),
             (unsigned long long)(h ? hist_percentile(h, 0.999) : 0),
             (unsigned long long)(h ? h->max_ns : 0), (unsigned long long)(h ? h->samples : 0));
    jl_raw(j, lat);
    if (target_is_nmm(&tr->target)) {
        uint64_t live = 0;
        out_stats(j, tr->target.heap, &live);
        jl_u64(j, "validate_problems", validate_problems);
        jl_u64(j, "leaked_blocks", live);
    } else { /* the malloc family has no stats (key left out), validate or leak count */
        jl_null(j, "validate_problems");
        jl_null(j, "leaked_blocks");
    }
    jl_str(j, "exit", "ok");
    jl_end(j);
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
    jl_end(&j);

    pthread_t *threads = out_map(sizeof(pthread_t) * o->threads);
    uint64_t t0 = drv_now_ns(), c0 = cpu_ns();
    if (o->duration_ns)
        tr.deadline_ns = t0 + o->duration_ns;
    if (!threads || !supervise(&tr, threads))
        return 1;
    uint64_t elapsed = drv_now_ns() - t0, cpu = cpu_ns() - c0;

    teardown_blocks(&tr);
    write_result(&tr, elapsed, cpu);
    target_close(&tr.foreign);
    target_close(&tr.target);
    return 0;
}
