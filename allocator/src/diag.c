/* diag.c — the error report of one detection, as a person reads it: the summary
 * line (kind, address, size, how far the damage reaches, sites, thread), then
 * the stacks — of the call that found it, of the block's free (for a freed
 * block) and of its allocation — each frame symbolized; and the same as one
 * JSON line (log_path with log_format=json). Written through out.c, never
 * allocates with malloc (os_map). Called outside heap locks (the preload's
 * pending flush) or on the way to abort(). Any thread; one report at a time.
 */
#include "internal.h"

#include <string.h>
#include <unistd.h>

static const char *const invalid_reason_names[] = {
    [NMM_INVALID_UNKNOWN] = NULL,
    [NMM_INVALID_WILD] = "wild pointer",
    [NMM_INVALID_FOREIGN_HEAP] = "block of another heap",
    [NMM_INVALID_INTERIOR] = "interior pointer",
    [NMM_INVALID_UNMAPPED] = "unused heap memory",
    [NMM_INVALID_FREED] = "freed block",
};

/* What makes (index 0) and frees (index 1) a block of each nmm_family_t. */
static const char *const family_calls[3][2] = {
    {"malloc", "free"},
    {"operator new", "operator delete"},
    {"operator new[]", "operator delete[]"},
};

static const char *invalid_reason(const nmm_event_t *ev)
{
    if ((ev->kind == NMM_EV_INVALID_FREE || ev->kind == NMM_EV_INVALID_REALLOC ||
         ev->kind == NMM_EV_INVALID_POINTER) &&
        ev->detail < sizeof invalid_reason_names / sizeof *invalid_reason_names)
        return invalid_reason_names[ev->detail];
    return NULL;
}

static void put_shift(strbuf_t *sb, uint32_t shift)
{
    if (shift) {
        strbuf_puts(sb, "alignment ");
        strbuf_u64(sb, (uint64_t)1 << (shift & 63));
    } else {
        strbuf_puts(sb, "the default alignment");
    }
}

/* " (allocated by operator new, freed by free)", " (operator delete given size 24)" */
static void format_mismatch(strbuf_t *sb, const nmm_event_t *ev)
{
    if (ev->kind == NMM_EV_ALLOC_DEALLOC_MISMATCH) {
        uint32_t made = ev->detail & 0xFF, freed = (ev->detail >> 8) & 0xFF;
        if (made > 2 || freed > 2)
            return;
        strbuf_puts(sb, " (allocated by ");
        strbuf_puts(sb, family_calls[made][0]);
        strbuf_puts(sb, ", freed by ");
        strbuf_puts(sb, family_calls[freed][1]);
        strbuf_putc(sb, ')');
    } else if (ev->kind == NMM_EV_DELETE_SIZE_MISMATCH) {
        uint32_t have = ev->extra & 0xFF, want = (ev->extra >> 8) & 0xFF;
        strbuf_puts(sb, " (");
        if (ev->detail != UINT32_MAX && ev->detail != ev->size) {
            strbuf_puts(sb, "delete given size ");
            strbuf_u64(sb, ev->detail);
            if (have != want)
                strbuf_puts(sb, "; ");
        }
        if (have != want) {
            strbuf_puts(sb, "allocated with ");
            put_shift(sb, have);
            strbuf_puts(sb, ", deleted with ");
            put_shift(sb, want);
        }
        strbuf_putc(sb, ')');
    }
}

static void plural(strbuf_t *sb, uint64_t n, const char *unit)
{
    strbuf_u64(sb, n);
    strbuf_putc(sb, ' ');
    strbuf_puts(sb, unit);
    if (n != 1)
        strbuf_putc(sb, 's');
}

/* How far the damage reaches, in words: "1 byte past the 24-byte block",
 * "3 bytes before the 24-byte block", "bytes 8..11 of the freed 48-byte block
 * changed". Nothing when the kind has no extent. */
void diag_describe_extent(strbuf_t *sb, const nmm_event_t *ev)
{
    if (ev->kind == NMM_EV_OVERFLOW && ev->extra >= ev->size) {
        plural(sb, ev->extra - ev->size + 1, "byte");
        strbuf_puts(sb, " past the ");
        strbuf_u64(sb, ev->size);
        strbuf_puts(sb, "-byte block");
    } else if (ev->kind == NMM_EV_UNDERFLOW && ev->detail) {
        plural(sb, ev->detail, "byte");
        strbuf_puts(sb, " before the ");
        if (ev->size) { /* 0: the damage reached the size field */
            strbuf_u64(sb, ev->size);
            strbuf_puts(sb, "-byte ");
        }
        strbuf_puts(sb, "block");
    } else if (ev->kind == NMM_EV_USE_AFTER_FREE) {
        if (ev->extra > ev->detail) {
            strbuf_puts(sb, "bytes ");
            strbuf_u64(sb, ev->detail);
            strbuf_puts(sb, "..");
            strbuf_u64(sb, ev->extra);
        } else {
            strbuf_puts(sb, "byte ");
            strbuf_u64(sb, ev->detail);
        }
        strbuf_puts(sb, " of the freed ");
        if (ev->size) {
            strbuf_u64(sb, ev->size);
            strbuf_puts(sb, "-byte ");
        }
        strbuf_puts(sb, "block changed");
    }
}

/* The summary line (no newline): "nmm: KIND at 0xADDR [(reason)] [size N]
 * [(extent)] [alloc site S] [free site F] (thread T)". */
void events_format_line(strbuf_t *sb, const nmm_event_t *ev, bool symbolize)
{
    strbuf_puts(sb, "nmm: ");
    strbuf_puts(sb, nmm_event_kind_str(ev->kind));
    strbuf_puts(sb, " at ");
    strbuf_hex(sb, ev->address);
    const char *reason = invalid_reason(ev);
    if (reason) {
        strbuf_puts(sb, " (");
        strbuf_puts(sb, reason);
        strbuf_putc(sb, ')');
    }
    format_mismatch(sb, ev);
    if (ev->size) {
        strbuf_puts(sb, " size ");
        strbuf_u64(sb, ev->size);
    }
    size_t before = sb->len;
    strbuf_puts(sb, " (");
    size_t mark = sb->len;
    diag_describe_extent(sb, ev);
    if (sb->len == mark) { /* nothing to say: take the " (" back */
        sb->len = before;
        if (sb->cap && before < sb->cap)
            sb->buf[before] = '\0';
    } else {
        strbuf_putc(sb, ')');
    }
    const access_note_t *call = access_note.call ? &access_note : NULL;
    if (call) { /* " by memcpy writing 108 bytes, clamped to 100" */
        strbuf_puts(sb, " by ");
        strbuf_puts(sb, call->call);
        strbuf_puts(sb, call->write ? " writing " : " reading ");
        plural(sb, call->len, "byte");
        if (call->record && call->keep) {
            strbuf_puts(sb, ", clamped to ");
            strbuf_u64(sb, call->keep);
        } else if (call->record) {
            strbuf_puts(sb, ", skipped");
        }
    }
    if (ev->alloc_site) {
        strbuf_puts(sb, " alloc site ");
        track_site_format(sb, ev->alloc_site, symbolize);
    }
    if (ev->free_site) {
        strbuf_puts(sb, ev->kind == NMM_EV_REALLOC_FREED || ev->kind == NMM_EV_INVALID_REALLOC
                            ? " realloc site "
                        : ev->kind == NMM_EV_INVALID_POINTER || call ? " call site "
                                                                     : " free site ");
        track_site_format(sb, ev->free_site, symbolize);
    }
    strbuf_puts(sb, " (thread ");
    strbuf_u64(sb, ev->thread_id);
    strbuf_putc(sb, ')');
}

/* ------------------------------------------------------------------ stacks */

struct section {
    const char *title;  /* "detected", "freed", "allocated" */
    uint32_t ctx;
    uint32_t tid;
    const uintptr_t *pcs;
    uint32_t depth;
};

static void section_text(strbuf_t *sb, sym_batch_t *b, const struct section *s)
{
    strbuf_puts(sb, "  ");
    strbuf_puts(sb, s->title);
    strbuf_puts(sb, " by thread ");
    if (s->tid)
        strbuf_u64(sb, s->tid);
    else
        strbuf_putc(sb, '?');
    strbuf_puts(sb, " here:\n");
    for (uint32_t i = 0; i < s->depth; i++) {
        const sym_frame_t *f = sym_batch_add(b, s->pcs[i]);
        if (f)
            sym_frame_text(sb, i, f);
    }
}

static void section_json(strbuf_t *sb, sym_batch_t *b, const char *key, const struct section *s)
{
    strbuf_puts(sb, ",\"");
    strbuf_puts(sb, key);
    strbuf_puts(sb, "\":{\"thread\":");
    strbuf_u64(sb, s->tid);
    strbuf_puts(sb, ",\"stack\":[");
    for (uint32_t i = 0; i < s->depth; i++) {
        const sym_frame_t *f = sym_batch_add(b, s->pcs[i]);
        if (!f)
            continue;
        if (i)
            strbuf_putc(sb, ',');
        sym_frame_json(sb, f);
    }
    strbuf_puts(sb, "]}");
}

static void site_json(strbuf_t *sb, const char *key, nmm_site_t site)
{
    strbuf_puts(sb, ",\"");
    strbuf_puts(sb, key);
    strbuf_puts(sb, "\":");
    if (!site) {
        strbuf_puts(sb, "null");
        return;
    }
    char buf[320];
    strbuf_t w;
    strbuf_init(&w, buf, sizeof buf);
    track_site_format(&w, site, true);
    strbuf_json_str(sb, buf);
}

static void report_json(strbuf_t *sb, sym_batch_t *b, const diag_event_t *d,
                        const struct section *sec, size_t nsec)
{
    const nmm_event_t *ev = &d->ev;
    strbuf_puts(sb, "{\"type\":\"error\",\"kind\":");
    strbuf_json_str(sb, nmm_event_kind_str(ev->kind));
    strbuf_puts(sb, ",\"pid\":");
    strbuf_u64(sb, (uint64_t)getpid());
    strbuf_puts(sb, ",\"thread\":");
    strbuf_u64(sb, ev->thread_id);
    strbuf_puts(sb, ",\"seq\":");
    strbuf_u64(sb, ev->seq);
    strbuf_puts(sb, ",\"address\":\"");
    strbuf_hex(sb, ev->address);
    strbuf_puts(sb, "\",\"size\":");
    strbuf_u64(sb, ev->size);
    strbuf_puts(sb, ",\"detail\":");
    strbuf_u64(sb, ev->detail);
    strbuf_puts(sb, ",\"extra\":");
    strbuf_u64(sb, ev->extra);
    const char *reason = invalid_reason(ev);
    if (reason) {
        strbuf_puts(sb, ",\"reason\":");
        strbuf_json_str(sb, reason);
    }
    char what[160];
    strbuf_t w;
    strbuf_init(&w, what, sizeof what);
    diag_describe_extent(&w, ev);
    strbuf_puts(sb, ",\"extent\":");
    strbuf_json_str(sb, what);
    site_json(sb, "alloc_site", ev->alloc_site);
    site_json(sb, ev->kind == NMM_EV_REALLOC_FREED || ev->kind == NMM_EV_INVALID_REALLOC
                      ? "realloc_site"
                      : "free_site",
              ev->free_site);
    static const char *const keys[] = {"stack", "free", "alloc"};
    for (size_t i = 0; i < nsec; i++) {
        if (sec[i].title[0] == 'd') { /* the detecting call: "stack" at the top level */
            strbuf_puts(sb, ",\"stack\":[");
            for (uint32_t k = 0; k < sec[i].depth; k++) {
                const sym_frame_t *f = sym_batch_add(b, sec[i].pcs[k]);
                if (!f)
                    continue;
                if (k)
                    strbuf_putc(sb, ',');
                sym_frame_json(sb, f);
            }
            strbuf_putc(sb, ']');
        } else {
            section_json(sb, b, keys[sec[i].title[0] == 'f' ? 1 : 2], &sec[i]);
        }
    }
    strbuf_puts(sb, "}\n");
}

static bool has_block(uint32_t kind)
{
    return kind != NMM_EV_INVALID_FREE && kind != NMM_EV_INVALID_REALLOC &&
           kind != NMM_EV_FREELIST_CORRUPT && kind != NMM_EV_INVALID_POINTER;
}

void diag_write(const diag_event_t *d, bool symbolize)
{
    const nmm_event_t *ev = &d->ev;
    bool locked = out_lock();
    struct section sec[3];
    size_t nsec = 0;
    uint32_t ctxs[3] = {d->here_ctx, d->free_ctx, has_block(ev->kind) ? d->alloc_ctx : 0};
    static const char *const titles[3] = {"detected", "freed", "allocated"};
    for (int i = 0; i < 3; i++) {
        if (!ctxs[i])
            continue;
        struct section *s = &sec[nsec];
        s->title = titles[i];
        s->ctx = ctxs[i];
        s->tid = track_context_thread(ctxs[i]);
        s->depth = track_stack_frames(ctxs[i], &s->pcs);
        if (s->depth)
            nsec++;
    }
    sym_batch_t b;
    bool have_batch = sym_batch_init(&b, 3 * UNWIND_DEPTH);
    if (have_batch) {
        for (size_t i = 0; i < nsec; i++)
            for (uint32_t k = 0; k < sec[i].depth; k++)
                sym_batch_add(&b, sec[i].pcs[k]);
        sym_batch_resolve(&b, symbolize);
    }
    size_t bytes = (size_t)64 << 10;
    char *buf = os_map(NULL, bytes);
    char line[640];
    strbuf_t sb;
    strbuf_init(&sb, buf ? buf : line, buf ? bytes : sizeof line);
    events_format_line(&sb, ev, symbolize);
    strbuf_putc(&sb, '\n');
    const options_process_t *po = options_process();
    if (po->log_path && po->log_summary) /* the file gets the report, stderr its line */
        out_stderr(sb.buf, sb.len < sb.cap ? sb.len : sb.cap - 1);
    if (buf && have_batch) {
        for (size_t i = 0; i < nsec; i++)
            section_text(&sb, &b, &sec[i]);
        if (has_block(ev->kind) && !d->alloc_ctx && ev->kind != NMM_EV_HEADER_CORRUPT &&
            (!ev->alloc_site || track_site_is_pc(ev->alloc_site)) &&
            (!ev->free_site || track_site_is_pc(ev->free_site))) /* not the binding's */
            strbuf_puts(&sb, "  (no allocation stack: level=paranoid records every block's, "
                             "tracking=1 the sampled ones' (stacks=1 samples all))\n");
    }
    if (out_text_wanted())
        out_text(sb.buf, sb.len < sb.cap ? sb.len : sb.cap - 1);
    if (buf && have_batch && out_json_wanted()) {
        strbuf_init(&sb, buf, bytes);
        report_json(&sb, &b, d, sec, nsec);
        if (sb.len < bytes)
            out_json(buf, sb.len);
    }
    if (buf)
        os_unmap(buf, bytes);
    if (have_batch)
        sym_batch_free(&b);
    out_unlock(locked);
}
