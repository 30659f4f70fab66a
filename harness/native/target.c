/* target.c — the table of function pointers through which the driver calls the
 * allocator under test: an NMM heap, or the process's malloc family (so that an
 * LD_PRELOAD'ed allocator is what runs). Must not add checks of its own; any thread. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

/* ---- NMM heap: site 0 (no tracking: nothing would use it) */
static void *nmm_t_alloc(nmm_heap_t *h, size_t n) { return nmm_alloc(h, n, 0); }
static void *nmm_t_calloc(nmm_heap_t *h, size_t c, size_t n) { return nmm_calloc(h, c, n, 0); }
static void *nmm_t_realloc(nmm_heap_t *h, void *p, size_t n) { return nmm_realloc(h, p, n, 0); }
static void *nmm_t_aligned(nmm_heap_t *h, size_t a, size_t n)
{
    return nmm_aligned_alloc(h, a, n, 0);
}
static int nmm_t_free(nmm_heap_t *h, void *p) { return (int)nmm_free(h, p, 0); }
static int nmm_t_last_status(void) { return (int)nmm_last_status(); }
static void *nmm_t_alloc_as(nmm_heap_t *h, int family, size_t n, size_t align)
{
    return nmm_alloc_as(h, (nmm_family_t)family, n, align, 0);
}
static int nmm_t_free_as(nmm_heap_t *h, void *p, int family, size_t n, size_t align)
{
    return (int)nmm_free_as(h, p, (nmm_family_t)family, n, align, 0);
}
static size_t nmm_t_copy(nmm_heap_t *h, int how, void *dst, const void *src, size_t n)
{
    (void)how; /* one checked routine: a memset is a copy of a buffer of its byte */
    return nmm_copy(h, dst, src, n, 0);
}

/* ---- NMM heap with tracking: each call's site is the driver line that made it (the
 * return address, as the malloc replacement does), so leak reports group blocks by
 * where the workload or a fault allocated them instead of one unknown site. noinline:
 * the return address must be the driver's call, not a thunk inlined away. */
#define CALLER __builtin_return_address(0)
static __attribute__((noinline)) void *nmm_s_alloc(nmm_heap_t *h, size_t n)
{
    return nmm_alloc(h, n, nmm_site_for_pc(CALLER));
}
static __attribute__((noinline)) void *nmm_s_calloc(nmm_heap_t *h, size_t c, size_t n)
{
    return nmm_calloc(h, c, n, nmm_site_for_pc(CALLER));
}
static __attribute__((noinline)) void *nmm_s_realloc(nmm_heap_t *h, void *p, size_t n)
{
    return nmm_realloc(h, p, n, nmm_site_for_pc(CALLER));
}
static __attribute__((noinline)) void *nmm_s_aligned(nmm_heap_t *h, size_t a, size_t n)
{
    return nmm_aligned_alloc(h, a, n, nmm_site_for_pc(CALLER));
}
static __attribute__((noinline)) int nmm_s_free(nmm_heap_t *h, void *p)
{
    return (int)nmm_free(h, p, nmm_site_for_pc(CALLER));
}

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

/* memcpy & co. through volatile pointers: the compiler must call the process's
 * routine (the preload library's checked one, a peer's, libc's), not inline it. */
static void *(*volatile libc_memcpy)(void *, const void *, size_t) = memcpy;
static void *(*volatile libc_memmove)(void *, const void *, size_t) = memmove;
static void *(*volatile libc_memset)(void *, int, size_t) = memset;

static size_t malloc_t_copy(nmm_heap_t *h, int how, void *dst, const void *src, size_t n)
{
    (void)h;
    if (how == FV_MEMSET)
        libc_memset(dst, *(const unsigned char *)src, n);
    else if (how == FV_MEMMOVE)
        libc_memmove(dst, src, n);
    else
        libc_memcpy(dst, src, n);
    return n;
}

/* The process's C++ operators (nothrow forms: a C caller cannot catch bad_alloc),
 * resolved by target_cxx_open. */
static struct {
    void *(*new_)(size_t, const void *);                 /* new(size, nothrow) */
    void *(*new_array)(size_t, const void *);            /* new[](size, nothrow) */
    void *(*new_aligned)(size_t, size_t, const void *);  /* new(size, align, nothrow) */
    void (*delete_)(void *);
    void (*delete_array)(void *);
    void (*delete_sized)(void *, size_t);
    void (*delete_aligned)(void *, size_t);              /* delete(p, align) */
    void (*delete_sized_aligned)(void *, size_t, size_t);
} cxx;
static const char cxx_nothrow = 0; /* std::nothrow_t is empty: any address does */

static void *malloc_t_alloc_as(nmm_heap_t *h, int family, size_t n, size_t align)
{
    (void)h;
    if (family == NMM_FAMILY_MALLOC)
        return align ? malloc_t_aligned(h, align, n) : libc_malloc(n);
    if (align)
        return cxx.new_aligned(n, align, &cxx_nothrow);
    return family == NMM_FAMILY_NEW_ARRAY ? cxx.new_array(n, &cxx_nothrow)
                                          : cxx.new_(n, &cxx_nothrow);
}

static int malloc_t_free_as(nmm_heap_t *h, void *p, int family, size_t n, size_t align)
{
    (void)h;
    if (family == NMM_FAMILY_MALLOC)
        libc_free(p);
    else if (family == NMM_FAMILY_NEW_ARRAY)
        cxx.delete_array(p);
    else if (align && n != NMM_UNSIZED)
        cxx.delete_sized_aligned(p, n, align);
    else if (align)
        cxx.delete_aligned(p, align);
    else if (n != NMM_UNSIZED)
        cxx.delete_sized(p, n);
    else
        cxx.delete_(p);
    return NMM_OK;
}

bool target_cxx_open(target_t *t, char *err, size_t err_len)
{
    if (target_is_nmm(t))
        return true;
    /* RTLD_DEFAULT finds a preloaded library's operators first; libstdc++ (loaded
     * here when the program has none) supplies them otherwise, over the malloc
     * family of whatever is preloaded */
    if (!dlsym(RTLD_DEFAULT, "_ZdlPv") && !dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(err, err_len, "not applicable: no C++ operator new/delete in this process "
                 "and libstdc++.so.6 does not load (%s)", dlerror());
        return false;
    }
    static const char *const names[] = {
        "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdlPvSt11align_val_t", "_ZdlPvmSt11align_val_t"};
    void *found[8];
    for (int i = 0; i < 8; i++)
        if (!(found[i] = dlsym(RTLD_DEFAULT, names[i]))) {
            snprintf(err, err_len, "not applicable: the process has no %s", names[i]);
            return false;
        }
    /* object to function pointers: POSIX guarantees dlsym's results convert */
    memcpy(&cxx.new_, &found[0], sizeof found[0]);
    memcpy(&cxx.new_array, &found[1], sizeof found[1]);
    memcpy(&cxx.new_aligned, &found[2], sizeof found[2]);
    memcpy(&cxx.delete_, &found[3], sizeof found[3]);
    memcpy(&cxx.delete_array, &found[4], sizeof found[4]);
    memcpy(&cxx.delete_sized, &found[5], sizeof found[5]);
    memcpy(&cxx.delete_aligned, &found[6], sizeof found[6]);
    memcpy(&cxx.delete_sized_aligned, &found[7], sizeof found[7]);
    return true;
}

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
        t->alloc_as = malloc_t_alloc_as;
        t->free_as = malloc_t_free_as;
        t->copy = malloc_t_copy;
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
    bool sites = cfg.tracking != 0;
    t->alloc = sites ? nmm_s_alloc : nmm_t_alloc;
    t->calloc = sites ? nmm_s_calloc : nmm_t_calloc;
    t->realloc = sites ? nmm_s_realloc : nmm_t_realloc;
    t->aligned_alloc = sites ? nmm_s_aligned : nmm_t_aligned;
    t->free = sites ? nmm_s_free : nmm_t_free;
    t->last_status = nmm_t_last_status;
    t->alloc_as = nmm_t_alloc_as;
    t->free_as = nmm_t_free_as;
    t->copy = nmm_t_copy;
    /* blocks carry a header with the requested size at standard and above, or with
     * tracking; level off keeps none, and a walk then reports usable sizes */
    t->exact_sizes = cfg.level >= NMM_LEVEL_STANDARD || cfg.tracking;
    t->level = (int)cfg.level;
    return true;
}

void target_close(target_t *t)
{
    if (t->heap && !t->is_default)
        nmm_heap_destroy(t->heap);
    t->heap = NULL;
}
