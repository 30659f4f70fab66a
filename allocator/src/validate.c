/* validate.c — the full integrity sweep (nmm_validate, and paranoid's periodic
 * sweep) and heap_foreach_live. Must only be run on a quiescent heap when thread
 * caches are in use (other threads' fast paths take no lock); at paranoid every
 * state change is under a class lock, so the periodic sweep is safe under load.
 * Takes the registry lock, then every class lock, the large and quarantine locks.
 */
#include "core.h"

static void validate_lock_all(nmm_heap_t *h)
{
    pthread_mutex_lock(&tcache_registry_lock);
    for (int c = 0; c < CORE_CLASSES; c++)
        heap_lock(h, &h->pools[c].lock);
    heap_lock(h, &h->large_lock);
    heap_lock(h, &h->quar_lock);
}

static void validate_unlock_all(nmm_heap_t *h)
{
    pthread_mutex_unlock(&h->quar_lock);
    pthread_mutex_unlock(&h->large_lock);
    for (int c = CORE_CLASSES - 1; c >= 0; c--)
        pthread_mutex_unlock(&h->pools[c].lock);
    pthread_mutex_unlock(&tcache_registry_lock);
}

/* First-chunk descriptors of every slab in use, in address order. */
#define FOREACH_SLAB(h, s)                                                                  \
    for (size_t ci_ = 0, n_ = (h)->region_used >> CORE_CHUNK_SHIFT; ci_ < n_; ci_++)         \
        for (slab_t *s = (h)->chunk_map[ci_]; s && slab_base(s) == (h)->base + (ci_ << CORE_CHUNK_SHIFT); s = NULL)

static size_t validate_freelist_problem(nmm_heap_t *h, const void *addr, uint32_t detail)
{
    heap_report(h, NMM_EV_FREELIST_CORRUPT, detail, addr, 0, 0, 0);
    return 1;
}

/* Mark a block reached from a free structure; a second mark or a state that is
 * not free means the structure is inconsistent. */
static size_t validate_mark(nmm_heap_t *h, slab_t *s, uint32_t idx)
{
    uint8_t *st = &slab_states(s)[idx];
    uint8_t v = *st;
    if (v & BS_MARK)
        return validate_freelist_problem(h, s->data + (size_t)idx * s->block_size, 1);
    *st = v | BS_MARK;
    if (!state_is_free(v) && v != BS_NEVER)
        return validate_freelist_problem(h, s->data + (size_t)idx * s->block_size, 2);
    return 0;
}

size_t validate_heap(nmm_heap_t *h, bool full)
{
    (void)full;
    size_t problems = 0;
    validate_lock_all(h);

    /* 1. Mark everything the free structures hold. */
    FOREACH_SLAB(h, s)
    {
        uint16_t *stack = slab_stack(s);
        if (s->nstack > s->bump || s->bump > s->nblocks) {
            problems += validate_freelist_problem(h, s->data, 3);
            continue;
        }
        for (uint32_t i = 0; i < s->nstack; i++) {
            if (stack[i] >= s->bump)
                problems += validate_freelist_problem(h, s->data, 4);
            else
                problems += validate_mark(h, s, stack[i]);
        }
    }
    if (h->slot >= 0) {
        for (tstate_t *ts = tcache_all; ts; ts = ts->next_all) {
            tcache_t *tc = ts->caches[h->slot];
            if (!tc || tc->heap != h)
                continue;
            problems += detect_tq_validate(h, tc);
            for (int c = 0; c < CORE_CLASSES; c++) {
                for (uint32_t i = 0; i < tc->bins[c].count; i++) {
                    blockref_t *e = &tc->bins[c].items[i];
                    slab_t *s = slab_of(h, (uintptr_t)e->block);
                    int32_t idx = s ? slab_index(s, (uintptr_t)e->block) : -1;
                    if (idx < 0 || s->cls != c || e->state != &slab_states(s)[idx])
                        problems += validate_freelist_problem(h, e->block, 5);
                    else
                        problems += validate_mark(h, s, (uint32_t)idx);
                }
            }
        }
    }

    /* 2. Every block: live ones intact, free ones reached (and poisoned at
     * paranoid), then clear the marks. */
    FOREACH_SLAB(h, s)
    {
        uint8_t *states = slab_states(s);
        size_t room = s->block_size - h->user_off;
        for (uint32_t i = 0; i < s->nblocks; i++) {
            uint8_t v = states[i];
            uint8_t *block = s->data + (size_t)i * s->block_size;
            uint8_t *user = block + h->user_off;
            uint8_t base = v & (uint8_t)~BS_MARK;
            bool marked = v & BS_MARK;
            if ((state_is_live_unaligned(base) || state_is_aligned(base)) && h->checks) {
                uint32_t detail;
                size_t size;
                bool has_site;
                uint32_t off = state_is_aligned(base) ? state_user_off(base) : h->user_off;
                uint8_t *u = block + off;
                uint32_t kind = detect_check_block(h, u, s->block_size - off, DETECT_SIZE_FROM_HEADER,
                                                   &detail, &size, &has_site);
                if (kind != NMM_EV_NONE) {
                    problems++;
                    states[i] = state_is_aligned(base) ? (uint8_t)(BS_ALIGNED_BAD | (base & 15))
                                                       : BS_LIVE_BAD;
                    heap_report(h, kind, detail, u, size, slab_site(s, i, has_site), 0);
                }
            } else if (state_is_free(base) && !marked) {
                problems += validate_freelist_problem(h, block, 6);
            } else if (base == BS_NEVER && !marked && i < s->bump) {
                problems += validate_freelist_problem(h, block, 7);
            } else if (state_is_free(base) && h->paranoid) {
                long dmg = detect_poison_damage(user, room);
                if (dmg >= 0) {
                    /* Written after it left the quarantine: report it once and
                     * re-poison it (it holds nothing of the user's and stays free). */
                    problems++;
                    uint32_t asite = 0;
                    if (detect_header_ok(h, user))
                        asite = slab_site(s, i, detect_header_has_site(detect_header_word(user)));
                    heap_report(h, NMM_EV_USE_AFTER_FREE, (uint32_t)dmg, user, 0, asite, 0);
                    detect_poison(user, room);
                }
            }
            if (marked)
                states[i] = base;
        }
    }

    problems += detect_quarantine_validate(h);
    problems += large_validate(h);
    validate_unlock_all(h);
    __atomic_fetch_add(&h->sweeps, 1, __ATOMIC_RELAXED);
    return problems;
}

void validate_maybe_sweep(nmm_heap_t *h)
{
    uint64_t every = h->cfg.sweep_every_ops;
    if (!every)
        return;
    uint64_t n = __atomic_add_fetch(&h->paranoid_ops, 1, __ATOMIC_RELAXED);
    if (n % every == 0)
        validate_heap(h, false);
}

size_t nmm_validate(nmm_heap_t *h)
{
    if (!h)
        return 0;
    return validate_heap(h, true);
}

void heap_foreach_live(nmm_heap_t *h, heap_visit_fn visit, void *ctx)
{
    for (int c = 0; c < CORE_CLASSES; c++)
        heap_lock(h, &h->pools[c].lock);
    FOREACH_SLAB(h, s)
    {
        uint8_t *states = slab_states(s);
        size_t room = s->block_size - h->user_off;
        for (uint32_t i = 0; i < s->nblocks; i++) {
            uint8_t v = __atomic_load_n(&states[i], __ATOMIC_RELAXED);
            if (!state_is_live_unaligned(v) && v != BS_LIVE_BAD && !state_is_aligned_any(v))
                continue;
            uint32_t off = state_is_aligned_any(v) ? state_user_off(v) : h->user_off;
            const uint8_t *user = s->data + (size_t)i * s->block_size + off;
            size_t size = room = s->block_size - off;
            uint32_t site = 0;
            /* a damaged header says nothing: its HDR_SITE flag would name
             * whatever site[] still holds from the slot's previous owner */
            if (h->has_hdr && detect_header_ok(h, user)) {
                uint64_t hw = detect_header_word(user);
                if (detect_header_size(hw) < room)
                    size = detect_header_size(hw);
                if (h->tracking)
                    site = slab_site(s, i, detect_header_has_site(hw));
            }
            visit(ctx, user, size, site);
        }
    }
    for (int c = CORE_CLASSES - 1; c >= 0; c--)
        pthread_mutex_unlock(&h->pools[c].lock);
    large_foreach_live(h, visit, ctx);
}

struct visit_adapter {
    nmm_visit_fn visit;
    void *ctx;
};

static void visit_public(void *ctx, const void *ptr, size_t requested, uint32_t site)
{
    (void)site;
    struct visit_adapter *a = ctx;
    a->visit(a->ctx, ptr, requested);
}

NMM_API void nmm_heap_visit(nmm_heap_t *h, nmm_visit_fn visit, void *ctx)
{
    if (!h || !visit)
        return;
    struct visit_adapter a = {visit, ctx};
    heap_foreach_live(h, visit_public, &a);
}

/* Requested bytes of every live block, read from the headers (header levels).
 * Kept out of the hot path: stats_get walks the heap instead of every
 * allocation counting. Exact when no other thread is allocating. */
static void add_requested(void *ctx, const void *ptr, size_t requested, uint32_t site)
{
    (void)ptr;
    (void)site;
    *(uint64_t *)ctx += requested;
}

uint64_t validate_requested_bytes(nmm_heap_t *h)
{
    uint64_t total = 0;
    if (h->has_hdr)
        heap_foreach_live(h, add_requested, &total);
    return total;
}
