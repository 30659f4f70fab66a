/* hist.c — log-linear latency histograms (8 sub-buckets per power of two, exact
 * below 16 ns). Each worker owns one and adds to it without locks; the main thread
 * merges them after every worker has been joined. */
#include <time.h>

#include "driver.h"

static inline unsigned bucket_of(uint64_t ns)
{
    if (ns < 16)
        return (unsigned)ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns); /* >= 4 */
    unsigned sub = (unsigned)(ns >> (e - 3)) & 7u;
    return 16u + (e - 4u) * 8u + sub;
}

static uint64_t bucket_low(unsigned b)
{
    if (b < 16)
        return b;
    unsigned e = (b - 16) / 8 + 4, sub = (b - 16) % 8;
    return (8ull + sub) << (e - 3);
}

static uint64_t bucket_mid(unsigned b)
{
    if (b < 16)
        return b;
    uint64_t lo = bucket_low(b), width = 1ull << ((b - 16) / 8 + 4 - 3);
    return lo + width / 2;
}

void hist_add(hist_t *h, uint64_t ns)
{
    h->counts[bucket_of(ns)]++;
    h->samples++;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->samples += from->samples;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

uint64_t hist_percentile(const hist_t *h, double q)
{
    if (!h->samples)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->samples);
    if (rank >= h->samples)
        rank = h->samples - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen > rank) {
            uint64_t mid = bucket_mid(i);
            return mid > h->max_ns ? h->max_ns : mid;
        }
    }
    return h->max_ns;
}

uint64_t drv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
