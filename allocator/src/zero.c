/* zero.c — paranoid's zero-size blocks (hardened_malloc's approach): malloc(0)
 * returns a distinct 16-byte-aligned address in a reserved PROT_NONE area, so
 * any read or write of the block faults, and the SIGSEGV handler names it
 * ("write of a zero-size block allocated at ..."). Each slot keeps its state
 * (nmm_family_t of its allocation, or free) and its site id out of band; slots
 * are handed out round-robin, so a freed one is reused as late as possible and a
 * double free is named. At the other levels malloc(0) is a block of the smallest
 * class with its canary at offset 0 (a write of one byte is an overflow).
 * Slot changes under the area's lock; the fault handler reads without.
 */
#include "core.h"

#define ZERO_SLOTS ((size_t)1 << 20)  /* 16 MiB of addresses: a million live zero-size blocks */
#define ZERO_STRIDE 16

enum { ZS_FREE = 0, ZS_LIVE = 1 /* + nmm_family_t */, ZS_FREED = 8 };

struct zero_area {
    uintptr_t base;              /* ZERO_SLOTS * ZERO_STRIDE bytes of PROT_NONE */
    size_t map_bytes;            /* this structure's own mapping */
    pthread_mutex_t lock;
    size_t next;                 /* lock: where the round-robin search starts */
    size_t live;                 /* lock */
    uint64_t allocs, frees;      /* atomic */
    uint32_t sites[ZERO_SLOTS];  /* the allocation's site id (site | context << 16) */
    uint8_t states[ZERO_SLOTS];  /* ZS_FREE, ZS_LIVE + family, ZS_FREED */
};

bool zero_init(nmm_heap_t *h)
{
    h->zero = NULL;
    if (!h->paranoid)
        return true;
    size_t bytes = sizeof(struct zero_area);
    struct zero_area *z = os_map_sparse(bytes);
    if (!z)
        return false;
    void *area = os_reserve(ZERO_SLOTS * ZERO_STRIDE);
    if (!area) {
        os_unmap(z, bytes);
        return false;
    }
    z->base = (uintptr_t)area;
    z->map_bytes = bytes;
    pthread_mutex_init(&z->lock, NULL);
    h->zero = z;
    events_install_fault_handler();  /* a zero-size block's access is a SIGSEGV */
    return true;
}

void zero_destroy(nmm_heap_t *h)
{
    struct zero_area *z = h->zero;
    if (!z)
        return;
    h->zero = NULL;
    pthread_mutex_destroy(&z->lock);
    os_unmap((void *)z->base, ZERO_SLOTS * ZERO_STRIDE);
    os_unmap(z, z->map_bytes);
}

bool zero_owns(const nmm_heap_t *h, uintptr_t p)
{
    const struct zero_area *z = h->zero;
    return z && p - z->base < ZERO_SLOTS * ZERO_STRIDE;
}

void *zero_alloc(nmm_heap_t *h, uint32_t site_id)
{
    struct zero_area *z = h->zero;
    if (!z)
        return NULL;
    heap_lock(h, &z->lock);
    void *p = NULL;
    for (size_t n = 0, i = z->next; n < ZERO_SLOTS && z->live < ZERO_SLOTS; n++) {
        if (z->states[i] == ZS_FREE || z->states[i] == ZS_FREED) {
            z->sites[i] = site_id;
            __atomic_store_n(&z->states[i], ZS_LIVE + NMM_FAMILY_MALLOC, __ATOMIC_RELEASE);
            z->live++;
            z->next = (i + 1) % ZERO_SLOTS;
            p = (void *)(z->base + i * ZERO_STRIDE);
            break;
        }
        i = (i + 1) % ZERO_SLOTS;
    }
    pthread_mutex_unlock(&z->lock);
    if (p)
        __atomic_fetch_add(&z->allocs, 1, __ATOMIC_RELAXED);
    return p;
}

/* The slot of a zero-area address, or -1 when it is not a slot's start. */
static ptrdiff_t zero_slot(const struct zero_area *z, uintptr_t p)
{
    uintptr_t off = p - z->base;
    return off % ZERO_STRIDE ? -1 : (ptrdiff_t)(off / ZERO_STRIDE);
}

static bool zs_live(uint8_t st)
{
    return st >= ZS_LIVE && st <= ZS_LIVE + NMM_FAMILY_NEW_ARRAY;
}

bool zero_live(nmm_heap_t *h, const void *p, uint32_t *family, uint32_t *site)
{
    struct zero_area *z = h->zero;
    ptrdiff_t i = zero_slot(z, (uintptr_t)p);
    if (i < 0)
        return false;
    uint8_t st = __atomic_load_n(&z->states[i], __ATOMIC_ACQUIRE);
    if (!zs_live(st))
        return false;
    if (family)
        *family = st - ZS_LIVE;
    if (site)
        *site = z->sites[i];
    return true;
}

bool zero_swap_family(nmm_heap_t *h, const void *p, uint32_t set, uint32_t *family,
                      uint32_t *site)
{
    struct zero_area *z = h->zero;
    ptrdiff_t i = zero_slot(z, (uintptr_t)p);
    if (i < 0)
        return false;
    heap_lock(h, &z->lock);
    uint8_t st = z->states[i];
    bool live = zs_live(st);
    if (live) {
        *family = st - ZS_LIVE;
        *site = z->sites[i];
        __atomic_store_n(&z->states[i], (uint8_t)(ZS_LIVE + set), __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&z->lock);
    return live;
}

nmm_status_t zero_free(nmm_heap_t *h, void *p, nmm_site_t site, bool realloc_call)
{
    struct zero_area *z = h->zero;
    ptrdiff_t i = zero_slot(z, (uintptr_t)p);
    if (i < 0)
        return heap_report(h, realloc_call ? NMM_EV_INVALID_REALLOC : NMM_EV_INVALID_FREE,
                           NMM_INVALID_INTERIOR, p, 0, 0, site);
    heap_lock(h, &z->lock);
    uint8_t st = z->states[i];
    uint32_t asite = z->sites[i];
    if (zs_live(st)) {
        __atomic_store_n(&z->states[i], ZS_FREED, __ATOMIC_RELEASE);
        z->live--;
    }
    pthread_mutex_unlock(&z->lock);
    if (zs_live(st)) {
        track_note_free(p, track_context());
        __atomic_fetch_add(&z->frees, 1, __ATOMIC_RELAXED);
        return NMM_OK;
    }
    if (st == ZS_FREED)
        return heap_report(h, realloc_call ? NMM_EV_REALLOC_FREED : NMM_EV_DOUBLE_FREE, 0, p, 0,
                           asite, site);
    return heap_report(h, realloc_call ? NMM_EV_INVALID_REALLOC : NMM_EV_INVALID_FREE,
                       NMM_INVALID_UNMAPPED, p, 0, 0, site);
}

void zero_foreach_live(nmm_heap_t *h, heap_visit_fn visit, void *ctx)
{
    struct zero_area *z = h->zero;
    if (!z)
        return;
    heap_lock(h, &z->lock);
    for (size_t i = 0, seen = 0; i < ZERO_SLOTS && seen < z->live; i++)
        if (zs_live(z->states[i])) {
            seen++;
            visit(ctx, (const void *)(z->base + i * ZERO_STRIDE), 0, z->sites[i]);
        }
    pthread_mutex_unlock(&z->lock);
}

void zero_counts(const nmm_heap_t *h, uint64_t *allocs, uint64_t *frees)
{
    const struct zero_area *z = h->zero;
    *allocs = z ? __atomic_load_n(&z->allocs, __ATOMIC_RELAXED) : 0;
    *frees = z ? __atomic_load_n(&z->frees, __ATOMIC_RELAXED) : 0;
}

/* Async-signal-safe (no lock): a fault at a zero-size block's address. */
bool zero_describe(nmm_heap_t *h, uintptr_t addr, nmm_event_t *ev)
{
    struct zero_area *z = h->zero;
    if (!z || addr - z->base >= ZERO_SLOTS * ZERO_STRIDE)
        return false;
    size_t i = (addr - z->base) / ZERO_STRIDE;
    ev->kind = NMM_EV_ZERO_SIZE_ACCESS;
    ev->address = z->base + i * ZERO_STRIDE;
    ev->size = 0;
    ev->detail = (uint32_t)(addr - ev->address);
    uint8_t st = __atomic_load_n(&z->states[i], __ATOMIC_ACQUIRE);
    ev->alloc_site = zs_live(st) || st == ZS_FREED ? z->sites[i] : 0; /* the stored id */
    return true;
}
