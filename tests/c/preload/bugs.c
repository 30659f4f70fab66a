/* bugs.c — the buggy program of issue 12, for running under libnmm_preload.so:
 *   bugs overflow | double_free | use_after_free | thread_double_free | leaks | roots |
 *        self_ref | clean
 * overflow: a 24-byte block written one byte past its end, then freed;
 * double_free: a 48-byte block freed twice; use_after_free: a freed 48-byte
 * block written at bytes 8..11, then the quarantine is cycled so the damage is
 * found; thread_double_free: one thread allocates, another frees, main frees
 * again; leaks: one block kept by a global (still reachable) and one lost;
 * roots: blocks kept only by a global, a thread-local variable and another
 * thread's stack (that thread still running at exit), and one lost; self_ref: a
 * lost 100 KiB block (read by the scan through process_vm_readv) that points
 * into itself and to a small block only it holds (lost indirectly).
 * Built with -g by the tests, which find the lines below by their "@" markers
 * and check that every report names them. Prints "survived" when it goes on.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *kept_by_global;
static __thread char *kept_by_tls;

__attribute__((noinline)) static char *make_block(size_t n)
{
    return malloc(n); /* @alloc */
}

__attribute__((noinline)) static void release(char *p)
{
    free(p); /* @free */
}

__attribute__((noinline)) static char *make_kept(void)
{
    return malloc(100); /* @alloc-kept */
}

__attribute__((noinline)) static char *make_lost(void)
{
    return malloc(40); /* @alloc-lost */
}

__attribute__((noinline)) static char **make_big(void)
{
    return malloc(100 * 1024); /* @alloc-big */
}

__attribute__((noinline)) static char *make_tls(void)
{
    return malloc(200); /* @alloc-tls */
}

__attribute__((noinline)) static char *make_on_stack(void)
{
    return malloc(300); /* @alloc-stack */
}

/* Overwrite the dead stack below main's frame, where the conservative leak scan
 * at exit would otherwise still find the lost pointer. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char dead[64 * 1024];
    memset((char *)dead, 0, sizeof dead);
}

static char *shared;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int stage;

static void *allocator_thread(void *arg)
{
    (void)arg;
    shared = make_block(64); /* @thread-alloc */
    return NULL;
}

static void *freeing_thread(void *arg)
{
    (void)arg;
    release(shared); /* @thread-free */
    return NULL;
}

/* Keeps a block in a local variable only, says so, and blocks until the end. */
static void *holding_thread(void *arg)
{
    (void)arg;
    char *volatile mine = make_on_stack();
    mine[0] = 1;
    pthread_mutex_lock(&lock);
    stage = 1;
    pthread_cond_signal(&cond);
    while (stage != 2)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return (void *)mine;
}

static void run_thread(void *(*fn)(void *))
{
    pthread_t t;
    pthread_create(&t, NULL, fn, NULL);
    pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "overflow") == 0) {
        char *p = make_block(24); /* @call-alloc-overflow */
        memset(p, 'a', 24);
        p[24] = (char)~p[24];     /* @bug-overflow: flipped, never equal to the canary */
        release(p);               /* @detect-overflow */
    } else if (strcmp(what, "double_free") == 0) {
        char *p = make_block(48); /* @call-alloc-double */
        release(p);               /* @first-free */
        release(p);               /* @bug-double-free */
    } else if (strcmp(what, "use_after_free") == 0) {
        char *p = make_block(48); /* @call-alloc-uaf */
        release(p);               /* @free-uaf */
        memset(p + 8, 'x', 4);    /* @bug-uaf */
        for (int i = 0; i < 2000; i++)
            release(make_block(64)); /* pushes the block out of the quarantine */
    } else if (strcmp(what, "thread_double_free") == 0) {
        run_thread(allocator_thread);
        run_thread(freeing_thread);
        release(shared); /* @bug-thread-double-free */
    } else if (strcmp(what, "leaks") == 0) {
        kept_by_global = make_kept(); /* @call-kept */
        char *lost = make_lost();     /* @call-lost */
        lost[0] = 1;
        lost = NULL;
        scrub_stack();
    } else if (strcmp(what, "self_ref") == 0) {
        char **big = make_big();
        memset(big, 0, 100 * 1024);
        big[0] = (char *)big + 64; /* into itself: keeps nothing alive */
        big[1] = make_lost();      /* held by the lost block only */
        big = NULL;
        scrub_stack();
    } else if (strcmp(what, "roots") == 0) {
        kept_by_global = make_kept();
        kept_by_tls = make_tls();
        pthread_t t;
        pthread_create(&t, NULL, holding_thread, NULL);
        pthread_mutex_lock(&lock);
        while (stage != 1)
            pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        char *lost = make_lost();
        lost[0] = 1;
        lost = NULL;
        scrub_stack();
        printf("survived\n");
        fflush(stdout);
        exit(0); /* the holding thread still runs: its stack is a root */
    } else if (strcmp(what, "clean") != 0) {
        fprintf(stderr, "usage: bugs overflow|double_free|use_after_free|thread_double_free|"
                        "leaks|roots|self_ref|clean\n");
        return 2;
    }
    printf("survived\n");
    return 0;
}
