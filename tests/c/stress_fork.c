/* stress_fork.c — fork() in the middle of multi-thread churn.
 * usage: stress_fork LEVEL THREADS OPS SEED FORKS
 * Worker threads churn on a shared heap while the main thread forks FORKS times.
 * Each child (one thread, inheriting whatever the others held) allocates, fills,
 * verifies and frees blocks on that heap and on the default heap, checks that its
 * own work left the live count where it found it, and exits 0. The parent checks
 * every child's exit status, then its own stats.
 */
#include "stress_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

static nmm_heap_t *heap;
static long ops;
static uint64_t seed;
static atomic_int stop;

static void *worker(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed * 7919 + t;
    void *live[64] = {0};
    size_t sizes[64] = {0};
    long i = 0;
    while (!atomic_load(&stop) || i < ops) {
        int k = (int)(rng_next(&rng) % 64);
        if (live[k]) {
            block_verify(live[k], sizes[k], (uint64_t)k + t);
            CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
            live[k] = NULL;
        } else {
            sizes[k] = rng_size(&rng, 1, 20000);
            live[k] = nmm_alloc(heap, sizes[k], 0);
            CHECK(live[k] != NULL);
            block_fill(live[k], sizes[k], (uint64_t)k + t);
        }
        i++;
    }
    for (int k = 0; k < 64; k++)
        if (live[k])
            CHECK_EQ(nmm_free(heap, live[k], 0), NMM_OK);
    return NULL;
}

static int child_work(uint64_t child_seed)
{
    nmm_heap_t *heaps[2] = {heap, nmm_default_heap()};
    uint64_t rng = child_seed;
    for (int hi = 0; hi < 2; hi++) {
        nmm_heap_t *h = heaps[hi];
        nmm_stats_t before = stats_of(h);
        /* Not compared with the counter: a block another thread was popping from its
         * cache at the fork is counted live in the child but is in no structure
         * (noted in /work/notes/issue-14.md); the child's own work must change neither. */
        uint64_t walked = heap_walk_count(h);
        void *blocks[500];
        size_t sizes[500];
        for (int i = 0; i < 500; i++) {
            sizes[i] = rng_size(&rng, 1, 100000);
            blocks[i] = nmm_alloc(h, sizes[i], 0);
            CHECK(blocks[i] != NULL);
            block_fill(blocks[i], sizes[i], (uint64_t)i);
        }
        for (int i = 0; i < 500; i++) {
            block_verify(blocks[i], sizes[i], (uint64_t)i);
            CHECK_EQ(nmm_free(h, blocks[i], 0), NMM_OK);
        }
        nmm_stats_t after = stats_of(h);
        /* the parent's blocks the child inherited, still live by counter and walk */
        CHECK_EQ(heap_walk_count(h), walked);
        CHECK_EQ(after.live_blocks, before.live_blocks);
        CHECK_EQ(after.allocs - before.allocs, 500);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s LEVEL THREADS OPS SEED FORKS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    ops = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 10);
    int forks = atoi(argv[5]);
    CHECK(threads > 0 && threads <= 16);
    heap = heap_at(argv[1], 1 << 20);
    pthread_t tid[16];
    for (int t = 0; t < threads; t++)
        CHECK(pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t) == 0);
    uint64_t rng = seed;
    for (int f = 0; f < forks; f++) {
        /* a little churn of our own between forks, so forks land mid-operation */
        for (int i = 0; i < 200; i++) {
            void *p = nmm_alloc(heap, rng_size(&rng, 1, 5000), 0);
            CHECK(p != NULL);
            CHECK_EQ(nmm_free(heap, p, 0), NMM_OK);
        }
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            _exit(child_work(seed + (uint64_t)f));
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d failed: status 0x%x\n", f, status);
            return 1;
        }
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    nmm_stats_t st = stats_of(heap);
    stats_match_heap(heap, &st, 0);
    CHECK_EQ(st.events, 0);
    CHECK_EQ(nmm_validate(heap), 0);
    printf("ok forks=%d allocs=%llu\n", forks, (unsigned long long)st.allocs);
    nmm_heap_destroy(heap);
    return 0;
}
