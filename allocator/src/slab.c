/* slab.c — the heap's address space: one reserved region carved into slabs, the
 * chunk -> slab map, out-of-band slab descriptors, and the per-class pools of
 * partial and empty slabs (growth and contraction). Must not touch block memory
 * (free stacks are out of band). Class pools: under their class lock; the region
 * bump pointer and released ranges: under the region lock (taken after a class lock).
 */
#include "core.h"

#include <errno.h>

/* The largest per-chunk metadata (16-B blocks, no lead: 4096 of them) fits what
 * is reserved per chunk, alignment included. */
_Static_assert(4096 * 3 + 2 + CORE_META_ALIGN <= CORE_META_DESC_PER_CHUNK, "descriptors");
_Static_assert(sizeof(slab_t) <= CORE_META_HDR, "descriptor headers");
_Static_assert(4096 * 4 + CORE_META_ALIGN <= CORE_META_SITES_PER_CHUNK, "sites");

/* Headers start half a page off the bodies' page alignment: with both bump areas at
 * offset 0 of a page, the first slabs' headers and state bytes had the same low 12
 * address bits, and a free's store to a state byte followed by loads of the header
 * (4K aliasing: the load waits on a store it only seems to depend on) made pair64
 * 1.7x slower (12.7 -> 21.4 ns a pair) with fewer instructions. The lead keeps the
 * body area page aligned (its pages are given back one by one). */
#define META_HDR_SKEW 2048
#define META_HDR_LEAD 4096

static size_t body_refs_bytes(size_t chunks)
{
    return (chunks * CORE_META_DESC_PER_CHUNK / os_page_size() + 1) * sizeof(uint16_t);
}

static size_t meta_round(size_t n)
{
    return (n + CORE_META_ALIGN - 1) & ~(size_t)(CORE_META_ALIGN - 1);
}

bool slab_region_init(nmm_heap_t *h)
{
#ifdef NMM_TEST_REGION_BYTES
    /* tests/test_c_stress.py only: a tiny region, so "region full" is reachable */
    static const size_t tries[] = {NMM_TEST_REGION_BYTES};
#else
    static const size_t tries[] = {(size_t)64 << 30, (size_t)16 << 30, (size_t)4 << 30,
                                   (size_t)1 << 30, (size_t)256 << 20};
#endif
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        size_t size = tries[i];
        size_t chunks = size >> CORE_CHUNK_SHIFT;
        void *base = os_reserve(size);
        if (!base)
            continue;
        size_t meta_size = META_HDR_LEAD + chunks * (CORE_META_HDRS_PER_CHUNK +
                                                     CORE_META_DESC_PER_CHUNK +
                                                     CORE_META_SITES_PER_CHUNK);
        size_t refs = body_refs_bytes(chunks);
        void *meta = os_map_sparse(meta_size);
        void *map = os_map_sparse(chunks * sizeof(slab_t *));
        void *body_refs = os_map_sparse(refs);
        if (!meta || !map || !body_refs) {
            os_unmap(base, size);
            if (meta)
                os_unmap(meta, meta_size);
            if (map)
                os_unmap(map, chunks * sizeof(slab_t *));
            if (body_refs)
                os_unmap(body_refs, refs);
            continue;
        }
        h->base = (uintptr_t)base;
        h->region_size = size;
        h->meta = meta;
        h->meta_size = meta_size;
        h->meta_bodies = META_HDR_LEAD + chunks * CORE_META_HDRS_PER_CHUNK;
        h->meta_sites = h->meta_bodies + chunks * CORE_META_DESC_PER_CHUNK;
        h->meta_used = META_HDR_SKEW;
        h->bodies_used = h->sites_used = 0;
        h->body_refs = body_refs;
        h->body_page = os_page_size();
        h->chunk_map = map;
        h->region_used = 0;
        return true;
    }
    errno = ENOMEM;
    return false;
}

void slab_region_destroy(nmm_heap_t *h)
{
    size_t chunks = h->region_size >> CORE_CHUNK_SHIFT;
    os_unmap((void *)h->base, h->region_size);
    os_unmap(h->meta, h->meta_size);
    os_unmap(h->chunk_map, chunks * sizeof(slab_t *));
    os_unmap(h->body_refs, body_refs_bytes(chunks));
}

static void list_push(slab_t **head, slab_t *s)
{
    NMM_ASSERT(s != *head && !s->prev);
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

static void list_unlink(slab_t **head, slab_t *s)
{
    NMM_ASSERT(s->prev ? s->prev->next == s : *head == s);
    NMM_ASSERT(!s->next || s->next->prev == s);
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* Region lock held: a descriptor and site[] for at least nblocks blocks, a
 * spare one or made from the meta area; NULL when that is full. */
static slab_t *slab_desc_new(nmm_heap_t *h, uint32_t nblocks)
{
    for (slab_t **at = &h->spare_desc; *at; at = &(*at)->next_free) {
        if ((*at)->cap >= nblocks) {
            slab_t *s = *at;
            *at = s->next_free;
            return s;
        }
    }
    size_t body = meta_round((size_t)nblocks * 3 + 2);
    size_t sites = meta_round((size_t)nblocks * 4);
    if (h->meta_used + CORE_META_HDR > h->meta_bodies ||
        h->meta_bodies + h->bodies_used + body > h->meta_sites ||
        h->meta_sites + h->sites_used + sites > h->meta_size)
        return NULL;
    slab_t *s = (slab_t *)(h->meta + h->meta_used);
    h->meta_used += CORE_META_HDR;
    s->states = h->meta + h->meta_bodies + h->bodies_used;
    h->bodies_used += body;
    /* site[] is never cleared: an entry counts only for a block whose header
     * has HDR_SITE, written when the block is handed out with a site */
    s->sites = (uint32_t *)(h->meta + h->meta_sites + h->sites_used);
    h->sites_used += sites;
    s->cap = (uint16_t)nblocks;
    return s;
}

/* Region lock held: s's body (states and stack, made for cap blocks) goes into use
 * (+1) or out of it (-1). A page of the body area no body in use is on goes back to
 * the OS: bodies are packed, so a released slab's body shares its first and last
 * pages with its neighbours', and with the headers elsewhere nothing else pins them
 * (8 lanes' worth of descriptors stayed resident after their threads were gone). */
static void slab_body_use(nmm_heap_t *h, slab_t *s, int delta, size_t page)
{
    size_t from = (size_t)(s->states - (h->meta + h->meta_bodies));
    size_t last = from + (size_t)s->cap * 3 + 1;
    for (size_t p = from / page; p <= last / page; p++) {
        if (delta > 0)
            h->body_refs[p]++;
        else if (--h->body_refs[p] == 0)
            os_decommit(h->meta + h->meta_bodies + p * page, page);
    }
}

static void slab_desc_spare(nmm_heap_t *h, slab_t *s)
{
    s->next_free = h->spare_desc;
    h->spare_desc = s;
}

/* Region lock held: a range another class of the same slab size gave back, or
 * NULL. One whose descriptor has room for nblocks is taken as it is; else the
 * first one gets a descriptor sized for nblocks (its old one becomes a spare),
 * so a class with more blocks per slab reuses ranges too. */
static slab_t *slab_reuse_released(nmm_heap_t *h, int cls, uint32_t nblocks)
{
    slab_t **small = NULL;
    for (int c = 0; c < CORE_CLASSES; c++) {
        if (c == cls || sizeclass_slab_bytes[c] != sizeclass_slab_bytes[cls])
            continue;
        for (slab_t **at = &h->released[c]; *at; at = &(*at)->next_free) {
            if ((*at)->cap >= nblocks) {
                slab_t *s = *at;
                *at = s->next_free;
                return s;
            }
            if (!small)
                small = at;
        }
    }
    if (!small)
        return NULL;
    slab_t *s = slab_desc_new(h, nblocks);
    if (!s)
        return NULL;
    slab_t *old = *small;  /* still first on its stack: slab_desc_new changed no stack */
    *small = old->next_free;
    s->data = old->data;
    slab_desc_spare(h, old);
    return s;
}

/* The slab.desc fail point: a new range's slab gets no descriptor, as when the heap's
 * metadata area is full (the failure path no other point reaches: it is taken with the
 * region lock held). Only for a range from the bump pointer: a reused range whose
 * descriptor is refused would go on to the bump pointer and succeed. Only called when
 * slab_new found the fail points armed: that one read of the flag serves all three of
 * its points, so a disarmed heap takes no extra atomic here (each is a yield point of
 * the chaos build, and one more per new slab moved every recorded schedule). */
static bool slab_desc_refused(nmm_heap_t *h, uint32_t bytes, bool *injected)
{
    if (!failpoint_should_fail(h, FP_SLAB_DESC, bytes))
        return false;
    __atomic_fetch_add(&h->injected_failures, 1, __ATOMIC_RELAXED);
    *injected = true;
    return true;
}

/* A fresh slab of lane for cls: a range this class gave back, a range another
 * class of the same slab size gave back (reuse before growth), or the bump
 * pointer. Class lock held. NULL when the region is full, the kernel refuses, or a
 * fail point fires (then *injected is set). */
static slab_t *slab_new(nmm_heap_t *h, int cls, uint32_t lane, bool *injected)
{
    uint32_t bytes = sizeclass_slab_bytes[cls];
    uint32_t bs = sizeclass_table[cls];
    bool armed = unlikely(heap_failpoints_armed(h));
    if (armed &&
        (failpoint_should_fail(h, FP_POOL_GROW, bs) || failpoint_should_fail(h, FP_OS_MAP, bytes))) {
        __atomic_fetch_add(&h->injected_failures, 1, __ATOMIC_RELAXED);
        *injected = true;
        return NULL;
    }
    uint32_t nblocks = (bytes - h->user_off) / bs;
    NMM_YIELD("region.lock");
    heap_lock(h, &h->region_lock);
    slab_t *s = h->released[cls];
    uint8_t *data;
    if (s)  /* its descriptor and site[] fit */
        h->released[cls] = s->next_free;
    else
        s = slab_reuse_released(h, cls, nblocks);
    if (s) {
        data = s->data;
    } else {
        if (h->region_used + bytes > h->region_size ||
            (armed && slab_desc_refused(h, bytes, injected)) || !(s = slab_desc_new(h, nblocks))) {
            pthread_mutex_unlock(&h->region_lock);
            return NULL;
        }
        data = (uint8_t *)h->base + h->region_used;
        if (!os_commit(data, bytes)) {
            slab_desc_spare(h, s);
            pthread_mutex_unlock(&h->region_lock);
            return NULL;
        }
        h->region_used += bytes;
        /* the lead: at header levels user = block + 8 is 16-byte aligned */
        data += h->user_off;
    }
    slab_body_use(h, s, +1, h->body_page);
    pthread_mutex_unlock(&h->region_lock);
    NMM_YIELD("region.unlock");

    s->data = data;
    s->block_size = bs;
    s->recip = (((uint64_t)1 << CORE_RECIP_SHIFT) + bs - 1) / bs;
    s->nblocks = (uint16_t)nblocks;
    s->cls = (uint16_t)cls;
    s->nstack = 0;
    s->bump = 0;
    s->list = SL_NONE;
    s->released = 0;
    s->lane = (uint8_t)lane;
    s->out_high = s->touched = 0;
    s->next = s->prev = s->next_free = NULL;
    s->chunks = bytes >> CORE_CHUNK_SHIFT;
    s->span = (uint32_t)s->nblocks * bs;
    s->plain_span = s->span;
    memset(slab_states(s), 0, s->nblocks);
    detect_poison_fresh(h, s);
    size_t first = ((uintptr_t)data - h->base) >> CORE_CHUNK_SHIFT;
    for (uint32_t i = 0; i < s->chunks; i++)
        __atomic_store_n(&h->chunk_map[first + i], s, __ATOMIC_RELEASE);
    h->pools[cls].nslabs++;
    __atomic_fetch_add(&h->slabs_mapped, 1, __ATOMIC_RELAXED);
    heap_account_mapped(h, bytes);
    return s;
}

/* Give an empty slab's pages back to the OS and its range to the region. Class
 * lock held; s is on no list. */
static void slab_release(nmm_heap_t *h, int cls, slab_t *s)
{
    uint32_t bytes = sizeclass_slab_bytes[cls];
    size_t first = (slab_base(s) - h->base) >> CORE_CHUNK_SHIFT;
    for (uint32_t i = 0; i < s->chunks; i++)
        __atomic_store_n(&h->chunk_map[first + i], NULL, __ATOMIC_RELEASE);
    os_decommit((void *)slab_base(s), bytes);
    /* os_page_size() here, not h->body_page: its atomic load is the yield point this
     * path had before the descriptor split (the recorded chaos schedules count them) */
    size_t page = os_page_size();
    h->pools[cls].nslabs--;
    __atomic_fetch_add(&h->slabs_returned, 1, __ATOMIC_RELAXED);
    heap_account_mapped(h, -(int64_t)bytes);
    NMM_YIELD("region.lock");
    heap_lock(h, &h->region_lock);
    /* its body's pages that no slab in use shares go back too: the descriptor stays
     * with the range, and a range is reused only once a class needs a slab again,
     * which clears the states (slab_new) */
    slab_body_use(h, s, -1, page);
    s->released = 1;
    s->next_free = h->released[cls];
    h->released[cls] = s;
    pthread_mutex_unlock(&h->region_lock);
    NMM_YIELD("region.unlock");
}

/* Class lock held; gone is an empty slab about to be released, off the empty list.
 * Of the empty slabs cls keeps, the one whose body lies highest above gone's (same
 * cap) takes gone's body, its states and free stack copied over; gone leaves with
 * the higher one, whose pages slab_release gives back when no body in use is on
 * them. Which empty slabs a class keeps is decided by their pages (the coldest
 * go), but each kept one's body pins a page of the body area: threads living 8 at a
 * time left the 28 kept slabs' bodies on 21-28 pages after 10,000 lifetimes where
 * one lifetime left them on 9. Both slabs are empty, so no cache or quarantine holds
 * a pointer into either body; the heap's walks take every class lock. The site
 * arrays stay with their descriptors (a late double free's report reads them). */
static void slab_keep_low_body(sizeclass_pool_t *pool, slab_t *gone)
{
    slab_t *high = NULL;
    for (slab_t *t = pool->empty; t; t = t->next)
        if (t->cap == gone->cap && t->states > (high ? high->states : gone->states))
            high = t;
    if (!high || high->nstack != high->bump || high->bump > high->nblocks)
        return;  /* none, or not an empty slab's books (damaged): no copy past them */
    uint8_t *low = gone->states;
    memcpy(low, high->states, high->nblocks);
    gone->states = high->states;
    high->states = low;
    memcpy(slab_stack(high), slab_stack(gone), (size_t)high->nstack * sizeof(uint16_t));
}

/* The n coldest empty slabs of cls (the list's tail: slabs are kept and taken at
 * its head) go back to the OS; the ones kept take the lowest bodies. Class lock held. */
static void slab_release_coldest(nmm_heap_t *h, int cls, uint64_t n)
{
    sizeclass_pool_t *pool = &h->pools[cls];
    uint32_t bytes = sizeclass_slab_bytes[cls];
    slab_t *s = pool->empty;
    while (s && s->next)
        s = s->next;
    for (; n && s; n--) {
        slab_t *colder = s->prev;
        list_unlink(&pool->empty, s);
        pool->nempty--;
        __atomic_fetch_sub(&h->retained_bytes, bytes, __ATOMIC_RELAXED);
        s->list = SL_NONE;
        slab_keep_low_body(pool, s);
        slab_release(h, cls, s);
        s = colder;
    }
    if (pool->nempty < pool->empty_low)
        pool->empty_low = pool->nempty;
}

/* A decay step's look at s, a kept empty slab: blocks [0, touched) are all whose
 * memory it may still have resident, and it had at most out_high of them out at once
 * (in caches or live) during the step. The pages only blocks past out_high occupy go
 * back to the OS, and the free stack is rewritten in address order (block 0 on top),
 * so the next uses take blocks 0, 1, 2, ... first: until the slab has more than that
 * many out at once, it hands out nothing past them (a pop takes what was pushed back,
 * which it handed out, before the sorted rest), so [0, out_high) is all it touches.
 * The pages of a slab kept empty otherwise only grew: over many short lifetimes of
 * threads that each took a few blocks, the free stack handed out whichever blocks were
 * freed last, and every block any of them ever took stayed resident. mimalloc resets
 * and jemalloc decays unused pages of a slab kept for reuse the same way; the step's
 * high-water mark is the decay's low-water mark on the free stack. The blocks keep
 * their state (BS_FREE: a late double free still reads as one, without the size and
 * site its zeroed header held) and the slab its bump; their memory reads as zero when
 * handed out again. Not at paranoid: free blocks keep their poison there. A page goes
 * back once per rise of the slab's need, so the madvise calls are bounded by the page
 * faults that brought the pages in. Class lock held. */
static void slab_trim(nmm_heap_t *h, int cls, slab_t *s)
{
    uint32_t need = s->out_high, touched = s->touched > need ? s->touched : need;
    s->out_high = 0;
    s->touched = (uint16_t)touched;
    if (need >= touched || h->paranoid)
        return;
    uintptr_t page = h->body_page, end = slab_base(s) + sizeclass_slab_bytes[cls];
    uintptr_t from = ((uintptr_t)s->data + (size_t)need * s->block_size + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)s->data + (size_t)touched * s->block_size + page - 1) & ~(page - 1);
    if (to > end)
        to = end;
    if (from >= to)
        return;  /* the blocks it needed and the ones it did not share their pages */
    if (s->nstack != s->bump || touched > s->bump)
        return;  /* not an empty slab's books (damaged): left as they are, for validate */
    uint16_t *stack = slab_stack(s);
    for (uint32_t i = 0, n = s->bump; i < n; i++)
        stack[i] = (uint16_t)(n - 1 - i);
    os_decommit((void *)from, to - from);
    s->touched = (uint16_t)need;
}

/* A decay step of cls (CORE_DECAY_EVENTS): the empty slabs it kept through the
 * whole step unused (its low-water mark) go back to the OS, the coldest first;
 * the ones it kept give back the pages they did not need in the step (slab_trim).
 * Class lock held. */
static void slab_decay(nmm_heap_t *h, int cls)
{
    sizeclass_pool_t *pool = &h->pools[cls];
    slab_release_coldest(h, cls, pool->empty_low);
    for (slab_t *s = pool->empty; s; s = s->next)
        slab_trim(h, cls, s);
    pool->empty_events = 0;
    pool->empty_low = pool->nempty;
}

/* A slab became fully free: keep it while the heap retains less than
 * retain_bytes of empty slabs, else return it; every CORE_DECAY_EVENTS of
 * these, a decay step. Class lock held. */
static void slab_became_empty(nmm_heap_t *h, int cls, slab_t *s)
{
    sizeclass_pool_t *pool = &h->pools[cls];
    uint32_t bytes = sizeclass_slab_bytes[cls];
    if (s->list == SL_PARTIAL)
        list_unlink(&pool->partial[s->lane], s);
    /* no block of it is live (nor in a cache): an aligned one it held is gone */
    s->plain_span = s->span;
    uint64_t kept = __atomic_load_n(&h->retained_bytes, __ATOMIC_RELAXED);
    if (kept + bytes <= h->cfg.retain_bytes) {
        __atomic_fetch_add(&h->retained_bytes, bytes, __ATOMIC_RELAXED);
        list_push(&pool->empty, s);
        s->list = SL_EMPTY;
        pool->nempty++;
    } else {
        s->list = SL_NONE;
        slab_release(h, cls, s);
    }
    if (++pool->empty_events >= CORE_DECAY_EVENTS)
        slab_decay(h, cls);
}

/* Class lock held, the lane's list empty: another lane's partial slab, moved to
 * this lane (the region is full: better blocks a thread of that lane also uses
 * than none), or NULL. */
static slab_t *slab_steal(sizeclass_pool_t *pool, uint32_t lane)
{
    for (uint32_t l = 0; l < CORE_LANES; l++) {
        slab_t *s = pool->partial[l];
        if (s) {
            list_unlink(&pool->partial[l], s);
            s->lane = (uint8_t)lane;
            list_push(&pool->partial[lane], s);
            return s;
        }
    }
    return NULL;
}

uint32_t slab_take_locked(nmm_heap_t *h, int cls, uint32_t lane, blockref_t *out, uint32_t n)
{
    sizeclass_pool_t *pool = &h->pools[cls];
    slab_t **partial = &pool->partial[lane];
    uint32_t got = 0;
    while (got < n) {
        slab_t *s = *partial;
        if (!s && pool->empty) {
            s = pool->empty;
            list_unlink(&pool->empty, s);
            pool->nempty--;
            if (pool->nempty < pool->empty_low)
                pool->empty_low = pool->nempty;
            __atomic_fetch_sub(&h->retained_bytes, sizeclass_slab_bytes[cls], __ATOMIC_RELAXED);
            s->lane = (uint8_t)lane;
            list_push(partial, s);
            s->list = SL_PARTIAL;
        }
        if (!s) {
            /* Grow only when nothing was found: a refill that got some blocks
             * returns them, so a failed growth (a fail point included) always
             * surfaces as a failed allocation, never silently. Only a growth the
             * region or the kernel refused takes another lane's slab instead. */
            if (got)
                break;
            bool injected = false;
            s = slab_new(h, cls, lane, &injected);
            if (s) {
                list_push(partial, s);
                s->list = SL_PARTIAL;
            } else if (injected || !(s = slab_steal(pool, lane))) {
                break;
            }
        }
        NMM_ASSERT(s->cls == cls && s->lane == lane && s->list == SL_PARTIAL);
        uint8_t *states = slab_states(s);
        uint16_t *stack = slab_stack(s);
        uint32_t bs = s->block_size;
        while (got < n && slab_free_count(s) > 0) {
            uint32_t idx = s->nstack ? stack[--s->nstack] : s->bump++;
            NMM_ASSERT(idx < s->nblocks && s->nstack <= s->nblocks);
            if (unlikely(h->paranoid) && states[idx] == BS_NEVER && detect_fresh_damaged(h, s, idx)) {
                alloc_retire(h, s->data + (size_t)idx * bs);
                continue;
            }
            out[got].block = s->data + (size_t)idx * bs;
            out[got].state = &states[idx];
            got++;
        }
        if ((uint32_t)(s->bump - s->nstack) > s->out_high)
            s->out_high = (uint16_t)(s->bump - s->nstack);
        if (slab_free_count(s) == 0) {
            list_unlink(partial, s);
            s->list = SL_NONE;
        }
    }
    return got;
}

#ifdef NMM_CHAOS
/* mutant refill_unlocked: the slab is picked under the class lock, its free stack and
 * bump pointer are read after the lock is dropped */
static uint32_t slab_take_mutant(nmm_heap_t *h, int cls, uint32_t lane, blockref_t *out, uint32_t n)
{
    sizeclass_pool_t *pool = &h->pools[cls];
    heap_lock(h, &pool->lock);
    slab_t *s = pool->partial[lane];
    if (!s) {
        uint32_t got = slab_take_locked(h, cls, lane, out, n);
        pthread_mutex_unlock(&pool->lock);
        return got;
    }
    pthread_mutex_unlock(&pool->lock);
    uint8_t *states = slab_states(s);
    uint16_t *stack = slab_stack(s);
    uint32_t got = 0;
    while (got < n && slab_free_count(s) > 0) {
        uint16_t top = s->nstack, bump = s->bump;
        NMM_YIELD("mutant.refill_unlocked");
        uint32_t idx;
        if (top) {
            idx = stack[top - 1];
            s->nstack = (uint16_t)(top - 1);
        } else {
            idx = bump;
            s->bump = (uint16_t)(bump + 1);
        }
        out[got].block = s->data + (size_t)idx * s->block_size;
        out[got].state = &states[idx];
        got++;
    }
    heap_lock(h, &pool->lock);
    if (slab_free_count(s) == 0 && s->list == SL_PARTIAL) {
        list_unlink(&pool->partial[s->lane], s);
        s->list = SL_NONE;
    }
    pthread_mutex_unlock(&pool->lock);
    return got;
}
#endif

uint32_t slab_take(nmm_heap_t *h, int cls, uint32_t lane, blockref_t *out, uint32_t n)
{
#ifdef NMM_CHAOS
    if (NMM_MUTANT(refill_unlocked))
        return slab_take_mutant(h, cls, lane, out, n);
#endif
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    if (NMM_MUTANT(lock_inversion)) {
        /* mutant: the refill notes itself in the thread registry inside the class
         * lock; a thread's exit takes the registry lock, then class locks */
        pthread_mutex_lock(&tcache_registry_lock);
        pthread_mutex_unlock(&tcache_registry_lock);
    }
    uint32_t got = slab_take_locked(h, cls, lane, out, n);
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
    return got;
}

void slab_give_locked(nmm_heap_t *h, int cls, slab_t *s, uint32_t idx)
{
    NMM_ASSERT(s->cls == cls && idx < s->bump && s->nstack < s->bump); /* given back: handed out once */
    if (NMM_MUTANT(xfree_unsync)) {
        /* mutant: the stack top is read, then the push is made without the lock
         * held across it (at the top read before) */
        uint16_t top = s->nstack;
        pthread_mutex_unlock(&h->pools[cls].lock);
        NMM_YIELD("mutant.xfree_unsync");
        heap_lock(h, &h->pools[cls].lock);
        s->nstack = top;
    }
    slab_stack(s)[s->nstack++] = (uint16_t)idx;
    if (slab_free_count(s) == s->nblocks) {
        slab_became_empty(h, cls, s);
    } else if (s->list == SL_NONE) {
        list_push(&h->pools[cls].partial[s->lane], s);
        s->list = SL_PARTIAL;
    }
}

void slab_give(nmm_heap_t *h, int cls, const blockref_t *in, uint32_t n, uint64_t keep_empty)
{
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    for (uint32_t i = 0; i < n; i++) {
        slab_t *s = slab_of(h, (uintptr_t)in[i].block);
        slab_give_locked(h, cls, s, (uint32_t)(in[i].state - slab_states(s)));
    }
    if (h->pools[cls].nempty > keep_empty)
        slab_release_coldest(h, cls, h->pools[cls].nempty - keep_empty);
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
}
