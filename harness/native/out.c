/* out.c — JSON lines on stdout, each written with one write(2) so a crash never
 * tears a line and everything before it reaches the parent. Never allocates from
 * the target (fixed buffers, private mmaps). Any thread; lines are independent. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "driver.h"

static bool quiet;

void out_set_quiet(bool q) { quiet = q; }

static void put(jline_t *j, const char *s, size_t n)
{
    if (j->len + n >= sizeof j->buf - 2) /* keep room for "}\n" */
        n = sizeof j->buf - 2 - j->len - 1;
    memcpy(j->buf + j->len, s, n);
    j->len += n;
}

static void putf(jline_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(jline_t *j, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(j, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void jl_key(jline_t *j, const char *key)
{
    if (!j->first)
        put(j, ",", 1);
    j->first = false;
    put(j, "\"", 1);
    put(j, key, strlen(key));
    put(j, "\":", 2);
}

static void put_string(jline_t *j, const char *v)
{
    put(j, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            put(j, e, 2);
        } else if (*c < 0x20) {
            putf(j, "\\u%04x", *c);
        } else {
            put(j, (const char *)c, 1);
        }
    }
    put(j, "\"", 1);
}

void jl_begin(jline_t *j, const char *type)
{
    j->len = 0;
    j->first = true;
    put(j, "{", 1);
    jl_str(j, "type", type);
}

void jl_u64(jline_t *j, const char *key, uint64_t v)
{
    jl_key(j, key);
    putf(j, "%llu", (unsigned long long)v);
}

void jl_i64(jline_t *j, const char *key, int64_t v)
{
    jl_key(j, key);
    putf(j, "%lld", (long long)v);
}

void jl_dbl(jline_t *j, const char *key, double v)
{
    jl_key(j, key);
    if (v != v || v > 1e300 || v < -1e300)
        put(j, "null", 4);
    else
        putf(j, "%.6g", v);
}

void jl_str(jline_t *j, const char *key, const char *v)
{
    jl_key(j, key);
    put_string(j, v ? v : "");
}

void jl_hex(jline_t *j, const char *key, uint64_t v)
{
    jl_key(j, key);
    putf(j, "\"0x%llx\"", (unsigned long long)v);
}

void jl_null(jline_t *j, const char *key)
{
    jl_key(j, key);
    put(j, "null", 4);
}

void jl_bool(jline_t *j, const char *key, bool v)
{
    jl_key(j, key);
    put(j, v ? "true" : "false", v ? 4 : 5);
}

void jl_raw(jline_t *j, const char *text) { put(j, text, strlen(text)); }

void jl_u64_array(jline_t *j, const char *key, const uint64_t *v, uint32_t n)
{
    jl_key(j, key);
    put(j, "[", 1);
    for (uint32_t i = 0; i < n; i++)
        putf(j, i ? ",%llu" : "%llu", (unsigned long long)v[i]);
    put(j, "]", 1);
}

void jl_end(jline_t *j)
{
    j->buf[j->len++] = '}';
    j->buf[j->len++] = '\n';
    if (quiet)
        return;
    size_t off = 0;
    while (off < j->len) {
        ssize_t n = write(STDOUT_FILENO, j->buf + off, j->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* parent gone: nothing useful left to do with the line */
        off += (size_t)n;
    }
}

void out_error(const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "nmm-driver: ");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(msg + n, sizeof msg - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof msg - 2)
        n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, msg, (size_t)n);
    (void)w;
}

uint64_t out_drain_events(nmm_heap_t *heap, int worker, uint64_t driver_op)
{
    if (!heap)
        return 0;
    nmm_event_t evs[64];
    uint64_t total = 0;
    size_t n;
    while ((n = nmm_events_drain(heap, evs, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            const nmm_event_t *e = &evs[i];
            jline_t j;
            jl_begin(&j, "event");
            jl_str(&j, "kind", nmm_event_kind_str(e->kind));
            jl_hex(&j, "address", e->address);
            jl_u64(&j, "size", e->size);
            jl_u64(&j, "detail", e->detail);
            jl_u64(&j, "seq", e->seq);
            jl_u64(&j, "op_count", e->op_count);
            jl_u64(&j, "alloc_site", e->alloc_site);
            jl_u64(&j, "free_site", e->free_site);
            jl_u64(&j, "thread", e->thread_id);
            jl_i64(&j, "worker", worker);
            jl_u64(&j, "driver_op", driver_op);
            jl_end(&j);
        }
        total += n;
    }
    return total;
}

void out_stats(jline_t *j, const char *key, nmm_heap_t *heap, uint64_t *live_blocks)
{
    nmm_stats_t st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    jl_key(j, key);
    if (!heap || nmm_stats_get(heap, &st) != NMM_OK) {
        jl_raw(j, "null");
        *live_blocks = UINT64_MAX;
        return;
    }
    jline_t sub;
    sub.len = 0;
    sub.first = true;
    put(&sub, "{", 1);
#define DRV_STAT_FIELD_(name, doc) jl_u64(&sub, #name, st.name);
    NMM_STATS_FIELDS(DRV_STAT_FIELD_)
#undef DRV_STAT_FIELD_
    put(&sub, "}", 1);
    sub.buf[sub.len] = '\0';
    jl_raw(j, sub.buf);
    *live_blocks = st.live_blocks;
}

void *out_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void out_unmap(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

uint64_t proc_status_kib(const char *key)
{
    char buf[4096]; /* no stdio: it would allocate from the target */
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *at = strstr(buf, key);
    return at ? strtoull(at + strlen(key), NULL, 10) : 0;
}
