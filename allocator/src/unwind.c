/* unwind.c — call stacks of the calling thread for allocation, free and error
 * reports: libgcc's unwinder (driven by .eh_frame) and, on x86-64, a cached-rule
 * walk that does the common case without it. Never allocates, takes no lock of
 * its own (the rule cache is lock-free; libgcc finds unwind tables through
 * _dl_find_object, lock-free too), never calls back into the program. Any thread.
 *
 * Why not a frame-pointer walk: the allocator and most system libraries are
 * built without frame pointers, and a walk through them yields garbage. libgcc_s
 * is linked in (no lazy dlopen, so nothing allocates here). _Unwind_Backtrace
 * costs about 1-2 us per capture; the cached walk ~50-150 ns.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unwind.h>

struct unwind_state {
    uintptr_t *pcs;
    uint32_t n;
    uint32_t skip;     /* our own frame: unwind_capture */
    int32_t entry;     /* index of the last frame that is an allocator entry point */
};

#define STACK_SEARCH 12 /* leading frames searched for the entry point */
#define STACK_ALL (UNWIND_DEPTH + STACK_SEARCH)

/* An allocator entry point: the frames up to it are the allocator's own. The
 * malloc family (the preload library's), and alloc.c's list: the API and the
 * paths it tail-calls, since a tail call leaves no frame of its caller. */
static bool is_entry_point(uintptr_t start)
{
    static void *const entries[] = {
        (void *)nmm_validate, (void *)malloc, (void *)calloc, (void *)realloc,
        (void *)aligned_alloc, (void *)posix_memalign, (void *)free,
    };
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
        if (start == (uintptr_t)entries[i])
            return true;
    for (const void *const *f = alloc_outer_functions; *f; f++)
        if (start == (uintptr_t)*f)
            return true;
    if (copy_shim_functions)  /* the preload library's checked copies */
        for (const void *const *f = copy_shim_functions; *f; f++)
            if (start == (uintptr_t)*f)
                return true;
    return false;
}

static _Unwind_Reason_Code unwind_frame(struct _Unwind_Context *ctx, void *arg)
{
    struct unwind_state *s = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);
    if (!ip)
        return _URC_END_OF_STACK;
    if (s->skip) {
        s->skip--;
        return _URC_NO_REASON;
    }
    if (s->n < STACK_SEARCH && is_entry_point((uintptr_t)_Unwind_GetRegionStart(ctx)))
        s->entry = (int32_t)s->n;
    s->pcs[s->n++] = ip;
    return s->n >= STACK_ALL ? _URC_END_OF_STACK : _URC_NO_REASON;
}

/* The fast path: the same .eh_frame rules the unwinder reads, interpreted once
 * per return address and cached (process-wide, lock-free), then applied
 * directly. Only the plain x86-64 shapes are cached — CFA = rsp/rbp + offset,
 * return address at CFA-8, rbp unchanged or saved at CFA+k; anything else
 * (expressions, signal frames, other targets) makes the capture fall back to
 * _Unwind_Backtrace, so every frame returned is one the unwinder would return. */
#if defined(__x86_64__)
#define FAST_UNWIND 1

struct dwarf_eh_bases {
    void *tbase;
    void *dbase;
    void *func;
};
extern const void *_Unwind_Find_FDE(void *pc, struct dwarf_eh_bases *bases);

#define RULE_CACHE (1u << 12)
#define RULE_VALID (1ull << 0)
#define RULE_UNSUP (1ull << 1)  /* not a shape we interpret: use the unwinder */
#define RULE_LAST (1ull << 2)   /* no caller: the return address is undefined */
#define RULE_ENTRY (1ull << 3)  /* the function is an allocation entry point */
#define RULE_CFA_BP (1ull << 4) /* CFA is rbp-relative (else rsp-relative) */
#define RULE_BP_SAVED (1ull << 5)
#define RULE_CHECK_SHIFT 48     /* 16 bits of the pc's hash guard against torn slots */

struct rule_slot {
    _Atomic uintptr_t pc;
    _Atomic uint64_t rule; /* flags | cfa_off << 8 (int24) | bp_off << 32 (int16) | check */
};
static struct rule_slot rule_cache[RULE_CACHE];

struct frame_rule {
    uint64_t flags;
    int32_t cfa_off;
    int32_t bp_off;
};

static uint64_t uleb(const uint8_t **p, const uint8_t *end, bool *bad)
{
    uint64_t v = 0;
    unsigned shift = 0;
    while (*p < end) {
        uint8_t b = *(*p)++;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (!(b & 0x80))
            return v;
    }
    *bad = true;
    return 0;
}

static int64_t sleb(const uint8_t **p, const uint8_t *end, bool *bad)
{
    int64_t v = 0;
    unsigned shift = 0;
    while (*p < end) {
        uint8_t b = *(*p)++;
        if (shift < 64)
            v |= (int64_t)(b & 0x7f) << shift;
        shift += 7;
        if (!(b & 0x80)) {
            if (shift < 64 && (b & 0x40))
                v |= -((int64_t)1 << shift);
            return v;
        }
    }
    *bad = true;
    return 0;
}

/* Bytes an encoded pointer occupies (DW_EH_PE_*); 0 for what we do not take. */
static size_t enc_size(uint8_t enc)
{
    switch (enc & 0x0f) {
    case 0x00: return sizeof(void *); /* absptr */
    case 0x02: case 0x0a: return 2;
    case 0x03: case 0x0b: return 4;
    case 0x04: case 0x0c: return 8;
    default: return 0;
    }
}

enum { REG_BP = 6, REG_SP = 7 };
enum { BP_SAME, BP_SAVED, BP_BAD };
enum { RA_SAVED, RA_UNDEF, RA_BAD };

struct cfi_row {
    uint32_t cfa_reg;
    int64_t cfa_off;
    int bp, ra;
    int64_t bp_off, ra_off;
};

/* Run a CFA program up to (and including) the row covering target. false when
 * it uses something we do not interpret. */
static bool cfi_run(const uint8_t *p, const uint8_t *end, uintptr_t *loc, uintptr_t target,
                    uint64_t code_align, int64_t data_align, uint32_t ra_reg,
                    struct cfi_row *row, const struct cfi_row *init)
{
    struct cfi_row saved[4];
    unsigned nsaved = 0;
    bool bad = false;
    while (p < end && !bad) {
        uint8_t op = *p++;
        uint64_t reg = 0, delta = 0;
        int64_t off = 0;
        int kind = -1; /* 0 offset, 1 restore, 2 undefined, 3 same, 4 other-unsupported-if-ours */
        switch (op & 0xc0) {
        case 0x40:
            delta = op & 0x3f;
            goto advance;
        case 0x80:
            reg = op & 0x3f;
            off = (int64_t)uleb(&p, end, &bad) * data_align;
            kind = 0;
            goto regrule;
        case 0xc0:
            reg = op & 0x3f;
            kind = 1;
            goto regrule;
        }
        switch (op) {
        case 0x00: continue;
        case 0x02: if (end - p < 1) return false; delta = p[0]; p += 1; goto advance;
        case 0x03: { uint16_t d; if (end - p < 2) return false; memcpy(&d, p, 2); p += 2; delta = d; goto advance; }
        case 0x04: { uint32_t d; if (end - p < 4) return false; memcpy(&d, p, 4); p += 4; delta = d; goto advance; }
        case 0x05: reg = uleb(&p, end, &bad); off = (int64_t)uleb(&p, end, &bad) * data_align; kind = 0; goto regrule;
        case 0x06: reg = uleb(&p, end, &bad); kind = 1; goto regrule;
        case 0x07: reg = uleb(&p, end, &bad); kind = 2; goto regrule;
        case 0x08: reg = uleb(&p, end, &bad); kind = 3; goto regrule;
        case 0x09: reg = uleb(&p, end, &bad); (void)uleb(&p, end, &bad); kind = 4; goto regrule;
        case 0x0a:
            if (nsaved == 4) return false;
            saved[nsaved++] = *row;
            continue;
        case 0x0b:
            if (nsaved == 0) return false;
            *row = saved[--nsaved];
            continue;
        case 0x0c: row->cfa_reg = (uint32_t)uleb(&p, end, &bad); row->cfa_off = (int64_t)uleb(&p, end, &bad); continue;
        case 0x0d: row->cfa_reg = (uint32_t)uleb(&p, end, &bad); continue;
        case 0x0e: row->cfa_off = (int64_t)uleb(&p, end, &bad); continue;
        case 0x10: { reg = uleb(&p, end, &bad); uint64_t n = uleb(&p, end, &bad); if (bad || n > (uint64_t)(end - p)) return false; p += n; kind = 4; goto regrule; }
        case 0x11: reg = uleb(&p, end, &bad); off = sleb(&p, end, &bad) * data_align; kind = 0; goto regrule;
        case 0x12: row->cfa_reg = (uint32_t)uleb(&p, end, &bad); row->cfa_off = sleb(&p, end, &bad) * data_align; continue;
        case 0x13: row->cfa_off = sleb(&p, end, &bad) * data_align; continue;
        case 0x14: reg = uleb(&p, end, &bad); (void)uleb(&p, end, &bad); kind = 4; goto regrule;
        case 0x15: reg = uleb(&p, end, &bad); (void)sleb(&p, end, &bad); kind = 4; goto regrule;
        case 0x16: { reg = uleb(&p, end, &bad); uint64_t n = uleb(&p, end, &bad); if (bad || n > (uint64_t)(end - p)) return false; p += n; kind = 4; goto regrule; }
        case 0x2e: (void)uleb(&p, end, &bad); continue;
        case 0x2f: reg = uleb(&p, end, &bad); off = -(int64_t)uleb(&p, end, &bad) * data_align; kind = 0; goto regrule;
        default: return false; /* set_loc, def_cfa_expression, vendor ops */
        }
    advance:
        if (*loc + delta * code_align > target)
            return !bad;
        *loc += delta * code_align;
        continue;
    regrule:
        if (reg == REG_BP) {
            if (kind == 0) { row->bp = BP_SAVED; row->bp_off = off; }
            else if (kind == 1) { row->bp = init ? init->bp : BP_SAME; row->bp_off = init ? init->bp_off : 0; }
            else if (kind == 3) row->bp = BP_SAME;
            else row->bp = BP_BAD;
        } else if (reg == ra_reg) {
            if (kind == 0) { row->ra = RA_SAVED; row->ra_off = off; }
            else if (kind == 1) { row->ra = init ? init->ra : RA_BAD; row->ra_off = init ? init->ra_off : 0; }
            else if (kind == 2) row->ra = RA_UNDEF;
            else row->ra = RA_BAD;
        } else if (reg == REG_SP && kind != 3 && kind != 1) {
            return false;
        }
    }
    return !bad;
}

/* The unwind rule at target (pc itself for the first frame, pc-1 for a return
 * address), read from its FDE. */
static struct frame_rule rule_compute(uintptr_t target)
{
    struct frame_rule unsup = {.flags = RULE_VALID | RULE_UNSUP};
    struct dwarf_eh_bases bases;
    const uint8_t *fde = _Unwind_Find_FDE((void *)target, &bases);
    if (!fde) /* maybe a signal trampoline: the unwinder knows those */
        return unsup;
    uint32_t flen, cie_off;
    memcpy(&flen, fde, 4);
    if (flen == 0xffffffffu || flen < 8)
        return unsup;
    memcpy(&cie_off, fde + 4, 4);
    const uint8_t *fend = fde + 4 + flen;
    const uint8_t *cie = fde + 4 - cie_off;
    uint32_t clen;
    memcpy(&clen, cie, 4);
    if (clen == 0xffffffffu || clen < 8)
        return unsup;
    const uint8_t *cend = cie + 4 + clen;
    const uint8_t *p = cie + 8;
    uint8_t version = *p++;
    const char *aug = (const char *)p;
    size_t alen = strnlen(aug, (size_t)(cend - p));
    p += alen + 1;
    bool bad = false;
    uint64_t code_align = uleb(&p, cend, &bad);
    int64_t data_align = sleb(&p, cend, &bad);
    uint32_t ra_reg = version == 1 ? *p++ : (uint32_t)uleb(&p, cend, &bad);
    uint8_t fde_enc = 0;
    const uint8_t *cie_insns = p;
    bool has_z = aug[0] == 'z';
    if (has_z) {
        uint64_t zlen = uleb(&p, cend, &bad);
        const uint8_t *zp = p;
        cie_insns = p + zlen;
        for (const char *a = aug + 1; *a; a++) {
            if (*a == 'R') {
                fde_enc = *zp++;
            } else if (*a == 'L') {
                zp++;
            } else if (*a == 'P') {
                uint8_t penc = *zp++;
                size_t n = enc_size(penc);
                if (!n)
                    return unsup;
                zp += n;
            } else {
                return unsup; /* 'S' (signal frame) and anything unknown */
            }
        }
    } else if (aug[0]) {
        return unsup;
    }
    size_t psize = enc_size(fde_enc);
    if (bad || !psize || version > 4 || cie_insns > cend || code_align == 0)
        return unsup;
    const uint8_t *fp = fde + 8 + 2 * psize;
    if (has_z) {
        uint64_t zlen = uleb(&fp, fend, &bad);
        fp += zlen;
    }
    if (bad || fp > fend)
        return unsup;

    struct cfi_row row = {.cfa_reg = REG_SP, .bp = BP_SAME, .ra = RA_BAD};
    uintptr_t loc = (uintptr_t)bases.func;
    if (!cfi_run(cie_insns, cend, &loc, UINTPTR_MAX, code_align, data_align, ra_reg, &row, NULL))
        return unsup;
    struct cfi_row init = row;
    loc = (uintptr_t)bases.func;
    if (!cfi_run(fp, fend, &loc, target, code_align, data_align, ra_reg, &row, &init))
        return unsup;

    struct frame_rule r = {.flags = RULE_VALID};
    if (is_entry_point((uintptr_t)bases.func))
        r.flags |= RULE_ENTRY;
    if (row.ra == RA_UNDEF) {
        r.flags |= RULE_LAST;
        return r;
    }
    if (row.ra != RA_SAVED || row.ra_off != -8 || row.bp == BP_BAD ||
        (row.cfa_reg != REG_SP && row.cfa_reg != REG_BP) || row.cfa_off < 8 ||
        row.cfa_off >= (1 << 23) || row.bp_off < -32768 || row.bp_off > 32767)
        return unsup;
    if (row.cfa_reg == REG_BP)
        r.flags |= RULE_CFA_BP;
    if (row.bp == BP_SAVED)
        r.flags |= RULE_BP_SAVED;
    r.cfa_off = (int32_t)row.cfa_off;
    r.bp_off = (int32_t)row.bp_off;
    return r;
}

static struct frame_rule rule_for(uintptr_t pc, bool first)
{
    uint64_t h = mix64(pc);
    struct rule_slot *s = &rule_cache[h & (RULE_CACHE - 1)];
    uint64_t check = h >> RULE_CHECK_SHIFT << RULE_CHECK_SHIFT;
    if (atomic_load_explicit(&s->pc, memory_order_acquire) == pc) {
        uint64_t w = atomic_load_explicit(&s->rule, memory_order_acquire);
        if ((w & (0xffffull << RULE_CHECK_SHIFT)) == check && (w & RULE_VALID))
            return (struct frame_rule){.flags = w & 0xff,
                                       .cfa_off = (int32_t)((int64_t)(w << 32) >> 40),
                                       .bp_off = (int16_t)(w >> 32)};
    }
    struct frame_rule r = rule_compute(first ? pc : pc - 1);
    uint64_t w = check | ((uint64_t)(uint16_t)r.bp_off << 32) |
                 ((uint64_t)((uint32_t)r.cfa_off & 0xffffffu) << 8) | r.flags;
    atomic_store_explicit(&s->pc, 0, memory_order_relaxed);
    atomic_store_explicit(&s->rule, w, memory_order_release);
    atomic_store_explicit(&s->pc, pc, memory_order_release);
    return r;
}

/* Walk from (ip, sp, bp) of the capturing frame; -1 when the unwinder must do it. */
static int fast_walk(uintptr_t ip, uintptr_t sp, uintptr_t bp, struct unwind_state *s)
{
    for (bool first = true; ip; first = false) {
        struct frame_rule r = rule_for(ip, first);
        if (r.flags & RULE_UNSUP)
            return -1;
        if (s->skip) {
            s->skip--;
        } else {
            if (s->n < STACK_SEARCH && (r.flags & RULE_ENTRY))
                s->entry = (int32_t)s->n;
            s->pcs[s->n++] = ip;
            if (s->n >= STACK_ALL)
                return 0;
        }
        if (r.flags & RULE_LAST)
            return 0;
        uintptr_t cfa = ((r.flags & RULE_CFA_BP) ? bp : sp) + (uintptr_t)(intptr_t)r.cfa_off;
        if (cfa <= sp || cfa - sp > (64u << 20))
            return -1; /* not a sane frame: leave it to the unwinder */
        ip = *(const uintptr_t *)(cfa - 8);
        if (r.flags & RULE_BP_SAVED)
            bp = *(const uintptr_t *)(cfa + (intptr_t)r.bp_off);
        sp = cfa;
    }
    return 0;
}
#endif

static NMM_NOINLINE uint32_t capture_all(uintptr_t *all, int32_t *entry)
{
    struct unwind_state s = {.pcs = all, .n = 0, .skip = 1, .entry = -1};
#ifdef FAST_UNWIND
    uintptr_t ip, sp, bp;
    __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp));
    if (fast_walk(ip, sp, bp, &s) < 0) {
        s = (struct unwind_state){.pcs = all, .n = 0, .skip = 1, .entry = -1};
        _Unwind_Backtrace(unwind_frame, &s);
    }
#else
    _Unwind_Backtrace(unwind_frame, &s);
#endif
    *entry = s.entry;
    return s.n;
}

/* The allocator's own module when it is a shared object (the preload library,
 * libnmm.so, the Python extension): [own_lo, own_hi). Found with
 * _dl_find_object, which is lock-free (this runs inside malloc); until it
 * answers (the loader's first mallocs), and when the allocator is linked into
 * the program itself, the entry-point rule alone cuts the stack. */
extern int _dl_find_object(void *address, struct dl_find_object *result) __attribute__((weak));
static uintptr_t own_lo, own_hi;
static _Atomic int own_state; /* 0 not known yet, 1 a shared object, 2 linked into the program */

static void own_module(void)
{
    struct dl_find_object o;
    if (!_dl_find_object || _dl_find_object((void *)(uintptr_t)unwind_capture, &o) != 0)
        return;
    const struct link_map *lm = o.dlfo_link_map;
    if (lm && lm->l_name && lm->l_name[0]) {
        own_lo = (uintptr_t)o.dlfo_map_start;
        own_hi = (uintptr_t)o.dlfo_map_end;
        atomic_store_explicit(&own_state, 1, memory_order_release);
    } else {
        atomic_store_explicit(&own_state, 2, memory_order_release);
    }
}

/* Index of the first frame that is not the allocator's: after the outermost
 * entry point, or (shared object) after the leading frames inside our module,
 * which also covers entry points that tail-called their slow path. */
static uint32_t first_caller_frame(const uintptr_t *all, uint32_t n, int32_t entry)
{
    uint32_t first = (uint32_t)(entry + 1);
    int st = atomic_load_explicit(&own_state, memory_order_acquire);
    if (st == 0) {
        own_module();
        st = atomic_load_explicit(&own_state, memory_order_acquire);
    }
    if (st == 1) {
        uint32_t i = 0;
        while (i < n && all[i] - own_lo < own_hi - own_lo)
            i++;
        if (i > first && i < n)
            first = i;
    }
    return first;
}

uint32_t unwind_capture(uintptr_t *pcs, uint32_t max)
{
    uintptr_t all[STACK_ALL];
    int32_t entry;
    uint32_t n = capture_all(all, &entry);
    uint32_t first = first_caller_frame(all, n, entry);
    n = n > first ? n - first : 0;
    if (n > max)
        n = max;
    memcpy(pcs, all + first, n * sizeof *pcs);
    return n;
}
