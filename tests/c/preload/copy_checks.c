/* copy_checks.c — bulk copies past heap blocks, for running under
 * libnmm_preload.so (checked copies, copy_shim.c):
 *   copy_checks CASE
 * CASE is one of the misuses below (each copies through the named call, past
 * or before a block made by make_block) or "clean" (every call at the exact
 * edges of blocks of many sizes, from and to the stack too: nothing to report).
 * Prints how many of the block's bytes the call changed, then "survived". Built with
 * -fno-builtin -O0, so each call reaches the library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dl);
char *__strcpy_chk(char *d, const char *s, size_t dl);

__attribute__((noinline)) char *make_block(size_t n)
{
    char *p = malloc(n);
    memset(p, '.', n);
    return p;
}

__attribute__((noinline)) void release_block(void *p)
{
    free(p);
}

/* A block of each kind the check tells apart by its state: aligned (its user
 * pointer is not the slot's first bytes) and from operator new (the preloaded
 * library's, found at run time: this program does not link libstdc++). */
__attribute__((noinline)) char *make_aligned(size_t align, size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, align, n) != 0)
        abort();
    memset(p, '.', n);
    return p;
}

__attribute__((noinline)) char *make_new(size_t n)
{
    void *(*op_new)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
    if (!op_new)
        abort();
    char *p = op_new(n);
    memset(p, '.', n);
    return p;
}

static void release_new(void *p)
{
    void (*op_delete)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "_ZdlPv");
    op_delete(p);
}

/* How many bytes of the n-byte block a call changed (make_block fills with '.'). */
static size_t changed(const char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] != '.';
    return k;
}

static const char LONG[] = "hello world, this is far too long"; /* 33 + 1 bytes */

static int clean(void)
{
    static const size_t sizes[] = {1, 7, 8, 15, 16, 24, 100, 1000, 4000, 40000};
    char stack[64];
    memset(stack, 's', sizeof stack);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        char *a = make_block(n), *b = make_block(n);
        memset(a, 'a', n);
        memcpy(b, a, n);
        memmove(b, a, n);
        memmove(a + 1, a, n - 1);
        memcpy(b + n - 1, a, 1);
        memcpy(stack, a, n < sizeof stack ? n : sizeof stack);
        memcpy(a, stack, n < sizeof stack ? n : sizeof stack);
        memset(b + n, 0, 0);  /* nothing to copy: at the end, in the head, from past it */
        memcpy(b + n, a, 0);
        memcpy(b - 4, a + n + 4, 0);
        memmove(b - 8, a, 0);
        memcpy(stack, a + n - 1, 1);  /* reading up to the last byte */
        a[n - 1] = '\0';
        strcpy(b, a);
        stpcpy(b, a);
        strncpy(b, a, n);
        b[0] = '\0';
        strcat(b, a);
        __memcpy_chk(b, a, n, n);
        __strcpy_chk(b, a, n);
        char *al = make_aligned(64, n), *nw = make_new(n);
        memcpy(al, a, n);
        memcpy(nw, al, n);
        memmove(al + n - 1, nw, 1);
        memset(nw, 0, n);
        release_block(al);
        release_new(nw);
        release_block(a);
        release_block(b);
    }
    printf("clean\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "clean") == 0)
        return clean();
    char *src = make_block(200);
    memset(src, 'x', 200);
    src[199] = '\0';
    char *p = NULL;
    size_t n = 0;
    if (strcmp(what, "memcpy") == 0) {
        p = make_block(n = 100);
        memcpy(p, src, 108);
    } else if (strcmp(what, "memcpy_src") == 0) {
        char *small = make_block(50);
        memset(small, 'x', 50);
        p = make_block(n = 100);
        memcpy(p, small, 60);
        release_block(small);
    } else if (strcmp(what, "memcpy_src_same_slab") == 0) {
        /* Source and destination blocks of one size (one slab), the source read past. */
        char *other = make_block(100);
        memset(other, 'x', 100);
        p = make_block(n = 100);
        memcpy(p, other + 8, 100);
        release_block(other);
    } else if (strcmp(what, "memcpy_src_head") == 0) {
        /* The source starts in a block's head: the fit counts it in the block before
         * (past that one's size), and the whole check names the block it starts. */
        char *other = make_block(100);
        p = make_block(n = 100);
        memcpy(p, other - 4, 8);
        release_block(other);
    } else if (strcmp(what, "memcpy_wrap") == 0) {
        /* A length that wraps the address space: longer than any block, never summed. */
        static char outside[16];
        p = make_block(n = 100);
        memcpy(p + 1, outside, (size_t)-1);
    } else if (strcmp(what, "memcpy_mid") == 0) {
        p = make_block(n = 100);
        memcpy(p + 99, src, 2);
    } else if (strcmp(what, "memcpy_aligned") == 0) {
        p = make_aligned(64, n = 100);
        memcpy(p, src, 108);
    } else if (strcmp(what, "memcpy_aligned_stale") == 0) {
        /* The slot's first word, where a plain block's header sits, reads as a big
         * size (a stale header of the slot's last plain block would): the copy is
         * still measured against the aligned block's own header. */
        p = make_aligned(64, n = 100);
        for (volatile char *slot = p - 56; slot < p - 48; slot++)  /* no checked call */
            *slot = (char)0xff;
        memcpy(p, src, 108);
    } else if (strcmp(what, "memcpy_at_end") == 0) {
        p = make_block(n = 100);
        memcpy(p + 100, src, 1);
    } else if (strcmp(what, "memmove_same") == 0) {
        p = make_block(n = 100);  /* within one block, overlapping, the destination past it */
        memset(p, 'x', 10);
        memmove(p + 10, p, 95);
    } else if (strcmp(what, "memmove_same_src") == 0) {
        p = make_block(n = 100);  /* within one block, overlapping, the source past it */
        memset(p + 90, 'x', 10);
        memmove(p, p + 10, 95);
    } else if (strcmp(what, "freed") == 0) {
        /* A freed block is no copy's to report: read within its old size (the
         * inline fit) and past it (the whole check, which finds it not live). */
        char *gone = make_block(100);
        release_block(gone);
        p = make_block(n = 200);
        memcpy(p, gone, 100);
        memcpy(p, gone, 108);
        printf("changed %zu\n", changed(p, n) > 0);
        release_block(p);
        release_block(src);
        printf("survived\n");
        return 0;
    } else if (strcmp(what, "memcpy_new") == 0) {
        p = make_new(n = 100);
        memcpy(p, src, 108);
    } else if (strcmp(what, "memmove") == 0) {
        p = make_block(n = 100);
        memmove(p + 50, src, 58);
    } else if (strcmp(what, "memset") == 0) {
        p = make_block(n = 100);
        memset(p, 'x', 101);
    } else if (strcmp(what, "memset_under") == 0) {
        p = make_block(n = 100);
        memset(p - 4, 'x', 20);
    } else if (strcmp(what, "strcpy") == 0) {
        p = make_block(n = 24);
        strcpy(p, LONG);
    } else if (strcmp(what, "stpcpy") == 0) {
        p = make_block(n = 24);
        stpcpy(p, LONG);
    } else if (strcmp(what, "strncpy") == 0) {
        p = make_block(n = 24);
        strncpy(p, "xxx", 30);
    } else if (strcmp(what, "strcat") == 0) {
        p = make_block(n = 24);
        strcpy(p, "xxxx");
        strcat(p, LONG);
    } else if (strcmp(what, "memcpy_chk") == 0) {
        p = make_block(n = 100);
        __memcpy_chk(p, src, 108, (size_t)-1);
    } else if (strcmp(what, "strcpy_chk") == 0) {
        p = make_block(n = 24);
        __strcpy_chk(p, LONG, (size_t)-1);
    } else {
        fprintf(stderr, "copy_checks: unknown case %s\n", what);
        return 2;
    }
    printf("changed %zu\n", changed(p, n));
    if (strcmp(what, "memcpy_new") == 0)
        release_new(p);
    else
        release_block(p);
    release_block(src);
    printf("survived\n");
    return 0;
}
