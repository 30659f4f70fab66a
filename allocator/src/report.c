/* report.c — nmm_report_json, the diagnostic report: config and level, stats with
 * peaks (every NMM_STATS_FIELDS entry), per-class occupancy and fragmentation,
 * events by kind, top leaks by site. Writes only into the caller's buffer
 * (snprintf contract) and never allocates with malloc. Any thread; the numbers
 * are a snapshot, consistent when no other thread is allocating.
 */
#include "internal.h"

#include <string.h>

#define REPORT_VERSION 1
#define REPORT_TOP_LEAKS 10

static const char *level_name(nmm_level_t level)
{
    switch (level) {
    case NMM_LEVEL_OFF: return "off";
    case NMM_LEVEL_STANDARD: return "standard";
    case NMM_LEVEL_PARANOID: return "paranoid";
    }
    return "unknown";
}

static void key(strbuf_t *sb, const char *name, bool first)
{
    if (!first)
        strbuf_putc(sb, ',');
    strbuf_json_str(sb, name);
    strbuf_putc(sb, ':');
}

static void key_u64(strbuf_t *sb, const char *name, uint64_t v, bool first)
{
    key(sb, name, first);
    strbuf_u64(sb, v);
}

static void key_ratio(strbuf_t *sb, const char *name, uint64_t num, uint64_t den)
{
    key(sb, name, false);
    strbuf_ratio(sb, num, den, 4);
}

static void report_config(strbuf_t *sb, nmm_heap_t *heap, const nmm_config_t *c)
{
    strbuf_puts(sb, "{\"level\":");
    strbuf_json_str(sb, level_name(c->level));
    key(sb, "policy", false);
    strbuf_json_str(sb, c->policy == NMM_POLICY_ABORT ? "abort" : "record");
    key_u64(sb, "limit_bytes", c->limit_bytes, false);
    key_u64(sb, "retain_bytes", c->retain_bytes, false);
    key_u64(sb, "quarantine_bytes", c->quarantine_bytes, false);
    key_u64(sb, "sweep_every_ops", c->sweep_every_ops, false);
    key_u64(sb, "guard_pages", c->guard_pages, false);
    key_u64(sb, "thread_cache", c->thread_cache, false);
    key_u64(sb, "tracking", c->tracking, false);
    key_u64(sb, "stack_sample", c->stack_sample, false);
    key_u64(sb, "event_capacity", c->event_capacity, false);
    key_u64(sb, "seed", c->seed, false);
    key(sb, "failpoints", false);
    strbuf_json_str(sb, failpoint_describe(heap));
    strbuf_putc(sb, '}');
}

static void report_stats(strbuf_t *sb, const nmm_stats_t *st)
{
    bool first = true;
    strbuf_putc(sb, '{');
#define REPORT_FIELD_(name, doc)               \
    key_u64(sb, #name, st->name, first);       \
    first = false;
    NMM_STATS_FIELDS(REPORT_FIELD_)
#undef REPORT_FIELD_
    (void)first;
    strbuf_putc(sb, '}');
}

static void report_classes(strbuf_t *sb, const nmm_stats_t *st)
{
    uint64_t free_bytes = 0, held_bytes = 0;
    bool first = true;
    strbuf_puts(sb, ",\"classes\":[");
    uint32_t n = st->class_count < NMM_MAX_CLASSES ? st->class_count : NMM_MAX_CLASSES;
    for (uint32_t i = 0; i < n; i++) {
        const nmm_class_stats_t *c = &st->classes[i];
        free_bytes += c->free_blocks * c->block_size;
        held_bytes += (c->free_blocks + c->live) * c->block_size;
        if (!c->allocs && !c->slabs && !c->live)
            continue; /* never used: keep the report readable */
        if (!first)
            strbuf_putc(sb, ',');
        first = false;
        strbuf_puts(sb, "{\"class\":");
        strbuf_u64(sb, i);
        key_u64(sb, "block_size", c->block_size, false);
        key_u64(sb, "allocs", c->allocs, false);
        key_u64(sb, "frees", c->frees, false);
        key_u64(sb, "live", c->live, false);
        key_u64(sb, "slabs", c->slabs, false);
        key_u64(sb, "free_blocks", c->free_blocks, false);
        /* occupancy = live / (live + free); fragmentation = the free share */
        key_ratio(sb, "occupancy", c->live, c->live + c->free_blocks);
        key_ratio(sb, "fragmentation", c->free_blocks, c->live + c->free_blocks);
        strbuf_putc(sb, '}');
    }
    strbuf_putc(sb, ']');
    /* Heap-wide: free bytes in slabs over slab bytes holding blocks, and the share
     * of mapped memory not holding live data. */
    strbuf_puts(sb, ",\"fragmentation\":{");
    key_u64(sb, "slab_free_bytes", free_bytes, true);
    key_ratio(sb, "slab_free_ratio", free_bytes, held_bytes);
    uint64_t unused = st->mapped_bytes > st->live_bytes ? st->mapped_bytes - st->live_bytes : 0;
    key_ratio(sb, "mapped_unused_ratio", unused, st->mapped_bytes);
    strbuf_putc(sb, '}');
}

static void report_events(strbuf_t *sb, nmm_heap_t *heap)
{
    strbuf_puts(sb, ",\"events\":{");
    key_u64(sb, "total", events_total(heap), true);
    key_u64(sb, "dropped", events_dropped(heap), false);
    strbuf_puts(sb, ",\"by_kind\":{");
    bool first = true;
    for (uint32_t k = 1; k < NMM_EV_KIND_COUNT_; k++) {
        key_u64(sb, nmm_event_kind_str(k), events_count(heap, k), first);
        first = false;
    }
    strbuf_puts(sb, "}}");
}

NMM_API size_t nmm_report_json(nmm_heap_t *heap, char *buf, size_t cap)
{
    strbuf_t sb;
    strbuf_init(&sb, buf, cap);
    if (!heap) {
        strbuf_puts(&sb, "{\"error\":\"no heap\"}");
        return sb.len;
    }
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    nmm_status_t rc = nmm_stats_get(heap, &st);
    strbuf_puts(&sb, "{\"report_version\":");
    strbuf_u64(&sb, REPORT_VERSION);
    strbuf_puts(&sb, ",\"nmm_version\":\"");
    strbuf_u64(&sb, NMM_VERSION_MAJOR);
    strbuf_putc(&sb, '.');
    strbuf_u64(&sb, NMM_VERSION_MINOR);
    strbuf_puts(&sb, "\",\"config\":");
    report_config(&sb, heap, heap_config(heap));
    strbuf_puts(&sb, ",\"stats\":");
    if (rc == NMM_OK) {
        report_stats(&sb, &st);
        report_classes(&sb, &st);
    } else {
        strbuf_puts(&sb, "null");
    }
    report_events(&sb, heap);
    strbuf_puts(&sb, ",\"top_leaks\":");
    leaks_json_top(heap, &sb, REPORT_TOP_LEAKS);
    strbuf_putc(&sb, '}');
    return sb.len;
}
