/* roots.c — reachability for the leak report at exit, LSan's way: a live block
 * is "still reachable" when a pointer to it (or into it) sits in the program's
 * globals, a thread's stack, static TLS or registers, or in another reachable
 * block; "indirectly lost" when only lost blocks point to it; otherwise
 * "definitely lost". Memory is read with process_vm_readv where it may vanish
 * under us (other threads' stacks, large blocks), so a racing thread can make
 * an answer stale but never crash the scan. Never allocates with malloc
 * (os_map). Runs at exit or on request, outside heap locks; other threads are
 * paused by a signal while their registers and stacks are read, for a bounded
 * time. One scan at a time (the report lock).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define ROOTS_READ_BYTES (64u << 10) /* a guarded read's most: 16 pages */

/* ------------------------------------------------------------------ threads */

/* Threads that allocated with tracking on, registered on their first tracked
 * allocation: a stack address and the thread pointer, to find their stack and
 * TLS mappings at exit. A thread that never allocated holds no pointer it got
 * from us... unless another thread handed it one: its stack is not scanned. */
#define THREADS_MAX 4096
struct thread_slot {
    _Atomic uint32_t tid;
    uintptr_t sp, tp;
};
static struct thread_slot threads[THREADS_MAX];
static _Atomic uint32_t thread_count;
static NMM_TLS uint8_t thread_registered;

void roots_register_thread(void)
{
    if (likely(thread_registered))
        return;
    thread_registered = 1;
    uint32_t i = atomic_fetch_add_explicit(&thread_count, 1, memory_order_relaxed);
    if (i >= THREADS_MAX)
        return;
    threads[i].sp = (uintptr_t)__builtin_frame_address(0);
    threads[i].tp = (uintptr_t)__builtin_thread_pointer();
    atomic_store_explicit(&threads[i].tid, os_thread_id(), memory_order_release);
}

/* ------------------------------------------------------------------ the live set */

static void collect_visit(void *ctx, const void *ptr, size_t requested, uint32_t id)
{
    roots_set_t *s = ctx;
    if (s->n == s->cap) {
        s->missed++;
        return;
    }
    s->b[s->n++] = (roots_block_t){(uintptr_t)ptr, requested, id, ROOTS_LOST, 0};
}

NMM_DEFINE_HEAP_SORT(sort_by_address, roots_block_t, ptr)

bool roots_collect(nmm_heap_t *heap, roots_set_t *s, size_t expect)
{
    memset(s, 0, sizeof *s);
    size_t page = os_page_size();
    s->cap = expect + expect / 4 + 1024;
    size_t set_bytes = (s->cap * (sizeof(roots_block_t) + sizeof(uint32_t)) + page - 1) & ~(page - 1);
    s->map_bytes = set_bytes + ROOTS_READ_BYTES;
    s->b = os_map(NULL, s->map_bytes);
    if (!s->b)
        return false;
    s->work = (uint32_t *)(s->b + s->cap);
    s->buf = (uintptr_t *)((uint8_t *)s->b + set_bytes);
    s->pid = getpid();
    heap_foreach_live(heap, collect_visit, s);
    sort_by_address(s->b, s->n);
    if (s->n) {
        const roots_block_t *last = &s->b[s->n - 1];
        /* One byte below the lowest block, not the block itself: this struct sits on
         * the scanning thread's stack, which is a root, and would keep it alive */
        s->lo = s->b[0].ptr - 1;
        s->span = last->ptr + last->size - s->lo;
    }
    return true;
}

void roots_release(roots_set_t *s)
{
    if (s->b)
        os_unmap(s->b, s->map_bytes);
    memset(s, 0, sizeof *s);
}

/* The block whose [ptr, ptr + size] holds v (a pointer just past the end counts,
 * as LSan's does not, for blocks of size 0), or -1. */
static long block_at(const roots_set_t *s, uintptr_t v)
{
    if (!s->n || v - s->lo > s->span)
        return -1;
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->b[mid].ptr <= v)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return -1;
    const roots_block_t *b = &s->b[lo - 1];
    return v < b->ptr + (b->size ? b->size : 1) ? (long)(lo - 1) : -1;
}

/* ------------------------------------------------------------------ scanning */

/* Up to n bytes at addr (n within ROOTS_READ_BYTES of addr's 4 KiB piece) into buf
 * through process_vm_readv, in one call: the remote side is given page by page, so a
 * transfer stops at the first unreadable page (the kernel never splits an element)
 * and says how much it read. 0: the first page cannot be read. */
static size_t read_remote(int pid, uintptr_t addr, void *buf, size_t n)
{
    struct iovec local = {buf, n}, remote[ROOTS_READ_BYTES / 4096 + 1];
    size_t k = 0;
    for (uintptr_t a = addr, end = addr + n; a < end; k++) {
        uintptr_t next = (a & ~(uintptr_t)4095) + 4096;
        remote[k] = (struct iovec){(void *)a, (next < end ? next : end) - a};
        a = next;
    }
    ssize_t r = process_vm_readv(pid, &local, 1, remote, k, 0);
    return r > 0 ? (size_t)r : 0;
}

/* Every aligned word of [lo, hi) that points into a live block marks it with
 * mark (when it is not marked reachable already) and queues it. safe: read
 * through process_vm_readv, up to ROOTS_READ_BYTES a call (a page that cannot
 * be read is skipped). A megabyte block used to take 256 calls (and as many
 * getpid calls): in git's short processes that was half the system calls the
 * exit report made. Not instrumented by AddressSanitizer: a conservative scan reads
 * whole globals and stacks, redzones between their objects included. */
__attribute__((no_sanitize_address))
static void scan_range(roots_set_t *s, uintptr_t lo, uintptr_t hi, uint8_t mark, bool safe)
{
    lo = (lo + 7) & ~(uintptr_t)7;
    while (lo + 8 <= hi) {
        size_t n = (hi - lo) & ~(size_t)7;
        const uintptr_t *w = (const uintptr_t *)lo;
        if (safe) {
            uintptr_t limit = (lo & ~(uintptr_t)4095) + ROOTS_READ_BYTES;
            if (n > limit - lo)
                n = limit - lo;
            size_t got = read_remote(s->pid, lo, s->buf, n) & ~(size_t)7;
            if (!got) {
                lo = (lo & ~(uintptr_t)4095) + 4096;
                continue;
            }
            n = got;
            w = s->buf;
        }
        const uintptr_t base = s->lo, span = s->span;
        for (size_t i = 0, words = n / 8; i < words; i++) {
            /* Most words are not even near the heap: four of them at a time with one
             * branch (bitwise &, no short circuit), then one at a time. */
            if (i + 4 <= words && ((w[i] - base > span) & (w[i + 1] - base > span) &
                                   (w[i + 2] - base > span) & (w[i + 3] - base > span))) {
                i += 3;
                continue;
            }
            if (w[i] - base > span)
                continue;
            long k = block_at(s, w[i]);
            if (k < 0)
                continue;
            roots_block_t *b = &s->b[k];
            if (b->state == ROOTS_REACHABLE || b->state == mark || lo + 8 * i - b->ptr < b->size)
                continue; /* a block pointing into itself keeps nothing alive */
            b->state = mark;
            s->work[s->nwork++] = (uint32_t)k;
        }
        lo += n;
    }
}

/* Flood from the queued blocks through their contents. */
static void flood(roots_set_t *s, uint8_t mark)
{
    while (s->nwork) {
        const roots_block_t *b = &s->b[s->work[--s->nwork]];
        scan_range(s, b->ptr, b->ptr + b->size, mark, b->size > 65536);
    }
}

/* ------------------------------------------------------------------ mappings */

struct maps {
    char *text;
    size_t len, map_bytes;
};

static bool maps_read(struct maps *m)
{
    memset(m, 0, sizeof *m);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t page = os_page_size();
    m->map_bytes = 1 << 20;
    for (;;) {
        m->text = os_map(NULL, m->map_bytes);
        if (!m->text)
            break;
        m->len = 0;
        lseek(fd, 0, SEEK_SET);
        ssize_t r;
        while ((r = read(fd, m->text + m->len, m->map_bytes - 1 - m->len)) > 0)
            m->len += (size_t)r;
        if (m->len < m->map_bytes - 1)
            break;
        os_unmap(m->text, m->map_bytes); /* did not fit: twice as much */
        m->text = NULL;
        m->map_bytes = (m->map_bytes * 2 + page - 1) & ~(page - 1);
    }
    close(fd);
    return m->text != NULL;
}

static uintptr_t hex_at(const char **p)
{
    uintptr_t v = 0;
    for (;; (*p)++) {
        char c = **p;
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                            : 16;
        if (d == 16)
            return v;
        v = v * 16 + d;
    }
}

/* The mapping holding addr: [lo, hi), readable, and not a file's. */
static bool mapping_of(const struct maps *m, uintptr_t addr, uintptr_t *lo, uintptr_t *hi)
{
    for (const char *p = m->text, *end = m->text + m->len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *q = p;
        uintptr_t a = hex_at(&q);
        q++;
        uintptr_t b = hex_at(&q);
        if (addr >= a && addr < b) {
            bool readable = q + 1 < line_end && q[1] == 'r';
            const char *path = memchr(q, '/', (size_t)(line_end - q));
            *lo = a;
            *hi = b;
            return readable && !path;
        }
        p = line_end + 1;
    }
    return false;
}

/* The static TLS and thread descriptor around a thread pointer (x86-64 and
 * aarch64 glibc keep static TLS right below it, the descriptor at it): the
 * loader's figure for the static TLS size, and a bound for the descriptor
 * (struct pthread, ~2.3 KiB in glibc 2.36; it holds pthread_setspecific values
 * and the DTV pointer). Precise bounds matter: the mapping around them may
 * have grown to include unrelated memory (our own report buffers among it). */
extern void _dl_get_tls_static_info(size_t *size, size_t *align) __attribute__((weak));
#define TCB_BYTES 2816

static void tls_bounds(uintptr_t tp, uintptr_t *lo, uintptr_t *hi)
{
    size_t size = 0, align = 0;
    if (_dl_get_tls_static_info)
        _dl_get_tls_static_info(&size, &align);
    if (size == 0 || size > (64u << 20))
        size = 4096;
    *lo = tp - size;
    *hi = tp + TCB_BYTES;
}

/* A thread's memory: its stack and its static TLS and descriptor. The calling
 * thread's stack from sp (where the leak check was entered) to the top of its
 * mapping and its TLS area; another thread's from sp (the stopped thread's own, else the bottom of
 * its stack mapping) up to the end of its descriptor, which glibc puts at the
 * top of the same mapping. A range holding live blocks (a heap's own region) is
 * never a root. */
static void scan_thread_mappings(roots_set_t *s, const struct maps *m, uintptr_t sp, uintptr_t tp,
                                 bool self, bool stopped)
{
    uintptr_t lo = 0, hi = 0, tlo = 0, thi = 0;
    bool mapped = mapping_of(m, sp, &lo, &hi);
    if (tp)
        tls_bounds(tp, &tlo, &thi);
    if (self) {
        if (mapped && block_at(s, lo) < 0)
            scan_range(s, sp, hi, ROOTS_REACHABLE, false);
        if (tp)
            scan_range(s, tlo, thi, ROOTS_REACHABLE, true);
        return;
    }
    uintptr_t from = stopped ? sp : mapped ? lo : sp;
    uintptr_t to = tp && thi > from && thi - from < (256u << 20) ? thi : mapped ? hi : sp;
    if (from < to)
        scan_range(s, from, to, ROOTS_REACHABLE, true);
}

/* ------------------------------------------------------------------ stopping threads */

/* Other threads are paused in a signal handler while their registers and
 * stacks are read: each copies its registers into its slot, says so, and
 * waits for the release (bounded, so a lost release cannot hang a program).
 * The handler stays installed once used: a late signal then finds no slot and
 * returns, where the default action would kill the process. */
#define STOP_SIGNAL (SIGRTMAX - 3)
struct stopped {
    _Atomic uint32_t tid;
    _Atomic int state; /* 0 asked, 1 registers saved (waiting), 2 gone */
    uintptr_t sp, tp;
    uintptr_t regs[NGREG];
};
static struct stopped *_Atomic stop_slots;
static _Atomic uint32_t stop_count;
static _Atomic int stop_release;

static void stop_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    int saved = errno;
    uint32_t me = (uint32_t)syscall(SYS_gettid);
    struct stopped *slots = atomic_load(&stop_slots);
    uint32_t n = atomic_load(&stop_count);
    for (uint32_t i = 0; slots && i < n; i++) {
        struct stopped *st = &slots[i];
        if (atomic_load(&st->tid) != me)
            continue;
        const ucontext_t *uc = ucv;
        for (int r = 0; r < NGREG; r++)
            st->regs[r] = (uintptr_t)uc->uc_mcontext.gregs[r];
        st->sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
        atomic_store(&st->state, 1);
        struct timespec nap = {0, 200000};
        for (int k = 0; k < 25000 && !atomic_load(&stop_release); k++) /* <= ~5 s */
            nanosleep(&nap, NULL);
        atomic_store(&st->state, 2);
        break;
    }
    errno = saved;
}

static bool stop_handler_installed(void)
{
    static _Atomic int installed; /* 0 not tried, 1 ours, 2 the program has the signal */
    int st = atomic_load(&installed);
    if (st)
        return st == 1;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    bool free_signal = sigaction(STOP_SIGNAL, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
                       old.sa_handler == SIG_DFL;
    bool ok = free_signal && sigaction(STOP_SIGNAL, &sa, NULL) == 0;
    atomic_store(&installed, ok ? 1 : 2);
    return ok;
}

/* Pause every other registered thread that is alive, scan its registers and
 * its stack and TLS mappings, release it. A thread that does not answer within
 * half a second (signals blocked) is scanned running: its stack through
 * process_vm_readv, its registers not at all. */
static void scan_other_threads(roots_set_t *s, const struct maps *m)
{
    uint32_t me = os_thread_id(), n = atomic_load(&thread_count);
    if (n > THREADS_MAX)
        n = THREADS_MAX;
    if (!n)
        return;
    size_t page = os_page_size(), bytes = (n * sizeof(struct stopped) + page) & ~(page - 1);
    struct stopped *slots = os_map(NULL, bytes); /* never unmapped: see stop_handler */
    if (!slots)
        return;
    bool can_stop = stop_handler_installed();
    atomic_store(&stop_release, 0);
    atomic_store(&stop_slots, slots);
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t tid = atomic_load(&threads[i].tid);
        if (!tid || tid == me || syscall(SYS_tgkill, getpid(), tid, 0) != 0)
            continue; /* not registered yet, us, or gone */
        slots[k].sp = threads[i].sp;
        slots[k].tp = threads[i].tp;
        atomic_store(&slots[k].tid, tid);
        atomic_store(&stop_count, ++k);
        if (can_stop)
            syscall(SYS_tgkill, getpid(), tid, STOP_SIGNAL);
    }
    struct timespec nap = {0, 1000000};
    for (int wait = 0; can_stop && wait < 500; wait++) {
        uint32_t ready = 0;
        for (uint32_t i = 0; i < k; i++)
            ready += atomic_load(&slots[i].state) != 0;
        if (ready == k)
            break;
        nanosleep(&nap, NULL);
    }
    for (uint32_t i = 0; i < k; i++) {
        struct stopped *st = &slots[i];
        if (atomic_load(&st->state) == 1)
            scan_range(s, (uintptr_t)st->regs, (uintptr_t)(st->regs + NGREG), ROOTS_REACHABLE,
                       false);
        scan_thread_mappings(s, m, st->sp, st->tp, false, atomic_load(&st->state) != 0);
    }
    atomic_store(&stop_release, 1);
    atomic_store(&stop_slots, NULL);
}

/* ------------------------------------------------------------------ globals */

static uintptr_t own_module_base;

static int globals_cb(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    roots_set_t *s = ctx;
    if (info->dlpi_addr == own_module_base && own_module_base)
        return 0; /* our own tables name blocks without holding them */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_W)) {
            uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
            scan_range(s, lo, lo + ph->p_memsz, ROOTS_REACHABLE, false);
        }
    }
    return 0;
}

static int own_base_cb(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    uintptr_t fn = (uintptr_t)ctx;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && fn >= lo && fn < lo + ph->p_memsz && info->dlpi_name &&
            info->dlpi_name[0]) {
            own_module_base = info->dlpi_addr;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ the scan */

void roots_mark(roots_set_t *s, uintptr_t self_from)
{
    if (!s->n)
        return;
    dl_iterate_phdr(own_base_cb, (void *)(uintptr_t)&roots_mark);
    dl_iterate_phdr(globals_cb, s);
    struct maps m;
    if (maps_read(&m)) {
        /* the calling thread's stack from self_from up: below it lie only the check's
         * own frames, where the heap walk (roots_collect, the stats, the exit sweep)
         * leaves live blocks' addresses in slots no later frame overwrote (scanned
         * from roots_mark's own frame, one such slot kept a lost block "still
         * reachable") */
        scan_thread_mappings(s, &m, self_from, (uintptr_t)__builtin_thread_pointer(), true, true);
        scan_other_threads(s, &m);
        os_unmap(m.text, m.map_bytes);
    }
    flood(s, ROOTS_REACHABLE);
    /* what only lost blocks point to is lost indirectly (LSan's "indirect leak") */
    for (size_t i = 0; i < s->n; i++) {
        roots_block_t *b = &s->b[i];
        if (b->state != ROOTS_LOST)
            continue;
        scan_range(s, b->ptr, b->ptr + b->size, ROOTS_INDIRECT, b->size > 65536);
        flood(s, ROOTS_INDIRECT);
    }
}
