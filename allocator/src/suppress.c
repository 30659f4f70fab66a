/* suppress.c — leak suppressions in LSan's format: one "leak:PATTERN" per line,
 * '#' starts a comment, blank lines are skipped. A pattern is matched against
 * every frame of a leak's stack (or its allocation site): the function, the
 * module (its path or file name) and the source file; '*' matches any run of
 * characters, a leading '^' or trailing '$' anchors it, else it may match
 * anywhere inside (LSan's TemplateMatch). Built-in patterns for the C library's
 * own one-time buffers always apply. The file (suppressions=FILE) is read once
 * into an os_map'd copy, at the first leak report; nothing here allocates with
 * malloc. Any thread (one leak report at a time).
 */
#include "internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

/* The C library (and libstdc++) allocating for itself, once, and keeping it for
 * the process's life: stdio buffers, locale and timezone data, iconv modules,
 * name-service modules, atexit tables, the dynamic loader's own records, the
 * C++ emergency exception pool. Most are still reachable from the library's
 * globals anyway; these catch the ones it keeps in places the scan misses. */
static const char *const builtin[] = {
    "^_IO_file_doallocate$", "^_IO_wfile_doallocate$", "^__libc_setlocale$", "^setlocale$",
    "^_nl_",                 "^tzset_internal$",       "^__tzfile_read$",    "^__tzstring",
    "^__gconv_",             "^__nss_",                "^nss_",              "^__new_exitfn$",
    "^_dl_",                 "^__libc_dlopen_mode$",   "^__add_to_environ$", "^__res_",
    "^__resolv_context",     "^_ZN12_GLOBAL__N_14poolC", "^__cxa_thread_atexit_impl$",
};

struct user_list {
    char *text;            /* the file's patterns, NUL-separated */
    size_t map_bytes;
    const char *patterns[1024];
    size_t count;
};

static struct user_list user;
static _Atomic int user_state; /* 0 not read, 1 reading, 2 read */

static const char *find_piece(const char *s, const char *piece, size_t n)
{
    for (const char *p = s; *p; p++)
        if (strncmp(p, piece, n) == 0)
            return p;
    return NULL;
}

/* LSan's TemplateMatch: '*' any run, '^' / '$' anchors, else a substring. */
static bool template_match(const char *t, const char *s)
{
    if (!t || !*t || !s)
        return false;
    bool anchored_start = t[0] == '^';
    if (anchored_start)
        t++;
    size_t tn = strlen(t);
    bool anchored_end = tn && t[tn - 1] == '$';
    if (anchored_end)
        tn--;
    const char *stop = t + tn, *at = s;
    for (const char *piece = t;;) {
        const char *star = memchr(piece, '*', (size_t)(stop - piece));
        size_t n = (size_t)((star ? star : stop) - piece);
        bool first = piece == t, last = star == NULL;
        if (last && anchored_end) {
            size_t left = strlen(at);
            if (left < n || strncmp(at + left - n, piece, n) != 0)
                return false;
            return !(first && anchored_start) || left == n;
        }
        if (first && anchored_start) {
            if (strncmp(at, piece, n) != 0)
                return false;
            at += n;
        } else if (n) {
            const char *hit = find_piece(at, piece, n);
            if (!hit)
                return false;
            at = hit + n;
        }
        if (last)
            return true;
        piece = star + 1;
    }
}

static void read_user_file(void)
{
    const char *path = options_process()->suppressions;
    if (!path)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        char msg[1200];
        strbuf_t sb;
        strbuf_init(&sb, msg, sizeof msg);
        strbuf_puts(&sb, "nmm: suppressions: cannot read '");
        strbuf_puts(&sb, path);
        strbuf_puts(&sb, "': only the built-in suppressions apply\n");
        out_text(msg, sb.len < sizeof msg ? sb.len : sizeof msg - 1);
        return;
    }
    size_t cap = 1 << 20;
    user.map_bytes = cap;
    user.text = os_map(NULL, cap);
    size_t len = 0;
    ssize_t r;
    while (user.text && len + 1 < cap && (r = read(fd, user.text + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    if (!user.text)
        return;
    for (char *p = user.text, *end = user.text + len; p < end && user.count < 1024;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        *line_end = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        char *q = line_end;
        while (q > p && (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\r'))
            *--q = '\0';
        if (strncmp(p, "leak:", 5) == 0 && p[5])
            user.patterns[user.count++] = p + 5;
        p = line_end + 1;
    }
}

static void ensure_user(void)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&user_state, &expected, 1)) {
        read_user_file();
        atomic_store_explicit(&user_state, 2, memory_order_release);
    }
    while (atomic_load_explicit(&user_state, memory_order_acquire) != 2) {
    }
}

static bool frame_matches(const char *pattern, const sym_frame_t *f)
{
    if (template_match(pattern, f->func) || template_match(pattern, f->demangled) ||
        template_match(pattern, f->inner) || template_match(pattern, f->file) ||
        template_match(pattern, f->module))
        return true;
    if (f->module) {
        const char *slash = strrchr(f->module, '/');
        return template_match(pattern, slash ? slash + 1 : f->module);
    }
    return false;
}

const char *suppress_match(const sym_frame_t *const *frames, size_t n)
{
    ensure_user();
    for (size_t i = 0; i < n; i++) {
        if (!frames[i])
            continue;
        for (size_t k = 0; k < user.count; k++)
            if (frame_matches(user.patterns[k], frames[i]))
                return user.patterns[k];
        for (size_t k = 0; k < sizeof builtin / sizeof *builtin; k++)
            if (frames[i]->func && template_match(builtin[k], frames[i]->func))
                return builtin[k];
    }
    return NULL;
}
