/* stress_fork_pause.c — fork() while another thread is half way through putting a
 * block into its thread cache (built with -DNMM_CHAOS: this program is the scheduler,
 * and the allocator's "bin.push" yield point sits between a bin's count and the
 * block's free state, in the fast frees and in a quarantine release).
 * usage: stress_fork_pause OPTIONS FORKS
 * The worker allocates KEEP blocks of two classes and frees them, ROUNDS times. At
 * FORKS of its "bin.push" pauses, spread over the run, the main thread forks. The
 * child (the worker gone, stopped at exactly that point) must see the heap the worker
 * left: a heap walk counts exactly the blocks the worker still holds (the one it was
 * freeing is free: the bin holds it), validate finds nothing (no live block on a free
 * stack, the books match the blocks), and after the child's own allocations and frees
 * both still hold. A fork() child once gave such a block back to the slabs still
 * reading live: walks counted it until the child reused it, and validate reported it.
 */
#include "stress_common.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#define NMM_CHAOS_IMPL 1 /* this program's own locks and atomics are not yield points */
#include "chaos.h"

#define KEEP 300
#define ROUNDS 6

static nmm_heap_t *heap;
static pause_gate_t gate = PAUSE_GATE_INIT; /* a stop: fork now */
static uint64_t held;     /* atomic: blocks the worker holds once its current call returns */
static long pauses;       /* worker only: "bin.push" points passed */
static long stride = 1;   /* fork at every stride-th point */
static __thread int is_worker;
static bool paranoid;     /* the heap's level */

/* The allocator's yield points (NMM_CHAOS; installed as chaos_hooks.yield): the worker
 * stops at "bin.push" until the main thread has forked and the child has been judged.
 * Every other point (locks, atomics) is passed through. */
static void yield_point(const char *where)
{
    if (!is_worker || strcmp(where, "bin.push") != 0 || pauses++ % stride != 0)
        return;
    pause_gate_stop(&gate);
}

static void *worker(void *arg)
{
    (void)arg;
    static void *blocks[KEEP];
    is_worker = 1;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < KEEP; i++) {
            blocks[i] = nmm_alloc(heap, i % 3 ? 40 : 100, 0);
            CHECK(blocks[i] != NULL);
            __atomic_store_n(&held, (uint64_t)i + 1, __ATOMIC_RELEASE);
        }
        for (int i = 0; i < KEEP; i++) {
            __atomic_store_n(&held, (uint64_t)(KEEP - i - 1), __ATOMIC_RELEASE);
            CHECK_EQ(nmm_free(heap, blocks[i], 0), NMM_OK);
        }
    }
    is_worker = 0;
    pause_gate_finish(&gate);
    return NULL;
}

/* validate in the child: clean, but at paranoid the block the worker is freeing is
 * in flight (quarantined, its ring slot not yet written: the release this point
 * interrupts comes first), so a quarantined block in no quarantine and the live count
 * one off are expected there, once each. Anything else (a block on a free stack that
 * reads live or quarantined: detail 2) fails. */
static void child_validate(void)
{
    size_t problems = nmm_validate(heap);
    nmm_event_t ev[16];
    size_t n = nmm_events_drain(heap, ev, 16);
    CHECK_EQ(n, problems);
    int lost = 0, books = 0;
    for (size_t i = 0; i < n; i++) {
        bool excused = paranoid && ev[i].kind == NMM_EV_FREELIST_CORRUPT &&
                       ((ev[i].detail == 14 && !lost++) || (ev[i].detail == 17 && !books++));
        if (!excused) {
            fprintf(stderr, "validate in the child: %s detail %u at %#llx\n",
                    nmm_event_kind_str(ev[i].kind), ev[i].detail,
                    (unsigned long long)ev[i].address);
            exit(1);
        }
    }
}

/* The forked child: the worker is gone, stopped inside a free. */
static int child_check(void)
{
    uint64_t want = __atomic_load_n(&held, __ATOMIC_ACQUIRE);
    CHECK_EQ(heap_walk_count(heap), want);
    child_validate();
    void *mine[200];
    for (int i = 0; i < 200; i++) {
        mine[i] = nmm_alloc(heap, i % 2 ? 40 : 100, 0);
        CHECK(mine[i] != NULL);
        block_fill(mine[i], 40, (uint64_t)i);
    }
    CHECK_EQ(heap_walk_count(heap), want + 200);
    for (int i = 0; i < 200; i++) {
        block_verify(mine[i], 40, (uint64_t)i);
        CHECK_EQ(nmm_free(heap, mine[i], 0), NMM_OK);
    }
    CHECK_EQ(heap_walk_count(heap), want);
    child_validate();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s OPTIONS FORKS\n", argv[0]);
        return 2;
    }
    heap = heap_with("%s", argv[1]);
    paranoid = strstr(argv[1], "paranoid") != NULL;
    long forks = atol(argv[2]);
    CHECK(forks > 0);
    /* a free per block and round (two at paranoid: the free and a release), spread */
    stride = ROUNDS * KEEP / forks > 1 ? ROUNDS * KEEP / forks : 1;
    chaos_hooks.yield = yield_point;
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, worker, NULL) == 0);
    long forked = 0;
    pthread_mutex_lock(&gate.lock);
    while (pause_gate_next(&gate)) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            _exit(child_check());
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %ld failed: status 0x%x\n", forked, status);
            return 1;
        }
        forked++;
        pause_gate_resume(&gate);
    }
    pthread_mutex_unlock(&gate.lock);
    pthread_join(tid, NULL);
    /* the point exists at this level: a fork landed in the middle of a push */
    CHECK(forked >= forks / 2);
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(st.events, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    printf("ok forks=%ld pauses=%ld\n", forked, pauses);
    nmm_heap_destroy(heap);
    return 0;
}
