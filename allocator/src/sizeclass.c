/* sizeclass.c — the size-class table, each class's slab size and thread-cache
 * capacity, and the small-size lookup table. Must not depend on any heap.
 * Written once by sizeclass_init (process start, before any thread allocates),
 * read-only afterwards.
 */
#include "core.h"

/* Block sizes in bytes (header and canary included when the level has them).
 * Spacing: 16 B steps up to 128, then 4 classes per power of two up to 128 KiB. */
const uint32_t sizeclass_table[CORE_CLASSES] = {
    16,    32,    48,    64,    80,    96,    112,    128,     /* step 16 */
    160,   192,   224,   256,                                 /* step 32 */
    320,   384,   448,   512,                                 /* step 64 */
    640,   768,   896,   1024,                                /* step 128 */
    1280,  1536,  1792,  2048,                                /* step 256 */
    2560,  3072,  3584,  4096,                                /* step 512 */
    5120,  6144,  7168,  8192,                                /* step 1 KiB */
    10240, 12288, 14336, 16384,                               /* step 2 KiB */
    20480, 24576, 28672, 32768,                               /* step 4 KiB */
    40960, 49152, 57344, 65536,                               /* step 8 KiB */
    81920, 98304, 114688, 131072,                             /* step 16 KiB */
};

#define K64 (64u << 10)
#define K256 (256u << 10)
#define M1 (1u << 20)
#define M2 (2u << 20)

/* Slab bytes per class: small blocks in 64 KiB slabs (<= 4096 blocks, so the
 * descriptor fits its meta stride), bigger blocks in bigger slabs so every slab
 * holds at least 16 blocks. */
const uint32_t sizeclass_slab_bytes[CORE_CLASSES] = {
    K64,  K64,  K64,  K64,  K64,  K64,  K64,  K64,
    K64,  K64,  K64,  K64,  K64,  K64,  K64,  K64,
    K64,  K64,  K64,  K64,
    K256, K256, K256, K256, K256, K256, K256, K256, K256, K256, K256, K256,
    M1,   M1,   M1,   M1,   M1,   M1,   M1,   M1,
    M2,   M2,   M2,   M2,   M2,   M2,   M2,   M2,
};

/* Thread-cache capacity per class (blocks): fewer for big blocks so a cache holds
 * at most ~2 MiB of one class. Flushes move half of it, refills up to half
 * (tcache_t.fill: a few blocks at first, doubling with each refill). */
const uint16_t sizeclass_cache_cap[CORE_CLASSES] = {
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64,
    32, 32, 32, 32, 32, 32, 32, 32,
    16, 16, 16, 16, 16, 16, 16, 16,
};

uint8_t sizeclass_small_lut[65];
uint32_t sizeclass_canary_lo[CORE_CLASSES];

void sizeclass_init(void)
{
    int c = 0;
    for (uint32_t i = 0; i <= 64; i++) {
        uint32_t bytes = i * 16;
        while (sizeclass_table[c] < bytes)
            c++;
        sizeclass_small_lut[i] = (uint8_t)c;
    }
    for (c = 1; c < CORE_CLASSES; c++)
        sizeclass_canary_lo[c] = sizeclass_table[c - 1] - CORE_HDR - CORE_CANARY + 1;
}
