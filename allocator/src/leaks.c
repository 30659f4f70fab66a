/* leaks.c — grouping of live blocks by site (largest first, with the sampled
 * stacks of each site, the same call path from several threads merged), and
 * nmm_leaks_report: every live block, text and JSON. leakcheck.c builds the
 * at-exit report (reachability, suppressions) on the same groups. Memory for the
 * aggregation and the text comes from os_map, never malloc; symbols are
 * resolved here, at report time. Any thread; the heap's own locks (taken by
 * heap_foreach_live) make the snapshot consistent per size class.
 */
#include "internal.h"

#include <string.h>
#include <unistd.h>

void leaks_agg_add(struct leak_agg *a, size_t requested, uint32_t id, uint32_t category)
{
    uint32_t stack;
    track_decode(id, &id, &stack);
    uint64_t stack_hash = stack ? track_stack_hash(stack) : 0;
    a->total_count++;
    a->total_bytes += requested;
    size_t mask = a->cap - 1;
    uint64_t key = (uint64_t)id | (uint64_t)category << 32;
    for (size_t i = mix64(key) & mask, probes = 0; probes < a->cap; i = (i + 1) & mask, probes++) {
        struct leak_group *g = &a->slots[i];
        if (!g->used) {
            if (a->groups * 4 >= a->cap * 3)
                break; /* keep probing short: the rest goes to "other" */
            g->used = 1;
            g->id = id;
            g->category = category;
            a->groups++;
        }
        if (g->id == id && g->category == category) {
            g->count++;
            g->bytes += requested;
            for (int k = 0; stack && k < LEAK_STACKS; k++) {
                if (g->stacks[k] == 0) {
                    g->stacks[k] = stack;
                    g->stack_hashes[k] = stack_hash;
                }
                if (g->stack_hashes[k] == stack_hash) { /* the same frames, any thread */
                    g->stack_counts[k]++;
                    break;
                }
            }
            return;
        }
    }
    a->other_count++;
    a->other_bytes += requested;
}

static void leak_visit(void *ctx, const void *ptr, size_t requested, uint32_t id)
{
    (void)ptr;
    leaks_agg_add(ctx, requested, id, 0);
}

static bool group_before(const struct leak_group *x, const struct leak_group *y)
{
    if (x->category != y->category)
        return x->category < y->category;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes;
    if (x->count != y->count)
        return x->count > y->count;
    return x->id < y->id;
}

/* Heap sort (qsort may malloc): largest bytes first. */
static void sift(struct leak_group *g, size_t n, size_t i)
{
    for (;;) {
        size_t m = i, l = 2 * i + 1, r = l + 1;
        if (l < n && group_before(&g[m], &g[l]))
            m = l;
        if (r < n && group_before(&g[m], &g[r]))
            m = r;
        if (m == i)
            return;
        struct leak_group t = g[i];
        g[i] = g[m];
        g[m] = t;
        i = m;
    }
}

static void sort_groups(struct leak_group *g, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(g, n, i);
    for (size_t end = n; end > 1; end--) {
        struct leak_group t = g[0];
        g[0] = g[end - 1];
        g[end - 1] = t;
        sift(g, end - 1, 0);
    }
}

bool leaks_agg_init(struct leak_agg *a, size_t expect)
{
    memset(a, 0, sizeof *a);
    /* Room for every group expect blocks can make at under 50% load, up to 2^15
     * slots: leaks_agg_finish reads every slot, and a fixed 2^15 (3 MiB) cost each
     * short process's exit report ~800 page faults of untouched zero pages, more
     * than all the rest of it (git add under tracking: 1,561 faults, glibc 188). */
    a->cap = 64;
    while (a->cap < (1u << 15) && a->cap < 2 * expect)
        a->cap <<= 1;
    size_t page = os_page_size();
    a->map_bytes = (a->cap * sizeof(struct leak_group) + page - 1) & ~(page - 1);
    a->slots = os_map(NULL, a->map_bytes);
    return a->slots != NULL;
}

void leaks_agg_finish(struct leak_agg *a)
{
    size_t k = 0;
    for (size_t i = 0; i < a->cap; i++)
        if (a->slots[i].used)
            a->slots[k++] = a->slots[i];
    sort_groups(a->slots, k);
    a->groups = k;
    for (size_t i = 0; i < k; i++) { /* stacks by count, most frequent first */
        struct leak_group *g = &a->slots[i];
        for (int x = 1; x < LEAK_STACKS; x++)
            for (int y = x; y > 0 && g->stack_counts[y] > g->stack_counts[y - 1]; y--) {
                uint32_t ts = g->stacks[y], tc = g->stack_counts[y];
                uint64_t th = g->stack_hashes[y];
                g->stacks[y] = g->stacks[y - 1];
                g->stack_counts[y] = g->stack_counts[y - 1];
                g->stack_hashes[y] = g->stack_hashes[y - 1];
                g->stacks[y - 1] = ts;
                g->stack_counts[y - 1] = tc;
                g->stack_hashes[y - 1] = th;
            }
    }
}

static bool leaks_collect(nmm_heap_t *heap, struct leak_agg *a)
{
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    nmm_stats_get(heap, &st);
    if (!leaks_agg_init(a, st.live_blocks + st.live_blocks / 4 + 16)) /* a few more may come */
        return false;
    heap_foreach_live(heap, leak_visit, a);
    leaks_agg_finish(a);
    return true;
}

void leaks_release(struct leak_agg *a)
{
    if (a->slots)
        os_unmap(a->slots, a->map_bytes);
    a->slots = NULL;
}

static void format_site_text(strbuf_t *sb, nmm_site_t site)
{
    if (site)
        track_site_format(sb, site, true);
    else
        strbuf_puts(sb, "an unknown site");
}

static void leaks_text(struct leak_agg *a, strbuf_t *sb, size_t top)
{
    strbuf_puts(sb, "nmm: leak report: ");
    strbuf_u64(sb, a->total_count);
    strbuf_puts(sb, a->total_count == 1 ? " live block, " : " live blocks, ");
    strbuf_u64(sb, a->total_bytes);
    strbuf_puts(sb, " bytes");
    if (a->total_count) {
        strbuf_puts(sb, " in ");
        strbuf_u64(sb, a->groups);
        strbuf_puts(sb, a->groups == 1 ? " group" : " groups, largest first");
    }
    strbuf_putc(sb, '\n');
    for (size_t i = 0; i < a->groups && i < top; i++) {
        const struct leak_group *g = &a->slots[i];
        nmm_site_t site = g->id;
        strbuf_puts(sb, "  ");
        strbuf_u64(sb, g->bytes);
        strbuf_puts(sb, " bytes in ");
        strbuf_u64(sb, g->count);
        strbuf_puts(sb, g->count == 1 ? " block" : " blocks");
        strbuf_puts(sb, " allocated at ");
        format_site_text(sb, site);
        strbuf_putc(sb, '\n');
        for (int s = 0; s < LEAK_STACKS && g->stacks[s]; s++) {
            const uintptr_t *pcs;
            uint32_t depth = track_stack_frames(g->stacks[s], &pcs);
            strbuf_puts(sb, "    stack of ");
            strbuf_u64(sb, g->stack_counts[s]);
            strbuf_puts(sb, g->stack_counts[s] == 1 ? " sampled block:\n" : " sampled blocks:\n");
            for (uint32_t f = 0, k = 0; f < depth; f++, k++) {
                strbuf_puts(sb, "      #");
                strbuf_u64(sb, k);
                strbuf_putc(sb, ' ');
                track_format_pc(sb, pcs[f]);
                strbuf_putc(sb, '\n');
            }
        }
    }
    if (a->groups > top || a->other_count) {
        strbuf_puts(sb, "  ... and more groups not shown\n");
    }
}

static void json_frames(strbuf_t *sb, uint32_t stack)
{
    const uintptr_t *pcs;
    uint32_t depth = track_stack_frames(stack, &pcs);
    strbuf_putc(sb, '[');
    for (uint32_t f = 0, k = 0; f < depth; f++, k++) {
        char fr[256];
        strbuf_t fb;
        strbuf_init(&fb, fr, sizeof fr);
        track_format_pc(&fb, pcs[f]);
        if (k)
            strbuf_putc(sb, ',');
        strbuf_json_str(sb, fr);
    }
    strbuf_putc(sb, ']');
}

static void leaks_json_groups(struct leak_agg *a, strbuf_t *sb, size_t top)
{
    strbuf_putc(sb, '[');
    for (size_t i = 0; i < a->groups && i < top; i++) {
        const struct leak_group *g = &a->slots[i];
        nmm_site_t site = g->id;
        char where[320];
        strbuf_t w;
        strbuf_init(&w, where, sizeof where);
        if (site)
            track_site_format(&w, site, true);
        const char *file = NULL;
        int line = 0;
        nmm_site_info(site, &file, &line);
        if (i)
            strbuf_putc(sb, ',');
        strbuf_puts(sb, "{\"site\":");
        strbuf_json_str(sb, site ? where : "");
        strbuf_puts(sb, ",\"file\":");
        strbuf_json_str(sb, file ? file : "");
        strbuf_puts(sb, ",\"line\":");
        strbuf_i64(sb, line);
        strbuf_puts(sb, ",\"count\":");
        strbuf_u64(sb, g->count);
        strbuf_puts(sb, ",\"bytes\":");
        strbuf_u64(sb, g->bytes);
        /* "stack": the most frequent sampled stack; "stacks": all kept, with counts */
        strbuf_puts(sb, ",\"stack\":");
        json_frames(sb, g->stacks[0]);
        strbuf_puts(sb, ",\"stacks\":[");
        for (int s = 0; s < LEAK_STACKS && g->stacks[s]; s++) {
            strbuf_puts(sb, s ? ",{\"count\":" : "{\"count\":");
            strbuf_u64(sb, g->stack_counts[s]);
            strbuf_puts(sb, ",\"frames\":");
            json_frames(sb, g->stacks[s]);
            strbuf_putc(sb, '}');
        }
        strbuf_puts(sb, "]}");
    }
    strbuf_putc(sb, ']');
}

static void leaks_json(struct leak_agg *a, strbuf_t *sb)
{
    strbuf_puts(sb, "{\"live_blocks\":");
    strbuf_u64(sb, a->total_count);
    strbuf_puts(sb, ",\"live_bytes\":");
    strbuf_u64(sb, a->total_bytes);
    strbuf_puts(sb, ",\"groups\":");
    leaks_json_groups(a, sb, SIZE_MAX);
    strbuf_puts(sb, ",\"other\":{\"count\":");
    strbuf_u64(sb, a->other_count);
    strbuf_puts(sb, ",\"bytes\":");
    strbuf_u64(sb, a->other_bytes);
    strbuf_puts(sb, "}}");
}

NMM_API size_t nmm_leaks_report(nmm_heap_t *heap, int format, char *buf, size_t cap)
{
    strbuf_t sb;
    strbuf_init(&sb, buf, cap);
    struct leak_agg a;
    if (!heap || !leaks_collect(heap, &a)) {
        strbuf_puts(&sb, format ? "{\"error\":\"out of memory\"}" : "nmm: leak report: out of memory\n");
        return sb.len;
    }
    if (format)
        leaks_json(&a, &sb);
    else
        leaks_text(&a, &sb, SIZE_MAX);
    leaks_release(&a);
    return sb.len;
}

void leaks_json_top(nmm_heap_t *heap, strbuf_t *sb, size_t top)
{
    struct leak_agg a;
    if (!leaks_collect(heap, &a)) {
        strbuf_puts(sb, "[]");
        return;
    }
    leaks_json_groups(&a, sb, top);
    leaks_release(&a);
}

void leaks_write(nmm_heap_t *heap, int fd)
{
    struct leak_agg a;
    if (!leaks_collect(heap, &a))
        return;
    if (!a.total_count) { /* nothing leaked: nothing to say */
        leaks_release(&a);
        return;
    }
    strbuf_t sb;
    strbuf_init(&sb, NULL, 0);
    leaks_text(&a, &sb, 50); /* measure */
    size_t page = os_page_size();
    size_t bytes = (sb.len + 1 + page - 1) & ~(page - 1);
    char *out = os_map(NULL, bytes);
    if (out) {
        strbuf_init(&sb, out, bytes);
        leaks_text(&a, &sb, 50);
        out_write_all(fd, out, sb.len < bytes ? sb.len : bytes - 1);
        os_unmap(out, bytes);
    }
    leaks_release(&a);
}
