/* options.c — the one table of runtime options and the one parser for NMM_OPTIONS
 * strings; nmm_config_init's defaults come from the same table. Two kinds of key:
 * heap keys (fields of nmm_config_t, for any heap) and process keys (leak report,
 * log file, exit code, symbolizer: NMM_OPTIONS only; they apply to every heap of
 * the process). Holds the only getenv calls of the allocator: process_defaults
 * (the process keys, on first use) and options_from_env (the default heap's
 * keys), which run in the preload library's constructor or inside the first
 * malloc of the process: nothing here may allocate (kept strings go to a static
 * arena, then to os_map). Any thread; the parser keeps no state besides that
 * arena and the process options, written once on first use and once more by
 * options_from_env under the default heap's lock.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum opt_kind {
    OPT_LEVEL,  /* off | standard | paranoid (or 0 | 1 | 2) */
    OPT_POLICY, /* record | abort */
    OPT_SIZE,   /* bytes, k/M/G/T suffixes (binary) */
    OPT_COUNT,  /* plain unsigned number */
    OPT_BOOL,   /* 0/1, true/false, yes/no, on/off */
    OPT_PBOOL,  /* a bool that level=paranoid turns on unless it is given */
    OPT_STACKS, /* 1/N (=> tracking on), 0 = no stacks */
    OPT_FAIL,   /* fail-point specs (see nmm_failpoint_set), ';'-separated */
    OPT_STRING, /* free text up to the next ':' (a path), kept for the process */
    OPT_FORMAT  /* text | json | both */
} opt_kind_t;

/* Which struct a key's field lives in. */
enum { SCOPE_HEAP = 0, SCOPE_PROCESS = 1 };

typedef struct option_def {
    const char *name;  /* key in NMM_OPTIONS */
    opt_kind_t kind;
    int scope;         /* SCOPE_HEAP: nmm_config_t; SCOPE_PROCESS: options_process_t */
    const char *field; /* the field (also accepted as a key) */
    size_t offset; /* of the field in its struct */
    size_t width;  /* sizeof the field: 4 or 8 */
    const char *def;  /* default, in option syntax; parsed by nmm_config_init */
    const char *unit;
    const char *help; /* meaning, then what it costs (measured: README "Options") */
} option_def_t;

#define FIELD(f) SCOPE_HEAP, #f, offsetof(nmm_config_t, f), sizeof(((nmm_config_t *)0)->f)
#define PFIELD(f) \
    SCOPE_PROCESS, #f, offsetof(options_process_t, f), sizeof(((options_process_t *)0)->f)

/* The table. Order is the order of `NMM_OPTIONS=help`. */
static const option_def_t options[] = {
    {"level", OPT_LEVEL, FIELD(level), "off", "off|standard|paranoid",
     "detection level: off = pointer checks only; standard = + header checksum, "
     "head guard, tail canary; paranoid = + poisoning, quarantine, guard pages. Cost "
     "(instructions of gcc's cc1 -O2 vs glibc): off x1.00, standard x1.02, paranoid x2.02"},
    {"policy", OPT_POLICY, FIELD(policy), "record", "record|abort",
     "on a detection: record an event and return an error, or write one line and abort"},
    {"limit", OPT_SIZE, FIELD(limit_bytes), "0", "bytes",
     "cap on bytes handed out; allocations past it fail with ENOMEM; 0 = no limit"},
    {"retain", OPT_SIZE, FIELD(retain_bytes), "16M", "bytes",
     "empty-slab bytes kept mapped before slabs go back to the OS (below it, a class "
     "returns the empty slabs it kept unused through its last 32 slabs emptied); also the "
     "budget of freed large mappings kept for reuse (not at paranoid or with guard pages); "
     "0 = none"},
    {"quarantine", OPT_SIZE, FIELD(quarantine_bytes), "4M", "bytes",
     "paranoid: freed bytes held back before reuse (use-after-free window)"},
    {"sweep", OPT_COUNT, FIELD(sweep_every_ops), "0", "ops",
     "paranoid: full integrity sweep every N operations; 0 = never"},
    {"guard", OPT_PBOOL, FIELD(guard_pages), "0", "bool",
     "guard page after each large block (level=paranoid turns it on unless given)"},
    {"exit_check", OPT_PBOOL, FIELD(exit_check), "0", "bool",
     "integrity sweep when the heap ends (the default heap: at exit, before the leak report): "
     "every live block's header and canary, at paranoid every freed block's poison, each "
     "problem reported and written to stderr; level=paranoid turns it on unless given. Costs "
     "one read of the live headers and canaries (and at paranoid of all free memory)"},
    {"poison_limit", OPT_SIZE, FIELD(poison_limit), "0", "bytes",
     "paranoid: poison and check only the first and last N bytes of a freed block longer "
     "than 2N (less memory traffic, a use after free in the middle goes unseen); 0 = whole "
     "blocks"},
    {"tcache", OPT_BOOL, FIELD(thread_cache), "1", "bool",
     "per-thread caches; 0 = every operation takes the heap lock"},
    {"tracking", OPT_BOOL, FIELD(tracking), "0", "bool",
     "record allocation sites (and sampled stacks) for leak reports. Cost (cc1 -O2, at "
     "standard, vs glibc): x1.13 with stacks=0, x1.16 with the default 1/64"},
    {"stacks", OPT_STACKS, FIELD(stack_sample), "1/64", "1/N",
     "with tracking: capture a stack on 1 in N allocations; giving it turns tracking on; "
     "0 = never. Cost (cc1 -O2 vs glibc): x1.16 at 1/64, x2.02 at 1 (every allocation)"},
    {"events", OPT_COUNT, FIELD(event_capacity), "1024", "entries",
     "event ring capacity (at most 1M); detections beyond it are counted as dropped"},
    {"seed", OPT_COUNT, FIELD(seed), "0", "u64", "seed of fail-point decisions; 0 = from the clock"},
    {"fail", OPT_FAIL, FIELD(failpoints), "", "spec",
     "fail points NAME@TERM,...;... (NAME: alloc, pool.grow, os.map, tcache.refill, "
     "large.map, slab.desc; TERM: p<prob>, every<n>, after<n>, max<n>, min<bytes>, maxsize<bytes>, "
     "off)"},
    /* process keys: NMM_OPTIONS only (the default heap's process) */
    {"strict", OPT_BOOL, PFIELD(strict), "0", "bool",
     "1 = a bad NMM_OPTIONS key or value is fatal: each is named, then exit 1 before main"},
    {"leaks", OPT_BOOL, PFIELD(leaks), "1", "bool",
     "with tracking: the leak report at exit, as LSan's (definitely lost, indirectly lost, "
     "still reachable from globals, stacks, TLS or registers; stderr hears of lost blocks "
     "only); 0 = none"},
    {"suppressions", OPT_STRING, PFIELD(suppressions), "", "file",
     "leak suppressions in LSan's format (leak:PATTERN per line, matched against each "
     "frame's function, module and file; * wildcard, ^ $ anchors, # comments); the C "
     "library's one-time buffers are always suppressed"},
    {"exitcode", OPT_COUNT, PFIELD(exitcode), "23", "0..255",
     "exit status when, at exit, blocks were lost or detections were recorded on the "
     "default heap (as LSan's); 0 = keep the program's own"},
    {"log_path", OPT_STRING, PFIELD(log_path), "", "prefix",
     "reports go to PREFIX.<pid> (text) and/or PREFIX.<pid>.json (JSON lines) instead of "
     "stderr, one file per process; empty = stderr"},
    {"log_format", OPT_FORMAT, PFIELD(log_format), "text", "text|json|both",
     "with log_path: the text report, JSON lines (one object per report), or both"},
    {"log_summary", OPT_BOOL, PFIELD(log_summary), "0", "bool",
     "with log_path: each error report's summary line (nmm: KIND at ADDR ...) goes to "
     "stderr as well, for whoever watches stderr (a harness, a CI log) while the file "
     "has the whole report"},
    {"symbolize", OPT_BOOL, PFIELD(symbolize), "1", "bool",
     "frames get file:line:column from llvm-symbolizer or addr2line (a child process run "
     "when a report is written, for modules with debug info); 0 = function+offset only"},
    {"copy_check", OPT_BOOL, PFIELD(copy_check), "1", "bool",
     "libnmm_preload.so at standard and above: memcpy, memmove, memset, strcpy, strncpy, "
     "strcat, stpcpy (and __*_chk) check a destination or source in a heap block before "
     "copying (one address-map lookup for a pointer into the heap, two compares for any "
     "other); 0 = they go straight to the C library's (bench target "
     "nmm-preload-standard-nocopy shows the difference)"},
    {"symbolizer", OPT_STRING, PFIELD(symbolizer), "", "path",
     "the symbolizer to run (llvm-symbolizer or addr2line); empty = the first of "
     "llvm-symbolizer, llvm-symbolizer-N, addr2line on PATH"},
    {"avx2", OPT_BOOL, PFIELD(avx2), "1", "bool",
     "paranoid: blocks over 256 bytes are poisoned and checked with AVX2 when the CPU has "
     "it; 0 = with the SSE2 code a CPU without AVX2 runs (the same checks: to test that "
     "path on a machine with AVX2)"},
};
#define OPTION_COUNT (sizeof options / sizeof options[0])

/* ------------------------------------------------------------------ numbers */

bool options_parse_u64(const char *s, size_t n, bool sizes, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    unsigned base = 10;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        i = 2;
    }
    size_t start = i;
    for (; i < n; i++) {
        unsigned d;
        char c = s[i];
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
    }
    if (i == start)
        return false;
    if (i < n && sizes) {
        int shift;
        switch (s[i]) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        case 'b': case 'B': shift = 0; i--; break;
        default: return false;
        }
        i++;
        if (v > (UINT64_MAX >> shift))
            return false;
        v <<= shift;
        if (i < n && (s[i] == 'B' || s[i] == 'b'))
            i++;
        else if (i + 1 < n && s[i] == 'i' && s[i + 1] == 'B' && shift)
            i += 2;
    }
    if (i != n)
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ fail copies */

/* Process-lifetime storage for fail-point strings (nmm_config_t.failpoints points
 * here): bump allocation in a static arena first, so NMM_OPTIONS works inside the
 * first malloc, then in mapped chunks. Never freed: the contract is "lives as long
 * as the process", and a program parsing options for thousands of heaps spends
 * only the bytes of its strings. */
#define KEEP_CHUNK ((size_t)64 << 10)

struct keep_chunk {
    _Atomic size_t used;
    size_t size;
    char *data;
};

static char keep_static[8192];
static struct keep_chunk keep_first = {0, sizeof keep_static, keep_static};
static _Atomic(struct keep_chunk *) keep_current = &keep_first;

static char *keep_alloc(size_t need)
{
    for (;;) {
        struct keep_chunk *c = atomic_load(&keep_current);
        size_t off = atomic_fetch_add(&c->used, need);
        if (off + need <= c->size)
            return c->data + off;
        size_t page = os_page_size();
        size_t bytes = need + sizeof(struct keep_chunk) > KEEP_CHUNK
                           ? need + sizeof(struct keep_chunk)
                           : KEEP_CHUNK;
        bytes = (bytes + page - 1) & ~(page - 1);
        struct keep_chunk *fresh = os_map(NULL, bytes);
        if (!fresh)
            return NULL;
        fresh->size = bytes - sizeof *fresh;
        fresh->data = (char *)(fresh + 1);
        if (!atomic_compare_exchange_strong(&keep_current, &c, fresh))
            os_unmap(fresh, bytes); /* another thread replaced it: use theirs */
    }
}

static char *keep_string(const char *a, size_t an, const char *b, size_t bn)
{
    size_t need = an + (an && bn ? 1 : 0) + bn + 1;
    char *dst = keep_alloc(need);
    if (!dst)
        return NULL;
    memcpy(dst, a, an);
    size_t k = an;
    if (an && bn)
        dst[k++] = ';';
    memcpy(dst + k, b, bn);
    dst[k + bn] = '\0';
    return dst;
}

/* ------------------------------------------------------------------ parser */

static bool word_is(const char *s, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(s, w, n) == 0;
}

/* The words a key of one kind takes and what each stands for. */
typedef struct word_value {
    const char *word;
    uint64_t value;
} word_value_t;

static const word_value_t level_words[] = {
    {"off", NMM_LEVEL_OFF},           {"0", NMM_LEVEL_OFF},
    {"standard", NMM_LEVEL_STANDARD}, {"1", NMM_LEVEL_STANDARD},
    {"paranoid", NMM_LEVEL_PARANOID}, {"2", NMM_LEVEL_PARANOID},
    {NULL, 0}};
static const word_value_t policy_words[] = {
    {"record", NMM_POLICY_RECORD}, {"abort", NMM_POLICY_ABORT}, {NULL, 0}};
static const word_value_t bool_words[] = {
    {"1", 1}, {"true", 1},  {"yes", 1}, {"on", 1},
    {"0", 0}, {"false", 0}, {"no", 0},  {"off", 0},
    {NULL, 0}};
static const word_value_t format_words[] = {
    {"text", NMM_LOG_TEXT}, {"json", NMM_LOG_JSON}, {"both", NMM_LOG_TEXT | NMM_LOG_JSON},
    {NULL, 0}};

/* The value of the word v[0..n) among words; false when it is none of them. */
static bool word_value(const char *v, size_t n, const word_value_t *words, uint64_t *out)
{
    for (; words->word; words++) {
        if (word_is(v, n, words->word)) {
            *out = words->value;
            return true;
        }
    }
    return false;
}

static void field_store(void *base, const option_def_t *o, uint64_t v)
{
    char *p = (char *)base + o->offset;
    if (o->width == 8) {
        memcpy(p, &v, 8);
    } else {
        uint32_t w = (uint32_t)v;
        memcpy(p, &w, 4);
    }
}

static void list_keys(strbuf_t *sb)
{
    strbuf_puts(sb, "; valid keys: ");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (i)
            strbuf_puts(sb, ", ");
        strbuf_puts(sb, options[i].name);
    }
    strbuf_puts(sb, " (or the nmm_config_t field names; NMM_OPTIONS=help lists them)");
}

static const char *expected_for(const option_def_t *o)
{
    switch (o->kind) {
    case OPT_LEVEL: return "off, standard or paranoid";
    case OPT_POLICY: return "record or abort";
    case OPT_SIZE: return "a size in bytes like 4096, 64k, 4M, 1G";
    case OPT_COUNT:
        return o->offset == offsetof(options_process_t, exitcode) && o->scope == SCOPE_PROCESS
                   ? "an exit status from 0 to 255"
                   : "an unsigned number";
    case OPT_BOOL:
    case OPT_PBOOL: return "0, 1, true, false, yes, no, on or off";
    case OPT_STACKS: return "1/N (a stack on 1 in N allocations) or 0";
    case OPT_FAIL: return "fail-point specs";
    case OPT_STRING: return "a path of at most 1023 bytes";
    case OPT_FORMAT: return "text, json or both";
    }
    return "?";
}

/* A string value kept for the process (paths), or NULL when empty. */
static bool keep_value(const char *v, size_t n, const char **out)
{
    if (n == 0) {
        *out = NULL;
        return true;
    }
    if (n > 1023)
        return false;
    char *kept = keep_string("", 0, v, n);
    if (!kept)
        return false;
    *out = kept;
    return true;
}

/* Bytes of a bad value quoted in its message; the rest is elided. */
#define BAD_VALUE_SHOWN 64

/* Apply one value to cfg (heap keys) or proc (process keys); false with a
 * message in msg otherwise. */
static bool apply_value(nmm_config_t *cfg, options_process_t *proc, const option_def_t *o,
                        const char *v, size_t n, strbuf_t *msg)
{
    uint64_t x = 0;
    bool ok = true;
    void *base = o->scope == SCOPE_PROCESS ? (void *)proc : (void *)cfg;
    switch (o->kind) {
    case OPT_LEVEL:
        ok = word_value(v, n, level_words, &x);
        if (ok)
            cfg->level = (nmm_level_t)x;
        break;
    case OPT_POLICY:
        ok = word_value(v, n, policy_words, &x);
        if (ok)
            cfg->policy = (nmm_policy_t)x;
        break;
    case OPT_SIZE:
    case OPT_COUNT:
        ok = options_parse_u64(v, n, o->kind == OPT_SIZE, &x);
        if (ok && o->width == 4 && x > UINT32_MAX)
            ok = false;
        if (ok && o->scope == SCOPE_PROCESS && o->offset == offsetof(options_process_t, exitcode) &&
            x > 255)
            ok = false;
        if (ok)
            field_store(base, o, x);
        break;
    case OPT_BOOL:
    case OPT_PBOOL:
        ok = word_value(v, n, bool_words, &x);
        if (ok)
            field_store(base, o, x);
        break;
    case OPT_STACKS:
        if (word_is(v, n, "0") || word_is(v, n, "off")) {
            cfg->stack_sample = 0;
        } else {
            const char *slash = memchr(v, '/', n);
            uint64_t num = 1;
            if (slash && !(options_parse_u64(v, (size_t)(slash - v), false, &num) && num == 1))
                ok = false;
            const char *d = slash ? slash + 1 : v;
            ok = ok && options_parse_u64(d, n - (size_t)(d - v), false, &x) && x >= 1 &&
                 x <= UINT32_MAX;
            if (ok) {
                cfg->stack_sample = (uint32_t)x;
                cfg->tracking = 1;
            }
        }
        break;
    case OPT_FAIL:
        if (n == 0) {
            cfg->failpoints = NULL;
            break;
        }
        {
            char tmp[1024];
            char err[256];
            if (n >= sizeof tmp) {
                strbuf_puts(msg, "value of 'fail' is longer than 1023 bytes");
                return false;
            }
            memcpy(tmp, v, n);
            tmp[n] = '\0';
            if (failpoint_check(tmp, err, sizeof err) != NMM_OK) {
                strbuf_puts(msg, "bad value for key 'fail': ");
                strbuf_puts(msg, err);
                return false;
            }
            const char *old = cfg->failpoints ? cfg->failpoints : "";
            char *kept = keep_string(old, strlen(old), v, n);
            if (!kept) {
                strbuf_puts(msg, "out of memory keeping the 'fail' value");
                return false;
            }
            cfg->failpoints = kept;
        }
        break;
    case OPT_STRING: {
        const char *kept;
        ok = keep_value(v, n, &kept);
        if (ok)
            memcpy((char *)base + o->offset, &kept, sizeof kept);
        break;
    }
    case OPT_FORMAT:
        ok = word_value(v, n, format_words, &x);
        if (ok)
            field_store(base, o, x);
        break;
    }
    if (!ok) {
        /* a long value is cut: the message's key and expectation must fit the line
         * (a 1100-byte path used to fill it before the key was named) */
        strbuf_puts(msg, "bad value '");
        strbuf_putn(msg, v, n > BAD_VALUE_SHOWN ? BAD_VALUE_SHOWN : n);
        if (n > BAD_VALUE_SHOWN) {
            strbuf_puts(msg, "...' (");
            strbuf_u64(msg, n);
            strbuf_puts(msg, " bytes) for key '");
        } else {
            strbuf_puts(msg, "' for key '");
        }
        strbuf_puts(msg, o->name);
        strbuf_puts(msg, "' (expected ");
        strbuf_puts(msg, expected_for(o));
        strbuf_putc(msg, ')');
    }
    return ok;
}

static const option_def_t *find_option(const char *k, size_t n)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (word_is(k, n, options[i].name) || word_is(k, n, options[i].field))
            return &options[i];
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Called for each bad piece in lenient mode, with its message (no newline). */
typedef void (*bad_piece_fn)(void *ctx, const char *msg, size_t len);

/* The one parser. Pieces are applied to cfg / proc in order. Strict mode
 * (bad == NULL): the first bad piece stops it, its message in msg, false.
 * Lenient mode: every bad piece is handed to bad() and skipped, every good one
 * applies. proc NULL: process keys are bad pieces ("NMM_OPTIONS only"). A
 * "help" piece (lenient mode only) sets *help. Returns false when any piece was
 * bad. */
static bool parse_pieces(nmm_config_t *cfg, options_process_t *proc, const char *text,
                         strbuf_t *msg, bad_piece_fn bad, void *ctx, bool *help)
{
    uint64_t given = 0; /* OPT_PBOOL keys given, by table index */
    bool level_set = false, all_ok = true;
    _Static_assert(OPTION_COUNT <= 64, "one bit per option");
    char one[1024];
    for (const char *p = text;;) {
        const char *end = strchr(p, ':');
        const char *e = end ? end : p + strlen(p);
        const char *s = p;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (s < e) {
            strbuf_t local;
            strbuf_t *m = msg;
            if (bad) {
                strbuf_init(&local, one, sizeof one);
                m = &local;
            }
            const char *eq = memchr(s, '=', (size_t)(e - s));
            const char *ke = eq ? eq : e;
            while (ke > s && is_space(ke[-1]))
                ke--;
            const option_def_t *o = find_option(s, (size_t)(ke - s));
            bool ok = false;
            if (!o && help && word_is(s, (size_t)(ke - s), "help")) {
                *help = true; /* "help", "help=1": print the table, apply the rest */
                ok = true;
            } else if (!o && word_is(s, (size_t)(ke - s), "mutant")) {
                /* the chaos build's deliberate bugs (chaos.h); refused by the
                 * production build with a message that names none of them */
                const char *v = eq ? eq + 1 : e;
                while (v < e && is_space(*v))
                    v++;
                ok = chaos_mutant_option(v, (size_t)(e - v), m);
            } else if (!o) {
                strbuf_puts(m, "unknown key '");
                strbuf_putn(m, s, (size_t)(ke - s));
                strbuf_putc(m, '\'');
                list_keys(m);
            } else if (!eq) {
                strbuf_puts(m, "key '");
                strbuf_puts(m, o->name);
                strbuf_puts(m, "' needs a value (");
                strbuf_puts(m, o->name);
                strbuf_puts(m, "=");
                strbuf_puts(m, o->unit);
                strbuf_puts(m, ")");
                if (!bad)
                    list_keys(m);
            } else if (o->scope == SCOPE_PROCESS && !proc) {
                strbuf_puts(m, "key '");
                strbuf_puts(m, o->name);
                strbuf_puts(m, "' applies to the whole process: set it in NMM_OPTIONS "
                               "(the default heap's options), not for one heap");
            } else {
                const char *v = eq + 1;
                while (v < e && is_space(*v))
                    v++;
                ok = apply_value(cfg, proc, o, v, (size_t)(e - v), m);
                if (!ok && !bad)
                    list_keys(m); /* nmm_config_parse's message has always listed them */
                if (ok && o->kind == OPT_LEVEL)
                    level_set = true;
                if (ok && o->kind == OPT_PBOOL)
                    given |= 1ull << (o - options);
            }
            if (!ok) {
                all_ok = false;
                if (!bad)
                    return false;
                bad(ctx, one, m->len < sizeof one ? m->len : sizeof one - 1);
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    /* "guard pages and the exit check: on at paranoid" — derived here, once,
     * unless given explicitly. */
    for (size_t i = 0; level_set && i < OPTION_COUNT; i++)
        if (options[i].kind == OPT_PBOOL && !(given & 1ull << i))
            field_store(cfg, &options[i], cfg->level == NMM_LEVEL_PARANOID);
    return all_ok;
}

NMM_API nmm_status_t nmm_config_parse(nmm_config_t *cfg, const char *text, char *err,
                                      size_t err_len)
{
    char dummy[1];
    strbuf_t msg;
    if (err && err_len) {
        strbuf_init(&msg, err, err_len);
    } else {
        strbuf_init(&msg, dummy, sizeof dummy);
    }
    if (!cfg) {
        strbuf_puts(&msg, "nmm_config_parse: cfg is NULL");
        return NMM_E_INVALID_ARGUMENT;
    }
    if (!text)
        return NMM_OK;
    nmm_config_t tmp = *cfg;
    if (!parse_pieces(&tmp, NULL, text, &msg, NULL, NULL, NULL))
        return NMM_E_INVALID_ARGUMENT;
    *cfg = tmp;
    return NMM_OK;
}

static void apply_defaults(nmm_config_t *cfg, options_process_t *proc)
{
    char err[8];
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if ((options[i].scope == SCOPE_PROCESS) != (proc != NULL))
            continue;
        strbuf_t msg;
        strbuf_init(&msg, err, sizeof err);
        apply_value(cfg, proc, &options[i], options[i].def, strlen(options[i].def), &msg);
    }
}

NMM_API void nmm_config_init(nmm_config_t *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->version = NMM_CONFIG_VERSION;
    apply_defaults(cfg, NULL);
    cfg->tracking = 0; /* the stacks default sets the rate, not tracking itself */
}

static void put_padded(strbuf_t *sb, const char *s, size_t width)
{
    size_t n = strlen(s);
    strbuf_puts(sb, s);
    while (n++ < width)
        strbuf_putc(sb, ' ');
}

NMM_API void nmm_options_help(int fd)
{
    char buf[8192];
    strbuf_t sb;
    strbuf_init(&sb, buf, sizeof buf);
    strbuf_puts(&sb, "NMM_OPTIONS=key=value:key=value:...  (keys also accepted under their "
                     "field names; keys below 'strict' are process-wide: NMM_OPTIONS only)\n");
    put_padded(&sb, "key", 13);
    put_padded(&sb, "field", 17);
    put_padded(&sb, "default", 9);
    put_padded(&sb, "unit", 23);
    strbuf_puts(&sb, "meaning\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        const option_def_t *o = &options[i];
        put_padded(&sb, o->name, 13);
        put_padded(&sb, o->field, 17);
        put_padded(&sb, o->def[0] ? o->def : "-", 9);
        put_padded(&sb, o->unit, 23);
        strbuf_puts(&sb, o->help);
        strbuf_putc(&sb, '\n');
    }
    out_write_all(fd, buf, sb.len < sizeof buf ? sb.len : sizeof buf - 1);
}

/* The process options: the table's defaults with NMM_OPTIONS's process keys
 * applied on first use, in any process that uses NMM (a program on heaps of its
 * own, such as the harness's driver, gets log_path and log_format too);
 * options_from_env applies NMM_OPTIONS again, naming each bad piece, when the
 * default heap is made. */
static options_process_t process_options;
static atomic_int process_state; /* 0 untouched, 1 being filled, 2 ready */

static void ignore_piece(void *ctx, const char *msg, size_t len)
{
    /* named (once) by options_from_env if the process makes its default heap */
    (void)ctx;
    (void)msg;
    (void)len;
}

static void process_defaults(void)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&process_state, &expected, 1)) {
        memset(&process_options, 0, sizeof process_options);
        apply_defaults(NULL, &process_options);
        const char *s = getenv("NMM_OPTIONS");
        if (s && *s) {
            nmm_config_t scratch; /* heap keys are the default heap's: not ours */
            nmm_config_init(&scratch);
            strbuf_t unused;
            strbuf_init(&unused, NULL, 0);
            parse_pieces(&scratch, &process_options, s, &unused, ignore_piece, NULL, NULL);
        }
        atomic_store_explicit(&process_state, 2, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&process_state, memory_order_acquire) != 2) {
        /* another thread is filling in the defaults: a few table lookups */
    }
}

const options_process_t *options_process(void)
{
    if (atomic_load_explicit(&process_state, memory_order_acquire) != 2)
        process_defaults();
    return &process_options;
}

/* Set once the default heap has been configured (options_from_env is called by
 * its creation only): lets the exit report ask for the default heap without
 * creating one in a process that never used it. */
static atomic_int default_heap_configured;

bool options_default_heap_configured(void)
{
    return atomic_load_explicit(&default_heap_configured, memory_order_acquire) != 0;
}

static void say_bad_piece(void *ctx, const char *msg, size_t len)
{
    (void)ctx;
    char line[1200];
    strbuf_t sb;
    strbuf_init(&sb, line, sizeof line);
    strbuf_puts(&sb, "nmm: NMM_OPTIONS: ");
    strbuf_putn(&sb, msg, len);
    strbuf_puts(&sb, "; ignored, the other keys apply\n");
    size_t n = sb.len < sizeof line ? sb.len : sizeof line - 1;
    if (n == sizeof line - 1)
        line[n - 1] = '\n';
    out_write_all(2, line, n);
}

void options_from_env(nmm_config_t *cfg)
{
    atomic_store_explicit(&default_heap_configured, 1, memory_order_release);
    nmm_config_init(cfg);
    process_defaults();
    process_options.path_env = getenv("PATH");
    const char *s = getenv("NMM_OPTIONS");
    if (!s || !*s)
        return;
    /* Lenient: a bad piece is named on its own line and skipped; every good one
     * applies (a typo in one key must not turn the others off). */
    options_process_t proc = process_options;
    bool help = false;
    strbuf_t unused;
    strbuf_init(&unused, NULL, 0);
    bool ok = parse_pieces(cfg, &proc, s, &unused, say_bad_piece, NULL, &help);
    process_options = proc;
    if (help)
        nmm_options_help(2);
    if (!ok && proc.strict) {
        static const char msg[] = "nmm: NMM_OPTIONS: strict=1 and a key or value above is bad: "
                                  "exiting with status 1\n";
        out_write_all(2, msg, sizeof msg - 1);
        _exit(1);
    }
}

extern char **environ;

void options_child_environ(char **out, size_t max)
{
    size_t k = 0;
    for (char **e = environ; e && *e && k + 1 < max; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) != 0 && strncmp(*e, "NMM_OPTIONS=", 12) != 0)
            out[k++] = *e;
    out[k] = NULL;
}
