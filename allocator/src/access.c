/* access.c — checked bulk accesses: does a byte range that starts in (or just
 * before) a live block of a heap stay inside the bytes its caller asked for? Used
 * by the preload library's memcpy/memset/strcpy family (copy_shim.c) and by
 * nmm_copy. One lock-free lookup (the chunk map, the state byte, the header);
 * only slab blocks are looked at: a large block is caught by its canary at free
 * and, at paranoid, by its guard page. Any thread, no lock taken.
 */
#include "core.h"

/* Plain __thread: touched only around a checked call that looks at a heap block. */
__thread access_note_t access_note;

bool access_region(const nmm_heap_t *h, uintptr_t *base, size_t *size)
{
    if (!h->checks || !h->has_hdr)
        return false;
    *base = h->base;
    *size = h->region_size;
    return true;
}

/* The live slab block that holds p (its head included): its user pointer and the
 * size its header word gives; false when p is in no live block. The header's check
 * is not verified here: a range inside the size it gives is let through as it is,
 * and only a range about to be reported pays for the check (access_header_holds),
 * so a copy that stays in its block costs the lookup alone (the check was about a
 * tenth of the copy check's time in sqlite3, whose memcpys mostly stay in their
 * blocks). A damaged size that lets an overflow through is its free's or the
 * sweep's to report, like any damaged head. */
static bool access_block(const nmm_heap_t *h, uintptr_t p, uintptr_t *user, size_t *size)
{
    slab_t *s = slab_of(h, p);
    if (!s)
        return false;
    uintptr_t data = (uintptr_t)s->data;
    if (p < data || p - data >= s->span)
        return false;  /* the slab's lead or its tail */
    uint32_t idx = slab_index_containing(s, p);
    uint8_t st = __atomic_load_n(&slab_states(s)[idx], __ATOMIC_RELAXED);
    uint32_t off;
    if (state_is_live_unaligned(st))
        off = h->user_off;
    else if (state_is_aligned(st))
        off = state_user_off(st);
    else
        return false;  /* free, quarantined, retired or already reported */
    uintptr_t u = data + (size_t)idx * s->block_size + off;
    *user = u;
    *size = detect_header_size(detect_header_word((const uint8_t *)u));
    return true;
}

/* Before a report: the block's header holds (a damaged head is its free's to
 * report, not a copy's), and the site id it names. */
static bool access_header_holds(const nmm_heap_t *h, uintptr_t user, uint32_t *site)
{
    if (!detect_header_ok(h, (const uint8_t *)user))
        return false;
    slab_t *s = slab_of(h, user);
    uint32_t idx = slab_index_containing(s, user);
    *site = slab_site(s, idx, detect_header_has_site(detect_header_word((const uint8_t *)user)));
    return true;
}

static uint32_t sat32(uint64_t v)
{
    return v < UINT32_MAX ? (uint32_t)v : UINT32_MAX;
}

/* The problem found: its report, with the call's words (diag.c reads access_note)
 * and, from the preload library (echo), written at once. */
NMM_COLD static void access_report(nmm_heap_t *h, uint32_t kind, uint32_t detail, uint64_t last,
                                   uintptr_t user, size_t size, uint32_t alloc_id,
                                   nmm_site_t site, const access_note_t *note, size_t keep)
{
    bool echo = events_echo_now;
    uintptr_t pc = events_caller_pc;
    if (note) {
        access_note = *note;
        access_note.keep = keep;
        events_echo_now = note->echo;
        events_caller_pc = note->caller;
    }
    if (kind == NMM_EV_OVERFLOW)
        events_extent_last = last >= UINT32_MAX ? UINT32_MAX : (uint32_t)last + 1;
    heap_report(h, kind, detail, (const void *)user, size, alloc_id, site);
    access_note.call = NULL;
    events_echo_now = echo;
    events_caller_pc = pc;
}

size_t access_check(nmm_heap_t *h, const void *ptr, size_t n, nmm_site_t site,
                    const access_note_t *note)
{
    uintptr_t p = (uintptr_t)ptr, user;
    size_t size;
    uint32_t alloc_id;
    if (n == 0 || !h->checks || p - h->base >= h->region_size ||
        !access_block(h, p, &user, &size))
        return n;
    if (p < user) { /* starts in the block's head: nothing of it is copied */
        if (!access_header_holds(h, user, &alloc_id))
            return n;
        access_report(h, NMM_EV_UNDERFLOW, sat32(user - p), 0, user, size, alloc_id, site, note, 0);
        return 0;
    }
    uint64_t end = (uint64_t)(p - user) + n;  /* offset of the first byte after the range */
    if (end <= size && end >= n)
        return n;
    if (!access_header_holds(h, user, &alloc_id))
        return n;
    uint64_t first = p - user > size ? p - user : size;
    uint64_t last = end >= n ? end - 1 : UINT64_MAX;
    size_t keep = p - user < size ? size - (p - user) : 0;
    access_report(h, NMM_EV_OVERFLOW, sat32(first), last, user, size, alloc_id, site, note, keep);
    return keep;
}

/* Checked copy for the C API and the binding: memmove semantics. */
size_t nmm_copy(nmm_heap_t *h, void *dst, const void *src, size_t n, nmm_site_t site)
{
    size_t keep = n;
    if (h && h->checks) {
        access_note_t note = {.call = "nmm_copy", .len = n, .write = 1,
                              .record = h->cfg.policy == NMM_POLICY_RECORD};
        size_t d = access_check(h, dst, n, site, &note);
        note.write = 0;
        size_t s = access_check(h, src, n, site, &note);
        keep = d < s ? d : s;
    }
    if (keep)
        memmove(dst, src, keep);
    return keep;
}
