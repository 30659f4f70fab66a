/* internal.h — NMM's internal types and cross-file prototypes, grouped by the file
 * that defines them. Nothing here is exported: the build uses -fvisibility=hidden
 * and only nmm_* (declared in nmm.h) carries NMM_API.
 * Must not be included by users; must not declare anything with a leading underscore.
 */
#ifndef NMM_INTERNAL_H
#define NMM_INTERNAL_H

#define NMM_BUILDING 1
#include "nmm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define NMM_NOINLINE __attribute__((noinline))
#define NMM_COLD __attribute__((cold, noinline))
#define NMM_TLS __thread __attribute__((tls_model("initial-exec")))
/* A read prefetch of the line holding p. GCC 12 dropped __builtin_prefetch from
 * free_standard (gone after its IPA passes), so on x86-64 it is the instruction
 * itself; a hint only: it never faults. */
#if defined(__x86_64__)
#define NMM_PREFETCH(p) __asm__ volatile("prefetcht0 %0" : : "m"(*(const char *)(p)))
#else
#define NMM_PREFETCH(p) __builtin_prefetch(p)
#endif

/* Chaos build (yield points, mutants; nothing in the production build): chaos.h. */
#include "chaos.h"

/* Internal invariants (mimalloc's mi_assert_internal): checked in the debug flavour
 * (-DNMM_DEBUG; the sanitizer builds of tests/test_c_stress.py turn it on), compiled
 * out of the release and chaos builds. A failed one writes one line naming the
 * condition and its place to stderr and aborts (out.c). Never on a fast path's
 * cost in release: the condition is not even evaluated there. */
#ifdef NMM_DEBUG
__attribute__((cold, noreturn)) void out_assert_fail(const char *cond, const char *file, int line);
#define NMM_ASSERT(cond) (likely(cond) ? (void)0 : out_assert_fail(#cond, __FILE__, __LINE__))
#else
#define NMM_ASSERT(cond) ((void)0)
#endif

/* splitmix64's finaliser: the one 64-bit mixer (hash tables, rule cache). */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A static heap sort of an array of TYPE by its KEY field, ascending, as NAME(a, n):
 * in place, no allocation (qsort may allocate, and these run inside the allocator:
 * the leak report's live set, a module's symbol table). */
#define NMM_DEFINE_HEAP_SORT(NAME, TYPE, KEY)                                           \
    static void NAME##_sift(TYPE *a, size_t n, size_t i)                                \
    {                                                                                   \
        for (;;) {                                                                      \
            size_t m = i, l = 2 * i + 1, r = l + 1;                                     \
            if (l < n && a[l].KEY > a[m].KEY)                                           \
                m = l;                                                                  \
            if (r < n && a[r].KEY > a[m].KEY)                                           \
                m = r;                                                                  \
            if (m == i)                                                                 \
                return;                                                                 \
            TYPE t = a[i];                                                              \
            a[i] = a[m];                                                                \
            a[m] = t;                                                                   \
            i = m;                                                                      \
        }                                                                               \
    }                                                                                   \
    static void NAME(TYPE *a, size_t n)                                                 \
    {                                                                                   \
        for (size_t i = n / 2; i-- > 0;)                                                \
            NAME##_sift(a, n, i);                                                       \
        for (size_t end = n; end > 1; end--) {                                          \
            TYPE t = a[0];                                                              \
            a[0] = a[end - 1];                                                          \
            a[end - 1] = t;                                                             \
            NAME##_sift(a, end - 1, 0);                                                 \
        }                                                                               \
    }

/* ================================================================== core
 * alloc.c, heap.c, sizeclass.c, slab.c, tcache.c, large.c, detect.c, validate.c,
 * stats.c, os.c — owned by the core (their private types and functions are in
 * core.h). The periphery below uses only what is declared here. */

/* os.c — the only file that calls mmap/munmap/madvise/mprotect. os_map honours the
 * heap's "os.map" fail point when heap is non-NULL. */
void *os_map(nmm_heap_t *heap, size_t bytes);        /* zeroed RW pages, NULL on failure */
void os_unmap(void *addr, size_t bytes);
size_t os_page_size(void);
uint32_t os_thread_id(void);                         /* gettid(), cached per thread */

/* alloc.c — the functions that can be the outermost allocator frame of a call
 * (the API and its tail-called paths), NULL-terminated (unwind.c stops there). */
extern const void *const alloc_outer_functions[];

/* heap.c */
const nmm_config_t *heap_config(const nmm_heap_t *heap);
/* Allocations per captured stack for a call with this site (0 = never): site 0
 * at paranoid always, otherwise stacks=1/N with tracking. */
uint32_t heap_stack_every(const nmm_heap_t *heap, nmm_site_t site);
uint64_t heap_op_count(const nmm_heap_t *heap);      /* alloc+free operations so far */
/* Visit every live block (for leak reports). The callback must not allocate from
 * this heap. requested = the size asked for; site = the tracked site id stored
 * with the block (0 when tracking was off). */
typedef void (*heap_visit_fn)(void *ctx, const void *ptr, size_t requested, uint32_t site);
void heap_foreach_live(nmm_heap_t *heap, heap_visit_fn visit, void *ctx);
/* The heap is ending (nmm_heap_destroy; the default heap: process exit, before
 * its leak report): with exit_check=1, the exit sweep (nmm_exit_check), each
 * problem reported through the heap's policy and written to stderr. */
void heap_exit_check(nmm_heap_t *heap);
/* Async-signal-safe: if addr is a guard page or a poisoned (freed) large mapping of
 * any live heap, fill *ev (kind, address of the block, size, alloc_site) and return
 * true. Used by the SIGSEGV/SIGBUS handler. Takes no lock. */
bool heap_describe_fault_address(uintptr_t addr, nmm_event_t *ev);
/* Per-heap storage slots owned by the periphery (allocated with os_map, freed at
 * heap destroy by the owner's *_destroy function). */
struct events_ring;
struct fp_table;
struct events_ring **heap_events_slot(nmm_heap_t *heap);
struct fp_table **heap_failpoints_slot(nmm_heap_t *heap);

/* ================================================================== periphery
 * One section per file: events.c, failpoint.c, options.c, unwind.c, track.c,
 * strbuf.c, symbolize.c, out.c, diag.c, roots.c, leaks.c, leakcheck.c,
 * suppress.c, access.c, malloc_shim.c, copy_shim.c (report.c and new_shim.c export
 * only nmm.h's API). access.c and copy_shim.c also read core.h: the copy check's
 * fit is the slab lookup itself, inline in memcpy & co. */

struct strbuf;

/* events.c — the one reporting choke point. Never allocates (ring storage is
 * mapped at heap creation), never calls back into Python. Thread-safe. */
nmm_status_t events_init(nmm_heap_t *heap, uint32_t capacity);
void events_destroy(nmm_heap_t *heap);
/* Record a detection: fills seq, op_count and thread_id, counts it, stores it in
 * the ring (or counts it dropped). With policy=abort writes one line naming the
 * kind, address and sites with write(2) to stderr and aborts. Returns the status
 * that the detecting call should return (NMM_E_DOUBLE_FREE for double_free, …). */
nmm_status_t events_report(nmm_heap_t *heap, nmm_event_t *ev);
uint64_t events_count(const nmm_heap_t *heap, uint32_t kind);  /* recorded, ever */
uint64_t events_total(const nmm_heap_t *heap);
uint64_t events_dropped(const nmm_heap_t *heap);
/* Install (once per process, chained to any previous handlers) the SIGSEGV/SIGBUS
 * handler that names guard-page hits; called when a heap with guard pages is made. */
void events_install_fault_handler(void);
/* A thread's first allocation (tcache.c): an alternate signal stack for it once
 * the handler is installed, so a fault on a thread that ran off its stack still
 * gets its line; its exit gives the stack back. */
void events_thread_start(void);
void events_thread_exit(void);

/* The malloc replacement stores its caller's return address here before calling
 * into the heap, so an event with free_site 0 can still name where it happened. */
extern NMM_TLS uintptr_t events_caller_pc;
/* Set by events_report when a detection should be echoed to stderr but was found
 * with heap locks possibly held (record policy in the preload library): the shim
 * calls events_flush_pending() once it is back outside the heap. */
extern NMM_TLS uint32_t events_pending;
/* Set by a detector right before the report it belongs to: 1 + the offset of
 * the last damaged byte (overflow, underflow, use after free); events_report
 * takes it into nmm_event_t.extra and clears it. 0 = not set. */
extern NMM_TLS uint32_t events_extent_last;
/* True while the calling thread sweeps a heap (validate, exit check): its
 * findings get no stack of the call that found them. */
extern __thread bool events_in_sweep;
void events_flush_pending(void);
/* Set around reports made with no heap lock held by a sweep whose events nobody
 * will drain (the exit check): each line is written at once, in record mode too. */
extern __thread bool events_echo_now;
/* Format the one-line report for ev (no trailing newline). */
void events_format_line(struct strbuf *sb, const nmm_event_t *ev, bool symbolize);

/* failpoint.c — seeded fail points (failslab/libfiu style). */
typedef enum fp_point {
    FP_ALLOC = 0,       /* any allocation call */
    FP_POOL_GROW,       /* a size class needs a new slab */
    FP_OS_MAP,          /* os_map */
    FP_TCACHE_REFILL,   /* a thread cache refills from the heap */
    FP_LARGE_MAP,       /* a directly-mapped large block */
    FP_SLAB_DESC,       /* a new slab's descriptor from the heap's metadata area */
    FP_POINT_COUNT_
} fp_point_t;
nmm_status_t failpoint_init(nmm_heap_t *heap, uint64_t seed, const char *specs,
                            char *err, size_t err_len);
void failpoint_destroy(nmm_heap_t *heap);
/* True when this hit of point should fail. Callers test heap_failpoints_armed()
 * first so the disarmed cost is one predictable branch. Thread-safe. */
bool failpoint_should_fail(nmm_heap_t *heap, fp_point_t point, size_t size);
bool heap_failpoints_armed(const nmm_heap_t *heap);  /* heap.c: a flag read */
void heap_set_failpoints_armed(nmm_heap_t *heap, bool armed);

/* Check a spec string without arming anything (options.c validates fail=...). */
nmm_status_t failpoint_check(const char *specs, char *err, size_t err_len);
/* Every spec armed on the heap so far, ';'-joined ("" when none). */
const char *failpoint_describe(nmm_heap_t *heap);

/* options.c — the only getenv in the allocator. */
/* Defaults + NMM_OPTIONS into cfg and the process options. Every good key
 * applies; each bad one is named on its own stderr line; with strict=1 a bad
 * one then exits the process with status 1. "help" prints the table. */
void options_from_env(nmm_config_t *cfg);

/* Process-wide options (NMM_OPTIONS only; options.c's table gives defaults). */
enum { NMM_LOG_TEXT = 1, NMM_LOG_JSON = 2 };
typedef struct options_process {
    uint32_t strict;          /* 1 = a bad NMM_OPTIONS exits with status 1 */
    uint32_t leaks;           /* 1 = leak report at exit for a tracking default heap */
    uint32_t exitcode;        /* status at exit when leaks/detections were found; 0 = keep */
    uint32_t log_format;      /* NMM_LOG_TEXT | NMM_LOG_JSON (with log_path) */
    uint32_t symbolize;       /* 1 = file:line through an external symbolizer */
    uint32_t copy_check;      /* 1 = the preload library checks memcpy & co. (standard and
                               * above); 0 = they go straight to the C library's */
    uint32_t log_summary;     /* with log_path: error reports' summary lines on stderr too */
    uint32_t avx2;            /* 1 = paranoid poisons big blocks with AVX2 when the CPU has it;
                               * 0 = with SSE2, as on a CPU without AVX2 */
    const char *log_path;     /* PREFIX of PREFIX.<pid>; NULL = stderr */
    const char *suppressions; /* LSan-format file; NULL = built-in ones only */
    const char *symbolizer;   /* symbolizer program; NULL = search PATH */
    const char *path_env;     /* PATH when options were read (symbolizer search) */
} options_process_t;
/* The process options (defaults until options_from_env ran). Any thread. */
const options_process_t *options_process(void);
/* The environment for a helper child (the symbolizer): ours without LD_PRELOAD
 * and NMM_OPTIONS, NULL-terminated, at most max entries (pointers into environ). */
void options_child_environ(char **out, size_t max);

/* Parse an unsigned decimal (or 0x hex) from s[0..n), with an optional binary size
 * suffix k/K/m/M/g/G/t/T (optionally followed by "B" or "iB") when sizes is true.
 * false on empty input, junk or overflow. */
bool options_parse_u64(const char *s, size_t n, bool sizes, uint64_t *out);
/* True once options_from_env ran, i.e. the default heap exists (or is being made). */
bool options_default_heap_configured(void);

/* unwind.c — call stacks of the calling thread. */
#define UNWIND_DEPTH 16  /* frames kept per stack */
/* Return addresses of the calling thread's stack, innermost first, starting at
 * the caller of the outermost allocator entry point found among the first frames
 * (nmm_alloc, malloc, nmm_free, free, ...), at most max. Never allocates. */
uint32_t unwind_capture(uintptr_t *pcs, uint32_t max);

/* track.c — sites (process-wide), sampled stacks, leak aggregation. */
/* On each allocation with tracking on: returns the id to store with the block,
 * combining the site and (on sampled allocations) a deduplicated stack. */
uint32_t track_on_alloc(nmm_heap_t *heap, nmm_site_t site);
/* The calling thread's allocations until its next sampled stack: track_on_alloc
 * clamps it to the heap's stack_sample and samples when it reaches 1. While it
 * is in [2, stack_sample] a site-0 allocation only decrements it, which the
 * standard fast path does inline. */
extern NMM_TLS uint32_t track_countdown;
/* Split a stored id back into its site and stack (0 = none). */
void track_decode(uint32_t id, nmm_site_t *site, uint32_t *stack);
#define TRACK_SITE_BITS 16  /* id = site | context << TRACK_SITE_BITS */
/* Capture the calling thread's stack (above the allocator) and intern it with
 * the thread id: a context id, 0 when the table is full. Never allocates. */
uint32_t track_context(void);
/* Free records: the context of the last recorded free of the block at p (0 when
 * none was kept). Lock-free; any thread. */
void track_note_free(const void *p, uint32_t ctx);
uint32_t track_free_context(const void *p);
/* The thread id a context was captured on (0 = unknown), and the hash of its
 * frames alone (the same call path on two threads hashes alike). */
uint32_t track_context_thread(uint32_t ctx);
uint64_t track_stack_hash(uint32_t ctx);

/* Intern a site named by a code address (the malloc replacement's caller); the
 * symbol is resolved with dladdr only when a report names it. 0 when full. */
nmm_site_t track_site_for_pc(uintptr_t pc);
/* Write "file:line" (or "sym+0x1c (module)" for a code-address site, "?" when
 * unknown) for a site. symbolize=false never calls dladdr (signal handlers). */
void track_site_format(struct strbuf *sb, nmm_site_t site, bool symbolize);
/* Whether a site is named by a code address (the malloc replacement's caller),
 * and that address (0 for a file:line site). */
bool track_site_is_pc(nmm_site_t site);
uintptr_t track_site_pc(nmm_site_t site);
/* "sym+0x1c (module)" for a code address (report time only). */
void track_format_pc(struct strbuf *sb, uintptr_t pc);
/* Frames of a stored stack id (0 and *pcs NULL when none). */
uint32_t track_stack_frames(uint32_t stack, const uintptr_t **pcs);

/* strbuf.c — bounded, allocation-free text building. len counts the full text
 * even past cap (snprintf contract); the buffer stays NUL-terminated. */
typedef struct strbuf {
    char *buf;
    size_t cap;
    size_t len;
} strbuf_t;
void strbuf_init(strbuf_t *sb, char *buf, size_t cap);
void strbuf_putn(strbuf_t *sb, const char *s, size_t n);
void strbuf_putc(strbuf_t *sb, char c);
void strbuf_puts(strbuf_t *sb, const char *s);
void strbuf_u64(strbuf_t *sb, uint64_t v);
void strbuf_i64(strbuf_t *sb, int64_t v);
void strbuf_hex(strbuf_t *sb, uint64_t v);
void strbuf_ratio(strbuf_t *sb, uint64_t num, uint64_t den, int decimals);
void strbuf_json_str(strbuf_t *sb, const char *s);

/* symbolize.c — names for code addresses in reports (report time only). */
typedef struct sym_frame {
    uintptr_t ret;          /* the address as captured (a return address) */
    uintptr_t pc;           /* the address shown: the call instruction that returns to ret */
    const char *module;     /* module path; NULL when no loaded module holds pc */
    uintptr_t module_off;   /* pc - the module's load bias (what symbolizers take) */
    const char *func;       /* from the module's symbol table; NULL when none covers pc */
    uintptr_t func_off;     /* pc - the function's start */
    const char *demangled;  /* the external symbolizer's name of the function, if any */
    const char *inner;      /* innermost function at pc (differs when inlined) */
    const char *file;       /* NULL without debug info or symbolizer */
    uint32_t line, column;  /* 0 = unknown */
    bool debug;             /* the module has debug info (or a debug file) */
    bool done;
} sym_frame_t;
typedef struct sym_batch {
    sym_frame_t *frames;
    size_t n, cap;
    uint32_t *index;        /* open addressing on ret: frame index + 1 */
    size_t slots;
    char *text;             /* names and files copied from the symbolizer's answers */
    size_t text_used, text_cap;
    size_t map_bytes;
} sym_batch_t;
/* A batch of at most max_frames distinct addresses (os_map); false on no memory. */
bool sym_batch_init(sym_batch_t *b, size_t max_frames);
void sym_batch_free(sym_batch_t *b);
/* Add a captured return address (deduplicated); NULL when the batch is full. The
 * frame's fields are filled by sym_batch_resolve. */
const sym_frame_t *sym_batch_add(sym_batch_t *b, uintptr_t ret);
/* Name every frame: module and function+offset always; file:line through the
 * external symbolizer when external, the symbolize option is on and a module has
 * debug info. Takes the loader lock (dl_iterate_phdr) and may run a child
 * process: never call it with heap locks held. */
void sym_batch_resolve(sym_batch_t *b, bool external);
/* "    #k 0xpc in func+0xoff file:line:col (module+0xoff)\n" (ASan's layout). */
void sym_frame_text(strbuf_t *sb, unsigned k, const sym_frame_t *f);
/* The frame as a JSON object: pc, module, offset, function, function_offset,
 * [inlined,] file, line, column. */
void sym_frame_json(strbuf_t *sb, const sym_frame_t *f);
/* "func+0xoff (module)" for one return address, from the symbol table only. */
void sym_describe(strbuf_t *sb, uintptr_t ret);

/* out.c — where reports go (stderr, or log_path's files). */
bool out_text_wanted(void);              /* no log_path, or log_format has text */
bool out_json_wanted(void);              /* log_path with log_format json or both */
void out_text(const char *s, size_t n);  /* stderr, or PREFIX.<pid> */
void out_json(const char *s, size_t n);  /* PREFIX.<pid>.json; nothing without log_path */
void out_stderr(const char *s, size_t n);
/* write(2) until all n bytes are out or it fails (EINTR included: best effort,
 * never a hang): the one write loop of the allocator. */
void out_write_all(int fd, const char *p, size_t n);
/* One report at a time (bounded wait); false when not taken (pass it back). */
bool out_lock(void);
void out_unlock(bool taken);

/* diag.c — the error report of one detection, with its stacks. */
typedef struct diag_event {
    nmm_event_t ev;         /* sites decoded: alloc_site / free_site are plain site ids */
    uint32_t here_ctx;      /* the call that found it (0 = not captured) */
    uint32_t alloc_ctx;     /* the block's allocation */
    uint32_t free_ctx;      /* the block's free (double free, realloc of freed, use after free) */
} diag_event_t;
/* Summary line, stacks (symbolized; file:line when symbolize and a symbolizer is
 * there) and the JSON line, through out.c. Outside heap locks. */
void diag_write(const diag_event_t *d, bool symbolize);
/* "1 byte past the 24-byte block" and the like; nothing for kinds without extent. */
void diag_describe_extent(struct strbuf *sb, const nmm_event_t *ev);

/* roots.c — reachability of live blocks (the leak report at exit). */
enum { ROOTS_LOST = 0, ROOTS_REACHABLE = 1, ROOTS_INDIRECT = 2 };
typedef struct roots_block {
    uintptr_t ptr;
    uint64_t size;          /* requested bytes */
    uint32_t id;            /* the stored site id (site | context << 16) */
    uint8_t state;          /* ROOTS_* */
    uint8_t suppressed;     /* leaks.c: matched a suppression */
} roots_block_t;
typedef struct roots_set {
    roots_block_t *b;       /* live blocks by address */
    size_t n, cap, missed;  /* missed: live blocks beyond cap (they stay unclassified) */
    uint32_t *work;         /* flood worklist (cap entries) */
    size_t nwork;
    size_t map_bytes;
    uintptr_t lo, span;     /* every live block lies in (lo, lo + span]: roots.c */
    uintptr_t *buf;         /* what a guarded read copies (ROOTS_READ_BYTES, page aligned) */
    int pid;
} roots_set_t;
/* Snapshot the heap's live blocks (about expect of them), sorted by address. */
bool roots_collect(nmm_heap_t *heap, roots_set_t *s, size_t expect);
void roots_release(roots_set_t *s);
/* Classify every block: reachable from globals, thread stacks, TLS, registers
 * (other threads paused by a signal while read), indirectly lost, or lost. The
 * calling thread's stack counts from self_from up: the leak check's entry passes
 * its own __builtin_dwarf_cfa(), so none of the check's frames is a root. */
void roots_mark(roots_set_t *s, uintptr_t self_from);
/* A thread that allocates with tracking says where its stack is (once). */
void roots_register_thread(void);

/* leaks.c — live blocks grouped by site (nmm_leaks_report; leakcheck.c). */
#define LEAK_STACKS 4 /* distinct sampled stacks kept per group */
/* Live blocks of one site (and category: leakcheck.c's ROOTS_* state). Stacks
 * are sampled, so a site is one group and the stacks seen on its sampled blocks
 * are listed inside it, most frequent first. */
struct leak_group {
    uint32_t id;        /* the site */
    uint32_t used;
    uint32_t category;  /* 0 for nmm_leaks_report; leakcheck.c: ROOTS_* */
    uint32_t suppressed;/* leakcheck.c: a suppression matched */
    uint64_t count;
    uint64_t bytes;
    uint32_t stacks[LEAK_STACKS];        /* context ids (the first seen of each call path) */
    uint32_t stack_counts[LEAK_STACKS];
    uint64_t stack_hashes[LEAK_STACKS];  /* frames only: threads merged */
};
struct leak_agg {
    struct leak_group *slots;
    size_t cap;       /* power of two */
    size_t groups;    /* after leaks_agg_finish: slots[0..groups) sorted */
    size_t map_bytes;
    uint64_t total_count, total_bytes;
    uint64_t other_count, other_bytes; /* blocks whose group did not fit */
};
/* A table for the groups of about expect blocks (more go to "other"). */
bool leaks_agg_init(struct leak_agg *a, size_t expect);
void leaks_agg_add(struct leak_agg *a, size_t requested, uint32_t id, uint32_t category);
/* Compact, sort (category, then bytes, largest first), order each group's stacks. */
void leaks_agg_finish(struct leak_agg *a);
void leaks_release(struct leak_agg *a);
/* Write the text list of live blocks of heap to fd (memory from os_map, never
 * malloc); nothing when no block is live. nmm_heap_destroy of a tracking heap. */
void leaks_write(nmm_heap_t *heap, int fd);
/* Top leak groups by bytes as a JSON array (for report.c); at most `top` rows. */
void leaks_json_top(nmm_heap_t *heap, struct strbuf *sb, size_t top);

/* leakcheck.c — the at-exit leak report of the default heap (LSan's). */
/* Reachability, suppressions, the report through out.c; returns the blocks
 * definitely or indirectly lost and not suppressed. */
uint64_t leakcheck_run(nmm_heap_t *heap);
/* The default heap exists: the report at exit applies (links leakcheck.c in). */
void leakcheck_arm(void);

/* suppress.c — leak suppressions (LSan's format) and the built-in ones. */
/* The suppression matching any of the frames (function, module or file), or
 * NULL. Reads the suppressions file on first use. */
const char *suppress_match(const sym_frame_t *const *frames, size_t n);

/* access.c — checked bulk accesses (copy_shim.c's memcpy family, nmm_copy). */
typedef struct access_note {
    const char *call;   /* "memcpy", ...: the report names the call; NULL = none */
    uint64_t len;       /* bytes the call asked to access */
    uint64_t keep;      /* access_check: bytes of the range inside the block */
    uintptr_t caller;   /* the call's return address (its site), 0 = none */
    uint8_t write;      /* 1: the range is written (a destination); 0: read */
    uint8_t record;     /* 1: the call goes on clamped or skipped (policy=record) */
    uint8_t echo;       /* 1: no heap lock is held, write the report at once */
} access_note_t;
/* The call being reported on, for its report's words (diag.c); set by
 * access_check for the report only. */
extern __thread access_note_t access_note;
/* The heap's slab region when its blocks are checked (level >= standard): the
 * callers' cheap filter. false at level off. */
bool access_region(const nmm_heap_t *heap, uintptr_t *base, size_t *size);
/* [p, p + n) starts in a live slab block of heap (or in its head) and leaves its
 * requested bytes: reported (overflow, or underflow when it starts before the
 * block, with the exact reach) through the heap's policy, the report naming the
 * call of note (may be NULL). Returns how many bytes from p are inside the block
 * (n when nothing was wrong or p is in no block). */
size_t access_check(nmm_heap_t *heap, const void *p, size_t n, nmm_site_t site,
                    const access_note_t *note);

/* malloc_shim.c — defined (weak, hidden) only in libnmm_preload.so: when present,
 * detections are echoed to stderr in record mode too. */
extern const int malloc_shim_linked __attribute__((weak, visibility("hidden")));
/* copy_shim.c (preload library only): its interposed copies, NULL-terminated;
 * their frames are the allocator's own in a captured stack (unwind.c). */
extern const void *const copy_shim_functions[] __attribute__((weak, visibility("hidden")));

#endif /* NMM_INTERNAL_H */
