/* main.c — nmm-driver's command line: parses and validates every option (a bad
 * command line is exit 2 with one message naming the option and what was expected)
 * and dispatches to run / stream / bench. Main thread only, before any worker. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "driver.h"
#include "sched.h"

static const char usage[] =
    "usage: nmm-driver run [options]          run one trial, JSON lines on stdout\n"
    "       nmm-driver stream [options] --worker W --count N\n"
    "                                         print the first N ops of worker W's stream\n"
    "       nmm-driver bench NAME [options]   run a benchmark kernel, one JSON line\n"
    "       nmm-driver --help\n"
    "\n"
    "trial options (all have defaults):\n"
    "  --target nmm|malloc       allocator: an NMM heap, or the process malloc (default nmm)\n"
    "  --nmm-options STR         NMM_OPTIONS string for the heap, e.g. level=standard\n"
    "  --seed N                  64-bit trial seed (default 1)\n"
    "  --threads N               worker threads, 1..1024 (default 2)\n"
    "  --ops N                   operations per worker (default 100000; k/M/G suffixes);\n"
    "                            with --duration/--worker-ops the floor and fault window\n"
    "  --duration S              run: each worker goes on past --ops until S seconds\n"
    "                            (0 < S <= 86400) after the start; the result says how\n"
    "                            many ops each worker did (worker_ops)\n"
    "  --worker-ops N,N,...      run: exactly N ops for each worker (one per thread, each\n"
    "                            >= --ops): replays a --duration trial's worker_ops\n"
    "  --sizes SPEC              weighted ranges lo-hi:weight,... (default 16-1024:1)\n"
    "  --live N                  live-set slots per worker (default 1000)\n"
    "  --cross P                 share of frees done by the next worker, 0..1 (default 0)\n"
    "  --realloc P               share of ops on a live slot that realloc it (default 0.05)\n"
    "  --calloc P                share of allocations that are calloc (default 0.04)\n"
    "  --aligned P               share of allocations that are aligned_alloc (default 0.04)\n"
    "  --calloc-count N          calloc(count, size / count), count drawn from 1..N (default 1)\n"
    "  --exit-leaks N            run on the default heap (NMM_OPTIONS) and leak N blocks after the\n"
    "                            teardown checks; its leak report at exit is read back into an\n"
    "                            exit_report line (0 = a heap of its own, the default)\n"
    "  --exit-held K             with --exit-leaks (x86-64): K threads (<= 16) each allocate a\n"
    "                            block and park until exit holding it in a register alone;\n"
    "                            the leak report must count those blocks still reachable\n"
    "  --exit-symbolizer NAME    with --exit-leaks: the process's symbolizer= key (a program,\n"
    "                            e.g. addr2line); the text report must then name the lost\n"
    "                            blocks' allocation by file:line\n"
    "  --bad-options STR         with --exit-leaks: NMM_OPTIONS pieces put before the others\n"
    "                            (bad keys or values the default heap must name on stderr\n"
    "                            and ignore, or 'help'); not checked by the driver\n"
    "  --exit-damage             with --exit-leaks (standard and paranoid heaps): flip the byte\n"
    "                            past the end of some leaked blocks, and at paranoid one byte of\n"
    "                            a freed block's poison, for the exit check (exit_check=1) to\n"
    "                            name at exit; the exit_report line lists what it named\n"
    "  --edge-every N            every N ops, requests that must fail: a calloc whose product\n"
    "                            overflows, sizes no heap holds, a realloc to one (0 = never)\n"
    "  --thread-churn N          replace each worker thread every N ops (0 = never)\n"
    "  --fork-every N            worker 0 forks a child every N ops (0 = never)\n"
    "  --fault KIND[:k=v...]     inject a fault (repeatable); KIND is double_free,\n"
    "                            invalid_free, overflow, underflow, uaf_write, uaf_read,\n"
    "                            realloc_freed, alloc_failure, dealloc_mismatch,\n"
    "                            sized_delete, memcpy_overflow, exit_only_overflow,\n"
    "                            zero_size_write, corrupt_meta (chaos/coverage driver);\n"
    "                            keys: count, bytes,\n"
    "                            skip (overflow/underflow: intact bytes before the damage),\n"
    "                            variant (invalid_free: interior|stack|wild|foreign_heap;\n"
    "                            uaf_write/uaf_read: first|middle|last; dealloc_mismatch:\n"
    "                            malloc_delete|new_free|new_array_delete|new_delete_array;\n"
    "                            sized_delete: size|alignment; memcpy_overflow:\n"
    "                            memcpy|memmove|memset; corrupt_meta: list_twice|\n"
    "                            list_cycle|free_count|freelist_link|quar_twice|quar_lost|\n"
    "                            quar_bytes|limit_charge|live_count|retained),\n"
    "                            fail (alloc_failure fail-point spec, default alloc@every1,max1)\n"
    "  --progress-every N        progress line every N ops per worker (default 10000; 0 = none)\n"
    "  --sample-every N          latency sample 1 in N ops, a power of two (default 64)\n"
    "  --no-check                skip the pattern fill/check (raw churn)\n"
    "stream options: the trial options plus --worker W (default 0) --count N (default 100)\n"
    "bench kernels: pair64 churn cross overhead64 peak_rss workset oversub prodcons\n"
    "  larson threadchurn; each prints the median of its runs with min and max;\n"
    "  bench options: --target --nmm-options --threads --ops --repeat N --seed --sizes\n";

void usage_error(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nmm-driver: %s\nTry 'nmm-driver --help'.\n", msg);
    exit(DRV_EXIT_USAGE);
}

/* Integer with an optional decimal (k/M/G) or, for byte counts, binary suffix. */
static bool parse_u64(const char *s, bool binary, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s)
        return false;
    uint64_t mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = binary ? 1024ull : 1000ull; break;
        case 'm': case 'M': mul = binary ? 1048576ull : 1000000ull; break;
        case 'g': case 'G': mul = binary ? 1073741824ull : 1000000000ull; break;
        default: return false;
        }
        if (end[1])
            return false;
    }
    if (v && mul > UINT64_MAX / v)
        return false;
    *out = v * mul;
    return true;
}

static uint64_t need_u64(const char *opt, const char *val, uint64_t lo, uint64_t hi, bool binary)
{
    uint64_t v;
    if (!parse_u64(val, binary, &v) || v < lo || v > hi)
        usage_error("%s: expected an integer %llu..%llu, got '%s'", opt, (unsigned long long)lo,
                    (unsigned long long)hi, val ? val : "");
    return v;
}

static double need_share(const char *opt, const char *val)
{
    char *end;
    errno = 0;
    double v = val ? strtod(val, &end) : NAN;
    if (!val || errno || end == val || *end || !(v >= 0.0 && v <= 1.0))
        usage_error("%s: expected a number 0..1, got '%s'", opt, val ? val : "");
    return v;
}

/* Seconds, a decimal number in (0, 86400]. */
static uint64_t need_duration_ns(const char *opt, const char *val)
{
    char *end;
    errno = 0;
    double v = val ? strtod(val, &end) : NAN;
    if (!val || errno || end == val || *end || !(v > 0.0 && v <= 86400.0))
        usage_error("%s: expected seconds, a number > 0 and <= 86400, got '%s'", opt,
                    val ? val : "");
    uint64_t ns = (uint64_t)(v * 1e9);
    return ns ? ns : 1;
}

/* One count per worker, each at least the floor --ops (so every seeded fault, which
 * lands before --ops, is still performed). Parsed after every option is known. */
static void parse_worker_ops(options_t *o, const char *spec)
{
    o->worker_ops = out_map(sizeof(uint64_t) * o->threads);
    if (!o->worker_ops)
        usage_error("--worker-ops: cannot map %u counts", o->threads);
    char buf[DRV_MAX_THREADS * 24];
    if (strlen(spec) >= sizeof buf)
        usage_error("--worker-ops: list too long");
    strcpy(buf, spec);
    uint32_t n = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (n == o->threads)
            usage_error("--worker-ops: expected %u counts (one per --threads), got more in '%s'",
                        o->threads, spec);
        if (!parse_u64(item, false, &v) || v < o->ops || v > (1ull << 44))
            usage_error("--worker-ops: expected counts >= --ops (%llu), got '%s' in '%s'",
                        (unsigned long long)o->ops, item, spec);
        o->worker_ops[n++] = v;
    }
    if (n != o->threads)
        usage_error("--worker-ops: expected %u counts (one per --threads), got %u in '%s'",
                    o->threads, n, spec);
}

static void parse_sizes(options_t *o, const char *spec)
{
    char buf[512];
    if (strlen(spec) >= sizeof buf || !*spec)
        usage_error("--sizes: expected lo-hi:weight,... got '%s'", spec);
    strcpy(buf, spec);
    o->range_count = 0;
    o->weight_total = 0;
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (o->range_count == DRV_MAX_RANGES)
            usage_error("--sizes: at most %d ranges", DRV_MAX_RANGES);
        double weight = 1.0;
        char *colon = strchr(item, ':');
        if (colon) {
            *colon = '\0';
            char *end;
            weight = strtod(colon + 1, &end);
            if (end == colon + 1 || *end || !(weight > 0 && weight < 1e12))
                usage_error("--sizes: weight in '%s' must be a positive number", spec);
        }
        uint64_t lo, hi;
        char *dash = strchr(item, '-');
        if (dash)
            *dash = '\0';
        if (!parse_u64(item, true, &lo) || !parse_u64(dash ? dash + 1 : item, true, &hi) ||
            hi < lo || hi > DRV_MAX_SIZE)
            usage_error("--sizes: expected ranges lo-hi with 0 <= lo <= hi <= 1G, got '%s'", spec);
        size_range_t *r = &o->ranges[o->range_count++];
        plan_range_init(r, lo, hi);
        o->weight_total += weight;
        r->cumulative = o->weight_total;
    }
    if (!o->range_count)
        usage_error("--sizes: expected lo-hi:weight,... got '%s'", spec);
}

static void parse_fault(options_t *o, const char *spec)
{
    if (o->fault_spec_count == DRV_MAX_FAULT_SPECS)
        usage_error("--fault: at most %d --fault options", DRV_MAX_FAULT_SPECS);
    char buf[256];
    if (strlen(spec) >= sizeof buf)
        usage_error("--fault: spec too long: '%s'", spec);
    strcpy(buf, spec);
    fault_spec_t *fs = &o->faults[o->fault_spec_count++];
    memset(fs, 0, sizeof *fs);
    fs->count = 1;
    fs->bytes = 1;
    strcpy(fs->fail, "alloc@every1,max1");
    char *save = NULL;
    char *kind = strtok_r(buf, ":", &save);
    int k = -1;
    for (int i = 0; kind && i < FK_COUNT_; i++)
        if (strcmp(kind, fault_kind_name((fault_kind_t)i)) == 0)
            k = i;
    if (k < 0)
        usage_error("--fault: unknown kind '%s'; expected one of double_free, invalid_free, "
                    "overflow, underflow, uaf_write, uaf_read, realloc_freed, alloc_failure, "
                    "dealloc_mismatch, sized_delete, memcpy_overflow, exit_only_overflow, "
                    "zero_size_write, corrupt_meta",
                    kind ? kind : "");
    fs->kind = (fault_kind_t)k;
    if (fs->kind == FK_ZERO_SIZE_WRITE)
        fs->bytes = 8; /* all of standard's zero-size canary: no 1-in-256 chance of a match */
    for (char *kv = strtok_r(NULL, ":", &save); kv; kv = strtok_r(NULL, ":", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            usage_error("--fault %s: expected key=value, got '%s'", kind, kv);
        *eq = '\0';
        const char *val = eq + 1;
        if (strcmp(kv, "count") == 0) {
            fs->count = (uint32_t)need_u64("--fault count", val, 1, DRV_MAX_FAULTS, false);
        } else if (strcmp(kv, "bytes") == 0) {
            fs->bytes = need_u64("--fault bytes", val, 1, 1u << 20, true);
        } else if (strcmp(kv, "skip") == 0) {
            if (fs->kind != FK_OVERFLOW && fs->kind != FK_UNDERFLOW)
                usage_error("--fault %s: 'skip' applies to overflow and underflow only", kind);
            fs->skip = need_u64("--fault skip", val, 0, 1u << 20, true);
        } else if (strcmp(kv, "variant") == 0) {
            int v = -1;
            for (int i = 1; i < FV_COUNT_; i++)
                if (strcmp(val, fault_variant_name((fault_variant_t)i)) == 0)
                    v = i;
            if (v <= 0 || !fault_variant_fits(fs->kind, (fault_variant_t)v))
                usage_error("--fault %s: variant '%s' not valid here; %s takes %s", kind, val,
                            kind, fault_variants_of(fs->kind));
            fs->variant = (fault_variant_t)v;
        } else if (strcmp(kv, "fail") == 0) {
            if (fs->kind != FK_ALLOC_FAILURE || !*val || strlen(val) >= sizeof fs->fail)
                usage_error("--fault %s: 'fail' applies to alloc_failure only (a fail-point "
                            "spec like alloc@every1,max1)", kind);
            /* Checked now by the allocator's own parser: a bad spec found at injection
             * time, mid-trial, would be a message on a run that still exits 0. */
            char opt[sizeof fs->fail + 8], why[256];
            nmm_config_t probe;
            nmm_config_init(&probe);
            snprintf(opt, sizeof opt, "fail=%s", val);
            if (nmm_config_parse(&probe, opt, why, sizeof why) != NMM_OK) {
                char *keys = strstr(why, "; valid keys:"); /* about NMM_OPTIONS, not --fault */
                if (keys)
                    *keys = '\0';
                usage_error("--fault %s: fail=%s: %s", kind, val, why);
            }
            strcpy(fs->fail, val);
        } else {
            usage_error("--fault %s: unknown key '%s'; expected count, bytes, skip, variant, fail",
                        kind, kv);
        }
    }
}

enum { MODE_RUN = 1, MODE_STREAM = 2, MODE_BENCH = 4, MODE_ALL = 7 };

/* A supervised run dies with its supervisor. The harness puts each trial in its own
 * session and kills it from its watchdog; a runner killed by SIGKILL (an OOM kill, a
 * CI job's hard stop) cannot do that, and a hung trial would then run forever. The
 * harness names itself in NMM_CHAOS_PARENT; a supervisor already gone by now is seen
 * as a different parent pid. */
static void die_with_supervisor(void)
{
    const char *s = getenv("NMM_CHAOS_PARENT");
    if (!s || !*s)
        return;
    long want = strtol(s, NULL, 10);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || (long)getppid() != want)
        raise(SIGKILL);
}

#ifdef NMM_CHAOS_COVERAGE
/* The gcov build (harness/coverage.py): a trial that dies by a signal (an abort after a
 * diagnostic, a guard page hit) would take its counters with it, as gcov writes them at
 * exit; write them first, then die as before. NMM's SIGSEGV/SIGBUS handler chains to
 * this one (installed before any heap). */
extern void __gcov_dump(void);

static void coverage_flush(int sig)
{
    __gcov_dump();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void coverage_on_signals(void)
{
    signal(SIGABRT, coverage_flush);
    signal(SIGSEGV, coverage_flush);
    signal(SIGBUS, coverage_flush);
}
#else
static void coverage_on_signals(void) {}
#endif

int main(int argc, char **argv)
{
    coverage_on_signals();
    if (argc < 2)
        usage_error("missing command (run, stream or bench)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        fputs(sched_usage, stdout);
        return 0;
    }
    int mode;
    int first = 2;
    const char *bench_name = NULL;
    if (strcmp(argv[1], "run") == 0) {
        mode = MODE_RUN;
        die_with_supervisor();
    } else if (strcmp(argv[1], "stream") == 0) {
        mode = MODE_STREAM;
    } else if (strcmp(argv[1], "bench") == 0) {
        mode = MODE_BENCH;
        if (argc < 3 || argv[2][0] == '-')
            usage_error("bench: missing kernel name (pair64, churn, cross, overhead64, peak_rss, "
                        "workset, oversub, prodcons, larson, threadchurn)");
        bench_name = argv[2];
        first = 3;
    } else {
        usage_error("unknown command '%s'; expected run, stream or bench", argv[1]);
    }

    static options_t o;
    o.target = "nmm";
    o.nmm_options = "";
    o.seed = 1;
    o.threads = 2;
    o.ops = 100000;
    o.live = 1000;
    o.realloc_share = 0.05;
    o.calloc_share = 0.04;
    o.aligned_share = 0.04;
    o.calloc_count = 1;
    o.progress_every = 10000;
    o.sample_every = 64;
    o.repeat = 0;
    bool sizes_given = false;
    parse_sizes(&o, "16-1024:1");
    uint64_t worker = 0, count = 100;
    const char *worker_ops = NULL;

    for (int i = first; i < argc; i++) {
        char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            fputs(sched_usage, stdout);
            return 0;
        }
        if (sched_parse_option(argc, argv, &i, mode == MODE_RUN))
            continue;
        if (strncmp(arg, "--", 2) != 0)
            usage_error("unexpected argument '%s'", arg);
        const char *val = NULL;
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof name)
            usage_error("unknown option '%s'", arg);
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        static const char *const known[] = {
            "--target", "--nmm-options", "--seed", "--threads", "--ops", "--sizes",
            "--live", "--cross", "--realloc", "--thread-churn", "--fork-every", "--fault",
            "--progress-every", "--sample-every", "--no-check", "--worker", "--count",
            "--repeat", "--duration", "--worker-ops", "--calloc", "--aligned",
            "--calloc-count", "--edge-every", "--exit-leaks", "--exit-held", "--exit-symbolizer",
            "--bad-options", "--exit-damage", NULL};
        bool is_known = false;
        for (int k = 0; known[k]; k++)
            is_known = is_known || strcmp(name, known[k]) == 0;
        if (!is_known)
            usage_error("unknown option '%s'", name);
        bool is_flag = strcmp(name, "--no-check") == 0 || strcmp(name, "--exit-damage") == 0;
        if (!is_flag) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                usage_error("%s: missing value", name);
        } else if (eq) {
            usage_error("%s takes no value", name);
        }
        int allowed;
        if (strcmp(name, "--target") == 0) {
            allowed = MODE_ALL;
            if (strcmp(val, "nmm") != 0 && strcmp(val, "malloc") != 0)
                usage_error("--target: expected 'nmm' or 'malloc', got '%s'", val);
            o.target = val;
        } else if (strcmp(name, "--nmm-options") == 0) {
            allowed = MODE_ALL;
            o.nmm_options = val;
        } else if (strcmp(name, "--seed") == 0) {
            allowed = MODE_ALL;
            o.seed = need_u64(name, val, 0, UINT64_MAX, false);
        } else if (strcmp(name, "--threads") == 0) {
            allowed = MODE_ALL;
            o.threads = (uint32_t)need_u64(name, val, 1, DRV_MAX_THREADS, false);
            o.threads_given = true;
        } else if (strcmp(name, "--ops") == 0) {
            allowed = MODE_ALL;
            o.ops = need_u64(name, val, 1, 1ull << 40, false);
            o.ops_given = true;
        } else if (strcmp(name, "--duration") == 0) {
            allowed = MODE_RUN;
            o.duration_ns = need_duration_ns(name, val);
        } else if (strcmp(name, "--worker-ops") == 0) {
            allowed = MODE_RUN;
            worker_ops = val;
        } else if (strcmp(name, "--sizes") == 0) {
            allowed = MODE_ALL;
            parse_sizes(&o, val);
            sizes_given = true;
        } else if (strcmp(name, "--live") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.live = (uint32_t)need_u64(name, val, 1, 1u << 24, false);
        } else if (strcmp(name, "--cross") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.cross = need_share(name, val);
        } else if (strcmp(name, "--realloc") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.realloc_share = need_share(name, val);
            if (o.realloc_share >= 1.0)
                usage_error("--realloc: expected a number 0..1 (exclusive of 1), got '%s'", val);
        } else if (strcmp(name, "--calloc") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.calloc_share = need_share(name, val);
        } else if (strcmp(name, "--aligned") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.aligned_share = need_share(name, val);
        } else if (strcmp(name, "--calloc-count") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.calloc_count = (uint32_t)need_u64(name, val, 1, 1u << 16, false);
        } else if (strcmp(name, "--exit-leaks") == 0) {
            allowed = MODE_RUN;
            o.exit_leaks = (uint32_t)need_u64(name, val, 0, 4096, false);
        } else if (strcmp(name, "--exit-held") == 0) {
            allowed = MODE_RUN;
            o.exit_held = (uint32_t)need_u64(name, val, 0, DRV_MAX_EXIT_HELD, false);
        } else if (strcmp(name, "--exit-symbolizer") == 0) {
            allowed = MODE_RUN;
            if (!*val || strchr(val, ':'))
                usage_error("--exit-symbolizer: expected a program name or path without ':', "
                            "got '%s'", val);
            o.exit_symbolizer = val;
        } else if (strcmp(name, "--bad-options") == 0) {
            allowed = MODE_RUN;
            o.bad_options = val;
        } else if (strcmp(name, "--exit-damage") == 0) {
            allowed = MODE_RUN;
            o.exit_damage = true;
        } else if (strcmp(name, "--edge-every") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.edge_every = need_u64(name, val, 0, 1ull << 40, false);
        } else if (strcmp(name, "--thread-churn") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.thread_churn = need_u64(name, val, 0, 1ull << 40, false);
        } else if (strcmp(name, "--fork-every") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.fork_every = need_u64(name, val, 0, 1ull << 40, false);
        } else if (strcmp(name, "--fault") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            parse_fault(&o, val);
        } else if (strcmp(name, "--progress-every") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.progress_every = need_u64(name, val, 0, 1ull << 40, false);
        } else if (strcmp(name, "--sample-every") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            uint64_t v = need_u64(name, val, 1, 1u << 20, false);
            if (v & (v - 1))
                usage_error("--sample-every: expected a power of two, got '%s'", val);
            o.sample_every = (uint32_t)v;
        } else if (strcmp(name, "--no-check") == 0) {
            allowed = MODE_RUN | MODE_STREAM;
            o.no_check = true;
        } else if (strcmp(name, "--worker") == 0) {
            allowed = MODE_STREAM;
            worker = need_u64(name, val, 0, DRV_MAX_THREADS - 1, false);
        } else if (strcmp(name, "--count") == 0) {
            allowed = MODE_STREAM;
            count = need_u64(name, val, 0, 1ull << 32, false);
        } else if (strcmp(name, "--repeat") == 0) {
            allowed = MODE_BENCH;
            o.repeat = (uint32_t)need_u64(name, val, 1, 1000, false);
        } else {
            usage_error("unknown option '%s'", name);
        }
        if (!(allowed & mode))
            usage_error("option %s does not apply to '%s'", name, argv[1]);
    }
    o.sizes_given = sizes_given;
    if (worker_ops && o.duration_ns)
        usage_error("--worker-ops and --duration: give one (--worker-ops replays the op counts "
                    "a --duration run recorded)");
    if (worker_ops)
        parse_worker_ops(&o, worker_ops);
    if (o.calloc_share + o.aligned_share > 1.0)
        usage_error("--calloc and --aligned: shares of allocations that add up to at most 1, "
                    "got %g + %g", o.calloc_share, o.aligned_share);

    if (o.bad_options && *o.bad_options && !o.exit_leaks)
        usage_error("--bad-options: needs --exit-leaks (only the default heap reads "
                    "NMM_OPTIONS, and names its bad pieces)");
    if (o.exit_damage && !o.exit_leaks)
        usage_error("--exit-damage: needs --exit-leaks (the damaged blocks are leaked ones, "
                    "for the default heap's exit check)");
    if (o.exit_symbolizer && !o.exit_leaks)
        usage_error("--exit-symbolizer: needs --exit-leaks (it names the symbolizer of the "
                    "default heap's leak report at exit)");
    if (o.exit_held && !o.exit_leaks)
        usage_error("--exit-held: needs --exit-leaks (the parked threads' blocks are judged "
                    "by the default heap's leak report at exit)");
#if !defined(__x86_64__)
    if (o.exit_held)
        usage_error("--exit-held: x86-64 only (a parked thread holds its block in rbx)");
#endif
    if (o.exit_leaks && strcmp(o.target, "nmm") != 0)
        usage_error("--exit-leaks: applies to --target nmm only (the leak report at exit is "
                    "the default NMM heap's)");
    if (strcmp(o.target, "malloc") == 0 && *o.nmm_options)
        usage_error("--nmm-options: applies to --target nmm only (--target malloc runs the "
                    "process's malloc: give NMM_OPTIONS in the environment of "
                    "libnmm_preload.so)");
    if (strcmp(o.target, "nmm") == 0 && *o.nmm_options) {
        nmm_config_t cfg;
        char err[512] = "";
        nmm_config_init(&cfg);
        if (nmm_config_parse(&cfg, o.nmm_options, err, sizeof err) != NMM_OK)
            usage_error("--nmm-options: %s", err[0] ? err : "invalid option string");
    }
    const char *bad = faults_check_options(&o);
    if (bad)
        usage_error("%s", bad);
    if (mode == MODE_STREAM) {
        if (worker >= o.threads)
            usage_error("--worker: expected 0..%u (threads - 1), got %llu", o.threads - 1,
                        (unsigned long long)worker);
        return plan_print_stream(&o, (uint32_t)worker, count);
    }
    if (mode == MODE_BENCH)
        return bench_run(bench_name, &o);
    sched_prepare(&o, argv);
    return workload_run(&o);
}
