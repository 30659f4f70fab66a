/* core.h — private types of the allocator core (heap, slab, tcache, large, detect,
 * validate, stats). Included only by core .c files; the periphery sees the heap
 * through the functions in internal.h. Nothing here is exported.
 * Concurrency notes sit next to each field: "owner" = the owning thread only,
 * "class lock", "region lock", "atomic" (relaxed unless said otherwise).
 */
#ifndef NMM_CORE_H
#define NMM_CORE_H

#include "internal.h"

#include <pthread.h>
#include <string.h>

/* ------------------------------------------------------------------ constants */

#define CORE_CHUNK_SHIFT 16                      /* 64 KiB: the unit of the slab map */
#define CORE_CHUNK ((size_t)1 << CORE_CHUNK_SHIFT)
/* Slab metadata is packed, sized for each slab's block count, in three sparse
 * areas reserved for the worst case (every chunk a slab of 4096 blocks):
 * descriptor headers (slab_t, fixed size), bodies (state[n] + stack[n]) and sites
 * (site[n], u32). Only what a slab touches is committed, site[] only when a block
 * carries a site; packing keeps a 64 KiB slab of 80-B blocks at ~3 (untracked) or
 * ~7 bytes of metadata per block instead of whole pages per slab. Headers stay
 * apart from bodies so that a released slab's body pages, once no slab in use has
 * a body on them, can go back to the OS while its header (kept with the range)
 * stays readable. */
#define CORE_META_ALIGN 64                       /* descriptors and site arrays: own cache lines */
#define CORE_META_HDR 128                        /* a descriptor's header (slab_t), aligned */
#define CORE_META_HDRS_PER_CHUNK (2 * CORE_META_HDR) /* ranges plus spare descriptors */
#define CORE_META_DESC_PER_CHUNK 12544           /* >= 4096 * 3 + 2, aligned: bodies */
#define CORE_META_SITES_PER_CHUNK 16448          /* >= 4096 * 4, aligned */
#define CORE_CLASSES 48                          /* entries in sizeclass_table */
#define CORE_SMALL_MAX 131072                    /* largest class; larger requests are mapped */
/* The largest size (or alignment) a request may ask for: 64 TiB, more than any
 * mapping can hold, so larger ones fail at once and the size arithmetic after
 * this check (header, canary, page rounding) cannot overflow. */
#define CORE_MAX_REQUEST ((size_t)1 << 46)
#define CORE_SLOTS 64                            /* heaps that get thread caches */
#define CORE_MAX_HEAPS 1024                      /* heaps alive at once */
/* Partial-slab lists per class. A thread cache is given a lane when it is made
 * (round robin) and refills only from its lane's slabs, so the blocks of two
 * threads in different lanes never share a slab: not a cache line of blocks, nor
 * one of state bytes, which every alloc and free writes. (The second thread of a
 * working-set program had ~60% of its blocks' state bytes on lines the other
 * thread also wrote.) jemalloc's arenas do the same with threads. A lane that runs
 * dry grows its own slab; it takes another lane's only when the region is full. */
#define CORE_LANES 8
/* Empty slabs a class kept but did not need are returned by decay steps: every
 * CORE_DECAY_EVENTS slabs of a class that become empty, the class returns the
 * coldest of its empty slabs, as many as it kept through the whole step without
 * taking any (the step's low-water mark: tcmalloc's and jemalloc's way of telling
 * a cache that is needed from one that only holds memory). A thread that exits
 * empties every slab it alone used; threads that came and went together leave a
 * slab per lane per class behind, kept until retain_bytes, so RSS after many
 * short-lived threads kept rising with the most threads ever alive at once. */
#define CORE_DECAY_EVENTS 32
#define CORE_HDR 8                               /* header bytes before the user pointer */
#define CORE_CANARY 8                            /* tail canary bytes, starting right at ptr+size */
#define CORE_RECIP_SHIFT 40                      /* idx = (off * recip) >> 40, exact for off*bs < 2^40 */

/* Block states: one byte per block, out of band (slab descriptor). Written with
 * relaxed atomic stores by the thread that owns the block at that moment. */
enum {
    BS_NEVER = 0,       /* never handed out since the slab was made */
    BS_LIVE = 1,        /* handed out (malloc family) */
    BS_FREE = 2,        /* freed: in a slab stack or a thread cache */
    BS_QUARANTINE = 3,  /* paranoid: freed, poisoned, waiting in the quarantine */
    BS_RETIRED = 4,     /* found corrupted: never handed out again */
    BS_LIVE_BAD = 5,    /* live, damage already reported by a sweep: freeing it retires it quietly */
    BS_LIVE_NEW = 6,    /* live, from operator new (checking levels): only the fast paths' */
    BS_LIVE_NEW_ARRAY = 7, /* ... BS_LIVE is plain, so free() of these takes the slow path */
    /* Aligned blocks of header levels: the low nibble k says user = block + 2^k - CORE_HDR. */
    BS_ALIGNED = 0x10,     /* | k: live */
    BS_ALIGNED_BAD = 0x20, /* | k: live, damage already reported by a sweep */
    BS_FREE_ALIGNED = 0x30,/* | k: free (like BS_FREE), remembers k to name a double free */
    BS_QUAR_ALIGNED = 0x40,/* | k: quarantined (like BS_QUARANTINE) */
    BS_ALIGNED_NEW = 0x50, /* | k: live, from an aligned operator new */
    BS_ALIGNED_NEW_ARRAY = 0x60, /* | k: live, from an aligned operator new[] */
    BS_MARK = 0x80      /* validate only: "reached from a free structure" */
};
/* Live and aligned, of any family (not one a sweep found damaged). */
static inline bool state_is_aligned(uint8_t v)
{
    uint8_t hi = v & 0xF0;
    return hi == BS_ALIGNED || hi == BS_ALIGNED_NEW || hi == BS_ALIGNED_NEW_ARRAY;
}
static inline bool state_is_aligned_any(uint8_t v) { return state_is_aligned(v) || (v & 0xF0) == BS_ALIGNED_BAD; }
static inline bool state_has_offset(uint8_t v) { return v >= BS_ALIGNED && v < BS_MARK; }
/* Live, not aligned, of any family (not one a sweep found damaged). */
static inline bool state_is_live_unaligned(uint8_t v)
{
    return v == BS_LIVE || v == BS_LIVE_NEW || v == BS_LIVE_NEW_ARRAY;
}
/* The nmm_family_t a live state records (the malloc family for any other). */
static inline uint32_t state_family(uint8_t v)
{
    if (v == BS_LIVE_NEW || (v & 0xF0) == BS_ALIGNED_NEW)
        return NMM_FAMILY_NEW;
    if (v == BS_LIVE_NEW_ARRAY || (v & 0xF0) == BS_ALIGNED_NEW_ARRAY)
        return NMM_FAMILY_NEW_ARRAY;
    return NMM_FAMILY_MALLOC;
}
/* The live state of a family, unaligned or aligned (v: the malloc family's state). */
static inline uint8_t state_with_family(uint8_t v, uint32_t family)
{
    static const uint8_t unaligned[3] = {BS_LIVE, BS_LIVE_NEW, BS_LIVE_NEW_ARRAY};
    static const uint8_t aligned[3] = {BS_ALIGNED, BS_ALIGNED_NEW, BS_ALIGNED_NEW_ARRAY};
    return state_is_aligned(v) ? (uint8_t)(aligned[family] | (v & 15)) : unaligned[family];
}
/* Aligned states: bytes from the block start to the user pointer. */
static inline uint32_t state_user_off(uint8_t v) { return (1u << (v & 15)) - CORE_HDR; }
static inline bool state_is_free(uint8_t v) { return v == BS_FREE || (v & 0xF0) == BS_FREE_ALIGNED; }
/* The free state a quarantined block moves to. */
static inline uint8_t state_freed(uint8_t v)
{
    return (v & 0xF0) == BS_QUAR_ALIGNED ? (uint8_t)(BS_FREE_ALIGNED | (v & 15)) : BS_FREE;
}
/* The state of a block found in a free structure (a fork() child's view of a dead
 * thread's bin): a push publishes the bin's count before the block's free state, so a
 * thread stopped in between left a block that the bin holds but that still reads live
 * (a free) or quarantined (a quarantine release). The bin is the truth; any other state
 * stays as it is. */
static inline uint8_t state_settled_free(uint8_t v)
{
    if (v == BS_LIVE || v == BS_QUARANTINE || (v & 0xF0) == BS_QUAR_ALIGNED)
        return state_freed(v);
    if ((v & 0xF0) == BS_ALIGNED)
        return (uint8_t)(BS_FREE_ALIGNED | (v & 15));
    return v;
}

/* ------------------------------------------------------------------ sizeclass.c */

extern const uint32_t sizeclass_table[CORE_CLASSES];
extern const uint32_t sizeclass_slab_bytes[CORE_CLASSES];
extern const uint16_t sizeclass_cache_cap[CORE_CLASSES];
#define CORE_CACHE_CAP_MAX 64  /* a bin never holds more (tcache_flush_bin's buffer) */
#define CORE_FILL_FIRST 4      /* a bin's first refill (tcache_t.fill) */
extern uint8_t sizeclass_small_lut[65];  /* (size+15)>>4 -> class, for size <= 1024 */
/* Smallest request of each class at the header levels (class below's block
 * size - header - canary + 1; 0 for class 0): where its canary can start. */
extern uint32_t sizeclass_canary_lo[CORE_CLASSES];
void sizeclass_init(void);
/* Class for a block of `bytes` (header+payload+canary), -1 if larger than the largest. */
static inline int sizeclass_of(size_t bytes)
{
    if (bytes <= 1024)
        return sizeclass_small_lut[(bytes + 15) >> 4];
    if (bytes > CORE_SMALL_MAX)
        return -1;
    size_t x = bytes - 1;
    int b = 63 - __builtin_clzll(x);
    return 20 + (b - 10) * 4 + (int)((x >> (b - 2)) & 3);
}

/* ------------------------------------------------------------------ slab.c */

/* A slab descriptor lives in the heap's meta area (a header here, its body of
 * states and stack packed in the body area; made with the range, kept with it when
 * the range is given back), never inside the slab; the chunk map points at it.
 * Fields are written under the class lock (or region lock while the slab is being
 * made) and read lock-free by pointer validation. */
typedef struct slab {
    uint8_t *data;           /* first block: slab base (page aligned) + the heap's user_off
                              * (8 at header levels, so user = block + 8 is 16-byte aligned) */
    uint64_t recip;          /* ceil(2^40 / block_size) */
    uint32_t block_size;
    uint16_t nblocks;
    uint16_t cls;
    uint16_t nstack;         /* class lock: indices in stack[] */
    uint16_t bump;           /* class lock: blocks [bump, nblocks) never handed out */
    uint16_t cap;            /* region lock: blocks the descriptor and site[] were made for */
    uint8_t list;            /* class lock: SL_NONE / SL_PARTIAL / SL_EMPTY */
    uint8_t released;        /* region lock: range given back (kept for its class) */
    struct slab *next, *prev;/* class lock: partial or empty list */
    struct slab *next_free;  /* region lock: released-range stack */
    uint32_t span;           /* nblocks * block_size: bytes of the slab holding blocks */
    uint32_t plain_span;     /* class lock to write, read lock-free like span: span while
                              * every block handed out since the slab was made or last
                              * emptied has its header at the block's start (no aligned
                              * block); 0 after, so the checked copies' inline fit
                              * (access_fits_plain) leaves every range here to access_check.
                              * Plain accesses: no yield point of the chaos build */
    uint32_t *sites;         /* site[nblocks]: valid for a block whose header has HDR_SITE;
                              * written (relaxed) by the thread handing the block out */
    uint32_t chunks;
    uint8_t lane;            /* class lock: the partial list it is on when partial */
    uint16_t out_high;       /* class lock: the most blocks it had out at once (in caches
                              * or live) since its class's last decay step (slab_trim) */
    uint16_t touched;        /* class lock: blocks [0, touched) are all it may have pages
                              * of resident, as of that step (slab_trim) */
    uint8_t *states;         /* its body: uint8_t state[nblocks]; uint16_t stack[nblocks] */
} slab_t;
/* The inline fit reads one line of the descriptor (the descriptors are line aligned). */
_Static_assert(offsetof(slab_t, plain_span) + sizeof(uint32_t) <= CORE_META_ALIGN,
               "data, recip, block_size and plain_span share the descriptor's first line");
enum { SL_NONE = 0, SL_PARTIAL = 1, SL_EMPTY = 2 };

static inline uint8_t *slab_states(slab_t *s) { return s->states; }
static inline uint16_t *slab_stack(slab_t *s)
{
    return (uint16_t *)(((uintptr_t)(slab_states(s) + s->nblocks) + 1) & ~(uintptr_t)1);
}
/* Slab base: data minus the heap's lead (0 or 8). Slabs start at page-aligned
 * offsets of the region (itself only page aligned), so clearing the low 4 bits
 * removes the lead. */
static inline uintptr_t slab_base(const slab_t *s)
{
    return (uintptr_t)s->data & ~(uintptr_t)15;
}
static inline uint32_t slab_free_count(const slab_t *s)
{
    return (uint32_t)s->nstack + (uint32_t)(s->nblocks - s->bump);
}

/* A block reference as kept by caches: base of the block and its state byte. */
typedef struct blockref {
    uint8_t *block;
    uint8_t *state;
} blockref_t;

typedef struct sizeclass_pool {
    pthread_mutex_t lock;
    slab_t *partial[CORE_LANES]; /* class lock: slabs with free blocks (not empty), per lane */
    slab_t *empty;           /* class lock: fully free slabs kept (retain_bytes) */
    uint64_t nslabs;         /* class lock */
    uint64_t nempty;         /* class lock */
    uint64_t empty_low;      /* class lock: fewest in empty since the decay step began */
    uint32_t empty_events;   /* class lock: slabs emptied since the decay step began */
    uint64_t allocs;         /* atomic: counts merged from caches and uncached ops */
    uint64_t frees;          /* atomic */
    char pad[64];
} sizeclass_pool_t;

/* ------------------------------------------------------------------ detect.c */

/* Block layout at the header levels (standard, paranoid, or tracking=1):
 *
 *   slab:  [8-byte lead][block 0][block 1]...      (slab data = slab base + 8)
 *   block: [header: 8 bytes][user: size bytes][canary: 8 bytes][slack]
 *                           ^ user = block + 8, 16-byte aligned
 *
 * The header is one little-endian 64-bit word at user - 8:
 *   bits  0..17  requested size (large blocks saturate at HDR_SIZE_MASK: their
 *                out-of-band table entry is authoritative)
 *   bit  18      HDR_SITE: the block's allocation site is in its slab's site[]
 *                (blocks with site 0 never touch site[])
 *   bits 19..39  check: bits 19..39 of the keyed word (address key ^ secret)
 *                xor bits 0..18 (size and flag)
 *   bits 40..63  head guard: the keyed word's top 24 bits, the 3 bytes right
 *                below the user pointer: an underflow hits it first
 * The canary (8 bytes, every byte odd, keyed by address) starts exactly at
 * user + size. A change confined to size and flag always fails the check (for
 * a given address the check is a bijection of them, with the CRC and with the
 * portable fallback mix alike), and a damaged size also moves the canary. Like
 * any keyed check it is forgeable by someone who can read a header; it is
 * there against stray writes, not against that. 64 B requested -> 80-B class.
 * Aligned blocks (alignment 2^k > 16): user = block + 2^k - 8, the block size a
 * multiple of 2^k (block starts are 8 mod 2^k), the state byte keeps k.
 * Level off without tracking: no lead, no header, no canary (user = block).
 * Large blocks: the same header word before the user pointer (size saturated,
 * no HDR_SITE: the site is in the large table), canary at user + size. */
#define HDR_SIZE_MASK 0x3FFFFull                 /* 18 bits */
#define HDR_SITE (1ull << 18)
#define HDR_LO_MASK 0x7FFFFull                   /* size and flag: what the check covers */
#define HDR_CHECK_SHIFT 19
#define HDR_CHECK_MASK 0x1FFFFFull               /* 21 bits */
#define HDR_GUARD_SHIFT 40                       /* 24 bits: the top of (key ^ secret) */
#define HDR_GUARD_BYTES 3
_Static_assert(CORE_SMALL_MAX < HDR_SIZE_MASK, "small sizes fit the header's size field");
_Static_assert(CORE_HDR == 8 && CORE_CANARY == 8, "the header is one word, the canary one word");

typedef struct quarantine_entry {
    uint8_t *user;         /* NULL: reported by a sweep and retired */
    uint8_t *poison;       /* poisoned range: block + header bytes .. block end */
    uint8_t *state;        /* the block's state byte (per-thread quarantine) */
    uint32_t block_size;   /* bytes poisoned (from poison to the block end) */
    uint32_t free_site;
    uint32_t alloc_site;   /* tracked id or raw site (slab site[]), 0 = none */
    uint32_t size;         /* requested bytes */
    struct tstate *owner;  /* shared quarantine: the freeing thread (NULL = none) */
    uint64_t owner_calls;  /* owner->calls when it was freed: pinned while unchanged */
    uint8_t cls;           /* per-thread quarantine: the block's class ... */
    uint8_t freed_state;   /* ... and the state it takes when it leaves (BS_FREE or
                            * BS_FREE_ALIGNED | k), so a release computes neither */
} quarantine_entry_t;

#define CORE_TQ_CAP 128    /* per-thread quarantine entries (paranoid with caches) */

/* ------------------------------------------------------------------ large.c */

typedef struct large_entry {
    uintptr_t user;        /* 0 = empty, 1 = tombstone (deleted) */
    uintptr_t map_base;
    size_t map_len;        /* may exceed header page + usable: slack of a reused mapping */
    size_t size;           /* requested */
    size_t usable;         /* bytes counted against the limit / live bytes */
    uint32_t site;         /* tracked id */
    uint32_t free_site;
    uint8_t state;         /* BS_LIVE/BS_LIVE_BAD, BS_FREE (unmapped, remembered), BS_QUARANTINE (PROT_NONE) */
    uint8_t guard;         /* a guard page follows the block end */
    uint8_t reused;        /* live block on a mapping taken from the cache: not zero-filled */
    uint8_t family;        /* live: nmm_family_t of the call that made it (checking levels) */
    uint8_t align_shift;   /* log2 of the alignment asked for, 0 = the default (16) */
    uint32_t seq;          /* free order, for the quarantine FIFO */
} large_entry_t;

/* Freed large mappings kept mapped for reuse (levels without PROT_NONE
 * quarantine or guard pages only): oldest first. Bounded by LARGE_CACHE_MAX
 * entries and by the heap's retain_bytes in bytes. */
#define LARGE_CACHE_MAX 8
#define LARGE_SLACK_MAX ((size_t)1 << 20) /* a reused mapping may exceed the need by this, or by the need */
typedef struct large_cached {
    uintptr_t base;
    size_t len;            /* bytes mapped (header page + body) */
} large_cached_t;

/* ------------------------------------------------------------------ heap.c */

/* Inline fast paths (alloc.c): all need caches, no limit, fail points
 * disarmed; tracking only with the header fast paths (standard, paranoid). */
enum { FAST_NONE = 0, FAST_OFF = 1, FAST_STANDARD = 2, FAST_PARANOID = 3,
       FAST_TRACKED = 4 /* standard with tracking: allocs as standard, frees checked for a
                         * sampled block (its free stack is recorded) */ };

struct tcache;

struct nmm_heap {
    /* hot, read-only after creation */
    uintptr_t base;              /* region start */
    size_t region_size;
    slab_t **chunk_map;          /* atomic pointers, one per chunk */
    uint8_t fast;                /* atomic: FAST_* — which inline fast path applies */
    uint8_t has_hdr;             /* blocks carry the 8-byte header (layout: detect.c section) */
    uint8_t checks;              /* level >= standard: verify header/canary */
    uint8_t paranoid;
    uint8_t tracking;            /* blocks carry a context: tracking=1, or paranoid */
    uint8_t guard;               /* guard pages for large blocks */
    uint8_t use_cache;
    uint8_t fp_armed;            /* atomic */
    int32_t slot;                /* thread-cache slot, -1 = none */
    uint32_t stack_every0;       /* site-0 allocations per captured stack (paranoid: 1,
                                  * tracking: stack_sample, else 0 = never) */
    uint32_t user_off;           /* CORE_HDR when has_hdr, else 0 */
    uint64_t secret[4];          /* per-heap random key */
    uint64_t limit;              /* 0 = none */
    nmm_config_t cfg;
    uint64_t gen;

    /* region */
    pthread_mutex_t region_lock;
    uint8_t *meta;               /* descriptor headers, then (at meta_bodies) their bodies,
                                  * then (at meta_sites) site arrays */
    size_t meta_size;            /* bytes reserved for all three */
    size_t meta_sites;           /* offset of the site area in meta */
    size_t meta_used;            /* region lock: bump offset of the header area */
    size_t meta_bodies;          /* offset of the body area (states, stacks) in meta */
    size_t bodies_used;          /* region lock: bump offset in the body area */
    uint16_t *body_refs;         /* region lock: per page of the body area, bodies of slabs
                                  * in use on it (0: its page went back to the OS) */
    size_t body_page;            /* the OS page for slab_new's body pages: os_page_size()
                                  * loads it with an atomic, a yield point of the chaos
                                  * build, and slab_new had none (schedules count them) */
    size_t sites_used;           /* region lock: bump offset in the site area */
    size_t region_used;          /* region lock: bump offset */
    slab_t *released[CORE_CLASSES]; /* region lock: per-class stacks of given-back ranges
                                     * (a range keeps its descriptor, sized for its class) */
    slab_t *spare_desc;          /* region lock: descriptors (with site[]) no range uses: a
                                  * range reused by a class with more blocks got a bigger one */
    uint64_t retained_bytes;     /* region lock: bytes in empty slabs kept */
    uint32_t caches_live;        /* registry lock: thread caches made for it, not yet retired */

    sizeclass_pool_t pools[CORE_CLASSES];

    /* large */
    pthread_mutex_t large_lock;
    large_entry_t *large_tab;    /* open addressing, large_cap entries */
    size_t large_cap, large_used, large_tombs;
    size_t large_freed_records;  /* entries in state FREE (bounded) */
    size_t large_quar_count;
    uint64_t large_quar_bytes;
    uint32_t large_seq;
    uint8_t large_reuse;         /* read-only: freed mappings may be cached and mremap used */
    uint32_t large_cache_count;  /* large lock: entries in large_cache */
    uint64_t large_cache_bytes;  /* large lock: their mapped bytes (also in mapped_bytes) */
    large_cached_t large_cache[LARGE_CACHE_MAX]; /* large lock: oldest first */

    /* quarantine (paranoid) */
    pthread_mutex_t quar_lock;
    quarantine_entry_t *quar;
    size_t quar_cap, quar_head, quar_count;
    uint64_t quar_bytes;         /* atomic (read by stats) */
    uint64_t quar_max_bytes;
    uint64_t paranoid_ops;       /* atomic, for sweep_every_ops */

    /* statistics (atomic) */
    uint64_t live_est, peak_bytes, limit_used;
    uint64_t mapped_bytes, peak_mapped_bytes, slabs_mapped, slabs_returned;
    uint64_t large_allocs, large_frees, large_live_bytes;
    uint64_t merged_cached_allocs, merged_misses;
    uint64_t alloc_failures, injected_failures, lock_contention, sweeps, retired;

    struct zero_area *zero;      /* paranoid: zero-size blocks (zero.c); NULL otherwise */

    /* periphery slots */
    struct events_ring *events;
    struct fp_table *failpoints;
    struct nmm_heap *next_free;
};

/* A block found damaged (state: its state byte): never handed out again, counted in
 * the heap's retired blocks. The one way a slab block is retired. */
static inline void block_retire(nmm_heap_t *h, uint8_t *state)
{
    __atomic_store_n(state, BS_RETIRED, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->retired, 1, __ATOMIC_RELAXED);
}

/* heap.c */
void(heap_lock)(nmm_heap_t *h, pthread_mutex_t *m); /* counts contention (chaos.h names
                                                     * the caller's lock) */
void heap_account_live(nmm_heap_t *h, int64_t delta); /* live_est + peak */
void heap_account_mapped(nmm_heap_t *h, int64_t delta);
void heap_note_peak(nmm_heap_t *h, int64_t live_bytes);

/* Charge bytes handed out against limit_bytes; false (nothing charged) past it.
 * Without a limit both are no-ops. Lock-free; any thread. */
static inline bool heap_limit_take(nmm_heap_t *h, uint64_t bytes)
{
    if (!h->limit)
        return true;
    if (__atomic_add_fetch(&h->limit_used, bytes, __ATOMIC_RELAXED) <= h->limit)
        return true;
    __atomic_fetch_sub(&h->limit_used, bytes, __ATOMIC_RELAXED);
    return false;
}

static inline void heap_limit_give(nmm_heap_t *h, uint64_t bytes)
{
    if (h->limit)
        __atomic_fetch_sub(&h->limit_used, bytes, __ATOMIC_RELAXED);
}
nmm_heap_t *heap_by_address(uintptr_t addr, nmm_heap_t *except); /* region owner; g lock held */
void heap_set_status(nmm_status_t st);
nmm_status_t heap_report(nmm_heap_t *h, uint32_t kind, uint32_t detail, const void *addr,
                         size_t size, uint32_t alloc_id, uint32_t free_id);
/* Same, with the event's extra field (kinds that have one). */
nmm_status_t heap_report_extra(nmm_heap_t *h, uint32_t kind, uint32_t detail, uint32_t extra,
                               const void *addr, size_t size, uint32_t alloc_id, uint32_t free_id);
extern pthread_mutex_t heap_table_lock;
extern nmm_heap_t *heap_table[CORE_MAX_HEAPS];

/* slab.c */
bool slab_region_init(nmm_heap_t *h);
void slab_region_destroy(nmm_heap_t *h);
/* Take up to n free blocks of class cls from the slabs of lane (class lock taken
 * inside). */
uint32_t slab_take(nmm_heap_t *h, int cls, uint32_t lane, blockref_t *out, uint32_t n);
/* Same with the class lock already held by the caller. */
uint32_t slab_take_locked(nmm_heap_t *h, int cls, uint32_t lane, blockref_t *out, uint32_t n);
/* Give n free blocks (state already BS_FREE) back to their slabs; then cls keeps at
 * most keep_empty empty slabs, the coldest of the rest go back to the OS (a thread's
 * exit; UINT64_MAX: no limit but the retain budget and the decay steps). */
void slab_give(nmm_heap_t *h, int cls, const blockref_t *in, uint32_t n, uint64_t keep_empty);
void slab_give_locked(nmm_heap_t *h, int cls, slab_t *s, uint32_t idx);
/* Pointer -> slab (lock-free; NULL when not in a slab in use). */
static inline slab_t *slab_of(const nmm_heap_t *h, uintptr_t p)
{
    uintptr_t off = p - h->base;
    if (off >= h->region_size)
        return NULL;
    return __atomic_load_n(&h->chunk_map[off >> CORE_CHUNK_SHIFT], __ATOMIC_ACQUIRE);
}
/* Block index of a block-start pointer, or -1 when p is not a block start.
 * One multiply gives both answers: its high bits are the index, its low 40
 * bits (the fraction) are below recip exactly when off is a multiple of the
 * block size (Lemire's divisibility test; exact because off * block_size <
 * 2^40 for every slab). The index no longer waits on a second multiply. */
static inline int32_t slab_index(const slab_t *s, uintptr_t block)
{
    uint64_t off = block - (uintptr_t)s->data;
    uint64_t m = off * s->recip;
    if (off >= s->span || (m & (((uint64_t)1 << CORE_RECIP_SHIFT) - 1)) >= s->recip)
        return -1;
    return (int32_t)(m >> CORE_RECIP_SHIFT);
}
/* Which block of s contains p (p inside the slab). */
static inline uint32_t slab_index_containing(const slab_t *s, uintptr_t p)
{
    return (uint32_t)(((p - (uintptr_t)s->data) * s->recip) >> CORE_RECIP_SHIFT);
}

/* tcache.c */
/* One bin per class. Only allocations are counted per operation; frees are
 * derived: every block that enters `count` is a free unless `supplied` says
 * otherwise, so frees = allocs + count - supplied and live = supplied - count
 * (exact, also for paranoid, whose frees go to the quarantine and count down
 * `supplied` instead). Other threads read the three with tbin_read (see there
 * for the store order the owner keeps). 32 bytes, so the bin of a class is one
 * shift away. */
typedef struct tbin {
    uint32_t count;          /* owner writes (release), others read: blocks in items[] */
    uint32_t cap;
    uint64_t allocs;         /* owner writes, others read (relaxed) */
    blockref_t *items;
    int64_t supplied;        /* owner writes, others read (relaxed): blocks put into
                              * items[] other than by a free (refills, quarantine
                              * releases) minus blocks taken out other than by an
                              * alloc (flushes) minus frees that did not go into
                              * items[] (quarantined, retired) */
} tbin_t;

/* Owner-only counters that other threads read: a relaxed store of the new value
 * (a plain add in the generated code, and no data race). */
#define OWNER_ADD(field, v) __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)

/* Owner: the new number of blocks in items[]. A release store (a plain store on
 * x86): an alloc stores allocs + 1 first, so a reader that sees the smaller
 * count also sees the alloc counted and never derives a free that did not
 * happen (tbin_read). */
static inline void tbin_set_count(tbin_t *bin, uint32_t n)
{
    __atomic_store_n(&bin->count, n, __ATOMIC_RELEASE);  /* items[] before the count too */
}
/* Owner: take the top block out of a bin holding n > 0 blocks (n: bin->count, already
 * loaded). Every load comes before the first store (a state-byte store after it may
 * alias anything and would force reloads), and allocs is counted before count moves
 * (a reader then never derives a free that did not happen: tbin_read). The one pop of
 * the allocation paths. */
static inline __attribute__((always_inline)) blockref_t tbin_pop(tbin_t *bin, uint32_t n)
{
    blockref_t e = bin->items[n - 1];
    uint64_t allocs = bin->allocs;
    __atomic_store_n(&bin->allocs, allocs + 1, __ATOMIC_RELAXED);
    NMM_YIELD("tcache.alloc");
    tbin_set_count(bin, n - 1);
    return e;
}
/* Owner: put a block (its state byte at state) on top of a bin holding n < cap
 * blocks; the entry is written before the count that publishes it. The one push
 * of the free paths (a free counts itself: tbin_t). */
static inline __attribute__((always_inline)) void tbin_push(tbin_t *bin, uint32_t n, uint8_t *block,
                                                            uint8_t *state)
{
    bin->items[n].block = block;
    bin->items[n].state = state;
    tbin_set_count(bin, n + 1);
}

/* A fork() child sees each other thread's stores up to some point of its program
 * order, and gives a dead thread's bins and quarantine back to the heap; so a block
 * must leave one structure (that store first) before it enters the next, never be
 * in two at once. A compiler barrier on x86. */
static inline void fork_publish_order(void)
{
    __atomic_thread_fence(__ATOMIC_RELEASE);
}
/* Frees counted by a bin: owner only (or its cache retired under the registry
 * lock); other threads use tbin_read. */
static inline uint64_t tbin_frees(const tbin_t *bin)
{
    return __atomic_load_n(&bin->allocs, __ATOMIC_RELAXED) +
           __atomic_load_n(&bin->count, __ATOMIC_RELAXED) -
           (uint64_t)__atomic_load_n(&bin->supplied, __ATOMIC_RELAXED);
}

typedef struct tcache {
    tbin_t bins[CORE_CLASSES];
    nmm_heap_t *heap;
    uint64_t misses;         /* owner: refills */
    struct tcache *next_free;
    uint32_t purged;         /* registry lock: in the pool, its items and tq given back */
    /* paranoid with caches: this thread's FIFO of poisoned freed blocks */
    quarantine_entry_t *tq;  /* owner; CORE_TQ_CAP entries */
    uint32_t tq_head, tq_count;
    uint64_t tq_bytes;       /* owner writes, stats read (relaxed) */
    /* owner writes, others read: odd while the owner changes more than one of a
     * bin's count and supplied (refill, flush, quarantine release, uncached
     * free), so tbin_read retries instead of reading half of it. The alloc and
     * free fast paths change one field each and leave it alone. */
    uint32_t books;
    uint32_t lane;           /* set when the cache is first made: the slabs it refills from */
    /* owner: blocks each bin's next refill asks for. It starts at CORE_FILL_FIRST
     * and doubles with each refill up to cap / 2, so a thread that touches a class
     * briefly holds a few of its blocks, not half a bin of them (jemalloc's adaptive
     * fill): 8 threads living 256 operations each pulled 32 blocks of every class
     * they touched into their caches. Kept out of tbin_t so the free fast path
     * still compares count with a 32-bit cap. */
    uint16_t fill[CORE_CLASSES];
    int64_t merged[CORE_CLASSES]; /* owner: allocs - frees already added to heap->live_est */
} tcache_t;

/* Owner: open the books before a multi-field update of the bins; nests (only
 * the outermost call opens them). Returns whether this call did. */
static inline bool tcache_books_open(tcache_t *tc)
{
    uint32_t seq = tc->books;
    if (seq & 1)
        return false;
    __atomic_store_n(&tc->books, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* odd before any field changes */
    return true;
}
static inline void tcache_books_close(tcache_t *tc, bool opened)
{
    if (opened)
        __atomic_store_n(&tc->books, tc->books + 1, __ATOMIC_RELEASE);
}
/* Owner: a free of this class whose block does not go into items[]. */
static inline void tbin_note_uncached_free(tcache_t *tc, tbin_t *bin)
{
    bool opened = tcache_books_open(tc);
    OWNER_ADD(bin->supplied, -1);
    tcache_books_close(tc, opened);
}

typedef struct tstate {
    tcache_t *caches[CORE_SLOTS];   /* atomic pointers: set by owner, cleared by heap destroy */
    /* atomic, owner increments: paranoid calls without a cache (and one at thread
     * exit). A block this thread freed stays in the shared quarantine until the
     * count moves on: another thread's frees cannot push it out (unchecked)
     * while this thread is still between its free and its next call. */
    uint64_t calls;
    struct tstate *next_all;        /* immutable once published */
    uint8_t in_use;                 /* registry lock */
    uint8_t dead;                   /* thread has exited (sentinel) */
} tstate_t;

extern NMM_TLS tstate_t *tcache_tls;
extern pthread_mutex_t tcache_registry_lock;
extern tstate_t *tcache_all;               /* list head, atomic */
void tcache_process_init(void);
/* Cache of the calling thread for h, created on first use; NULL when none. */
tcache_t *tcache_get(nmm_heap_t *h);
/* The calling thread's state, created on first use; NULL when it cannot be. */
tstate_t *tcache_state(void);
bool tcache_refill(nmm_heap_t *h, tcache_t *tc, int cls);
void tcache_flush_bin(nmm_heap_t *h, tcache_t *tc, int cls, uint32_t keep);
/* Same, then the class keeps at most keep_empty empty slabs (slab_give). */
void tcache_flush_bin_to(nmm_heap_t *h, tcache_t *tc, int cls, uint32_t keep, uint64_t keep_empty);
void tcache_merge_live(nmm_heap_t *h, tcache_t *tc, int cls);
void tcache_detach_heap(nmm_heap_t *h);   /* heap destroy; registry lock taken inside */
void tcache_fork_child(void);             /* flush caches of threads that don't exist */
/* Sum over live caches (registry lock must be held by the caller when exact). */
void tcache_sum(nmm_heap_t *h, uint64_t *allocs, uint64_t *frees, uint64_t *cached,
                uint64_t *cached_allocs, uint64_t *misses, uint64_t *tq_bytes);

/* zero.c — paranoid's zero-size blocks: distinct addresses in a PROT_NONE area. */
bool zero_init(nmm_heap_t *h);                      /* the area at paranoid; false: no memory */
void zero_destroy(nmm_heap_t *h);
bool zero_owns(const nmm_heap_t *h, uintptr_t p);   /* p is in the area (any heap level) */
void *zero_alloc(nmm_heap_t *h, uint32_t site_id);  /* NULL: not paranoid, or the area is full */
/* A live zero-size block at p: its family and site id. */
bool zero_live(nmm_heap_t *h, const void *p, uint32_t *family, uint32_t *site);
/* Same, then its family becomes set; false (nothing changed) when not live. */
bool zero_swap_family(nmm_heap_t *h, const void *p, uint32_t set, uint32_t *family, uint32_t *site);
/* Free (or realloc's free of) p in the area: NMM_OK, or the status of its report
 * (double free, a freed block's realloc, an address that is no slot's start). */
nmm_status_t zero_free(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call);
void zero_foreach_live(nmm_heap_t *h, heap_visit_fn visit, void *ctx);
void zero_counts(const nmm_heap_t *h, uint64_t *allocs, uint64_t *frees);
/* Async-signal-safe: a fault address in the area (the signal handler). */
bool zero_describe(nmm_heap_t *h, uintptr_t addr, nmm_event_t *ev);

/* validate.c's exit sweep: a problem it saw: re-checked once the locks are dropped (slab
 * blocks), or final (large blocks, checked under the large lock). */
typedef struct exit_finding {
    uint8_t *user;       /* the block's user pointer */
    uint8_t *state;      /* its state byte; NULL: a large block, already marked bad */
    uint8_t state_was;   /* the state seen */
    uint32_t room;       /* slab: bytes from user to the block end (a free block: poisoned) */
    uint64_t hw;         /* slab: the header word seen */
    uint32_t kind;       /* large: the event to report */
    uint32_t detail;
    size_t size;
    uint32_t site;
} exit_finding_t;

/* large.c */
bool large_init(nmm_heap_t *h);
void large_destroy(nmm_heap_t *h);
void *large_alloc(nmm_heap_t *h, size_t size, size_t align, uint32_t site_id);
/* calloc of a large block: zero it if its mapping came from the cache. */
void large_zero_reused(nmm_heap_t *h, void *p, size_t size);
/* Resize a live large block to another large size with mremap. Returns the
 * block (maybe moved), NULL with *fallback false when the limit refuses
 * (nothing changed), or NULL with *fallback true when the caller must take the
 * allocate-copy-free path (reuse off, block damaged, fail points armed, mremap
 * refused). */
void *large_realloc(nmm_heap_t *h, void *p, size_t size, nmm_site_t site, bool *fallback);
/* Free path for pointers outside the slab region: NMM_OK, or a status after a report.
 * Returns -1 when the pointer is not known to this heap. */
int large_free(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call);
/* Live large block at p: fills size/usable/site; false if not a live large block. */
bool large_lookup(nmm_heap_t *h, const void *p, size_t *size, size_t *usable, uint32_t *site);
/* The live large block at p: its family (nmm_family_t), log2 of its alignment
 * (0 = the default), requested size and site; then its family becomes set.
 * false (nothing changed) when p is not a live large block. */
bool large_swap_family(nmm_heap_t *h, const void *p, uint32_t set, uint32_t *family,
                       uint32_t *align_shift, size_t *size, uint32_t *site);
/* p is the user pointer of a large block that was freed (still remembered). */
bool large_was_freed(nmm_heap_t *h, const void *p);
bool large_contains(nmm_heap_t *h, uintptr_t p);
void large_foreach_live(nmm_heap_t *h, heap_visit_fn visit, void *ctx);
size_t large_validate(nmm_heap_t *h);
size_t large_validate_books(nmm_heap_t *h, uint64_t *live_blocks, uint64_t *charged);
bool large_describe(nmm_heap_t *h, uintptr_t addr, nmm_event_t *ev);
/* The exit sweep's share: every live large block's header and canary, under the
 * large lock; a damaged one is marked bad and described in out (at most cap).
 * Returns how many were found (those past cap are marked, not described). */
size_t large_exit_scan(nmm_heap_t *h, exit_finding_t *out, size_t cap);

/* detect.c (the per-block primitives are inline: they sit on the standard hot path) */
#if defined(__SSE4_2__)
#include <nmmintrin.h>
/* The CRC zero-extended to 64 bits (the instruction clears the upper half; a
 * cast to 32 bits would cost a zero-extending move before the multiply). */
static inline uint64_t detect_crc(uint32_t crc, uint64_t v)
{
    return _mm_crc32_u64(crc, v);
}
#else
static inline uint64_t detect_crc(uint32_t crc, uint64_t v)
{
    /* Portable keyed mix when CRC32C is not available at build time. */
    uint64_t x = (v ^ crc) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(x ^ (x >> 32));
}
#endif

/* One CRC of the address, spread over 64 bits by one multiply, keys everything
 * else: the canary word and the header's check and guard are that word xor a
 * secret each, so the two stores of an alloc and the two compares of a free
 * hang off one CRC and one multiply. The multiplier is odd and fits an imm32
 * (its upper half is the sign extension), so no constant load; times a 32-bit
 * key it fills all 64 bits. */
#define DETECT_KEY_MUL 0xFFFFFFFF9E3779B1ull
static inline uint64_t detect_addr_key(const nmm_heap_t *h, uintptr_t user)
{
    return detect_crc((uint32_t)h->secret[0], user) * DETECT_KEY_MUL;
}
/* Canary word for address key m, stored unaligned right after the requested
 * bytes. Every byte is odd, so a stray NUL or a zero fill always damages it. */
static inline uint64_t detect_canary_word_k(const nmm_heap_t *h, uint64_t m)
{
    return (m ^ h->secret[2]) | 0x0101010101010101ull;
}
static inline uint64_t detect_canary_word(const nmm_heap_t *h, uintptr_t user)
{
    return detect_canary_word_k(h, detect_addr_key(h, user));
}
/* The low header bits for a request: size (saturated) and the site flag. */
static inline uint64_t detect_header_lo(size_t size, bool has_site)
{
    return (size < HDR_SIZE_MASK ? (uint64_t)size : HDR_SIZE_MASK) | (has_site ? HDR_SITE : 0);
}
/* The whole header word for address key m and low bits lo (see the layout
 * above): the keyed word's low 19 bits make room for lo, and lo is xored once
 * more into the check (lo * HDR_LO_TWICE = lo | lo << 19, no carries), so the
 * check is the key's bits xor lo: a bijection of lo for each address, which is
 * why a change confined to size and flag always fails it. */
#define HDR_LO_TWICE (1ull | 1ull << HDR_CHECK_SHIFT)
static inline uint64_t detect_header_k(const nmm_heap_t *h, uint64_t m, uint64_t lo)
{
    return ((m ^ h->secret[1]) & ~HDR_LO_MASK) ^ lo * HDR_LO_TWICE;
}
static inline uint64_t detect_header_word(const uint8_t *user)
{
    uint64_t w;
    memcpy(&w, user - CORE_HDR, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}
static inline void detect_store_header(uint8_t *user, uint64_t w)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    memcpy(user - CORE_HDR, &w, 8);
}
/* Size field of a header word (only meaningful once the header validated). */
static inline size_t detect_header_size(uint64_t w) { return (size_t)(w & HDR_SIZE_MASK); }
static inline bool detect_header_has_site(uint64_t w) { return (w & HDR_SITE) != 0; }

static inline void detect_write_header(const nmm_heap_t *h, uint8_t *user, size_t size, bool has_site)
{
    detect_store_header(user, detect_header_k(h, detect_addr_key(h, (uintptr_t)user),
                                              detect_header_lo(size, has_site)));
}

/* Every block has room for CORE_CANARY bytes after the request (class choice,
 * large-block layout); the rest of the slack is not checked. */
static inline void detect_write_canary(const nmm_heap_t *h, uint8_t *user, size_t size, size_t room)
{
    (void)room;
    uint64_t w = detect_canary_word(h, (uintptr_t)user);
    memcpy(user + size, &w, CORE_CANARY);
}

/* Where the canary of a slab block of class cls (block_size bytes, header
 * levels) can be: its bytes lie in [user + *lo, user + *hi] for every request
 * the class takes. A request goes to the smallest class holding size + header +
 * canary, so size is at least the class below's block size - header - canary
 * + 1, and the canary ends by the block's last byte. */
static inline void detect_canary_window(uint32_t cls, uint32_t block_size, uint32_t *lo,
                                        uint32_t *hi)
{
    *lo = sizeclass_canary_lo[cls];
    *hi = block_size - CORE_HDR - 1;
}

/* Header and canary in one go (the cache-hit alloc paths): the address key
 * and the secrets are read once, before any store. */
static inline void detect_write_block(const nmm_heap_t *h, uint8_t *user, size_t size, bool has_site)
{
    uint64_t m = detect_addr_key(h, (uintptr_t)user);
    uint64_t hw = detect_header_k(h, m, detect_header_lo(size, has_site));
    uint64_t w = detect_canary_word_k(h, m);
    detect_store_header(user, hw);
    memcpy(user + size, &w, CORE_CANARY);
}

/* Fast "is everything intact" test for the free path of a slab block: the size
 * bound (first: the slab's room is then no longer needed), one address key (CRC
 * and multiply), one compare for the header and one unaligned canary load.
 * Intact, x = hw ^ keyed bits is lo | lo << 19 (detect_header_k), so x >> 19
 * equals lo exactly then. */
static inline bool detect_block_intact(const nmm_heap_t *h, const uint8_t *user, size_t room)
{
    uint64_t hw = detect_header_word(user);
    size_t size = detect_header_size(hw);
    if (size + CORE_CANARY > room)
        return false;
    uint64_t m = detect_addr_key(h, (uintptr_t)user);
    uint64_t x = hw ^ ((m ^ h->secret[1]) & ~HDR_LO_MASK);
    if (x >> HDR_CHECK_SHIFT != (hw & HDR_LO_MASK))
        return false;
    uint64_t got;
    memcpy(&got, user + size, CORE_CANARY);
    if (NMM_MUTANT(canary_late))  /* mutant: the check starts one byte late */
        return ((got ^ detect_canary_word_k(h, m)) & ~(uint64_t)0xFF) == 0;
    return got == detect_canary_word_k(h, m);
}

/* known_size for detect_check_block: read the size from the header (slab blocks). */
#define DETECT_SIZE_FROM_HEADER SIZE_MAX
/* 0 = intact, else an NMM_EV_* kind; *detail = offset of the damage (underflow:
 * how far below the user pointer it reaches). *size and *has_site are filled
 * when the header's check holds (0/false otherwise). Large blocks pass their
 * table size as known_size (the header's field saturates). */
uint32_t detect_check_block(const nmm_heap_t *h, const uint8_t *user, size_t room, size_t known_size,
                            uint32_t *detail, size_t *size, bool *has_site);
bool detect_header_ok(const nmm_heap_t *h, const uint8_t *user);
void detect_poison(uint8_t *p, size_t n);
/* The same under the heap's poison_limit (a long block: its two ends only);
 * freed blocks are poisoned and checked this way, never-used ones in full. */
void detect_poison_h(const nmm_heap_t *h, uint8_t *p, size_t n);
/* The offset of the first damaged poison byte (of what poison_limit leaves
 * poisoned), or -1. */
long detect_poison_damage_h(const nmm_heap_t *h, const uint8_t *p, size_t n);
void detect_note_poison_extent_h(const nmm_heap_t *h, const uint8_t *p, size_t n,
                                 const uint8_t *user, long first);
/* For the use-after-free report that follows: the last damaged byte of the
 * poisoned range [p, p + n) (first is the first damaged offset in it), as an
 * offset from user (events_extent_last). */
void detect_note_poison_extent(const uint8_t *p, size_t n, const uint8_t *user, long first);
/* Paranoid's fresh blocks: a new slab's blocks are poisoned (detect_poison_fresh;
 * nothing at the other levels), and a never-used block is checked when first
 * handed out or swept: damage is reported (an overflow of the block before it
 * when its header holds, else a write into unused memory) and true returned:
 * the caller retires the block. */
void detect_poison_fresh(nmm_heap_t *h, slab_t *s);
bool detect_fresh_damaged(nmm_heap_t *h, slab_t *s, uint32_t idx);
bool detect_quarantine_init(nmm_heap_t *h);
void detect_quarantine_destroy(nmm_heap_t *h);
/* Poison and hold a freed block (paranoid); releases what falls out. */
void detect_quarantine_push(nmm_heap_t *h, uint8_t *user, uint8_t *poison, uint32_t room,
                            nmm_site_t free_site, uint32_t alloc_site, uint32_t size);
size_t detect_quarantine_validate(nmm_heap_t *h);
/* Per-thread quarantine (paranoid with caches): poison and hold; what falls out
 * is verified and goes to the cache. Owner thread only. */
void detect_tq_push(nmm_heap_t *h, tcache_t *tc, uint8_t *user, uint8_t *poison, uint8_t *state,
                    uint32_t room, nmm_site_t free_site, uint32_t alloc_site, uint32_t size);
void detect_tq_drain(nmm_heap_t *h, tcache_t *tc);     /* owner gone or exiting */
size_t detect_tq_validate(nmm_heap_t *h, tcache_t *tc); /* quiescent sweep */
bool detect_quarantine_holds(nmm_heap_t *h, const uint8_t *poison);
/* Paranoid without caches: the calling thread starts an allocator call (unpins
 * the blocks it freed in its previous calls). */
void detect_note_call(void);

/* Sites out of band: a block's site is in site[idx] when its header says
 * HDR_SITE (has_site: from a header that validated); else it is 0. */
static inline uint32_t slab_site(const slab_t *s, uint32_t idx, bool has_site)
{
    return has_site ? __atomic_load_n(&s->sites[idx], __ATOMIC_RELAXED) : 0;
}
/* Record a non-zero site for a block the calling thread hands out (cache or
 * slab ref: the slab from the chunk map, the index from the state pointer). */
static inline void slab_set_site_ref(const nmm_heap_t *h, const blockref_t *b, uint32_t site)
{
    slab_t *s = slab_of(h, (uintptr_t)b->block);
    __atomic_store_n(&s->sites[b->state - slab_states(s)], site, __ATOMIC_RELAXED);
}

/* validate.c */
/* What a freelist_corrupt event's detail says validate found (1..7: a block's state
 * against the free structures, in validate.c; the rest below). */
enum {
    VALIDATE_LIST_LOOP = 8,      /* a slab list longer than the slabs in use: a cycle */
    VALIDATE_LIST_ENTRY = 9,     /* a list entry of another list/class, a bad prev, unmapped */
    VALIDATE_LIST_FLAG = 10,     /* a slab's list flag disagrees with its free count */
    VALIDATE_LIST_COUNT = 11,    /* nslabs/nempty/list lengths disagree with the slabs */
    VALIDATE_RETAINED = 12,      /* retained bytes are not the empty slabs' bytes */
    VALIDATE_QUAR_ENTRY = 13,    /* a quarantine entry's block is not quarantined, or twice */
    VALIDATE_QUAR_LOST = 14,     /* a quarantined block in no quarantine */
    VALIDATE_QUAR_BYTES = 15,    /* quarantine byte/entry counts disagree with the entries */
    VALIDATE_LIMIT = 16,         /* the limit charge is not the live blocks' bytes */
    VALIDATE_LIVE_COUNT = 17,    /* live counters disagree with the live blocks */
    VALIDATE_RELEASED = 18,      /* a released-range or spare list loops or holds a mapped slab */
    VALIDATE_BIN = 19,           /* a cache bin or quarantine ring counts past its capacity */
    VALIDATE_PAST_BUMP = 20      /* a block handed out past the bump pointer (a slab's count
                                  * says never used: it would be handed out again) */
};
size_t validate_heap(nmm_heap_t *h, bool full);
/* The exit sweep (nmm_exit_check); echo: write each line to stderr at once too
 * (the heap or the process is ending: nobody will drain the ring). */
size_t validate_exit_check(nmm_heap_t *h, bool echo);
void validate_maybe_sweep(nmm_heap_t *h);
uint64_t validate_requested_bytes(nmm_heap_t *h);

/* alloc.c */
void alloc_retire(nmm_heap_t *h, uint8_t *block);    /* block_retire by block address */

/* os.c extras (only os.c calls the kernel) */
void *os_map_sparse(size_t bytes);                 /* RW, MAP_NORESERVE: committed on touch */
void os_forget_thread_id(void);                    /* fork child */
void *os_reserve(size_t bytes);                    /* PROT_NONE, not committed */
bool os_commit(void *addr, size_t bytes);          /* make RW */
void os_decommit(void *addr, size_t bytes);        /* give pages back, keep RW */
bool os_protect_none(void *addr, size_t bytes);
/* mremap(MREMAP_MAYMOVE): the mapping's new address, NULL when refused (the old one intact). */
void *os_remap(void *addr, size_t old_bytes, size_t new_bytes);
void os_random(void *buf, size_t n);

/* ------------------------------------------------------------------ access.c, copy_shim.c */

/* The checked copies' common answer, inline and without the state byte: p is in
 * slab s (its chunk maps to s) and [p, p + n) lies inside the requested bytes of
 * the block holding p, by the size in that block's header word. false: access_check
 * must look (p in the slab's lead or tail, before a block's user bytes, past its
 * size, or s has held an aligned block). Exact without the state byte: when the
 * block is live and plain it is access_check's own test; when it is not live
 * (free, quarantined, never used, retired, damaged and reported) access_check
 * reports nothing whatever the answer, and the word read is slab memory all the
 * same. The header's check is not verified: a damaged size is its free's or the
 * sweep's to report, as in access_check, which verifies it only before a report.
 * At the header levels only (every block's header at its start). Any thread. */
static inline bool access_fits_plain(const slab_t *s, uintptr_t p, size_t n)
{
    const uint8_t *data = s->data;
    uint64_t d = p - (uintptr_t)data;  /* from the slab's first block */
    if (d >= s->plain_span)
        return false;
    uint64_t b = ((d * s->recip) >> CORE_RECIP_SHIFT) * s->block_size;  /* the block's start */
    uint64_t size = detect_header_size(detect_header_word(data + b + CORE_HDR));
    uint64_t end = d - b - CORE_HDR + n;  /* from the user pointer to the range's end */
    /* end < n: the range starts in the head (the offset wrapped) or n wraps */
    return end <= size && end >= n;
}

#endif /* NMM_CORE_H */
