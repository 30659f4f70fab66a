/* failpoint.c — named, seeded fail points per heap (in the spirit of Linux
 * failslab and libfiu): probability, every n-th, after n, at most n, size filter.
 * Owns the per-heap fp_table (mapped with os_map, never malloc). Must not count
 * injected failures (the core does, when should_fail says yes) and must not
 * print. failpoint_should_fail is called by any thread; arming may race with it
 * and is safe: every field is an atomic, a rule is published by its armed flag.
 */
#include "internal.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

struct fp_rule {
    _Atomic uint32_t armed;          /* 0 = never fails; set last when arming */
    _Atomic uint32_t has_prob;       /* 1 = the probability term applies */
    _Atomic uint64_t prob_threshold; /* fail when a 64-bit draw < this; UINT64_MAX = always */
    _Atomic uint64_t every;          /* fail only every n-th counted hit; 0 = each */
    _Atomic uint64_t after;          /* let the first n counted hits pass */
    _Atomic uint64_t max_fails;      /* stop after n failures; 0 = unbounded */
    _Atomic uint64_t min_size;       /* only requests >= this count as hits */
    _Atomic uint64_t max_size;       /* only requests <= this count as hits; 0 = any */
    _Atomic uint64_t hits;           /* counted hits since arming */
    _Atomic uint64_t fails;          /* failures injected since arming */
    _Atomic uint64_t rng;            /* splitmix64 counter, reset from the seed on arming */
};

struct fp_table {
    size_t map_bytes;
    uint64_t seed; /* effective seed (config.seed, or the clock when that was 0) */
    struct fp_rule rules[FP_POINT_COUNT_];
    /* Every accepted spec, ';'-joined, for reports (the config's pointer may not
     * outlive nmm_heap_create). Written by nmm_failpoint_set; truncated when full. */
    char specs[1024];
    size_t specs_len;
};

/* A parsed rule before it is published. */
struct fp_parsed {
    int point;
    bool off;
    bool has_prob;
    uint64_t prob_threshold, every, after, max_fails, min_size, max_size;
};

static const char *const point_names[FP_POINT_COUNT_] = {
    [FP_ALLOC] = "alloc",
    [FP_POOL_GROW] = "pool.grow",
    [FP_OS_MAP] = "os.map",
    [FP_TCACHE_REFILL] = "tcache.refill",
    [FP_LARGE_MAP] = "large.map",
    [FP_SLAB_DESC] = "slab.desc",
};

/* what an error lists after "valid": the points (from point_names, so a new point is
 * named once) or the terms */
enum valid_list { VALID_NONE, VALID_POINTS, VALID_TERMS };
static const char valid_terms[] =
    "p<probability 0..1 or N%>, every<n>, after<n>, max<n>, min<bytes>, maxsize<bytes>, off";

#define GOLDEN 0x9e3779b97f4a7c15ull

/* The first draw after arming point p of a table seeded with seed. */
static uint64_t rng_start(uint64_t seed, int point)
{
    return mix64(seed + (uint64_t)(point + 1) * 0xd1b54a32d192ed03ull);
}

static void set_err(char *err, size_t err_len, const char *spec, size_t spec_len,
                    const char *what, const char *piece, size_t piece_len,
                    enum valid_list valid)
{
    if (!err || !err_len)
        return;
    strbuf_t sb;
    strbuf_init(&sb, err, err_len);
    strbuf_puts(&sb, "fail point spec '");
    strbuf_putn(&sb, spec, spec_len);
    strbuf_puts(&sb, "': ");
    strbuf_puts(&sb, what);
    if (piece) {
        strbuf_puts(&sb, " '");
        strbuf_putn(&sb, piece, piece_len);
        strbuf_putc(&sb, '\'');
    }
    if (valid == VALID_POINTS) {
        strbuf_puts(&sb, "; valid points: ");
        for (int i = 0; i < FP_POINT_COUNT_; i++) {
            strbuf_puts(&sb, i ? ", " : "");
            strbuf_puts(&sb, point_names[i]);
        }
    } else if (valid == VALID_TERMS) {
        strbuf_puts(&sb, "; valid terms: ");
        strbuf_puts(&sb, valid_terms);
    }
}

/* "0.25", ".5", "1", "25%" → threshold on a 64-bit draw. Integer-only, exact. */
static bool parse_prob(const char *s, size_t n, uint64_t *threshold)
{
    unsigned __int128 num = 0, den = 1;
    bool digits = false, dot = false, pct = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') {
            if (den > (unsigned __int128)1e18)
                continue; /* beyond 18 decimals nothing changes the threshold */
            num = num * 10 + (unsigned)(c - '0');
            if (dot)
                den *= 10;
            digits = true;
            if (num > (unsigned __int128)1e30)
                return false;
        } else if (c == '.' && !dot) {
            dot = true;
        } else if (c == '%' && i == n - 1) {
            pct = true;
        } else {
            return false;
        }
    }
    if (!digits)
        return false;
    if (pct)
        den *= 100;
    if (num > den)
        return false;
    if (num == den) {
        *threshold = UINT64_MAX;
        return true;
    }
    unsigned __int128 t = (num << 64) / den;
    *threshold = (uint64_t)t;
    return true;
}

static bool has_prefix(const char *s, size_t n, const char *pre, size_t *plen)
{
    size_t k = strlen(pre);
    if (n < k || memcmp(s, pre, k) != 0)
        return false;
    *plen = k;
    return true;
}

static const char *skip_space(const char *s, const char *end)
{
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    return s;
}

static const char *trim_end(const char *s, const char *end)
{
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return end;
}

/* Parse one spec "NAME[@TERM,...]" (s..e, already trimmed). */
static bool parse_one(const char *s, const char *e, struct fp_parsed *out, char *err,
                      size_t err_len)
{
    memset(out, 0, sizeof *out);
    size_t spec_len = (size_t)(e - s);
    const char *at = memchr(s, '@', spec_len);
    const char *name_end = trim_end(s, at ? at : e);
    size_t name_len = (size_t)(name_end - s);
    out->point = -1;
    for (int i = 0; i < FP_POINT_COUNT_; i++)
        if (strlen(point_names[i]) == name_len && memcmp(point_names[i], s, name_len) == 0)
            out->point = i;
    if (out->point < 0) {
        set_err(err, err_len, s, spec_len, name_len ? "unknown point" : "missing point name",
                name_len ? s : NULL, name_len, VALID_POINTS);
        return false;
    }
    if (!at)
        return true; /* bare name: fail every hit */
    const char *p = at + 1;
    if (skip_space(p, e) == e) {
        set_err(err, err_len, s, spec_len, "no term after '@'", NULL, 0, VALID_TERMS);
        return false;
    }
    while (p <= e) {
        const char *comma = memchr(p, ',', (size_t)(e - p));
        const char *te = comma ? comma : e;
        const char *ts = skip_space(p, te);
        te = trim_end(ts, te);
        size_t tl = (size_t)(te - ts), k = 0;
        uint64_t v = 0;
        bool ok = tl > 0;
        if (!ok) {
            set_err(err, err_len, s, spec_len, "empty term", NULL, 0, VALID_TERMS);
            return false;
        }
        if (tl == 3 && memcmp(ts, "off", 3) == 0) {
            out->off = true;
        } else if (has_prefix(ts, tl, "every", &k)) {
            ok = options_parse_u64(ts + k, tl - k, false, &v) && v > 0;
            out->every = v;
        } else if (has_prefix(ts, tl, "after", &k)) {
            ok = options_parse_u64(ts + k, tl - k, false, &v);
            out->after = v;
        } else if (has_prefix(ts, tl, "maxsize", &k)) {
            ok = options_parse_u64(ts + k, tl - k, true, &v);
            out->max_size = v;
        } else if (has_prefix(ts, tl, "max", &k)) {
            ok = options_parse_u64(ts + k, tl - k, false, &v) && v > 0;
            out->max_fails = v;
        } else if (has_prefix(ts, tl, "min", &k)) {
            ok = options_parse_u64(ts + k, tl - k, true, &v);
            out->min_size = v;
        } else if (has_prefix(ts, tl, "p", &k)) {
            ok = parse_prob(ts + k, tl - k, &out->prob_threshold);
            out->has_prob = true;
            if (!ok) {
                set_err(err, err_len, s, spec_len,
                        "probability must be a number from 0 to 1 (or 0% to 100%), got",
                        ts, tl, VALID_NONE);
                return false;
            }
        } else {
            set_err(err, err_len, s, spec_len, "unknown term", ts, tl, VALID_TERMS);
            return false;
        }
        if (!ok) {
            set_err(err, err_len, s, spec_len, "bad number in term", ts, tl, VALID_TERMS);
            return false;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    if (out->max_size && out->min_size > out->max_size) {
        set_err(err, err_len, s, spec_len, "min is larger than maxsize", NULL, 0, VALID_NONE);
        return false;
    }
    return true;
}

/* Walk ';'-separated specs, calling apply for each (NULL apply = check only). */
static nmm_status_t parse_all(const char *specs, char *err, size_t err_len,
                              void (*apply)(void *, const struct fp_parsed *), void *ctx)
{
    if (err && err_len)
        err[0] = '\0';
    if (!specs)
        return NMM_OK;
    /* Two passes: nothing is armed unless the whole string is valid. */
    for (int pass = 0; pass < 2; pass++) {
        const char *p = specs;
        for (;;) {
            const char *semi = strchr(p, ';');
            const char *e = semi ? semi : p + strlen(p);
            const char *s = skip_space(p, e);
            e = trim_end(s, e);
            if (s < e) {
                struct fp_parsed fp;
                if (!parse_one(s, e, &fp, err, err_len))
                    return NMM_E_INVALID_ARGUMENT;
                if (pass == 1 && apply)
                    apply(ctx, &fp);
            }
            if (!semi)
                break;
            p = semi + 1;
        }
        if (!apply)
            break;
    }
    return NMM_OK;
}

nmm_status_t failpoint_check(const char *specs, char *err, size_t err_len)
{
    return parse_all(specs, err, err_len, NULL, NULL);
}

static struct fp_table *table_of(nmm_heap_t *heap)
{
    return __atomic_load_n(heap_failpoints_slot(heap), __ATOMIC_ACQUIRE);
}

static struct fp_table *table_create(nmm_heap_t *heap, uint64_t seed)
{
    size_t page = os_page_size();
    size_t bytes = (sizeof(struct fp_table) + page - 1) & ~(page - 1);
    struct fp_table *t = os_map(NULL, bytes);
    if (!t)
        return NULL;
    t->map_bytes = bytes;
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = mix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) |
               1; /* never 0 */
    }
    t->seed = seed;
    struct fp_table *expected = NULL;
    if (!__atomic_compare_exchange_n(heap_failpoints_slot(heap), &expected, t, false,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        os_unmap(t, bytes);
        return expected;
    }
    return t;
}

nmm_status_t failpoint_init(nmm_heap_t *heap, uint64_t seed, const char *specs, char *err,
                            size_t err_len)
{
    if (!table_of(heap) && !table_create(heap, seed))
        return NMM_E_NOMEM;
    return nmm_failpoint_set(heap, specs, err, err_len);
}

void failpoint_destroy(nmm_heap_t *heap)
{
    struct fp_table **slot = heap_failpoints_slot(heap);
    struct fp_table *t = *slot;
    if (!t)
        return;
    *slot = NULL;
    os_unmap(t, t->map_bytes);
}

static void apply_rule(void *ctx, const struct fp_parsed *fp)
{
    struct fp_table *t = ctx;
    struct fp_rule *r = &t->rules[fp->point];
    atomic_store(&r->armed, 0);
    if (fp->off)
        return;
    atomic_store(&r->has_prob, fp->has_prob);
    atomic_store(&r->prob_threshold, fp->prob_threshold);
    atomic_store(&r->every, fp->every);
    atomic_store(&r->after, fp->after);
    atomic_store(&r->max_fails, fp->max_fails);
    atomic_store(&r->min_size, fp->min_size);
    atomic_store(&r->max_size, fp->max_size);
    atomic_store(&r->hits, 0);
    atomic_store(&r->fails, 0);
    atomic_store(&r->rng, rng_start(t->seed, fp->point));
    atomic_store_explicit(&r->armed, 1, memory_order_release);
}

NMM_API nmm_status_t nmm_failpoint_set(nmm_heap_t *heap, const char *spec, char *err,
                                       size_t err_len)
{
    if (!heap) {
        if (err && err_len) {
            strbuf_t sb;
            strbuf_init(&sb, err, err_len);
            strbuf_puts(&sb, "nmm_failpoint_set: heap is NULL");
        }
        return NMM_E_INVALID_ARGUMENT;
    }
    nmm_status_t st = failpoint_check(spec, err, err_len);
    if (st != NMM_OK || !spec)
        return st;
    struct fp_table *t = table_of(heap);
    if (!t && !(t = table_create(heap, heap_config(heap)->seed)))
        return NMM_E_NOMEM;
    st = parse_all(spec, err, err_len, apply_rule, t);
    if (st == NMM_OK && *spec) {
        strbuf_t sb = {.buf = t->specs, .cap = sizeof t->specs, .len = t->specs_len};
        if (sb.len)
            strbuf_putc(&sb, ';');
        strbuf_puts(&sb, spec);
        t->specs_len = sb.len < sizeof t->specs ? sb.len : sizeof t->specs - 1;
    }
    bool any = false;
    for (int i = 0; i < FP_POINT_COUNT_; i++)
        any |= atomic_load(&t->rules[i].armed) != 0;
    heap_set_failpoints_armed(heap, any);
    return st;
}

const char *failpoint_describe(nmm_heap_t *heap)
{
    struct fp_table *t = table_of(heap);
    return t ? t->specs : "";
}

bool failpoint_should_fail(nmm_heap_t *heap, fp_point_t point, size_t size)
{
    if ((unsigned)point >= FP_POINT_COUNT_)
        return false;
    struct fp_table *t = table_of(heap);
    if (!t)
        return false;
    struct fp_rule *r = &t->rules[point];
    if (!atomic_load_explicit(&r->armed, memory_order_acquire))
        return false;
    uint64_t max_size = atomic_load_explicit(&r->max_size, memory_order_relaxed);
    if (size < atomic_load_explicit(&r->min_size, memory_order_relaxed) ||
        (max_size && size > max_size))
        return false; /* filtered requests are not hits */
    uint64_t n = atomic_fetch_add_explicit(&r->hits, 1, memory_order_relaxed) + 1;
    uint64_t after = atomic_load_explicit(&r->after, memory_order_relaxed);
    if (n <= after)
        return false;
    uint64_t every = atomic_load_explicit(&r->every, memory_order_relaxed);
    if (every && (n - after) % every != 0)
        return false;
    if (atomic_load_explicit(&r->has_prob, memory_order_relaxed)) {
        uint64_t thr = atomic_load_explicit(&r->prob_threshold, memory_order_relaxed);
        uint64_t draw =
            mix64(atomic_fetch_add_explicit(&r->rng, GOLDEN, memory_order_relaxed) + GOLDEN);
        if (thr != UINT64_MAX && draw >= thr)
            return false;
    }
    uint64_t max_fails = atomic_load_explicit(&r->max_fails, memory_order_relaxed);
    if (max_fails) {
        uint64_t f = atomic_load_explicit(&r->fails, memory_order_relaxed);
        do {
            if (f >= max_fails)
                return false;
        } while (!atomic_compare_exchange_weak_explicit(&r->fails, &f, f + 1,
                                                        memory_order_relaxed,
                                                        memory_order_relaxed));
    } else {
        atomic_fetch_add_explicit(&r->fails, 1, memory_order_relaxed);
    }
    return true;
}
