/* tcache.c — per-(thread, heap) magazines: creation on first use, refill from and
 * flush to the slabs, flush on thread exit, detach on heap destroy, reclaim after
 * fork. Must not hand a block to two owners: a block is in exactly one place (a
 * cache, a slab stack, live, quarantine). A cache is touched by its owning thread;
 * other threads only read its counters (tbin_read) or, under the registry lock and
 * only when the owner is gone or the heap is being destroyed, take it apart.
 */
#include "core.h"

#include <sched.h>

NMM_TLS tstate_t *tcache_tls;
pthread_mutex_t tcache_registry_lock = PTHREAD_MUTEX_INITIALIZER;
tstate_t *tcache_all;

static tcache_t *tcache_pool;          /* registry lock: caches ready for reuse, pages kept */
static uint32_t tcache_pool_warm;      /* registry lock: caches in tcache_pool */
static tcache_t *tcache_pool_cold;     /* registry lock: caches ready for reuse, purged */
static uint32_t tcache_live;           /* registry lock: caches owned by a thread (all heaps) */
static uint32_t tcache_lanes_given;    /* registry lock: caches made, for their lanes */
static tstate_t *tstate_carve;         /* registry lock: unused tstates in the last map */
static size_t tstate_carve_left;
static pthread_key_t tcache_key;
static tstate_t tcache_dead = {.dead = 1};
static size_t tcache_bytes;

static void tcache_thread_exit(void *arg);

void tcache_process_init(void)
{
    size_t entries = 0;
    for (int c = 0; c < CORE_CLASSES; c++)
        entries += sizeclass_cache_cap[c];
    tcache_bytes = sizeof(tcache_t) + entries * sizeof(blockref_t) +
                   CORE_TQ_CAP * sizeof(quarantine_entry_t);
    pthread_key_create(&tcache_key, tcache_thread_exit);
}

/* Registry lock held. */
static tstate_t *tstate_new_locked(void)
{
    for (tstate_t *t = tcache_all; t; t = t->next_all) {
        if (!t->in_use) {
            t->in_use = 1;
            return t;
        }
    }
    if (!tstate_carve_left) {
        size_t bytes = 64 * 1024;
        tstate_carve = os_map(NULL, bytes);
        if (!tstate_carve)
            return NULL;
        tstate_carve_left = bytes / sizeof(tstate_t);
    }
    tstate_t *t = tstate_carve++;
    tstate_carve_left--;
    t->in_use = 1;
    t->next_all = tcache_all;
    __atomic_store_n(&tcache_all, t, __ATOMIC_RELEASE);
    return t;
}

/* Registry lock held. A cache with empty bins and zero counters. */
static tcache_t *tcache_new_locked(nmm_heap_t *h)
{
    tcache_t *tc = tcache_pool;
    if (tc) {
        tcache_pool = tc->next_free;
        tcache_pool_warm--;
    } else if ((tc = tcache_pool_cold) != NULL) {
        tcache_pool_cold = tc->next_free;
        tc->purged = 0;
    } else {
        tc = os_map(NULL, tcache_bytes);
        if (!tc)
            return NULL;
        /* round robin, kept when the cache is reused: threads alive together
         * get different lanes while there are fewer than CORE_LANES of them */
        tc->lane = tcache_lanes_given++ % CORE_LANES;
    }
    /* Counters are reset with atomic stores: heap_op_count may be reading a
     * recycled cache concurrently (its sum is approximate by design). */
    blockref_t *items = (blockref_t *)(tc + 1);
    for (int c = 0; c < CORE_CLASSES; c++) {
        __atomic_store_n(&tc->bins[c].count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&tc->bins[c].allocs, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&tc->bins[c].supplied, 0, __ATOMIC_RELAXED);
        tc->merged[c] = 0;
        tc->bins[c].cap = sizeclass_cache_cap[c] < CORE_CACHE_CAP_MAX ? sizeclass_cache_cap[c]
                                                                      : CORE_CACHE_CAP_MAX;
        tc->fill[c] = (uint16_t)(CORE_FILL_FIRST < tc->bins[c].cap / 2 ? CORE_FILL_FIRST
                                                                       : tc->bins[c].cap / 2);
        tc->bins[c].items = items;
        items += sizeclass_cache_cap[c];
    }
    tc->tq = (quarantine_entry_t *)items;
    tc->tq_head = tc->tq_count = 0;
    __atomic_store_n(&tc->tq_bytes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&tc->misses, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&tc->books, 0, __ATOMIC_RELAXED);
    tc->next_free = NULL;
    __atomic_store_n(&tc->heap, h, __ATOMIC_RELAXED);
    return tc;
}

/* Registry lock held: the calling thread's state, created if it has none. */
static tstate_t *tstate_own_locked(void)
{
    tstate_t *ts = tcache_tls;
    if (!ts) {
        ts = tstate_new_locked();
        if (!ts)
            return NULL;
        tcache_tls = ts;
        pthread_setspecific(tcache_key, ts);
        events_thread_start();  /* its alternate signal stack */
    }
    return ts;
}

tstate_t *tcache_state(void)
{
    tstate_t *ts = tcache_tls;
    if (likely(ts != NULL))
        return ts;
    pthread_mutex_lock(&tcache_registry_lock);
    ts = tstate_own_locked();
    pthread_mutex_unlock(&tcache_registry_lock);
    return ts;
}

tcache_t *tcache_get(nmm_heap_t *h)
{
    if (h->slot < 0 || !h->use_cache)
        return NULL;
    tstate_t *ts = tcache_tls;
    if (ts && ts->dead)
        return NULL;
    if (ts) {
        tcache_t *tc = ts->caches[h->slot];
        if (tc)
            return tc;
    }
    NMM_YIELD("registry.lock");
    pthread_mutex_lock(&tcache_registry_lock);
    ts = tstate_own_locked();
    if (!ts) {
        pthread_mutex_unlock(&tcache_registry_lock);
        return NULL;
    }
    tcache_t *tc = tcache_new_locked(h);
    if (tc) {
        __atomic_store_n(&ts->caches[h->slot], tc, __ATOMIC_RELEASE);
        h->caches_live++;
        tcache_live++;
    }
    pthread_mutex_unlock(&tcache_registry_lock);
    NMM_YIELD("registry.unlock");
    return tc;
}

/* Live bytes are not counted per operation: the heap's estimate (and its peak)
 * is brought up to date for one class whenever that bin refills or flushes. */
void tcache_merge_live(nmm_heap_t *h, tcache_t *tc, int cls)
{
    tbin_t *bin = &tc->bins[cls];
    int64_t delta = (int64_t)(bin->allocs - tbin_frees(bin)) - tc->merged[cls];
    if (delta) {
        tc->merged[cls] += delta;
        heap_account_live(h, delta * (int64_t)sizeclass_table[cls]);
    }
}

bool tcache_refill(nmm_heap_t *h, tcache_t *tc, int cls)
{
    tbin_t *bin = &tc->bins[cls];
    if (unlikely(heap_failpoints_armed(h)) &&
        failpoint_should_fail(h, FP_TCACHE_REFILL, sizeclass_table[cls])) {
        __atomic_fetch_add(&h->injected_failures, 1, __ATOMIC_RELAXED);
        return false;
    }
    uint32_t want = tc->fill[cls];
    if (want < bin->cap / 2)
        tc->fill[cls] = (uint16_t)(want * 2 < bin->cap / 2 ? want * 2 : bin->cap / 2);
    if (want > bin->cap - bin->count)
        want = bin->cap - bin->count;
    blockref_t *fresh = bin->items + bin->count;
    uint32_t got = slab_take(h, cls, tc->lane, fresh, want);
    NMM_ASSERT(got <= want && bin->count + got <= bin->cap);
    /* The bin hands out its last entry first: reversed, the blocks go out in the order
     * the slab gave them (jemalloc's "low regions get used first"), which after a
     * decay step's trim is address order from block 0 (slab_trim): a thread that takes
     * a batch and uses a few of them touches the slab's first pages, not the batch's
     * last ones. Handed out last first, the few blocks each short-lived thread used
     * were different ones of a slab kept for them all, and all their pages stayed. */
    for (uint32_t i = 0; i < got / 2; i++) {
        blockref_t t = fresh[i];
        fresh[i] = fresh[got - 1 - i];
        fresh[got - 1 - i] = t;
    }
    /* count first: a reader that gives up waiting for the books sees fewer
     * live blocks, never more (tbin_read) */
    bool opened = tcache_books_open(tc);
    tbin_set_count(bin, bin->count + got);
    NMM_YIELD("tcache.refill");
    OWNER_ADD(bin->supplied, got);
    tcache_books_close(tc, opened);
    __atomic_store_n(&tc->misses, tc->misses + 1, __ATOMIC_RELAXED);
    tcache_merge_live(h, tc, cls);
    return got > 0;
}

void tcache_flush_bin_to(nmm_heap_t *h, tcache_t *tc, int cls, uint32_t keep, uint64_t keep_empty)
{
    tbin_t *bin = &tc->bins[cls];
    if (bin->count <= keep)
        return;
    uint32_t n = bin->count - keep;
    NMM_ASSERT(bin->count <= bin->cap && n <= CORE_CACHE_CAP_MAX);
    /* The oldest n go; the bin lets go of them (count 0 while the kept ones move
     * down) before the slabs take them: see fork_publish_order. The books are
     * open meanwhile, and supplied goes down first (by the kept ones too while
     * count is 0): a reader that gives up waiting sees fewer live blocks, never
     * more (tbin_read). */
    blockref_t out[CORE_CACHE_CAP_MAX];  /* n <= count <= cap */
    bool opened = tcache_books_open(tc);
    memcpy(out, bin->items, n * sizeof(blockref_t));
    OWNER_ADD(bin->supplied, -(int64_t)(n + keep));
    NMM_YIELD("tcache.flush");
    tbin_set_count(bin, 0);
    fork_publish_order();
    memmove(bin->items, bin->items + n, keep * sizeof(blockref_t));
    tbin_set_count(bin, keep);
    OWNER_ADD(bin->supplied, keep);
    tcache_books_close(tc, opened);
    fork_publish_order();
    slab_give(h, cls, out, n, keep_empty);
    tcache_merge_live(h, tc, cls);
}

void tcache_flush_bin(nmm_heap_t *h, tcache_t *tc, int cls, uint32_t keep)
{
    tcache_flush_bin_to(h, tc, cls, keep, UINT64_MAX);
}

/* Registry lock held: a pooled cache gives its blocks' entries and quarantine ring
 * back to the OS (the tcache_t itself, with the lane and the counters other threads
 * may still read, stays) and moves to the cold pool. */
static void tcache_purge_locked(tcache_t *tc)
{
    size_t page = os_page_size();
    uintptr_t from = ((uintptr_t)(tc + 1) + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t to = ((uintptr_t)tc + tcache_bytes + page - 1) & ~(uintptr_t)(page - 1);
    if (to > from)
        os_decommit((void *)from, to - from);
    tc->purged = 1;
    tc->next_free = tcache_pool_cold;
    tcache_pool_cold = tc;
}

/* Registry lock held: the cache goes back to the pool. The warm pool (LIFO: the next
 * thread takes the one most recently used) keeps at most one cache per cache still
 * alive and one more, pages and all, for the threads that replace them; the rest
 * are purged and reused after the warm ones. A cache touches ~30 KB of entries (a KiB
 * per class it used); 8 threads living together left 8 of them resident after they
 * were gone, and every wave of threads after them did the same (RSS after 10,000
 * short thread lifetimes, 8 at a time), while a server that replaces its threads one
 * by one (larson) reuses a warm one each time. */
static void tcache_pool_put_locked(tcache_t *tc)
{
    tc->next_free = tcache_pool;
    tcache_pool = tc;
    tcache_pool_warm++;
    while (tcache_pool_warm > tcache_live + 1) {
        tcache_t *cold = tcache_pool;  /* the warm pool's coldest would be its tail */
        tcache_pool = cold->next_free;
        tcache_pool_warm--;
        tcache_purge_locked(cold);
    }
}

/* Registry lock held. Give everything back to the heap and fold the counters into
 * it; the cache goes back to the pool. Its owner no longer uses it. */
static void tcache_retire_locked(tstate_t *ts, int slot)
{
    tcache_t *tc = ts->caches[slot];
    if (!tc)
        return;
    nmm_heap_t *h = tc->heap;
    uint64_t cached_allocs = 0;
    /* Its lane's slabs it alone used are empty once its bins are flushed. The threads
     * still here keep what they use, and each class it flushes keeps two empty slabs
     * per other cache still alive and one more; the rest go back now, not when the
     * class's next decay step comes (that may be never: threads living 8 at a time
     * empty and take a slab per lane and class each time, so no slab is ever unused
     * through a whole step, and all 8 lanes' slabs stayed resident after the last
     * thread: 3-4x one thread's RSS). One per cache was too few for a server
     * replacing its threads one by one (larson: its arrays drain slabs of earlier
     * lanes; they went back and were mapped again, 2x the page faults). */
    uint64_t keep_empty = 2 * (uint64_t)(h->caches_live ? h->caches_live - 1 : 0) + 1;
    detect_tq_drain(h, tc);
    for (int c = 0; c < CORE_CLASSES; c++) {
        tcache_flush_bin_to(h, tc, c, 0, keep_empty);
        tcache_merge_live(h, tc, c);
        cached_allocs += tc->bins[c].allocs;
        __atomic_fetch_add(&h->pools[c].allocs, tc->bins[c].allocs, __ATOMIC_RELAXED);
        __atomic_fetch_add(&h->pools[c].frees, tbin_frees(&tc->bins[c]), __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&h->merged_cached_allocs, cached_allocs, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->merged_misses, tc->misses, __ATOMIC_RELAXED);
    __atomic_store_n(&ts->caches[slot], NULL, __ATOMIC_RELEASE);
    h->caches_live--;
    tcache_live--;
    tcache_pool_put_locked(tc);
}

static void tcache_thread_exit(void *arg)
{
    tstate_t *ts = arg;
    pthread_mutex_lock(&tcache_registry_lock);
    for (int s = 0; s < CORE_SLOTS; s++)
        tcache_retire_locked(ts, s);
    __atomic_fetch_add(&ts->calls, 1, __ATOMIC_RELEASE);  /* unpins what it freed */
    ts->in_use = 0;
    pthread_mutex_unlock(&tcache_registry_lock);
    /* Later destructors that allocate go straight to the slabs. */
    tcache_tls = &tcache_dead;
    events_thread_exit();
}

void tcache_detach_heap(nmm_heap_t *h)
{
    if (h->slot < 0)
        return;
    pthread_mutex_lock(&tcache_registry_lock);
    for (tstate_t *ts = tcache_all; ts; ts = ts->next_all) {
        tcache_t *tc = ts->caches[h->slot];
        if (tc && tc->heap == h) {
            __atomic_store_n(&ts->caches[h->slot], NULL, __ATOMIC_RELEASE);
            h->caches_live--;
            tcache_live--;
            tcache_pool_put_locked(tc);
        }
    }
    pthread_mutex_unlock(&tcache_registry_lock);
}

/* Fork child, registry lock held: the blocks a dead thread's bins hold take their free
 * state before anything moves them (its quarantine drain may flush a bin). The fast
 * frees (and a quarantine release) store the bin's count, then the block's state, last
 * so that no load waits behind a byte store that may alias it; a fork() landing between
 * the two stores left a block in the bin that read live. Given back to the slabs so, a
 * heap walk in the child counted it live until the child took it again (stress_fork:
 * "heap_walk_count(h) == walked failed: 63 != 64" in 11 of 160 ASan runs at level off),
 * and validate found a live block on a free stack. */
static void tcache_settle_dead_locked(tstate_t *ts)
{
    for (int s = 0; s < CORE_SLOTS; s++) {
        tcache_t *tc = ts->caches[s];
        if (!tc)
            continue;
        for (int c = 0; c < CORE_CLASSES; c++) {
            tbin_t *bin = &tc->bins[c];
            uint32_t n = bin->count <= bin->cap ? bin->count : bin->cap;
            for (uint32_t i = 0; i < n; i++) {
                uint8_t *state = bin->items[i].state;
                uint8_t v = __atomic_load_n(state, __ATOMIC_RELAXED);
                if (state_settled_free(v) != v)
                    __atomic_store_n(state, state_settled_free(v), __ATOMIC_RELAXED);
            }
        }
    }
}

void tcache_fork_child(void)
{
    pthread_mutex_lock(&tcache_registry_lock);
    for (tstate_t *ts = tcache_all; ts; ts = ts->next_all) {
        if (!ts->in_use || ts == tcache_tls)
            continue;
        tcache_settle_dead_locked(ts);
        for (int s = 0; s < CORE_SLOTS; s++)
            tcache_retire_locked(ts, s);
        __atomic_fetch_add(&ts->calls, 1, __ATOMIC_RELEASE);
        ts->in_use = 0;
    }
    pthread_mutex_unlock(&tcache_registry_lock);
}

/* Another thread reads a bin: its allocs, frees and cached blocks. The owner
 * changes one field per fast-path operation, storing an alloc's allocs + 1
 * before its count - 1 (count a release store); updates of count and supplied
 * together are bracketed by the books (odd meanwhile) and move live down first.
 * So count is read first (acquire: the allocs read after it include every alloc
 * that count reflects), then allocs and supplied, and the read is kept once
 * neither the books nor count moved meanwhile. Then live = supplied - count is
 * exact for the moment count was read, and frees = allocs - live is exact, or
 * one high per alloc under way (counted before its count moved): never low,
 * never negative. An owner stalled inside the books makes the reader give up
 * after a while; live then errs low (never a peak that was not), and frees are
 * clamped at 0 so nothing wraps. With wait false it reads once (no waiting).
 * Returns whether the read was steady. */
static bool tbin_read(const tcache_t *tc, const tbin_t *bin, uint64_t *allocs, uint64_t *frees,
                      uint32_t *count, bool wait)
{
    uint64_t a;
    uint32_t n;
    int64_t sup;
    bool steady;
    for (int tries = wait ? 0 : 80;; tries++) {
        if (tries >= 16 && wait)
            sched_yield();  /* the owner may be preempted inside the books */
        uint32_t seq = __atomic_load_n(&tc->books, __ATOMIC_ACQUIRE);
        n = __atomic_load_n(&bin->count, __ATOMIC_ACQUIRE);
        a = __atomic_load_n(&bin->allocs, __ATOMIC_RELAXED);
        sup = __atomic_load_n(&bin->supplied, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        steady = !(seq & 1) && __atomic_load_n(&bin->count, __ATOMIC_RELAXED) == n &&
                 __atomic_load_n(&tc->books, __ATOMIC_RELAXED) == seq;
        /* giving up (an owner stalled inside the books, or one that never
         * pauses): each multi-field update moves live down first, so what is
         * read errs towards fewer live blocks (more frees), clamped below */
        if (steady || tries == 80)
            break;
    }
    /* a bin's live may be negative (blocks other threads allocated, freed
     * here), its frees may not */
    int64_t f = (int64_t)(a + n - (uint64_t)sup);
    *allocs = a;
    *frees = f > 0 ? (uint64_t)f : 0;
    *count = n;
    return steady;
}

void tcache_sum(nmm_heap_t *h, uint64_t *allocs, uint64_t *frees, uint64_t *cached,
                uint64_t *cached_allocs, uint64_t *misses, uint64_t *tq_bytes)
{
    if (h->slot < 0)
        return;
    for (tstate_t *ts = __atomic_load_n(&tcache_all, __ATOMIC_ACQUIRE); ts; ts = ts->next_all) {
        tcache_t *tc = __atomic_load_n(&ts->caches[h->slot], __ATOMIC_ACQUIRE);
        if (!tc || __atomic_load_n(&tc->heap, __ATOMIC_RELAXED) != h)
            continue;
        /* The books are the cache's, not a bin's: once its owner has kept them open
         * through one bin's whole wait, the other bins would wait out the same stall
         * (64 sched_yields each, every one a time slice of another thread on a busy
         * machine: minutes per read), so they are read once. */
        bool wait = true;
        for (int c = 0; c < CORE_CLASSES; c++) {
            uint64_t a, f;
            uint32_t n;
            if (!tbin_read(tc, &tc->bins[c], &a, &f, &n, wait))
                wait = false;
            if (cached_allocs)
                *cached_allocs += a;
            if (allocs)
                allocs[c] += a;
            if (frees)
                frees[c] += f;
            if (cached)
                cached[c] += n;
        }
        if (misses)
            *misses += __atomic_load_n(&tc->misses, __ATOMIC_RELAXED);
        if (tq_bytes)
            *tq_bytes += __atomic_load_n(&tc->tq_bytes, __ATOMIC_RELAXED);
    }
}

#ifdef NMM_CHAOS
/* The chaos driver's scheduler retires a worker's thread while it still runs under
 * control: its caches go back now, as at its exit, and its exit then has nothing left
 * to do (chaos.h, chaos_thread_retire). */
void chaos_thread_retire(void)
{
    tstate_t *ts = tcache_tls;
    if (!ts || ts->dead)
        return;
    pthread_setspecific(tcache_key, NULL);
    tcache_thread_exit(ts);
}
#endif
