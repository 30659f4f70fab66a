/* large.c — blocks above the largest size class or aligned above the page
 * size, each mapped directly (page aligned, or at a multiple of an alignment
 * above it; at paranoid or guard_pages=1 end-aligned as far as the alignment
 * allows against a PROT_NONE guard page), and an out-of-band table (open addressing by user address) that
 * validation reads instead of the block. Freed blocks are remembered (bounded) so
 * a double free is named; at paranoid they stay PROT_NONE in a bounded quarantine.
 * Elsewhere (large_reuse) freed mappings wait in a small cache for the next large
 * block that fits (large_fits: a bounded slack is kept with the block), and
 * realloc grows into that slack or resizes with mremap: no fresh page faults, no copy.
 * Table and cache are under large_lock; heap_describe_fault_address reads the
 * table without.
 */
#include "core.h"

#include <errno.h>

#define LARGE_TOMB ((uintptr_t)1)
#define LARGE_FREED_MAX 4096
#define LARGE_QUAR_MAX 1024

static size_t large_hash(uintptr_t user, size_t cap)
{
    return (size_t)(((user >> 4) * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

bool large_init(nmm_heap_t *h)
{
    h->large_cap = 256;
    h->large_tab = os_map(NULL, h->large_cap * sizeof(large_entry_t));
    return h->large_tab != NULL;
}

static size_t large_room(const large_entry_t *e)
{
    size_t page = os_page_size();
    return e->map_base + e->map_len - (e->guard ? page : 0) - e->user;
}

void large_destroy(nmm_heap_t *h)
{
    for (uint32_t i = 0; i < h->large_cache_count; i++)
        os_unmap((void *)h->large_cache[i].base, h->large_cache[i].len);
    h->large_cache_count = 0;
    h->large_cache_bytes = 0;
    for (size_t i = 0; i < h->large_cap; i++) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user > LARGE_TOMB && e->state != BS_FREE)
            os_unmap((void *)e->map_base, e->map_len);
    }
    os_unmap(h->large_tab, h->large_cap * sizeof(large_entry_t));
    h->large_tab = NULL;
}

static large_entry_t *large_find(nmm_heap_t *h, uintptr_t user)
{
    size_t i = large_hash(user, h->large_cap);
    for (size_t n = 0; n < h->large_cap; n++, i = (i + 1) & (h->large_cap - 1)) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user == 0)
            return NULL;
        if (e->user == user)
            return e;
    }
    return NULL;
}

/* Drop every remembered free record (they only serve double-free naming). */
static void large_forget_freed(nmm_heap_t *h)
{
    for (size_t i = 0; i < h->large_cap; i++) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user > LARGE_TOMB && e->state == BS_FREE) {
            e->user = LARGE_TOMB;
            h->large_used--;
            h->large_tombs++;
        }
    }
    h->large_freed_records = 0;
}

static bool large_grow(nmm_heap_t *h)
{
    size_t cap = h->large_cap * 2;
    if (h->large_used * 2 < h->large_cap)
        cap = h->large_cap;  /* mostly tombstones: rehash in place size */
    large_entry_t *tab = os_map(NULL, cap * sizeof(large_entry_t));
    if (!tab)
        return false;
    large_entry_t *old = h->large_tab;
    size_t old_cap = h->large_cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].user <= LARGE_TOMB)
            continue;
        size_t j = large_hash(old[i].user, cap);
        while (tab[j].user)
            j = (j + 1) & (cap - 1);
        tab[j] = old[i];
    }
    __atomic_store_n(&h->large_tab, tab, __ATOMIC_RELEASE);
    h->large_cap = cap;
    h->large_tombs = 0;
    os_unmap(old, old_cap * sizeof(large_entry_t));
    return true;
}

/* Insert or overwrite (an address reused by the kernel replaces its old record). */
static large_entry_t *large_insert(nmm_heap_t *h, uintptr_t user)
{
    large_entry_t *e = large_find(h, user);
    if (e) {
        if (e->state == BS_FREE)
            h->large_freed_records--;
        return e;
    }
    if ((h->large_used + h->large_tombs + 1) * 4 > h->large_cap * 3) {
        if (h->large_freed_records > h->large_used / 2)
            large_forget_freed(h);
        if (!large_grow(h))
            return NULL;
    }
    size_t i = large_hash(user, h->large_cap);
    while (h->large_tab[i].user > LARGE_TOMB)
        i = (i + 1) & (h->large_cap - 1);
    if (h->large_tab[i].user == LARGE_TOMB)
        h->large_tombs--;
    h->large_used++;
    e = &h->large_tab[i];
    e->user = user;
    return e;
}

/* ------------------------------------------------------------------ mapping cache */

/* Unmap the oldest cached mapping. Large lock held. */
static void large_cache_evict_oldest(nmm_heap_t *h)
{
    large_cached_t c = h->large_cache[0];
    h->large_cache_count--;
    memmove(&h->large_cache[0], &h->large_cache[1], h->large_cache_count * sizeof c);
    h->large_cache_bytes -= c.len;
    os_unmap((void *)c.base, c.len);
    heap_account_mapped(h, -(int64_t)c.len);
}

/* Keep an intact block's freed mapping (still counted as mapped) instead of
 * unmapping it, evicting the oldest beyond LARGE_CACHE_MAX entries or
 * retain_bytes. False when it cannot be kept. Large lock held. */
static bool large_cache_put(nmm_heap_t *h, uintptr_t base, size_t len)
{
    if (!h->large_reuse || len > h->cfg.retain_bytes)
        return false;
    while (h->large_cache_count == LARGE_CACHE_MAX ||
           (h->large_cache_count && h->large_cache_bytes + len > h->cfg.retain_bytes))
        large_cache_evict_oldest(h);
    h->large_cache[h->large_cache_count++] = (large_cached_t){base, len};
    h->large_cache_bytes += len;
    return true;
}

/* Whether a mapping of len bytes may hold a block that needs need: the slack
 * beyond it (kept, so a realloc can grow into it without mremap or faults) is
 * at most need or LARGE_SLACK_MAX, whichever is larger. */
static bool large_fits(size_t need, size_t len)
{
    return len >= need && len - need <= (need > LARGE_SLACK_MAX ? need : LARGE_SLACK_MAX);
}

/* Take the smallest cached mapping that fits need. Large lock held. */
static bool large_cache_take(nmm_heap_t *h, size_t need, large_cached_t *out)
{
    int best = -1;
    for (uint32_t i = 0; i < h->large_cache_count; i++) {
        size_t len = h->large_cache[i].len;
        if (large_fits(need, len) && (best < 0 || len < h->large_cache[best].len))
            best = (int)i;
    }
    if (best < 0)
        return false;
    *out = h->large_cache[best];
    h->large_cache_count--;
    memmove(&h->large_cache[best], &h->large_cache[best + 1],
            (h->large_cache_count - (uint32_t)best) * sizeof *out);
    h->large_cache_bytes -= out->len;
    return true;
}

/* A mapping of at least *len bytes: from the cache (*len becomes its length)
 * when may_reuse, or fresh from the OS. Counted as mapped either way (a cached
 * one already was). */
static uint8_t *large_map(nmm_heap_t *h, size_t *len, bool may_reuse, bool *reused)
{
    *reused = false;
    if (h->large_reuse && may_reuse) {
        large_cached_t c;
        heap_lock(h, &h->large_lock);
        bool hit = large_cache_take(h, *len, &c);
        pthread_mutex_unlock(&h->large_lock);
        if (hit) {
            *len = c.len;
            *reused = true;
            return (uint8_t *)c.base;
        }
    }
    uint8_t *base = os_map(h, *len);
    if (base)
        heap_account_mapped(h, (int64_t)*len);
    return base;
}

/* ------------------------------------------------------------------ alloc / free */

/* Bytes a block of `size` takes after its header page (payload and canary, whole
 * pages): what is counted against the limit and as live. size <= 2^46. */
static size_t large_body(const nmm_heap_t *h, size_t size)
{
    size_t page = os_page_size();
    size_t body = (size + (h->checks ? CORE_CANARY : 0) + page - 1) & ~(page - 1);
    return body ? body : page;
}

void *large_alloc(nmm_heap_t *h, size_t size, size_t align, uint32_t site_id)
{
    size_t page = os_page_size();
    size_t pre = h->has_hdr ? page : 0;
    size_t canary = h->checks ? CORE_CANARY : 0;
    size_t guard = h->guard ? page : 0;
    if (size > CORE_MAX_REQUEST) {
        errno = ENOMEM;
        return NULL;
    }
    size_t body = large_body(h, size);
    /* Alignments above the page size: map align - page more and keep the part
     * that starts (after the header page) at a multiple of align. */
    size_t over = align > page ? align - page : 0;
    size_t map_len = pre + body + guard + over;
    /* Before the cache: large.map fails a large request whether or not a
     * cached mapping would have served it (os.map only fails real mmaps). */
    if (unlikely(heap_failpoints_armed(h)) && failpoint_should_fail(h, FP_LARGE_MAP, size)) {
        __atomic_fetch_add(&h->injected_failures, 1, __ATOMIC_RELAXED);
        errno = ENOMEM;
        return NULL;
    }
    if (!heap_limit_take(h, body)) {
        errno = ENOMEM;
        return NULL;
    }
    bool reused;
    /* a cached mapping may be longer; an over-aligned block needs a fresh one */
    uint8_t *base = large_map(h, &map_len, over == 0, &reused);
    if (!base) {
        heap_limit_give(h, body);
        errno = ENOMEM;
        return NULL;
    }
    if (over) {
        uintptr_t start = (((uintptr_t)base + pre + align - 1) & ~(uintptr_t)(align - 1)) - pre;
        size_t head = start - (uintptr_t)base;
        if (head)
            os_unmap(base, head);
        if (over - head)
            os_unmap((uint8_t *)start + pre + body + guard, over - head);
        heap_account_mapped(h, -(int64_t)over);
        base = (uint8_t *)start;
        map_len -= over;
    }
    uint8_t *end = base + pre + body;
    if (guard)
        os_protect_none(end, guard);
    uint8_t *user = base + pre;
    if (guard) {
        /* end-aligned against the guard as far as align allows (above the page
         * size that is base + pre: the block starts aligned, the guard follows
         * the page holding its end) */
        size_t a = align > 16 ? align : 16;
        user = (uint8_t *)(((uintptr_t)end - size - canary) & ~(uintptr_t)(a - 1));
        if (user < base + pre)
            user = base + pre;
    }
    size_t room = (size_t)(end - user);
    if (h->has_hdr)  /* size saturated, no HDR_SITE: the table keeps both */
        detect_write_header(h, user, size, false);
    if (h->checks)
        detect_write_canary(h, user, size, room);

    NMM_YIELD("large.lock");
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_insert(h, (uintptr_t)user);
    if (!e) {
        pthread_mutex_unlock(&h->large_lock);
        os_unmap(base, map_len);
        heap_account_mapped(h, -(int64_t)map_len);
        heap_limit_give(h, body);
        errno = ENOMEM;
        return NULL;
    }
    e->map_base = (uintptr_t)base;
    e->map_len = map_len;
    e->size = size;
    e->usable = body;
    e->site = site_id;
    e->free_site = 0;
    e->guard = guard != 0;
    e->reused = reused;
    e->family = NMM_FAMILY_MALLOC;
    e->align_shift = align > 16 ? (uint8_t)__builtin_ctzll(align) : 0;
    e->seq = 0;
    __atomic_store_n(&e->state, BS_LIVE, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&h->large_lock);
    NMM_YIELD("large.unlock");
    __atomic_fetch_add(&h->large_allocs, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->large_live_bytes, body, __ATOMIC_RELAXED);
    heap_account_live(h, (int64_t)body);
    return user;
}

/* Paranoid: keep freed mappings PROT_NONE; unmap the oldest beyond the bounds.
 * Large lock held. */
static void large_quarantine_trim(nmm_heap_t *h)
{
    while (h->large_quar_count > LARGE_QUAR_MAX ||
           (h->large_quar_count && h->large_quar_bytes > h->quar_max_bytes)) {
        large_entry_t *oldest = NULL;
        for (size_t i = 0; i < h->large_cap; i++) {
            large_entry_t *e = &h->large_tab[i];
            if (e->user > LARGE_TOMB && e->state == BS_QUARANTINE &&
                (!oldest || (int32_t)(e->seq - oldest->seq) < 0))
                oldest = e;
        }
        if (!oldest)
            break;
        os_unmap((void *)oldest->map_base, oldest->map_len);
        heap_account_mapped(h, -(int64_t)oldest->map_len);
        h->large_quar_bytes -= oldest->map_len;
        h->large_quar_count--;
        oldest->state = BS_FREE;
        h->large_freed_records++;
    }
}

int large_free(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call)
{
    NMM_YIELD("large.lock");
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_find(h, (uintptr_t)p);
    if (!e) {
        int found = -1;
        for (size_t i = 0; i < h->large_cap; i++) {
            large_entry_t *x = &h->large_tab[i];
            if (x->user > LARGE_TOMB && x->state != BS_FREE && (uintptr_t)p >= x->map_base &&
                (uintptr_t)p < x->map_base + x->map_len) {
                found = 1;
                break;
            }
        }
        pthread_mutex_unlock(&h->large_lock);
        if (found < 0)
            return -1;
        return heap_report(h, realloc_call ? NMM_EV_INVALID_REALLOC : NMM_EV_INVALID_FREE,
                           NMM_INVALID_INTERIOR, p, 0, 0, site);
    }
    if (e->state != BS_LIVE && e->state != BS_LIVE_BAD) {
        uint32_t asite = e->site, fsite = e->free_site;
        size_t size = e->size;
        pthread_mutex_unlock(&h->large_lock);
        (void)fsite;
        return heap_report(h, realloc_call ? NMM_EV_REALLOC_FREED : NMM_EV_DOUBLE_FREE, 0, p, size,
                           asite, site);
    }
    uint32_t kind = NMM_EV_NONE, detail = 0;
    size_t hsize = e->size;
    uint32_t hsite = e->site;
    if (h->checks && e->state == BS_LIVE) {
        size_t sz;
        bool has_site;
        kind = detect_check_block(h, (uint8_t *)p, large_room(e), e->size, &detail, &sz, &has_site);
    }
    bool quietly_bad = e->state == BS_LIVE_BAD;
    e->free_site = site;
    __atomic_fetch_add(&h->large_frees, 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&h->large_live_bytes, e->usable, __ATOMIC_RELAXED);
    heap_account_live(h, -(int64_t)e->usable);
    heap_limit_give(h, e->usable);
    if (h->paranoid && kind == NMM_EV_NONE && !quietly_bad) {
        os_protect_none((void *)e->map_base, e->map_len);
        __atomic_store_n(&e->state, BS_QUARANTINE, __ATOMIC_RELEASE);
        e->seq = ++h->large_seq;
        h->large_quar_bytes += e->map_len;
        h->large_quar_count++;
        large_quarantine_trim(h);
    } else {
        /* A damaged block's mapping is not reused (as a damaged slab block is retired).
         * The free record stays either way: a reuse of the address overwrites it. */
        if (kind != NMM_EV_NONE || quietly_bad || !large_cache_put(h, e->map_base, e->map_len)) {
            os_unmap((void *)e->map_base, e->map_len);
            heap_account_mapped(h, -(int64_t)e->map_len);
        }
        __atomic_store_n(&e->state, BS_FREE, __ATOMIC_RELEASE);
        h->large_freed_records++;
        if (h->large_freed_records > LARGE_FREED_MAX)
            large_forget_freed(h);
    }
    pthread_mutex_unlock(&h->large_lock);
    NMM_YIELD("large.unlock");
    if (quietly_bad) {
        heap_set_status(NMM_E_CORRUPTED);
        return NMM_E_CORRUPTED;
    }
    if (kind != NMM_EV_NONE) {
        __atomic_fetch_add(&h->retired, 1, __ATOMIC_RELAXED);
        return heap_report(h, kind, detail, p, kind == NMM_EV_HEADER_CORRUPT ? 0 : hsize, hsite, site);
    }
    return NMM_OK;
}

void large_zero_reused(nmm_heap_t *h, void *p, size_t size)
{
    if (!h->large_reuse)
        return;  /* every mapping is fresh, already zero */
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_find(h, (uintptr_t)p);
    bool dirty = e && e->state == BS_LIVE && e->reused;
    if (dirty)
        e->reused = 0;
    pthread_mutex_unlock(&h->large_lock);
    if (dirty)
        memset(p, 0, size);
}

/* Room for one more insert without growing the table, so an insert after an
 * mremap cannot fail. Large lock held. */
static bool large_reserve(nmm_heap_t *h)
{
    if ((h->large_used + h->large_tombs + 1) * 4 <= h->large_cap * 3)
        return true;
    if (h->large_freed_records > h->large_used / 2)
        large_forget_freed(h);
    return large_grow(h);
}

void *large_realloc(nmm_heap_t *h, void *p, size_t size, nmm_site_t site, bool *fallback)
{
    *fallback = true;
    if (!h->large_reuse || heap_failpoints_armed(h) || size > CORE_MAX_REQUEST)
        return NULL;  /* fail points see the allocate-copy-free path they expect */
    size_t pre = h->has_hdr ? os_page_size() : 0;
    size_t body = large_body(h, size);
    size_t map_len = pre + body;

    heap_lock(h, &h->large_lock);
    if (!large_reserve(h))
        goto unlock;
    large_entry_t *e = large_find(h, (uintptr_t)p);
    if (!e || e->state != BS_LIVE || e->guard || e->family != NMM_FAMILY_MALLOC)
        goto unlock;  /* a new'd block: the allocate-copy-free path reports the mismatch */
    if (h->checks) {  /* a damaged block takes the old path: its free reports it */
        uint32_t detail;
        size_t sz;
        bool has_site;
        if (detect_check_block(h, (uint8_t *)p, large_room(e), e->size, &detail, &sz, &has_site) !=
            NMM_EV_NONE)
            goto unlock;
    }
    int64_t delta = (int64_t)body - (int64_t)e->usable;
    if (delta > 0 && !heap_limit_take(h, (uint64_t)delta)) {
        pthread_mutex_unlock(&h->large_lock);
        *fallback = false;  /* the old block stays as it was */
        return NULL;
    }
    /* Within the mapping's slack bound (large_fits) the block stays where it is:
     * growing into pages a cached mapping brought costs no mremap and no faults. */
    int64_t dmap = large_fits(map_len, e->map_len) ? 0 : (int64_t)map_len - (int64_t)e->map_len;
    if (dmap) {
        uint8_t *nb = os_remap((void *)e->map_base, e->map_len, map_len);
        if (!nb) {
            if (delta > 0)
                heap_limit_give(h, (uint64_t)delta);
            goto unlock;
        }
        uintptr_t user = (uintptr_t)nb + pre;
        if (user != e->user) {
            /* Moved: the old address is remembered as freed (a later free of it
             * is a double free, as after allocate-copy-free), the block gets
             * an entry at its new address (reserved above: cannot fail). */
            large_entry_t moved = *e;
            e->free_site = site;
            __atomic_store_n(&e->state, BS_FREE, __ATOMIC_RELEASE);
            h->large_freed_records++;
            large_entry_t *n = large_insert(h, user);
            *n = moved;
            n->user = user;
            e = n;
        }
        e->map_base = (uintptr_t)nb;
        e->map_len = map_len;
    }
    uint8_t *user = (uint8_t *)e->user;
    e->size = size;
    e->usable = body;
    /* The header's check and the canary are keyed by the address and the size. */
    if (h->has_hdr)
        detect_write_header(h, user, size, false);
    if (h->checks)
        detect_write_canary(h, user, size, large_room(e));
    if (h->large_freed_records > LARGE_FREED_MAX)
        large_forget_freed(h);
    pthread_mutex_unlock(&h->large_lock);
    if (delta < 0)
        heap_limit_give(h, (uint64_t)-delta);
    /* Counted as the allocate-copy-free it replaces: one alloc, one free. */
    __atomic_fetch_add(&h->large_allocs, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->large_frees, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->large_live_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    heap_account_live(h, delta);
    if (dmap)
        heap_account_mapped(h, dmap);
    *fallback = false;
    return user;

unlock:
    pthread_mutex_unlock(&h->large_lock);
    return NULL;
}

bool large_lookup(nmm_heap_t *h, const void *p, size_t *size, size_t *usable, uint32_t *site)
{
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_find(h, (uintptr_t)p);
    bool live = e && (e->state == BS_LIVE || e->state == BS_LIVE_BAD);
    if (live) {
        if (size)
            *size = e->size;
        if (usable) {  /* the room of a mapping longer than the block counts only its body */
            size_t room = large_room(e);
            *usable = h->checks ? e->size : room < e->usable ? room : e->usable;
        }
        if (site)
            *site = e->site;
    }
    pthread_mutex_unlock(&h->large_lock);
    return live;
}

bool large_swap_family(nmm_heap_t *h, const void *p, uint32_t set, uint32_t *family,
                       uint32_t *align_shift, size_t *size, uint32_t *site)
{
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_find(h, (uintptr_t)p);
    bool live = e && e->state == BS_LIVE;
    if (live) {
        *family = e->family;
        *align_shift = e->align_shift;
        *size = e->size;
        *site = e->site;
        e->family = (uint8_t)set;
    }
    pthread_mutex_unlock(&h->large_lock);
    return live;
}

bool large_was_freed(nmm_heap_t *h, const void *p)
{
    heap_lock(h, &h->large_lock);
    large_entry_t *e = large_find(h, (uintptr_t)p);
    bool freed = e && (e->state == BS_FREE || e->state == BS_QUARANTINE);
    pthread_mutex_unlock(&h->large_lock);
    return freed;
}

bool large_contains(nmm_heap_t *h, uintptr_t p)
{
    bool found = false;
    heap_lock(h, &h->large_lock);
    for (size_t i = 0; i < h->large_cap && !found; i++) {
        large_entry_t *x = &h->large_tab[i];
        found = x->user > LARGE_TOMB && x->state != BS_FREE && p >= x->map_base &&
                p < x->map_base + x->map_len;
    }
    pthread_mutex_unlock(&h->large_lock);
    return found;
}

void large_foreach_live(nmm_heap_t *h, heap_visit_fn visit, void *ctx)
{
    heap_lock(h, &h->large_lock);
    for (size_t i = 0; i < h->large_cap; i++) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user > LARGE_TOMB && (e->state == BS_LIVE || e->state == BS_LIVE_BAD))
            visit(ctx, (const void *)e->user, e->size, e->site);
    }
    pthread_mutex_unlock(&h->large_lock);
}

/* Large lock held by the caller (validate holds every lock). */
size_t large_validate(nmm_heap_t *h)
{
    size_t problems = 0;
    if (!h->checks)
        return 0;
    for (size_t i = 0; i < h->large_cap; i++) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user <= LARGE_TOMB || e->state != BS_LIVE)
            continue;
        uint32_t detail;
        size_t sz;
        bool has_site;
        uint32_t kind = detect_check_block(h, (uint8_t *)e->user, large_room(e), e->size, &detail, &sz,
                                           &has_site);
        if (kind == NMM_EV_NONE)
            continue;
        problems++;
        e->state = BS_LIVE_BAD;
        heap_report(h, kind, detail, (void *)e->user, kind == NMM_EV_HEADER_CORRUPT ? 0 : e->size,
                    e->site, 0);
    }
    return problems;
}

/* Large lock held, heap quiescent (nmm_validate): the large counters against the
 * table. live_blocks/charged: what the table holds live (count, bytes charged to the
 * limit), for the caller's heap-wide checks. Returns the problems found. */
size_t large_validate_books(nmm_heap_t *h, uint64_t *live_blocks, uint64_t *charged)
{
    size_t problems = 0, quar = 0;
    uint64_t live = 0, live_bytes = 0, quar_bytes = 0;
    for (size_t i = 0; i < h->large_cap; i++) {
        const large_entry_t *e = &h->large_tab[i];
        if (e->user <= LARGE_TOMB)
            continue;
        if (e->state == BS_LIVE || e->state == BS_LIVE_BAD) {
            live++;
            live_bytes += e->usable;
        } else if (e->state == BS_QUARANTINE) {
            quar++;
            quar_bytes += e->map_len;
        }
    }
    uint64_t counted = __atomic_load_n(&h->large_allocs, __ATOMIC_RELAXED) -
                       __atomic_load_n(&h->large_frees, __ATOMIC_RELAXED);
    if (counted != live || __atomic_load_n(&h->large_live_bytes, __ATOMIC_RELAXED) != live_bytes) {
        heap_report(h, NMM_EV_FREELIST_CORRUPT, VALIDATE_LIVE_COUNT, NULL, 0, 0, 0);
        problems++;
    }
    if (quar != h->large_quar_count || quar_bytes != h->large_quar_bytes) {
        heap_report(h, NMM_EV_FREELIST_CORRUPT, VALIDATE_QUAR_BYTES, NULL, 0, 0, 0);
        problems++;
    }
    *live_blocks = live;
    *charged = live_bytes;
    return problems;
}

size_t large_exit_scan(nmm_heap_t *h, exit_finding_t *out, size_t cap)
{
    size_t found = 0;
    if (!h->checks)
        return 0;
    heap_lock(h, &h->large_lock);
    for (size_t i = 0; i < h->large_cap; i++) {
        large_entry_t *e = &h->large_tab[i];
        if (e->user <= LARGE_TOMB || e->state != BS_LIVE)
            continue;
        uint32_t detail;
        size_t sz;
        bool has_site;
        uint32_t kind = detect_check_block(h, (uint8_t *)e->user, large_room(e), e->size, &detail,
                                           &sz, &has_site);
        if (kind == NMM_EV_NONE)
            continue;
        e->state = BS_LIVE_BAD;  /* reported now: its free retires it quietly */
        if (found < cap)
            out[found] = (exit_finding_t){.user = (uint8_t *)e->user, .kind = kind, .detail = detail,
                                          .size = kind == NMM_EV_HEADER_CORRUPT ? 0 : e->size,
                                          .site = e->site};
        found++;
    }
    pthread_mutex_unlock(&h->large_lock);
    return found;
}

bool large_describe(nmm_heap_t *h, uintptr_t addr, nmm_event_t *ev)
{
    large_entry_t *tab = __atomic_load_n(&h->large_tab, __ATOMIC_ACQUIRE);
    size_t cap = h->large_cap, page = os_page_size();
    if (!tab)
        return false;
    for (size_t i = 0; i < cap; i++) {
        large_entry_t *e = &tab[i];
        if (e->user <= LARGE_TOMB || addr < e->map_base || addr >= e->map_base + e->map_len)
            continue;
        uint8_t state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
        uintptr_t guard_start = e->map_base + e->map_len - page;
        if (state == BS_QUARANTINE)
            ev->kind = NMM_EV_USE_AFTER_FREE;
        else if ((state == BS_LIVE || state == BS_LIVE_BAD) && e->guard && addr >= guard_start)
            ev->kind = NMM_EV_GUARD_PAGE;
        else
            continue;
        nmm_site_t site = 0;
        uint32_t stack = 0;
        if (e->site)
            track_decode(e->site, &site, &stack);
        ev->detail = (uint32_t)(addr - e->user);
        ev->address = e->user;
        ev->size = e->size;
        ev->alloc_site = site;
        ev->free_site = 0;
        if (state == BS_QUARANTINE && e->free_site)
            ev->free_site = e->free_site;
        return true;
    }
    return false;
}
