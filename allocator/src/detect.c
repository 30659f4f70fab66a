/* detect.c — corruption classification of a block (header, head guard, tail
 * canary), poisoning, and the paranoid quarantine (a bounded FIFO of poisoned
 * freed blocks, verified when they leave it). Must not allocate or report while
 * holding the quarantine lock. The quarantine is shared: its ring is under
 * quar_lock; a block's state byte under its class lock.
 */
#include "poison.h"

uint32_t detect_check_block(const nmm_heap_t *h, const uint8_t *user, size_t room, size_t known_size,
                            uint32_t *detail, size_t *size, bool *has_site)
{
    *size = 0;
    *has_site = false;
    *detail = 0;
    uint64_t k = detect_addr_key(h, (uintptr_t)user);
    uint64_t hw = detect_header_word(user);
    uint64_t want = detect_header_k(h, k, hw & HDR_LO_MASK);
    uint64_t diff = hw ^ want;
    size_t hsize = detect_header_size(hw);
    size_t sz = known_size == DETECT_SIZE_FROM_HEADER ? hsize : known_size;
    bool check_ok = ((diff >> HDR_CHECK_SHIFT) & HDR_CHECK_MASK) == 0;
    /* large blocks: the header's (saturated) size must match the table's */
    bool size_ok = check_ok && sz + CORE_CANARY <= room &&
                   (known_size == DETECT_SIZE_FROM_HEADER ||
                    (hw & HDR_SIZE_MASK) == (detect_header_lo(known_size, false) & HDR_SIZE_MASK));
    if (diff >> HDR_GUARD_SHIFT) {
        /* Underflow: the guard is the 3 bytes right below the user pointer; the
         * farthest damaged guard byte says how far down the write reached. A
         * check that fails too means it reached the checked bytes below the
         * guard: the whole header (CORE_HDR). */
        uint32_t reach = 0;
        for (uint32_t d = 1; d <= HDR_GUARD_BYTES; d++)
            if ((diff >> (64 - 8 * d)) & 0xFF)
                reach = d;
        *detail = check_ok ? reach : CORE_HDR;
        events_extent_last = *detail + 1;
        if (size_ok) {
            *size = sz;
            *has_site = detect_header_has_site(hw);
        }
        return NMM_EV_UNDERFLOW;
    }
    if (!size_ok) {
        *detail = CORE_HDR;
        return NMM_EV_HEADER_CORRUPT;
    }
    *size = sz;
    *has_site = detect_header_has_site(hw);
    uint64_t w = detect_canary_word_k(h, k);
    const uint8_t *q = user + sz, *want_c = (const uint8_t *)&w;
    for (size_t i = 0; i < CORE_CANARY; i++) {
        if (q[i] != want_c[i]) {
            *detail = (uint32_t)(sz + i);
            size_t last = CORE_CANARY - 1;
            while (q[last] == want_c[last])
                last--;
            events_extent_last = (uint32_t)(sz + last) + 1; /* how far the damage reaches */
            return NMM_EV_OVERFLOW;
        }
    }
    return NMM_EV_NONE;
}

bool detect_header_ok(const nmm_heap_t *h, const uint8_t *user)
{
    uint64_t hw = detect_header_word(user);
    return hw == detect_header_k(h, detect_addr_key(h, (uintptr_t)user), hw & HDR_LO_MASK);
}

POISON_NO_MEMSET void detect_poison(uint8_t *p, size_t n)
{
    poison_fill(p, n);
}

POISON_NO_MEMSET void detect_poison_h(const nmm_heap_t *h, uint8_t *p, size_t n)
{
    poison_fill_h(h, p, n);
}

/* Big blocks (n > POISON_SMALL, so n >= 128): memory bound, so what counts is
 * the traffic. The check reads every byte once. The fill reads first and
 * stores only the 128-byte runs that are not poison already: a block comes
 * back poisoned from its last quarantine except where its owner wrote, so
 * untouched lines are neither fetched for ownership nor written back (a plain
 * store costs a read for ownership anyway, so a fully written block pays no
 * more). A write racing with this ends as with a plain fill: overwritten, or
 * left in place for the check to find, as if it had come before or after the
 * fill. The last run overlaps the one before it instead of a scalar tail. */
#if POISON_SSE2
#include <immintrin.h>

static inline bool run_is_poison_sse2(const uint8_t *p, __m128i pv)
{
    __m128i ok = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), pv);
    for (int k = 16; k < 128; k += 16)
        ok = _mm_and_si128(ok, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + k)), pv));
    return _mm_movemask_epi8(ok) == 0xFFFF;
}

static bool poison_intact_sse2(const uint8_t *p, size_t n)
{
    const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
    for (size_t i = 0; i + 128 <= n; i += 128)
        if (!run_is_poison_sse2(p + i, pv))
            return false;
    return run_is_poison_sse2(p + n - 128, pv);
}

static void poison_fill_sse2(uint8_t *p, size_t n)
{
    const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
    for (size_t i = 0;; i += 128) {
        uint8_t *q = i + 128 <= n ? p + i : p + n - 128;
        if (!run_is_poison_sse2(q, pv))
            for (int k = 0; k < 128; k += 16)
                _mm_storeu_si128((__m128i *)(q + k), pv);
        if (i + 128 >= n)
            return;
    }
}

__attribute__((target("avx2"))) static inline bool run_is_poison_avx2(const uint8_t *p, __m256i pv)
{
    __m256i a = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)p), pv);
    __m256i b = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), pv);
    __m256i c = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 64)), pv);
    __m256i d = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 96)), pv);
    return _mm256_movemask_epi8(_mm256_and_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, d))) == -1;
}

__attribute__((target("avx2"))) static bool poison_intact_avx2(const uint8_t *p, size_t n)
{
    const __m256i pv = _mm256_set1_epi8((char)POISON_BYTE);
    for (size_t i = 0; i + 128 <= n; i += 128)
        if (!run_is_poison_avx2(p + i, pv))
            return false;
    return run_is_poison_avx2(p + n - 128, pv);
}

__attribute__((target("avx2"))) static void poison_fill_avx2(uint8_t *p, size_t n)
{
    const __m256i pv = _mm256_set1_epi8((char)POISON_BYTE);
    for (size_t i = 0;; i += 128) {
        uint8_t *q = i + 128 <= n ? p + i : p + n - 128;
        if (!run_is_poison_avx2(q, pv))
            for (int k = 0; k < 128; k += 32)
                _mm256_storeu_si256((__m256i *)(q + k), pv);
        if (i + 128 >= n)
            return;
    }
}

/* 0 = not known yet, 1 = no AVX2 (or avx2=0 in NMM_OPTIONS), 2 = AVX2. A racy first
 * use is harmless (every thread computes the same answer). */
static int poison_avx2_state;

/* avx2=0 (a process key): set when a paranoid heap is made (detect_quarantine_init),
 * before any thread can poison with it, and only ever from 0 to 1. A plain int, read
 * once by poison_has_avx2's first use: the options' own atomics run where the heap is
 * made, not at a worker's first big free (the chaos build's recorded schedules count
 * every atomic a worker runs). */
static int poison_sse2_forced;

static bool poison_has_avx2(void)
{
    int st = __atomic_load_n(&poison_avx2_state, __ATOMIC_RELAXED);
    if (unlikely(st == 0)) {
        __builtin_cpu_init();  /* the preload library may get here before constructors */
        st = __builtin_cpu_supports("avx2") && !poison_sse2_forced ? 2 : 1;
        __atomic_store_n(&poison_avx2_state, st, __ATOMIC_RELAXED);
    }
    return st == 2;
}

bool detect_poison_intact_big(const uint8_t *p, size_t n)
{
    return poison_has_avx2() ? poison_intact_avx2(p, n) : poison_intact_sse2(p, n);
}

void detect_poison_fill_big(uint8_t *p, size_t n)
{
    if (poison_has_avx2())
        poison_fill_avx2(p, n);
    else
        poison_fill_sse2(p, n);
}
#else
/* Portable: 64 bytes per step as an OR-reduction of words. */
bool detect_poison_intact_big(const uint8_t *p, size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t acc = 0;
        for (int k = 0; k < 8; k++) {
            uint64_t v;
            memcpy(&v, p + i + k * 8, 8);
            acc |= v ^ POISON_WORD;
        }
        if (acc)
            return false;
    }
    for (; i < n; i++)
        if (p[i] != POISON_BYTE)
            return false;
    return true;
}

void detect_poison_fill_big(uint8_t *p, size_t n)
{
    memset(p, POISON_BYTE, n);
}

static int poison_sse2_forced; /* no vector code: nothing to choose */
#endif

/* Offset of the first damaged poison byte, or -1. Clean blocks leave through
 * poison_intact; the byte scan runs only on a damaged one. */
static long poison_damage(const uint8_t *p, size_t n)
{
    if (poison_intact(p, n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (p[i] != POISON_BYTE)
            return (long)i;
    return -1;
}

/* The same over what poison_limit leaves poisoned (both ends of a long block). */
static long poison_damage_h(const nmm_heap_t *h, const uint8_t *p, size_t n)
{
    size_t lim = poison_limit_for(h, n);
    if (likely(lim == 0))
        return poison_damage(p, n);
    long d = poison_damage(p, lim);
    if (d >= 0)
        return d;
    d = poison_damage(p + n - lim, lim);
    return d >= 0 ? d + (long)(n - lim) : -1;
}

long detect_poison_damage_h(const nmm_heap_t *h, const uint8_t *p, size_t n)
{
    return poison_damage_h(h, p, n);
}

/* Offset of the last damaged poison byte (there is one: p[first] is). */
static size_t poison_last(const uint8_t *p, size_t n, size_t first)
{
    size_t i = n - 1;
    while (i > first && p[i] == POISON_BYTE)
        i--;
    return i;
}

void detect_note_poison_extent(const uint8_t *p, size_t n, const uint8_t *user, long first)
{
    const uint8_t *at = p + poison_last(p, n, (size_t)first);
    events_extent_last = at >= user ? (uint32_t)(at - user) + 1 : 1;
}

/* The last damaged byte of [p, p + n) under the heap's poison_limit (first is the
 * first damaged offset): of the tail's share, else of the head's. */
static size_t poison_last_h(const nmm_heap_t *h, const uint8_t *p, size_t n, long first)
{
    size_t lim = poison_limit_for(h, n);
    if (likely(lim == 0))
        return poison_last(p, n, (size_t)first);
    long tail = poison_damage(p + n - lim, lim);
    return tail >= 0 ? n - lim + poison_last(p + n - lim, lim, (size_t)tail)
                     : poison_last(p, lim, (size_t)first);
}

void detect_note_poison_extent_h(const nmm_heap_t *h, const uint8_t *p, size_t n,
                                 const uint8_t *user, long first)
{
    const uint8_t *at = p + poison_last_h(h, p, n, first);
    events_extent_last = at >= user ? (uint32_t)(at - user) + 1 : 1;
}

/* ------------------------------------------------------------------ fresh blocks */

/* The block an unused block's damage would be blamed on was found damaged and
 * reported already: retired (its free saw it) or marked bad by a sweep. Nothing
 * writes through such a block any more (it is never handed out again or its
 * owner was told), so damage after it is that report's. */
static bool fresh_blame_reported(uint8_t st)
{
    return st == BS_RETIRED || st == BS_LIVE_BAD || (st & 0xF0) == BS_ALIGNED_BAD;
}

/* Paranoid: a slab's blocks are poisoned when it is made, so a write into one
 * that was never handed out (an overflow running past a neighbour's canary, a
 * stray write) is seen when the block is first handed out or swept. Returns
 * whether it reported (the caller retires or re-poisons the block); false also
 * for damage already reported, which it re-poisons itself. */
bool detect_fresh_damaged(nmm_heap_t *h, slab_t *s, uint32_t idx)
{
    uint8_t *block = s->data + (size_t)idx * s->block_size;
    size_t bs = s->block_size;
    if (likely(poison_intact(block, bs)))
        return false;
    long first = poison_damage(block, bs);
    if (first < 0)
        return false;  /* written back meanwhile (a racing sweep re-poisoned it) */
    /* The nearest block before it that was ever handed out (the unused ones
     * are the slab's last), when its header holds: the damage is its overflow. */
    uint32_t j = idx;
    while (j > 0 && __atomic_load_n(&slab_states(s)[j - 1], __ATOMIC_RELAXED) == BS_NEVER)
        j--;
    if (j > 0 && h->has_hdr) {
        uint8_t st = __atomic_load_n(&slab_states(s)[j - 1], __ATOMIC_RELAXED);
        uint8_t *prev = s->data + (size_t)(j - 1) * bs +
                        (state_has_offset(st) ? state_user_off(st) : h->user_off);
        if (fresh_blame_reported(st)) {
            /* That block's damage was reported when it was found (its free or a
             * sweep, which retired it or marked it): this is the rest of the same
             * overflow, run on into memory nobody owns. One misuse, one report:
             * poisoned again, nothing new to say. No header check: a retired block's
             * state no longer says where an aligned block's header was. */
            detect_poison(block, bs);
            return false;
        }
        if (detect_header_ok(h, prev)) {
            uint64_t hw = detect_header_word(prev);
            detect_note_poison_extent(block, bs, prev, first);
            heap_report(h, NMM_EV_OVERFLOW, (uint32_t)(block + first - prev), prev,
                        detect_header_size(hw), slab_site(s, j - 1, detect_header_has_site(hw)), 0);
            return true;
        }
    }
    /* Else: memory no block owned was written (bytes of this unused block). */
    uint8_t *user = block + h->user_off;
    long at = first >= (long)h->user_off ? first - (long)h->user_off : 0;
    detect_note_poison_extent(block, bs, user, first);
    heap_report(h, NMM_EV_USE_AFTER_FREE, (uint32_t)at, user, 0, 0, 0);
    return true;
}

void detect_poison_fresh(nmm_heap_t *h, slab_t *s)
{
    if (h->paranoid)
        detect_poison(s->data, s->span);
}

/* ------------------------------------------------------------------ quarantine */

bool detect_quarantine_init(nmm_heap_t *h)
{
    if (!options_process()->avx2)
        poison_sse2_forced = 1;
    h->quar_max_bytes = h->cfg.quarantine_bytes;
    size_t cap = h->quar_max_bytes / 32 + 64;
    if (cap > ((size_t)1 << 20))
        cap = (size_t)1 << 20;
    h->quar = os_map_sparse(cap * sizeof(quarantine_entry_t));
    if (!h->quar)
        return false;
    h->quar_cap = cap;
    return true;
}

void detect_quarantine_destroy(nmm_heap_t *h)
{
    if (h->quar)
        os_unmap(h->quar, h->quar_cap * sizeof(quarantine_entry_t));
    h->quar = NULL;
}

/* Event detail of a use after free: offset from the user pointer (0 when the
 * damage is in the poisoned header of an aligned block). */
static uint32_t uaf_detail(const quarantine_entry_t *e, long dmg)
{
    uint8_t *at = e->poison + dmg;
    return at >= e->user ? (uint32_t)(at - e->user) : 0;
}

enum { BLAME_NONE, BLAME_REPORTED, BLAME_ALREADY };

/* A quarantined aligned block whose damage lies wholly below its user pointer (the
 * poisoned bytes between its slot's start and its header): nothing was written through
 * the freed pointer, which never owned those bytes. As for a never-used block
 * (detect_fresh_damaged), it is the overflow of the block before, when that one is
 * handed out and its header holds: reported as that block's overflow, detail = the
 * first damaged byte's offset from it (so the damage is located where it is), and the
 * block marked damaged so its free retires it quietly (one misuse, one report). When
 * that block's damage was reported already (retired or marked), it is the rest of that
 * overflow: BLAME_ALREADY, nothing new to say. BLAME_NONE: no such block (a use after
 * free of this one, reported as before). Called with no lock or with every lock held
 * (a sweep): takes none. */
static int quarantine_blame_below(nmm_heap_t *h, const quarantine_entry_t *e, long first)
{
    /* the slot that ends where this block's begins: in its slab, or the last one of the
     * slab before (slabs are carved from the region back to back) */
    uintptr_t block = (uintptr_t)e->poison - h->user_off;
    slab_t *s = h->has_hdr ? slab_of(h, block - 1) : NULL;
    if (!s || block - 1 < (uintptr_t)s->data)
        return BLAME_NONE;
    uint32_t idx = slab_index_containing(s, block - 1);
    uintptr_t pblock = (uintptr_t)s->data + (size_t)idx * s->block_size;
    if (idx >= s->nblocks || pblock + s->block_size != block)
        return BLAME_NONE;
    uint8_t *pst = &slab_states(s)[idx];
    uint8_t st = __atomic_load_n(pst, __ATOMIC_RELAXED);
    /* reported already (retired, marked): before the header check, as a retired aligned
     * block's state no longer says where its header was (its own free reported its
     * overflow; this is the rest of it) */
    if (fresh_blame_reported(st))
        return BLAME_ALREADY;
    uint8_t *prev = (uint8_t *)pblock + (state_has_offset(st) ? state_user_off(st) : h->user_off);
    if (!detect_header_ok(h, prev))
        return BLAME_NONE;
    if (!state_is_live_unaligned(st) && !state_is_aligned(st))
        return BLAME_NONE;
    /* Marked without the class lock (a sweep may hold every lock, the exit sweep's
     * way): a free that took the block meanwhile leaves the state changed. */
    uint8_t bad = state_is_aligned(st) ? (uint8_t)(BS_ALIGNED_BAD | (st & 15)) : BS_LIVE_BAD;
    if (!__atomic_compare_exchange_n(pst, &st, bad, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return fresh_blame_reported(st) ? BLAME_ALREADY : BLAME_NONE;
    uint64_t hw = detect_header_word(prev);
    detect_note_poison_extent_h(h, e->poison, e->block_size, prev, first);
    heap_report(h, NMM_EV_OVERFLOW, (uint32_t)(e->poison + first - prev), prev, detect_header_size(hw),
                slab_site(s, idx, detect_header_has_site(hw)), 0);
    return BLAME_REPORTED;
}

static void quarantine_entry_retire(nmm_heap_t *h, const quarantine_entry_t *e)
{
    if (e->state)
        block_retire(h, e->state);
    else
        alloc_retire(h, e->poison - h->user_off);
}

/* Verify a quarantined block's poison. Damaged → the block is retired (never
 * handed out again) and a use-after-free reported; returns true. Entries of the
 * per-thread quarantine carry their state byte, the shared one's are looked up.
 * Damage wholly below an aligned block's user pointer is the block before's overflow
 * (quarantine_blame_below): when that was reported already, the poison is restored
 * and the block released as intact (false). */
NMM_COLD static bool quarantine_entry_report(nmm_heap_t *h, const quarantine_entry_t *e)
{
    long dmg = poison_damage_h(h, e->poison, e->block_size);
    if (dmg < 0)
        return false;
    if (e->user > e->poison &&
        e->poison + poison_last_h(h, e->poison, e->block_size, dmg) < e->user - CORE_HDR) {
        int blame = quarantine_blame_below(h, e, dmg);
        if (blame == BLAME_ALREADY) {
            detect_poison_h(h, e->poison, e->block_size);
            return false;
        }
        if (blame == BLAME_REPORTED) {
            quarantine_entry_retire(h, e);
            return true;
        }
    }
    quarantine_entry_retire(h, e);
    detect_note_poison_extent_h(h, e->poison, e->block_size, e->user, dmg);
    heap_report(h, NMM_EV_USE_AFTER_FREE, uaf_detail(e, dmg), e->user, e->size, e->alloc_site,
                e->free_site);
    return true;
}

static inline bool quarantine_entry_damaged(nmm_heap_t *h, const quarantine_entry_t *e)
{
    if (likely(poison_intact_h(h, e->poison, e->block_size)))
        return false;
    return quarantine_entry_report(h, e);
}

/* A block leaves the quarantine: verify its poison; intact → free in its slab,
 * damaged → use-after-free event and the block is retired. No lock held. */
static void quarantine_release(nmm_heap_t *h, const quarantine_entry_t *e)
{
    if (!e->user)
        return;  /* already reported and retired by a sweep */
    if (quarantine_entry_damaged(h, e))
        return;
    uint8_t *block = e->poison - h->user_off;
    slab_t *s = slab_of(h, (uintptr_t)block);
    int32_t idx = slab_index(s, (uintptr_t)block);
    int cls = s->cls;
    NMM_YIELD("class.lock");
    heap_lock(h, &h->pools[cls].lock);
    uint8_t *st = &slab_states(s)[idx];
    __atomic_store_n(st, state_freed(__atomic_load_n(st, __ATOMIC_RELAXED)), __ATOMIC_RELAXED);
    slab_give_locked(h, cls, s, (uint32_t)idx);
    pthread_mutex_unlock(&h->pools[cls].lock);
    NMM_YIELD("class.unlock");
}

/* The calling thread begins a new allocator call: what it freed before is no longer
 * pinned. Returns its state (NULL once it is dead). */
static tstate_t *note_call(void)
{
    tstate_t *ts = tcache_state();
    if (!ts || ts->dead)
        return NULL;
    /* release: what the thread did to the block it freed before */
    __atomic_store_n(&ts->calls, ts->calls + 1, __ATOMIC_RELEASE);
    return ts;
}

void detect_note_call(void)
{
    note_call();
}

/* The thread that freed e has not made another allocator call since: it may be
 * about to write the block it just freed, so the block must stay quarantined. */
static bool quarantine_pinned(const quarantine_entry_t *e)
{
    /* acquire: the owner's last look at the block (a second free reading its header)
     * happens before whoever takes the block writes it */
    return e->owner && __atomic_load_n(&e->owner->calls, __ATOMIC_ACQUIRE) == e->owner_calls;
}

/* Quarantine lock held, count > 0: remove the oldest entry that is not pinned, into
 * *out. Pinned ones met on the way move to the tail. With force (the ring is full: a
 * slot must be made) the oldest goes if the first 64 looked at are all pinned;
 * otherwise a pinned entry never goes (returns false): a thread's second free of the
 * block it just freed must find it quarantined, not handed to another thread (the
 * aligned block's second free was then an interior pointer of that thread's block,
 * a plain block's freed that thread's block). Pinned entries are at most one per
 * thread (its latest free), so the bytes over the bound stay bounded too. */
static bool quarantine_pop_locked(nmm_heap_t *h, quarantine_entry_t *out, bool force)
{
    for (size_t tries = 0;; tries++) {
        quarantine_entry_t e = h->quar[h->quar_head];
        bool last = tries + 1 >= h->quar_count || tries >= 64;
        if (quarantine_pinned(&e) && !(force && last)) {
            if (last)
                return false;
            h->quar_head = (h->quar_head + 1) % h->quar_cap;
            h->quar[(h->quar_head + h->quar_count - 1) % h->quar_cap] = e;
            continue;
        }
        h->quar_head = (h->quar_head + 1) % h->quar_cap;
        h->quar_count--;
        __atomic_store_n(&h->quar_bytes, h->quar_bytes - e.block_size, __ATOMIC_RELAXED);
        *out = e;
        return true;
    }
}

void detect_quarantine_push(nmm_heap_t *h, uint8_t *user, uint8_t *poison, uint32_t room,
                            nmm_site_t free_site, uint32_t alloc_site, uint32_t size)
{
    quarantine_entry_t out[16];
    int nout = 0;
    /* This free is the thread's new call: what it freed before is no longer pinned,
     * this block is. Counted here, not when the free began: a second free of the
     * block its previous call freed must find that block still quarantined when it
     * looks at the pointer (counted at the start, another thread's push could take
     * the block in between and hand it out). */
    tstate_t *owner = note_call();
    detect_poison_h(h, poison, room);
    NMM_YIELD("quarantine.lock");
    heap_lock(h, &h->quar_lock);
    if (h->quar_count == h->quar_cap && quarantine_pop_locked(h, &out[nout], true))
        nout++;
    quarantine_entry_t *e = &h->quar[(h->quar_head + h->quar_count) % h->quar_cap];
    e->user = user;
    e->poison = poison;
    e->state = NULL;  /* shared entries look their state byte up */
    e->block_size = room;
    e->free_site = free_site;
    e->alloc_site = alloc_site;
    e->size = size;
    e->owner = owner;
    e->owner_calls = owner ? __atomic_load_n(&owner->calls, __ATOMIC_RELAXED) : 0;
    h->quar_count++;
    __atomic_store_n(&h->quar_bytes, h->quar_bytes + room, __ATOMIC_RELAXED);
    while (h->quar_bytes > h->quar_max_bytes && h->quar_count && nout < 16) {
        if (NMM_MUTANT(flush_race)) {
            /* mutant: the oldest entry is read, the lock dropped, and the ring moved
             * past one entry once it is back: another thread may have flushed the
             * same entry meanwhile */
            quarantine_entry_t e = h->quar[h->quar_head];
            pthread_mutex_unlock(&h->quar_lock);
            NMM_YIELD("mutant.flush_race");
            heap_lock(h, &h->quar_lock);
            if (!h->quar_count)
                break;
            h->quar_head = (h->quar_head + 1) % h->quar_cap;
            h->quar_count--;
            __atomic_store_n(&h->quar_bytes, h->quar_bytes - e.block_size, __ATOMIC_RELAXED);
            out[nout++] = e;
            continue;
        }
        if (!quarantine_pop_locked(h, &out[nout], false))
            break;  /* what is left is pinned */
        nout++;
    }
    pthread_mutex_unlock(&h->quar_lock);
    NMM_YIELD("quarantine.unlock");
    for (int i = 0; i < nout; i++)
        quarantine_release(h, &out[i]);
}

/* Sweep: every quarantined block must still hold its poison. The caller holds
 * every heap lock (reporting is safe: events never take heap locks). A damaged
 * block is reported once, retired, and skipped when it leaves the quarantine. */
size_t detect_quarantine_validate(nmm_heap_t *h)
{
    size_t problems = 0;
    for (size_t i = 0; i < h->quar_count; i++) {
        quarantine_entry_t *e = &h->quar[(h->quar_head + i) % h->quar_cap];
        if (!e->user)
            continue;
        if (!quarantine_entry_damaged(h, e))
            continue;
        problems++;
        e->user = NULL;
    }
    return problems;
}

/* Whether the quarantine (the shared ring, or a thread's own) holds the block
 * whose poison starts at poison. An entry is written only once its block is
 * poisoned, so a held block's poison is complete: damage read after this
 * returned true (the acquire fence) is real. Other threads' rings are read
 * without their owner's consent: a stale answer only makes a caller skip. */
bool detect_quarantine_holds(nmm_heap_t *h, const uint8_t *poison)
{
    bool held = false;
    if (h->quar) {
        heap_lock(h, &h->quar_lock);
        for (size_t i = 0; i < h->quar_count && !held; i++) {
            const quarantine_entry_t *e = &h->quar[(h->quar_head + i) % h->quar_cap];
            held = e->user && e->poison == poison;
        }
        pthread_mutex_unlock(&h->quar_lock);
    }
    for (tstate_t *ts = __atomic_load_n(&tcache_all, __ATOMIC_ACQUIRE); ts && !held && h->slot >= 0;
         ts = ts->next_all) {
        tcache_t *tc = __atomic_load_n(&ts->caches[h->slot], __ATOMIC_ACQUIRE);
        if (!tc || __atomic_load_n(&tc->heap, __ATOMIC_RELAXED) != h || !tc->tq)
            continue;
        uint32_t head = __atomic_load_n(&tc->tq_head, __ATOMIC_RELAXED);
        uint32_t count = __atomic_load_n(&tc->tq_count, __ATOMIC_RELAXED);
        for (uint32_t i = 0; i < count && i < CORE_TQ_CAP && !held; i++) {
            const quarantine_entry_t *e = &tc->tq[(head + i) % CORE_TQ_CAP];
            held = __atomic_load_n(&e->user, __ATOMIC_RELAXED) != NULL &&
                   __atomic_load_n(&e->poison, __ATOMIC_RELAXED) == poison;
        }
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return held;
}

/* ------------------------------------------------------------------ per-thread quarantine */

bool detect_tq_report_damage(nmm_heap_t *h, const quarantine_entry_t *e)
{
    return quarantine_entry_report(h, e);
}

/* The rare ways out of the ring (bytes over the bound, drain), out of line. */
NMM_NOINLINE static void tq_release_slow(nmm_heap_t *h, tcache_t *tc, const quarantine_entry_t *e)
{
    tq_release(h, tc, e);
}

POISON_NO_MEMSET void detect_tq_push(nmm_heap_t *h, tcache_t *tc, uint8_t *user, uint8_t *poison,
                                     uint8_t *state, uint32_t room, nmm_site_t free_site,
                                     uint32_t alloc_site, uint32_t size)
{
    poison_fill_h(h, poison, room);
    while (tc->tq_count && (tc->tq_count == CORE_TQ_CAP || tc->tq_bytes + room > h->quar_max_bytes)) {
        quarantine_entry_t old = tc->tq[tc->tq_head];
        if (NMM_MUTANT(atfork_order)) {
            /* mutant: the bin takes the block before the ring lets go of it (a fork()
             * in between finds it in both: the child hands it out twice) */
            tq_release_slow(h, tc, &old);
            NMM_YIELD("mutant.atfork_order");
            tc->tq_head = (tc->tq_head + 1) % CORE_TQ_CAP;
            tc->tq_count--;
            continue;
        }
        tc->tq_head = (tc->tq_head + 1) % CORE_TQ_CAP;
        tc->tq_count--;
        fork_publish_order();  /* out of the ring before it goes to a bin */
        tq_release_slow(h, tc, &old);
    }
    tq_fill(&tc->tq[(tc->tq_head + tc->tq_count) % CORE_TQ_CAP],
            sizeclass_of(room + h->user_off),
            state_freed(__atomic_load_n(state, __ATOMIC_RELAXED)), user, poison, state, room,
            free_site, alloc_site, size);
    fork_publish_order();  /* the entry is whole before the ring counts it */
    tc->tq_count++;
    __atomic_store_n(&tc->tq_bytes, tc->tq_bytes + room, __ATOMIC_RELAXED);
}

void detect_tq_drain(nmm_heap_t *h, tcache_t *tc)
{
    while (tc->tq_count) {
        quarantine_entry_t old = tc->tq[tc->tq_head];
        tc->tq_head = (tc->tq_head + 1) % CORE_TQ_CAP;
        tc->tq_count--;
        fork_publish_order();
        tq_release_slow(h, tc, &old);
    }
}

size_t detect_tq_validate(nmm_heap_t *h, tcache_t *tc)
{
    size_t problems = 0;
    for (uint32_t i = 0; i < tc->tq_count; i++) {
        quarantine_entry_t *e = &tc->tq[(tc->tq_head + i) % CORE_TQ_CAP];
        if (!e->user)
            continue;
        if (!quarantine_entry_damaged(h, e))
            continue;
        problems++;
        tc->tq_bytes -= e->block_size;
        e->user = NULL;
    }
    return problems;
}
