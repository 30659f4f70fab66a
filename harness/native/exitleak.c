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
 * file names, the rest from exit_leak_lost(); one in four large. Every eighth block
 * (i % 8 == 2) is chained: the only pointer to it is in the block two before it (a lost
 * one), so the report must count it indirectly lost. With --exit-held K, K threads each
 * allocate one more block and park until the process exits with its address in a
 * register alone (rbx, in a pause loop): the heap's scan at exit must stop them
 * (roots.c's signal handler saves their registers) to find those blocks still
 * reachable. The result line says how many blocks and bytes of each.
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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

bool exit_leak_configure(const char *bad_options, const char *nmm_options,
                         const char *symbolizer, uint64_t seed, char *err, size_t err_len)
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
    /* One pattern for the suppressed function, its shape chosen by the seed, among
     * decoys that nearly match the other leaks' frames and must match none of them. */
    static const char *const shapes[] = {
        "leak:exit_leak_suppressed\n",
        "leak:^exit_leak_suppressed$\n",
        " \tleak:exit_*_sup*ssed \t\r\n",
        "leak:^exit_leak_supp*ssed$\n",
    };
    fputs("# the driver's own on-purpose leaks that the report must list as suppressed\n"
          "\n"
          "leak:^exit_leak_los$\n"
          "leak:^xit_leak_lost$\n"
          "leak:^leak_lost\n"
          "leak:*_leak_nomatch\n"
          "leak:^xexit*\n"
          "leak:exit_leak_lost*x\n", f);
    fputs(shapes[seed % (sizeof shapes / sizeof *shapes)], f);
    fclose(f);
    /* the bad pieces first: every good key after them must still apply */
    size_t need = strlen(bad_options) + strlen(nmm_options) + strlen(log_dir) +
                  strlen(supp_file) + (symbolizer ? strlen(symbolizer) : 0) + 160;
    char *env = malloc(need);
    if (!env) {
        snprintf(err, err_len, "--exit-leaks: out of memory");
        return false;
    }
    snprintf(env, need,
             "%s%s%s%sleaks=1:exitcode=0:log_format=both:log_path=%s/nmm:suppressions=%s%s%s",
             bad_options, *bad_options ? ":" : "", nmm_options, *nmm_options ? ":" : "",
             log_dir, supp_file, symbolizer ? ":symbolizer=" : "", symbolizer ? symbolizer : "");
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

/* the line of exit_leak_lost's allocation: the text report must name it (file:line from
 * the symbolizer, llvm-symbolizer or addr2line) */
static int lost_line;

__attribute__((noinline)) static uintptr_t exit_leak_lost(nmm_heap_t *h, size_t n, bool damage)
{
    lost_line = __LINE__ + 1;
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

#define SCRAMBLE 0xa5a5a5a5a5a5a5a5ull

/* Block 4's site: a file name no compiler gives, so the JSON leak report must escape it
 * (quote, backslash, tab, newline, a control byte), pass valid UTF-8 through (2, 3 and 4
 * bytes) and turn each byte of an invalid sequence into U+FFFD (a lone 0xff, a lead byte
 * cut short, an overlong '/', a surrogate, a code point past U+10FFFF). The oracle
 * (harness/oracle.py ODD_SITE_FILE) holds the same bytes and decodes them itself. */
static const char odd_site_file[] =
    "nmm-odd/q\"b\\t\tn\nc\x01 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 "
    "\xff \xc3( \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 end.c";
#define ODD_SITE_LINE 4242

__attribute__((noinline)) static uintptr_t exit_leak_lost_odd(nmm_heap_t *h, size_t n)
{
    /* interned twice: the second finds the first (the same file and line) */
    nmm_site_t site = nmm_site(h, odd_site_file, ODD_SITE_LINE);
    if (nmm_site(h, odd_site_file, ODD_SITE_LINE) != site)
        site = 0; /* the report then has no such group: the oracle names it */
    void *p = nmm_alloc(h, n, site);
    if (p)
        memset(p, 0x3c, n < 64 ? n : 64);
    return (uintptr_t)p ^ SCRAMBLE;
}

/* Block 6 is made in a signal handler (SIGUSR2, raised by the driver): its stack runs
 * through the kernel's signal frame, whose unwind table the allocator's own frame walker
 * does not read (the 'S' augmentation), so the capture falls back to the system
 * unwinder. The text report must show the whole stack: the handler's function, and
 * below the signal frame the driver's code that raised it. */
static nmm_heap_t *signal_heap;
static size_t signal_size;
static volatile uintptr_t signal_got;

__attribute__((noinline)) static uintptr_t exit_leak_in_signal(nmm_heap_t *h, size_t n)
{
    void *p = nmm_alloc(h, n, NMM_SITE_HERE(h));
    if (p)
        memset(p, 0x3c, n < 64 ? n : 64);
    return (uintptr_t)p ^ 0xa5a5a5a5a5a5a5a5ull;
}

static void on_leak_signal(int sig)
{
    (void)sig;
    signal_got = exit_leak_in_signal(signal_heap, signal_size);
}

__attribute__((noinline)) static uintptr_t exit_leak_raise(nmm_heap_t *h, size_t n)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_leak_signal;
    sigemptyset(&sa.sa_mask);
    signal_heap = h;
    signal_size = n;
    signal_got = 0xa5a5a5a5a5a5a5a5ull;
    if (sigaction(SIGUSR2, &sa, &old) != 0)
        return signal_got;
    raise(SIGUSR2);
    sigaction(SIGUSR2, &old, NULL);
    return signal_got;
}

/* Block 7's site is a code address, as a malloc wrapper's is: the return address into
 * exit_leak_blocks, at the line pc_call_line. The JSON report must give that site as a
 * symbolized frame ("site_frame": exit_leak_blocks, exitleak.c, that line). */
static int pc_call_line;

__attribute__((noinline)) static uintptr_t exit_leak_via_pc(nmm_heap_t *h, size_t n)
{
    nmm_site_t site = nmm_site_for_pc(__builtin_return_address(0));
    void *p = nmm_alloc(h, n, site);
    if (p)
        memset(p, 0x3c, n < 64 ? n : 64);
    return (uintptr_t)p ^ 0xa5a5a5a5a5a5a5a5ull;
}

/* The chain: the lost block at head keeps the only pointer to the block at tail. In a
 * frame of its own, which scrub_stack overwrites afterwards. */
__attribute__((noinline)) static void exit_leak_link(uintptr_t head, uintptr_t tail)
{
    uintptr_t *h = (uintptr_t *)(head ^ SCRAMBLE);
    uintptr_t t = tail ^ SCRAMBLE;
    memcpy(h, &t, sizeof t);
}

/* Stack below us overwritten, so the scan at exit finds no stale copy of a pointer. */
__attribute__((noinline)) static void scrub_stack(void)
{
    volatile char pad[32768];
    memset((char *)pad, 0, sizeof pad);
}

/* --exit-held: the parked threads. Each allocates its block (its own site: tracking
 * registers the thread with the heap's root scan), counts itself parked and waits in
 * pause() for the process's exit, the block's address in rbx alone: neither its stack
 * nor any global holds it, so only the registers the heap's stop signal saves name it. */
static _Atomic uint32_t held_parked, held_failed;

struct held_arg {
    nmm_heap_t *heap;
    size_t n;
    _Atomic bool holds; /* its block was made (set before it counts itself parked) */
};

__attribute__((noinline)) static uintptr_t exit_leak_held(nmm_heap_t *h, size_t n)
{
    void *p = nmm_alloc(h, n, NMM_SITE_HERE(h));
    if (p)
        memset(p, 0x69, n < 64 ? n : 64);
    return (uintptr_t)p ^ SCRAMBLE;
}

static void *held_thread(void *argp)
{
    struct held_arg *a = argp;
    uintptr_t scrambled = exit_leak_held(a->heap, a->n);
    if (scrambled == SCRAMBLE) { /* NULL: a limit or fail point; nothing to hold */
        atomic_fetch_add(&held_failed, 1);
        return NULL;
    }
    atomic_store(&a->holds, true);
    scrub_stack();
#if defined(__x86_64__)
    /* rbx = the block; then parked (the count store is after the load: once counted, the
     * register holds it); SYS_pause again whenever a signal interrupts it */
    __asm__ volatile("mov %0, %%rbx\n\t"
                     "xor %1, %%rbx\n\t"
                     "lock addl $1, %2\n\t"
                     "1: mov $34, %%eax\n\t"
                     "syscall\n\t"
                     "jmp 1b"
                     :
                     : "r"(scrambled), "r"((uintptr_t)SCRAMBLE), "m"(held_parked)
                     : "rax", "rbx", "rcx", "r11", "memory");
#else
    (void)scrambled; /* the driver refuses --exit-held elsewhere (main.c) */
#endif
    return NULL;
}

/* Start k parked threads (sizes[i] bytes each) and wait until each is parked or gave
 * up (its allocation failed); held[i] says whether thread i holds its block. Returns
 * how many threads started. */
static uint32_t exit_leak_park(nmm_heap_t *heap, uint32_t k, const size_t *sizes, bool *held)
{
    static struct held_arg args[DRV_MAX_EXIT_HELD];
    uint32_t started = 0;
    for (uint32_t i = 0; i < k; i++) {
        args[i].heap = heap;
        args[i].n = sizes[i];
        atomic_store(&args[i].holds, false);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, held_thread, &args[i]) == 0)
            started++;
        pthread_attr_destroy(&attr);
    }
    struct timespec nap = {0, 1000000};
    for (int wait = 0;
         wait < 30000 && atomic_load(&held_parked) + atomic_load(&held_failed) < started; wait++)
        nanosleep(&nap, NULL);
    for (uint32_t i = 0; i < k; i++)
        held[i] = atomic_load(&args[i].holds);
    return started;
}

void exit_leak_blocks(const options_t *o, const target_t *t, jline_t *j)
{
    nmm_heap_t *heap = t->heap;
    uint64_t rng = o->seed ^ 0x6c65616b73ull;  /* "leaks" */
    uint64_t blocks = 0, bytes = 0, supp_blocks = 0, supp_bytes = 0;
    uint64_t ind_blocks = 0, ind_bytes = 0, held_blocks = 0, held_bytes = 0;
    uint32_t held_started = 0, odd_blocks = 0, signal_blocks = 0, pc_blocks = 0;
    uintptr_t heads[8] = {0};  /* the last blocks made, by i % 8 (scrambled; 0 = none) */
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
        /* a chain's head holds a pointer: at least one word */
        if (i % 8 == 0 && n < sizeof(uintptr_t))
            n = sizeof(uintptr_t);
        /* half the lost blocks of each kind: i % 8 is 0 (small) or 3 (large) */
        bool hit = damage && (i % 8 == 0 || i % 8 == 3);
        uintptr_t got;
        if (i == 7) {
            pc_call_line = __LINE__ + 1;
            got = exit_leak_via_pc(heap, n);
        } else {
            got = supp     ? exit_leak_suppressed(heap, n)
                  : i == 4 ? exit_leak_lost_odd(heap, n)
                  : i == 6 ? exit_leak_raise(heap, n)
                           : exit_leak_lost(heap, n, hit);
        }
        heads[i % 8] = got == SCRAMBLE ? 0 : got;
        if (got == SCRAMBLE)
            continue;  /* NULL: a limit or fail point; not leaked */
        if (hit)
            hex_item(exit_damaged, sizeof exit_damaged, got);
        blocks++;
        bytes += n;
        if (supp) {
            supp_blocks++;
            supp_bytes += n;
        }
        if (i == 4)
            odd_blocks++;
        if (i == 6)
            signal_blocks++;
        if (i == 7)
            pc_blocks++;
        if (i % 8 == 2 && heads[0]) {
            exit_leak_link(heads[0], got);
            ind_blocks++;
            ind_bytes += n;
        }
    }
    strcat(exit_damaged, "]");
    if (damage && t->level == NMM_LEVEL_PARANOID) {
        uintptr_t got = exit_freed_written(heap);
        if (got != SCRAMBLE) {
            freed[0] = '\0';
            hex_item(freed, sizeof freed, got);
        }
    }
    if (o->exit_held) {
        size_t sizes[DRV_MAX_EXIT_HELD];
        for (uint32_t i = 0; i < o->exit_held; i++)
            sizes[i] = 16 + (size_t)(prng_splitmix(&rng) % 4096);
        bool held[DRV_MAX_EXIT_HELD];
        held_started = exit_leak_park(heap, o->exit_held, sizes, held);
        for (uint32_t i = 0; i < o->exit_held; i++)
            if (held[i]) {
                held_blocks++;
                held_bytes += sizes[i];
            }
    }
    scrub_stack();
    char buf[512 + sizeof exit_damaged];
    snprintf(buf, sizeof buf,
             "{\"blocks\":%llu,\"bytes\":%llu,\"suppressed_blocks\":%llu,"
             "\"suppressed_bytes\":%llu,\"indirect_blocks\":%llu,\"indirect_bytes\":%llu,"
             "\"odd_blocks\":%u,\"signal_blocks\":%u,\"pc_blocks\":%u,"
             "\"held_threads\":%u,\"held_started\":%u,\"held_blocks\":%llu,"
             "\"held_bytes\":%llu",
             (unsigned long long)blocks, (unsigned long long)bytes,
             (unsigned long long)supp_blocks, (unsigned long long)supp_bytes,
             (unsigned long long)ind_blocks, (unsigned long long)ind_bytes, odd_blocks,
             signal_blocks, pc_blocks, o->exit_held, held_started,
             (unsigned long long)held_blocks, (unsigned long long)held_bytes);
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

/* The JSON report's "site" of block 4's group ("file:line"), the string literal as
 * written (the oracle parses it): "odd_site":"..." if the report has a group whose site
 * starts "nmm-odd/", else null. The literal ends at the first unescaped quote; a report that
 * escapes badly gives a line that does not parse, which the oracle names. */
static void copy_odd_site(jline_t *j, const char *leaks)
{
    static const char key[] = "\"site\":\"nmm-odd/";
    const char *at = leaks ? strstr(leaks, key) : NULL;
    if (!at) {
        jl_null(j, "odd_site");
        return;
    }
    const char *lit = at + sizeof "\"site\":" - 1, *p = lit + 1;
    while (*p && *p != '"' && *p != '\n')
        p += *p == '\\' && p[1] ? 2 : 1;
    char buf[1024];
    size_t n = (size_t)(p + 1 - lit);
    if (*p != '"' || n >= sizeof buf) {
        jl_null(j, "odd_site");
        return;
    }
    memcpy(buf, lit, n);
    buf[n] = '\0';
    jl_key(j, "odd_site");
    jl_raw(j, buf);
}

/* The text report's stack of block 6 (made in the signal handler) goes on below the
 * signal frame: after the frame of exit_leak_in_signal, in the same stack (lines
 * "    #N ..."), one of exit_leak_raise, the function that raised the signal. */
static bool signal_stack_whole(const char *text)
{
    for (const char *at = strstr(text, " in exit_leak_in_signal+0x"); at;
         at = strstr(at + 1, " in exit_leak_in_signal+0x")) {
        for (const char *line = strchr(at, '\n'); line && strncmp(line + 1, "    #", 5) == 0;
             line = strchr(line + 1, '\n')) {
            const char *end = strchr(line + 1, '\n');
            const char *hit = strstr(line + 1, " in exit_leak_raise+0x");
            if (hit && (!end || hit < end))
                return true;
        }
    }
    return false;
}

/* A group of the JSON report with a "site_frame" (block 7's code-address site) that
 * names exit_leak_blocks at exitleak.c:pc_call_line. */
static bool site_frame_named(const char *leaks)
{
    char line[48];
    snprintf(line, sizeof line, "exitleak.c\",\"line\":%d,", pc_call_line);
    for (const char *at = strstr(leaks, "\"site_frame\":{"); at && pc_call_line;
         at = strstr(at + 1, "\"site_frame\":{")) {
        const char *end = strchr(at + 14, '}');
        const char *fn = strstr(at, "\"function\":\"exit_leak_blocks\"");
        const char *ln = strstr(at, line);
        if (end && fn && fn < end && ln && ln < end)
            return true;
    }
    return false;
}

/* A stack frame of the text report, "#0 0x... in exit_leak_lost+0x23 /dir/exitleak.c:100
 * (module+0x...)", symbolized down to the allocation's line: the file:line after the
 * function is the symbolizer's (the site's own "allocated at" line is not a frame). */
static bool frame_has_line(const char *text)
{
    static const char fn[] = " in exit_leak_lost+0x";
    char want[48];
    snprintf(want, sizeof want, "exitleak.c:%d", lost_line);
    for (const char *at = strstr(text, fn); at && lost_line; at = strstr(at + 1, fn)) {
        const char *p = at + sizeof fn - 1;
        while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))
            p++;
        if (*p != ' ')
            continue;
        const char *loc = ++p;
        while (*p && *p != ' ' && *p != '\n')
            p++;
        /* loc..p is "path:line" or "path:line:column" */
        size_t n = (size_t)(p - loc), w = strlen(want);
        for (size_t k = 0; k + w <= n; k++)
            if (memcmp(loc + k, want, w) == 0 && (k == 0 || loc[k - 1] == '/') &&
                (k + w == n || loc[k + w] == ':'))
                return true;
    }
    return false;
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
    jl_bool(&j, "text_frame_has_line", text && frame_has_line(text));
    copy_odd_site(&j, leaks);
    jl_bool(&j, "text_signal_stack_whole", text && signal_stack_whole(text));
    jl_bool(&j, "json_site_frame", leaks && site_frame_named(leaks));
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
