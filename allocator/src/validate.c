/* validate.c — the full integrity sweep (nmm_validate, and paranoid's periodic
 * sweep) and heap_foreach_live. Must only be run on a quiescent heap when thread
 * caches are in use (other threads' fast paths take no lock); at paranoid every
 * state change is under a class lock, so the periodic sweep is safe under load.
 * Takes the registry lock, then every class lock, the region, large and quarantine
 * locks. Every list it walks is walked a bounded number of steps: a corrupted list
 * (a cycle, a slab on a list twice) is reported, never looped on. With full (the
 * nmm_validate call, on a quiescent heap) it also checks the books: live counters
 * against live blocks, the limit charge, quarantine bytes and membership.
 */
#include "core.h"

#include <sched.h>
#include <time.h>

static void validate_lock_all(nmm_heap_t *h)
{
    pthread_mutex_lock(&tcache_registry_lock);
    for (int c = 0; c < CORE_CLASSES; c++)
        heap_lock(h, &h->pools[c].lock);
    heap_lock(h, &h->region_lock);
    heap_lock(h, &h->large_lock);
    heap_lock(h, &h->quar_lock);
}

static void validate_unlock_all(nmm_heap_t *h)
{
    pthread_mutex_unlock(&h->quar_lock);
    pthread_mutex_unlock(&h->large_lock);
    pthread_mutex_unlock(&h->region_lock);
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

/* A quarantine entry's block (poison = block + user_off, normal or aligned): it must
 * be quarantined and in no other entry. Marked so that step 2 finds a quarantined
 * block no quarantine holds. */
static size_t validate_mark_quarantined(nmm_heap_t *h, const quarantine_entry_t *e)
{
    uint8_t *block = e->poison - h->user_off;
    slab_t *s = slab_of(h, (uintptr_t)block);
    int32_t idx = s ? slab_index(s, (uintptr_t)block) : -1;
    if (idx < 0)
        return validate_freelist_problem(h, e->user, VALIDATE_QUAR_ENTRY);
    uint8_t *st = &slab_states(s)[idx];
    uint8_t v = *st, base = v & (uint8_t)~BS_MARK;
    *st = v | BS_MARK;
    if ((v & BS_MARK) || (base != BS_QUARANTINE && (base & 0xF0) != BS_QUAR_ALIGNED))
        return validate_freelist_problem(h, e->user, VALIDATE_QUAR_ENTRY);
    return 0;
}

/* The quarantines: entries within their rings' capacity, each block marked, the byte
 * counts the entries' (the shared ring counts retired entries' bytes until they
 * leave; a thread's ring uncounts them when a sweep retires them). */
static size_t validate_quarantines(nmm_heap_t *h, bool full)
{
    size_t problems = 0;
    if (h->quar && h->quar_count <= h->quar_cap) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < h->quar_count; i++) {
            const quarantine_entry_t *e = &h->quar[(h->quar_head + i) % h->quar_cap];
            bytes += e->block_size;
            if (e->user)
                problems += validate_mark_quarantined(h, e);
        }
        if (full && bytes != __atomic_load_n(&h->quar_bytes, __ATOMIC_RELAXED))
            problems += validate_freelist_problem(h, NULL, VALIDATE_QUAR_BYTES);
    } else if (h->quar) {
        problems += validate_freelist_problem(h, NULL, VALIDATE_BIN);
    }
    if (h->slot < 0 || !full)
        return problems;
    for (tstate_t *ts = tcache_all; ts; ts = ts->next_all) {
        tcache_t *tc = ts->caches[h->slot];
        if (!tc || tc->heap != h || !tc->tq)
            continue;
        if (tc->tq_count > CORE_TQ_CAP) {
            problems += validate_freelist_problem(h, NULL, VALIDATE_BIN);
            continue;
        }
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < tc->tq_count; i++) {
            const quarantine_entry_t *e = &tc->tq[(tc->tq_head + i) % CORE_TQ_CAP];
            if (!e->user)
                continue;
            bytes += e->block_size;
            problems += validate_mark_quarantined(h, e);
        }
        if (bytes != tc->tq_bytes)
            problems += validate_freelist_problem(h, NULL, VALIDATE_QUAR_BYTES);
    }
    return problems;
}

/* One class's partial or empty list: at most bound steps (the slabs in use), each
 * entry flagged for this list, class and lane (a partial list's; CORE_LANES: any),
 * linked back to its predecessor and mapped. The first bad entry is reported, not
 * every one after it: in a cycle (a slab pushed twice) the same entry is met again on
 * every round, and one report per list says it. Returns its length. */
static uint64_t validate_list(nmm_heap_t *h, int c, uint32_t lane, slab_t *head, uint8_t flag,
                              uint64_t bound, size_t *problems)
{
    uint64_t n = 0;
    bool bad_entry = false;
    slab_t *prev = NULL;
    for (slab_t *s = head; s; prev = s, s = s->next) {
        if (++n > bound) {
            *problems += validate_freelist_problem(h, s->data, VALIDATE_LIST_LOOP);
            break;
        }
        if (!bad_entry &&
            (s->list != flag || s->cls != c || s->prev != prev || slab_of(h, slab_base(s)) != s ||
             (lane < CORE_LANES && s->lane != lane))) {
            *problems += validate_freelist_problem(h, s->data, VALIDATE_LIST_ENTRY);
            bad_entry = true;
        }
    }
    return n;
}

/* The pools: every slab in use is on the list its free count says (none when full,
 * partial, empty when every block is free), each list holds exactly the slabs flagged
 * for it, the pools' slab and empty counts and the retained bytes are those of the
 * slabs; the released-range and spare-descriptor stacks end. */
static size_t validate_pools(nmm_heap_t *h)
{
    size_t problems = 0;
    uint64_t slabs[CORE_CLASSES] = {0}, partial[CORE_CLASSES] = {0}, empty[CORE_CLASSES] = {0};
    uint64_t in_use = 0;
    FOREACH_SLAB(h, s)
    {
        in_use++;
        uint32_t nfree = slab_free_count(s);
        if (s->cls >= CORE_CLASSES) {
            problems += validate_freelist_problem(h, s->data, VALIDATE_LIST_ENTRY);
            continue;
        }
        slabs[s->cls]++;
        bool ok = s->list == SL_NONE    ? nfree == 0
                  : s->list == SL_PARTIAL ? nfree > 0 && nfree < s->nblocks
                  : s->list == SL_EMPTY   ? nfree == s->nblocks
                                          : false;
        if (s->list == SL_PARTIAL)
            partial[s->cls]++;
        else if (s->list == SL_EMPTY)
            empty[s->cls]++;
        if (!ok)
            problems += validate_freelist_problem(h, s->data, VALIDATE_LIST_FLAG);
    }
    uint64_t retained = 0;
    for (int c = 0; c < CORE_CLASSES; c++) {
        sizeclass_pool_t *pool = &h->pools[c];
        uint64_t np = 0;
        for (uint32_t l = 0; l < CORE_LANES; l++)
            np += validate_list(h, c, l, pool->partial[l], SL_PARTIAL, in_use, &problems);
        uint64_t ne = validate_list(h, c, CORE_LANES, pool->empty, SL_EMPTY, in_use, &problems);
        if (np != partial[c] || ne != empty[c] || ne != pool->nempty || slabs[c] != pool->nslabs)
            problems += validate_freelist_problem(h, NULL, VALIDATE_LIST_COUNT);
        retained += pool->nempty * sizeclass_slab_bytes[c];
    }
    if (retained != __atomic_load_n(&h->retained_bytes, __ATOMIC_RELAXED))
        problems += validate_freelist_problem(h, NULL, VALIDATE_RETAINED);
    uint64_t chunks = h->region_size >> CORE_CHUNK_SHIFT, n = 0;
    for (int c = 0; c < CORE_CLASSES; c++) {
        for (slab_t *s = h->released[c]; s; s = s->next_free) {
            if (++n > chunks || !s->released || slab_of(h, slab_base(s)) == s) {
                problems += validate_freelist_problem(h, s->data, VALIDATE_RELEASED);
                break;
            }
        }
    }
    n = 0;
    for (slab_t *s = h->spare_desc; s; s = s->next_free)
        if (++n > chunks) {
            problems += validate_freelist_problem(h, NULL, VALIDATE_RELEASED);
            break;
        }
    return problems;
}

/* Quiescent heap, every lock held: the live counters (caches merged) of each class
 * against the live blocks counted in its slabs, the large counters against the large
 * table, and the limit charge against the bytes of every live block. */
static size_t validate_books(nmm_heap_t *h, const uint64_t *census, uint64_t charged)
{
    size_t problems = 0;
    uint64_t allocs[CORE_CLASSES] = {0}, frees[CORE_CLASSES] = {0};
    tcache_sum(h, allocs, frees, NULL, NULL, NULL, NULL);
    for (int c = 0; c < CORE_CLASSES; c++) {
        uint64_t a = allocs[c] + __atomic_load_n(&h->pools[c].allocs, __ATOMIC_RELAXED);
        uint64_t f = frees[c] + __atomic_load_n(&h->pools[c].frees, __ATOMIC_RELAXED);
        if (a - f != census[c]) {
            problems += validate_freelist_problem(h, NULL, VALIDATE_LIVE_COUNT);
            break;
        }
    }
    uint64_t large_live = 0, large_charged = 0;
    problems += large_validate_books(h, &large_live, &large_charged);
    if (h->limit && __atomic_load_n(&h->limit_used, __ATOMIC_RELAXED) != charged + large_charged)
        problems += validate_freelist_problem(h, NULL, VALIDATE_LIMIT);
    return problems;
}

size_t validate_heap(nmm_heap_t *h, bool full)
{
    size_t problems = 0;
    bool was_sweeping = events_in_sweep;
    events_in_sweep = true;
    validate_lock_all(h);
    problems += validate_pools(h);

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
                if (tc->bins[c].count > tc->bins[c].cap) {
                    problems += validate_freelist_problem(h, NULL, VALIDATE_BIN);
                    continue;
                }
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

    problems += validate_quarantines(h, full);

    /* 2. Every block: live ones intact, free ones reached (and poisoned at
     * paranoid), quarantined ones in a quarantine (only on a quiescent heap: a free
     * at paranoid quarantines the state under the class lock and the block under
     * the quarantine lock, after), counted as live or charged to the limit as their
     * counters say; then clear the marks. */
    uint64_t census[CORE_CLASSES] = {0}, charged = 0;
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
            if ((state_is_live_unaligned(base) || base == BS_LIVE_BAD || state_is_aligned_any(base)) &&
                s->cls < CORE_CLASSES) {
                census[s->cls]++;
                charged += s->block_size;
            }
            if (full && !marked && (base == BS_QUARANTINE || (base & 0xF0) == BS_QUAR_ALIGNED))
                problems += validate_freelist_problem(h, user, VALIDATE_QUAR_LOST);
            /* blocks from the bump pointer on were never handed out (a slab made or
             * reused has every state cleared and bump at 0): one that was is one the
             * next allocation hands out a second time */
            if (i >= s->bump && base != BS_NEVER)
                problems += validate_freelist_problem(h, block, VALIDATE_PAST_BUMP);
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
            } else if (base == BS_NEVER && h->paranoid && detect_fresh_damaged(h, s, i)) {
                problems++;  /* reported; poisoned again (it never held anything) */
                detect_poison(block, s->block_size);
            } else if (state_is_free(base) && h->paranoid) {
                long dmg = detect_poison_damage_h(h, user, room);
                if (dmg >= 0) {
                    /* Written after it left the quarantine: report it once and
                     * re-poison it (it holds nothing of the user's and stays free). */
                    problems++;
                    uint32_t asite = 0;
                    if (detect_header_ok(h, user))
                        asite = slab_site(s, i, detect_header_has_site(detect_header_word(user)));
                    detect_note_poison_extent_h(h, user, room, user, dmg);
                    heap_report(h, NMM_EV_USE_AFTER_FREE, (uint32_t)dmg, user, 0, asite, 0);
                    detect_poison_h(h, user, room);
                }
            }
            if (marked)
                states[i] = base;
        }
    }

    problems += detect_quarantine_validate(h);
    problems += large_validate(h);
    if (full)
        problems += validate_books(h, census, charged);
    validate_unlock_all(h);
    events_in_sweep = was_sweeping;
    __atomic_fetch_add(&h->sweeps, 1, __ATOMIC_RELAXED);
    return problems;
}

/* ------------------------------------------------------------------ exit check */

#define EXIT_FINDINGS_MAX 256

static bool exit_is_quarantined(uint8_t v)
{
    return v == BS_QUARANTINE || (v & 0xF0) == BS_QUAR_ALIGNED;
}

/* What a slab block's check says now: 0 = nothing (intact, or no longer the
 * block the finding was about); else the event kind, with detail/size/site.
 * Other threads' caches take no lock, so a block caught while its owner was
 * writing it (handing it out, poisoning it into the quarantine) looks damaged
 * for a moment: a quarantined block counts only once a quarantine holds it (its
 * entry is written after its poison), a live one only while it stays live with
 * the same header. */
static uint32_t exit_recheck(nmm_heap_t *h, const exit_finding_t *f, uint32_t *detail, size_t *size,
                             uint32_t *site)
{
    if (__atomic_load_n(f->state, __ATOMIC_RELAXED) != f->state_was)
        return NMM_EV_NONE;  /* handed out, freed or reused meanwhile */
    slab_t *s = slab_of(h, (uintptr_t)f->user);
    uint32_t idx = slab_index_containing(s, (uintptr_t)f->user);
    if (exit_is_quarantined(f->state_was)) {
        if (!detect_quarantine_holds(h, f->user))
            return NMM_EV_NONE;
        long dmg = detect_poison_damage_h(h, f->user, f->room);
        if (dmg < 0)
            return NMM_EV_NONE;
        *detail = (uint32_t)dmg;
        detect_note_poison_extent_h(h, f->user, f->room, f->user, dmg);
        *size = 0;
        *site = 0;
        if (detect_header_ok(h, f->user))
            *site = slab_site(s, idx, detect_header_has_site(detect_header_word(f->user)));
        return NMM_EV_USE_AFTER_FREE;
    }
    if (detect_header_word(f->user) != f->hw)
        return NMM_EV_NONE;  /* written anew: not the block that looked damaged */
    bool has_site;
    uint32_t kind = detect_check_block(h, f->user, f->room, DETECT_SIZE_FROM_HEADER, detail, size,
                                       &has_site);
    *site = kind != NMM_EV_NONE ? slab_site(s, idx, has_site) : 0;
    return kind;
}

size_t validate_exit_check(nmm_heap_t *h, bool echo)
{
    exit_finding_t found[EXIT_FINDINGS_MAX];
    size_t n = 0, slab_found = 0;
    if (!h->checks)
        return 0;  /* level off: no header, canary or poison to look at */
    /* 1. Slab blocks, under the class locks: live ones whole, quarantined ones
     * (paranoid) still poisoned. What looks wrong is noted and looked at again. */
    for (int c = 0; c < CORE_CLASSES; c++)
        heap_lock(h, &h->pools[c].lock);
    FOREACH_SLAB(h, s)
    {
        uint8_t *states = slab_states(s);
        for (uint32_t i = 0; i < s->nblocks && n < EXIT_FINDINGS_MAX; i++) {
            uint8_t v = __atomic_load_n(&states[i], __ATOMIC_RELAXED);
            uint8_t *block = s->data + (size_t)i * s->block_size;
            bool live = state_is_live_unaligned(v) || state_is_aligned(v);
            bool quarantined = h->paranoid && exit_is_quarantined(v);
            if (!live && !quarantined)
                continue;
            uint32_t off = state_is_aligned(v) ? state_user_off(v) : h->user_off;
            if (quarantined)
                off = h->user_off;  /* poisoned from where a plain header ends */
            exit_finding_t f = {.user = block + off, .state = &states[i], .state_was = v,
                                .room = s->block_size - off, .hw = detect_header_word(block + off)};
            bool bad;
            if (quarantined) {
                bad = detect_poison_damage_h(h, f.user, f.room) >= 0;
            } else {
                uint32_t detail;
                size_t size;
                bool has_site;
                bad = detect_check_block(h, f.user, f.room, DETECT_SIZE_FROM_HEADER, &detail, &size,
                                         &has_site) != NMM_EV_NONE;
            }
            if (bad)
                found[n++] = f;
        }
    }
    for (int c = CORE_CLASSES - 1; c >= 0; c--)
        pthread_mutex_unlock(&h->pools[c].lock);
    slab_found = n;
    /* 2. Large blocks: changed only under the large lock, so what it finds is final. */
    size_t large_found = large_exit_scan(h, found + n, EXIT_FINDINGS_MAX - n);
    n += large_found < EXIT_FINDINGS_MAX - n ? large_found : EXIT_FINDINGS_MAX - n;
    __atomic_fetch_add(&h->sweeps, 1, __ATOMIC_RELAXED);
    if (!n)
        return 0;
    /* 3. Time for a thread caught in the middle of writing a block to finish it:
     * a slab finding stands only if it still does after each pause. */
    static const long pause_ms[] = {2, 10, 40};
    for (size_t r = 0; slab_found && r < sizeof pause_ms / sizeof *pause_ms; r++) {
        for (int k = 0; k < 4; k++)
            sched_yield();
        struct timespec pause = {0, pause_ms[r] * 1000 * 1000};
        nanosleep(&pause, NULL);
        size_t still = 0;
        for (size_t i = 0; i < slab_found; i++) {
            uint32_t detail, site;
            size_t size;
            if (exit_recheck(h, &found[i], &detail, &size, &site) != NMM_EV_NONE)
                found[still++] = found[i];
        }
        memmove(found + still, found + slab_found, (n - slab_found) * sizeof *found);
        n -= slab_found - still;
        slab_found = still;
    }
    /* 4. Report (no lock held: lines can be written at once). */
    bool was = events_echo_now, was_sweeping = events_in_sweep;
    events_echo_now = echo;
    events_in_sweep = true;
    size_t reported = 0;
    for (size_t i = 0; i < n; i++) {
        exit_finding_t *f = &found[i];
        uint32_t kind = f->kind, detail = f->detail, site = f->site;
        size_t size = f->size;
        if (f->state) {
            kind = exit_recheck(h, f, &detail, &size, &site);
            if (kind == NMM_EV_NONE)
                continue;
            if (kind == NMM_EV_USE_AFTER_FREE) {
                /* reported once: the quarantine finds it intact when it lets go */
                detect_poison_h(h, f->user, f->room);
            } else {
                uint8_t bad = state_is_aligned(f->state_was)
                                  ? (uint8_t)(BS_ALIGNED_BAD | (f->state_was & 15))
                                  : BS_LIVE_BAD;  /* reported once: its free retires it quietly */
                uint8_t was_state = f->state_was;
                if (!__atomic_compare_exchange_n(f->state, &was_state, bad, false, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED))
                    continue;
            }
        }
        heap_report(h, kind, detail, f->user, size, site, 0);
        reported++;
    }
    events_echo_now = was;
    events_in_sweep = was_sweeping;
    return reported + (large_found > EXIT_FINDINGS_MAX ? large_found - EXIT_FINDINGS_MAX : 0);
}

NMM_API size_t nmm_exit_check(nmm_heap_t *h)
{
    return h ? validate_exit_check(h, false) : 0;
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
    zero_foreach_live(h, visit, ctx);
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
