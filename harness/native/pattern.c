/* pattern.c — the fill pattern of live blocks, derived from (seed, block id), so a
 * block handed out twice or damaged by the allocator shows up when it is checked,
 * with the offset of the first wrong byte. Every byte's value is a pure function of
 * (key, offset), so any range of a block checks against the same layout. Small
 * blocks (up to PATTERN_FULL bytes) are filled and checked whole; bigger ones whole
 * in their first and last PATTERN_EDGE bytes and at one word per PATTERN_STRIDE in
 * between, at an offset inside each stride drawn from the key (so over many blocks
 * every word of a stride is checked). Pure functions; any thread. */
#include <string.h>

#include "driver.h"

#define PATTERN_FULL 4096
#define PATTERN_EDGE 1024
#define PATTERN_STRIDE 256

static inline uint64_t word_at(uint64_t key, size_t off) { return key ^ (off * PRNG_GOLDEN); }

static inline void put64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }
static inline uint64_t get64(const uint8_t *b)
{
    uint64_t v;
    memcpy(&v, b, 8);
    return v;
}

uint64_t pattern_key(uint64_t seed, uint64_t block_id) { return prng_mix(seed, block_id); }

/* The byte the pattern puts at off. */
uint8_t pattern_byte(uint64_t key, size_t off)
{
    return (uint8_t)(word_at(key, off & ~(size_t)7) >> (8 * (off & 7)));
}

/* The sampled word of stride i (offset from the block start, a multiple of 8). */
static inline size_t sample_at(uint64_t key, size_t i)
{
    return i * PATTERN_STRIDE + 8 * (size_t)(prng_mix(key, i) % (PATTERN_STRIDE / 8));
}

/* Fill [lo, hi) whole: words at multiples of 8, then the bytes of a partial last word. */
static void fill_range(uint8_t *b, size_t lo, size_t hi, uint64_t key, bool zero)
{
    size_t off = lo;
    for (; off + 8 <= hi; off += 8)
        put64(b + off, zero ? 0 : word_at(key, off));
    for (; off < hi; off++)
        b[off] = zero ? 0 : pattern_byte(key, off);
}

/* First offset in [lo, min(hi, limit)) that does not hold the pattern (or zero), or -1. */
static long check_range(const uint8_t *b, size_t lo, size_t hi, size_t limit, uint64_t key,
                        bool zero)
{
    if (hi > limit)
        hi = limit;
    size_t off = lo;
    for (; off + 8 <= hi; off += 8) {
        uint64_t want = zero ? 0 : word_at(key, off);
        uint64_t got = get64(b + off);
        if (got != want) {
            for (size_t i = 0; i < 8; i++)
                if ((uint8_t)(got >> (8 * i)) != (uint8_t)(want >> (8 * i)))
                    return (long)(off + i);
        }
    }
    for (; off < hi; off++)
        if (b[off] != (zero ? 0 : pattern_byte(key, off)))
            return (long)off;
    return -1;
}

/* The pattern's layout for a block of size bytes, filling or checking (positions below
 * limit only). Edges are multiples of 8 so they line up with the sampled words. */
static long layout(uint8_t *b, size_t size, size_t limit, uint64_t key, bool fill, bool zero)
{
    if (size <= PATTERN_FULL) {
        if (fill) {
            fill_range(b, 0, size, key, zero);
            return -1;
        }
        return check_range(b, 0, size, limit, key, zero);
    }
    size_t head = PATTERN_EDGE, tail = (size - PATTERN_EDGE) & ~(size_t)7;
    long bad;
    if (fill)
        fill_range(b, 0, head, key, zero);
    else if ((bad = check_range(b, 0, head, limit, key, zero)) >= 0)
        return bad;
    for (size_t i = head / PATTERN_STRIDE;; i++) {
        size_t off = sample_at(key, i);
        if (off + 8 > tail)
            break;
        if (fill) {
            put64(b + off, zero ? 0 : word_at(key, off));
        } else if (off < limit && (bad = check_range(b, off, off + 8, limit, key, zero)) >= 0) {
            return bad;
        }
    }
    if (fill) {
        fill_range(b, tail, size, key, zero);
        return -1;
    }
    return check_range(b, tail, size, limit, key, zero);
}

void pattern_fill(void *p, size_t size, uint64_t key) { (void)layout(p, size, size, key, true, false); }

long pattern_check(const void *p, size_t size, uint64_t key)
{
    return layout((uint8_t *)p, size, size, key, false, false);
}

long pattern_check_prefix(const void *p, size_t size, size_t kept, uint64_t key)
{
    return layout((uint8_t *)p, size, kept < size ? kept : size, key, false, false);
}

long pattern_check_zero(const void *p, size_t size)
{
    /* the same positions as a fill of this size (the key only places the samples) */
    return layout((uint8_t *)p, size, size, 0x5A5A5A5A5A5A5A5Aull ^ size, false, true);
}
