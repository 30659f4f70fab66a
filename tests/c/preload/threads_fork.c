/* threads_fork.c — malloc across threads made before and after the preload's
 * first use, cross-thread frees, and fork() in the middle of it: the child
 * allocates and frees too. Prints a checksum that must not depend on the
 * allocator; exit status 0 when every block kept its contents.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 20000

static void *handoff[THREADS][64];
static int bad;

static uint64_t next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t s = (uint64_t)id + 1, sum = 0;
    void *live[32] = {0};
    size_t sizes[32] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int k = (int)(next(&s) % 32);
        if (live[k]) {
            unsigned char *p = live[k];
            for (size_t j = 0; j < sizes[k]; j++)
                if (p[j] != (unsigned char)(k + id))
                    __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
            /* every 4th block goes to the next thread's hand-off slot */
            if ((i & 3) == 0) {
                void *old = __atomic_exchange_n(&handoff[(id + 1) % THREADS][k], p,
                                                __ATOMIC_ACQ_REL);
                free(old);
            } else {
                free(p);
            }
        }
        sizes[k] = (size_t)(next(&s) % 3000) + 1;
        live[k] = malloc(sizes[k]);
        memset(live[k], k + id, sizes[k]);
        sum += sizes[k];
    }
    for (int k = 0; k < 32; k++)
        free(live[k]);
    return (void *)(uintptr_t)(sum & 0xffff);
}

int main(void)
{
    pthread_t t[THREADS];
    uint64_t total = 0;
    /* threads created first, then a fork while they run, then more threads */
    for (int i = 0; i < THREADS / 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    pid_t child = fork();
    if (child == 0) {
        void *blocks[100];
        for (int i = 0; i < 100; i++) {
            blocks[i] = malloc((size_t)i * 10 + 1);
            memset(blocks[i], 7, (size_t)i * 10 + 1);
        }
        for (int i = 0; i < 100; i++)
            free(blocks[i]);
        _exit(0);
    }
    for (int i = THREADS / 2; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (uintptr_t)r;
    }
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < 64; k++)
            free(handoff[i][k]);
    int status = 0;
    waitpid(child, &status, 0);
    printf("checksum %llu child %d\n", (unsigned long long)total,
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return bad || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
