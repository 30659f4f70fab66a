/* sched.c — the controlled scheduler (sched.h). One baton: the worker holding it
 * runs, every other worker waits on its own condition variable. At each yield point
 * (every lock acquire/release and atomic of the allocator: chaos.h; and between driver
 * operations) the holder makes one *step*: it picks who runs next by the strategy and
 * hands the baton over. Strategies, all drawn from one generator seeded by the trial
 * seed:
 *   pct    Probabilistic Concurrency Testing (Burckhardt et al., ASPLOS 2010): distinct
 *          random priorities d..d+n-1, d-1 change points uniform over the expected k
 *          steps; at the i-th the running worker's priority drops to d-i; the highest
 *          runnable priority runs.
 *   pos    Partial Order Sampling (Yuan et al., CAV 2018), as the issue words it: random
 *          priorities, each runnable worker's re-drawn with probability p at every step.
 *   surw   Selectively Uniform Random Walk (ASPLOS 2025): a runnable worker is picked
 *          with probability proportional to its remaining operations.
 *   random uniform over the runnable workers at every step.
 * A worker that finds a lock taken is blocked on it until its holder lets go; when no
 * worker is runnable and some are blocked, the trial is a deadlock; past --max-steps it
 * is a hang. Either writes one `sched_stop` line naming each worker's last yield point,
 * the lock it waits for and the locks it holds, then exits (86 / 87).
 *
 * The schedule trace (--schedule-out) is the chosen worker of every step, run-length
 * encoded: a text header line, then varint pairs (worker, run length). --schedule-in
 * follows such a trace; at the first step where its worker cannot run (or when it ends
 * before the trial does) the trial has diverged: the step is reported and the rest is
 * decided by the strategy, or, with --after-schedule nonpreemptive, by keeping the
 * running worker until it blocks or ends (what shrinking wants: no new preemptions).
 *
 * Thread churn keeps the baton with the logical worker: the thread that ends leaves it
 * to its replacement, so the OS's spawn timing decides nothing. A fork() child runs
 * free (its only thread is the forking one). Address randomisation is turned off by
 * re-executing the driver once (sched_prepare), so one seed is one interleaving and
 * the same addresses.
 */
#define NMM_CHAOS_IMPL 1 /* this file uses the real pthread calls */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <time.h>
#include <unistd.h>

#include "chaos.h"
#include "driver.h"
#include "sched.h"

const char sched_usage[] =
    "scheduler options (run; every kind but free needs the chaos driver, nmm-driver_chaos):\n"
    "  --scheduler KIND          free (the OS decides; default), pct, pos, surw or random:\n"
    "                            one worker at a time, every choice from the seed\n"
    "  --depth D                 pct: bug depth d, 1..64 (default 3)\n"
    "  --sched-steps K           pct: expected steps k the change points spread over\n"
    "                            (default threads * ops * 10)\n"
    "  --pos-p P                 pos: per-step chance a ready worker's priority is re-drawn\n"
    "                            (default 0.05)\n"
    "  --max-steps N             step bound: past it the trial is a hang (default 50M)\n"
    "  --schedule-out FILE       write the schedule trace (run-length, versioned)\n"
    "  --schedule-in FILE        follow a recorded trace; a divergence is reported\n"
    "  --after-schedule MODE     after the trace ends or diverges: seeded (the strategy;\n"
    "                            default) or nonpreemptive (keep the running worker)\n"
    "  --op-log FILE             write each finished op (O worker op step) and each\n"
    "                            preemption (P worker step yield-point), for witnesses\n"
    "  --yield-log FILE          write every step's running worker and where it yielded\n"
    "                            (Y worker step yield-point R|B: runnable or blocked),\n"
    "                            where the shrinker may place a preemption\n";

enum { SK_FREE = 0, SK_PCT, SK_POS, SK_SURW, SK_RANDOM };
static const char *const kind_names[] = {"free", "pct", "pos", "surw", "random", NULL};

static struct {
    int kind;
    uint32_t depth;
    uint64_t k;
    uint64_t max_steps;
    double pos_p;
    const char *in_path, *out_path, *op_log, *yield_log;
    bool after_nonpreemptive;
} opt = {SK_FREE, 3, 0, 50000000ull, 0.05, NULL, NULL, NULL, NULL, false};

static uint64_t need_count(const char *name, const char *val, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = val && *val != '-' ? strtoull(val, &end, 10) : 0;
    if (!val || *val == '-' || errno || end == val || *end || v < lo || v > hi)
        usage_error("%s: expected an integer %llu..%llu, got '%s'", name,
                    (unsigned long long)lo, (unsigned long long)hi, val ? val : "");
    return v;
}

bool sched_parse_option(int argc, char **argv, int *i, bool run_mode)
{
    static const char *const names[] = {"--scheduler", "--depth", "--sched-steps",
                                        "--max-steps", "--pos-p", "--schedule-in",
                                        "--schedule-out", "--after-schedule", "--op-log",
                                        "--yield-log", NULL};
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    int which = -1;
    for (int k = 0; names[k]; k++)
        if (strlen(names[k]) == nlen && strncmp(arg, names[k], nlen) == 0)
            which = k;
    if (which < 0)
        return false;
    const char *name = names[which];
    const char *val;
    if (eq)
        val = eq + 1;
    else if (*i + 1 < argc)
        val = argv[++*i];
    else
        usage_error("%s: missing value", name);
    if (!run_mode)
        usage_error("option %s applies to 'run' only", name);
    switch (which) {
    case 0: {
        int kind = -1;
        for (int k = 0; kind_names[k]; k++)
            if (strcmp(val, kind_names[k]) == 0)
                kind = k;
        if (kind < 0)
            usage_error("--scheduler: expected free, pct, pos, surw or random, got '%s'",
                        val);
#ifndef NMM_CHAOS
        if (kind != SK_FREE)
            usage_error("--scheduler %s: this is the production driver; a controlled "
                        "scheduler needs the chaos build (harness/_native/"
                        "nmm-driver_chaos, built by the same `pip install -e .`)",
                        val);
#endif
        opt.kind = kind;
        break;
    }
    case 1: opt.depth = (uint32_t)need_count(name, val, 1, 64); break;
    case 2: opt.k = need_count(name, val, 1, 1ull << 50); break;
    case 3: opt.max_steps = need_count(name, val, 1, 1ull << 50); break;
    case 4: {
        char *end;
        double p = strtod(val, &end);
        if (end == val || *end || !(p >= 0.0 && p <= 1.0))
            usage_error("--pos-p: expected a number 0..1, got '%s'", val);
        opt.pos_p = p;
        break;
    }
    case 5: opt.in_path = val; break;
    case 6: opt.out_path = val; break;
    case 7:
        if (strcmp(val, "seeded") == 0)
            opt.after_nonpreemptive = false;
        else if (strcmp(val, "nonpreemptive") == 0)
            opt.after_nonpreemptive = true;
        else
            usage_error("--after-schedule: expected seeded or nonpreemptive, got '%s'", val);
        break;
    case 8: opt.op_log = val; break;
    case 9: opt.yield_log = val; break;
    }
    return true;
}

bool sched_controlled(void) { return opt.kind != SK_FREE; }

#ifndef NMM_CHAOS

/* The production driver: only `--scheduler free`, which changes nothing. */
void sched_prepare(const options_t *o, char **argv)
{
    (void)o;
    (void)argv;
    if (opt.in_path || opt.out_path || opt.op_log || opt.yield_log)
        usage_error("--schedule-in/--schedule-out/--op-log/--yield-log: need a controlled "
                    "scheduler (the chaos driver, nmm-driver_chaos)");
}
void sched_start(const options_t *o) { (void)o; }
void sched_finish(void) {}
void sched_thread_begin(uint32_t worker, uint64_t remaining) { (void)worker, (void)remaining; }
void sched_between_ops(uint32_t worker, uint64_t remaining) { (void)worker, (void)remaining; }
void sched_thread_end(uint32_t worker, bool finished) { (void)worker, (void)finished; }
void sched_result(jline_t *j) { (void)j; }

#else /* NMM_CHAOS */

enum { ST_ABSENT = 0, ST_RUNNABLE, ST_BLOCKED, ST_DONE };
static const char *const state_names[] = {"absent", "runnable", "blocked", "done"};
/* Locks one worker holds at once: a fork's prepare handler takes every lock of every
 * heap (54 each: 48 classes and the region, large and quarantine locks, and 3 global
 * ones), and a lock held but not listed would look held by nobody in the schedule. */
#define MAX_HELD 256
#define MAX_CHANGE 64

typedef struct held {
    void *m;
    const char *name, *where;
} held_t;

typedef struct wslot {
    int state;
    pthread_cond_t cv;
    void *waiting_on;
    const char *wait_name, *wait_where;
    const char *last_yield;
    held_t held[MAX_HELD];
    int nheld;
    bool held_overflow; /* more than MAX_HELD at once: who holds what is not known */
    uint64_t remaining;
    double prio;
    uint64_t steps, ops;
} wslot_t;

static struct {
    bool active;
    uint32_t n;
    wslot_t *w;
    pthread_mutex_t mu;
    int current; /* the baton's holder; -1: nobody yet / everyone done */
    uint32_t arrived;
    bool started;
    uint64_t step, switches, preemptions;
    xoshiro_t rng;
    uint64_t change[MAX_CHANGE];
    uint32_t nchange, next_change;
    /* the trace followed (--schedule-in) */
    uint32_t *in_w;
    uint64_t *in_len;
    size_t in_runs, in_pos;
    uint64_t in_used, in_steps;
    bool following;
    int64_t diverged_at; /* -1: never */
    /* the trace written (--schedule-out) */
    int out_fd;
    unsigned char out_buf[1 << 16];
    size_t out_len;
    int run_w;
    uint64_t run_len;
    pid_t pid;
    volatile int forking;
    FILE *op_log, *yield_log;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .current = -1, .diverged_at = -1, .out_fd = -1,
       .run_w = -1};

static __thread int self = -1;

/* ---- trace files */

#define TRACE_MAGIC "NMMSCHED 1"

static void out_flush(void)
{
    size_t off = 0;
    while (off < S.out_len) {
        ssize_t k = write(S.out_fd, S.out_buf + off, S.out_len - off);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            break;
        }
        off += (size_t)k;
    }
    S.out_len = 0;
}

static void out_varint(uint64_t v)
{
    if (S.out_len + 10 > sizeof S.out_buf)
        out_flush();
    while (v >= 0x80) {
        S.out_buf[S.out_len++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    S.out_buf[S.out_len++] = (unsigned char)v;
}

static void trace_note(int w)
{
    if (S.out_fd < 0)
        return;
    if (w == S.run_w) {
        S.run_len++;
        return;
    }
    if (S.run_w >= 0) {
        out_varint((uint64_t)S.run_w);
        out_varint(S.run_len);
    }
    S.run_w = w;
    S.run_len = 1;
}

/* Async-signal-safe: the last run and the buffer (write(2) only). */
static void trace_close(void)
{
    if (S.out_fd < 0)
        return;
    if (S.run_w >= 0) {
        out_varint((uint64_t)S.run_w);
        out_varint(S.run_len);
        S.run_w = -1;
    }
    out_flush();
    close(S.out_fd);
    S.out_fd = -1;
}

static void trace_open_out(void)
{
    FILE *f = fopen(opt.out_path, "wb");
    if (!f)
        usage_error("--schedule-out %s: %s", opt.out_path, strerror(errno));
    fprintf(f, "%s threads=%u kind=%s\n", TRACE_MAGIC, S.n, kind_names[opt.kind]);
    fflush(f);
    S.out_fd = dup(fileno(f));
    fclose(f);
}

static bool read_varint(FILE *f, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        int c = getc(f);
        if (c == EOF)
            return false;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

static void trace_load_in(void)
{
    FILE *f = fopen(opt.in_path, "rb");
    if (!f)
        usage_error("--schedule-in %s: %s", opt.in_path, strerror(errno));
    char line[256];
    if (!fgets(line, sizeof line, f) || strncmp(line, TRACE_MAGIC " ", strlen(TRACE_MAGIC) + 1))
        usage_error("--schedule-in %s: not a schedule trace of version 1 (its first line "
                    "should start with '%s')", opt.in_path, TRACE_MAGIC);
    size_t cap = 1024;
    S.in_w = malloc(cap * sizeof *S.in_w);
    S.in_len = malloc(cap * sizeof *S.in_len);
    uint64_t w, len;
    while (read_varint(f, &w)) {
        if (!read_varint(f, &len) || len == 0)
            usage_error("--schedule-in %s: truncated or damaged after %zu runs",
                        opt.in_path, S.in_runs);
        if (S.in_runs == cap) {
            cap *= 2;
            S.in_w = realloc(S.in_w, cap * sizeof *S.in_w);
            S.in_len = realloc(S.in_len, cap * sizeof *S.in_len);
        }
        if (!S.in_w || !S.in_len)
            usage_error("--schedule-in %s: out of memory", opt.in_path);
        S.in_w[S.in_runs] = (uint32_t)w;
        S.in_len[S.in_runs++] = len;
        S.in_steps += len;
    }
    fclose(f);
    S.following = S.in_runs > 0;
}

/* ---- the stop lines */

static void obj_key(jline_t *j, const char *key)
{
    jl_key(j, key);
    jl_raw(j, "{");
    j->first = true;
}

static void obj_end(jline_t *j)
{
    jl_raw(j, "}");
    j->first = false;
}

static void jl_threads(jline_t *j)
{
    jl_key(j, "threads");
    jl_raw(j, "[");
    for (uint32_t i = 0; i < S.n; i++) {
        wslot_t *w = &S.w[i];
        if (i)
            jl_raw(j, ",");
        jl_raw(j, "{");
        j->first = true;
        jl_u64(j, "worker", i);
        jl_str(j, "state", state_names[w->state]);
        jl_u64(j, "ops", w->ops);
        jl_str(j, "last_yield", w->last_yield ? w->last_yield : "");
        if (w->state == ST_BLOCKED) {
            jl_str(j, "waiting_for", w->wait_name ? w->wait_name : "");
            jl_str(j, "waiting_at", w->wait_where ? w->wait_where : "");
        }
        jl_key(j, "holds");
        jl_raw(j, "[");
        for (int h = 0; h < w->nheld; h++) {
            if (h)
                jl_raw(j, ",");
            jl_raw(j, "{");
            j->first = true;
            jl_str(j, "lock", w->held[h].name);
            jl_str(j, "at", w->held[h].where);
            obj_end(j);
        }
        jl_raw(j, "]");
        obj_end(j);
    }
    jl_raw(j, "]");
    j->first = false;
}

static void stop(const char *outcome, const char *why) __attribute__((noreturn));
static void stop(const char *outcome, const char *why)
{
    jline_t j;
    jl_begin(&j, "sched_stop");
    jl_str(&j, "outcome", outcome);
    jl_str(&j, "why", why);
    jl_u64(&j, "step", S.step);
    jl_threads(&j);
    jl_end(&j);
    trace_close();
    if (S.op_log)
        fflush(S.op_log);
    if (S.yield_log)
        fflush(S.yield_log);
    _exit(strcmp(outcome, "deadlock") == 0 ? SCHED_EXIT_DEADLOCK : SCHED_EXIT_HANG);
}

/* ---- choosing */

static bool lock_held_by_worker(void *m)
{
    for (uint32_t i = 0; i < S.n; i++) {
        if (S.w[i].held_overflow)
            return true; /* not known: assume a worker (it will let go under control) */
        for (int h = 0; h < S.w[i].nheld; h++)
            if (S.w[i].held[h].m == m)
                return true;
    }
    return false;
}

static int pick_strategy(int me, const int *ready, uint32_t nr)
{
    if (opt.after_nonpreemptive && !S.following && S.in_runs) {
        for (uint32_t i = 0; i < nr; i++)
            if (ready[i] == me)
                return me;
        return ready[0];
    }
    switch (opt.kind) {
    case SK_RANDOM:
        return ready[xoshiro_below(&S.rng, nr)];
    case SK_SURW: {
        uint64_t total = 0;
        for (uint32_t i = 0; i < nr; i++)
            total += S.w[ready[i]].remaining + 1;
        uint64_t r = xoshiro_below(&S.rng, total);
        for (uint32_t i = 0; i < nr; i++) {
            uint64_t wgt = S.w[ready[i]].remaining + 1;
            if (r < wgt)
                return ready[i];
            r -= wgt;
        }
        return ready[nr - 1];
    }
    case SK_POS:
        for (uint32_t i = 0; i < nr; i++)
            if (xoshiro_unit(&S.rng) < opt.pos_p)
                S.w[ready[i]].prio = xoshiro_unit(&S.rng);
        break;
    case SK_PCT:
        if (me >= 0 && S.next_change < S.nchange && S.step >= S.change[S.next_change]) {
            S.w[me].prio = (double)(opt.depth - 1 - S.next_change);
            S.next_change++;
        }
        break;
    }
    int best = ready[0];
    for (uint32_t i = 1; i < nr; i++)
        if (S.w[ready[i]].prio > S.w[best].prio)
            best = ready[i];
    return best;
}

/* One step, mu held: who runs next (-1: nobody is left). */
static int decide(int me)
{
    int ready[DRV_MAX_THREADS];
    for (;;) {
        uint32_t nr = 0, blocked = 0, stuck_outside = 0;
        for (uint32_t i = 0; i < S.n; i++) {
            if (S.w[i].state == ST_RUNNABLE)
                ready[nr++] = (int)i;
            else if (S.w[i].state == ST_BLOCKED) {
                blocked++;
                if (!lock_held_by_worker(S.w[i].waiting_on))
                    stuck_outside++;
            }
        }
        if (nr == 0 && blocked == 0)
            return -1;
        if (nr == 0 && stuck_outside == 0)
            stop("deadlock", "every worker is blocked on a lock another worker holds");
        if (nr == 0) {
            /* a lock held by a thread outside the schedule (the main thread): let its
             * waiters try again once it may have let go */
            pthread_mutex_unlock(&S.mu);
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&S.mu);
            for (uint32_t i = 0; i < S.n; i++)
                if (S.w[i].state == ST_BLOCKED && !lock_held_by_worker(S.w[i].waiting_on))
                    S.w[i].state = ST_RUNNABLE;
            continue;
        }
        if (++S.step > opt.max_steps) {
            char why[96];
            snprintf(why, sizeof why, "step bound %llu reached (--max-steps)",
                     (unsigned long long)opt.max_steps);
            stop("hang", why);
        }
        if (S.yield_log && me >= 0)
            fprintf(S.yield_log, "Y %d %llu %s %c\n", me, (unsigned long long)S.step,
                    S.w[me].last_yield ? S.w[me].last_yield : "?",
                    S.w[me].state == ST_RUNNABLE ? 'R' : 'B');
        int next = -1;
        if (S.following) {
            int want = (int)S.in_w[S.in_pos];
            if (want >= 0 && (uint32_t)want < S.n && S.w[want].state == ST_RUNNABLE) {
                next = want;
                if (++S.in_used == S.in_len[S.in_pos]) {
                    S.in_used = 0;
                    if (++S.in_pos == S.in_runs)
                        S.following = false;
                }
            } else {
                S.following = false;
                S.diverged_at = (int64_t)S.step;
            }
        }
        if (next < 0)
            next = pick_strategy(me, ready, nr);
        if (me >= 0 && next != me) {
            S.switches++;
            if (S.w[me].state == ST_RUNNABLE) {
                S.preemptions++;
                if (S.op_log)
                    fprintf(S.op_log, "P %d %llu %s\n", me, (unsigned long long)S.step,
                            S.w[me].last_yield ? S.w[me].last_yield : "?");
            }
        }
        S.w[next].steps++;
        trace_note(next);
        return next;
    }
}

/* mu held, me the baton's holder: one step, then wait until the baton is back (unless
 * me is leaving). */
static void schedule(int me)
{
    int next = decide(me);
    S.current = next;
    if (next == me)
        return;
    if (next >= 0)
        pthread_cond_broadcast(&S.w[next].cv);
    if (S.w[me].state == ST_RUNNABLE || S.w[me].state == ST_BLOCKED)
        while (S.current != me)
            pthread_cond_wait(&S.w[me].cv, &S.mu);
}

static inline bool in_forked_child(void)
{
    return S.forking && getpid() != S.pid;
}

/* ---- hooks (chaos.h) */

static void hook_yield(const char *where)
{
    int me = self;
    if (me < 0 || !S.active || in_forked_child())
        return;
    pthread_mutex_lock(&S.mu);
    S.w[me].last_yield = where;
    schedule(me);
    pthread_mutex_unlock(&S.mu);
}

static bool hook_lock_wait(void *m, const char *name, const char *where)
{
    int me = self;
    if (me < 0 || !S.active || in_forked_child())
        return false;
    pthread_mutex_lock(&S.mu);
    /* its holder may be outside the schedule and have let go meanwhile */
    if (pthread_mutex_trylock(m) == 0) {
        pthread_mutex_unlock(m);
        pthread_mutex_unlock(&S.mu);
        return true;
    }
    if (!lock_held_by_worker(m)) {
        /* Held by a thread outside the schedule (none takes a heap lock while workers
         * run, but a driver or allocator change could add one): wait for it in the
         * kernel keeping the baton, so no step depends on when it lets go. Handing the
         * baton on, and retrying once it may have let go, made the schedule a function
         * of timing. */
        pthread_mutex_unlock(&S.mu);
        return false;
    }
    wslot_t *w = &S.w[me];
    w->state = ST_BLOCKED;
    w->waiting_on = m;
    w->wait_name = name;
    w->wait_where = where;
    w->last_yield = where;
    schedule(me);
    pthread_mutex_unlock(&S.mu);
    return true;
}

static void hook_locked(void *m, const char *name, const char *where)
{
    int me = self;
    if (me < 0 || !S.active || in_forked_child())
        return;
    wslot_t *w = &S.w[me];
    if (w->nheld < MAX_HELD)
        w->held[w->nheld++] = (held_t){m, name, where};
    else
        w->held_overflow = true;
}

static void hook_unlocked(void *m)
{
    if (!S.active || in_forked_child())
        return;
    int me = self;
    pthread_mutex_lock(&S.mu);
    if (me >= 0) {
        wslot_t *w = &S.w[me];
        for (int h = w->nheld - 1; h >= 0; h--) {
            if (w->held[h].m == m) {
                memmove(&w->held[h], &w->held[h + 1], (size_t)(w->nheld - 1 - h) * sizeof(held_t));
                w->nheld--;
                break;
            }
        }
    }
    for (uint32_t i = 0; i < S.n; i++)
        if (S.w[i].state == ST_BLOCKED && S.w[i].waiting_on == m)
            S.w[i].state = ST_RUNNABLE;
    pthread_mutex_unlock(&S.mu);
}

/* ---- fork: the child runs free */

static void fork_prepare(void) { S.forking = 1; }
static void fork_parent(void) { S.forking = 0; }
static void fork_child(void)
{
    S.active = false;
    S.forking = 0;
    /* the parent's trace and op log: never written from here (a crash in the child
     * wrote the parent's unflushed trace into the parent's file a second time) */
    S.out_fd = -1;
    S.out_len = 0;
    S.op_log = NULL;
    S.yield_log = NULL;
    memset(&chaos_hooks, 0, sizeof chaos_hooks);
    self = -1;
}

/* A fatal signal: keep the trace (a crashing trial replays from it too). */
static void on_fatal(int sig)
{
    if (!in_forked_child())
        trace_close();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- the trial */


void sched_prepare(const options_t *o, char **argv)
{
    if (opt.kind == SK_FREE) {
        if (opt.in_path || opt.out_path || opt.op_log || opt.yield_log)
            usage_error("--schedule-in/--schedule-out/--op-log/--yield-log: need a "
                        "controlled scheduler (--scheduler pct, pos, surw or random)");
        return;
    }
    if (o->duration_ns)
        usage_error("--duration: not under a controlled scheduler (the clock would "
                    "decide where the schedule ends); give --ops");
    if (strcmp(o->target, "nmm") != 0)
        usage_error("--scheduler %s: needs --target nmm (the yield points are in the "
                    "NMM heap linked into this driver)", kind_names[opt.kind]);
    /* one seed, one interleaving, the same addresses: no ASLR (re-exec once) */
    int pers = personality(0xffffffff);
    if (pers != -1 && !(pers & ADDR_NO_RANDOMIZE) &&
        personality((unsigned long)pers | ADDR_NO_RANDOMIZE) != -1) {
        execv("/proc/self/exe", argv);
        /* exec failed: go on with randomisation (replays may differ in addresses) */
    }
}

void sched_start(const options_t *o)
{
    if (opt.kind == SK_FREE)
        return;
    S.n = o->threads;
    S.w = calloc(S.n, sizeof *S.w);
    if (!S.w)
        usage_error("scheduler: out of memory");
    S.pid = getpid();
    xoshiro_seed(&S.rng, prng_mix(o->seed, 0x5C4ED01EULL));
    /* pct: priorities d..d+n-1 in a random order, change points over k steps */
    uint32_t *perm = calloc(S.n, sizeof *perm);
    for (uint32_t i = 0; i < S.n; i++)
        perm[i] = i;
    for (uint32_t i = S.n; i > 1; i--) {
        uint32_t k = (uint32_t)xoshiro_below(&S.rng, i);
        uint32_t t = perm[i - 1];
        perm[i - 1] = perm[k];
        perm[k] = t;
    }
    for (uint32_t i = 0; i < S.n; i++) {
        pthread_cond_init(&S.w[i].cv, NULL);
        S.w[i].prio = opt.kind == SK_PCT ? (double)(opt.depth + perm[i]) : xoshiro_unit(&S.rng);
    }
    free(perm);
    if (!opt.k)
        opt.k = (uint64_t)o->threads * o->ops * 10;
    S.nchange = opt.kind == SK_PCT ? opt.depth - 1 : 0;
    for (uint32_t i = 0; i < S.nchange; i++)
        S.change[i] = 1 + xoshiro_below(&S.rng, opt.k);
    for (uint32_t i = 1; i < S.nchange; i++) /* ascending: they fire in step order */
        for (uint32_t k = i; k > 0 && S.change[k - 1] > S.change[k]; k--) {
            uint64_t t = S.change[k];
            S.change[k] = S.change[k - 1];
            S.change[k - 1] = t;
        }
    if (opt.in_path)
        trace_load_in();
    if (opt.out_path)
        trace_open_out();
    if (opt.op_log && !(S.op_log = fopen(opt.op_log, "w")))
        usage_error("--op-log %s: %s", opt.op_log, strerror(errno));
    if (opt.yield_log && !(S.yield_log = fopen(opt.yield_log, "w")))
        usage_error("--yield-log %s: %s", opt.yield_log, strerror(errno));
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_fatal);
    pthread_atfork(fork_prepare, fork_parent, fork_child);

    chaos_hooks.lock_wait = hook_lock_wait;
    chaos_hooks.locked = hook_locked;
    chaos_hooks.unlocked = hook_unlocked;
    chaos_hooks.yield = hook_yield;
    S.active = true;
}

void sched_finish(void)
{
    if (!S.active)
        return;
    S.active = false;
    memset(&chaos_hooks, 0, sizeof chaos_hooks);
    if (S.following || (S.in_runs && S.in_pos < S.in_runs && S.diverged_at < 0))
        S.diverged_at = (int64_t)S.step + 1; /* the trace goes on past the trial's end */
    else if (S.in_runs && S.diverged_at < 0 && S.step > S.in_steps)
        S.diverged_at = (int64_t)S.in_steps + 1; /* the trial goes on past the trace's end */
    trace_close();
    if (S.op_log) {
        fclose(S.op_log);
        S.op_log = NULL;
    }
    if (S.yield_log) {
        fclose(S.yield_log);
        S.yield_log = NULL;
    }
}

void sched_thread_begin(uint32_t worker, uint64_t remaining)
{
    if (!S.active)
        return;
    self = (int)worker;
    pthread_mutex_lock(&S.mu);
    wslot_t *w = &S.w[worker];
    /* a replacement (thread churn): once the thread it replaces is gone */
    while (S.started && !(w->state == ST_ABSENT && S.current == (int)worker))
        pthread_cond_wait(&w->cv, &S.mu);
    w->state = ST_RUNNABLE;
    w->remaining = remaining;
    if (!S.started && ++S.arrived == S.n) {
        S.started = true;
        S.current = decide(-1);
        if (S.current >= 0 && S.current != (int)worker)
            pthread_cond_broadcast(&S.w[S.current].cv);
    }
    while (S.current != (int)worker)
        pthread_cond_wait(&w->cv, &S.mu);
    pthread_mutex_unlock(&S.mu);
}

void sched_between_ops(uint32_t worker, uint64_t remaining)
{
    if (!S.active)
        return;
    S.w[worker].remaining = remaining;
    S.w[worker].ops++;
    if (S.op_log)
        fprintf(S.op_log, "O %u %llu %llu\n", worker, (unsigned long long)S.w[worker].ops,
                (unsigned long long)S.step);
    hook_yield("op");
}

/* An ending thread leaves the schedule once its thread caches went back (under
 * control: that takes heap locks); its exit then runs no allocator code, so the
 * supervisor can join it while the workers stay parked. A thread that is replaced
 * leaves the baton to its replacement. */
void sched_thread_end(uint32_t worker, bool finished)
{
    if (!S.active)
        return;
    chaos_thread_retire();
    pthread_mutex_lock(&S.mu);
    wslot_t *w = &S.w[worker];
    if (finished) {
        w->state = ST_DONE;
        schedule((int)worker);
    } else {
        w->state = ST_ABSENT;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&S.mu);
    self = -1;
}

void sched_result(jline_t *j)
{
    if (opt.kind == SK_FREE)
        return;
    obj_key(j, "sched");
    jl_str(j, "kind", kind_names[opt.kind]);
    if (opt.kind == SK_PCT) {
        jl_u64(j, "depth", opt.depth);
        jl_u64(j, "k", opt.k);
        jl_u64_array(j, "change_points", S.change, S.nchange);
    }
    if (opt.kind == SK_POS)
        jl_dbl(j, "pos_p", opt.pos_p);
    jl_u64(j, "steps", S.step);
    jl_u64(j, "switches", S.switches);
    jl_u64(j, "preemptions", S.preemptions);
    if (opt.in_path) {
        jl_u64(j, "trace_steps", S.in_steps);
        if (S.diverged_at >= 0)
            jl_u64(j, "diverged_at", (uint64_t)S.diverged_at);
        else
            jl_null(j, "diverged_at");
    }
    obj_end(j);
}

#endif /* NMM_CHAOS */
