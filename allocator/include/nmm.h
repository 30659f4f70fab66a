/* nmm.h — the public C API of NMM, the nmm-chaos memory manager.
 *
 * This is the one header a C user includes. Everything here is prefixed nmm_/NMM_;
 * nothing else is exported from libnmm. Unless a declaration says otherwise every
 * function is thread-safe for distinct heaps and for concurrent calls on one heap.
 * Sizes are in bytes unless the name carries another unit.
 */
#ifndef NMM_H
#define NMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(NMM_BUILDING)
#define NMM_API __attribute__((visibility("default")))
#else
#define NMM_API
#endif

#define NMM_VERSION_MAJOR 0
#define NMM_VERSION_MINOR 1

/* ------------------------------------------------------------------ statuses */

/* Every fallible call returns one of these; 0 is success. Stable values: the
 * Python binding maps them to exceptions by number. */
typedef enum nmm_status {
    NMM_OK = 0,
    NMM_E_DOUBLE_FREE = 1,      /* the block is already free (or in quarantine) */
    NMM_E_INVALID_POINTER = 2,  /* not the start of a live block of this heap */
    NMM_E_CORRUPTED = 3,        /* header, guard or canary damaged: block retired, never reused */
    NMM_E_NOMEM = 4,            /* out of memory, over limit_bytes, or an injected failure */
    NMM_E_INVALID_ARGUMENT = 5, /* bad alignment, bad option, size overflow, … */
    NMM_E_REALLOC_FREED = 6,    /* realloc of a block that was already freed */
    NMM_E_ABORTED = 7,          /* policy=abort: never returned, the process is gone */
    NMM_E_MISMATCH = 8          /* freed by the wrong kind of call (free of a new'd block,
                                 * delete[] of a new'd one, a sized delete of the wrong size
                                 * or alignment): reported, and the block was freed anyway */
} nmm_status_t;

/* A static English string for a status; never NULL. */
NMM_API const char *nmm_status_str(nmm_status_t status);

/* The status of the calling thread's last failing call (alloc/realloc/free…).
 * Allocation functions return NULL and set errno; this says why in NMM terms. */
NMM_API nmm_status_t nmm_last_status(void);

/* ------------------------------------------------------------------ config */

typedef enum nmm_level {
    NMM_LEVEL_OFF = 0,      /* pointer validation only: double/invalid free never crash */
    NMM_LEVEL_STANDARD = 1, /* + keyed header checksum, head guard, exact tail canary:
                             * 16 bytes per block (an 8-byte header below the pointer,
                             * an 8-byte canary at pointer + size), so malloc(64) uses
                             * an 80-byte block */
    NMM_LEVEL_PARANOID = 2  /* + poisoning (of never-used blocks too), quarantine, guard pages,
                             * periodic sweeps */
} nmm_level_t;

typedef enum nmm_policy {
    NMM_POLICY_RECORD = 0,  /* record an event, return an error status, go on */
    NMM_POLICY_ABORT = 1    /* write one line to stderr with write(2), then abort() */
} nmm_policy_t;

#define NMM_CONFIG_VERSION 1

/* Heap configuration. Initialise with nmm_config_init (defaults) or
 * nmm_config_parse (an NMM_OPTIONS string); then set fields. Copied by
 * nmm_heap_create, so the caller may free it afterwards. */
typedef struct nmm_config {
    uint32_t size;              /* sizeof(nmm_config_t), set by nmm_config_init */
    uint32_t version;           /* NMM_CONFIG_VERSION */
    nmm_level_t level;          /* detection level; default NMM_LEVEL_OFF */
    nmm_policy_t policy;        /* what a detection does; default NMM_POLICY_RECORD */
    uint64_t limit_bytes;       /* cap on bytes handed out (usable sizes); 0 = no limit */
    uint64_t retain_bytes;      /* empty-slab bytes kept before returning slabs to the OS (a
                                 * class also returns those it kept unused through its last
                                 * 32 slabs emptied: CORE_DECAY_EVENTS); also,
                                 * separately, the bytes of freed large mappings kept (at most
                                 * 8, oldest unmapped first) for reuse by the next large block,
                                 * except at paranoid or with guard pages; 0 = keep none */
    uint64_t quarantine_bytes;  /* paranoid: freed bytes held back before reuse; default 4 MiB */
    uint64_t sweep_every_ops;   /* paranoid: full integrity sweep every N ops; 0 = never */
    uint32_t guard_pages;       /* 1 = guard page after each large block (nmm_config_parse: on
                                 * at level=paranoid unless guard= is given); 0 = none */
    uint32_t thread_cache;      /* 1 = per-thread caches (default); 0 = every op takes the lock */
    uint32_t tracking;          /* 1 = record allocation sites for leak reports */
    uint32_t stack_sample;      /* with tracking: capture a stack on 1 in N allocations; 0 = never */
    uint32_t event_capacity;    /* event ring entries; default 1024; overflow counts as dropped */
    uint32_t exit_check;        /* 1 = integrity sweep when the heap ends (nmm_heap_destroy; the
                                 * default heap: at process exit, before the leak report), see
                                 * nmm_exit_check (nmm_config_parse: on at level=paranoid
                                 * unless exit_check= is given); 0 = none */
    uint64_t seed;              /* seed for fail-point decisions; 0 = from the clock */
    const char *failpoints;     /* fail-point specs (see nmm_failpoint_set), ';'-separated; may be NULL */
    uint64_t poison_limit;      /* paranoid: poison (and check) only the first and the last
                                 * poison_limit bytes of a freed block's memory when it is
                                 * longer than twice that: the cost per free is bounded, and
                                 * a use after free in the middle goes unseen; 0 = all of it
                                 * (the default). Never-used blocks are poisoned whole. */
} nmm_config_t;

/* Fill *cfg with defaults (does not read the environment). */
NMM_API void nmm_config_init(nmm_config_t *cfg);

/* NMM_OPTIONS keys (options.c holds the one table; `NMM_OPTIONS=help` or
 * `python -m allocator options` prints it). Each key is also accepted under its
 * nmm_config_t field name, and the Python Heap(...) takes the same keywords.
 *   key         field             default  value
 *   level       level             off      off | standard | paranoid (or 0 | 1 | 2)
 *   policy      policy            record   record | abort
 *   limit       limit_bytes       0        size: 4096, 64k, 4M/4MiB/4MB, 1G, 1T (binary); 0 = none
 *   retain      retain_bytes      16M      size
 *   quarantine  quarantine_bytes  4M       size
 *   sweep       sweep_every_ops   0        count; 0 = never
 *   guard       guard_pages       0        bool (0/1, true/false, yes/no, on/off);
 *                                          level=paranoid sets it unless guard= is given
 *   exit_check  exit_check        0        bool; level=paranoid sets it unless given
 *   poison_limit poison_limit     0        size; 0 = poison whole blocks
 *   tcache      thread_cache      1        bool
 *   tracking    tracking          0        bool
 *   stacks      stack_sample      1/64     1/N or N (also turns tracking on); 0 = no stacks
 *   events      event_capacity    1024     count (at most 1M)
 *   seed        seed              0        count (decimal or 0x hex); 0 = from the clock
 *   fail        failpoints        -        fail-point specs (nmm_failpoint_set); repeated
 *                                          fail= keys accumulate, an empty fail= clears
 * Process keys, read from NMM_OPTIONS only (nmm_config_parse rejects them); they
 * configure the process, so they apply to every heap in it, the default heap and
 * the ones a program makes with nmm_heap_create (read on first use; a bad piece is
 * named only when the default heap is made):
 *   strict                        0        bool: a bad key or value exits with status 1
 *   copy_check                    1        bool: libnmm_preload.so's memcpy & co. check
 *                                          heap blocks (standard and above); 0 = libc's
 *   log_path, log_format          -, text  reports (errors; with tracking, the leak
 *                                          report at exit or nmm_heap_destroy) go to
 *                                          PREFIX.<pid> / PREFIX.<pid>.json
 *   log_summary                   0        bool: with log_path, error summary lines
 *                                          on stderr too
 *   avx2                          1        bool: paranoid's poison of blocks over 256
 *                                          bytes uses AVX2 when the CPU has it; 0 = the
 *                                          SSE2 code (a CPU without AVX2 runs it)
 *   (leaks, suppressions, exitcode, symbolize, symbolizer: `NMM_OPTIONS=help`)
 * Pieces are separated by ':'; blanks around keys and values and empty pieces
 * are ignored; a later key overrides an earlier one. NMM_OPTIONS itself is read
 * when the default heap is made (in libnmm_preload.so: in a constructor, before
 * main): every good key applies and each bad one is named on its own stderr
 * line ("help" prints the table).
 *
 * Apply an NMM_OPTIONS-style string ("level=standard:policy=record:limit=1G")
 * on top of *cfg. On error returns NMM_E_INVALID_ARGUMENT and writes a message
 * naming the key or value and listing the valid keys into err (if non-NULL).
 * A failpoints value points into a process-lifetime copy of the string. On error
 * *cfg is left unchanged. Thread-safe; never allocates with malloc. */
NMM_API nmm_status_t nmm_config_parse(nmm_config_t *cfg, const char *options,
                                      char *err, size_t err_len);

/* Write the table of options (name, default, meaning) to fd. */
NMM_API void nmm_options_help(int fd);

/* ------------------------------------------------------------------ heaps */

typedef struct nmm_heap nmm_heap_t;

/* Create a heap; cfg NULL means defaults. Returns NULL (errno set) on failure. */
NMM_API nmm_heap_t *nmm_heap_create(const nmm_config_t *cfg);

/* Destroy a heap and return all its memory to the OS. No thread may use the heap
 * during or after this call. Live blocks are released (and reported as leaks when
 * tracking is on: to stderr, or with log_path as the default heap's exit report). */
NMM_API void nmm_heap_destroy(nmm_heap_t *heap);

/* The process-wide default heap (configured from NMM_OPTIONS on first use);
 * backs the malloc replacement. Never NULL. */
NMM_API nmm_heap_t *nmm_default_heap(void);

/* ------------------------------------------------------------------ sites */

/* An interned allocation site (file, line), process-wide; 0 = unknown. */
typedef uint32_t nmm_site_t;

/* Intern (file, line). file must outlive the process (a string literal). heap may
 * be NULL: ids are process-wide, so callers may cache them in a static. */
NMM_API nmm_site_t nmm_site(nmm_heap_t *heap, const char *file, int line);

/* Intern a code address as a site: a return address, as a malloc wrapper gets from
 * __builtin_return_address(0) (the malloc replacement does this for every call).
 * Reports name it function+offset (module) and, with debug info, file:line of the
 * call. NULL gives 0. */
NMM_API nmm_site_t nmm_site_for_pc(const void *pc);

/* Look a site up; returns NMM_E_INVALID_ARGUMENT for an unknown id. */
NMM_API nmm_status_t nmm_site_info(nmm_site_t site, const char **file, int *line);

/* ------------------------------------------------------------------ allocation */

/* All allocation functions return NULL with errno = ENOMEM (or EINVAL) on failure;
 * never abort for lack of memory. site may be 0. Blocks are 16-byte aligned. */
NMM_API void *nmm_alloc(nmm_heap_t *heap, size_t size, nmm_site_t site);
NMM_API void *nmm_calloc(nmm_heap_t *heap, size_t count, size_t size, nmm_site_t site);
/* realloc(NULL, n) = alloc(n). realloc(p, 0) frees p and returns a zero-size block
 * (NULL when none can be made, p left as it was: as for any size, a NULL from
 * realloc with nmm_last_status() NMM_E_NOMEM means p is still the caller's).
 * realloc of a freed or invalid block returns NULL, records an event, and
 * nmm_last_status() says NMM_E_REALLOC_FREED or NMM_E_INVALID_POINTER. */
NMM_API void *nmm_realloc(nmm_heap_t *heap, void *ptr, size_t size, nmm_site_t site);
/* alignment: any power of two (anything else: EINVAL). Up to the page size the
 * block comes from a size class whose blocks fall on it; above, it is mapped
 * directly at an aligned start. Beyond 2^46 (no mapping can hold it): ENOMEM. */
NMM_API void *nmm_aligned_alloc(nmm_heap_t *heap, size_t alignment, size_t size,
                                nmm_site_t site);

/* Free a block. NULL is NMM_OK. A pointer that is not the start of a live block of
 * this heap (wild, stack, interior, foreign heap, already freed) is detected before
 * any memory behind it is touched: the status says what, an event is recorded, the
 * heap is unchanged. site is the free site (may be 0). */
NMM_API nmm_status_t nmm_free(nmm_heap_t *heap, void *ptr, nmm_site_t site);

/* Bytes usable at ptr (>= the size asked for); 0 if ptr is not a live block. */
NMM_API size_t nmm_usable_size(nmm_heap_t *heap, const void *ptr);

/* Requested size of a live block (what the caller asked for); 0 if not live. */
NMM_API size_t nmm_requested_size(nmm_heap_t *heap, const void *ptr);

/* Which kind of call made a block, and so which kind must free it: C's malloc
 * family (free, realloc), C++'s operator new (delete) or operator new[]
 * (delete[]). At standard and above a block remembers its family out of band
 * (its state byte, or its large-block record), so a mismatch is seen even when
 * the header is damaged. */
typedef enum nmm_family {
    NMM_FAMILY_MALLOC = 0,     /* malloc, calloc, realloc, aligned_alloc, ... / free, realloc */
    NMM_FAMILY_NEW = 1,        /* operator new / operator delete */
    NMM_FAMILY_NEW_ARRAY = 2   /* operator new[] / operator delete[] */
} nmm_family_t;

/* nmm_free_as's size for a delete that carries none. */
#define NMM_UNSIZED SIZE_MAX

/* Allocate like nmm_alloc (alignment 0 or <= 16) or nmm_aligned_alloc (above)
 * for a call of the given family: what C++'s operator new and new[] use. */
NMM_API void *nmm_alloc_as(nmm_heap_t *heap, nmm_family_t family, size_t size, size_t alignment,
                           nmm_site_t site);

/* Free like nmm_free, for a call of the given family with, for a sized delete,
 * the size it was given (NMM_UNSIZED: none) and, for an aligned delete, the
 * alignment (0: none). At standard and above a block of another family is
 * reported as alloc_dealloc_mismatch, a size other than the requested one or an
 * alignment other than the allocation's as delete_size_mismatch; either way the
 * block is then freed as usual and NMM_E_MISMATCH returned (unless the free
 * itself found something worse, whose status it is). */
NMM_API nmm_status_t nmm_free_as(nmm_heap_t *heap, void *ptr, nmm_family_t family, size_t size,
                                 size_t alignment, nmm_site_t site);

/* malloc_usable_size's contract: the usable bytes of a live block; any other
 * non-NULL pointer (interior, freed, wild, never handed out) is reported as
 * invalid_pointer (the reason in the event's detail) and 0 returned. */
NMM_API size_t nmm_usable_size_checked(nmm_heap_t *heap, const void *ptr, nmm_site_t site);

/* Copy n bytes from src to dst (memmove's semantics), checked first, as the
 * preload library's memcpy is: at standard and above, a range that starts in a
 * live block of heap and runs past its requested size is reported as overflow
 * (detail and extra: the offsets of its first and last bytes outside), one that
 * starts in the block's head as underflow (detail: how far before the block),
 * before anything is copied. With policy=record the copy is then clamped to the
 * block's bytes (an overflow) or skipped (an underflow). Returns the bytes
 * copied. Only blocks of the slab classes are looked up (large blocks: their
 * canary and guard page). At level off: a plain memmove. */
NMM_API size_t nmm_copy(nmm_heap_t *heap, void *dst, const void *src, size_t n, nmm_site_t site);

/* Convenience macros that intern the caller's file and line once per call site. */
#define NMM_SITE_HERE(heap)                                                        \
    (__extension__({                                                               \
        static nmm_site_t nmm_site_cached_;                                        \
        nmm_site_t nmm_s_ = __atomic_load_n(&nmm_site_cached_, __ATOMIC_RELAXED);  \
        if (!nmm_s_) {                                                             \
            nmm_s_ = nmm_site((heap), __FILE__, __LINE__);                         \
            __atomic_store_n(&nmm_site_cached_, nmm_s_, __ATOMIC_RELAXED);         \
        }                                                                          \
        nmm_s_;                                                                    \
    }))
#define NMM_ALLOC(heap, size) nmm_alloc((heap), (size), NMM_SITE_HERE(heap))
#define NMM_CALLOC(heap, n, size) nmm_calloc((heap), (n), (size), NMM_SITE_HERE(heap))
#define NMM_REALLOC(heap, p, size) nmm_realloc((heap), (p), (size), NMM_SITE_HERE(heap))
#define NMM_ALIGNED_ALLOC(heap, a, size) \
    nmm_aligned_alloc((heap), (a), (size), NMM_SITE_HERE(heap))
#define NMM_FREE(heap, p) nmm_free((heap), (p), NMM_SITE_HERE(heap))

/* ------------------------------------------------------------------ statistics */

/* Size classes: NMM_MAX_CLASSES bounds the table; nmm_stats_t.class_count says how
 * many are in use. Blocks larger than the largest class are mapped directly. */
#define NMM_MAX_CLASSES 64

typedef struct nmm_class_stats {
    uint64_t block_size;   /* bytes per block of this class (header and canary included) */
    uint64_t allocs;       /* blocks handed out, ever */
    uint64_t frees;        /* blocks given back, ever */
    uint64_t live;         /* allocs - frees */
    uint64_t slabs;        /* slabs currently mapped for this class */
    uint64_t free_blocks;  /* free blocks in those slabs (fragmentation = free/(free+live)) */
} nmm_class_stats_t;

/* Heap-wide counters, written once here and reused for the struct, merging and
 * JSON (X(name, description)). All are uint64_t. */
#define NMM_STATS_FIELDS(X)                                                       \
    X(allocs, "blocks handed out, ever (all calls that returned a block)")       \
    X(frees, "blocks given back, ever")                                           \
    X(live_blocks, "allocs - frees")                                              \
    X(live_bytes, "usable bytes of live blocks")                                  \
    X(peak_bytes, "highest live_bytes seen")                                      \
    X(requested_bytes, "requested bytes of live blocks (tracked levels only)")    \
    X(mapped_bytes, "bytes currently mapped from the OS for blocks")              \
    X(peak_mapped_bytes, "highest mapped_bytes seen")                             \
    X(slabs_mapped, "slabs obtained from the OS, ever")                           \
    X(slabs_returned, "slabs given back to the OS, ever (contraction)")           \
    X(large_allocs, "blocks mapped directly, ever")                               \
    X(cache_hits, "allocations served from a thread cache")                       \
    X(cache_misses, "allocations that had to refill a thread cache")              \
    X(alloc_failures, "allocations that returned NULL (limit, OS, injected)")     \
    X(injected_failures, "allocations failed by a fail point")                    \
    X(lock_contention, "times a heap lock was found taken")                       \
    X(events, "detections recorded, ever")                                        \
    X(events_dropped, "detections lost because the event ring was full")          \
    X(quarantine_bytes, "bytes currently held in quarantine")                     \
    X(sweeps, "integrity sweeps run")

#define NMM_STATS_VERSION 1

typedef struct nmm_stats {
    uint32_t size;          /* caller sets sizeof(nmm_stats_t) before the call */
    uint32_t version;       /* NMM_STATS_VERSION, set by nmm_stats_get */
#define NMM_STATS_DECLARE_(name, doc) uint64_t name;
    NMM_STATS_FIELDS(NMM_STATS_DECLARE_)
#undef NMM_STATS_DECLARE_
    uint32_t class_count;   /* entries used in classes[] */
    uint32_t reserved0;
    nmm_class_stats_t classes[NMM_MAX_CLASSES];
} nmm_stats_t;

/* Snapshot the heap's statistics. Counters held in other threads' caches are
 * merged; the snapshot is consistent when no other thread is allocating. */
NMM_API nmm_status_t nmm_stats_get(nmm_heap_t *heap, nmm_stats_t *out);

/* ------------------------------------------------------------------ events */

typedef enum nmm_event_kind {
    NMM_EV_NONE = 0,
    NMM_EV_DOUBLE_FREE = 1,      /* free of a free or quarantined block */
    NMM_EV_INVALID_FREE = 2,     /* free of a pointer that is not a live block start */
    NMM_EV_OVERFLOW = 3,         /* tail canary damaged: detail = offset of the first damaged
                                  * byte, extra = of the last (the damage reaches
                                  * extra - size + 1 bytes past the block) */
    NMM_EV_UNDERFLOW = 4,        /* head guard damaged: detail = extra = how far below the
                                  * block the damage reaches */
    NMM_EV_USE_AFTER_FREE = 5,   /* poison of a freed block damaged: detail and extra =
                                  * offsets of the first and last changed bytes */
    NMM_EV_HEADER_CORRUPT = 6,   /* header checksum wrong */
    NMM_EV_REALLOC_FREED = 7,    /* realloc of a free block */
    NMM_EV_INVALID_REALLOC = 8,  /* realloc of a pointer that is not a live block start */
    NMM_EV_FREELIST_CORRUPT = 9, /* an internal free list or bitmap is inconsistent */
    NMM_EV_GUARD_PAGE = 10,      /* access to a guard page (reported by the signal handler) */
    NMM_EV_ALLOC_DEALLOC_MISMATCH = 11, /* freed by a call of another family (nmm_family_t):
                                 * detail = the block's family | the freeing call's << 8 */
    NMM_EV_DELETE_SIZE_MISMATCH = 12, /* sized/aligned delete that does not match the block:
                                 * detail = the size the delete gave (saturated at 2^32 - 1),
                                 * extra = log2 of the block's alignment | log2 of the
                                 * delete's << 8 (0 = the default, 16) */
    NMM_EV_INVALID_POINTER = 13, /* a query (malloc_usable_size) of a pointer that is not a
                                 * live block start: detail = nmm_invalid_reason_t */
    NMM_EV_ZERO_SIZE_ACCESS = 14,/* paranoid: read or write of a zero-size block (reported by
                                 * the signal handler; extra = 1 for a write) */
    NMM_EV_KIND_COUNT_
} nmm_event_kind_t;

/* Why a pointer was invalid (nmm_event_t.detail for INVALID_FREE/INVALID_REALLOC). */
typedef enum nmm_invalid_reason {
    NMM_INVALID_UNKNOWN = 0,
    NMM_INVALID_WILD = 1,        /* not in any NMM heap's address space */
    NMM_INVALID_FOREIGN_HEAP = 2,/* a block of another NMM heap */
    NMM_INVALID_INTERIOR = 3,    /* inside a block of this heap, not its start */
    NMM_INVALID_UNMAPPED = 4,    /* in this heap's reserve but not in a slab in use */
    NMM_INVALID_FREED = 5        /* a block that was freed (invalid_pointer only: a free or
                                 * realloc of one is a double_free / realloc_freed) */
} nmm_invalid_reason_t;

typedef struct nmm_event {
    uint32_t kind;          /* nmm_event_kind_t */
    uint32_t detail;        /* kind-specific: nmm_invalid_reason_t, or offset of the damage */
    uint64_t seq;           /* per-heap sequence number, from 1 */
    uint64_t op_count;      /* heap operations (alloc+free) done when detected */
    uint64_t address;       /* the user pointer concerned */
    uint64_t size;          /* requested size when known, else 0 */
    nmm_site_t alloc_site;  /* 0 = unknown */
    nmm_site_t free_site;   /* 0 = unknown */
    uint32_t thread_id;     /* OS thread id (gettid) of the detecting thread */
    uint32_t extra;         /* kind-specific second detail (see the kinds); 0 = none */
} nmm_event_t;

/* Static name of an event kind ("double_free", "overflow", …); "unknown" if bad. */
NMM_API const char *nmm_event_kind_str(uint32_t kind);

/* Move up to max recorded events, oldest first, into out; returns how many. */
NMM_API size_t nmm_events_drain(nmm_heap_t *heap, nmm_event_t *out, size_t max);

/* Sequence number of the latest detection recorded on the heap (0: none yet).
 * Every event recorded after this call returns has a larger seq, so a caller that
 * reads it right before a misuse can tell the events that misuse caused from
 * earlier ones, whatever order they are drained in. Any thread, lock-free. */
NMM_API uint64_t nmm_events_last_seq(nmm_heap_t *heap);

/* ------------------------------------------------------------------ integrity */

/* Full integrity sweep: every live header, guard and canary, every poisoned free
 * block, every free list and bitmap. Emits an event per problem (subject to the
 * heap's policy) and returns the number of problems found. */
NMM_API size_t nmm_validate(nmm_heap_t *heap);

/* Called once per live block by nmm_heap_visit: its user pointer and requested
 * size (at level off without tracking, where blocks carry no header, the usable
 * size). Must not call into the heap. */
typedef void (*nmm_visit_fn)(void *ctx, const void *ptr, size_t size);

/* Walk the heap's block map and visit every live block (slab and large), in no
 * particular order. Counts nothing from the statistics counters: a heap walk is
 * the independent evidence the counters are checked against. Only exact on a
 * quiescent heap (no other thread allocating or freeing meanwhile). */
NMM_API void nmm_heap_visit(nmm_heap_t *heap, nmm_visit_fn visit, void *ctx);

/* The sweep exit_check=1 runs when a heap ends, now: every live block's header,
 * guard and canary and, at paranoid, every quarantined block's poison. Unlike
 * nmm_validate it may run while other threads still allocate (a program's exit
 * does not stop them): what looks damaged is looked at again a moment later and reported only if it still is and its block did not change
 * hands meanwhile. Emits an event per problem through the heap's policy (a
 * damaged live block is then freed quietly, a damaged quarantined one poisoned
 * again) and returns how many. Costs one read of the heap's live headers and
 * canaries and, at paranoid, of its quarantined memory. */
NMM_API size_t nmm_exit_check(nmm_heap_t *heap);

/* ------------------------------------------------------------------ fail points */

/* Arm a fail point on this heap. spec: NAME@TERM[,TERM...], where NAME is one of
 * alloc, pool.grow, os.map, tcache.refill, large.map, slab.desc (a new slab's
 * descriptor: as when the heap's metadata area is full), and TERM is
 *   p<prob>      fail with probability prob, 0..1 or N% (seeded by config.seed)
 *   every<n>     fail every n-th hit
 *   after<n>     pass the first n hits
 *   max<n>       fail at most n times
 *   min<bytes>   only for requests of at least bytes (k/M/G suffixes allowed)
 *   maxsize<bytes> only for requests of at most bytes
 * "NAME@off" disarms; a bare "NAME" fails every hit. Several specs may be joined
 * with ';'. A hit is a call that passes the size filter; terms combine in the
 * order after, every, p, max (failslab's interval/probability/times), e.g.
 * "alloc@after100,every3,max5". Arming resets the point's counters and its PRNG
 * (splitmix64 from config.seed and the point), so a single-threaded run repeats
 * exactly. A bad spec arms nothing and the message names the bad piece. */
NMM_API nmm_status_t nmm_failpoint_set(nmm_heap_t *heap, const char *spec,
                                       char *err, size_t err_len);

/* ------------------------------------------------------------------ reports */

/* Reports are written to a caller buffer, snprintf-style: the return value is the
 * length the full report needs (excluding NUL); the output is truncated to cap. */
NMM_API size_t nmm_report_json(nmm_heap_t *heap, char *buf, size_t cap);

/* Leak report: live blocks grouped by site (and stack when sampled), largest first.
 * format 0 = text, 1 = JSON. */
NMM_API size_t nmm_leaks_report(nmm_heap_t *heap, int format, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* NMM_H */
