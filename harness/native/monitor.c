/* monitor.c — the heartbeat of a trial: a thread that writes a beat line every
 * DRV_BEAT_MS with the phase the trial is in and how far it got (ops over all workers,
 * the phase's own step count), so the parent calls a trial that stops moving a hang
 * within seconds, naming the phase, instead of waiting for its timeout. It never calls
 * the target (only atomics and write(2)), so a target that deadlocks cannot stop it; a
 * process stopped whole stops it, which the parent sees as well. Phases are set by the
 * main thread; the monitor only reads them. Between beats it waits on its own condition
 * variable, so the end of a trial wakes it at once: a sleep made every trial's exit wait
 * for the rest of a beat (up to DRV_BEAT_MS, most of a short trial's time). */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "driver.h"

static const char *const phase_names[PH_COUNT_] = {
    "setup", "ops", "check", "corrupt", "teardown", "validate", "drain", "stats", "destroy", "done",
};

static _Atomic int phase = PH_SETUP;
static _Atomic uint64_t step;
static trial_t *trial;
static pthread_t thread;
static bool running;
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv;
/* A beat reads the phase and writes its line under this lock, and the result line is
 * written and the phase moved to destroy under it too (monitor_result): so no beat of
 * an earlier phase can land after the result line (PROTOCOL.md). Held only around
 * write(2)s of our own lines, never around a call into the target. */
static pthread_mutex_t line_order = PTHREAD_MUTEX_INITIALIZER;

static void beat(uint64_t t0)
{
    pthread_mutex_lock(&line_order);
    uint64_t ops = 0;
    for (uint32_t i = 0; trial->workers && i < trial->o->threads; i++)
        ops += atomic_load_explicit(&trial->workers[i].ops_done, memory_order_relaxed);
    jline_t j;
    jl_begin(&j, "beat");
    jl_str(&j, "phase", phase_names[atomic_load(&phase)]);
    jl_u64(&j, "ops", ops);
    jl_u64(&j, "step", atomic_load_explicit(&step, memory_order_relaxed));
    jl_u64(&j, "t_ms", (drv_now_ns() - t0) / 1000000);
    jl_end(&j);
    pthread_mutex_unlock(&line_order);
}

static void *monitor_main(void *arg)
{
    (void)arg;
    uint64_t t0 = drv_now_ns();
    while (atomic_load(&phase) != PH_DONE) {
        beat(t0);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += DRV_BEAT_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&stop_mu);
        while (atomic_load(&phase) != PH_DONE &&
               pthread_cond_timedwait(&stop_cv, &stop_mu, &until) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&stop_mu);
    }
    return NULL;
}

void monitor_start(trial_t *tr)
{
    trial = tr;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&stop_cv, &attr);
    pthread_condattr_destroy(&attr);
    running = pthread_create(&thread, NULL, monitor_main, NULL) == 0;
    if (!running)
        out_error("cannot start the heartbeat thread: a hang will only be seen at the timeout");
}

void monitor_phase(drv_phase_t p)
{
    atomic_store_explicit(&step, 0, memory_order_relaxed);
    atomic_store(&phase, (int)p);
}

void monitor_result(jline_t *result)
{
    pthread_mutex_lock(&line_order);
    jl_end(result);
    atomic_store_explicit(&step, 0, memory_order_relaxed);
    atomic_store(&phase, PH_DESTROY);
    pthread_mutex_unlock(&line_order);
}

void monitor_step(void) { atomic_fetch_add_explicit(&step, 1, memory_order_relaxed); }

void monitor_stop(void)
{
    pthread_mutex_lock(&stop_mu);
    atomic_store(&phase, PH_DONE);
    pthread_cond_signal(&stop_cv);
    pthread_mutex_unlock(&stop_mu);
    if (running)
        pthread_join(thread, NULL);
    running = false;
}
