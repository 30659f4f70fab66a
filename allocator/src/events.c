/* events.c — the one reporting choke point: the per-heap event ring, per-kind
 * counts, the policy (record / one write(2) line + abort) and the SIGSEGV/SIGBUS
 * handler that names guard-page hits. Must never allocate, never call back into
 * Python, never printf. events_report is called by any thread, possibly with heap
 * locks held; the ring is a lock-free bounded MPMC queue (Vyukov), so no thread
 * ever waits here and a fork in the middle cannot deadlock the child.
 */
#define _GNU_SOURCE /* REG_ERR: was the faulting access a write */
#include "internal.h"

#include <signal.h>
#include <ucontext.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One slot; turn == 2 * position when free for the producer at that position,
 * 2 * position + 1 when filled for the consumer (the factor 2 keeps "free" and
 * "filled" apart even with a capacity of 1). */
struct ev_cell {
    _Atomic uint64_t turn;
    nmm_event_t ev;
};

struct events_ring {
    size_t map_bytes;   /* size of this mapping, for os_unmap */
    uint64_t capacity;  /* cells; any value >= 1 (positions are taken modulo) */
    _Alignas(64) _Atomic uint64_t enqueue_pos;
    _Alignas(64) _Atomic uint64_t dequeue_pos;
    _Alignas(64) _Atomic uint64_t seq;      /* last sequence number handed out */
    _Atomic uint64_t total;                 /* detections, ever (dropped included) */
    _Atomic uint64_t dropped;               /* detections that found the ring full */
    _Atomic uint64_t by_kind[NMM_EV_KIND_COUNT_];
    struct ev_cell cells[];
};

#define EVENTS_DEFAULT_CAPACITY 1024u
#define EVENTS_MAX_CAPACITY (1u << 20)
#define EVENTS_PENDING_MAX 4

NMM_TLS uintptr_t events_caller_pc;
NMM_TLS uint32_t events_pending;
NMM_TLS uint32_t events_extent_last;
__thread bool events_in_sweep;
/* Plain __thread (not initial-exec): touched only on a detection, and kept out of
 * the static TLS surplus a dlopen-ed Python extension has to share. */
static __thread diag_event_t pending_ev[EVENTS_PENDING_MAX];
__thread bool events_echo_now;

static const char *const kind_names[NMM_EV_KIND_COUNT_] = {
    [NMM_EV_NONE] = "none",
    [NMM_EV_DOUBLE_FREE] = "double_free",
    [NMM_EV_INVALID_FREE] = "invalid_free",
    [NMM_EV_OVERFLOW] = "overflow",
    [NMM_EV_UNDERFLOW] = "underflow",
    [NMM_EV_USE_AFTER_FREE] = "use_after_free",
    [NMM_EV_HEADER_CORRUPT] = "header_corrupt",
    [NMM_EV_REALLOC_FREED] = "realloc_freed",
    [NMM_EV_INVALID_REALLOC] = "invalid_realloc",
    [NMM_EV_FREELIST_CORRUPT] = "freelist_corrupt",
    [NMM_EV_GUARD_PAGE] = "guard_page",
    [NMM_EV_ALLOC_DEALLOC_MISMATCH] = "alloc_dealloc_mismatch",
    [NMM_EV_DELETE_SIZE_MISMATCH] = "delete_size_mismatch",
    [NMM_EV_INVALID_POINTER] = "invalid_pointer",
    [NMM_EV_ZERO_SIZE_ACCESS] = "zero_size_access",
};

NMM_API const char *nmm_event_kind_str(uint32_t kind)
{
    return kind < NMM_EV_KIND_COUNT_ ? kind_names[kind] : "unknown";
}

static struct events_ring *ring_of(const nmm_heap_t *heap)
{
    return heap ? *heap_events_slot((nmm_heap_t *)heap) : NULL;
}

nmm_status_t events_init(nmm_heap_t *heap, uint32_t capacity)
{
    if (!capacity)
        capacity = EVENTS_DEFAULT_CAPACITY;
    if (capacity > EVENTS_MAX_CAPACITY)
        capacity = EVENTS_MAX_CAPACITY; /* 64 MiB of ring is plenty */
    size_t bytes = sizeof(struct events_ring) + (size_t)capacity * sizeof(struct ev_cell);
    size_t page = os_page_size();
    bytes = (bytes + page - 1) & ~(page - 1);
    struct events_ring *r = os_map(NULL, bytes);
    if (!r)
        return NMM_E_NOMEM;
    r->map_bytes = bytes;
    r->capacity = capacity;
    for (uint64_t i = 0; i < capacity; i++)
        atomic_store_explicit(&r->cells[i].turn, 2 * i, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    *heap_events_slot(heap) = r;
    return NMM_OK;
}

void events_destroy(nmm_heap_t *heap)
{
    struct events_ring **slot = heap_events_slot(heap);
    struct events_ring *r = *slot;
    if (!r)
        return;
    *slot = NULL;
    os_unmap(r, r->map_bytes);
}

/* false when the ring is full (the event is then counted as dropped). */
static bool ring_push(struct events_ring *r, const nmm_event_t *ev)
{
    uint64_t pos = atomic_load_explicit(&r->enqueue_pos, memory_order_relaxed);
    for (;;) {
        struct ev_cell *c = &r->cells[pos % r->capacity];
        uint64_t turn = atomic_load_explicit(&c->turn, memory_order_acquire);
        int64_t diff = (int64_t)(turn - 2 * pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->enqueue_pos, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->ev = *ev;
                atomic_store_explicit(&c->turn, 2 * pos + 1, memory_order_release);
                return true;
            }
        } else if (diff < 0) {
            return false;
        } else {
            pos = atomic_load_explicit(&r->enqueue_pos, memory_order_relaxed);
        }
    }
}

static bool ring_pop(struct events_ring *r, nmm_event_t *out)
{
    uint64_t pos = atomic_load_explicit(&r->dequeue_pos, memory_order_relaxed);
    for (;;) {
        struct ev_cell *c = &r->cells[pos % r->capacity];
        uint64_t turn = atomic_load_explicit(&c->turn, memory_order_acquire);
        int64_t diff = (int64_t)(turn - (2 * pos + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->dequeue_pos, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *out = c->ev;
                atomic_store_explicit(&c->turn, 2 * (pos + r->capacity), memory_order_release);
                return true;
            }
        } else if (diff < 0) {
            return false;
        } else {
            pos = atomic_load_explicit(&r->dequeue_pos, memory_order_relaxed);
        }
    }
}

static nmm_status_t status_for(uint32_t kind)
{
    switch (kind) {
    case NMM_EV_DOUBLE_FREE:
        return NMM_E_DOUBLE_FREE;
    case NMM_EV_INVALID_FREE:
    case NMM_EV_INVALID_REALLOC:
        return NMM_E_INVALID_POINTER;
    case NMM_EV_REALLOC_FREED:
        return NMM_E_REALLOC_FREED;
    case NMM_EV_INVALID_POINTER:
        return NMM_E_INVALID_POINTER;
    case NMM_EV_ALLOC_DEALLOC_MISMATCH:
    case NMM_EV_DELETE_SIZE_MISMATCH:
        return NMM_E_MISMATCH;
    case NMM_EV_NONE:
        return NMM_OK;
    default: /* overflow, underflow, use_after_free, header, free list, guard page */
        return NMM_E_CORRUPTED;
    }
}

static bool is_free_side_kind(uint32_t kind)
{
    return kind == NMM_EV_DOUBLE_FREE || kind == NMM_EV_INVALID_FREE ||
           kind == NMM_EV_REALLOC_FREED || kind == NMM_EV_INVALID_REALLOC ||
           kind == NMM_EV_OVERFLOW || kind == NMM_EV_UNDERFLOW ||
           kind == NMM_EV_HEADER_CORRUPT || kind == NMM_EV_ALLOC_DEALLOC_MISMATCH ||
           kind == NMM_EV_DELETE_SIZE_MISMATCH || kind == NMM_EV_INVALID_POINTER;
}

static bool has_extent(uint32_t kind)
{
    return kind == NMM_EV_OVERFLOW || kind == NMM_EV_UNDERFLOW || kind == NMM_EV_USE_AFTER_FREE;
}

/* The contexts a report shows: the block's allocation and (for a freed block)
 * its free, and the call that found the problem. Sites arrive as stored ids
 * (site | context << 16); free_site is the current call's, except for a use
 * after free, where it is the free that put the block in the quarantine. */
static void report_contexts(diag_event_t *d, uint32_t alloc_id, uint32_t free_id, bool capture)
{
    const nmm_event_t *ev = &d->ev;
    uint32_t call_ctx = 0;
    track_decode(alloc_id, NULL, &d->alloc_ctx);
    track_decode(free_id, NULL, &call_ctx);
    if (ev->kind == NMM_EV_USE_AFTER_FREE) {
        d->free_ctx = call_ctx ? call_ctx : track_free_context((const void *)ev->address);
        call_ctx = 0;
    } else if (ev->kind == NMM_EV_DOUBLE_FREE || ev->kind == NMM_EV_REALLOC_FREED) {
        d->free_ctx = track_free_context((const void *)ev->address);
    }
    /* A call that named its own site (the Python binding, NMM_FREE) is named by
     * it: its C stack would be the interpreter's. */
    nmm_site_t call_site = 0;
    track_decode(free_id, &call_site, NULL);
    bool named = call_site && !track_site_is_pc(call_site);
    /* A sweep's finding has no call of its own: the sweeping call's stack would
     * say nothing of the bug. */
    d->here_ctx = call_ctx ? call_ctx : capture && !named && !events_in_sweep ? track_context() : 0;
}

nmm_status_t events_report(nmm_heap_t *heap, nmm_event_t *ev)
{
    struct events_ring *r = ring_of(heap);
    /* Callers may hand over the id stored with a block (site | stack << 16). */
    uint32_t alloc_id = ev->alloc_site, free_id = ev->free_site;
    track_decode(ev->alloc_site, &ev->alloc_site, NULL);
    track_decode(ev->free_site, &ev->free_site, NULL);
    uint32_t last = events_extent_last;
    events_extent_last = 0;
    if (has_extent(ev->kind) && last > ev->detail)
        ev->extra = last - 1;
    else if (has_extent(ev->kind))
        ev->extra = ev->detail;
    if (ev->free_site == 0 && events_caller_pc && is_free_side_kind(ev->kind))
        ev->free_site = track_site_for_pc(events_caller_pc);
    ev->thread_id = os_thread_id();
    ev->op_count = heap ? heap_op_count(heap) : 0;
    if (r) {
        ev->seq = atomic_fetch_add_explicit(&r->seq, 1, memory_order_relaxed) + 1;
        atomic_fetch_add_explicit(&r->total, 1, memory_order_relaxed);
        if (ev->kind < NMM_EV_KIND_COUNT_)
            atomic_fetch_add_explicit(&r->by_kind[ev->kind], 1, memory_order_relaxed);
        if (!ring_push(r, ev))
            atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
    }
    bool aborting = heap && heap_config(heap)->policy == NMM_POLICY_ABORT;
    if (aborting || events_echo_now || &malloc_shim_linked != NULL) {
        diag_event_t d = {.ev = *ev};
        report_contexts(&d, alloc_id, free_id, true);
        if (aborting || events_echo_now) {
            /* Aborting, the process is going down: resolving symbols (the loader's
             * lock, a symbolizer child) here cannot deadlock anything that matters.
             * Echoing now, the caller holds no heap lock. */
            diag_write(&d, true);
            if (aborting)
                abort();
            return status_for(ev->kind);
        }
        /* Preload library: write the report, but only once back outside the heap
         * (symbolizing takes the loader lock, which a dlopen-ing thread may hold
         * while it waits for a heap lock we hold). */
        if (events_pending < EVENTS_PENDING_MAX)
            pending_ev[events_pending] = d;
        events_pending++;
    }
    return status_for(ev->kind);
}

void events_flush_pending(void)
{
    uint32_t n = events_pending;
    events_pending = 0;
    for (uint32_t i = 0; i < n && i < EVENTS_PENDING_MAX; i++)
        diag_write(&pending_ev[i], true);
    if (n > EVENTS_PENDING_MAX) {
        char buf[96];
        strbuf_t sb;
        strbuf_init(&sb, buf, sizeof buf);
        strbuf_puts(&sb, "nmm: ... and ");
        strbuf_u64(&sb, n - EVENTS_PENDING_MAX);
        strbuf_puts(&sb, " more detections in the same call\n");
        out_text(buf, sb.len < sizeof buf ? sb.len : sizeof buf - 1);
    }
}

uint64_t events_count(const nmm_heap_t *heap, uint32_t kind)
{
    struct events_ring *r = ring_of(heap);
    if (!r || kind >= NMM_EV_KIND_COUNT_)
        return 0;
    return atomic_load_explicit(&r->by_kind[kind], memory_order_relaxed);
}

uint64_t events_total(const nmm_heap_t *heap)
{
    struct events_ring *r = ring_of(heap);
    return r ? atomic_load_explicit(&r->total, memory_order_relaxed) : 0;
}

uint64_t events_dropped(const nmm_heap_t *heap)
{
    struct events_ring *r = ring_of(heap);
    return r ? atomic_load_explicit(&r->dropped, memory_order_relaxed) : 0;
}

NMM_API size_t nmm_events_drain(nmm_heap_t *heap, nmm_event_t *out, size_t max)
{
    struct events_ring *r = ring_of(heap);
    size_t n = 0;
    if (!r || !out)
        return 0;
    while (n < max && ring_pop(r, &out[n]))
        n++;
    return n;
}

NMM_API uint64_t nmm_events_last_seq(nmm_heap_t *heap)
{
    struct events_ring *r = ring_of(heap);
    return r ? atomic_load_explicit(&r->seq, memory_order_acquire) : 0;
}

/* ------------------------------------------------------------------ faults */

static struct sigaction old_segv, old_bus;
static atomic_int fault_handler_state; /* 0 none, 1 installing, 2 installed */

static struct sigaction *old_action(int sig)
{
    return sig == SIGBUS ? &old_bus : &old_segv;
}

/* Hand the signal to whoever had it before us, as if we were never there. */
static void chain_fault(int sig, siginfo_t *si, void *uc)
{
    struct sigaction *old = old_action(sig);
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, si, uc);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* Default (or ignored, which is undefined for a real fault): restore the
     * old disposition and return; the faulting instruction runs again and the
     * process dies with the original signal. A signal sent with kill() is
     * re-raised instead, since nothing would repeat it. */
    sigaction(sig, old, NULL);
    if (si->si_code <= 0)
        raise(sig);
}

/* 1 when the faulting access was a write, 0 a read (x86-64's page-fault error
 * code); 0 where the CPU does not say. */
static uint32_t fault_is_write(const void *uc)
{
#if defined(__x86_64__) && defined(REG_ERR)
    return (((const ucontext_t *)uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)uc;
    return 0;
#endif
}

/* "nmm: write of a zero-size block allocated at SITE (block 0xADDR) (thread T)":
 * the process is going down, so naming the allocating frame (the loader's
 * lock, dladdr) cannot deadlock anything that matters. */
static void zero_size_line(strbuf_t *sb, const nmm_event_t *ev, void *uc)
{
    strbuf_puts(sb, fault_is_write(uc) ? "nmm: write of a zero-size block allocated at "
                                       : "nmm: read of a zero-size block allocated at ");
    uint32_t ctx = 0;
    nmm_site_t site = 0;
    track_decode(ev->alloc_site, &site, &ctx);
    const uintptr_t *pcs = NULL;
    if (site)
        track_site_format(sb, site, true);
    else if (ctx && track_stack_frames(ctx, &pcs) && pcs)
        sym_describe(sb, pcs[0]);
    else
        strbuf_putc(sb, '?');
    strbuf_puts(sb, " (block ");
    strbuf_hex(sb, ev->address);
    strbuf_puts(sb, ")");
}

static void fault_handler(int sig, siginfo_t *si, void *uc)
{
    nmm_event_t ev;
    memset(&ev, 0, sizeof ev);
    if (si->si_code > 0 && heap_describe_fault_address((uintptr_t)si->si_addr, &ev)) {
        char buf[384];
        strbuf_t sb;
        strbuf_init(&sb, buf, sizeof buf - 1);
        if (ev.kind == NMM_EV_ZERO_SIZE_ACCESS) {
            zero_size_line(&sb, &ev, uc);
            goto thread;
        }
        strbuf_puts(&sb, "nmm: ");
        if (ev.kind == NMM_EV_USE_AFTER_FREE)
            strbuf_puts(&sb, "use after free of large block at ");
        else if (ev.kind == NMM_EV_GUARD_PAGE || ev.kind == NMM_EV_OVERFLOW)
            strbuf_puts(&sb, "overflow into guard page at ");
        else if (ev.kind == NMM_EV_UNDERFLOW)
            strbuf_puts(&sb, "underflow into guard page at ");
        else {
            strbuf_puts(&sb, nmm_event_kind_str(ev.kind));
            strbuf_puts(&sb, " at ");
        }
        strbuf_hex(&sb, (uint64_t)(uintptr_t)si->si_addr);
        strbuf_puts(&sb, " (block ");
        strbuf_hex(&sb, ev.address);
        strbuf_puts(&sb, " size ");
        strbuf_u64(&sb, ev.size);
        if (ev.alloc_site) {
            strbuf_puts(&sb, ", alloc site ");
            track_site_format(&sb, ev.alloc_site, false);
        }
        strbuf_puts(&sb, ")");
    thread:
        strbuf_puts(&sb, " (thread ");
        strbuf_u64(&sb, os_thread_id());
        strbuf_puts(&sb, ")");
        size_t n = sb.len < sizeof buf - 2 ? sb.len : sizeof buf - 2;
        buf[n++] = '\n';
        out_write_all(2, buf, n);
        /* Die with the original signal: put back what was there and let the
         * access fault again (a chained handler sees the real fault). */
        sigaction(sig, old_action(sig), NULL);
        return;
    }
    chain_fault(sig, si, uc);
}

#define ALTSTACK_BYTES (64 * 1024)
/* The alternate stack this file gave the calling thread (plain __thread: touched
 * once per thread, kept out of the static TLS a dlopen-ed extension shares). */
static __thread void *thread_altstack;

/* An alternate stack for the calling thread, unless it has one: a guard-page hit
 * caused by running off the thread stack would otherwise have nowhere to run. */
static void install_altstack(void)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;
    void *mem = os_map(NULL, ALTSTACK_BYTES);
    if (!mem)
        return;
    stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_BYTES, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        os_unmap(mem, ALTSTACK_BYTES);
    else
        thread_altstack = mem;
}

void events_thread_start(void)
{
    if (atomic_load_explicit(&fault_handler_state, memory_order_acquire) == 2)
        install_altstack();
}

void events_thread_exit(void)
{
    void *mem = thread_altstack;
    stack_t cur;
    if (!mem || sigaltstack(NULL, &cur) != 0 || cur.ss_sp != mem || (cur.ss_flags & SS_ONSTACK))
        return;  /* not ours any more, or in use: leave it */
    stack_t off = {.ss_flags = SS_DISABLE};
    if (sigaltstack(&off, NULL) == 0) {
        thread_altstack = NULL;
        os_unmap(mem, ALTSTACK_BYTES);
    }
}

void events_install_fault_handler(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&fault_handler_state, &expected, 1))
        return;
    install_altstack();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    atomic_store(&fault_handler_state, 2);
}
