/* prng.h — the driver's only source of randomness: splitmix64 for seeding and
 * deriving sub-seeds, xoshiro256** for streams. Header-only, no global state:
 * every generator is a value owned by exactly one thread. */
#ifndef DRV_PRNG_H
#define DRV_PRNG_H

#include <stdint.h>

#define PRNG_GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t prng_splitmix(uint64_t *state)
{
    uint64_t z = (*state += PRNG_GOLDEN);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A well-mixed 64-bit value from (a, b): sub-seeds and pattern keys. */
static inline uint64_t prng_mix(uint64_t a, uint64_t b)
{
    uint64_t s = a ^ (b * PRNG_GOLDEN + 0x632BE59BD9B4E019ull);
    prng_splitmix(&s);
    return prng_splitmix(&s);
}

typedef struct xoshiro {
    uint64_t s[4];
} xoshiro_t;

static inline void xoshiro_seed(xoshiro_t *x, uint64_t seed)
{
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++)
        x->s[i] = prng_splitmix(&sm);
}

static inline uint64_t prng_rotl(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }

static inline uint64_t xoshiro_next(xoshiro_t *x)
{
    uint64_t *s = x->s;
    uint64_t result = prng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = prng_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double xoshiro_unit(xoshiro_t *x) { return (double)(xoshiro_next(x) >> 11) * 0x1.0p-53; }

/* Uniform in [0, n); 0 when n == 0. Lemire's multiply, no division. */
static inline uint64_t xoshiro_below(xoshiro_t *x, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)xoshiro_next(x) * n) >> 64);
}

#endif /* DRV_PRNG_H */
