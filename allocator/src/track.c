/* track.c — allocation sites (process-wide, interned) and sampled stacks
 * (deduplicated, compact; captured by unwind.c); leaks.c builds the leak report
 * on top of them.
 * Tables are fixed-capacity mappings from os_map, filled lock-free (an entry is
 * written, then published by one CAS into the index); reads never lock. Never
 * allocates with malloc; symbols are resolved (dladdr) only when a report is
 * written. Any thread.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SITE_BITS TRACK_SITE_BITS
#define SITE_CAP (1u << SITE_BITS)  /* ids 1..SITE_CAP-1; 0 = unknown */
#define STACK_CAP (1u << 16)        /* stack ids 1..STACK_CAP-1; 0 = none */
#define STACK_DEPTH UNWIND_DEPTH
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

/* A context: a stack and the thread that was running it. Interned together
 * (so an id says "thread T here"); pc_hash covers the frames alone, for leak
 * reports that merge the same call path from several threads. */
struct stack_entry {
    uint64_t hash;     /* frames and thread */
    uint64_t pc_hash;  /* frames only */
    uint32_t depth;
    uint32_t tid;
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

NMM_API nmm_site_t nmm_site_for_pc(const void *pc)
{
    return track_site_for_pc((uintptr_t)pc);
}

static const struct site_entry *site_get(nmm_site_t site)
{
    struct site_table *t = atomic_load_explicit(&sites, memory_order_acquire);
    if (!t || site == 0 || site >= SITE_CAP)
        return NULL;
    const struct site_entry *e = &t->entries[site];
    return atomic_load_explicit(&e->ready, memory_order_acquire) ? e : NULL;
}

/* "sym+0x1c (module)" for a code address (symbolize.c: the symbol table,
 * the call instruction before a return address). */
void track_format_pc(strbuf_t *sb, uintptr_t pc)
{
    sym_describe(sb, pc);
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

uintptr_t track_site_pc(nmm_site_t site)
{
    const struct site_entry *e = site_get(site);
    return e ? e->pc : 0;
}

bool track_site_is_pc(nmm_site_t site)
{
    const struct site_entry *e = site_get(site);
    return e && e->pc;
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

static uint64_t hash_frames(const uintptr_t *pcs, uint32_t depth)
{
    uint64_t h = depth;
    for (uint32_t i = 0; i < depth; i++)
        h = mix64(h ^ pcs[i]);
    return h;
}

#ifdef NMM_CHAOS
/* The thread's part of a stack's hash in the chaos build: a number handed out in the
 * order threads first intern a stack (under the controlled scheduler, a function of the
 * seed), not the kernel's tid, which differs from run to run: it moved where a lookup
 * starts probing, so how many atomic loads (yield points) it made, and one seed gave
 * two schedules. The entry keeps the real tid. */
static uint32_t stack_hash_thread(uint32_t tid)
{
    static _Atomic uint32_t handed_out;
    static __thread uint32_t mine;
    (void)tid;
    if (!mine)
        mine = atomic_fetch_add_explicit(&handed_out, 1, memory_order_relaxed) + 1;
    return mine;
}
#else
#define stack_hash_thread(tid) (tid)
#endif

static uint32_t stack_intern(const uintptr_t *pcs, uint32_t depth, uint32_t tid)
{
    struct stack_table *t = table_get(&stacks, sizeof(struct stack_table));
    if (!t || !depth)
        return 0;
    uint64_t ph = hash_frames(pcs, depth);
    uint64_t h = mix64(ph ^ stack_hash_thread(tid));
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
                e->pc_hash = ph;
                e->depth = depth;
                e->tid = tid;
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
        if (e->hash == h && e->depth == depth && e->tid == tid &&
            memcmp(e->pcs, pcs, depth * sizeof *pcs) == 0) {
            if (mine)
                atomic_store_explicit(&t->entries[mine].ready, 0, memory_order_relaxed);
            return id;
        }
    }
    return 0;
}

NMM_NOINLINE uint32_t track_context(void)
{
    uintptr_t pcs[STACK_DEPTH];
    uint32_t depth = unwind_capture(pcs, STACK_DEPTH);
    return stack_intern(pcs, depth, os_thread_id());
}

uint32_t track_on_alloc(nmm_heap_t *heap, nmm_site_t site)
{
    roots_register_thread(); /* once per thread: where its stack is, for leak reports */
    if (site >= SITE_CAP)
        site = 0;
    uint32_t every = heap_stack_every(heap, site);
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
    return site | (track_context() << SITE_BITS);
}

/* ------------------------------------------------------------------ free records */

/* The context of each block's last free, by address: one word per slot,
 * (address >> 4) << 16 | context, direct-mapped (a colliding free overwrites;
 * a report then says the free stack was not kept). Written by tracked frees,
 * read by reports of double frees and uses after free. */
#define FREE_BITS 20
static _Atomic(_Atomic uint64_t *) free_records;

static _Atomic uint64_t *free_slot(uintptr_t p, bool make)
{
    _Atomic uint64_t *t = atomic_load_explicit(&free_records, memory_order_acquire);
    if (!t && make)
        t = table_get(&free_records, sizeof(uint64_t) << FREE_BITS);
    return t ? &t[mix64(p) >> (64 - FREE_BITS)] : NULL;
}

void track_note_free(const void *p, uint32_t ctx)
{
    _Atomic uint64_t *slot = free_slot((uintptr_t)p, true);
    if (slot && ctx)
        atomic_store_explicit(slot, ((uint64_t)(uintptr_t)p >> 4) << 16 | ctx,
                              memory_order_relaxed);
}

uint32_t track_free_context(const void *p)
{
    _Atomic uint64_t *slot = free_slot((uintptr_t)p, false);
    if (!slot)
        return 0;
    uint64_t w = atomic_load_explicit(slot, memory_order_relaxed);
    return w >> 16 == (uint64_t)(uintptr_t)p >> 4 ? (uint32_t)(w & 0xffff) : 0;
}

void track_decode(uint32_t id, nmm_site_t *site, uint32_t *stack)
{
    if (site)
        *site = id & (SITE_CAP - 1);
    if (stack)
        *stack = id >> SITE_BITS;
}

static const struct stack_entry *stack_get(uint32_t stack)
{
    struct stack_table *t = atomic_load_explicit(&stacks, memory_order_acquire);
    if (!t || stack == 0 || stack >= STACK_CAP)
        return NULL;
    const struct stack_entry *e = &t->entries[stack];
    return atomic_load_explicit(&e->ready, memory_order_acquire) ? e : NULL;
}

uint32_t track_stack_frames(uint32_t stack, const uintptr_t **pcs)
{
    const struct stack_entry *e = stack_get(stack);
    *pcs = e ? e->pcs : NULL;
    return e ? e->depth : 0;
}

uint32_t track_context_thread(uint32_t stack)
{
    const struct stack_entry *e = stack_get(stack);
    return e ? e->tid : 0;
}

uint64_t track_stack_hash(uint32_t stack)
{
    const struct stack_entry *e = stack_get(stack);
    return e ? e->pc_hash : 0;
}
