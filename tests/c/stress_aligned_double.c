/* stress_aligned_double.c — an immediate second free of an aligned block while
 * another thread allocates the same class.
 * usage: stress_aligned_double OPTIONS STEPPED FREE
 * The freer allocates an aligned block, frees it, and frees it again at once: the
 * second free must be reported as a double free (NMM_E_DOUBLE_FREE, one double_free
 * event). The taker allocates blocks of the same class (aligned ones, and plain ones
 * of a size that falls in it), fills them, verifies them and frees them. First STEPPED
 * rounds in lock step (the taker allocates between the freer's two frees, and must not
 * get the block just freed), then FREE rounds with both running freely. Aligned
 * blocks used to be freed onto the shared slab stack, where the taker's next
 * allocation took them at once: the second free then freed the taker's block (NMM_OK,
 * the block handed out twice) or was called an invalid free.
 */
#include "stress_common.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>

#define ALIGN 64
#define SIZE 40   /* 40 + 56 (user offset) + 8 (canary) = 104: the 128-B class (the first
                   * that is a multiple of 64), also without the canary (96) */
#define PLAIN 110 /* 110 + 8 + 8 = 126 (118 without the canary): a plain block of it */

static nmm_heap_t *heap;
static long stepped, free_rounds;
static atomic_int step;         /* lock step: 1 taker allocates, 2 freer frees again, 3 taker
                                 * checks and frees, 0 next round */
static atomic_uintptr_t just_freed;
static atomic_int freer_done;

static void wait_for(int s)
{
    while (atomic_load(&step) != s)
        sched_yield();
}

static void *taker(void *arg)
{
    (void)arg;
    for (long r = 0; r < stepped; r++) {
        wait_for(1);
        bool aligned = r % 2 == 0;
        size_t n = aligned ? SIZE : PLAIN;
        void *q = aligned ? nmm_aligned_alloc(heap, ALIGN, SIZE, 0) : nmm_alloc(heap, PLAIN, 0);
        CHECK(q != NULL);
        /* the block the freer freed stays out of reach until its second free is judged */
        if ((uintptr_t)q == atomic_load(&just_freed))
            fprintf(stderr, "round %ld: the taker got the block the freer just freed\n", r);
        block_fill(q, n, (uint64_t)r);
        atomic_store(&step, 2);
        wait_for(3);
        block_verify(q, n, (uint64_t)r);
        CHECK_EQ(nmm_free(heap, q, 0), NMM_OK);
        atomic_store(&step, 0);
    }
    /* free running: blocks of the class come and go until the freer is done */
    void *held[8] = {0};
    size_t sizes[8] = {0};
    uint64_t rng = 12345;
    for (long i = 0; !atomic_load(&freer_done); i++) {
        int k = (int)(rng_next(&rng) % 8);
        if (held[k]) {
            block_verify(held[k], sizes[k], (uint64_t)k);
            CHECK_EQ(nmm_free(heap, held[k], 0), NMM_OK);
            held[k] = NULL;
        } else {
            bool aligned = rng_next(&rng) % 2;
            sizes[k] = aligned ? SIZE : PLAIN;
            held[k] = aligned ? nmm_aligned_alloc(heap, ALIGN, SIZE, 0) : nmm_alloc(heap, PLAIN, 0);
            CHECK(held[k] != NULL);
            block_fill(held[k], sizes[k], (uint64_t)k);
        }
    }
    for (int k = 0; k < 8; k++)
        if (held[k]) {
            block_verify(held[k], sizes[k], (uint64_t)k);
            CHECK_EQ(nmm_free(heap, held[k], 0), NMM_OK);
        }
    return NULL;
}

/* A second free of p, right after its first: a double free, whatever the taker did. */
static void free_again(void *p, long round)
{
    nmm_status_t st = nmm_free(heap, p, 0);
    if (st != NMM_E_DOUBLE_FREE) {
        fprintf(stderr, "round %ld: second free of aligned %p: %s, not a double free\n", round, p,
                nmm_status_str(st));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s OPTIONS STEPPED FREE\n", argv[0]);
        return 2;
    }
    heap = heap_with("%s", argv[1]);
    stepped = atol(argv[2]);
    free_rounds = atol(argv[3]);
    CHECK(stepped >= 0 && free_rounds >= 0);
    long rounds = stepped + free_rounds;
    pthread_t tid;
    CHECK(pthread_create(&tid, NULL, taker, NULL) == 0);
    for (long r = 0; r < stepped; r++) {
        void *p = nmm_aligned_alloc(heap, ALIGN, SIZE, 0);
        CHECK(p != NULL && (uintptr_t)p % ALIGN == 0);
        block_fill(p, SIZE, 7);
        CHECK_EQ(nmm_free(heap, p, 0), NMM_OK);
        atomic_store(&just_freed, (uintptr_t)p);
        atomic_store(&step, 1);
        wait_for(2);
        free_again(p, r);
        atomic_store(&step, 3);
        wait_for(0);
    }
    for (long r = stepped; r < rounds; r++) {
        void *p = nmm_aligned_alloc(heap, ALIGN, SIZE, 0);
        CHECK(p != NULL);
        block_fill(p, SIZE, 7);
        CHECK_EQ(nmm_free(heap, p, 0), NMM_OK);
        free_again(p, r);
    }
    atomic_store(&freer_done, 1);
    pthread_join(tid, NULL);
    nmm_stats_t st = stats_of(heap);
    CHECK_EQ(st.events, rounds);
    nmm_event_t ev[64];
    size_t n, total = 0;
    while ((n = nmm_events_drain(heap, ev, 64)) > 0)
        for (size_t i = 0; i < n; i++, total++)
            CHECK_EQ(ev[i].kind, NMM_EV_DOUBLE_FREE);
    CHECK_EQ(total + st.events_dropped, rounds);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    printf("ok stepped=%ld free=%ld\n", stepped, free_rounds);
    nmm_heap_destroy(heap);
    return 0;
}
