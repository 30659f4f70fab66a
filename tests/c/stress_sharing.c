/* stress_sharing.c — do two threads' blocks share cache lines of out-of-band state?
 *
 * Every allocation and free writes the block's state byte in its slab descriptor.
 * When blocks held by different threads have their state bytes in one 64-byte line,
 * every operation of one thread invalidates the other's copy of that line (false
 * sharing): the cost a second thread added in the per-thread working-set program.
 * This program runs that program (each thread keeps 1024 live blocks of 4 B..32 KiB,
 * density 1/size, and replaces a random one per iteration; both threads start at
 * once, the worst first-touch order), pauses both threads, and counts, for the blocks
 * each thread holds (live in its slots or free in its cache), how many have a state
 * byte on a line that also holds a state byte of a block of another thread. The
 * count is a property of the layout, not of timing, so it means the same on a busy
 * machine as on a quiet one.
 *
 * usage: stress_sharing LEVEL THREADS OPS SEED MAX_PERMILLE [seq]
 * (seq: the threads fill their working sets one after the other, not at once)
 * prints "ok shared=<permille> ..." and exits 1 when the shared share is above
 * MAX_PERMILLE (1000 = report only). Test-only code; reads core.h's layout.
 */
#include "core.h"
#include "stress_common.h"

#include <math.h>
#include <pthread.h>

#define SLOTS 1024
#define MAX_THREADS 8
#define MAX_HELD (SLOTS + CORE_CLASSES * CORE_CACHE_CAP_MAX)

typedef struct worker {
    nmm_heap_t *h;
    uint64_t seed, ops;
    uintptr_t lines[MAX_HELD]; /* state-byte address >> 6 of every block held */
    size_t nlines;
} worker_t;

static pthread_barrier_t start, paused, resume;
static pthread_mutex_t warm_lock = PTHREAD_MUTEX_INITIALIZER;
static bool one_at_a_time; /* warm up one thread after the other (the other first-touch order) */

static size_t size_draw(uint64_t *rng)
{
    double u = (double)(rng_next(rng) >> 11) * 0x1.0p-53;
    return (size_t)exp(log(4.0) + u * (log(32769.0) - log(4.0)));
}

static void note(worker_t *w, const uint8_t *state)
{
    CHECK(w->nlines < MAX_HELD);
    w->lines[w->nlines++] = (uintptr_t)state >> 6;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    nmm_heap_t *h = w->h;
    void **slots = calloc(SLOTS, sizeof(void *));
    CHECK(slots != NULL);
    uint64_t rng = w->seed;
    pthread_barrier_wait(&start);
    if (one_at_a_time)
        pthread_mutex_lock(&warm_lock);
    for (int i = 0; i < SLOTS; i++)
        CHECK((slots[i] = nmm_alloc(h, size_draw(&rng), 0)) != NULL);
    if (one_at_a_time)
        pthread_mutex_unlock(&warm_lock);
    for (uint64_t i = 0; i < w->ops; i++) {
        uint64_t s = rng_next(&rng) % SLOTS;
        CHECK_EQ(nmm_free(h, slots[s], 0), NMM_OK);
        CHECK((slots[s] = nmm_alloc(h, size_draw(&rng), 0)) != NULL);
    }
    /* what this thread holds: its live blocks and its cache's free ones */
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t block = (uintptr_t)slots[i] - h->user_off;
        slab_t *s = slab_of(h, block);
        CHECK(s != NULL);
        int32_t idx = slab_index(s, block);
        CHECK(idx >= 0);
        note(w, &slab_states(s)[idx]);
    }
    tcache_t *tc = tcache_tls ? tcache_tls->caches[h->slot] : NULL;
    for (int c = 0; tc && c < CORE_CLASSES; c++)
        for (uint32_t i = 0; i < tc->bins[c].count; i++)
            note(w, tc->bins[c].items[i].state);
    pthread_barrier_wait(&paused);
    pthread_barrier_wait(&resume);
    for (int i = 0; i < SLOTS; i++)
        CHECK_EQ(nmm_free(h, slots[i], 0), NMM_OK);
    free(slots);
    return NULL;
}

static int cmp_line(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static bool holds(const worker_t *w, uintptr_t line)
{
    return bsearch(&line, w->lines, w->nlines, sizeof line, cmp_line) != NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 6 || argc == 7);
    one_at_a_time = argc == 7 && strcmp(argv[6], "seq") == 0;
    const char *level = argv[1];
    int threads = atoi(argv[2]);
    uint64_t ops = strtoull(argv[3], NULL, 10), seed = strtoull(argv[4], NULL, 10);
    long max_permille = atol(argv[5]);
    CHECK(threads >= 2 && threads <= MAX_THREADS);
    nmm_heap_t *h = heap_with("level=%s", level);
    static worker_t w[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    pthread_barrier_init(&paused, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&resume, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i].h = h;
        w[i].seed = seed * 1000 + (uint64_t)i;
        w[i].ops = ops;
        CHECK(pthread_create(&th[i], NULL, run, &w[i]) == 0);
    }
    pthread_barrier_wait(&paused);
    for (int i = 0; i < threads; i++)
        qsort(w[i].lines, w[i].nlines, sizeof(uintptr_t), cmp_line);
    size_t held = 0, shared = 0;
    for (int i = 0; i < threads; i++)
        for (size_t k = 0; k < w[i].nlines; k++) {
            bool other = false;
            for (int j = 0; j < threads && !other; j++)
                other = j != i && holds(&w[j], w[i].lines[k]);
            held++;
            shared += other;
        }
    pthread_barrier_wait(&resume);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    long permille = (long)(shared * 1000 / (held ? held : 1));
    printf("ok shared=%ld held=%zu shared_blocks=%zu\n", permille, held, shared);
    if (permille > max_permille) {
        fprintf(stderr, "%zu of %zu blocks held by one thread (%ld per mille) have their state "
                        "byte on a cache line with another thread's block; at most %ld allowed\n",
                shared, held, permille, max_permille);
        return 1;
    }
    nmm_heap_destroy(h);
    return 0;
}
