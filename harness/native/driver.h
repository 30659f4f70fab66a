/* driver.h — types and cross-file prototypes of nmm-driver, grouped by the file
 * that defines them. The driver is a test instrument: it must never hide what the
 * target did (no retries, no silent fix-ups); each file says which threads touch it. */
#ifndef DRV_DRIVER_H
#define DRV_DRIVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nmm.h"
#include "prng.h"

#define DRV_MAX_THREADS 1024
#define DRV_MAX_EXIT_HELD 16 /* --exit-held: threads parked at exit */
#define DRV_MAX_RANGES 16
#define SIZE_STEPS 256
#define DRV_MAX_FAULT_SPECS 32
#define DRV_MAX_FAULTS 100000
#define DRV_MAX_SIZE (1ull << 30)
#define DRV_EXIT_USAGE 2
/* the JSON-lines protocol's version (PROTOCOL.md), in the start line */
#define DRV_PROTOCOL 2

/* ------------------------------------------------------------------ main.c */

typedef enum fault_kind {
    FK_DOUBLE_FREE = 0,
    FK_INVALID_FREE,
    FK_OVERFLOW,
    FK_UNDERFLOW,
    FK_UAF_WRITE,
    FK_UAF_READ,
    FK_REALLOC_FREED,
    FK_ALLOC_FAILURE,
    FK_DEALLOC_MISMATCH, /* freed by a call of another family (malloc'd block deleted...) */
    FK_SIZED_DELETE,     /* a sized or aligned delete that does not match the new */
    FK_MEMCPY_OVERFLOW,  /* memcpy/memmove/memset (nmm_copy for an NMM heap) past the block */
    FK_EXIT_ONLY_OVERFLOW, /* overflow of a block that is never freed (kept to the end) */
    FK_ZERO_SIZE_WRITE,  /* a write into a malloc(0) block */
    FK_CORRUPT_META,     /* the heap's own books damaged, at the end (chaos/coverage builds) */
    FK_COUNT_
} fault_kind_t;

typedef enum fault_variant {
    FV_NONE = 0,
    FV_INTERIOR,
    FV_STACK,
    FV_WILD,
    FV_FOREIGN_HEAP,
    FV_FIRST,
    FV_MIDDLE,
    FV_LAST,
    FV_MALLOC_DELETE,     /* dealloc_mismatch: a malloc'd block freed by operator delete */
    FV_NEW_FREE,          /*   a new'd block freed by free */
    FV_NEW_ARRAY_DELETE,  /*   a new[]'d block freed by delete */
    FV_NEW_DELETE_ARRAY,  /*   a new'd block freed by delete[] */
    FV_SIZE,              /* sized_delete: delete(p, size + bytes) */
    FV_ALIGNMENT,         /*   an aligned new (64) deleted by an unaligned sized delete */
    FV_MEMCPY,            /* memcpy_overflow: the call that overflows */
    FV_MEMMOVE,
    FV_MEMSET,
    FV_LIST_TWICE,        /* corrupt_meta: chaos.h NMM_CORRUPT_SHAPES, in its order */
    FV_LIST_CYCLE,
    FV_FREE_COUNT,
    FV_FREELIST_LINK,
    FV_QUAR_TWICE,
    FV_QUAR_LOST,
    FV_QUAR_BYTES,
    FV_LIMIT_CHARGE,
    FV_LIVE_COUNT,
    FV_RETAINED,
    FV_COUNT_
} fault_variant_t;

typedef struct size_range {
    uint64_t lo, hi;   /* bytes, inclusive; 0 <= lo <= hi */
    double cumulative; /* running sum of weights up to and including this range */
    /* exp(ln(lo) + i/SIZE_STEPS * (ln(hi + 1) - ln(lo))): the log-uniform quantiles,
     * interpolated linearly between, so drawing a size costs no exp(); a range from 0
     * (zero-size blocks) is drawn as lo + 1..hi + 1, one less (zero_based) */
    double quantiles[SIZE_STEPS + 1];
    bool zero_based;
} size_range_t;

typedef struct fault_spec {
    fault_kind_t kind;
    fault_variant_t variant; /* FV_NONE: kind's default */
    uint32_t count;          /* instances to inject */
    uint64_t bytes;          /* overflow/underflow/uaf_write length */
    uint64_t skip;           /* overflow/underflow: intact bytes between the block's edge
                              * and the damage (overflow: from user + size up; underflow:
                              * from user down), so damage can be confined to one canary
                              * byte, the header's guard or its check bits */
    char fail[160];          /* alloc_failure: fail-point spec for nmm_failpoint_set */
} fault_spec_t;

/* Parsed command line; immutable once the trial starts (read by every thread). */
typedef struct options {
    const char *target;      /* "nmm" or "malloc" */
    const char *nmm_options; /* NMM_OPTIONS-syntax string; "" = defaults */
    uint64_t seed;
    uint32_t threads;
    uint64_t ops;            /* per worker; with duration/worker_ops the floor and fault window */
    uint64_t duration_ns;    /* run: workers go on past ops until this long after the start;
                              * 0 = stop at ops */
    uint64_t *worker_ops;    /* run: exact op count of each worker (threads entries, each
                              * >= ops), replaying a duration trial; NULL = none */
    size_range_t ranges[DRV_MAX_RANGES];
    int range_count;
    double weight_total;
    uint32_t live;           /* live-set slots per worker */
    double cross;            /* share of frees handed to the next worker */
    double realloc_share;    /* share of ops on a live slot that realloc it */
    double calloc_share;     /* share of allocations that are calloc */
    double aligned_share;    /* share of allocations that are aligned_alloc */
    uint32_t calloc_count;   /* calloc(count, n / count) with count drawn from 1..this */
    uint64_t edge_every;     /* every N ops a worker makes requests that must fail (a
                              * calloc whose product overflows, sizes no heap can hold,
                              * realloc of a live block to one); 0 = never */
    uint32_t exit_leaks;     /* run: blocks leaked on purpose after the teardown checks, for
                              * the default heap's leak report at exit (exitleak.c); 0 = none:
                              * the trial's own heap, destroyed at the end */
    uint32_t exit_held;      /* run with exit_leaks: threads parked at exit, each holding one
                              * block in a register alone (exitleak.c); 0 = none */
    const char *exit_symbolizer; /* run with exit_leaks: the symbolizer= process key (NULL =
                                  * the heap's own choice); the report must name file:line */
    const char *bad_options; /* run with exit_leaks: NMM_OPTIONS pieces put before the
                              * others, unchecked (the default heap names and ignores each
                              * bad one; "help" prints its key table); NULL = none */
    bool exit_damage;        /* run with exit_leaks: some leaked blocks get a byte past
                              * their end flipped, and (paranoid) a freed block a byte of
                              * its poison, for the exit check (exit_check=1) to name */
    uint64_t thread_churn;   /* ops per thread before it is replaced; 0 = never */
    uint64_t fork_every;     /* worker 0 forks every N ops; 0 = never */
    fault_spec_t faults[DRV_MAX_FAULT_SPECS];
    int fault_spec_count;
    uint64_t progress_every; /* per worker; 0 = no progress lines */
    uint32_t sample_every;   /* latency sample 1 in N ops (power of two) */
    bool no_check;           /* skip pattern fill/check */
    uint32_t repeat;         /* bench: repeats; 0 = the kernel's default */
    bool ops_given;          /* --ops was on the command line (bench defaults differ) */
    bool sizes_given;        /* --sizes was on the command line */
    bool threads_given;      /* --threads was on the command line */
} options_t;

const char *fault_kind_name(fault_kind_t kind);
/* A bad command line (main.c, sched.c): "nmm-driver: MESSAGE" and the --help hint
 * on stderr, exit DRV_EXIT_USAGE. */
void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
const char *fault_variant_name(fault_variant_t variant);
/* Whether kind takes variant (FV_NONE: always), and the variants it takes, for messages. */
bool fault_variant_fits(fault_kind_t kind, fault_variant_t variant);
const char *fault_variants_of(fault_kind_t kind);

/* ------------------------------------------------------------------ target.c */

/* The allocator under test, called only through these pointers so that the
 * `malloc` target reaches whatever LD_PRELOAD put in front of libc. free returns an
 * nmm_status_t (always NMM_OK for the malloc family, which has no status). */
typedef struct target {
    const char *name;
    nmm_heap_t *heap; /* NULL for the malloc target */
    void *(*alloc)(nmm_heap_t *heap, size_t size);
    void *(*calloc)(nmm_heap_t *heap, size_t count, size_t size);
    void *(*realloc)(nmm_heap_t *heap, void *ptr, size_t size);
    void *(*aligned_alloc)(nmm_heap_t *heap, size_t alignment, size_t size);
    int (*free)(nmm_heap_t *heap, void *ptr);
    /* why the calling thread's last call failed (nmm_last_status; NMM_E_NOMEM for the
     * malloc family, whose only failure is running out of memory) */
    int (*last_status)(void);
    /* C++'s families (target_cxx_open): allocate as operator new (NMM_FAMILY_NEW) or
     * new[] (alignment 0 = the default), free as free/delete/delete[] with, for a
     * sized delete, the size (NMM_UNSIZED: none) and, aligned, the alignment (0: none);
     * returns an nmm_status_t (NMM_OK for the malloc family) */
    void *(*alloc_as)(nmm_heap_t *heap, int family, size_t size, size_t alignment);
    int (*free_as)(nmm_heap_t *heap, void *ptr, int family, size_t size, size_t alignment);
    /* n bytes into dst through the target's checked copy (an NMM heap: nmm_copy, which
     * returns the bytes it copied) or the process's memcpy/memmove/memset (whatever
     * LD_PRELOAD put there: returns n); how: FV_MEMCPY, FV_MEMMOVE or FV_MEMSET (of
     * the byte src[0]) */
    size_t (*copy)(nmm_heap_t *heap, int how, void *dst, const void *src, size_t n);
    bool exact_sizes; /* a heap walk reports requested sizes (NMM header levels) */
    int level;        /* an NMM heap's nmm_level_t (the malloc target: 0) */
    bool is_default;  /* the process's default heap (never destroyed: it ends at exit) */
} target_t;

/* ------------------------------------------------------------------ exitleak.c */

/* Configure the process's default heap (NMM_OPTIONS = bad_options, if any, then
 * nmm_options, then the exit report's process keys) before its first use; false with
 * err set when the directory or the string cannot be made. */
bool exit_leak_configure(const char *bad_options, const char *nmm_options,
                         const char *symbolizer, uint64_t seed, char *err,
                         size_t err_len);
/* Leak o->exit_leaks blocks of the default heap on purpose (no pointer kept) and add
 * "exit_leaks" (blocks, bytes, and those made under the suppressed function; with
 * o->exit_damage the blocks damaged for the exit check) to j; the exit_report line
 * follows at exit, after the heap's own leak report. */
struct jline;
void exit_leak_blocks(const struct options *o, const target_t *t, struct jline *j);

/* Open "nmm" (a heap from nmm_options) or "malloc". On failure writes a message into
 * err and returns false. */
bool target_open(target_t *t, const char *name, const char *nmm_options, char *err,
                 size_t err_len);
/* Resolve operator new/delete for the malloc target (the preloaded library's, else
 * libstdc++'s, loaded for it); false with a message when the process cannot have
 * them. An NMM heap's are always there. Main thread, before the workers. */
bool target_cxx_open(target_t *t, char *err, size_t err_len);
void target_close(target_t *t);
static inline bool target_is_nmm(const target_t *t) { return t->heap != NULL; }

/* ------------------------------------------------------------------ plan.c */

typedef enum op_kind { OP_ALLOC = 0, OP_FREE, OP_REALLOC } op_kind_t;
typedef enum alloc_flavor { AF_MALLOC = 0, AF_CALLOC, AF_ALIGNED } alloc_flavor_t;

/* One operation of a worker's stream. The draws are a pure function of (seed,
 * worker, op index); the kind is resolved against the slot's occupancy, which is
 * itself a pure function of the stream when every allocation succeeds. */
typedef struct op {
    op_kind_t kind;
    alloc_flavor_t flavor;
    uint32_t slot;
    uint64_t size;
    uint64_t alignment; /* AF_ALIGNED only */
    uint32_t count;     /* AF_CALLOC only: calloc(count, size / count); of a zero size,
                         * calloc(count, 0), or calloc(0, count) when zero_count */
    bool zero_count;
    bool cross;         /* OP_FREE: hand the block to the next worker */
} op_t;

void plan_stream_seed(xoshiro_t *rng, const options_t *o, uint32_t worker);
/* Draw op number n (the caller counts) and resolve its kind for the slot state. */
void plan_next(xoshiro_t *rng, const options_t *o, bool (*occupied)(void *ctx, uint32_t slot),
               void *ctx, op_t *op);
uint64_t plan_size(xoshiro_t *rng, const options_t *o);
void plan_range_init(size_range_t *r, uint64_t lo, uint64_t hi);
/* Print the first count ops of worker's stream, one line each (the `stream` command). */
int plan_print_stream(const options_t *o, uint32_t worker, uint64_t count);

/* ------------------------------------------------------------------ faults.c */

typedef struct fault_inst {
    uint32_t id;
    uint32_t spec;       /* index into options.faults */
    uint32_t worker;
    uint64_t op;         /* injected before this op of the worker's stream */
    uint32_t slot_start; /* first slot tried when looking for a live block */
} fault_inst_t;

/* Place every fault instance from the seed; returns how many (sorted by worker, op). */
uint32_t faults_plan(const options_t *o, fault_inst_t *out, uint32_t cap);
const char *faults_check_options(const options_t *o); /* NULL = fine, else message */

struct worker;
struct trial;
/* Perform one fault instance on the calling worker (writes its fault line first);
 * corrupt_meta faults wait for faults_corrupt. */
void faults_inject(struct trial *tr, struct worker *w, const fault_inst_t *f);
/* The corrupt_meta faults, on the quiescent heap after the workload (main thread): each
 * damages one structure of the heap's books, probes the heap with it (nmm_validate,
 * nmm_stats_get, nmm_exit_check) and undoes it. */
void faults_corrupt(struct trial *tr);

/* ------------------------------------------------------------------ pattern.c */

uint64_t pattern_key(uint64_t seed, uint64_t block_id);
uint8_t pattern_byte(uint64_t key, size_t off);
void pattern_fill(void *p, size_t size, uint64_t key);
/* Offset of the first byte that does not hold what pattern_fill wrote, or -1. */
long pattern_check(const void *p, size_t size, uint64_t key);
/* The same for a block filled at size bytes, of which only the first kept remain
 * (after a realloc): the positions the fill wrote below kept. */
long pattern_check_prefix(const void *p, size_t size, size_t kept, uint64_t key);
/* Offset of the first non-zero byte among the positions a fill of size checks, or -1. */
long pattern_check_zero(const void *p, size_t size);

/* ------------------------------------------------------------------ hist.c */

#define HIST_BUCKETS 512
typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t samples;
    uint64_t max_ns;
} hist_t;

void hist_add(hist_t *h, uint64_t ns);
void hist_merge(hist_t *into, const hist_t *from);
uint64_t hist_percentile(const hist_t *h, double q); /* ns, bucket midpoint; 0 if empty */
uint64_t drv_now_ns(void);                                /* CLOCK_MONOTONIC */

/* ------------------------------------------------------------------ out.c */

/* A JSON line under construction (fixed buffer, never allocates). */
typedef struct jline {
    char buf[16384];
    size_t len;
    bool first;
} jline_t;

void jl_begin(jline_t *j, const char *type);
void jl_key(jline_t *j, const char *key);
void jl_u64(jline_t *j, const char *key, uint64_t v);
void jl_i64(jline_t *j, const char *key, int64_t v);
void jl_dbl(jline_t *j, const char *key, double v);
void jl_str(jline_t *j, const char *key, const char *v);
void jl_hex(jline_t *j, const char *key, uint64_t v);
void jl_null(jline_t *j, const char *key);
void jl_bool(jline_t *j, const char *key, bool v);
void jl_raw(jline_t *j, const char *text); /* append verbatim */
void jl_u64_array(jline_t *j, const char *key, const uint64_t *v, uint32_t n);
void jl_end(jline_t *j);                   /* close the object, write it with one write(2) */
void out_set_quiet(bool quiet);
void out_error(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* stderr */
/* Drain the heap's events into event lines; returns how many were written. */
uint64_t out_drain_events(nmm_heap_t *heap, int worker, uint64_t driver_op);
void out_stats(jline_t *j, const char *key, nmm_heap_t *heap, uint64_t *live_blocks);
void *out_map(size_t bytes);   /* zeroed private memory, never from the target */
void out_unmap(void *p, size_t bytes);
/* a "Key:  N kB" field of /proc/self/status in KiB (0 if absent), e.g. "VmHWM:"
 * (this process image's peak RSS: unlike getrusage's maxrss it does not inherit
 * the parent's peak across fork and exec) */
uint64_t proc_status_kib(const char *key);

/* ------------------------------------------------------------------ workload.c */

typedef struct slot {
    void *ptr;     /* NULL = empty */
    uint64_t size; /* requested bytes */
    uint64_t id;   /* block id (worker << 40 | counter) */
    uint64_t key;  /* pattern_key(seed, id), computed once at fill */
} slot_t;

/* One cross-thread handoff: producer is the previous worker, consumer this one. */
#define INBOX_CAP 1024
typedef struct inbox {
    _Alignas(64) _Atomic uint64_t head; /* written by the consumer */
    _Alignas(64) _Atomic uint64_t tail; /* written by the producer */
    slot_t items[INBOX_CAP];
} inbox_t;

/* A logical worker: its stream and live set outlive the OS threads that run it. */
typedef struct worker {
    uint32_t index;
    struct trial *trial;
    xoshiro_t rng;          /* the op stream */
    uint64_t op;            /* next op index */
    uint64_t next_block;    /* block id counter */
    slot_t *slots;
    const fault_inst_t *faults;
    uint32_t fault_count, fault_next;
    hist_t hist;
    inbox_t *inbox;
    /* counters: written by the running thread, read (relaxed) by progress lines */
    _Atomic uint64_t ops_done;
    _Atomic uint64_t pattern_errors;
    uint64_t alloc_failures, unexpected_status, cross_sent, cross_fallback;
    uint64_t cross_received, fork_children, fork_failures, fork_errors, fork_alloc_failures;
    uint64_t edge_nulls; /* NULLs of edge requests (edge_every): failures the heap counts */
    uint64_t zero_nulls; /* NULLs of zero-byte requests from a peer (C allows them) */
    uint64_t threads_spawned;
    /* the driver's own accounting of the target heap, independent of its statistics:
     * blocks it got (alloc, calloc, aligned), frees the target took (status ok, or
     * corrupted: the block is retired, no longer the caller's), reallocs that returned
     * a block (and of those, the ones that moved it), blocks it gave up on after a
     * refused free or realloc (never freed) */
    uint64_t allocs, frees, reallocs, reallocs_moved, dropped;
    void *foreign_block; /* invalid_free foreign_heap: the block to give back at the end */
    /* exit_only_overflow: damaged blocks never freed; live (the walk and the driver's
     * live set count them) until the process ends, teardown leaves them alone */
    slot_t *kept;
    uint32_t kept_count, kept_cap;
    bool finished;       /* reached its last op (set by its thread, read after the join) */
} worker_t;

/* Detail lines (pattern_error, status_error, fork_failure, walk_mismatch) written per
 * trial, at most; past it they are counted, never written. */
#define DRV_MAX_DETAIL_LINES 256

typedef struct trial {
    const options_t *o;
    target_t target;
    target_t foreign; /* second NMM heap (nmm target with a foreign_heap fault) */
    worker_t *workers;
    fault_inst_t *faults;
    uint32_t fault_count;
    _Atomic uint64_t faults_done;
    _Atomic uint64_t events;
    _Atomic uint64_t alloc_failures;
    _Atomic uint64_t detail_lines; /* detail lines written or suppressed so far */
    uint64_t deadline_ns;     /* drv_now_ns() past which duration workers stop; 0 = none */
} trial_t;

int workload_run(const options_t *o);
/* Free/realloc helpers shared with faults.c (latency not sampled). */
void workload_free_slot(trial_t *tr, worker_t *w, slot_t *s);
void workload_check_block(trial_t *tr, worker_t *w, const slot_t *s);
bool workload_alloc_slot(trial_t *tr, worker_t *w, slot_t *s, uint64_t size);
/* Count a free of a block the driver owned by its status: taken (ok, corrupted) or
 * refused; a status other than ok gets a status_error line (call: "free"...). */
void workload_count_free(trial_t *tr, worker_t *w, const void *ptr, uint64_t size, int status,
                         const char *call);
/* Claim one detail line; false once DRV_MAX_DETAIL_LINES were written. */
bool workload_detail_line(trial_t *tr);

/* ------------------------------------------------------------------ monitor.c */

#define DRV_BEAT_MS 250
/* Where a trial is: the workers' ops, then the final phases on the main thread. */
typedef enum drv_phase {
    PH_SETUP = 0,
    PH_OPS,      /* the workers run their streams */
    PH_CHECK,    /* the quiescent heap: stats and a walk against the driver's live set */
    PH_CORRUPT,  /* corrupt_meta faults: damage, validate and undo (step: faults done) */
    PH_TEARDOWN, /* every remaining block freed (step: blocks freed) */
    PH_VALIDATE, /* nmm_validate */
    PH_DRAIN,    /* the last events drained */
    PH_STATS,    /* the final stats and walk */
    PH_DESTROY,  /* the heaps destroyed, after the result line */
    PH_DONE,
    PH_COUNT_
} drv_phase_t;

void monitor_start(trial_t *tr); /* the heartbeat thread: a beat line every DRV_BEAT_MS */
void monitor_phase(drv_phase_t p);
void monitor_step(void);         /* progress inside a final phase */
/* Write the result line and enter the destroy phase, no beat in between. */
void monitor_result(jline_t *result);
void monitor_stop(void);

/* ------------------------------------------------------------------ bench.c */

int bench_run(const char *name, const options_t *o);

#endif /* DRV_DRIVER_H */
