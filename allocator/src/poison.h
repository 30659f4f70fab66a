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

/* Small blocks: 16-byte stores, the last one overlapping so no tail loop runs;
 * big ones: detect.c (stores only what is not poison already). */
static inline __attribute__((always_inline)) POISON_NO_MEMSET void poison_fill(uint8_t *p, size_t n)
{
#if POISON_SSE2
    if (likely(n >= 16 && n <= POISON_SMALL)) {
        const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
        for (size_t i = 0; i + 16 < n; i += 16)
            _mm_storeu_si128((__m128i *)(p + i), pv);
        _mm_storeu_si128((__m128i *)(p + n - 16), pv);
        return;
    }
#endif
    if (n > POISON_SMALL) {
        detect_poison_fill_big(p, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        p[i] = POISON_BYTE;
}

/* Is all of [p, p+n) still poison? One branch for a small block (the compares
 * are and-ed, the last vector overlaps); the offset of the damage is found only
 * once a block is known to be damaged (detect.c). */
static inline __attribute__((always_inline)) bool poison_intact(const uint8_t *p, size_t n)
{
#if POISON_SSE2
    if (likely(n >= 16 && n <= POISON_SMALL)) {
        const __m128i pv = _mm_set1_epi8((char)POISON_BYTE);
        __m128i ok = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + n - 16)), pv);
        for (size_t i = 0; i + 16 < n; i += 16)
            ok = _mm_and_si128(ok, _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), pv));
        return _mm_movemask_epi8(ok) == 0xFFFF;
    }
#endif
    if (n > POISON_SMALL)
        return detect_poison_intact_big(p, n);
    for (size_t i = 0; i < n; i++)
        if (p[i] != POISON_BYTE)
            return false;
    return true;
}

/* The oldest entry leaves this thread's quarantine: intact poison → free, into
 * the cache of its class; damaged → use-after-free event, retired. */
static inline __attribute__((always_inline)) void tq_release(nmm_heap_t *h, tcache_t *tc,
                                                             const quarantine_entry_t *e)
{
    if (unlikely(!e->user))
        return;  /* reported by a sweep, retired, its bytes already uncounted */
    __atomic_store_n(&tc->tq_bytes, tc->tq_bytes - e->block_size, __ATOMIC_RELAXED);
    if (unlikely(!poison_intact(e->poison, e->block_size)) && detect_tq_report_damage(h, e))
        return;
    int cls = sizeclass_of(e->block_size + h->user_off);
    tbin_t *bin = &tc->bins[cls];
    if (unlikely(bin->count == bin->cap))
        tcache_flush_bin(h, tc, cls, bin->cap / 2);
    uint32_t n = bin->count;
    uint8_t st = __atomic_load_n(e->state, __ATOMIC_RELAXED);
    bin->items[n].block = e->poison - h->user_off;
    bin->items[n].state = e->state;
    OWNER_ADD(bin->supplied, 1);  /* not a free: that was counted when it was quarantined */
    tbin_set_count(bin, n + 1);
    __atomic_store_n(e->state, state_freed(st), __ATOMIC_RELAXED);
}

static inline __attribute__((always_inline)) void tq_fill(quarantine_entry_t *e, uint8_t *user,
                                                          uint8_t *poison, uint8_t *state,
                                                          uint32_t room, nmm_site_t free_site,
                                                          uint32_t alloc_site, uint32_t size)
{
    e->user = user;
    e->poison = poison;
    e->state = state;
    e->block_size = room;
    e->free_site = free_site;
    e->alloc_site = alloc_site;
    e->size = size;
    e->owner = NULL;  /* only this thread releases its own quarantine */
}

/* Poison [poison, poison+room) and queue the block. In the steady state the ring
 * is full by count and under its byte bound: the oldest entry is released and
 * its slot takes the new one. Returns false (nothing done) otherwise: the caller
 * then calls detect_tq_push. */
static inline __attribute__((always_inline)) POISON_NO_MEMSET bool
tq_push_steady(nmm_heap_t *h, tcache_t *tc, uint8_t *user, uint8_t *poison, uint8_t *state,
               uint32_t room, nmm_site_t free_site, uint32_t alloc_site, uint32_t size)
{
    if (unlikely(tc->tq_count != CORE_TQ_CAP || tc->tq_bytes + room > h->quar_max_bytes))
        return false;
    poison_fill(poison, room);
    uint32_t head = tc->tq_head;
    quarantine_entry_t *e = &tc->tq[head];
    tq_release(h, tc, e);
    tq_fill(e, user, poison, state, room, free_site, alloc_site, size);
    tc->tq_head = (head + 1) % CORE_TQ_CAP;
    __atomic_store_n(&tc->tq_bytes, tc->tq_bytes + room, __ATOMIC_RELAXED);
    return true;
}

#endif /* NMM_POISON_H */
