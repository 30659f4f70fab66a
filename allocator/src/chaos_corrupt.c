/* chaos_corrupt.c — damage to a heap's own books for the driver's corrupt_meta fault
 * (chaos.h NMM_CORRUPT_SHAPES): the chaos and coverage builds only; the release build
 * compiles nothing here. Each shape picks one structure of a quiescent heap (no other
 * thread inside it: the driver's workers have ended), plans the writes that damage it
 * the way a wild write or an allocator bug would, and keeps the bytes they replace so
 * the damage can be undone. It says where nmm_validate must name the damage; what
 * validate must report for each shape is the oracle's to know (harness/oracle.py), not
 * this file's. Plain stores: no lock, no atomic (on a quiescent heap neither is needed,
 * and none adds a yield point to the chaos build's schedules).
 */
#include "core.h"

#if defined(NMM_CHAOS) || defined(NMM_CHAOS_COVERAGE)

#include <string.h>

#define NMM_CORRUPT_NAME_(name, what) #name,
static const char *const shape_names[] = {NMM_CORRUPT_SHAPES(NMM_CORRUPT_NAME_)};
#undef NMM_CORRUPT_NAME_

const char *chaos_corrupt_name(int shape)
{
    return shape >= 0 && shape < NMM_CORRUPT_COUNT_ ? shape_names[shape] : NULL;
}

/* Add one write of len bytes (from now) at at, keeping what it replaces. */
static void plan_write(chaos_damage_t *d, void *at, const void *now, uint32_t len)
{
    if (d->nwrites == CHAOS_DAMAGE_WRITES || len > sizeof d->writes[0].now)
        return;
    if (!d->written)
        d->written = at;
    d->writes[d->nwrites].at = at;
    d->writes[d->nwrites].len = len;
    memcpy(d->writes[d->nwrites].now, now, len);
    memcpy(d->writes[d->nwrites].was, at, len);
    d->nwrites++;
}

static void plan_u64(chaos_damage_t *d, uint64_t *at, uint64_t now)
{
    plan_write(d, at, &now, sizeof now);
}

static void plan_ptr(chaos_damage_t *d, slab_t **at, slab_t *now)
{
    plan_write(d, at, &now, sizeof now);
}

/* The heads of every non-empty slab list (partial lists of each lane, empty lists);
 * with min2, only lists of at least two slabs. Returns how many, heads in out[]. */
static uint32_t list_heads(nmm_heap_t *h, bool min2, slab_t ***out, uint32_t cap)
{
    uint32_t n = 0;
    for (int c = 0; c < CORE_CLASSES; c++) {
        sizeclass_pool_t *pool = &h->pools[c];
        for (uint32_t l = 0; l <= CORE_LANES; l++) {
            slab_t **head = l < CORE_LANES ? &pool->partial[l] : &pool->empty;
            if (*head && (!min2 || (*head)->next) && n < cap)
                out[n++] = head;
        }
    }
    return n;
}

/* Whether slab s fits shape: the last block handed out from the bump pointer still
 * live (free_count; strict: and the bump one back changes which list its count asks
 * for, so validate's list check is met too), or two free-stack entries (freelist_link). */
static bool slab_fits(const slab_t *s, int shape, bool strict)
{
    if (shape != NMM_CORRUPT_free_count)
        return s->nstack >= 2;
    if (s->bump <= s->nstack || s->bump < 1)
        return false;
    uint8_t v = s->states[s->bump - 1];
    uint32_t nfree = slab_free_count(s);
    return (state_is_live_unaligned(v) || state_is_aligned(v)) &&
           (!strict || nfree == 0 || nfree + 1 == s->nblocks);
}

/* The pick-th (modulo) slab in use that fits shape, by the chunk map (not by the lists
 * the damage may be about); the strict fits first. NULL when none fits. */
static slab_t *nth_slab(nmm_heap_t *h, int shape, uint64_t pick)
{
    for (int strict = 1; strict >= 0; strict--) {
        uint64_t fits = 0;
        for (int pass = 0; pass < 2; pass++) {
            uint64_t k = 0, want = fits ? pick % fits : 0;
            for (size_t ci = 0, n = h->region_used >> CORE_CHUNK_SHIFT; ci < n; ci++) {
                slab_t *s = h->chunk_map[ci];
                if (!s || slab_base(s) != h->base + (ci << CORE_CHUNK_SHIFT) ||
                    !slab_fits(s, shape, strict))
                    continue;
                if (pass == 1 && k == want)
                    return s;
                k++;
            }
            fits = k;
            if (!fits)
                break;
        }
    }
    return NULL;
}

static bool plan_list(nmm_heap_t *h, int shape, uint64_t pick, chaos_damage_t *d)
{
    slab_t **heads[CORE_CLASSES * (CORE_LANES + 1)];
    uint32_t cap = (uint32_t)(sizeof heads / sizeof *heads), n = 0;
    /* a cycle through two slabs or more where a list has them (level off's 64 KiB slabs
     * often hold a class's blocks one slab per list), else a one-slab list's slab
     * linked to itself: the same reports either way */
    if (shape == NMM_CORRUPT_list_cycle)
        n = list_heads(h, true, heads, cap);
    if (!n)
        n = list_heads(h, false, heads, cap);
    if (!n) {
        d->what = "no slab on any list";
        return false;
    }
    slab_t *head = *heads[pick % n];
    d->named = head->data;
    if (shape == NMM_CORRUPT_list_twice) {
        /* push(head) once more: head->next = head, head->prev = head */
        d->what = "slab list: next and prev of its first slab";
        plan_ptr(d, &head->next, head);
        plan_ptr(d, &head->prev, head);
        return true;
    }
    slab_t *tail = head;
    while (tail->next)  /* a whole list (the heap validated clean before) */
        tail = tail->next;
    d->what = "slab list: next of its last slab";
    plan_ptr(d, &tail->next, head);
    return true;
}

static bool plan_slab(nmm_heap_t *h, int shape, uint64_t pick, chaos_damage_t *d)
{
    slab_t *s = nth_slab(h, shape, pick);
    if (!s) {
        d->what = shape == NMM_CORRUPT_free_count
                      ? "no slab whose last block from the bump pointer is live"
                      : "no slab with two free-stack entries";
        return false;
    }
    if (shape == NMM_CORRUPT_free_count) {
        /* bump one back: the slab counts one more free block, its last live one */
        uint32_t nfree = slab_free_count(s);
        uint16_t bump = (uint16_t)(s->bump - 1);
        d->what = "slab: bump pointer (its free count)";
        d->named = s->data + (size_t)bump * s->block_size;
        /* a full slab (on no list) now counts a free block; a slab with one block live
         * now counts all free, on the partial list: the list disagrees too */
        if (nfree == 0 || nfree + 1 == s->nblocks)
            d->also = s->data;
        plan_write(d, &s->bump, &bump, sizeof bump);
        return true;
    }
    uint16_t *stack = slab_stack(s);
    uint32_t i = (uint32_t)(pick % s->nstack);
    uint32_t j = (i + 1 + (uint32_t)((pick >> 20) % (s->nstack - 1u))) % s->nstack;
    d->what = "slab: free-stack entry";
    d->named = s->data + (size_t)stack[j] * s->block_size;  /* on the stack twice */
    d->also = s->data + (size_t)stack[i] * s->block_size;   /* on it no more */
    plan_write(d, &stack[i], &stack[j], sizeof stack[j]);
    return true;
}

static bool plan_quarantine(nmm_heap_t *h, int shape, chaos_damage_t *d)
{
    if (shape == NMM_CORRUPT_quar_bytes) {
        if (!h->quar) {
            d->what = "no quarantine (paranoid only)";
            return false;
        }
        d->what = "quarantine: byte count";
        plan_u64(d, &h->quar_bytes, h->quar_bytes + 16);
        return true;
    }
    if (!h->quar || !h->quar_count || h->quar_count >= h->quar_cap) {
        d->what = "no quarantined block in the shared quarantine (paranoid, tcache=0)";
        return false;
    }
    quarantine_entry_t *newest = &h->quar[(h->quar_head + h->quar_count - 1) % h->quar_cap];
    size_t count = h->quar_count;
    if (shape == NMM_CORRUPT_quar_twice) {
        /* the newest entry copied into the next slot, and counted */
        d->what = "quarantine: one more entry, a copy of the newest";
        d->named = newest->user;
        quarantine_entry_t *next = &h->quar[(h->quar_head + count) % h->quar_cap];
        plan_write(d, next, newest, sizeof *newest);
        count++;
        plan_write(d, &h->quar_count, &count, sizeof count);
        plan_u64(d, &h->quar_bytes, h->quar_bytes + newest->block_size);
        return true;
    }
    /* quar_lost: the newest entry dropped with its bytes; its block stays quarantined */
    d->what = "quarantine: its newest entry dropped";
    d->named = newest->poison;
    count--;
    plan_write(d, &h->quar_count, &count, sizeof count);
    plan_u64(d, &h->quar_bytes, h->quar_bytes - newest->block_size);
    return true;
}

bool chaos_corrupt_plan(nmm_heap_t *h, int shape, uint64_t pick, chaos_damage_t *d)
{
    memset(d, 0, sizeof *d);
    d->shape = shape;
    switch (shape) {
    case NMM_CORRUPT_list_twice:
    case NMM_CORRUPT_list_cycle:
        return plan_list(h, shape, pick, d);
    case NMM_CORRUPT_free_count:
    case NMM_CORRUPT_freelist_link:
        return plan_slab(h, shape, pick, d);
    case NMM_CORRUPT_quar_twice:
    case NMM_CORRUPT_quar_lost:
    case NMM_CORRUPT_quar_bytes:
        return plan_quarantine(h, shape, d);
    case NMM_CORRUPT_limit_charge:
        if (!h->limit) {
            d->what = "no limit (limit= not set)";
            return false;
        }
        d->what = "limit charge";
        plan_u64(d, &h->limit_used, h->limit_used + 64);
        return true;
    case NMM_CORRUPT_live_count: {
        sizeclass_pool_t *pool = &h->pools[pick % CORE_CLASSES];
        d->what = "class counters: allocations";
        plan_u64(d, &pool->allocs, pool->allocs + 1);
        return true;
    }
    case NMM_CORRUPT_retained:
        d->what = "retained bytes";
        plan_u64(d, &h->retained_bytes, h->retained_bytes + 4096);
        return true;
    default:
        d->what = "unknown shape";
        return false;
    }
}

void chaos_corrupt_apply(const chaos_damage_t *d)
{
    for (uint32_t i = 0; i < d->nwrites; i++)
        memcpy(d->writes[i].at, d->writes[i].now, d->writes[i].len);
}

void chaos_corrupt_undo(const chaos_damage_t *d)
{
    for (uint32_t i = d->nwrites; i-- > 0;)
        memcpy(d->writes[i].at, d->writes[i].was, d->writes[i].len);
}

#else
/* The release build: no way to damage a heap (ISO C wants a declaration here). */
typedef int chaos_corrupt_release_build_has_none;
#endif /* NMM_CHAOS || NMM_CHAOS_COVERAGE */
