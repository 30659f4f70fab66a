/* target.c — the table of function pointers through which the driver calls the
 * allocator under test: an NMM heap, or the process's malloc family (so that an
 * LD_PRELOAD'ed allocator is what runs). Must not add checks of its own; any thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

/* ---- NMM heap: site 0 (the driver does not track sites) */
static void *nmm_t_alloc(nmm_heap_t *h, size_t n) { return nmm_alloc(h, n, 0); }
static void *nmm_t_calloc(nmm_heap_t *h, size_t c, size_t n) { return nmm_calloc(h, c, n, 0); }
static void *nmm_t_realloc(nmm_heap_t *h, void *p, size_t n) { return nmm_realloc(h, p, n, 0); }
static void *nmm_t_aligned(nmm_heap_t *h, size_t a, size_t n)
{
    return nmm_aligned_alloc(h, a, n, 0);
}
static int nmm_t_free(nmm_heap_t *h, void *p) { return (int)nmm_free(h, p, 0); }
static int nmm_t_last_status(void) { return (int)nmm_last_status(); }

/* ---- the process's malloc family. volatile pointers keep the compiler from
 * pairing malloc with free and deleting both. */
static void *(*volatile libc_malloc)(size_t) = malloc;
static void (*volatile libc_free)(void *) = free;
static void *(*volatile libc_calloc)(size_t, size_t) = calloc;
static void *(*volatile libc_realloc)(void *, size_t) = realloc;
/* posix_memalign, not C11 aligned_alloc: every peer (Electric Fence, DUMA) has it. */
static int (*volatile libc_posix_memalign)(void **, size_t, size_t) = posix_memalign;

static void *malloc_t_alloc(nmm_heap_t *h, size_t n)
{
    (void)h;
    return libc_malloc(n);
}
static void *malloc_t_calloc(nmm_heap_t *h, size_t c, size_t n)
{
    (void)h;
    return libc_calloc(c, n);
}
static void *malloc_t_realloc(nmm_heap_t *h, void *p, size_t n)
{
    (void)h;
    return libc_realloc(p, n);
}
static void *malloc_t_aligned(nmm_heap_t *h, size_t a, size_t n)
{
    (void)h;
    void *p = NULL;
    return libc_posix_memalign(&p, a, n) == 0 ? p : NULL;
}
static int malloc_t_free(nmm_heap_t *h, void *p)
{
    (void)h;
    libc_free(p);
    return NMM_OK;
}
static int malloc_t_last_status(void) { return NMM_E_NOMEM; }

bool target_open(target_t *t, const char *name, const char *nmm_options, char *err,
                 size_t err_len)
{
    memset(t, 0, sizeof *t);
    if (strcmp(name, "malloc") == 0) {
        t->name = "malloc";
        t->alloc = malloc_t_alloc;
        t->calloc = malloc_t_calloc;
        t->realloc = malloc_t_realloc;
        t->aligned_alloc = malloc_t_aligned;
        t->free = malloc_t_free;
        t->last_status = malloc_t_last_status;
        return true;
    }
    if (strcmp(name, "nmm") != 0 && strcmp(name, "nmm-default") != 0) {
        snprintf(err, err_len, "--target: expected 'nmm' or 'malloc', got '%s'", name);
        return false;
    }
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    char perr[512] = "";
    if (nmm_options && *nmm_options &&
        nmm_config_parse(&cfg, nmm_options, perr, sizeof perr) != NMM_OK) {
        snprintf(err, err_len, "--nmm-options: %s", perr[0] ? perr : "invalid option string");
        return false;
    }
    /* "nmm-default": the process's default heap, made from NMM_OPTIONS (exitleak.c set
     * it to the same options plus the exit report's process keys) */
    t->is_default = strcmp(name, "nmm-default") == 0;
    t->heap = t->is_default ? nmm_default_heap() : nmm_heap_create(&cfg);
    if (!t->heap) {
        snprintf(err, err_len, "nmm_heap_create failed (options '%s')",
                 nmm_options ? nmm_options : "");
        return false;
    }
    t->name = "nmm";
    t->alloc = nmm_t_alloc;
    t->calloc = nmm_t_calloc;
    t->realloc = nmm_t_realloc;
    t->aligned_alloc = nmm_t_aligned;
    t->free = nmm_t_free;
    t->last_status = nmm_t_last_status;
    /* blocks carry a header with the requested size at standard and above, or with
     * tracking; level off keeps none, and a walk then reports usable sizes */
    t->exact_sizes = cfg.level >= NMM_LEVEL_STANDARD || cfg.tracking;
    return true;
}

void target_close(target_t *t)
{
    if (t->heap && !t->is_default)
        nmm_heap_destroy(t->heap);
    t->heap = NULL;
}
