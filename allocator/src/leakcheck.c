/* leakcheck.c — the leak report of the default heap at exit, as LSan's: the
 * live blocks classified by reachability (roots.c) into definitely lost,
 * indirectly lost and still reachable, grouped by allocation site with their
 * sampled stacks, suppressions applied (suppress.c), written as text and JSON
 * through out.c; then the exit status (exitcode=) when leaks or detections were
 * found. Never allocates with malloc (os_map). Runs in the library destructor,
 * after the program's own destructors, outside every heap lock.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TEXT_GROUPS 100      /* lost groups listed with their stacks */
#define TEXT_REACHABLE 10    /* still-reachable groups listed (one line each) */

static const char *const category_name[] = {
    [ROOTS_LOST] = "definitely lost",
    [ROOTS_INDIRECT] = "indirectly lost",
    [ROOTS_REACHABLE] = "still reachable",
};
static const char *const category_key[] = {
    [ROOTS_LOST] = "definitely_lost",
    [ROOTS_INDIRECT] = "indirectly_lost",
    [ROOTS_REACHABLE] = "still_reachable",
};
/* Groups sort by category: lost first. */
static const uint32_t category_order[] = {[ROOTS_LOST] = 0, [ROOTS_INDIRECT] = 1,
                                          [ROOTS_REACHABLE] = 2};
static const uint8_t category_of_order[] = {ROOTS_LOST, ROOTS_INDIRECT, ROOTS_REACHABLE};

struct totals {
    uint64_t count[3], bytes[3]; /* by order: lost, indirect, reachable (unsuppressed) */
    uint64_t supp_count, supp_bytes;
};

struct check {
    struct leak_agg a;
    sym_batch_t b;
    struct totals t;
};

static bool is_lost(const struct leak_group *g)
{
    return g->category < 2;
}

/* Frames of one group (its stacks, else its site), for suppressions. */
static size_t group_frames(struct check *c, const struct leak_group *g, const sym_frame_t **out,
                           size_t max)
{
    size_t n = 0;
    for (int s = 0; s < LEAK_STACKS && g->stacks[s]; s++) {
        const uintptr_t *pcs;
        uint32_t depth = track_stack_frames(g->stacks[s], &pcs);
        for (uint32_t k = 0; k < depth && n < max; k++)
            out[n++] = sym_batch_add(&c->b, pcs[k]);
    }
    uintptr_t pc = track_site_pc(g->id);
    if (pc && n < max)
        out[n++] = sym_batch_add(&c->b, pc);
    return n;
}

static void classify(struct check *c)
{
    const sym_frame_t *frames[LEAK_STACKS * UNWIND_DEPTH + 1];
    for (size_t i = 0; i < c->a.groups; i++) {
        struct leak_group *g = &c->a.slots[i];
        if (is_lost(g)) {
            size_t n = group_frames(c, g, frames, sizeof frames / sizeof *frames);
            g->suppressed = suppress_match(frames, n) != NULL;
        }
        if (g->suppressed) {
            c->t.supp_count += g->count;
            c->t.supp_bytes += g->bytes;
        } else {
            c->t.count[g->category] += g->count;
            c->t.bytes[g->category] += g->bytes;
        }
    }
}

static void blocks_of(strbuf_t *sb, uint64_t count, uint64_t bytes)
{
    strbuf_u64(sb, bytes);
    strbuf_puts(sb, bytes == 1 ? " byte in " : " bytes in ");
    strbuf_u64(sb, count);
    strbuf_puts(sb, count == 1 ? " block" : " blocks");
}

static void site_text(strbuf_t *sb, const struct leak_group *g)
{
    strbuf_puts(sb, " allocated at ");
    if (g->id)
        track_site_format(sb, g->id, true);
    else
        strbuf_puts(sb, "an unknown site");
}

static void report_text(struct check *c, strbuf_t *sb)
{
    const struct totals *t = &c->t;
    strbuf_puts(sb, "nmm: leak report: ");
    for (int k = 0; k < 3; k++) {
        blocks_of(sb, t->count[k], t->bytes[k]);
        strbuf_putc(sb, ' ');
        strbuf_puts(sb, category_name[category_of_order[k]]);
        strbuf_puts(sb, ", ");
    }
    blocks_of(sb, t->supp_count, t->supp_bytes);
    strbuf_puts(sb, " suppressed (pid ");
    strbuf_u64(sb, (uint64_t)getpid());
    strbuf_puts(sb, ")\n");
    size_t listed = 0, reachable = 0, reachable_groups = 0;
    for (size_t i = 0; i < c->a.groups; i++) {
        const struct leak_group *g = &c->a.slots[i];
        if (g->suppressed)
            continue;
        if (!is_lost(g)) {
            reachable_groups++;
            if (reachable++ >= TEXT_REACHABLE)
                continue;
        } else if (listed++ >= TEXT_GROUPS) {
            continue;
        }
        strbuf_puts(sb, "  ");
        strbuf_puts(sb, category_name[category_of_order[g->category]]);
        strbuf_puts(sb, ": ");
        blocks_of(sb, g->count, g->bytes);
        site_text(sb, g);
        strbuf_putc(sb, '\n');
        for (int s = 0; is_lost(g) && s < LEAK_STACKS && g->stacks[s]; s++) {
            const uintptr_t *pcs;
            uint32_t depth = track_stack_frames(g->stacks[s], &pcs);
            strbuf_puts(sb, "    stack of ");
            strbuf_u64(sb, g->stack_counts[s]);
            strbuf_puts(sb, g->stack_counts[s] == 1 ? " block" : " blocks");
            strbuf_puts(sb, " (thread ");
            strbuf_u64(sb, track_context_thread(g->stacks[s]));
            strbuf_puts(sb, "):\n");
            for (uint32_t k = 0; k < depth; k++) {
                const sym_frame_t *f = sym_batch_add(&c->b, pcs[k]);
                if (f)
                    sym_frame_text(sb, k, f);
            }
        }
    }
    if (listed > TEXT_GROUPS || reachable_groups > TEXT_REACHABLE || c->a.other_count)
        strbuf_puts(sb, "  ... and more groups (the JSON report, log_format=json, has them all)\n");
}

static void json_count(strbuf_t *sb, const char *key, uint64_t count, uint64_t bytes)
{
    strbuf_puts(sb, ",\"");
    strbuf_puts(sb, key);
    strbuf_puts(sb, "\":{\"blocks\":");
    strbuf_u64(sb, count);
    strbuf_puts(sb, ",\"bytes\":");
    strbuf_u64(sb, bytes);
    strbuf_putc(sb, '}');
}

static void report_json(struct check *c, strbuf_t *sb)
{
    const struct totals *t = &c->t;
    strbuf_puts(sb, "{\"type\":\"leaks\",\"pid\":");
    strbuf_u64(sb, (uint64_t)getpid());
    for (int k = 0; k < 3; k++)
        json_count(sb, category_key[category_of_order[k]], t->count[k], t->bytes[k]);
    json_count(sb, "suppressed", t->supp_count, t->supp_bytes);
    json_count(sb, "ungrouped", c->a.other_count, c->a.other_bytes);
    strbuf_puts(sb, ",\"groups\":[");
    for (size_t i = 0; i < c->a.groups; i++) {
        const struct leak_group *g = &c->a.slots[i];
        if (i)
            strbuf_putc(sb, ',');
        strbuf_puts(sb, "{\"category\":\"");
        strbuf_puts(sb, g->suppressed ? "suppressed" : category_key[category_of_order[g->category]]);
        strbuf_puts(sb, "\",\"site\":");
        char where[320];
        strbuf_t w;
        strbuf_init(&w, where, sizeof where);
        if (g->id)
            track_site_format(&w, g->id, true);
        strbuf_json_str(sb, where);
        /* a code-address site (the malloc replacement's, a wrapper's) as a frame:
         * file:line of the allocating call even when no stack was sampled */
        uintptr_t site_pc = track_site_pc(g->id);
        const sym_frame_t *sf = site_pc ? sym_batch_add(&c->b, site_pc) : NULL;
        if (sf) {
            strbuf_puts(sb, ",\"site_frame\":");
            sym_frame_json(sb, sf);
        }
        strbuf_puts(sb, ",\"blocks\":");
        strbuf_u64(sb, g->count);
        strbuf_puts(sb, ",\"bytes\":");
        strbuf_u64(sb, g->bytes);
        strbuf_puts(sb, ",\"stacks\":[");
        for (int s = 0; s < LEAK_STACKS && g->stacks[s]; s++) {
            const uintptr_t *pcs;
            uint32_t depth = track_stack_frames(g->stacks[s], &pcs);
            strbuf_puts(sb, s ? ",{\"blocks\":" : "{\"blocks\":");
            strbuf_u64(sb, g->stack_counts[s]);
            strbuf_puts(sb, ",\"thread\":");
            strbuf_u64(sb, track_context_thread(g->stacks[s]));
            strbuf_puts(sb, ",\"frames\":[");
            for (uint32_t k = 0; k < depth; k++) {
                const sym_frame_t *f = sym_batch_add(&c->b, pcs[k]);
                if (!f)
                    continue;
                if (k)
                    strbuf_putc(sb, ',');
                sym_frame_json(sb, f);
            }
            strbuf_puts(sb, "]}");
        }
        strbuf_puts(sb, "]}");
    }
    strbuf_puts(sb, "]}\n");
}

/* Format twice: once to measure, once into a mapping of that size. */
static void emit(struct check *c, void (*fmt)(struct check *, strbuf_t *),
                 void (*out)(const char *, size_t))
{
    strbuf_t sb;
    strbuf_init(&sb, NULL, 0);
    fmt(c, &sb);
    size_t page = os_page_size(), bytes = (sb.len + 1 + page - 1) & ~(page - 1);
    char *buf = os_map(NULL, bytes);
    if (!buf)
        return;
    strbuf_init(&sb, buf, bytes);
    fmt(c, &sb);
    out(buf, sb.len < bytes ? sb.len : bytes - 1);
    os_unmap(buf, bytes);
}

static void add_group_frames(struct check *c)
{
    for (size_t i = 0; i < c->a.groups; i++) {
        const struct leak_group *g = &c->a.slots[i];
        for (int s = 0; s < LEAK_STACKS && g->stacks[s]; s++) {
            const uintptr_t *pcs;
            uint32_t depth = track_stack_frames(g->stacks[s], &pcs);
            for (uint32_t k = 0; k < depth; k++)
                sym_batch_add(&c->b, pcs[k]);
        }
        uintptr_t pc = track_site_pc(g->id);
        if (pc)
            sym_batch_add(&c->b, pc);
    }
}

/* Not inlined: its CFA (its caller's stack pointer) is where this thread's stack
 * starts to count as a root, above every frame of the check. */
NMM_NOINLINE uint64_t leakcheck_run(nmm_heap_t *heap)
{
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    nmm_stats_get(heap, &st);
    roots_set_t rs;
    if (!roots_collect(heap, &rs, st.live_blocks))
        return 0;
    if (!rs.n && !rs.missed) {
        roots_release(&rs);
        return 0;
    }
    bool locked = out_lock();
    roots_mark(&rs, (uintptr_t)__builtin_dwarf_cfa());
    struct check c;
    memset(&c, 0, sizeof c);
    if (!leaks_agg_init(&c.a, rs.n + (rs.missed ? 1 : 0))) {
        roots_release(&rs);
        out_unlock(locked);
        return 0;
    }
    for (size_t i = 0; i < rs.n; i++)
        leaks_agg_add(&c.a, rs.b[i].size, rs.b[i].id, category_order[rs.b[i].state]);
    for (size_t i = 0; i < rs.missed; i++)
        leaks_agg_add(&c.a, 0, 0, category_order[ROOTS_REACHABLE]); /* not classified */
    roots_release(&rs);
    leaks_agg_finish(&c.a);
    size_t frames = c.a.groups * (LEAK_STACKS * UNWIND_DEPTH + 1);
    if (frames > 200000)
        frames = 200000;
    if (sym_batch_init(&c.b, frames)) {
        add_group_frames(&c);
        sym_batch_resolve(&c.b, true);
    }
    classify(&c);
    uint64_t lost = c.t.count[0] + c.t.count[1];
    /* stderr hears of leaks only; a log file gets one report per process */
    if (out_text_wanted() && (lost || options_process()->log_path))
        emit(&c, report_text, out_text);
    if (out_json_wanted())
        emit(&c, report_json, out_json);
    sym_batch_free(&c.b);
    leaks_release(&c.a);
    out_unlock(locked);
    return lost;
}

/* Called once the default heap exists. Its real job is to be called: a program
 * linked with libnmm.a would otherwise leave this file (nothing else refers to
 * it) and its destructor out of the link. */
void leakcheck_arm(void)
{
}

/* At exit: the default heap's integrity sweep (exit_check=1), its leak report
 * (tracking on, leaks=1), then the exit status. Destructors of shared objects (libnmm.so, the preload library, the
 * Python extension) run after the program's own, so what is still live here was
 * never freed. Detections still pending in this thread are written first. */
__attribute__((destructor)) static void leakcheck_at_exit(void)
{
    if (!options_default_heap_configured())
        return;
    nmm_heap_t *h = nmm_default_heap();
    if (events_pending)
        events_flush_pending();
    heap_exit_check(h); /* exit_check=1: damage that never reached free(), before the leaks */
    if (events_pending)
        events_flush_pending();
    const options_process_t *o = options_process();
    uint64_t lost = heap_config(h)->tracking && o->leaks ? leakcheck_run(h) : 0;
    if ((lost || events_total(h)) && o->exitcode) {
        fflush(NULL); /* exit() would flush stdio after us; _exit does not */
        _exit((int)o->exitcode);
    }
}
