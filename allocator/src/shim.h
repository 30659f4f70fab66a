/* shim.h — what the preload library's entry points share (the *_shim.c files,
 * linked only into libnmm_preload.so: malloc_shim.c the C malloc family,
 * new_shim.c C++'s operator new and delete): the default heap, the caller's site
 * and the deferred echo of detections. Any thread.
 */
#ifndef NMM_SHIM_H
#define NMM_SHIM_H

#include "internal.h"

#define SHIM_API __attribute__((visibility("default")))

extern nmm_heap_t *shim_heap;  /* the default heap, once known (malloc_shim.c) */
extern bool shim_tracking;     /* default heap records sites: name callers by address */
nmm_heap_t *shim_heap_slow(void);

static inline nmm_heap_t *shim_get(void)
{
    nmm_heap_t *h = __atomic_load_n(&shim_heap, __ATOMIC_ACQUIRE);
    return likely(h) ? h : shim_heap_slow();
}

static inline nmm_site_t shim_site(void *caller)
{
    /* read after shim_get's acquire of shim_heap, which was published after it */
    return unlikely(__atomic_load_n(&shim_tracking, __ATOMIC_RELAXED))
               ? track_site_for_pc((uintptr_t)caller)
               : 0;
}

/* Detections found inside the heap are written out here, outside every heap lock. */
static inline void shim_after(void)
{
    if (unlikely(events_pending))
        events_flush_pending();
}

#endif /* NMM_SHIM_H */
