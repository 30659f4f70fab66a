/* exitleak.c — the default heap's leak report at exit, under the oracle's eye.
 *
 * With --exit-leaks N the trial runs on the process's default heap, configured through
 * NMM_OPTIONS as a program under libnmm is: the plan's options plus the process keys of
 * the exit report (leaks=1, exitcode=0, log_path=<a private directory>/nmm,
 * log_format=both, suppressions=<a file naming the suppressed function>), after
 * --bad-options' pieces if given (the heap names each bad one on stderr and ignores
 * it, as under libnmm: the oracle holds those lines against the pieces). After the
 * teardown checks (every workload block freed) the driver allocates N blocks and keeps
 * no pointer to them: a quarter from exit_leak_suppressed(), which the suppressions
 * file names, the rest from exit_leak_lost(); one in four large. The result line says
 * how many blocks and bytes of each.
 *
 * At exit the allocator's destructor (leakcheck.c) classifies what is still live by
 * reachability (roots.c), applies the suppressions (suppress.c), symbolizes the stacks
 * and writes the text and JSON reports into the log directory. A destructor of ours
 * that runs after it (a lower priority number runs later) reads them back and writes
 * one exit_report line: the JSON report's totals per category, the text report's size
 * and whether it names the lost blocks' function. The oracle holds those totals against
 * the result line's. Only this file touches the log directory.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "prng.h"

static char log_dir[256];      /* "" = no exit report configured */
static char supp_file[300];
/* --exit-damage: the heap's last event when the blocks were leaked (the exit check's
 * reports come after it) and the damaged blocks' addresses as hex text, a JSON list
 * (text only: no copy of a pointer survives for the reachability scan to find) */
static bool exit_damage_on;
static uint64_t exit_seq;
static char exit_damaged[64 * 24 + 4];

bool exit_leak_configure(const char *bad_options, const char *nmm_options, char *err,
                         size_t err_len)
{
    if (!bad_options)
        bad_options = "";
    const char *tmp = getenv("TMPDIR");
    snprintf(log_dir, sizeof log_dir, "%s/nmm-exit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(log_dir)) {
        snprintf(err, err_len, "--exit-leaks: cannot make a log directory under %s",
                 tmp && *tmp ? tmp : "/tmp");
        log_dir[0] = '\0';
        return false;
    }
    snprintf(supp_file, sizeof supp_file, "%s/suppressions", log_dir);
    FILE *f = fopen(supp_file, "w");
    if (!f) {
        snprintf(err, err_len, "--exit-leaks: cannot write %s", supp_file);
        return false;
    }
    fputs("# the driver's own on-purpose leaks that the report must list as suppressed\n"
          "leak:exit_leak_suppressed\n", f);
    fclose(f);
    /* the bad pieces first: every good key after them must still apply */
    size_t need = strlen(bad_options) + strlen(nmm_options) + strlen(log_dir) +
                  strlen(supp_file) + 128;
    char *env = malloc(need);
    if (!env) {
        snprintf(err, err_len, "--exit-leaks: out of memory");
        return false;
    }
    snprintf(env, need,
             "%s%s%s%sleaks=1:exitcode=0:log_format=both:log_path=%s/nmm:suppressions=%s",
             bad_options, *bad_options ? ":" : "", nmm_options, *nmm_options ? ":" : "",
             log_dir, supp_file);
    setenv("NMM_OPTIONS", env, 1);
    free(env);
    return true;
}

/* Each in its own frame, never inlined: the allocation's sampled stack names the
 * function, which is what the suppression matches. The pointer is returned as an
 * integer scrambled by the caller, so no copy of it survives in our memory. */
__attribute__((noinline)) static uintptr_t exit_leak_suppressed(nmm_heap_t *h, size_t n)
{
    void *p = nmm_alloc(h, n, NMM_SITE_HERE(h));  /* a site of its own: a group of its own */
    if (p)
        memset(p, 0x5a, n < 64 ? n : 64);
    return (uintptr_t)p ^ 0xa5a5a5a5a5a5a5a5ull;
}

__attribute__((noinline)) static uintptr_t exit_leak_lost(nmm_heap_t *h, size_t n, bool damage)
{
    uint8_t *p = nmm_alloc(h, n, NMM_SITE_HERE(h));
    if (p)
        memset(p, 0x3c, n < 64 ? n : 64);
    if (p && damage)
        ((volatile uint8_t *)p)[n] ^= 0xa5;  /* the canary's first byte */
    return (uintptr_t)p ^ 0xa5a5a5a5a5a5a5a5ull;
}

/* A block freed, then written: at paranoid it waits in the quarantine, poisoned, and
 * the exit check finds one byte of its poison changed (use_after_free at it). */
__attribute__((noinline)) static uintptr_t exit_freed_written(nmm_heap_t *h)
{
    uint8_t *p = nmm_alloc(h, 200, NMM_SITE_HERE(h));
    if (!p)
        return 0xa5a5a5a5a5a5a5a5ull;
    memset(p, 0x11, 200);
    if (nmm_free(h, p, NMM_SITE_HERE(h)) != NMM_OK)
        return 0xa5a5a5a5a5a5a5a5ull;
    ((volatile uint8_t *)p)[100] ^= 0xa5;
    return (uintptr_t)p ^ 0xa5a5a5a5a5a5a5a5ull;
}

static void hex_item(char *buf, size_t cap, uintptr_t scrambled)
{
    size_t len = strlen(buf);
    if (len + 24 < cap)
        snprintf(buf + len, cap - len, "%s\"0x%llx\"", len > 1 ? "," : "",
                 (unsigned long long)(scrambled ^ 0xa5a5a5a5a5a5a5a5ull));
}

/* Stack below us overwritten, so the scan at exit finds no stale copy of a pointer. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[32768];
    memset((char *)pad, 0, sizeof pad);
}

void exit_leak_blocks(const options_t *o, const target_t *t, jline_t *j)
{
    nmm_heap_t *heap = t->heap;
    uint64_t rng = o->seed ^ 0x6c65616b73ull;  /* "leaks" */
    uint64_t blocks = 0, bytes = 0, supp_blocks = 0, supp_bytes = 0;
    /* damage only where a canary is (off has none: the byte would be the next block's) */
    bool damage = o->exit_damage && t->level >= NMM_LEVEL_STANDARD;
    char freed[32] = "null";
    exit_damage_on = o->exit_damage;
    exit_seq = nmm_events_last_seq(heap);
    strcpy(exit_damaged, "[");
    for (uint32_t i = 0; i < o->exit_leaks; i++) {
        uint64_t r = prng_splitmix(&rng);
        size_t n = (i % 4 == 3) ? 100000 + (size_t)(r % 400000) : 1 + (size_t)(r % 2048);
        bool supp = i % 4 == 1;
        /* half the lost blocks of each kind: i % 8 is 0 (small) or 3 (large) */
        bool hit = damage && (i % 8 == 0 || i % 8 == 3);
        uintptr_t got = supp ? exit_leak_suppressed(heap, n) : exit_leak_lost(heap, n, hit);
        if (got == 0xa5a5a5a5a5a5a5a5ull)
            continue;  /* NULL: a limit or fail point; not leaked */
        if (hit)
            hex_item(exit_damaged, sizeof exit_damaged, got);
        blocks++;
        bytes += n;
        if (supp) {
            supp_blocks++;
            supp_bytes += n;
        }
    }
    strcat(exit_damaged, "]");
    if (damage && t->level == NMM_LEVEL_PARANOID) {
        uintptr_t got = exit_freed_written(heap);
        if (got != 0xa5a5a5a5a5a5a5a5ull) {
            freed[0] = '\0';
            hex_item(freed, sizeof freed, got);
        }
    }
    scrub_stack();
    char buf[256 + sizeof exit_damaged];
    snprintf(buf, sizeof buf,
             "{\"blocks\":%llu,\"bytes\":%llu,\"suppressed_blocks\":%llu,"
             "\"suppressed_bytes\":%llu",
             (unsigned long long)blocks, (unsigned long long)bytes,
             (unsigned long long)supp_blocks, (unsigned long long)supp_bytes);
    if (o->exit_damage) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof buf - len, ",\"damaged\":%s,\"freed_written\":%s",
                 exit_damaged, freed);
    }
    strcat(buf, "}");
    jl_key(j, "exit_leaks");
    jl_raw(j, buf);
}

static char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = out_map(n + 1);
    size_t got = 0;
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (buf)
        buf[got] = '\0';
    *len = n;
    return buf;
}

/* "KEY":{"blocks":B,"bytes":Y} in the report's first line, as a JSON object in j */
static void copy_count(jline_t *j, const char *report, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":{", key);
    const char *at = strstr(report, pat);
    unsigned long long b = 0, y = 0;
    if (!at || sscanf(at + strlen(pat) - 1, "{\"blocks\":%llu,\"bytes\":%llu}", &b, &y) != 2) {
        jl_null(j, key);
        return;
    }
    char buf[96];
    snprintf(buf, sizeof buf, "{\"blocks\":%llu,\"bytes\":%llu}", b, y);
    jl_key(j, key);
    jl_raw(j, buf);
}

/* "exit_errors": [{"kind":K,"address":A}, ...] — the JSON report's error objects after
 * the heap's last event when the blocks were leaked: the exit check's (at most 64). */
static void exit_errors(jline_t *j, const char *json)
{
    char buf[64 * 64 + 4];
    size_t len = 0, n = 0;
    buf[len++] = '[';
    buf[len] = '\0';
    for (const char *at = json ? strstr(json, "{\"type\":\"error\"") : NULL; at && n < 64;
         at = strstr(at + 1, "{\"type\":\"error\"")) {
        char kind[32];
        unsigned long long seq = 0, addr = 0;
        const char *k = strstr(at, "\"kind\":\""), *q = strstr(at, "\"seq\":"),
                   *a = strstr(at, "\"address\":\"");
        const char *end = strchr(at, '\n');
        if (!k || !q || !a || (end && (k > end || q > end || a > end)) ||
            sscanf(k + 8, "%31[a-z_]", kind) != 1 || sscanf(q + 6, "%llu", &seq) != 1 ||
            sscanf(a + 11, "%llx", &addr) != 1 || seq <= exit_seq)
            continue;
        len += (size_t)snprintf(buf + len, sizeof buf - len,
                                "%s{\"kind\":\"%s\",\"address\":\"0x%llx\"}", n ? "," : "",
                                kind, addr);
        n++;
    }
    snprintf(buf + len, sizeof buf - len, "]");
    jl_key(j, "exit_errors");
    jl_raw(j, buf);
}

__attribute__((destructor(101))) static void exit_report(void)
{
    if (!log_dir[0])
        return;
    char path[sizeof log_dir + 300];
    int pid = (int)getpid();
    size_t json_len = 0, text_len = 0;
    snprintf(path, sizeof path, "%s/nmm.%d.json", log_dir, pid);
    char *json = read_file(path, &json_len);
    snprintf(path, sizeof path, "%s/nmm.%d", log_dir, pid);
    char *text = read_file(path, &text_len);
    jline_t j;
    jl_begin(&j, "exit_report");
    /* the leak report is the JSON file's one "leaks" object */
    const char *leaks = json ? strstr(json, "{\"type\":\"leaks\"") : NULL;
    jl_bool(&j, "json", leaks != NULL);
    if (leaks) {
        static const char *const keys[] = {"definitely_lost", "indirectly_lost",
                                           "still_reachable", "suppressed", "ungrouped"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            copy_count(&j, leaks, keys[k]);
    }
    jl_u64(&j, "text_bytes", text ? text_len : 0);
    jl_bool(&j, "text_names_lost", text && strstr(text, "exit_leak_lost") != NULL);
    jl_bool(&j, "json_names_lost", leaks && strstr(leaks, "exit_leak_lost") != NULL);
    if (exit_damage_on)
        exit_errors(&j, json);
    jl_end(&j);
    if (json)
        out_unmap(json, json_len + 1);
    if (text)
        out_unmap(text, text_len + 1);
    /* the directory is ours alone: its report files and the suppressions file */
    DIR *d = opendir(log_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", log_dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(log_dir);
}
