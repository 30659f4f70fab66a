/* chaos.h — the chaos build (design.md "Chaos build"): yield points for the driver's
 * controlled scheduler and named, deliberate bugs (mutants) switched on at run time.
 * Included by internal.h, so every allocator source sees it. Compiled with NMM_CHAOS
 * only; in the production build every macro here is nothing (NMM_YIELD) or a constant
 * 0 (NMM_MUTANT), so the release libraries hold no hook, no mutant and no mutant name
 * (tests/chaos/test_chaos_build.py checks their symbols and strings). The damage hook
 * of corrupt_meta faults (below) is in the chaos build and the coverage driver's
 * (NMM_CHAOS_COVERAGE, harness/coverage.py) only (tests/chaos/test_corrupt_meta.py).
 *
 * Yield audit. A preemption the scheduler cannot make is a race it can never expose,
 * so the chaos build does not rely on hand-placed points: every pthread mutex
 * acquire/release and every __atomic builtin (which C11's <stdatomic.h> operations
 * expand to) in the allocator is wrapped by the macros below and yields first, named
 * by its file and line. The hand-placed NMM_YIELD("name") points stay as named ones
 * (they mark the windows the fork-publish order and the books protect). A lock
 * acquire is a trylock loop: a thread that finds the lock taken tells the scheduler,
 * which runs someone else until the holder lets go (so one worker at a time never
 * blocks in the kernel, and "all blocked" is a deadlock the scheduler can name).
 * Plain non-atomic shared accesses are not yield points; a mutant that removes a lock
 * yields inside the window it opens (NMM_YIELD), modelling the preemption there.
 */
#ifndef NMM_CHAOS_H
#define NMM_CHAOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The mutants: name, then the bug it plants (one line each; README "Mutants"). */
#define NMM_MUTANTS(X)                                                                      \
    X(xfree_unsync, "a free pushed back to its slab without the class lock (two threads "  \
                    "push and pop the same free stack: a block lost or handed out twice)") \
    X(flush_race, "a quarantine flush reads the oldest entry after dropping the lock: two " \
                  "threads flush the same block (handed out twice)")                       \
    X(skip_df_check, "the fast free skips the block-state check (a double free goes "       \
                     "unreported and the block is cached twice)")                           \
    X(canary_late, "the tail canary is checked one byte late (a 1-byte overflow is missed)") \
    X(stats_racy, "an uncached free counts itself with a non-atomic read-modify-write "    \
                  "(frees lost: the stats disagree with the caller's books)")              \
    X(atfork_order, "a quarantine release puts a block in its bin before the ring lets "  \
                    "go of it: a fork() in between hands it out twice in the child")      \
    X(lock_inversion, "giving blocks back takes the region lock before the class lock "    \
                      "(the grow path takes them the other way: deadlock)")                \
    X(refill_unlocked, "a slab refill reads the free stack after dropping the class lock " \
                       "(two refills take the same blocks)")

#define NMM_MUTANT_ENUM_(name, what) NMM_MUT_##name,
enum { NMM_MUTANTS(NMM_MUTANT_ENUM_) NMM_MUT_COUNT_ };
#undef NMM_MUTANT_ENUM_

/* Parse an NMM_OPTIONS `mutant=NAME` value (n bytes at v; `none` switches every mutant
 * off). False with a message in msg (a strbuf) when the name is unknown, or always in
 * the production build, which has no mutants. chaos.c, both builds. */
struct strbuf;
bool chaos_mutant_option(const char *v, size_t n, struct strbuf *msg);

#if defined(NMM_CHAOS) || defined(NMM_CHAOS_COVERAGE)
/* Damage to the heap's own books (chaos_corrupt.c; the driver's corrupt_meta fault):
 * the chaos and coverage builds only, so the release libraries hold no way to write a
 * heap's private structures (tests/chaos/test_chaos_build.py checks their symbols).
 * The real-world class is a wild write landing in allocator metadata, or an allocator
 * bug: one structure is damaged on a quiescent heap, nmm_validate must name it, and
 * the damage is undone so the trial's teardown runs on a whole heap (the allocator's
 * mutating paths do not check their own books; validate, stats and the walks must
 * stay bounded on them). */
#define NMM_CHAOS_CORRUPT 1
#define NMM_CORRUPT_SHAPES(X)                                                                \
    X(list_twice, "a slab pushed on its list twice (its next and prev point at itself)")   \
    X(list_cycle, "a slab list's last slab links back to its first")                       \
    X(free_count, "a slab's free count one too high: its bump pointer one back, over a live block") \
    X(freelist_link, "a free-stack entry overwritten with another's: one block on the "    \
                     "stack twice, one free block lost")                                    \
    X(quar_twice, "a quarantined block held by two quarantine entries")                    \
    X(quar_lost, "a quarantined block dropped by its quarantine entry")                    \
    X(quar_bytes, "the quarantine's byte count off by 16")                                 \
    X(limit_charge, "a limit charge never given back")                                     \
    X(live_count, "one allocation too many on a class's live counters")                    \
    X(retained, "retained bytes off by a page")

#define NMM_CORRUPT_ENUM_(name, what) NMM_CORRUPT_##name,
enum { NMM_CORRUPT_SHAPES(NMM_CORRUPT_ENUM_) NMM_CORRUPT_COUNT_ };
#undef NMM_CORRUPT_ENUM_

#define CHAOS_DAMAGE_WRITES 3
/* One planned damage: where nmm_validate must name it and the writes that make it (each
 * with the bytes it replaces, so chaos_corrupt_undo restores them). */
typedef struct chaos_damage {
    int shape;
    const void *named;  /* the address validate's report names (NULL: a count) */
    const void *also;   /* a second address it names (freelist_link: the lost block) */
    const void *written;/* the first metadata byte written (never NULL once planned) */
    const char *what;   /* the structure damaged, for the fault line */
    uint32_t nwrites;
    struct {
        void *at;
        uint32_t len;
        uint8_t now[64], was[64];
    } writes[CHAOS_DAMAGE_WRITES];
} chaos_damage_t;

struct nmm_heap;
const char *chaos_corrupt_name(int shape); /* NULL past the last */
/* Plan shape's damage on heap h (quiescent: no other thread in it), choosing among the
 * candidate structures by pick. False (d->what says why) when h has none. */
bool chaos_corrupt_plan(struct nmm_heap *h, int shape, uint64_t pick, chaos_damage_t *d);
void chaos_corrupt_apply(const chaos_damage_t *d);
void chaos_corrupt_undo(const chaos_damage_t *d);
#endif /* NMM_CHAOS || NMM_CHAOS_COVERAGE */

#ifdef NMM_CHAOS

#include <pthread.h>

/* Set by the driver's scheduler (harness/native/sched.c); NULL members: free-running. */
typedef struct chaos_hooks {
    void (*yield)(const char *where);
    /* m was found locked: return once it may be free again (true), or false when
     * the caller is not under control (it then blocks in pthread_mutex_lock) */
    bool (*lock_wait)(void *m, const char *name, const char *where);
    void (*locked)(void *m, const char *name, const char *where);
    void (*unlocked)(void *m);
} chaos_hooks_t;

extern chaos_hooks_t chaos_hooks;
extern uint32_t chaos_mutants; /* bit NMM_MUT_x: mutant x is on */

const char *chaos_mutant_name(int index); /* NULL past the last */
/* The calling thread's caches go back to the heaps now, as at its exit (tcache.c):
 * the scheduler retires an ending worker thread while it is still under control. */
void chaos_thread_retire(void);

#define NMM_CHAOS_STR_(x) #x
#define NMM_CHAOS_STR(x) NMM_CHAOS_STR_(x)
#define NMM_CHAOS_HERE __FILE_NAME__ ":" NMM_CHAOS_STR(__LINE__)

static inline void chaos_yield(const char *where)
{
    void (*y)(const char *) = chaos_hooks.yield;
    if (y)
        y(where);
}

int chaos_mutex_lock(pthread_mutex_t *m, const char *name, const char *where);
int chaos_mutex_trylock(pthread_mutex_t *m, const char *name, const char *where);
int chaos_mutex_unlock(pthread_mutex_t *m, const char *where);
/* heap_lock(h, m) takes its lock inside heap.c: the caller's lock expression and line
 * are handed to the next lock call of this thread, so a deadlock names them. */
void chaos_lock_site(const char *name, const char *where);

#define NMM_YIELD(where) chaos_yield(where)
#define NMM_MUTANT(name) (__builtin_expect((chaos_mutants >> NMM_MUT_##name) & 1u, 0))

#ifndef NMM_CHAOS_IMPL /* chaos.c calls the real ones */
#define pthread_mutex_lock(m) chaos_mutex_lock((m), #m, NMM_CHAOS_HERE)
#define pthread_mutex_trylock(m) chaos_mutex_trylock((m), #m, NMM_CHAOS_HERE)
#define pthread_mutex_unlock(m) chaos_mutex_unlock((m), NMM_CHAOS_HERE)
#define heap_lock(h, m) (chaos_lock_site(#m, NMM_CHAOS_HERE), (heap_lock)((h), (m)))

/* The __atomic builtins, each a yield point first. A function-like macro is not
 * expanded again inside its own expansion, so the inner name is the builtin. */
#define NMM_CHAOS_AT_(expr) (chaos_yield(NMM_CHAOS_HERE), expr)
#define __atomic_load_n(...) NMM_CHAOS_AT_(__atomic_load_n(__VA_ARGS__))
#define __atomic_store_n(...) NMM_CHAOS_AT_(__atomic_store_n(__VA_ARGS__))
#define __atomic_load(...) NMM_CHAOS_AT_(__atomic_load(__VA_ARGS__))
#define __atomic_store(...) NMM_CHAOS_AT_(__atomic_store(__VA_ARGS__))
#define __atomic_exchange_n(...) NMM_CHAOS_AT_(__atomic_exchange_n(__VA_ARGS__))
#define __atomic_exchange(...) NMM_CHAOS_AT_(__atomic_exchange(__VA_ARGS__))
#define __atomic_compare_exchange_n(...) NMM_CHAOS_AT_(__atomic_compare_exchange_n(__VA_ARGS__))
#define __atomic_compare_exchange(...) NMM_CHAOS_AT_(__atomic_compare_exchange(__VA_ARGS__))
#define __atomic_fetch_add(...) NMM_CHAOS_AT_(__atomic_fetch_add(__VA_ARGS__))
#define __atomic_fetch_sub(...) NMM_CHAOS_AT_(__atomic_fetch_sub(__VA_ARGS__))
#define __atomic_fetch_or(...) NMM_CHAOS_AT_(__atomic_fetch_or(__VA_ARGS__))
#define __atomic_fetch_and(...) NMM_CHAOS_AT_(__atomic_fetch_and(__VA_ARGS__))
#define __atomic_add_fetch(...) NMM_CHAOS_AT_(__atomic_add_fetch(__VA_ARGS__))
#define __atomic_sub_fetch(...) NMM_CHAOS_AT_(__atomic_sub_fetch(__VA_ARGS__))
#define __atomic_or_fetch(...) NMM_CHAOS_AT_(__atomic_or_fetch(__VA_ARGS__))
#define __atomic_and_fetch(...) NMM_CHAOS_AT_(__atomic_and_fetch(__VA_ARGS__))
#define __atomic_thread_fence(...) NMM_CHAOS_AT_(__atomic_thread_fence(__VA_ARGS__))
#endif /* NMM_CHAOS_IMPL */

#else /* production build */

#define NMM_YIELD(where) ((void)0)
#define NMM_MUTANT(name) 0

#endif /* NMM_CHAOS */
#endif /* NMM_CHAOS_H */
