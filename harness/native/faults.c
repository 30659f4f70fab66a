/* faults.c — where faults go (drawn from the seed: worker, op, live block) and how
 * each is performed. A fault line is written before the damage is done, so the
 * parent knows of it even if it kills the process. Called only by the worker that
 * owns the fault (faults_plan by the main thread before any worker runs). */
#include <stdio.h>
#include <string.h>

#include "chaos.h"
#include "driver.h"

#define FAULT_TAG 0xFA17FA17FA17FA17ull
#define WILD_BASE 0x0000100000000000ull /* 16 TiB: canonical, never mapped by us */

static const char *const kind_names[FK_COUNT_] = {
    "double_free",      "invalid_free", "overflow",        "underflow",
    "uaf_write",        "uaf_read",     "realloc_freed",   "alloc_failure",
    "dealloc_mismatch", "sized_delete", "memcpy_overflow", "exit_only_overflow",
    "zero_size_write",  "corrupt_meta",
};
static const char *const variant_names[FV_COUNT_] = {
    "",           "interior",         "stack",            "wild",
    "foreign_heap", "first",          "middle",           "last",
    "malloc_delete", "new_free",      "new_array_delete", "new_delete_array",
    "size",       "alignment",        "memcpy",           "memmove",
    "memset",     "list_twice",       "list_cycle",       "free_count",
    "freelist_link", "quar_twice",    "quar_lost",        "quar_bytes",
    "limit_charge", "live_count",     "retained",
};

/* The variants each kind takes: [first, last] (FV_NONE: none but the default). */
static const struct {
    fault_variant_t first, last;
    const char *text;
} kind_variants[FK_COUNT_] = {
    [FK_INVALID_FREE] = {FV_INTERIOR, FV_FOREIGN_HEAP, "interior|stack|wild|foreign_heap"},
    [FK_UAF_WRITE] = {FV_FIRST, FV_LAST, "first|middle|last"},
    [FK_UAF_READ] = {FV_FIRST, FV_LAST, "first|middle|last"},
    [FK_DEALLOC_MISMATCH] = {FV_MALLOC_DELETE, FV_NEW_DELETE_ARRAY,
                             "malloc_delete|new_free|new_array_delete|new_delete_array"},
    [FK_SIZED_DELETE] = {FV_SIZE, FV_ALIGNMENT, "size|alignment"},
    [FK_MEMCPY_OVERFLOW] = {FV_MEMCPY, FV_MEMSET, "memcpy|memmove|memset"},
    [FK_CORRUPT_META] = {FV_LIST_TWICE, FV_RETAINED,
                         "list_twice|list_cycle|free_count|freelist_link|quar_twice|"
                         "quar_lost|quar_bytes|limit_charge|live_count|retained"},
};

bool fault_variant_fits(fault_kind_t kind, fault_variant_t variant)
{
    if (variant == FV_NONE)
        return true;
    if ((unsigned)kind >= FK_COUNT_ || kind_variants[kind].first == FV_NONE)
        return false;
    return variant >= kind_variants[kind].first && variant <= kind_variants[kind].last;
}

const char *fault_variants_of(fault_kind_t kind)
{
    const char *t = (unsigned)kind < FK_COUNT_ ? kind_variants[kind].text : NULL;
    return t ? t : "none";
}

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

/* The heap's latest event sequence number: every event the misuse causes is later. */
static uint64_t last_seq(const trial_t *tr)
{
    return tr->target.heap ? nmm_events_last_seq(tr->target.heap) : 0;
}

/* offset: where the damage starts relative to address (overflow: size, underflow:
 * -bytes, use-after-free: first or middle byte); bytes: how many are damaged. */
static void fault_fields(jline_t *j, trial_t *tr, worker_t *w, const fault_inst_t *f,
                         const fault_spec_t *fs, fault_variant_t variant, uint64_t address,
                         uint64_t size, uint64_t bytes, int64_t offset)
{
    jl_begin(j, "fault");
    jl_u64(j, "id", f->id);
    jl_str(j, "kind", fault_kind_name(fs->kind));
    jl_str(j, "variant", fault_variant_name(variant));
    jl_u64(j, "worker", w->index);
    jl_u64(j, "op", w->op);
    jl_hex(j, "address", address);
    jl_u64(j, "size", size);
    jl_u64(j, "bytes", bytes);
    jl_i64(j, "offset", offset);
    jl_u64(j, "seq", last_seq(tr));
}

static void fault_line(trial_t *tr, worker_t *w, const fault_inst_t *f, const fault_spec_t *fs,
                       fault_variant_t variant, uint64_t address, uint64_t size, uint64_t bytes,
                       int64_t offset)
{
    jline_t j;
    fault_fields(&j, tr, w, f, fs, variant, address, size, bytes, offset);
    if (fs->kind == FK_ALLOC_FAILURE)
        jl_str(&j, "fail", fs->fail);
    jl_end(&j);
    atomic_fetch_add(&tr->faults_done, 1);
}

/* What performing the fault returned: the status of the misused call (-1: the fault
 * makes none), for uaf_read the byte read and the byte the block held before it was
 * freed, for alloc_failure whether the fail point armed and how many allocations fail
 * points had failed before it. */
typedef struct fault_done {
    int status;
    int read, was;       /* -1: not a uaf_read */
    int armed;           /* -1: not an alloc_failure */
    uint64_t injected_before;
    int64_t copied;      /* memcpy_overflow on an NMM heap: bytes nmm_copy copied; -1: none */
} fault_done_t;

static void fault_done_line(const fault_inst_t *f, const fault_done_t *d)
{
    jline_t j;
    jl_begin(&j, "fault_done");
    jl_u64(&j, "id", f->id);
    jl_i64(&j, "status", d->status);
    if (d->read >= 0) {
        jl_i64(&j, "read", d->read);
        jl_i64(&j, "was", d->was);
    }
    if (d->armed >= 0) {
        jl_bool(&j, "armed", d->armed != 0);
        jl_u64(&j, "injected_before", d->injected_before);
    }
    if (d->copied >= 0)
        jl_i64(&j, "copied", d->copied);
    jl_end(&j);
}

/* The live block the fault hits: first occupied slot from slot_start (with bytes: of
 * at least one byte); if there is none, a fresh 64-byte block in the first empty slot
 * from there. NULL only if that allocation fails (or every slot holds a zero-size
 * block). A fault that writes or reads the block's bytes or past them takes bytes:
 * a zero-size block has none (at paranoid any touch of it faults: zero_size_write's
 * case), while the pointer misuses (double, invalid, mismatched frees) take any block. */
static slot_t *pick_block(trial_t *tr, worker_t *w, const fault_inst_t *f, bool bytes)
{
    uint32_t live = tr->o->live;
    slot_t *empty = NULL;
    for (uint32_t k = 0; k < live; k++) {
        slot_t *s = &w->slots[(f->slot_start + k) % live];
        if (s->ptr && (s->size || !bytes))
            return s;
        if (!s->ptr && !empty)
            empty = s;
    }
    return empty && workload_alloc_slot(tr, w, empty, 64) ? empty : NULL;
}

/* Flip bytes so the damage always changes them, whatever canary or poison was there. */
static void flip(uint8_t *p, uint64_t n)
{
    volatile uint8_t *v = p;
    for (uint64_t i = 0; i < n; i++)
        v[i] = (uint8_t)~v[i];
}

/* Free a damaged block: the status is the fault's outcome, not unexpected; a target
 * that took it (ok, or corrupted and retired) counts it freed. */
static int free_damaged(trial_t *tr, worker_t *w, slot_t *s)
{
    int st = tr->target.free(tr->target.heap, s->ptr);
    if (st == NMM_OK || st == NMM_E_CORRUPTED)
        w->frees++;
    else
        w->dropped++;
    s->ptr = NULL;
    return st;
}

static int inject_invalid_free(trial_t *tr, worker_t *w, const fault_inst_t *f,
                               const fault_spec_t *fs)
{
    fault_variant_t v = fs->variant == FV_NONE ? FV_INTERIOR : fs->variant;
    volatile uint8_t stack_buf[64];
    uint8_t *p = NULL;
    uint64_t size = 0;
    if (v == FV_INTERIOR) {
        slot_t *s = pick_block(tr, w, f, false);
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
    fault_line(tr, w, f, fs, v, (uintptr_t)p, size, 0, 0);
    if (!p)
        return -1;
    int st = tr->target.free(tr->target.heap, p);
    /* a target that took an interior pointer freed the block under it: count it, so
     * the driver's books show what the target's do */
    if (st == NMM_OK && v == FV_INTERIOR)
        w->frees++;
    return st;
}

/* Count a free of a block the driver made by its status: the target took it (ok,
 * corrupted and retired, or a family mismatch, freed all the same), or refused it. */
static void count_taken(worker_t *w, int st)
{
    if (st == NMM_OK || st == NMM_E_CORRUPTED || st == NMM_E_MISMATCH)
        w->frees++;
    else
        w->dropped++;
}

/* A fresh block of `family` (of the picked live block's size, so sizes vary with the
 * workload): counted as the driver's; NULL (counted as a failed allocation) if none. */
static void *fresh_block(trial_t *tr, worker_t *w, const fault_inst_t *f, int family,
                         size_t alignment, uint64_t *size)
{
    slot_t *s = pick_block(tr, w, f, false);
    *size = s ? s->size : 64;
    void *p = tr->target.alloc_as(tr->target.heap, family, *size, alignment);
    if (p)
        w->allocs++;
    else
        w->alloc_failures++;
    return p;
}

/* dealloc_mismatch: a live malloc'd block freed by operator delete, or a fresh new'd
 * (new[]'d) block freed by free (delete, delete[]); false when not performed. */
static bool inject_dealloc_mismatch(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                    const fault_spec_t *fs, fault_done_t *done)
{
    fault_variant_t v = fs->variant == FV_NONE ? FV_MALLOC_DELETE : fs->variant;
    uint64_t size = 0;
    void *p;
    int freeing;
    if (v == FV_MALLOC_DELETE) {
        slot_t *s = pick_block(tr, w, f, false);
        p = s ? s->ptr : NULL;
        if (s) {
            workload_check_block(tr, w, s);
            size = s->size;
            s->ptr = NULL; /* whatever the target does with it, it is no longer ours */
        }
        freeing = NMM_FAMILY_NEW;
    } else {
        int family = v == FV_NEW_ARRAY_DELETE ? NMM_FAMILY_NEW_ARRAY : NMM_FAMILY_NEW;
        p = fresh_block(tr, w, f, family, 0, &size);
        freeing = v == FV_NEW_FREE ? NMM_FAMILY_MALLOC
                  : v == FV_NEW_ARRAY_DELETE ? NMM_FAMILY_NEW : NMM_FAMILY_NEW_ARRAY;
    }
    fault_line(tr, w, f, fs, v, (uintptr_t)p, p ? size : 0, 0, 0);
    if (!p)
        return false;
    done->status = tr->target.free_as(tr->target.heap, p, freeing, NMM_UNSIZED, 0);
    count_taken(w, done->status);
    return true;
}

/* sized_delete: a fresh new'd block deleted with its size + bytes (size), or an
 * aligned new'd one (64) by a sized delete without the alignment (alignment). */
static bool inject_sized_delete(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                const fault_spec_t *fs, fault_done_t *done)
{
    fault_variant_t v = fs->variant == FV_NONE ? FV_SIZE : fs->variant;
    uint64_t size = 0;
    void *p = fresh_block(tr, w, f, NMM_FAMILY_NEW, v == FV_ALIGNMENT ? 64 : 0, &size);
    fault_line(tr, w, f, fs, v, (uintptr_t)p, p ? size : 0, 0, 0);
    if (!p)
        return false;
    size_t told = v == FV_SIZE ? size + fs->bytes : size;
    done->status = tr->target.free_as(tr->target.heap, p, NMM_FAMILY_NEW, told, 0);
    count_taken(w, done->status);
    return true;
}

/* memcpy_overflow: copy (or set) size + bytes into a live block through the target's
 * copy routine, then free it. The block's own bytes are copied back unchanged (its
 * pattern holds); the bytes past it are the flipped bytes found there (a memset: the
 * flip of the first), so an unchecked copy always changes the canary. */
static bool inject_memcpy_overflow(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                   const fault_spec_t *fs, fault_done_t *done)
{
    fault_variant_t v = fs->variant == FV_NONE ? FV_MEMCPY : fs->variant;
    slot_t *s = pick_block(tr, w, f, true);
    uint64_t n = s ? s->size + fs->bytes : 0;
    uint8_t *buf = s ? out_map(n) : NULL;
    if (!s || !buf) {
        fault_line(tr, w, f, fs, v, 0, 0, fs->bytes, 0);
        return false;
    }
    workload_check_block(tr, w, s);
    const volatile uint8_t *p = s->ptr;
    for (uint64_t i = 0; i < n; i++)
        buf[i] = v == FV_MEMSET ? (uint8_t)~p[s->size] : i < s->size ? p[i] : (uint8_t)~p[i];
    fault_line(tr, w, f, fs, v, (uintptr_t)s->ptr, s->size, fs->bytes, (int64_t)s->size);
    size_t copied = tr->target.copy(tr->target.heap, v, s->ptr, buf, n);
    if (target_is_nmm(&tr->target))
        done->copied = (int64_t)copied;
    out_unmap(buf, n);
    done->status = free_damaged(tr, w, s);
    return true;
}

/* exit_only_overflow: flip `bytes` bytes past a live block's end and keep the block
 * live until after the final sweep: no free looks at it before a sweep (the final
 * nmm_validate, a periodic sweep) has had its chance, as for a block a program never
 * frees before its exit check. */
static bool inject_exit_only_overflow(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                      const fault_spec_t *fs)
{
    slot_t *s = w->kept_count < w->kept_cap ? pick_block(tr, w, f, true) : NULL;
    if (!s) {
        fault_line(tr, w, f, fs, FV_NONE, 0, 0, fs->bytes, 0);
        return false;
    }
    workload_check_block(tr, w, s);
    fault_line(tr, w, f, fs, FV_NONE, (uintptr_t)s->ptr, s->size, fs->bytes, (int64_t)s->size);
    flip((uint8_t *)s->ptr + s->size, fs->bytes);
    w->kept[w->kept_count++] = *s;
    s->ptr = NULL;
    return true;
}

/* zero_size_write: malloc(0), `bytes` bytes written at its start (never read first: at
 * paranoid the block is PROT_NONE and the read would be the first fault), then freed. */
static bool inject_zero_size_write(trial_t *tr, worker_t *w, const fault_inst_t *f,
                                   const fault_spec_t *fs, fault_done_t *done)
{
    uint8_t *p = tr->target.alloc(tr->target.heap, 0);
    if (p)
        w->allocs++;
    else
        w->alloc_failures++;
    fault_line(tr, w, f, fs, FV_NONE, (uintptr_t)p, 0, fs->bytes, 0);
    if (!p)
        return false;
    for (uint64_t i = 0; i < fs->bytes; i++)
        ((volatile uint8_t *)p)[i] = (uint8_t)(0xA5 ^ i);
    done->status = tr->target.free(tr->target.heap, p);
    count_taken(w, done->status);
    return true;
}

/* Where a use after free hits the freed block: its first byte, its middle, or its
 * last (the last `bytes` of a uaf_write; a block shorter than that from its start). */
static uint64_t uaf_offset(const fault_spec_t *fs, fault_variant_t v, uint64_t size)
{
    uint64_t n = fs->kind == FK_UAF_WRITE ? fs->bytes : 1;
    if (v == FV_MIDDLE)
        return size / 2;
    if (v == FV_LAST)
        return size > n ? size - n : 0;
    return 0;
}

/* uaf_read: the byte the read will hit is set to a known value while the block is
 * still live (its pattern checked first), so the read tells stale data (that value)
 * from poison or anything else. */
#define UAF_READ_MARK 0x5A

void faults_inject(trial_t *tr, worker_t *w, const fault_inst_t *f)
{
    const fault_spec_t *fs = &tr->o->faults[f->spec];
    if (fs->kind == FK_CORRUPT_META)
        return; /* at the end, on the quiescent heap: faults_corrupt */
    slot_t *s = NULL;
    uint8_t *p;
    fault_done_t done = {.status = -1, .read = -1, .was = -1, .armed = -1, .copied = -1};
    bool performed = true;
    switch (fs->kind) {
    case FK_INVALID_FREE:
        done.status = inject_invalid_free(tr, w, f, fs);
        break;
    case FK_ALLOC_FAILURE:
        fault_line(tr, w, f, fs, FV_NONE, 0, 0, 0, 0);
        done.armed = 0;
        if (tr->target.heap) {
            nmm_stats_t st;
            memset(&st, 0, sizeof st);
            st.size = sizeof st;
            if (nmm_stats_get(tr->target.heap, &st) == NMM_OK)
                done.injected_before = st.injected_failures;
            char err[256];
            if (nmm_failpoint_set(tr->target.heap, fs->fail, err, sizeof err) != NMM_OK)
                out_error("--fault alloc_failure: fail=%s: %s", fs->fail, err);
            else
                done.armed = 1;
        }
        break;
    case FK_DOUBLE_FREE:
    case FK_UAF_WRITE:
    case FK_UAF_READ:
    case FK_REALLOC_FREED: {
        fault_variant_t v = fs->variant;
        if ((fs->kind == FK_UAF_WRITE || fs->kind == FK_UAF_READ) && v == FV_NONE)
            v = FV_FIRST;
        if (!(s = pick_block(tr, w, f,
                             fs->kind == FK_UAF_WRITE || fs->kind == FK_UAF_READ))) {
            fault_line(tr, w, f, fs, v, 0, 0, 0, 0);
            performed = false;
            break;
        }
        p = s->ptr;
        uint64_t size = s->size;
        uint64_t off = uaf_offset(fs, v, size);
        if (fs->kind == FK_UAF_READ && off < size) {
            workload_check_block(tr, w, s);
            ((volatile uint8_t *)p)[off] = UAF_READ_MARK;
            done.was = UAF_READ_MARK;
            int st = tr->target.free(tr->target.heap, p); /* the legitimate free */
            workload_count_free(tr, w, p, size, st, "free");
            s->ptr = NULL;
        } else {
            workload_free_slot(tr, w, s); /* the legitimate free */
        }
        uint64_t bytes = fs->kind == FK_UAF_WRITE ? fs->bytes : fs->kind == FK_UAF_READ ? 1 : 0;
        int64_t at = fs->kind == FK_UAF_WRITE || fs->kind == FK_UAF_READ ? (int64_t)off : 0;
        fault_line(tr, w, f, fs, v, (uintptr_t)p, size, bytes, at);
        if (fs->kind == FK_DOUBLE_FREE) {
            done.status = tr->target.free(tr->target.heap, p);
            if (done.status == NMM_OK) /* taken twice: the target's books count it */
                w->frees++;
        } else if (fs->kind == FK_UAF_WRITE) {
            flip(p + off, bytes);
        } else if (fs->kind == FK_UAF_READ) {
            done.read = off < size ? *(volatile uint8_t *)(p + off) : -1;
        } else {
            void *np = tr->target.realloc(tr->target.heap, p, size + 16);
            done.status = np ? NMM_OK : tr->target.last_status();
            if (np) { /* the target accepted it: give back what it returned */
                w->reallocs++;
                int st = tr->target.free(tr->target.heap, np);
                if (st == NMM_OK || st == NMM_E_CORRUPTED)
                    w->frees++;
            }
        }
        break;
    }
    case FK_OVERFLOW:
    case FK_UNDERFLOW:
        if (!(s = pick_block(tr, w, f, true))) {
            fault_line(tr, w, f, fs, FV_NONE, 0, 0, fs->bytes, 0);
            performed = false;
            break;
        }
        workload_check_block(tr, w, s);
        {
            /* skip: the bytes left intact between the block's edge and the damage */
            int64_t at = fs->kind == FK_OVERFLOW ? (int64_t)(s->size + fs->skip)
                                                 : -(int64_t)(fs->skip + fs->bytes);
            fault_line(tr, w, f, fs, FV_NONE, (uintptr_t)s->ptr, s->size, fs->bytes, at);
            flip((uint8_t *)s->ptr + at, fs->bytes);
        }
        done.status = free_damaged(tr, w, s);
        break;
    case FK_DEALLOC_MISMATCH:
        performed = inject_dealloc_mismatch(tr, w, f, fs, &done);
        break;
    case FK_SIZED_DELETE:
        performed = inject_sized_delete(tr, w, f, fs, &done);
        break;
    case FK_MEMCPY_OVERFLOW:
        performed = inject_memcpy_overflow(tr, w, f, fs, &done);
        break;
    case FK_EXIT_ONLY_OVERFLOW:
        performed = inject_exit_only_overflow(tr, w, f, fs);
        break;
    case FK_ZERO_SIZE_WRITE:
        performed = inject_zero_size_write(tr, w, f, fs, &done);
        break;
    default:
        break;
    }
    if (performed)
        fault_done_line(f, &done);
    uint64_t ev = out_drain_events(tr->target.heap, (int)w->index, w->op);
    atomic_fetch_add(&tr->events, ev);
}

#define CORRUPT_TAG 0xC0DDC0DDBADB00C5ull

#ifdef NMM_CHAOS_CORRUPT
/* One corrupt_meta fault: its line (the damage planned: where validate must name it,
 * the metadata written, what it is), the damage, the probes, the undo, its done line
 * (what validate counted while the damage was there, and after the undo). The events
 * the probes cause are those with a seq after the fault line's and up to seq_end. */
static void corrupt_one(trial_t *tr, const fault_inst_t *f, const fault_spec_t *fs)
{
    nmm_heap_t *heap = tr->target.heap;
    worker_t *w = &tr->workers[f->worker];
    fault_variant_t v = fs->variant == FV_NONE ? FV_LIST_TWICE : fs->variant;
    atomic_fetch_add(&tr->events, out_drain_events(heap, (int)w->index, w->op));
    chaos_damage_t d;
    bool planned = chaos_corrupt_plan(heap, (int)(v - FV_LIST_TWICE),
                                      prng_mix(tr->o->seed ^ CORRUPT_TAG, f->id), &d);
    jline_t j;
    fault_fields(&j, tr, w, f, fs, v, planned ? (uintptr_t)d.named : 0, 0, 0, 0);
    jl_hex(&j, "damaged", planned ? (uintptr_t)d.written : 0);
    jl_hex(&j, "also", (uintptr_t)d.also);
    jl_str(&j, "what", d.what ? d.what : "");
    jl_end(&j);
    atomic_fetch_add(&tr->faults_done, 1);
    if (!planned)
        return;
    chaos_corrupt_apply(&d);
    /* the heap as a program would meet it: every reader must return, bounded */
    uint64_t problems = nmm_validate(heap);
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    int stats = nmm_stats_get(heap, &st);
    uint64_t exit_found = nmm_exit_check(heap);
    uint64_t seq_end = last_seq(tr);
    chaos_corrupt_undo(&d);
    uint64_t after = nmm_validate(heap);
    jl_begin(&j, "fault_done");
    jl_u64(&j, "id", f->id);
    jl_i64(&j, "status", -1);
    jl_u64(&j, "problems", problems);
    jl_u64(&j, "after", after);
    jl_u64(&j, "exit_found", exit_found);
    jl_i64(&j, "stats_status", stats);
    jl_u64(&j, "seq_end", seq_end);
    jl_end(&j);
    atomic_fetch_add(&tr->events, out_drain_events(heap, (int)w->index, w->op));
}
#endif

void faults_corrupt(trial_t *tr)
{
    for (uint32_t i = 0; i < tr->fault_count; i++) {
        const fault_inst_t *f = &tr->faults[i];
        const fault_spec_t *fs = &tr->o->faults[f->spec];
        if (fs->kind != FK_CORRUPT_META)
            continue;
#ifdef NMM_CHAOS_CORRUPT
        corrupt_one(tr, f, fs);
#endif
        monitor_step();
    }
}

const char *faults_check_options(const options_t *o)
{
    static char msg[512];
#ifdef NMM_CHAOS_CORRUPT
    for (int v = FV_LIST_TWICE; v <= FV_RETAINED; v++) /* the two lists are one */
        if (strcmp(chaos_corrupt_name(v - FV_LIST_TWICE), variant_names[v]) != 0)
            return "corrupt_meta: the driver's variants are not chaos.h's NMM_CORRUPT_SHAPES";
#endif
    for (int i = 0; i < o->fault_spec_count; i++) {
        const fault_spec_t *fs = &o->faults[i];
        if (fs->kind == FK_CORRUPT_META && strcmp(o->target, "nmm") != 0) {
            snprintf(msg, sizeof msg,
                     "--fault corrupt_meta: not applicable to --target %s (it damages an "
                     "NMM heap's own books; use --target nmm)", o->target);
            return msg;
        }
#ifndef NMM_CHAOS_CORRUPT
        if (fs->kind == FK_CORRUPT_META) {
            snprintf(msg, sizeof msg,
                     "--fault corrupt_meta: needs the chaos build's driver (harness/_native/"
                     "nmm-driver_chaos, built by the same `pip install -e .`) or the coverage "
                     "driver (harness/coverage.py); this is the production driver, whose "
                     "allocator has no way to damage its own books");
            return msg;
        }
#endif
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
