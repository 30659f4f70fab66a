/* sched.h — the controlled scheduler of the chaos driver (sched.c; design.md
 * "Reproduction"). With --scheduler pct|pos|surw|random exactly one worker runs at a
 * time: at each yield point of the allocator (chaos.h) and between driver operations
 * the scheduler picks who runs next, every choice drawn from the seed, so one seed is
 * one interleaving. --scheduler free (the default) installs nothing. In the production
 * driver only `free` exists: the other kinds are a usage error naming the chaos driver.
 */
#ifndef DRV_SCHED_H
#define DRV_SCHED_H

#include <stdbool.h>
#include <stdint.h>

struct options;

/* Exit statuses of a trial the scheduler stopped (after its deadlock/hang line). */
#define SCHED_EXIT_DEADLOCK 86
#define SCHED_EXIT_HANG 87

/* Parse one scheduler option at argv[*i] (--scheduler, --depth, --sched-steps,
 * --max-steps, --pos-p, --schedule-in, --schedule-out, --after-schedule); returns
 * false when argv[*i] is not one (then the caller goes on), advances *i past a value.
 * A bad value is a usage error (exit 2). */
bool sched_parse_option(int argc, char **argv, int *i, bool run_mode);
/* After every option: check them against the trial (e.g. --duration is refused under
 * control) and, under control, re-exec with address randomisation off. */
void sched_prepare(const struct options *o, char **argv);
bool sched_controlled(void);

/* The trial: before the workers are spawned; after they are all joined. */
void sched_start(const struct options *o);
void sched_finish(void);
/* A worker thread's life: begin (remaining = ops it has left), a yield between its
 * operations, end (finished = its stream is done; else a new thread takes over). */
void sched_thread_begin(uint32_t worker, uint64_t remaining);
void sched_between_ops(uint32_t worker, uint64_t remaining);
void sched_thread_end(uint32_t worker, bool finished);
/* The result line's "sched" object (nothing when free-running). */
struct jline;
void sched_result(struct jline *j);
/* The usage lines of the options above. */
extern const char sched_usage[];

#endif /* DRV_SCHED_H */
