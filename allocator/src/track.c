/* track.c — allocation sites (process-wide, interned) and sampled stacks
 * (deduplicated, compact); leaks.c builds the leak report on top of them.
 * Tables are fixed-capacity mappings from os_map, filled lock-free (an entry is
 * written, then published by one CAS into the index); reads never lock. Never
 * allocates with malloc; symbols are resolved (dladdr) only when a report is
 * written. Any thread.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <unwind.h>

#define SITE_BITS 16
#define SITE_CAP (1u << SITE_BITS)  /* ids 1..SITE_CAP-1; 0 = unknown */
#define STACK_CAP (1u << 16)        /* stack ids 1..STACK_CAP-1; 0 = none */
#define STACK_DEPTH 16
#define ARENA_CHUNK (256u * 1024u)

struct site_entry {
    _Atomic(const char *) file; /* arena copy; for a code-address site, its symbol once resolved */
    int line;
    _Atomic uint32_t ready;     /* 1 once the entry is complete */
    uintptr_t pc;               /* != 0: a site named by a code address */
    uint64_t hash;
};

struct site_table {
    _Atomic uint32_t next;                /* next id to hand out */
    _Atomic uint32_t index[SITE_CAP * 2]; /* open addressing on hash: id or 0 */
    struct site_entry entries[SITE_CAP];
};

struct stack_entry {
    uint64_t hash;
    uint32_t depth;
    _Atomic uint32_t ready;
    uintptr_t pcs[STACK_DEPTH];
};

struct stack_table {
    _Atomic uint32_t next;
    _Atomic uint32_t index[STACK_CAP * 2];
    struct stack_entry entries[STACK_CAP];
};

struct arena_chunk {
    _Atomic size_t used;
    size_t size;
    char data[];
};

static _Atomic(struct site_table *) sites;
static _Atomic(struct stack_table *) stacks;
static _Atomic(struct arena_chunk *) arena;
/* Allocations until this thread's next sampled stack (alloc.c's standard fast
 * path counts it down inline while that stays above 1). */
NMM_TLS uint32_t track_countdown;

/* ------------------------------------------------------------------ tables */

static void *table_get(void *volatile_slot, size_t bytes)
{
    _Atomic(void *) *slot = volatile_slot;
    void *t = atomic_load_explicit(slot, memory_order_acquire);
    if (t)
        return t;
    size_t page = os_page_size();
    void *fresh = os_map(NULL, (bytes + page - 1) & ~(page - 1));
    if (!fresh)
        return NULL;
    void *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(slot, &expected, fresh, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        os_unmap(fresh, (bytes + page - 1) & ~(page - 1));
        return expected;
    }
    return fresh;
}

/* Copy a string into process-lifetime arena memory; NULL when out of memory. */
static const char *arena_keep(const char *s, size_t n)
{
    for (;;) {
        struct arena_chunk *c = atomic_load_explicit(&arena, memory_order_acquire);
        if (c) {
            size_t off = atomic_fetch_add(&c->used, n + 1);
            if (off + n + 1 <= c->size) {
                memcpy(c->data + off, s, n);
                c->data[off + n] = '\0';
                return c->data + off;
            }
        }
        size_t bytes = ARENA_CHUNK > n + 64 + sizeof *c ? ARENA_CHUNK : n + 64 + sizeof *c;
        size_t page = os_page_size();
        bytes = (bytes + page - 1) & ~(page - 1);
        struct arena_chunk *fresh = os_map(NULL, bytes);
        if (!fresh)
            return NULL;
        fresh->size = bytes - sizeof *fresh;
        if (!atomic_compare_exchange_strong(&arena, &c, fresh))
            os_unmap(fresh, bytes); /* someone else replaced it; retry in theirs */
        /* the old chunk stays: strings in it live for the process */
    }
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_site(const char *file, size_t n, int line, uintptr_t pc)
{
    if (pc)
        return mix64(pc ^ 0x5a5a5a5a5a5a5a5aull);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)file[i]) * 0x100000001b3ull;
    return mix64(h ^ (uint64_t)(uint32_t)line);
}

static bool site_matches(const struct site_entry *e, uint64_t h, const char *file, size_t n,
                         int line, uintptr_t pc)
{
    if (e->hash != h || e->pc != pc)
        return false;
    if (pc)
        return true;
    const char *f = atomic_load_explicit(&e->file, memory_order_acquire);
    return e->line == line && f && strncmp(f, file, n) == 0 && f[n] == '\0';
}

static nmm_site_t site_intern(const char *file, int line, uintptr_t pc)
{
    struct site_table *t = table_get(&sites, sizeof(struct site_table));
    if (!t)
        return 0;
    size_t n = file ? strlen(file) : 0;
    uint64_t h = hash_site(file, n, line, pc);
    uint32_t mask = SITE_CAP * 2 - 1;
    uint32_t mine = 0;
    for (uint32_t i = (uint32_t)h & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++) {
        uint32_t id = atomic_load_explicit(&t->index[i], memory_order_acquire);
        if (id == 0) {
            if (!mine) {
                mine = atomic_fetch_add(&t->next, 1) + 1;
                if (mine >= SITE_CAP)
                    return 0; /* table full: the site stays unknown */
                struct site_entry *e = &t->entries[mine];
                e->hash = h;
                e->line = line;
                e->pc = pc;
                const char *copy = pc ? NULL : arena_keep(file, n);
                if (!pc && !copy)
                    return 0;
                atomic_store_explicit(&e->file, copy, memory_order_relaxed);
                atomic_store_explicit(&e->ready, 1, memory_order_release);
            }
            uint32_t expected = 0;
            if (atomic_compare_exchange_strong_explicit(&t->index[i], &expected, mine,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return mine;
            id = expected; /* lost the race for this slot: look at the winner */
        }
        if (site_matches(&t->entries[id], h, file, n, line, pc)) {
            if (mine) /* our unpublished entry is orphaned; nobody knows its id */
                atomic_store_explicit(&t->entries[mine].ready, 0, memory_order_relaxed);
            return id;
        }
    }
    return 0;
}

NMM_API nmm_site_t nmm_site(nmm_heap_t *heap, const char *file, int line)
{
    (void)heap; /* ids are process-wide */
    if (!file)
        return 0;
    return site_intern(file, line, 0);
}

nmm_site_t track_site_for_pc(uintptr_t pc)
{
    return pc ? site_intern(NULL, 0, pc) : 0;
}

static const struct site_entry *site_get(nmm_site_t site)
{
    struct site_table *t = atomic_load_explicit(&sites, memory_order_acquire);
    if (!t || site == 0 || site >= SITE_CAP)
        return NULL;
    const struct site_entry *e = &t->entries[site];
    return atomic_load_explicit(&e->ready, memory_order_acquire) ? e : NULL;
}

/* "sym+0x1c (module)" for a code address; dladdr does not allocate. */
void track_format_pc(strbuf_t *sb, uintptr_t pc)
{
    Dl_info info;
    if (dladdr((void *)pc, &info) && info.dli_fname) {
        const char *mod = strrchr(info.dli_fname, '/');
        mod = mod ? mod + 1 : info.dli_fname;
        if (info.dli_sname && info.dli_saddr) {
            strbuf_puts(sb, info.dli_sname);
            strbuf_putc(sb, '+');
            strbuf_hex(sb, pc - (uintptr_t)info.dli_saddr);
        } else {
            strbuf_hex(sb, pc - (uintptr_t)info.dli_fbase);
        }
        strbuf_puts(sb, " (");
        strbuf_puts(sb, *mod ? mod : "main program");
        strbuf_putc(sb, ')');
        return;
    }
    strbuf_puts(sb, "pc ");
    strbuf_hex(sb, pc);
}

/* The name of a code-address site, resolved once and kept in the arena. */
static const char *site_symbol(struct site_entry *e)
{
    const char *name = atomic_load_explicit(&e->file, memory_order_acquire);
    if (name)
        return name;
    char buf[256];
    strbuf_t sb;
    strbuf_init(&sb, buf, sizeof buf);
    track_format_pc(&sb, e->pc);
    const char *kept = arena_keep(buf, sb.len < sizeof buf ? sb.len : sizeof buf - 1);
    const char *expected = NULL;
    if (kept && !atomic_compare_exchange_strong(&e->file, &expected, kept))
        return expected;
    return kept;
}

NMM_API nmm_status_t nmm_site_info(nmm_site_t site, const char **file, int *line)
{
    const struct site_entry *e = site_get(site);
    if (!e)
        return NMM_E_INVALID_ARGUMENT;
    if (file)
        *file = e->pc ? site_symbol((struct site_entry *)e)
                      : atomic_load_explicit(&e->file, memory_order_acquire);
    if (line)
        *line = e->line;
    return NMM_OK;
}

void track_site_format(strbuf_t *sb, nmm_site_t site, bool symbolize)
{
    struct site_entry *e = (struct site_entry *)site_get(site);
    if (!e) {
        strbuf_putc(sb, '?');
        return;
    }
    if (!e->pc) {
        strbuf_puts(sb, atomic_load_explicit(&e->file, memory_order_acquire));
        strbuf_putc(sb, ':');
        strbuf_i64(sb, e->line);
        return;
    }
    const char *name = symbolize ? site_symbol(e)
                                 : atomic_load_explicit(&e->file, memory_order_acquire);
    if (name) {
        strbuf_puts(sb, name);
    } else {
        strbuf_puts(sb, "pc ");
        strbuf_hex(sb, e->pc);
    }
}

/* ------------------------------------------------------------------ stacks */

/* The unwinder (libgcc's, driven by .eh_frame) rather than a frame-pointer walk:
 * the allocator and most system libraries are built without frame pointers, and
 * a walk through them yields garbage. libgcc_s is linked in (no lazy dlopen, so
 * nothing allocates here) and finds unwind tables lock-free (_dl_find_object).
 * It costs about 1-2 us per capture, hence the sampling and the cached-rule
 * walk below, which does the common case without it. */
struct unwind_state {
    uintptr_t *pcs;
    uint32_t n;
    uint32_t skip;     /* our own frames: stack_capture, stack_sample_now, track_on_alloc */
    int32_t entry;     /* index of the last frame that is an allocation entry point */
};

#define STACK_SEARCH 8 /* leading frames searched for the entry point */

/* An allocation entry point: the frames up to it are the allocator's own. (An
 * entry point that tail-calls its slow path leaves that frame instead; leaks
 * reports drop such leading frames when the allocator is a shared library.) */
static bool is_entry_point(uintptr_t start)
{
    return start == (uintptr_t)nmm_alloc || start == (uintptr_t)nmm_calloc ||
           start == (uintptr_t)nmm_realloc || start == (uintptr_t)nmm_aligned_alloc ||
           start == (uintptr_t)malloc || start == (uintptr_t)calloc ||
           start == (uintptr_t)realloc || start == (uintptr_t)aligned_alloc ||
           start == (uintptr_t)posix_memalign;
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
    return s->n >= STACK_DEPTH + STACK_SEARCH ? _URC_END_OF_STACK : _URC_NO_REASON;
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
            if (s->n >= STACK_DEPTH + STACK_SEARCH)
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

static NMM_NOINLINE uint32_t stack_capture(uintptr_t *pcs)
{
    uintptr_t all[STACK_DEPTH + STACK_SEARCH];
    struct unwind_state s = {.pcs = all, .n = 0, .skip = 3, .entry = -1};
#ifdef FAST_UNWIND
    uintptr_t ip, sp, bp;
    __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp));
    if (fast_walk(ip, sp, bp, &s) < 0) {
        s = (struct unwind_state){.pcs = all, .n = 0, .skip = 3, .entry = -1};
        _Unwind_Backtrace(unwind_frame, &s);
    }
#else
    _Unwind_Backtrace(unwind_frame, &s);
#endif
    uint32_t first = (uint32_t)(s.entry + 1);
    uint32_t n = s.n > first ? s.n - first : 0;
    if (n > STACK_DEPTH)
        n = STACK_DEPTH;
    memcpy(pcs, all + first, n * sizeof *pcs);
    return n;
}

static uint32_t stack_intern(const uintptr_t *pcs, uint32_t depth)
{
    struct stack_table *t = table_get(&stacks, sizeof(struct stack_table));
    if (!t || !depth)
        return 0;
    uint64_t h = depth;
    for (uint32_t i = 0; i < depth; i++)
        h = mix64(h ^ pcs[i]);
    uint32_t mask = STACK_CAP * 2 - 1;
    uint32_t mine = 0;
    for (uint32_t i = (uint32_t)h & mask, probes = 0; probes <= mask; i = (i + 1) & mask, probes++) {
        uint32_t id = atomic_load_explicit(&t->index[i], memory_order_acquire);
        if (id == 0) {
            if (!mine) {
                mine = atomic_fetch_add(&t->next, 1) + 1;
                if (mine >= STACK_CAP)
                    return 0;
                struct stack_entry *e = &t->entries[mine];
                e->hash = h;
                e->depth = depth;
                memcpy(e->pcs, pcs, depth * sizeof *pcs);
                atomic_store_explicit(&e->ready, 1, memory_order_release);
            }
            uint32_t expected = 0;
            if (atomic_compare_exchange_strong_explicit(&t->index[i], &expected, mine,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire))
                return mine;
            id = expected;
        }
        const struct stack_entry *e = &t->entries[id];
        if (e->hash == h && e->depth == depth && memcmp(e->pcs, pcs, depth * sizeof *pcs) == 0) {
            if (mine)
                atomic_store_explicit(&t->entries[mine].ready, 0, memory_order_relaxed);
            return id;
        }
    }
    return 0;
}

static NMM_NOINLINE uint32_t stack_sample_now(void)
{
    uintptr_t pcs[STACK_DEPTH];
    uint32_t depth = stack_capture(pcs);
    return stack_intern(pcs, depth);
}

uint32_t track_on_alloc(nmm_heap_t *heap, nmm_site_t site)
{
    if (site >= SITE_CAP)
        site = 0;
    uint32_t every = heap_config(heap)->stack_sample;
    if (!every)
        return site;
    uint32_t c = track_countdown;
    if (c > every)
        c = every;
    if (c > 1) {
        track_countdown = c - 1;
        return site;
    }
    track_countdown = every;
    return site | (stack_sample_now() << SITE_BITS);
}

void track_decode(uint32_t id, nmm_site_t *site, uint32_t *stack)
{
    if (site)
        *site = id & (SITE_CAP - 1);
    if (stack)
        *stack = id >> SITE_BITS;
}

uint32_t track_stack_frames(uint32_t stack, const uintptr_t **pcs)
{
    *pcs = NULL;
    struct stack_table *t = atomic_load_explicit(&stacks, memory_order_acquire);
    if (!t || stack == 0 || stack >= STACK_CAP)
        return 0;
    const struct stack_entry *e = &t->entries[stack];
    if (!atomic_load_explicit(&e->ready, memory_order_acquire))
        return 0;
    *pcs = e->pcs;
    return e->depth;
}
