/* broken_malloc.c — a deliberately broken malloc for the driver's tests, preloaded in
 * front of glibc's: each mode is a bug an allocator could have, one the driver's
 * pattern checks must name by address. BROKEN_MALLOC=<mode>[:<n>]:
 *   twice    every 200th malloc hands out again a block that is still live
 *   scribble every 200th malloc flips byte n (default 100) of a live block >= n+1 bytes
 *   calloc   calloc leaves byte n (default 100) of a block >= n+1 bytes non-zero
 *   hang     the n-th malloc (default 100) never returns (a deadlocked allocator)
 *   wrap     calloc multiplies count by size without an overflow check, so a product
 *            past SIZE_MAX wraps to a small block (the classic calloc bug)
 * Not thread-safe beyond what the driver's --threads 1 needs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RING 64

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static int mode; /* 0 off, 1 twice, 2 scribble, 3 calloc, 4 hang, 5 wrap */
static size_t arg = 100;
static unsigned long count;
static void *live_ptr[RING];
static size_t live_size[RING];

static void init(void)
{
    if (real_malloc)
        return;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    const char *m = getenv("BROKEN_MALLOC");
    if (!m)
        return;
    mode = strncmp(m, "twice", 5) == 0 ? 1 : strncmp(m, "scribble", 8) == 0 ? 2
         : strncmp(m, "calloc", 6) == 0 ? 3 : strncmp(m, "hang", 4) == 0 ? 4
         : strncmp(m, "wrap", 4) == 0 ? 5 : 0;
    const char *c = strchr(m, ':');
    if (c)
        arg = strtoul(c + 1, NULL, 10);
}

static void remember(void *p, size_t n)
{
    for (int i = 0; i < RING; i++)
        if (!live_ptr[i]) {
            live_ptr[i] = p;
            live_size[i] = n;
            return;
        }
}

static void forget(void *p)
{
    for (int i = 0; i < RING; i++)
        if (live_ptr[i] == p)
            live_ptr[i] = NULL;
}

void *malloc(size_t n)
{
    init();
    if (mode == 4 && count + 1 == arg)
        for (;;)
            pause(); /* blocked for good, as on a lock nobody will release */
    if (++count % 200 == 0 && mode == 1) {
        for (int i = 0; i < RING; i++)
            if (live_ptr[i] && live_size[i] >= n)
                return live_ptr[i]; /* a live block, again */
    }
    if (count % 200 == 0 && mode == 2) {
        for (int i = 0; i < RING; i++)
            if (live_ptr[i] && live_size[i] > arg) {
                ((volatile unsigned char *)live_ptr[i])[arg] ^= 0x40;
                live_ptr[i] = NULL;
                break;
            }
    }
    void *p = real_malloc(n);
    if (p && count % 7 == 0)
        remember(p, n);
    return p;
}

void free(void *p)
{
    init();
    forget(p);
    real_free(p);
}

void *calloc(size_t c, size_t n)
{
    init();
    if (!real_calloc) /* dlsym itself may calloc before init finished */
        return NULL;
    if (mode == 5) { /* the product wraps: a block of its low bits */
        size_t wrapped = c * n;
        void *w = real_malloc(wrapped ? wrapped : 1);
        if (w)
            memset(w, 0, wrapped);
        return w;
    }
    void *p = real_calloc(c, n);
    if (p && mode == 3 && c * n > arg)
        ((unsigned char *)p)[arg] = 1;
    return p;
}
