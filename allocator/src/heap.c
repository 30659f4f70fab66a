/* heap.c — heap objects: creation (config -> derived switches, computed here and
 * nowhere else), destruction, the process-wide heap table and default heap, fork
 * handlers, statuses, and the accessors the periphery uses. Must not call malloc
 * (the default heap backs the malloc replacement). Heap creation/destruction and
 * the fork handlers take heap_table_lock; everything else here is lock-free.
 */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

pthread_mutex_t heap_table_lock = PTHREAD_MUTEX_INITIALIZER;
nmm_heap_t *heap_table[CORE_MAX_HEAPS];          /* atomic pointers; heap_table_lock to change */
static nmm_heap_t *heap_free_structs;            /* heap_table_lock: recycled heap structs */
static uint64_t heap_generation;                 /* heap_table_lock */
static nmm_heap_t *heap_default;                 /* atomic */
static pthread_mutex_t heap_default_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t heap_once = PTHREAD_ONCE_INIT;
static NMM_TLS nmm_status_t heap_last_status;


/* ------------------------------------------------------------------ statuses */

const char *nmm_status_str(nmm_status_t status)
{
    switch (status) {
    case NMM_OK: return "ok";
    case NMM_E_DOUBLE_FREE: return "double free: the block is already free";
    case NMM_E_INVALID_POINTER: return "invalid pointer: not the start of a live block of this heap";
    case NMM_E_CORRUPTED: return "corrupted block: header, guard, canary or poison damaged";
    case NMM_E_NOMEM: return "out of memory (limit, OS refusal or injected failure)";
    case NMM_E_INVALID_ARGUMENT: return "invalid argument";
    case NMM_E_REALLOC_FREED: return "realloc of a block that was already freed";
    case NMM_E_ABORTED: return "aborted by policy";
    case NMM_E_MISMATCH: return "mismatched deallocation (wrong family, size or alignment); the block was freed";
    }
    return "unknown status";
}

nmm_status_t nmm_last_status(void)
{
    return heap_last_status;
}

void heap_set_status(nmm_status_t st)
{
    heap_last_status = st;
}

/* ------------------------------------------------------------------ accounting */

void(heap_lock)(nmm_heap_t *h, pthread_mutex_t *m)
{
    if (pthread_mutex_trylock(m) != 0) {
        __atomic_fetch_add(&h->lock_contention, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(m);
    }
}

static void heap_raise_peak(uint64_t *peak, int64_t v)
{
    uint64_t cur = __atomic_load_n(peak, __ATOMIC_RELAXED);
    while (v > (int64_t)cur &&
           !__atomic_compare_exchange_n(peak, &cur, (uint64_t)v, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
}

void heap_account_live(nmm_heap_t *h, int64_t delta)
{
    int64_t v = (int64_t)__atomic_add_fetch(&h->live_est, (uint64_t)delta, __ATOMIC_RELAXED);
    if (delta > 0)
        heap_raise_peak(&h->peak_bytes, v);
}

void heap_note_peak(nmm_heap_t *h, int64_t live_bytes)
{
    heap_raise_peak(&h->peak_bytes, live_bytes);
}

void heap_account_mapped(nmm_heap_t *h, int64_t delta)
{
    int64_t v = (int64_t)__atomic_add_fetch(&h->mapped_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    if (delta > 0)
        heap_raise_peak(&h->peak_mapped_bytes, v);
}

nmm_status_t heap_report(nmm_heap_t *h, uint32_t kind, uint32_t detail, const void *addr,
                         size_t size, uint32_t alloc_id, uint32_t free_site)
{
    return heap_report_extra(h, kind, detail, 0, addr, size, alloc_id, free_site);
}

nmm_status_t heap_report_extra(nmm_heap_t *h, uint32_t kind, uint32_t detail, uint32_t extra,
                               const void *addr, size_t size, uint32_t alloc_id,
                               uint32_t free_site)
{
    nmm_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    ev.detail = detail;
    ev.extra = extra;
    ev.address = (uintptr_t)addr;
    ev.size = size;
    ev.alloc_site = alloc_id;  /* site | context << 16: events_report splits it */
    ev.free_site = free_site;
    nmm_status_t st = events_report(h, &ev);
    heap_set_status(st);
    return st;
}

/* ------------------------------------------------------------------ accessors */

const nmm_config_t *heap_config(const nmm_heap_t *heap)
{
    return &heap->cfg;
}

uint32_t heap_stack_every(const nmm_heap_t *heap, nmm_site_t site)
{
    if (site == 0)
        return heap->stack_every0;
    return heap->cfg.tracking ? heap->cfg.stack_sample : 0;
}

uint64_t heap_op_count(const nmm_heap_t *heap)
{
    nmm_heap_t *h = (nmm_heap_t *)heap;
    uint64_t allocs[CORE_CLASSES] = {0}, frees[CORE_CLASSES] = {0};
    tcache_sum(h, allocs, frees, NULL, NULL, NULL, NULL);
    uint64_t n = __atomic_load_n(&h->large_allocs, __ATOMIC_RELAXED) +
                 __atomic_load_n(&h->large_frees, __ATOMIC_RELAXED);
    for (int c = 0; c < CORE_CLASSES; c++)
        n += allocs[c] + frees[c] + __atomic_load_n(&h->pools[c].allocs, __ATOMIC_RELAXED) +
             __atomic_load_n(&h->pools[c].frees, __ATOMIC_RELAXED);
    return n;
}

void heap_exit_check(nmm_heap_t *heap)
{
    if (heap->cfg.exit_check)
        validate_exit_check(heap, true);
}

struct events_ring **heap_events_slot(nmm_heap_t *heap) { return &heap->events; }
struct fp_table **heap_failpoints_slot(nmm_heap_t *heap) { return &heap->failpoints; }

static void heap_update_fast(nmm_heap_t *h)
{
    uint8_t fast = FAST_NONE;
    /* Tracking rides the header fast paths (the site goes to site[], flagged
     * in the header);
     * tracking at level=off (a header but no canary) keeps the slow path. */
    if ((!h->tracking || h->checks) && !h->limit && h->use_cache && h->slot >= 0 &&
        !__atomic_load_n(&h->fp_armed, __ATOMIC_RELAXED))
        fast = !h->has_hdr   ? FAST_OFF
               : h->paranoid ? FAST_PARANOID
               : h->tracking ? FAST_TRACKED
                             : FAST_STANDARD;
    __atomic_store_n(&h->fast, fast, __ATOMIC_RELAXED);
}

bool heap_failpoints_armed(const nmm_heap_t *heap)
{
    return __atomic_load_n(&heap->fp_armed, __ATOMIC_RELAXED);
}

void heap_set_failpoints_armed(nmm_heap_t *heap, bool armed)
{
    __atomic_store_n(&heap->fp_armed, (uint8_t)armed, __ATOMIC_RELAXED);
    heap_update_fast(heap);
}

/* The one place that turns a config into the heap's switches. Levels:
 *   off      — pointer validation only (out-of-band states); no header
 *   standard — + 8-byte header (size, address-keyed check, head guard; the site
 *              out of band in the slab's site[]), exact tail canary (core.h)
 *   paranoid — + poison and quarantine of freed blocks (per thread, FIFO, poison
 *              verified when a block leaves it and again when it is reused),
 *              guard pages for large blocks, periodic sweeps; with sweeps on,
 *              thread caches are bypassed so every state change happens under
 *              a class lock and a sweep sees a stable heap under load.
 * tracking=1 adds the header (for the site flag) at any level. Contexts (stack
 * and thread) for error reports: paranoid records one for every allocation and
 * free without a site (the malloc replacement, plain C callers); tracking
 * samples allocations at stacks=1/N and records the free of a sampled block. */
static void heap_derive(nmm_heap_t *h)
{
    const nmm_config_t *c = &h->cfg;
    h->checks = c->level >= NMM_LEVEL_STANDARD;
    h->paranoid = c->level == NMM_LEVEL_PARANOID;
    h->tracking = c->tracking != 0 || h->paranoid;
    h->stack_every0 = h->paranoid ? 1 : c->tracking ? c->stack_sample : 0;
    h->has_hdr = h->checks || h->tracking;
    h->user_off = h->has_hdr ? CORE_HDR : 0;
    h->guard = c->guard_pages == 1; /* options.c turns it on for level=paranoid unless guard= is given */
    /* Freed large mappings stay mapped for reuse, and realloc mremaps, only
     * where detection does not need a freed mapping gone (quarantine, guard). */
    h->large_reuse = !h->paranoid && !h->guard;
    /* Paranoid keeps caches (with a per-thread quarantine) unless periodic sweeps
     * are on: a sweep under load needs every state change under a class lock. */
    h->use_cache = c->thread_cache != 0 && !(h->paranoid && c->sweep_every_ops);
    h->limit = c->limit_bytes;
    heap_update_fast(h);
}

/* ------------------------------------------------------------------ fork */

static void heap_lock_all_of(nmm_heap_t *h)
{
    for (int c = 0; c < CORE_CLASSES; c++)
        pthread_mutex_lock(&h->pools[c].lock);
    pthread_mutex_lock(&h->region_lock);
    pthread_mutex_lock(&h->large_lock);
    pthread_mutex_lock(&h->quar_lock);
}

static void heap_unlock_all_of(nmm_heap_t *h)
{
    pthread_mutex_unlock(&h->quar_lock);
    pthread_mutex_unlock(&h->large_lock);
    pthread_mutex_unlock(&h->region_lock);
    for (int c = CORE_CLASSES - 1; c >= 0; c--)
        pthread_mutex_unlock(&h->pools[c].lock);
}

static void heap_fork_prepare(void)
{
    pthread_mutex_lock(&heap_default_lock);
    pthread_mutex_lock(&tcache_registry_lock);
    pthread_mutex_lock(&heap_table_lock);
    for (int i = 0; i < CORE_MAX_HEAPS; i++)
        if (heap_table[i])
            heap_lock_all_of(heap_table[i]);
}

static void heap_fork_parent(void)
{
    for (int i = CORE_MAX_HEAPS - 1; i >= 0; i--)
        if (heap_table[i])
            heap_unlock_all_of(heap_table[i]);
    pthread_mutex_unlock(&heap_table_lock);
    pthread_mutex_unlock(&tcache_registry_lock);
    pthread_mutex_unlock(&heap_default_lock);
}

static void heap_fork_child(void)
{
    heap_fork_parent();
    os_forget_thread_id();
    /* The other threads are gone: their caches go back to the heaps, so the
     * child's stats still add up and no block is stranded. */
    tcache_fork_child();
}

static void heap_process_init(void)
{
    sizeclass_init();
    tcache_process_init();
    pthread_atfork(heap_fork_prepare, heap_fork_parent, heap_fork_child);
}

/* Registered at load time so pthread_atfork (which may allocate) never runs
 * inside a malloc call of the replacement. */
__attribute__((constructor)) static void heap_constructor(void)
{
    pthread_once(&heap_once, heap_process_init);
}

/* ------------------------------------------------------------------ create/destroy */

nmm_heap_t *nmm_heap_create(const nmm_config_t *cfg)
{
    pthread_once(&heap_once, heap_process_init);
    nmm_config_t c;
    nmm_config_init(&c);
    if (cfg) {
        if (cfg->size < offsetof(nmm_config_t, failpoints) + sizeof(c.failpoints) ||
            cfg->level > NMM_LEVEL_PARANOID || cfg->policy > NMM_POLICY_ABORT) {
            errno = EINVAL;
            heap_set_status(NMM_E_INVALID_ARGUMENT);
            return NULL;
        }
        /* fields past the caller's size (an older nmm.h) keep their defaults */
        memcpy(&c, cfg, cfg->size < sizeof c ? cfg->size : sizeof c);
        c.size = sizeof c;
    }

    pthread_mutex_lock(&heap_table_lock);
    int index = -1;
    for (int i = 0; i < CORE_MAX_HEAPS; i++)
        if (!heap_table[i]) {
            index = i;
            break;
        }
    nmm_heap_t *h = heap_free_structs;
    if (h)
        heap_free_structs = h->next_free;
    uint64_t gen = ++heap_generation;
    pthread_mutex_unlock(&heap_table_lock);
    if (index < 0) {
        errno = ENOMEM;
        heap_set_status(NMM_E_NOMEM);
        return NULL;
    }
    if (!h) {
        h = os_map(NULL, sizeof *h);
        if (!h) {
            errno = ENOMEM;
            heap_set_status(NMM_E_NOMEM);
            return NULL;
        }
    }
    memset(h, 0, sizeof *h);
    h->cfg = c;
    h->gen = gen;
    h->slot = -1;
    heap_derive(h);
    os_random(h->secret, sizeof h->secret);
    pthread_mutex_init(&h->region_lock, NULL);
    pthread_mutex_init(&h->large_lock, NULL);
    pthread_mutex_init(&h->quar_lock, NULL);
    for (int i = 0; i < CORE_CLASSES; i++)
        pthread_mutex_init(&h->pools[i].lock, NULL);

    char err[256];
    bool ok = slab_region_init(h);
    bool have_large = ok && large_init(h);
    bool have_zero = have_large && zero_init(h);
    bool have_quar = have_zero && (!h->paranoid || detect_quarantine_init(h));
    bool have_events = have_quar && events_init(h, c.event_capacity) == NMM_OK;
    bool have_fp = have_events && failpoint_init(h, c.seed, c.failpoints, err, sizeof err) == NMM_OK;
    if (!have_fp) {
        if (have_events)
            events_destroy(h);
        if (have_quar)
            detect_quarantine_destroy(h);
        if (have_zero)
            zero_destroy(h);
        if (have_large)
            large_destroy(h);
        if (ok)
            slab_region_destroy(h);
        pthread_mutex_lock(&heap_table_lock);
        h->next_free = heap_free_structs;
        heap_free_structs = h;
        pthread_mutex_unlock(&heap_table_lock);
        errno = have_events ? EINVAL : ENOMEM;
        heap_set_status(have_events ? NMM_E_INVALID_ARGUMENT : NMM_E_NOMEM);
        return NULL;
    }

    pthread_mutex_lock(&heap_table_lock);
    if (heap_table[index]) {  /* taken meanwhile: find another */
        index = -1;
        for (int i = 0; i < CORE_MAX_HEAPS; i++)
            if (!heap_table[i]) {
                index = i;
                break;
            }
    }
    if (index >= 0) {
        h->slot = index < CORE_SLOTS ? index : -1;
        heap_update_fast(h);
        __atomic_store_n(&heap_table[index], h, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&heap_table_lock);
    if (index < 0) {
        h->slot = -1;
        nmm_heap_destroy(h);
        errno = ENOMEM;
        return NULL;
    }
    if (h->guard)
        events_install_fault_handler();
    return h;
}

void nmm_heap_destroy(nmm_heap_t *h)
{
    if (!h || h == __atomic_load_n(&heap_default, __ATOMIC_ACQUIRE))
        return;
    /* nmm.h: blocks still live now are leaks; with tracking they are reported
     * (to stderr, grouped by site; nothing is written when nothing leaked). With
     * log_path the report is the default heap's at exit (definitely lost, still
     * reachable...), written to the log in log_format, so a program on heaps of
     * its own gets the same files and JSON as one on the malloc replacement. */
    heap_exit_check(h);
    if (h->cfg.tracking && options_process()->log_path) {
        if (options_process()->leaks)
            leakcheck_run(h);
    } else if (h->cfg.tracking) {
        leaks_write(h, 2);
    }
    tcache_detach_heap(h);
    pthread_mutex_lock(&heap_table_lock);
    for (int i = 0; i < CORE_MAX_HEAPS; i++)
        if (heap_table[i] == h)
            __atomic_store_n(&heap_table[i], NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&heap_table_lock);
    failpoint_destroy(h);
    events_destroy(h);
    large_destroy(h);
    zero_destroy(h);
    detect_quarantine_destroy(h);
    slab_region_destroy(h);
    pthread_mutex_destroy(&h->region_lock);
    pthread_mutex_destroy(&h->large_lock);
    pthread_mutex_destroy(&h->quar_lock);
    for (int i = 0; i < CORE_CLASSES; i++)
        pthread_mutex_destroy(&h->pools[i].lock);
    /* The struct itself is recycled, never unmapped: the fault handler may be
     * reading it. */
    pthread_mutex_lock(&heap_table_lock);
    h->base = 0;
    h->region_size = 0;
    h->next_free = heap_free_structs;
    heap_free_structs = h;
    pthread_mutex_unlock(&heap_table_lock);
}

nmm_heap_t *nmm_default_heap(void)
{
    nmm_heap_t *h = __atomic_load_n(&heap_default, __ATOMIC_ACQUIRE);
    if (likely(h))
        return h;
    pthread_mutex_lock(&heap_default_lock);
    h = heap_default;
    if (!h) {
        nmm_config_t c;
        options_from_env(&c);
        h = nmm_heap_create(&c);
        if (!h) {
            nmm_config_init(&c);
            h = nmm_heap_create(&c);
        }
        if (!h) {
            static const char msg[] = "nmm: cannot create the default heap\n";
            out_write_all(2, msg, sizeof msg - 1);
            abort();
        }
        __atomic_store_n(&heap_default, h, __ATOMIC_RELEASE);
        leakcheck_arm();
    }
    pthread_mutex_unlock(&heap_default_lock);
    return h;
}

/* Caller holds heap_table_lock. The heap (other than except) whose region or
 * large blocks contain addr. */
nmm_heap_t *heap_by_address(uintptr_t addr, nmm_heap_t *except)
{
    for (int i = 0; i < CORE_MAX_HEAPS; i++) {
        nmm_heap_t *o = heap_table[i];
        if (!o || o == except)
            continue;
        if (addr - o->base < o->region_size || large_contains(o, addr))
            return o;
    }
    return NULL;
}

bool heap_describe_fault_address(uintptr_t addr, nmm_event_t *ev)
{
    for (int i = 0; i < CORE_MAX_HEAPS; i++) {
        nmm_heap_t *h = __atomic_load_n(&heap_table[i], __ATOMIC_ACQUIRE);
        if (h && (large_describe(h, addr, ev) || zero_describe(h, addr, ev)))
            return true;
    }
    return false;
}
