/* faults.c — where faults go (drawn from the seed: worker, op, live block) and how
 * each is performed. A fault line is written before the damage is done, so the
 * parent knows of it even if it kills the process. Called only by the worker that
 * owns the fault (faults_plan by the main thread before any worker runs). */
#include <stdio.h>
#include <string.h>

#include "driver.h"

#define FAULT_TAG 0xFA17FA17FA17FA17ull
#define WILD_BASE 0x0000100000000000ull /* 16 TiB: canonical, never mapped by us */

static const char *const kind_names[FK_COUNT_] = {
    "double_free", "invalid_free", "overflow",      "underflow",
    "uaf_write",   "uaf_read",     "realloc_freed", "alloc_failure",
};
static const char *const variant_names[FV_COUNT_] = {
    "", "interior", "stack", "wild", "foreign_heap", "first", "middle",
};

const char *fault_kind_name(fault_kind_t kind)
{
    return (unsigned)kind < FK_COUNT_ ? kind_names[kind] : "unknown";
}

const char *fault_variant_name(fault_variant_t variant)
{
    return (unsigned)variant < FV_COUNT_ ? variant_names[variant] : "unknown";
}

static bool before(const fault_inst_t *a, const fault_inst_t *b)
{
    if (a->worker != b->worker)
        return a->worker < b->worker;
    if (a->op != b->op)
        return a->op < b->op;
    return a->id < b->id;
}

static void sift_down(fault_inst_t *a, uint32_t i, uint32_t n)
{
    for (;;) {
        uint32_t big = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(&a[big], &a[l]))
            big = l;
        if (r < n && before(&a[big], &a[r]))
            big = r;
        if (big == i)
            return;
        fault_inst_t t = a[i];
        a[i] = a[big];
        a[big] = t;
        i = big;
    }
}

uint32_t faults_plan(const options_t *o, fault_inst_t *out, uint32_t cap)
{
    xoshiro_t rng;
    xoshiro_seed(&rng, prng_mix(o->seed ^ FAULT_TAG, o->threads));
    uint64_t lo = o->ops >= 8 ? o->ops / 8 : 0;
    uint64_t span = o->ops >= 8 ? o->ops * 3 / 4 : o->ops;
    uint32_t n = 0;
    for (int i = 0; i < o->fault_spec_count; i++) {
        for (uint32_t c = 0; c < o->faults[i].count && n < cap; c++, n++) {
            out[n].id = n;
            out[n].spec = (uint32_t)i;
            out[n].worker = (uint32_t)xoshiro_below(&rng, o->threads);
            out[n].op = lo + xoshiro_below(&rng, span ? span : 1);
            out[n].slot_start = (uint32_t)xoshiro_below(&rng, o->live);
        }
    }
    /* Heap sort in place: n may be large, and qsort may allocate from the target. */
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(out, i, n);
    for (uint32_t end = n; end-- > 1;) {
        fault_inst_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        sift_down(out, 0, end);
    }
    return n;
}

static void fault_line(trial_t *tr, worker_t *w, const fault_inst_t *f, const fault_spec_t *fs,
                       fault_variant_t variant, uint64_t address, uint64_t size, uint64_t bytes)
{
    jline_t j;
    jl_begin(&j, "fault");
    jl_u64(&j, "id", f->id);
    jl_str(&j, "kind", fault_kind_name(fs->kind));
    jl_str(&j, "variant", fault_variant_name(variant));
    jl_u64(&j, "worker", w->index);
    jl_u64(&j, "op", w->op);
    jl_hex(&j, "address", address);
    jl_u64(&j, "size", size);
    jl_u64(&j, "bytes", bytes);
    if (fs->kind == FK_ALLOC_FAILURE)
        jl_str(&j, "fail", fs->fail);
    jl_end(&j);
    atomic_fetch_add(&tr->faults_done, 1);
}

/* The live block the fault hits: first occupied slot from slot_start; if the live
 * set is empty, a fresh 64-byte block. NULL only if that allocation fails. */
static slot_t *pick_block(trial_t *tr, worker_t *w, const fault_inst_t *f)
{
    uint32_t live = tr->o->live;
    for (uint32_t k = 0; k < live; k++) {
        slot_t *s = &w->slots[(f->slot_start + k) % live];
        if (s->ptr)
            return s;
    }
    slot_t *s = &w->slots[f->slot_start];
    return workload_alloc_slot(tr, w, s, 64) ? s : NULL;
}

/* Flip bytes so the damage always changes them, whatever canary or poison was there. */
static void flip(uint8_t *p, uint64_t n)
{
    volatile uint8_t *v = p;
    for (uint64_t i = 0; i < n; i++)
        v[i] = (uint8_t)~v[i];
}

/* Free a damaged block: the status is the fault's outcome, not unexpected. */
static void free_damaged(trial_t *tr, slot_t *s)
{
    (void)tr->target.free(tr->target.heap, s->ptr);
    s->ptr = NULL;
}

static void inject_invalid_free(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                const fault_spec_t *fs)
{
    fault_variant_t v = fs->variant == FV_NONE ? FV_INTERIOR : fs->variant;
    volatile uint8_t stack_buf[64];
    uint8_t *p = NULL;
    uint64_t size = 0;
    if (v == FV_INTERIOR) {
        slot_t *s = pick_block(tr, w, f);
        if (s) {
            uint64_t off = s->size >= 32 ? 16 : (s->size >= 2 ? s->size / 2 : 1);
            p = (uint8_t *)s->ptr + off;
            size = s->size;
        }
    } else if (v == FV_STACK) {
        stack_buf[0] = 1;
        p = (uint8_t *)stack_buf + 16;
    } else if (v == FV_WILD) {
        p = (uint8_t *)(uintptr_t)(WILD_BASE + (uint64_t)f->id * 65536 + 64);
    } else { /* foreign heap: a live block of a second NMM heap, or of a private map */
        if (w->foreign_block && tr->foreign.heap)
            nmm_free(tr->foreign.heap, w->foreign_block, 0);
        else if (w->foreign_block)
            out_unmap((void *)((uintptr_t)w->foreign_block & ~(uintptr_t)4095), 4096);
        w->foreign_block = NULL;
        if (tr->foreign.heap) {
            p = nmm_alloc(tr->foreign.heap, 64, 0);
        } else {
            uint8_t *page = out_map(4096);
            p = page ? page + 16 : NULL;
        }
        w->foreign_block = p;
        size = 64;
    }
    fault_line(tr, w, f, fs, v, (uintptr_t)p, size, 0);
    if (p)
        (void)tr->target.free(tr->target.heap, p);
}

void faults_inject(trial_t *tr, worker_t *w, const fault_inst_t *f)
{
    const fault_spec_t *fs = &tr->o->faults[f->spec];
    slot_t *s = NULL;
    uint8_t *p;
    switch (fs->kind) {
    case FK_INVALID_FREE:
        inject_invalid_free(tr, w, f, fs);
        break;
    case FK_ALLOC_FAILURE:
        fault_line(tr, w, f, fs, FV_NONE, 0, 0, 0);
        if (tr->target.heap) {
            char err[256];
            if (nmm_failpoint_set(tr->target.heap, fs->fail, err, sizeof err) != NMM_OK)
                out_error("--fault alloc_failure: fail=%s: %s", fs->fail, err);
        }
        break;
    case FK_DOUBLE_FREE:
    case FK_UAF_WRITE:
    case FK_UAF_READ:
    case FK_REALLOC_FREED: {
        fault_variant_t v = fs->variant;
        if ((fs->kind == FK_UAF_WRITE || fs->kind == FK_UAF_READ) && v == FV_NONE)
            v = FV_FIRST;
        if (!(s = pick_block(tr, w, f))) {
            fault_line(tr, w, f, fs, v, 0, 0, 0);
            break;
        }
        p = s->ptr;
        uint64_t size = s->size;
        workload_free_slot(tr, w, s); /* the legitimate free */
        uint64_t bytes = fs->kind == FK_UAF_WRITE ? fs->bytes : 0;
        fault_line(tr, w, f, fs, v, (uintptr_t)p, size, bytes);
        uint64_t off = v == FV_MIDDLE ? size / 2 : 0;
        if (fs->kind == FK_DOUBLE_FREE) {
            (void)tr->target.free(tr->target.heap, p);
        } else if (fs->kind == FK_UAF_WRITE) {
            flip(p + off, bytes);
        } else if (fs->kind == FK_UAF_READ) {
            volatile uint8_t sink = *(volatile uint8_t *)(p + off);
            (void)sink;
        } else {
            void *np = tr->target.realloc(tr->target.heap, p, size + 16);
            if (np) /* the target accepted it: give back what it returned */
                (void)tr->target.free(tr->target.heap, np);
        }
        break;
    }
    case FK_OVERFLOW:
    case FK_UNDERFLOW:
        if (!(s = pick_block(tr, w, f))) {
            fault_line(tr, w, f, fs, FV_NONE, 0, 0, fs->bytes);
            break;
        }
        workload_check_block(tr, w, s);
        fault_line(tr, w, f, fs, FV_NONE, (uintptr_t)s->ptr, s->size, fs->bytes);
        p = s->ptr;
        if (fs->kind == FK_OVERFLOW)
            flip(p + s->size, fs->bytes);
        else
            flip(p - fs->bytes, fs->bytes);
        free_damaged(tr, s);
        break;
    default:
        break;
    }
    uint64_t ev = out_drain_events(tr->target.heap, (int)w->index, w->op);
    atomic_fetch_add(&tr->events, ev);
}

const char *faults_check_options(const options_t *o)
{
    static char msg[256];
    for (int i = 0; i < o->fault_spec_count; i++) {
        const fault_spec_t *fs = &o->faults[i];
        if (fs->kind == FK_ALLOC_FAILURE && strcmp(o->target, "nmm") != 0) {
            snprintf(msg, sizeof msg,
                     "--fault alloc_failure: not applicable to --target %s "
                     "(fail points exist only in NMM heaps; use --target nmm)",
                     o->target);
            return msg;
        }
    }
    return NULL;
}
