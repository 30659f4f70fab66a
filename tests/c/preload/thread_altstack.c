/* thread_altstack.c — does every thread that allocates get an alternate signal
 * stack (for NMM's SIGSEGV handler) under libnmm_preload.so? Prints, per thread,
 * "thread N: altstack yes|no" after its first malloc.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void *worker(void *arg)
{
    void *p = malloc(32);
    stack_t cur;
    int on = sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_size >= 16384;
    printf("thread %ld: altstack %s\n", (long)(size_t)arg, on ? "yes" : "no");
    free(p);
    return NULL;
}

int main(void)
{
    for (long i = 1; i <= 4; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, (void *)i);
        pthread_join(t, NULL);
        fflush(stdout);
    }
    return 0;
}
