/* stats.c — nmm_stats_get: merges the heap's atomic counters with the counters
 * still held in live thread caches. Must not allocate. Any thread; exact when no
 * other thread is allocating (takes the registry lock so caches cannot vanish
 * mid-sum, and each class lock for its slab counts).
 */
#include "core.h"

nmm_status_t nmm_stats_get(nmm_heap_t *h, nmm_stats_t *out)
{
    if (!h || !out || out->size < sizeof(nmm_stats_t)) {
        heap_set_status(NMM_E_INVALID_ARGUMENT);
        return NMM_E_INVALID_ARGUMENT;
    }
    uint64_t allocs[CORE_CLASSES] = {0}, frees[CORE_CLASSES] = {0}, cached[CORE_CLASSES] = {0};
    uint64_t cached_allocs = 0, misses = 0, tq_bytes = 0;
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    out->version = NMM_STATS_VERSION;

    pthread_mutex_lock(&tcache_registry_lock);
    tcache_sum(h, allocs, frees, cached, &cached_allocs, &misses, &tq_bytes);
    int64_t live_bytes = 0;
    uint64_t chunks = h->region_size >> CORE_CHUNK_SHIFT;
    for (int c = 0; c < CORE_CLASSES; c++) {
        sizeclass_pool_t *pool = &h->pools[c];
        nmm_class_stats_t *cs = &out->classes[c];
        heap_lock(h, &pool->lock);
        /* at most the class's slabs in all (at most the region's chunks, should the
         * count itself be damaged): a list with a cycle (a slab pushed twice) is
         * counted short, not looped on forever; nmm_validate names it */
        uint64_t free_blocks = 0, steps = pool->nslabs < chunks ? pool->nslabs : chunks;
        for (uint32_t l = 0; l <= CORE_LANES; l++)
            for (slab_t *s = l < CORE_LANES ? pool->partial[l] : pool->empty; s && steps;
                 s = s->next, steps--)
                free_blocks += slab_free_count(s);
        cs->slabs = pool->nslabs;
        pthread_mutex_unlock(&pool->lock);
        cs->block_size = sizeclass_table[c];
        /* frees read before allocs, and never more frees than allocs: a block
         * allocated and freed by other threads between the two reads would
         * otherwise make live negative (and wrap) */
        uint64_t pool_frees = __atomic_load_n(&pool->frees, __ATOMIC_RELAXED);
        cs->allocs = allocs[c] + __atomic_load_n(&pool->allocs, __ATOMIC_RELAXED);
        cs->frees = frees[c] + pool_frees;
        if (cs->frees > cs->allocs)
            cs->frees = cs->allocs;
        cs->live = cs->allocs - cs->frees;
        cs->free_blocks = free_blocks + cached[c];
        out->allocs += cs->allocs;
        out->frees += cs->frees;
        live_bytes += (int64_t)(cs->live * cs->block_size);
    }
    pthread_mutex_unlock(&tcache_registry_lock);
    out->class_count = CORE_CLASSES;

    uint64_t large_allocs = __atomic_load_n(&h->large_allocs, __ATOMIC_RELAXED);
    out->allocs += large_allocs;
    out->frees += __atomic_load_n(&h->large_frees, __ATOMIC_RELAXED);
    uint64_t zero_allocs, zero_frees;  /* paranoid's zero-size blocks */
    zero_counts(h, &zero_allocs, &zero_frees);
    out->allocs += zero_allocs;
    out->frees += zero_frees;
    out->live_blocks = out->allocs - out->frees;
    live_bytes += (int64_t)__atomic_load_n(&h->large_live_bytes, __ATOMIC_RELAXED);
    out->live_bytes = (uint64_t)live_bytes;
    /* Peak is raised at cache refills/flushes and on uncached operations; the
     * exact live figure seen now is folded in so peak >= live always holds. */
    heap_note_peak(h, live_bytes);
    out->peak_bytes = __atomic_load_n(&h->peak_bytes, __ATOMIC_RELAXED);
    out->requested_bytes = validate_requested_bytes(h);
    out->mapped_bytes = __atomic_load_n(&h->mapped_bytes, __ATOMIC_RELAXED);
    out->peak_mapped_bytes = __atomic_load_n(&h->peak_mapped_bytes, __ATOMIC_RELAXED);
    out->slabs_mapped = __atomic_load_n(&h->slabs_mapped, __ATOMIC_RELAXED);
    out->slabs_returned = __atomic_load_n(&h->slabs_returned, __ATOMIC_RELAXED);
    out->large_allocs = large_allocs;
    out->cache_misses = misses + __atomic_load_n(&h->merged_misses, __ATOMIC_RELAXED);
    uint64_t via_cache = cached_allocs + __atomic_load_n(&h->merged_cached_allocs, __ATOMIC_RELAXED);
    out->cache_hits = via_cache > out->cache_misses ? via_cache - out->cache_misses : 0;
    out->alloc_failures = __atomic_load_n(&h->alloc_failures, __ATOMIC_RELAXED);
    out->injected_failures = __atomic_load_n(&h->injected_failures, __ATOMIC_RELAXED);
    out->lock_contention = __atomic_load_n(&h->lock_contention, __ATOMIC_RELAXED);
    out->events = events_total(h);
    out->events_dropped = events_dropped(h);
    out->quarantine_bytes = __atomic_load_n(&h->quar_bytes, __ATOMIC_RELAXED) + tq_bytes;
    out->sweeps = __atomic_load_n(&h->sweeps, __ATOMIC_RELAXED);
    return NMM_OK;
}
