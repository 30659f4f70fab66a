/* malloc_shim.c — the malloc family on NMM's default heap; linked only into
 * libnmm_preload.so. Owns nothing but the cached default-heap pointer (declared
 * in shim.h for the other *_shim.c files). Must never look up the "real" malloc (no dlsym: NMM gets its memory from mmap, so there is
 * no recursion to break). Any thread, from the first malloc of the dynamic
 * loader's clients to the last destructor.
 */
#include "shim.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

/* Its presence tells events.c to echo detections to stderr in record mode. */
const int malloc_shim_linked __attribute__((visibility("hidden"))) = 1;

nmm_heap_t *shim_heap;
bool shim_tracking;

NMM_NOINLINE nmm_heap_t *shim_heap_slow(void)
{
    nmm_heap_t *h = nmm_default_heap();
    __atomic_store_n(&shim_tracking, heap_config(h)->tracking != 0, __ATOMIC_RELAXED);
    __atomic_store_n(&shim_heap, h, __ATOMIC_RELEASE);
    return h;
}

SHIM_API void *malloc(size_t size)
{
    nmm_heap_t *h = shim_get();
    void *p = nmm_alloc(h, size, shim_site(__builtin_return_address(0)));
    shim_after();
    return p;
}

SHIM_API void free(void *ptr)
{
    if (!ptr)
        return;
    nmm_heap_t *h = shim_get();
    events_caller_pc = (uintptr_t)__builtin_return_address(0);
    int saved = errno; /* free must not change errno (POSIX 2024) */
    nmm_free(h, ptr, 0);
    errno = saved;
    events_caller_pc = 0;
    shim_after();
}

SHIM_API void *calloc(size_t count, size_t size)
{
    nmm_heap_t *h = shim_get();
    void *p = nmm_calloc(h, count, size, shim_site(__builtin_return_address(0)));
    shim_after();
    return p;
}

SHIM_API void *realloc(void *ptr, size_t size)
{
    nmm_heap_t *h = shim_get();
    void *caller = __builtin_return_address(0);
    events_caller_pc = (uintptr_t)caller;
    void *p = nmm_realloc(h, ptr, size, shim_site(caller));
    events_caller_pc = 0;
    shim_after();
    return p;
}

SHIM_API void *reallocarray(void *ptr, size_t count, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    nmm_heap_t *h = shim_get();
    void *caller = __builtin_return_address(0);
    events_caller_pc = (uintptr_t)caller;
    void *p = nmm_realloc(h, ptr, total, shim_site(caller));
    events_caller_pc = 0;
    shim_after();
    return p;
}

static bool is_pow2(size_t x)
{
    return x && !(x & (x - 1));
}

static void *shim_aligned(size_t alignment, size_t size, void *caller)
{
    nmm_heap_t *h = shim_get();
    if (alignment < 16)
        alignment = 16; /* every NMM block is 16-byte aligned anyway */
    void *p = nmm_aligned_alloc(h, alignment, size, shim_site(caller));
    shim_after();
    return p;
}

SHIM_API int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (!is_pow2(alignment) || alignment % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    errno = 0;
    void *p = shim_aligned(alignment, size, __builtin_return_address(0));
    int err = errno;
    errno = saved;
    if (!p)
        return err == EINVAL ? EINVAL : ENOMEM;
    *out = p;
    return 0;
}

SHIM_API void *aligned_alloc(size_t alignment, size_t size)
{
    if (!is_pow2(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return shim_aligned(alignment, size, __builtin_return_address(0));
}

/* glibc's memalign: an alignment that is not a power of two is rounded up to
 * one; one above SIZE_MAX / 2 + 1 cannot be. */
SHIM_API void *memalign(size_t alignment, size_t size)
{
    if (alignment > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!is_pow2(alignment) && alignment > 16)
        alignment = (size_t)1 << (64 - __builtin_clzll(alignment));
    return shim_aligned(alignment, size, __builtin_return_address(0));
}

SHIM_API void *valloc(size_t size)
{
    return shim_aligned(os_page_size(), size, __builtin_return_address(0));
}

SHIM_API void *pvalloc(size_t size)
{
    size_t page = os_page_size();
    size_t rounded = size ? (size + page - 1) & ~(page - 1) : page;
    if (rounded < size) {
        errno = ENOMEM;
        return NULL;
    }
    return shim_aligned(page, rounded, __builtin_return_address(0));
}

/* A pointer that is not a live block's start is reported (invalid_pointer) and
 * gets 0, instead of an answer about whatever memory it points into. */
SHIM_API size_t malloc_usable_size(void *ptr)
{
    if (!ptr)
        return 0;
    nmm_heap_t *h = shim_get();
    events_caller_pc = (uintptr_t)__builtin_return_address(0);
    size_t n = nmm_usable_size_checked(h, ptr, 0);
    events_caller_pc = 0;
    shim_after();
    return n;
}

/* Options are read here, before main and before any other constructor of the
 * program, so `NMM_OPTIONS=help` and option errors (strict=1: exit 1) appear in a
 * program that never allocates too. Usually the loader's own mallocs got here
 * first and this only reads the published heap. */
__attribute__((constructor)) static void shim_init(void)
{
    (void)shim_get();
}

/* Detections still waiting to be written when the process ends (the leak report
 * of the default heap comes from leakcheck.c's destructor). */
__attribute__((destructor)) static void shim_exit_flush(void)
{
    shim_after();
}
