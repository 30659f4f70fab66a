/* poison.h — the paranoid level's per-byte work, inline: filling a freed block
 * with poison, checking that it is still there, and the per-thread quarantine's
 * steady-state push, which alloc.c's paranoid free path inlines. Included by
 * detect.c and alloc.c only. The per-thread quarantine belongs to its owner
 * thread: everything here runs on that thread.
 */
#ifndef NMM_POISON_H
#define NMM_POISON_H

#include "core.h"

#define POISON_BYTE 0xDB
#define POISON_WORD 0xDBDBDBDBDBDBDBDBull
#define POISON_SMALL 256 /* bytes: up to here inline vector code, above detect.c's loops (>= 128) */

/* Every freed byte is written and later read back at paranoid, so both must run
 * at memory speed: 16-byte SSE2 vectors (baseline on x86-64), a word loop on
 * other targets. Any n works; n is a multiple of 8 for every block. */
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#define POISON_SSE2 1
#else
#define POISON_SSE2 0
#endif

/* detect.c: the big-block check (AVX2 when the CPU has it) and the cold half of
 * a quarantine release that found damage (report, retire). */
bool detect_poison_intact_big(const uint8_t *p, size_t n);
void detect_poison_fill_big(uint8_t *p, size_t n);
bool detect_tq_report_damage(nmm_heap_t *h, const quarantine_entry_t *e);

/* Functions that inline poison_fill carry this, or GCC turns its store loop
 * back into memset / `rep stos` (whose start-up costs more than 80 bytes). */
#define POISON_NO_MEMSET __attribute__((optimize("no-tree-loop-distribute-patterns")))

/* Small blocks: 16-byte stores, two per step, the last two overlapping what
 * came before so no tail loop runs; big ones: detect.c (stores only what is
 * not poison already). */
static inline __attribute__((always_inline)) POISON_NO_MEMSET void poison_fill(uint8_t *p, size_t n)
{
#if POISON_SSE2
    const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
    if (likely(n >= 32 && n <= POISON_SMALL)) {
        for (size_t i = 0; i + 32 < n; i += 32) {
            _mm_storeu_si128((__m128i *)(p + i), pv);
            _mm_storeu_si128((__m128i *)(p + i + 16), pv);
        }
        _mm_storeu_si128((__m128i *)(p + n - 32), pv);
        _mm_storeu_si128((__m128i *)(p + n - 16), pv);
        return;
    }
    if (n >= 16 && n < 32) {
        _mm_storeu_si128((__m128i *)p, pv);
        _mm_storeu_si128((__m128i *)(p + n - 16), pv);
        return;
    }
#endif
    if (n > POISON_SMALL) {
        detect_poison_fill_big(p, n);
        return;
    }
    size_t i = 0;
    for (uint64_t w = POISON_WORD; i + 8 <= n; i += 8)
        memcpy(p + i, &w, 8);
    for (; i < n; i++)
        p[i] = POISON_BYTE;
}

#if POISON_SSE2
static inline __attribute__((always_inline)) __m128i poison_eq16(const uint8_t *p, __m128i pv)
{
    return _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), pv);
}
#endif

/* Is all of [p, p+n) still poison? One branch for a small block (the compares
 * are and-ed, the last two vectors overlap); the offset of the damage is found
 * only once a block is known to be damaged (detect.c). */
static inline __attribute__((always_inline)) bool poison_intact(const uint8_t *p, size_t n)
{
#if POISON_SSE2
    const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
    if (likely(n >= 32 && n <= POISON_SMALL)) {
        __m128i ok = _mm_and_si128(poison_eq16(p + n - 32, pv), poison_eq16(p + n - 16, pv));
        for (size_t i = 0; i + 32 < n; i += 32)
            ok = _mm_and_si128(ok, _mm_and_si128(poison_eq16(p + i, pv), poison_eq16(p + i + 16, pv)));
        return _mm_movemask_epi8(ok) == 0xFFFF;
    }
    if (n >= 16 && n < 32)
        return _mm_movemask_epi8(_mm_and_si128(poison_eq16(p, pv), poison_eq16(p + n - 16, pv))) ==
               0xFFFF;
#endif
    if (n > POISON_SMALL)
        return detect_poison_intact_big(p, n);
    size_t i = 0;
    for (uint64_t v; i + 8 <= n; i += 8) {
        memcpy(&v, p + i, 8);
        if (v != POISON_WORD)
            return false;
    }
    for (; i < n; i++)
        if (p[i] != POISON_BYTE)
            return false;
    return true;
}

/* poison_limit (nmm_config_t): a freed block longer than twice the limit is
 * poisoned and checked at its two ends only, limit bytes each. The trade: the
 * poisoning cost per free is bounded (2 * limit bytes written, later read), and
 * a use after free in the middle of a large block goes unseen (its bytes keep
 * the user's last data). Returns the limit that applies to n bytes (0: none). */
static inline __attribute__((always_inline)) size_t poison_limit_for(const nmm_heap_t *h, size_t n)
{
    size_t lim = (size_t)h->cfg.poison_limit;
    return unlikely(lim != 0) && n > 2 * lim ? lim : 0;
}

static inline __attribute__((always_inline)) POISON_NO_MEMSET void
poison_fill_h(const nmm_heap_t *h, uint8_t *p, size_t n)
{
    size_t lim = poison_limit_for(h, n);
    if (unlikely(lim != 0)) {
        poison_fill(p, lim);
        poison_fill(p + n - lim, lim);
        return;
    }
    poison_fill(p, n);
}

static inline __attribute__((always_inline)) bool poison_intact_h(const nmm_heap_t *h,
                                                                  const uint8_t *p, size_t n)
{
    size_t lim = poison_limit_for(h, n);
    if (unlikely(lim != 0))
        return poison_intact(p, lim) && poison_intact(p + n - lim, lim);
    return poison_intact(p, n);
}

/* The oldest entry leaves this thread's quarantine: intact poison → free, into
 * the cache of its class; damaged → use-after-free event, retired. Returns the
 * bin it went into (NULL: none). tq_bytes is the caller's to update. */
static inline __attribute__((always_inline)) tbin_t *tq_release_entry(nmm_heap_t *h, tcache_t *tc,
                                                                      const quarantine_entry_t *e)
{
    if (unlikely(!poison_intact_h(h, e->poison, e->block_size)) && detect_tq_report_damage(h, e))
        return NULL;
    tbin_t *bin = &tc->bins[e->cls];
    if (unlikely(bin->count == bin->cap))
        tcache_flush_bin(h, tc, e->cls, bin->cap / 2);
    tbin_push(bin, bin->count, e->poison - h->user_off, e->state);
    NMM_YIELD("bin.push");  /* in the bin, still reads quarantined */
    __atomic_store_n(e->state, e->freed_state, __ATOMIC_RELAXED);
    return bin;
}

/* Same, for callers that keep no other books: the bin's count of supplied
 * blocks (a release is not a free) and the ring's bytes. */
static inline __attribute__((always_inline)) void tq_release(nmm_heap_t *h, tcache_t *tc,
                                                             const quarantine_entry_t *e)
{
    if (unlikely(!e->user))
        return;  /* reported by a sweep, retired, its bytes already uncounted */
    __atomic_store_n(&tc->tq_bytes, tc->tq_bytes - e->block_size, __ATOMIC_RELAXED);
    bool opened = tcache_books_open(tc);  /* count and supplied both move */
    tbin_t *bin = tq_release_entry(h, tc, e);
    NMM_YIELD("tcache.release");
    if (bin)
        OWNER_ADD(bin->supplied, 1);
    tcache_books_close(tc, opened);
}

/* Entries of the per-thread ring: owner and owner_calls stay unused (only
 * this thread releases its own quarantine). */
static inline __attribute__((always_inline)) void tq_fill(quarantine_entry_t *e, int cls,
                                                          uint8_t freed_state, uint8_t *user,
                                                          uint8_t *poison, uint8_t *state,
                                                          uint32_t room, nmm_site_t free_site,
                                                          uint32_t alloc_site, uint32_t size)
{
    e->cls = (uint8_t)cls;
    e->freed_state = freed_state;
    e->poison = poison;
    e->state = state;
    e->block_size = room;
    e->free_site = free_site;
    e->alloc_site = alloc_site;
    e->size = size;
    fork_publish_order();  /* user last: a fork() child skips an entry without one */
    e->user = user;
}

/* The free of a block of class cls (state already BS_QUARANTINE): poison [poison,
 * poison+room) and queue it, counting the free. In the steady state the ring is
 * full by count and under its byte bound: the oldest entry is released and its
 * slot takes the new one; when the oldest goes into the same bin (the common
 * case) the free and the release cancel out in `supplied`. A block of a normal
 * (not aligned) class: it leaves as BS_FREE. Returns false
 * (nothing done) otherwise: the caller then counts the free and calls
 * detect_tq_push. */
static inline __attribute__((always_inline)) POISON_NO_MEMSET bool
tq_free_steady(nmm_heap_t *h, tcache_t *tc, int cls, uint8_t *user, uint8_t *poison,
               uint8_t *state, uint32_t room, nmm_site_t free_site, uint32_t alloc_site,
               uint32_t size)
{
    tbin_t *bin = &tc->bins[cls];
    uint64_t bytes = tc->tq_bytes;
    if (unlikely(tc->tq_count != CORE_TQ_CAP || bytes + room > h->quar_max_bytes))
        return false;
    poison_fill_h(h, poison, room);
    uint32_t head = tc->tq_head;
    quarantine_entry_t *e = &tc->tq[head];
    tbin_t *to = NULL;
    bool opened = false;
    if (likely(e->user != NULL)) {
        /* The entry lets go of its block before the bin takes it: a fork() that
         * lands in between must not find the block in both (the child gives a dead
         * thread's ring and bins back, and would hand the block out twice). */
        quarantine_entry_t out = *e;
        e->user = NULL;
        fork_publish_order();
        bytes -= out.block_size;
        /* into another bin: its count and supplied both move (same bin: only
         * count, the free and the release cancel out) */
        if (out.cls != cls)
            opened = tcache_books_open(tc);
        to = tq_release_entry(h, tc, &out);
    }
    if (to != bin) {
        tbin_note_uncached_free(tc, bin);
        NMM_YIELD("tcache.release");
        if (to)
            OWNER_ADD(to->supplied, 1);
    }
    tcache_books_close(tc, opened);
    tq_fill(e, cls, BS_FREE, user, poison, state, room, free_site, alloc_site, size);
    tc->tq_head = (head + 1) % CORE_TQ_CAP;
    __atomic_store_n(&tc->tq_bytes, bytes + room, __ATOMIC_RELAXED);
    return true;
}

#endif /* NMM_POISON_H */
