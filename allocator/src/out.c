/* out.c — where reports go: stderr, or with log_path=PREFIX the file
 * PREFIX.<pid> (text) and PREFIX.<pid>.json (one JSON object per line), as
 * log_format says. A file is opened by the first report of each process (a
 * forked child opens its own), appended to, never truncated. write(2) only;
 * never allocates. Any thread: one call writes one whole report, and the
 * files are opened O_APPEND, so reports of concurrent threads do not mix.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sink {
    _Atomic int fd;     /* -1 = not open */
    _Atomic int pid;    /* the process that opened fd */
};

static struct sink text_sink = {-1, 0}, json_sink = {-1, 0};

void out_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return; /* EINTR included: a report is best effort, never a hang */
        p += w;
        n -= (size_t)w;
    }
}

/* The file's descriptor in this process, opened on first use; -1 on failure
 * (the report then goes to stderr instead, so nothing is lost silently). */
static int sink_fd(struct sink *s, const char *suffix)
{
    int pid = (int)getpid();
    int fd = atomic_load_explicit(&s->fd, memory_order_acquire);
    if (fd >= 0 && atomic_load_explicit(&s->pid, memory_order_relaxed) == pid)
        return fd;
    const char *prefix = options_process()->log_path;
    char path[1200];
    strbuf_t sb;
    strbuf_init(&sb, path, sizeof path);
    strbuf_puts(&sb, prefix);
    strbuf_putc(&sb, '.');
    strbuf_u64(&sb, (uint64_t)pid);
    strbuf_puts(&sb, suffix);
    if (sb.len >= sizeof path)
        return -1;
    int fresh = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fresh < 0)
        return -1;
    int old = atomic_exchange(&s->fd, fresh);
    atomic_store_explicit(&s->pid, pid, memory_order_release);
    if (old >= 0 && old != fresh)
        close(old); /* the parent's file, inherited through fork (or a racing open) */
    return fresh;
}

bool out_text_wanted(void)
{
    const options_process_t *o = options_process();
    return !o->log_path || (o->log_format & NMM_LOG_TEXT);
}

bool out_json_wanted(void)
{
    const options_process_t *o = options_process();
    return o->log_path && (o->log_format & NMM_LOG_JSON);
}

void out_text(const char *s, size_t n)
{
    int fd = options_process()->log_path ? sink_fd(&text_sink, "") : 2;
    out_write_all(fd >= 0 ? fd : 2, s, n);
}

void out_json(const char *s, size_t n)
{
    if (!out_json_wanted())
        return;
    int fd = sink_fd(&json_sink, ".json");
    if (fd >= 0)
        out_write_all(fd, s, n);
}

void out_stderr(const char *s, size_t n)
{
    out_write_all(2, s, n);
}

#ifdef NMM_DEBUG
void out_assert_fail(const char *cond, const char *file, int line)
{
    char buf[512];
    strbuf_t sb;
    strbuf_init(&sb, buf, sizeof buf);
    strbuf_puts(&sb, "nmm: internal assertion failed: ");
    strbuf_puts(&sb, cond);
    strbuf_puts(&sb, " (");
    strbuf_puts(&sb, file);
    strbuf_putc(&sb, ':');
    strbuf_u64(&sb, (uint64_t)line);
    strbuf_puts(&sb, ")\n");
    out_write_all(2, buf, sb.len < sizeof buf ? sb.len : sizeof buf - 1);
    abort();
}
#endif

/* ------------------------------------------------------------------ report lock */

/* One report at a time, so two threads' stacks do not interleave and the
 * symbolizer batches stay small. A spin lock with a bound: a fork child whose
 * parent held it, or a report that hangs, costs one second, never a deadlock. */
static _Atomic uint32_t report_owner; /* tid holding it, 0 = free */

bool out_lock(void)
{
    uint32_t me = os_thread_id();
    if (atomic_load_explicit(&report_owner, memory_order_relaxed) == me)
        return false; /* a report inside a report (a detection while formatting): go on */
    for (uint32_t spins = 0; spins < 20100; spins++) { /* ~1 s: 100 spins, then 50 us naps */
        uint32_t expected = 0;
        if (atomic_compare_exchange_weak_explicit(&report_owner, &expected, me,
                                                  memory_order_acquire, memory_order_relaxed))
            return true;
        if (spins >= 100)
            usleep(50);
    }
    return false;
}

void out_unlock(bool taken)
{
    if (taken)
        atomic_store_explicit(&report_owner, 0, memory_order_release);
}
