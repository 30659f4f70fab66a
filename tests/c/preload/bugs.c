/* bugs.c — the buggy program of issue 12, for running under libnmm_preload.so:
 *   bugs overflow | double_free | use_after_free | leaks | clean
 * overflow: a 24-byte block written one byte past its end, then freed;
 * double_free: a 48-byte block freed twice; use_after_free: a freed 48-byte
 * block written at bytes 8..11, then the quarantine is cycled so the damage is
 * found; leaks: one block kept by a global (still reachable) and one lost.
 * Built with -g by the tests, which find the lines below by their "@" markers
 * and check that every report names them. Prints "survived" when it goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *kept_by_global;

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

/* Overwrite the dead stack below main's frame, where the conservative leak scan
 * at exit would otherwise still find the lost pointer. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char dead[64 * 1024];
    memset((char *)dead, 0, sizeof dead);
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
        for (int i = 0; i < 200000; i++)
            release(make_block(4096)); /* pushes the block out of the quarantine */
    } else if (strcmp(what, "leaks") == 0) {
        kept_by_global = make_kept(); /* @call-kept */
        char *lost = make_lost();     /* @call-lost */
        lost[0] = 1;
        lost = NULL;
        scrub_stack();
    } else if (strcmp(what, "clean") != 0) {
        fprintf(stderr, "usage: bugs overflow|double_free|use_after_free|leaks|clean\n");
        return 2;
    }
    printf("survived\n");
    return 0;
}
