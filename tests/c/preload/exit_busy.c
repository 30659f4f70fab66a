/* exit_busy.c — main returns while other threads are still allocating, freeing,
 * reallocating and handing blocks to each other as fast as they can: the exit
 * check (exit_check=1) runs in the middle of that and must report nothing.
 *   exit_busy [THREADS]
 * Prints "done" from main just before it returns.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 64

static _Atomic(void *) shared[SLOTS];
static atomic_int started;

static void *churn(void *arg)
{
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    void *mine[SLOTS] = {0};
    atomic_fetch_add(&started, 1);
    for (;;) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned i = (unsigned)(x % SLOTS);
        size_t n = (size_t)((x >> 8) % 3000);
        if (mine[i]) {
            if (x & 0x100) {
                mine[i] = realloc(mine[i], n + 1);
                memset(mine[i], (int)(x & 0xff), n + 1);
                continue;
            }
            /* hand it to another thread now and then */
            void *theirs = (x & 0x200) ? atomic_exchange(&shared[i], mine[i]) : NULL;
            if (theirs)
                free(theirs);
            else if (!(x & 0x200))
                free(mine[i]);
            mine[i] = NULL;
        } else {
            mine[i] = malloc(n);
            memset(mine[i], (int)(x & 0xff), n);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    for (int t = 0; t < threads; t++) {
        pthread_t th;
        pthread_create(&th, NULL, churn, (void *)(uintptr_t)(t + 1));
        pthread_detach(th);
    }
    while (atomic_load(&started) < threads) {
    }
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    printf("done\n");
    fflush(stdout);
    return 0; /* exit() with every thread still at it */
}
