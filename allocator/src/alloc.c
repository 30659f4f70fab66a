/* alloc.c — the allocation API: nmm_alloc/calloc/realloc/aligned_alloc/free and
 * the size queries. The fast paths (a cache pop/push plus one unlikely branch)
 * are here; everything else is in named noinline slow paths. A pointer is
 * validated against the out-of-band slab map and state bytes before any memory
 * behind it is read. Any thread; per-thread state lives in tcache.c.
 */
#include "poison.h"

#include <errno.h>

static inline tcache_t *alloc_cache_fast(const nmm_heap_t *h)
{
    tstate_t *ts = tcache_tls;
    return likely(ts != NULL) ? __atomic_load_n(&ts->caches[h->slot], __ATOMIC_RELAXED) : NULL;
}

NMM_COLD static void *alloc_fail(nmm_heap_t *h, nmm_status_t st, int err)
{
    __atomic_fetch_add(&h->alloc_failures, 1, __ATOMIC_RELAXED);
    heap_set_status(st);
    errno = err;
    return NULL;
}

/* Smallest class >= need whose block size is a multiple of align (slab data is
 * page aligned, so every block of such a class is aligned). */
static int alloc_class_aligned(size_t need, size_t align)
{
    int c = sizeclass_of(need);
    if (c < 0)
        return -1;
    while (c < CORE_CLASSES && sizeclass_table[c] % align)
        c++;
    return c < CORE_CLASSES ? c : -1;
}

void alloc_retire(nmm_heap_t *h, uint8_t *block)
{
    slab_t *s = slab_of(h, (uintptr_t)block);
    int32_t idx = slab_index(s, (uintptr_t)block);
    block_retire(h, &slab_states(s)[idx]);
}

/* Paranoid and cacheless path: one block under the class lock; the header is
 * written before the lock is dropped so a concurrent sweep never sees a live
 * block without it. */
static uint8_t *alloc_locked(nmm_heap_t *h, int cls, size_t size, uint32_t site_id, uint32_t off,
                             uint8_t live_state)
{
    blockref_t b;
    sizeclass_pool_t *pool = &h->pools[cls];
    NMM_YIELD("class.lock");
    heap_lock(h, &pool->lock);
    if (!slab_take_locked(h, cls, 0, &b, 1)) {  /* no cache, no lane: the first */
        pthread_mutex_unlock(&pool->lock);
        return NULL;
    }
    uint8_t *user = b.block + off;
    if (state_is_aligned(live_state))  /* its header is not at the block's start */
        slab_of(h, (uintptr_t)b.block)->plain_span = 0;
    if (h->has_hdr) {
        if (site_id)
            slab_set_site_ref(h, &b, site_id);
        detect_write_header(h, user, size, site_id != 0);
    }
    if (h->checks)
        detect_write_canary(h, user, size, sizeclass_table[cls] - off);
    __atomic_store_n(b.state, live_state, __ATOMIC_RELAXED);
    __atomic_fetch_add(&pool->allocs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool->lock);
    NMM_YIELD("class.unlock");
    heap_account_live(h, sizeclass_table[cls]);
    return user;
}

NMM_NOINLINE static void *alloc_slow(nmm_heap_t *h, size_t size, nmm_site_t site, size_t align)
{
    if (h->paranoid && !h->use_cache)
        detect_note_call();
    if (unlikely(heap_failpoints_armed(h)) && failpoint_should_fail(h, FP_ALLOC, size)) {
        __atomic_fetch_add(&h->injected_failures, 1, __ATOMIC_RELAXED);
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    }
    if (size > CORE_MAX_REQUEST)
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    size_t need = size + h->user_off + (h->checks ? CORE_CANARY : 0);
    int cls;
    uint32_t off = h->user_off;
    uint8_t live_state = BS_LIVE;
    if (align <= 16) {
        cls = sizeclass_of(need);
    } else if (align > os_page_size()) {
        cls = -1;  /* slabs are only page aligned: mapped directly, at an aligned start */
    } else if (!h->has_hdr) {
        cls = alloc_class_aligned(need, align);
    } else {
        /* Header levels: blocks start 8 bytes into an aligned slot (the slab
         * lead), so in a class whose size is a multiple of align the user
         * pointer block + align - 8 is aligned; the state byte remembers k. */
        off = (uint32_t)align - CORE_HDR;
        cls = alloc_class_aligned(size + off + (h->checks ? CORE_CANARY : 0), align);
        live_state = (uint8_t)(BS_ALIGNED | __builtin_ctzll(align));
    }
    uint32_t site_id = h->tracking ? track_on_alloc(h, site) : site;
    if (unlikely(size == 0) && h->zero && align <= 16) {
        void *z = zero_alloc(h, site_id);  /* paranoid: faults when touched */
        if (z)
            return z;
    }
    if (cls < 0) {
        void *p = large_alloc(h, size, align, site_id);
        return p ? p : alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    }
    uint32_t bs = sizeclass_table[cls];
    if (!heap_limit_take(h, bs))
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    tcache_t *tc = h->use_cache && live_state == BS_LIVE ? tcache_get(h) : NULL;
    uint8_t *user;
    if (!tc) {
        user = alloc_locked(h, cls, size, site_id, off, live_state);
        if (h->paranoid && user)
            validate_maybe_sweep(h);
    } else {
        tbin_t *bin = &tc->bins[cls];
        user = NULL;
        if (bin->count || tcache_refill(h, tc, cls)) {
            blockref_t e = tbin_pop(bin, bin->count);
            user = e.block + h->user_off;
            if (h->has_hdr) {
                if (site_id)
                    slab_set_site_ref(h, &e, site_id);
                detect_write_header(h, user, size, site_id != 0);
            }
            if (h->checks)
                detect_write_canary(h, user, size, bs - h->user_off);
            __atomic_store_n(e.state, BS_LIVE, __ATOMIC_RELAXED);
        }
    }
    if (!user) {
        heap_limit_give(h, bs);
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    }
    return user;
}

/* Class of a header-level request of size bytes (header and canary added):
 * the table lookup inline for the common small sizes, the formula out of the
 * way. */
static inline uint32_t alloc_class_hdr(size_t size)
{
    if (likely(size <= 1024 - CORE_HDR - CORE_CANARY))
        return sizeclass_small_lut[(size + CORE_HDR + CORE_CANARY + 15) >> 4];
    return (uint32_t)sizeclass_of(size + CORE_HDR + CORE_CANARY);  /* size <= the largest class */
}

/* Standard level, tracked with a site or sampling a stack (or a miss of the
 * leaves below, which ends in alloc_slow): header, canary, pop. A non-zero
 * site (track_on_alloc's id with tracking, called once, only when a block is
 * handed out here: the slow path calls it itself) goes to the slab's site[]
 * and the header says so. */
NMM_NOINLINE static void *alloc_standard_track(nmm_heap_t *h, size_t size, nmm_site_t site)
{
    if (likely(size <= CORE_SMALL_MAX - CORE_HDR - CORE_CANARY)) {
        tcache_t *tc = alloc_cache_fast(h);
        if (likely(tc != NULL)) {
            tbin_t *bin = &tc->bins[alloc_class_hdr(size)];
            if (likely(bin->count)) {
                uint32_t site_id = unlikely(h->tracking) ? track_on_alloc(h, site) : site;
                blockref_t e = tbin_pop(bin, bin->count);
                uint8_t *user = e.block + CORE_HDR;
                if (site_id)
                    slab_set_site_ref(h, &e, site_id);
                detect_write_block(h, user, size, site_id != 0);
                __atomic_store_n(e.state, BS_LIVE, __ATOMIC_RELAXED);
                return user;
            }
        }
    }
    return alloc_slow(h, size, site, 0);
}

/* Standard level, small request, block in the cache: pop it, record a non-zero
 * site_id in the slab's site[], write header and canary, or NULL. No calls, so
 * its callers stay leaves. Bin bookkeeping is stored before the rest (a byte
 * store may alias bin->allocs and force a reload), the state byte last. */
static inline __attribute__((always_inline)) void *alloc_standard_pop(nmm_heap_t *h, size_t size,
                                                                      uint32_t site_id)
{
    if (likely(size <= CORE_SMALL_MAX - CORE_HDR - CORE_CANARY)) {
        tcache_t *tc = alloc_cache_fast(h);
        if (likely(tc != NULL)) {
            tbin_t *bin = &tc->bins[alloc_class_hdr(size)];
            uint32_t n = bin->count;
            if (likely(n)) {
                blockref_t e = tbin_pop(bin, n);
                uint8_t *user = e.block + CORE_HDR;
                if (site_id)
                    slab_set_site_ref(h, &e, site_id);
                detect_write_block(h, user, size, site_id != 0);
                __atomic_store_n(e.state, BS_LIVE, __ATOMIC_RELAXED);
                return user;
            }
        }
    }
    return NULL;
}

/* A non-zero site (NMM_ALLOC, the Python binding): untracked, it goes to site[]
 * as it is, a leaf on the hit path; tracked, the tracked way. */
NMM_NOINLINE static void *alloc_standard_sited(nmm_heap_t *h, size_t size, nmm_site_t site)
{
    if (unlikely(h->tracking))
        return alloc_standard_track(h, size, site);
    void *user = alloc_standard_pop(h, size, site);
    return likely(user != NULL) ? user : alloc_slow(h, size, site, 0);
}

/* Tracking, site 0 (the tracked malloc replacement's case): an allocation that
 * samples no stack stores no site either (track_on_alloc would return 0), so
 * all tracking adds is the countdown, done here inline; the sampling one (or a
 * clamp) goes the tracked way, and so does a miss, with the count given back
 * (the tracked way counts it itself). A leaf on the hit path. */
NMM_NOINLINE static void *alloc_standard_counted(nmm_heap_t *h, size_t size)
{
    uint32_t every = h->stack_every0;
    if (every) {
        uint32_t c = track_countdown;
        if (unlikely(c - 2 >= every - 1))  /* not in [2, every]: sample or clamp */
            return alloc_standard_track(h, size, 0);
        track_countdown = c - 1;
    }
    void *user = alloc_standard_pop(h, size, 0);
    if (likely(user != NULL))
        return user;
    if (every)
        track_countdown++;
    return alloc_standard_track(h, size, 0);
}

/* Standard level, untracked, site 0 (the malloc replacement's case): a leaf on
 * the hit path; everything else tail-calls the leaves above or, tracked with a
 * site, the tracked way. Its own function so the off path in nmm_alloc stays
 * free of its register pressure. */
NMM_NOINLINE __attribute__((aligned(64))) static void *alloc_standard(nmm_heap_t *h, size_t size, nmm_site_t site)
{
    if (unlikely((site | h->tracking) != 0)) {
        if (unlikely(size == 0) && h->zero)
            return alloc_slow(h, 0, site, 0);  /* paranoid's zero-size blocks */
        return site == 0 ? alloc_standard_counted(h, size) : alloc_standard_sited(h, size, site);
    }
    void *user = alloc_standard_pop(h, size, 0);
    return likely(user != NULL) ? user : alloc_standard_track(h, size, 0);
}

void *nmm_alloc(nmm_heap_t *h, size_t size, nmm_site_t site)
{
    uint8_t fast = __atomic_load_n(&h->fast, __ATOMIC_RELAXED);
    if (likely(fast == FAST_OFF) && likely(size <= CORE_SMALL_MAX)) {
        tcache_t *tc = alloc_cache_fast(h);
        if (likely(tc != NULL)) {
            int cls = sizeclass_of(size);
            tbin_t *bin = &tc->bins[cls];
            uint32_t n = bin->count;
            if (likely(n)) {
                blockref_t e = tbin_pop(bin, n);
                __atomic_store_n(e.state, BS_LIVE, __ATOMIC_RELAXED);
                return e.block;
            }
        }
    } else if (fast >= FAST_STANDARD) {
        /* paranoid allocates like standard: poison is verified when a block
         * leaves the quarantine and in sweeps */
        return alloc_standard(h, size, site);
    }
    return alloc_slow(h, size, site, 0);
}

/* ------------------------------------------------------------------ free */

/* Status for a pointer that is not a live block start; reports it. */
NMM_COLD static nmm_status_t free_invalid(nmm_heap_t *h, const void *p, nmm_site_t site,
                                          uint32_t reason, bool realloc_call)
{
    return heap_report(h, realloc_call ? NMM_EV_INVALID_REALLOC : NMM_EV_INVALID_FREE, reason, p, 0,
                       0, site);
}

/* Block idx of slab s (user its user pointer) is not live: a double free or a
 * realloc of a freed block, named with the alloc site and size its header
 * (still intact after a free) and site[] keep. */
NMM_COLD static nmm_status_t free_not_live(nmm_heap_t *h, const slab_t *s, uint32_t idx,
                                           const uint8_t *user, uint8_t state, size_t room,
                                           nmm_site_t site, bool realloc_call)
{
    if (state == BS_NEVER)
        return free_invalid(h, user, site, NMM_INVALID_UNMAPPED, realloc_call);
    uint32_t alloc_id = 0;
    size_t size = 0;
    if (h->has_hdr && detect_header_ok(h, user)) {
        uint64_t hw = detect_header_word(user);
        /* at level off (a header for tracking, no canary) a block can be full */
        if (detect_header_size(hw) + (h->checks ? CORE_CANARY : 0) <= room) {
            alloc_id = slab_site(s, idx, detect_header_has_site(hw));
            size = detect_header_size(hw);
        }
    }
    return heap_report(h, realloc_call ? NMM_EV_REALLOC_FREED : NMM_EV_DOUBLE_FREE, 0, user, size,
                       alloc_id, site);
}

/* A live block whose header/guard/canary is damaged: report, retire, count it
 * freed (it is no longer the caller's). */
NMM_COLD static nmm_status_t free_corrupted(nmm_heap_t *h, slab_t *s, uint8_t *state, uint8_t *user,
                                            nmm_site_t site)
{
    uint32_t detail;
    size_t size;
    bool has_site;
    size_t room = s->block_size - h->user_off;
    uint32_t kind = detect_check_block(h, user, room, DETECT_SIZE_FROM_HEADER, &detail, &size, &has_site);
    uint32_t asite = slab_site(s, (uint32_t)(state - slab_states(s)), has_site);
    if (kind == NMM_EV_NONE)
        kind = NMM_EV_HEADER_CORRUPT;
    block_retire(h, state);
    return heap_report(h, kind, detail, user, size, asite, site);
}

/* A free of class cls is counted: with a cache, a block that went into the
 * bin counts itself (tbin_t), any other is noted as an uncached free. */
static void free_account(nmm_heap_t *h, int cls, tcache_t *tc, bool into_cache)
{
    uint32_t bs = sizeclass_table[cls];
    heap_limit_give(h, bs);
    if (tc) {
        if (!into_cache)
            tbin_note_uncached_free(tc, &tc->bins[cls]);
    } else if (NMM_MUTANT(stats_racy)) {
        /* mutant: a read-modify-write of a shared counter that is not one */
        uint64_t frees = __atomic_load_n(&h->pools[cls].frees, __ATOMIC_RELAXED);
        NMM_YIELD("mutant.stats_racy");
        __atomic_store_n(&h->pools[cls].frees, frees + 1, __ATOMIC_RELAXED);
        heap_account_live(h, -(int64_t)bs);
    } else {
        __atomic_fetch_add(&h->pools[cls].frees, 1, __ATOMIC_RELAXED);
        heap_account_live(h, -(int64_t)bs);
    }
}

/* Paranoid: the state change happens under the class lock; the block is then
 * poisoned and quarantined. */
static nmm_status_t free_paranoid(nmm_heap_t *h, slab_t *s, int32_t idx, uint8_t *user,
                                  nmm_site_t site, bool realloc_call)
{
    int cls = s->cls;
    uint8_t *state = &slab_states(s)[idx];
    size_t room = s->block_size - h->user_off;
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    uint8_t st = __atomic_load_n(state, __ATOMIC_RELAXED);
    if (st != BS_LIVE && st != BS_LIVE_BAD) {
        pthread_mutex_unlock(&h->pools[cls].lock);
        return free_not_live(h, s, (uint32_t)idx, user, st, room, site, realloc_call);
    }
    uint64_t hw = detect_header_word(user);
    bool intact = st == BS_LIVE && detect_block_intact(h, user, room);
    uint32_t size = intact ? (uint32_t)detect_header_size(hw) : 0;
    uint32_t asite = intact ? slab_site(s, (uint32_t)idx, detect_header_has_site(hw)) : 0;
    uint32_t kind = NMM_EV_NONE, detail = 0, dsite = 0;
    size_t dsize = 0;
    if (!intact) {
        bool dhas = false;
        if (st == BS_LIVE)
            kind = detect_check_block(h, user, room, DETECT_SIZE_FROM_HEADER, &detail, &dsize, &dhas);
        dsite = slab_site(s, (uint32_t)idx, dhas);
        block_retire(h, state);
    } else {
        __atomic_store_n(state, BS_QUARANTINE, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
    free_account(h, cls, NULL, false);
    if (!intact) {
        if (st == BS_LIVE_BAD) {
            heap_set_status(NMM_E_CORRUPTED);
            return NMM_E_CORRUPTED;
        }
        return heap_report(h, kind ? kind : NMM_EV_HEADER_CORRUPT, detail, user, dsize, dsite, site);
    }
    detect_quarantine_push(h, user, user, (uint32_t)room, site, asite, size);
    validate_maybe_sweep(h);
    return NMM_OK;
}

/* An aligned block of a header level (user = block + 2^k - 8). Rare: checked and
 * marked free under the class lock. With a thread cache it then goes into this
 * thread's bin, like any free: on the shared slab stack another thread's next
 * allocation of the class could take it at once, and a second free of the same
 * pointer right after the first would free that thread's block (accepted, the block
 * handed out twice) instead of being a double free. At paranoid it is poisoned and
 * quarantined. */
NMM_COLD static nmm_status_t free_aligned(nmm_heap_t *h, slab_t *s, uint32_t idx, uint8_t *user,
                                          nmm_site_t site, bool realloc_call)
{
    int cls = s->cls;
    uint8_t *state = &slab_states(s)[idx];
    uint8_t *block = s->data + (size_t)idx * s->block_size;
    /* before the class lock: the registry lock comes first */
    tcache_t *tc = h->use_cache ? tcache_get(h) : NULL;
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    uint8_t st = __atomic_load_n(state, __ATOMIC_RELAXED);
    if (!state_is_aligned_any(st) || user != block + state_user_off(st)) {
        pthread_mutex_unlock(&h->pools[cls].lock);
        /* freed by another thread since the caller saw it live: a double free */
        if (state_has_offset(st) && user == block + state_user_off(st))
            return free_not_live(h, s, idx, user,
                                 (st & 0xF0) == BS_QUAR_ALIGNED ? BS_QUARANTINE : BS_FREE,
                                 s->block_size - state_user_off(st), site, realloc_call);
        return free_invalid(h, user, site, NMM_INVALID_INTERIOR, realloc_call);
    }
    size_t room = s->block_size - state_user_off(st);
    bool bad = (st & 0xF0) == BS_ALIGNED_BAD;
    uint32_t kind = NMM_EV_NONE, detail = 0, asite = 0;
    size_t size = 0;
    if (!bad && h->checks) {
        bool has_site;
        kind = detect_check_block(h, user, room, DETECT_SIZE_FROM_HEADER, &detail, &size, &has_site);
        asite = slab_site(s, idx, has_site);
    } else {
        size = detect_header_size(detect_header_word(user));
    }
    uint8_t k = st & 15;
    if (bad || kind != NMM_EV_NONE) {
        block_retire(h, state);
    } else if (h->paranoid) {
        __atomic_store_n(state, (uint8_t)(BS_QUAR_ALIGNED | k), __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(state, (uint8_t)(BS_FREE_ALIGNED | k), __ATOMIC_RELAXED);
        if (!tc)
            slab_give_locked(h, cls, s, idx);
    }
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
    if (tc && !h->paranoid && !bad && kind == NMM_EV_NONE) {
        /* free state first, then the bin (a fork() child finds it in one place) */
        tbin_t *bin = &tc->bins[cls];
        if (bin->count == bin->cap)
            tcache_flush_bin(h, tc, cls, bin->cap / 2);
        tbin_push(bin, bin->count, block, state);
        free_account(h, cls, tc, true);
        return NMM_OK;
    }
    free_account(h, cls, NULL, false);
    if (bad) {
        heap_set_status(NMM_E_CORRUPTED);
        return NMM_E_CORRUPTED;
    }
    if (kind != NMM_EV_NONE)
        return heap_report(h, kind, detail, user, size, asite, site);
    if (h->paranoid) {
        /* poisoned from just after where a normal header ends, so sweeps and
         * reuse treat it like any other free block */
        uint8_t *poison = block + h->user_off;
        uint32_t len = s->block_size - h->user_off;
        if (tc)
            detect_tq_push(h, tc, user, poison, state, len, site, asite, (uint32_t)size);
        else
            detect_quarantine_push(h, user, poison, len, site, asite, (uint32_t)size);
    }
    return NMM_OK;
}

/* Index of the aligned live block whose user pointer is up, or -1. */
static int32_t alloc_find_aligned(const nmm_heap_t *h, slab_t *s, uintptr_t up)
{
    if (!h->has_hdr || up - (uintptr_t)s->data >= s->span)
        return -1;
    uint32_t ci = slab_index_containing(s, up);
    uint8_t st = __atomic_load_n(&slab_states(s)[ci], __ATOMIC_RELAXED);
    if (state_is_aligned_any(st) &&
        up == (uintptr_t)s->data + (size_t)ci * s->block_size + state_user_off(st))
        return (int32_t)ci;
    return -1;
}

/* ------------------------------------------------------------------ families */

static uint32_t align_shift_of(size_t align)
{
    return align > 16 ? (uint32_t)__builtin_ctzll(align) : 0;
}

/* The live slab block whose user pointer is p: its state byte and value, or NULL
 * (header levels). */
static uint8_t *alloc_live_state(const nmm_heap_t *h, const void *p, slab_t **sp, uint32_t *idxp,
                                 uint8_t *stp)
{
    uintptr_t up = (uintptr_t)p;
    slab_t *s = slab_of(h, up);
    if (!s)
        return NULL;
    uintptr_t block = up - h->user_off;
    int32_t idx = block >= (uintptr_t)s->data ? slab_index(s, block) : -1;
    uint8_t st;
    if (idx >= 0) {
        st = __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED);
        if (!state_is_live_unaligned(st))
            return NULL;
    } else {
        idx = alloc_find_aligned(h, s, up);
        if (idx < 0)
            return NULL;
        st = __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED);
        if (!state_is_aligned(st))
            return NULL;
    }
    *sp = s;
    *idxp = (uint32_t)idx;
    *stp = st;
    return &slab_states(s)[idx];
}

/* A block just handed out (so no other thread may touch it) records the family
 * of the call that made it. Checking levels. */
static void alloc_set_family(nmm_heap_t *h, void *p, uint32_t family)
{
    slab_t *s;
    uint32_t idx, have, shift, site;
    uint8_t st;
    size_t size;
    if ((uintptr_t)p - h->base >= h->region_size) {
        if (zero_owns(h, (uintptr_t)p))
            zero_swap_family(h, p, family, &have, &site);
        else
            large_swap_family(h, p, family, &have, &shift, &size, &site);
        return;
    }
    uint8_t *state = alloc_live_state(h, p, &s, &idx, &st);
    if (state)
        __atomic_store_n(state, state_with_family(st, family), __ATOMIC_RELAXED);
}

/* The freeing call (its family; for a sized delete its size, NMM_UNSIZED for
 * none; for an aligned delete its alignment, 0 for none) against the live block
 * at p: reports an alloc_dealloc_mismatch or a delete_size_mismatch, and turns a
 * live state of another family back into the malloc family's, so the free that
 * follows takes the usual paths. NMM_OK when nothing was reported, p not a live
 * block included (the free reports that). Checking levels. */
NMM_NOINLINE static nmm_status_t dealloc_check(nmm_heap_t *h, void *p, uint32_t family, size_t size,
                                               size_t align, nmm_site_t site)
{
    uint32_t have, have_shift = 0, asite = 0;
    size_t req = SIZE_MAX;  /* unknown (a damaged header): no size check */
    slab_t *s = NULL;
    uint32_t idx = 0;
    if (zero_owns(h, (uintptr_t)p)) {
        if (!zero_swap_family(h, p, NMM_FAMILY_MALLOC, &have, &asite))
            return NMM_OK;
        req = 0;
    } else if ((uintptr_t)p - h->base >= h->region_size) {
        if (!large_swap_family(h, p, NMM_FAMILY_MALLOC, &have, &have_shift, &req, &asite))
            return NMM_OK;
    } else {
        uint8_t st;
        uint8_t *state = alloc_live_state(h, p, &s, &idx, &st);
        if (!state)
            return NMM_OK;
        have = state_family(st);
        if (state_is_aligned(st))
            have_shift = st & 15;
        if (have == NMM_FAMILY_MALLOC && family == NMM_FAMILY_MALLOC)
            return NMM_OK;  /* free() of a malloc'd block: the common case */
        if (have != NMM_FAMILY_MALLOC &&
            !__atomic_compare_exchange_n(state, &st, state_with_family(st, NMM_FAMILY_MALLOC), false,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return NMM_OK;  /* freed meanwhile by another thread: its free says what */
    }
    /* C++: a sized delete gives the size new was asked for, an aligned delete the
     * alignment aligned new was (and only an aligned new's block takes one) */
    uint32_t want_shift = align_shift_of(align);
    bool cxx = family != NMM_FAMILY_MALLOC;
    bool sized = cxx && size != NMM_UNSIZED;
    if (have == family && !sized && (!cxx || want_shift == have_shift))
        return NMM_OK;
    if (s && detect_header_ok(h, p)) {  /* a slab block's size and site, for the check and the report */
        uint64_t hw = detect_header_word(p);
        req = detect_header_size(hw);
        asite = slab_site(s, idx, detect_header_has_site(hw));
    }
    size_t known = req == SIZE_MAX ? 0 : req;
    if (have != family)
        return heap_report(h, NMM_EV_ALLOC_DEALLOC_MISMATCH, have | family << 8, p, known, asite,
                           site);
    if ((sized && req != SIZE_MAX && size != req) || (cxx && want_shift != have_shift))
        return heap_report_extra(h, NMM_EV_DELETE_SIZE_MISMATCH,
                                 size > UINT32_MAX ? UINT32_MAX : (uint32_t)size,
                                 have_shift | want_shift << 8, p, known, asite, site);
    return NMM_OK;
}

void *nmm_alloc_as(nmm_heap_t *h, nmm_family_t family, size_t size, size_t alignment,
                   nmm_site_t site)
{
    if ((uint32_t)family > NMM_FAMILY_NEW_ARRAY)
        return alloc_fail(h, NMM_E_INVALID_ARGUMENT, EINVAL);
    void *p = alignment ? nmm_aligned_alloc(h, alignment, size, site) : nmm_alloc(h, size, site);
    if (p && family != NMM_FAMILY_MALLOC && h->checks)
        alloc_set_family(h, p, family);
    return p;
}

nmm_status_t nmm_free_as(nmm_heap_t *h, void *p, nmm_family_t family, size_t size, size_t alignment,
                         nmm_site_t site)
{
    if ((uint32_t)family > NMM_FAMILY_NEW_ARRAY || (alignment & (alignment - 1))) {
        heap_set_status(NMM_E_INVALID_ARGUMENT);
        return NMM_E_INVALID_ARGUMENT;
    }
    if (!p)
        return NMM_OK;
    nmm_status_t mm = h->checks ? dealloc_check(h, p, family, size, alignment, site) : NMM_OK;
    nmm_status_t st = nmm_free(h, p, site);
    if (st != NMM_OK)
        return st;
    if (mm != NMM_OK)
        heap_set_status(mm);
    return mm;
}

/* ------------------------------------------------------------------ free slow path */

NMM_NOINLINE static nmm_status_t free_block(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call);

/* Every free the fast paths did not finish: a block of another family (a new'd
 * one, by free or realloc) is reported first, then freed all the same. */
NMM_NOINLINE static nmm_status_t free_slow(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call)
{
    if (!p)
        return NMM_OK;
    nmm_status_t mm = h->checks ? dealloc_check(h, p, NMM_FAMILY_MALLOC, NMM_UNSIZED, 0, site) : NMM_OK;
    nmm_status_t st = free_block(h, p, site, realloc_call);
    return st != NMM_OK ? st : mm;
}

NMM_NOINLINE static nmm_status_t free_block(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call)
{
    uintptr_t up = (uintptr_t)p;
    if (up - h->base >= h->region_size) {
        if (zero_owns(h, up))
            return zero_free(h, p, site, realloc_call);
        int r = large_free(h, p, site, realloc_call);
        if (r >= 0)
            return (nmm_status_t)r;
        pthread_mutex_lock(&heap_table_lock);
        nmm_heap_t *other = heap_by_address(up, h);
        pthread_mutex_unlock(&heap_table_lock);
        return free_invalid(h, p, site, other ? NMM_INVALID_FOREIGN_HEAP : NMM_INVALID_WILD,
                            realloc_call);
    }
    slab_t *s = slab_of(h, up);
    if (!s)
        return free_invalid(h, p, site, NMM_INVALID_UNMAPPED, realloc_call);
    uintptr_t block = up - h->user_off;
    int32_t idx = block >= (uintptr_t)s->data ? slab_index(s, block) : -1;
    if (idx < 0) {
        int32_t ai = alloc_find_aligned(h, s, up);
        if (ai >= 0)
            return free_aligned(h, s, (uint32_t)ai, (uint8_t *)p, site, realloc_call);
        /* A freed or quarantined aligned block: its state still says where its
         * user pointer was. */
        if (h->has_hdr && up - (uintptr_t)s->data < s->span) {
            uint32_t ci = slab_index_containing(s, up);
            uintptr_t delta = up - ((uintptr_t)s->data + (size_t)ci * s->block_size);
            uint8_t st = __atomic_load_n(&slab_states(s)[ci], __ATOMIC_RELAXED);
            if (state_has_offset(st) && delta == state_user_off(st))
                return free_not_live(h, s, ci, (uint8_t *)p,
                                     (st & 0xF0) == BS_QUAR_ALIGNED ? BS_QUARANTINE : BS_FREE,
                                     s->block_size - delta, site, realloc_call);
        }
        return free_invalid(h, p, site, NMM_INVALID_INTERIOR, realloc_call);
    }
    uint8_t *user = (uint8_t *)p;
    tcache_t *tc = h->use_cache ? tcache_get(h) : NULL;
    if (h->paranoid && !tc)
        return free_paranoid(h, s, idx, user, site, realloc_call);
    uint8_t *state = &slab_states(s)[idx];
    uint8_t st = __atomic_load_n(state, __ATOMIC_RELAXED);
    int cls = s->cls;
    size_t room = s->block_size - h->user_off;
    if (st == BS_LIVE_BAD) {
        block_retire(h, state);
        free_account(h, cls, tc, false);
        heap_set_status(NMM_E_CORRUPTED);
        return NMM_E_CORRUPTED;
    }
    if (st != BS_LIVE)
        return free_not_live(h, s, (uint32_t)idx, user, st, room, site, realloc_call);
    if (h->checks && !detect_block_intact(h, user, room)) {
        free_account(h, cls, tc, false);
        return free_corrupted(h, s, state, user, site);
    }
    if (tc && h->paranoid) {
        uint64_t hw = detect_header_word(user);
        __atomic_store_n(state, BS_QUARANTINE, __ATOMIC_RELAXED);
        free_account(h, cls, tc, false);
        detect_tq_push(h, tc, user, user, state, (uint32_t)room, site,
                       slab_site(s, (uint32_t)idx, detect_header_has_site(hw)),
                       (uint32_t)detect_header_size(hw));
        return NMM_OK;
    }
    if (tc) {
        tbin_t *bin = &tc->bins[cls];
        if (bin->count == bin->cap)
            tcache_flush_bin(h, tc, cls, bin->cap / 2);
        __atomic_store_n(state, BS_FREE, __ATOMIC_RELAXED);
        tbin_push(bin, bin->count, (uint8_t *)block, state);
        free_account(h, cls, tc, true);
        return NMM_OK;
    }
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    if (__atomic_load_n(state, __ATOMIC_RELAXED) != BS_LIVE) {  /* lost a race with another free */
        st = __atomic_load_n(state, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&h->pools[cls].lock);
        return free_not_live(h, s, (uint32_t)idx, user, st, room, site, realloc_call);
    }
    __atomic_store_n(state, BS_FREE, __ATOMIC_RELAXED);
    slab_give_locked(h, cls, s, (uint32_t)idx);
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
    free_account(h, cls, NULL, false);
    return NMM_OK;
}

NMM_NOINLINE static nmm_status_t free_slow_status(nmm_heap_t *h, void *p, nmm_site_t site)
{
    nmm_status_t st = free_slow(h, p, site, false);
    if (st != NMM_OK)
        heap_set_status(st);
    return st;
}

/* Paranoid with a cache: validate, check header and canary, then poison into
 * this thread's quarantine. */
NMM_NOINLINE POISON_NO_MEMSET static nmm_status_t free_paranoid_fast(nmm_heap_t *h, void *p, nmm_site_t site)
{
    slab_t *s = slab_of(h, (uintptr_t)p);
    if (likely(s != NULL)) {
        uint8_t *block = (uint8_t *)p - CORE_HDR;
        int32_t idx = slab_index(s, (uintptr_t)block);
        tcache_t *tc = alloc_cache_fast(h);
        if (likely(idx >= 0 && tc != NULL)) {
            uint8_t *state = &slab_states(s)[idx];
            tbin_t *bin = &tc->bins[s->cls];
            uint32_t bs = s->block_size;
            if (likely(__atomic_load_n(state, __ATOMIC_RELAXED) == BS_LIVE &&
                       detect_block_intact(h, p, bs - CORE_HDR))) {
                uint64_t hw = detect_header_word(p);
                uint32_t asite = slab_site(s, (uint32_t)idx, detect_header_has_site(hw));
                uint32_t size = (uint32_t)detect_header_size(hw);
                __atomic_store_n(state, BS_QUARANTINE, __ATOMIC_RELAXED);
                /* steady state inline; filling the ring or its byte bound out of line */
                if (likely(tq_free_steady(h, tc, s->cls, p, p, state, bs - CORE_HDR, site,
                                          asite, size)))
                    return NMM_OK;
                tbin_note_uncached_free(tc, bin);
                detect_tq_push(h, tc, p, p, state, bs - CORE_HDR, site, asite, size);
                return NMM_OK;
            }
        }
    }
    return free_slow_status(h, p, site);
}

/* The canary's lines, asked for before the header is read. The canary sits at
 * user + size and size is in the header, so the two loads are dependent: for a
 * block another thread allocated (its header and canary lines were last written
 * on that thread's core) a free waited for two cache-line transfers one after
 * the other: ~730 cycles against ~100 for a local free (off, which reads no
 * block memory: ~80 either way). The class bounds where the canary can be
 * (detect_canary_window), so its first, second and last possible lines are
 * fetched alongside the header (~480 cycles); a window of up to three lines
 * (classes up to 512 B, most of 1 KiB's) is covered whole. Costs a local free
 * ~11 instructions. */
static inline void free_prefetch_canary(const slab_t *s, const uint8_t *user, uint32_t cls)
{
    uint32_t lo, hi;
    detect_canary_window(cls, s->block_size, &lo, &hi);
    NMM_PREFETCH(user + lo);
    NMM_PREFETCH(user + (lo + 64 < hi ? lo + 64 : hi));
    NMM_PREFETCH(user + hi);
}

/* Standard: validate, check header and canary, then push to the cache. A leaf
 * on the hit path (everything else tail-calls the slow path) with few live
 * values: the slab is done with (class and room read) before the check, the
 * cache is looked up only after it, and every load comes before the first
 * store (a state byte store may alias anything, and would force reloads). */
NMM_NOINLINE __attribute__((aligned(64))) static nmm_status_t free_standard(nmm_heap_t *h, void *p, nmm_site_t site)
{
    slab_t *s = slab_of(h, (uintptr_t)p);
    if (likely(s != NULL)) {
        int32_t idx = slab_index(s, (uintptr_t)p - CORE_HDR);
        if (likely(idx >= 0)) {
            uint8_t *state = &slab_states(s)[idx];
            uint32_t cls = s->cls;
            free_prefetch_canary(s, (const uint8_t *)p, cls);
            /* mutant skip_df_check: the block's state is not checked */
            if (likely((NMM_MUTANT(skip_df_check) ||
                        __atomic_load_n(state, __ATOMIC_RELAXED) == BS_LIVE) &&
                       detect_block_intact(h, p, s->block_size - CORE_HDR))) {
                tcache_t *tc = alloc_cache_fast(h);
                if (likely(tc != NULL)) {
                    tbin_t *bin = &tc->bins[cls];
                    uint32_t n = bin->count;
                    if (likely(n < bin->cap)) {
                        tbin_push(bin, n, (uint8_t *)p - CORE_HDR, state);
                        NMM_YIELD("bin.push");  /* in the bin, still reads live */
                        __atomic_store_n(state, BS_FREE, __ATOMIC_RELAXED);
                        return NMM_OK;
                    }
                }
            }
        }
    }
    return free_slow_status(h, p, site);
}

static nmm_status_t free_dispatch(nmm_heap_t *h, void *p, nmm_site_t site)
{
    uint8_t fast = __atomic_load_n(&h->fast, __ATOMIC_RELAXED);
    if (fast == FAST_STANDARD || fast == FAST_TRACKED)
        return free_standard(h, p, site);
    if (fast == FAST_PARANOID)
        return free_paranoid_fast(h, p, site);
    return free_slow_status(h, p, site);
}

/* Whether the live block at p carries an allocation context (a sampled stack):
 * its free is then recorded too. Validates p like free does before reading. */
static bool alloc_has_context(nmm_heap_t *h, const void *p)
{
    uint32_t id = 0;
    uintptr_t up = (uintptr_t)p;
    if (up - h->base >= h->region_size) {
        if (!large_lookup(h, p, NULL, NULL, &id))
            return false;
    } else {
        slab_t *s = slab_of(h, up);
        int32_t idx = s && up - CORE_HDR >= (uintptr_t)s->data ? slab_index(s, up - CORE_HDR) : -1;
        if (idx < 0 || __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED) != BS_LIVE ||
            !detect_header_ok(h, p))
            return false;
        id = slab_site(s, (uint32_t)idx, detect_header_has_site(detect_header_word(p)));
    }
    return (id >> TRACK_SITE_BITS) != 0;
}

/* Frees that record their context (stack and thread) for later reports:
 * every site-0 free at paranoid, and at tracking the free of a block whose
 * allocation was sampled. The context also names the free in any report this
 * call makes (it rides in the site argument: site | context << 16). */
NMM_NOINLINE static nmm_status_t free_recorded(nmm_heap_t *h, void *p, nmm_site_t site)
{
    if (site || !p || !h->tracking || !(h->paranoid || alloc_has_context(h, p)))
        return free_dispatch(h, p, site);
    uint32_t ctx = track_context();
    nmm_status_t st = free_dispatch(h, p, ctx << TRACK_SITE_BITS);
    if (st == NMM_OK)
        track_note_free(p, ctx);
    return st;
}

nmm_status_t nmm_free(nmm_heap_t *h, void *p, nmm_site_t site)
{
    uint8_t fast = __atomic_load_n(&h->fast, __ATOMIC_RELAXED);
    if (likely(fast == FAST_OFF)) {
        slab_t *s = slab_of(h, (uintptr_t)p);
        if (likely(s != NULL)) {
            int32_t idx = slab_index(s, (uintptr_t)p);
            tcache_t *tc = alloc_cache_fast(h);
            if (likely(idx >= 0 && tc != NULL)) {
                uint8_t *state = &slab_states(s)[idx];
                tbin_t *bin = &tc->bins[s->cls];
                uint32_t n = bin->count;
                if (likely(__atomic_load_n(state, __ATOMIC_RELAXED) == BS_LIVE && n < bin->cap)) {
                    tbin_push(bin, n, p, state);
                    NMM_YIELD("bin.push");  /* in the bin, still reads live */
                    __atomic_store_n(state, BS_FREE, __ATOMIC_RELAXED);
                    return NMM_OK;
                }
            }
        }
    } else if (fast == FAST_STANDARD) {
        return free_standard(h, p, site);
    } else if (fast == FAST_PARANOID && site) {
        return free_paranoid_fast(h, p, site);
    }
    return free_recorded(h, p, site);
}

/* The functions that can be the outermost allocator frame of a call: the API
 * and what it tail-calls (a tail call leaves no frame of the entry point). A
 * captured stack starts at the caller of the outermost of these (unwind.c). */
const void *const alloc_outer_functions[] = {
    (const void *)nmm_alloc,           (const void *)nmm_calloc,
    (const void *)nmm_realloc,         (const void *)nmm_aligned_alloc,
    (const void *)nmm_free,            (const void *)alloc_slow,
    (const void *)alloc_standard,      (const void *)alloc_standard_track,
    (const void *)alloc_standard_sited, (const void *)alloc_standard_counted,
    (const void *)free_standard,       (const void *)free_paranoid_fast,
    (const void *)free_slow_status,    (const void *)free_recorded,
    NULL,
};

/* ------------------------------------------------------------------ queries */

/* Live block at p: its room (bytes from p to the block end) and header size. */
typedef struct block_info {
    bool large;
    size_t room;       /* small: bytes from user to block end */
    size_t size;       /* requested (header levels) or usable */
    size_t usable;
    int cls;
    uint8_t state;
} block_info_t;

static bool alloc_block_info(nmm_heap_t *h, const void *p, block_info_t *bi)
{
    uintptr_t up = (uintptr_t)p;
    if (!p)
        return false;
    if (up - h->base >= h->region_size) {
        bi->large = true;
        bi->cls = -1;
        bi->state = BS_LIVE;
        bi->room = 0;
        if (zero_owns(h, up)) {
            bi->size = bi->usable = 0;
            return zero_live(h, p, NULL, NULL);
        }
        return large_lookup(h, p, &bi->size, &bi->usable, NULL);
    }
    slab_t *s = slab_of(h, up);
    if (!s)
        return false;
    uintptr_t block = up - h->user_off;
    int32_t idx = block >= (uintptr_t)s->data ? slab_index(s, block) : -1;
    uint32_t off = h->user_off;
    uint8_t st;
    if (idx >= 0) {
        st = __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED);
        if (!state_is_live_unaligned(st) && st != BS_LIVE_BAD)
            return false;
    } else {
        idx = alloc_find_aligned(h, s, up);
        if (idx < 0)
            return false;
        st = __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED);
        off = state_user_off(st);
    }
    bi->large = false;
    bi->cls = s->cls;
    bi->state = st;
    bi->room = s->block_size - off;
    if (h->has_hdr) {
        size_t hsize = detect_header_size(detect_header_word(p));
        bi->size = hsize + (h->checks ? CORE_CANARY : 0) <= bi->room
                       ? hsize
                       : bi->room - (h->checks ? CORE_CANARY : 0);
        bi->usable = h->checks ? bi->size : bi->room;
    } else {
        bi->size = bi->usable = bi->room;
    }
    return true;
}

size_t nmm_usable_size(nmm_heap_t *h, const void *p)
{
    block_info_t bi;
    return alloc_block_info(h, p, &bi) ? bi.usable : 0;
}

/* Why p is not a live block start (for invalid_pointer). */
static uint32_t alloc_invalid_reason(nmm_heap_t *h, const void *p)
{
    uintptr_t up = (uintptr_t)p;
    if (up - h->base >= h->region_size) {
        if (zero_owns(h, up))
            return (up - ((uintptr_t)p & ~(uintptr_t)15)) ? NMM_INVALID_INTERIOR : NMM_INVALID_FREED;
        if (large_was_freed(h, p))
            return NMM_INVALID_FREED;
        if (large_contains(h, up))
            return NMM_INVALID_INTERIOR;
        pthread_mutex_lock(&heap_table_lock);
        nmm_heap_t *other = heap_by_address(up, h);
        pthread_mutex_unlock(&heap_table_lock);
        return other ? NMM_INVALID_FOREIGN_HEAP : NMM_INVALID_WILD;
    }
    slab_t *s = slab_of(h, up);
    if (!s)
        return NMM_INVALID_UNMAPPED;
    if (up - (uintptr_t)s->data >= s->span)
        return NMM_INVALID_INTERIOR;  /* the slab's lead or its tail */
    uint32_t ci = slab_index_containing(s, up);
    uint8_t st = __atomic_load_n(&slab_states(s)[ci], __ATOMIC_RELAXED);
    uintptr_t start = (uintptr_t)s->data + (size_t)ci * s->block_size;
    if (up != start + (state_has_offset(st) ? state_user_off(st) : h->user_off))
        return NMM_INVALID_INTERIOR;
    return st == BS_NEVER ? NMM_INVALID_UNMAPPED : NMM_INVALID_FREED;
}

size_t nmm_usable_size_checked(nmm_heap_t *h, const void *p, nmm_site_t site)
{
    block_info_t bi;
    if (!p)
        return 0;
    if (alloc_block_info(h, p, &bi))
        return bi.usable;
    heap_report(h, NMM_EV_INVALID_POINTER, alloc_invalid_reason(h, p), p, 0, 0, site);
    return 0;
}

size_t nmm_requested_size(nmm_heap_t *h, const void *p)
{
    block_info_t bi;
    return alloc_block_info(h, p, &bi) ? bi.size : 0;
}

/* ------------------------------------------------------------------ calloc/realloc/aligned */

void *nmm_calloc(nmm_heap_t *h, size_t count, size_t size, nmm_site_t site)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total))
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    void *p = nmm_alloc(h, total, site);
    if (!p)
        return p;
    /* Fresh large mappings are already zero; a cached one is zeroed. */
    if ((uintptr_t)p - h->base < h->region_size)
        memset(p, 0, total);
    else
        large_zero_reused(h, p, total);
    return p;
}

void *nmm_aligned_alloc(nmm_heap_t *h, size_t alignment, size_t size, nmm_site_t site)
{
    if (alignment == 0 || (alignment & (alignment - 1)))
        return alloc_fail(h, NMM_E_INVALID_ARGUMENT, EINVAL);
    if (alignment <= 16)
        return nmm_alloc(h, size, site);
    if (alignment > CORE_MAX_REQUEST)  /* as for sizes: no mapping can hold it */
        return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    return alloc_slow(h, size, site, alignment);
}

void *nmm_realloc(nmm_heap_t *h, void *p, size_t size, nmm_site_t site)
{
    if (!p)
        return nmm_alloc(h, size, site);
    block_info_t bi;
    if (!alloc_block_info(h, p, &bi)) {
        nmm_status_t st = free_slow(h, p, site, true);
        if (st == NMM_OK)  /* cannot happen: not live means reported */
            st = NMM_E_INVALID_POINTER;
        heap_set_status(st);
        errno = EINVAL;
        return NULL;
    }
    if (size == 0) {
        /* the zero-size block first: a NULL from realloc leaves p as it was, as for
         * any size (freeing first lost p to a failed allocation: a fail point, the
         * limit, and the caller that kept p freed it twice) */
        void *z = nmm_alloc(h, 0, site);
        if (z)
            nmm_free(h, p, site);
        return z;
    }
    /* In place when the new size needs the same class and the block is intact. */
    if (!bi.large && !h->paranoid && bi.state == BS_LIVE && size <= CORE_MAX_REQUEST &&
        sizeclass_of(size + h->user_off + (h->checks ? CORE_CANARY : 0)) == bi.cls &&
        (!h->checks || detect_block_intact(h, p, bi.room))) {
        if (h->has_hdr)  /* the site stays: site[] is untouched, the flag kept */
            detect_write_header(h, p, size, detect_header_has_site(detect_header_word(p)));
        if (h->checks)
            detect_write_canary(h, p, size, bi.room);
        return p;
    }
    /* Large to large: mremap, no copy and no fresh pages (where reuse is allowed).
     * Not when tracking: the block must take the realloc's site and sampled stack,
     * as the allocate-copy-free path gives it. */
    if (bi.large && !h->tracking && size <= CORE_MAX_REQUEST &&
        sizeclass_of(size + h->user_off + (h->checks ? CORE_CANARY : 0)) < 0) {
        bool fallback;
        void *q = large_realloc(h, p, size, site, &fallback);
        if (q)
            return q;
        if (!fallback)
            return alloc_fail(h, NMM_E_NOMEM, ENOMEM);
    }
    void *q = nmm_alloc(h, size, site);
    if (!q)
        return NULL;
    memcpy(q, p, bi.size < size ? bi.size : size);
    nmm_free(h, p, site);
    return q;
}
