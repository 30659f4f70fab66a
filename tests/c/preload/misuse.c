/* misuse.c — one deliberate heap misuse through plain malloc/free, for running
 * under libnmm_preload.so:
 *   misuse double_free | overflow | invalid_free | realloc_freed | leak
 *          | exit_overflow | exit_uaf
 * (the exit_ ones damage a block and exit without freeing or allocating again:
 * only the exit check can tell)
 * Each allocation and free happens in its own named function, so the report can
 * be checked for both sites. Prints "survived" when the process goes on (which
 * then exits with NMM's exitcode, 23 by default, for the recorded misuse).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) char *make_block(size_t n)
{
    return malloc(n);
}

__attribute__((noinline)) void release_block(void *p)
{
    free(p);
}

__attribute__((noinline)) void *resize_block(void *p, size_t n)
{
    return realloc(p, n);
}

__attribute__((noinline)) void *leaky_function(size_t n)
{
    void *p = malloc(n);
    memset(p, 1, n);
    return p;
}

/* Overwrite the dead stack below main's frame, where the leak scan at exit
 * would otherwise still find the lost pointers (a conservative scan's limit). */
__attribute__((noinline)) void scrub_stack(void)
{
    volatile char dead[64 * 1024];
    memset((char *)dead, 0, sizeof dead);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "double_free") == 0) {
        char *p = make_block(48);
        strcpy(p, "hello");
        release_block(p);
        release_block(p);
    } else if (strcmp(what, "overflow") == 0) {
        char *p = make_block(40);
        memset(p, 'A', 40);
        /* one byte past the end, flipped: a fixed byte would equal the keyed
         * canary's byte one run in 256 and the overflow would go unseen */
        p[40] = (char)~p[40];
        release_block(p);
    } else if (strcmp(what, "invalid_free") == 0) {
        char local[32];
        release_block(local + 8);
    } else if (strcmp(what, "realloc_freed") == 0) {
        char *p = make_block(64);
        release_block(p);
        if (resize_block(p, 128) != NULL)
            return 3; /* a freed block must not be resized */
    } else if (strcmp(what, "exit_overflow") == 0) {
        char *p = make_block(40);
        memset(p, 'A', 40);
        p[40] = (char)~p[40];
        printf("survived\n");
        return 0;
    } else if (strcmp(what, "exit_uaf") == 0) {
        char *p = make_block(40);
        release_block(p);
        p[3] = (char)~p[3];
        printf("survived\n");
        return 0;
    } else if (strcmp(what, "leak") == 0) {
        for (int i = 0; i < 3; i++)
            leaky_function(1000);
        char *q = make_block(16);
        release_block(q);
        scrub_stack();
    } else {
        fprintf(stderr, "usage: misuse double_free|overflow|invalid_free|realloc_freed|leak|"
                        "exit_overflow|exit_uaf\n");
        return 2;
    }
    /* The heap must still work after the misuse. */
    for (int i = 0; i < 1000; i++) {
        char *r = make_block((size_t)(i % 200) + 1);
        memset(r, i & 0xff, (size_t)(i % 200) + 1);
        release_block(r);
    }
    printf("survived\n");
    return 0;
}
