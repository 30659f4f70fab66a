/* symbolize.c — names for the code addresses in reports: the module (from the
 * loader's list), function+offset from the module's full symbol table (.symtab,
 * so static functions too; .dynsym when stripped), and file:line:column from an
 * external symbolizer (llvm-symbolizer or addr2line, a child process) for
 * modules whose file has a line table (.debug_line): the program's own code
 * built with -g, not system libraries whose debug info sits in a separate
 * package (a symbolizer would spend ~0.2 s per report on libc's alone;
 * `python -m allocator symbolize` names those offline). Return addresses are moved back to their call
 * instruction, so a frame names the line of the call, not the one after it.
 * Runs only when a report is written, never in the allocating path; never
 * allocates with malloc (os_map; the module files are mapped read-only and kept).
 * Any thread: the module cache is filled lock-free, a batch belongs to its caller.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SYM_MODULES 256
#define SYM_PATH 512

struct sym_entry {
    uintptr_t value; /* link-time address (module-relative for PIE and libraries) */
    uintptr_t size;
    uint32_t name;   /* offset in strtab */
    uint32_t pad;
};

struct sym_module {
    _Atomic int state;     /* 0 free, 1 being filled, 2 ready */
    uintptr_t base;        /* load bias (dlpi_addr) */
    uintptr_t lo, hi;      /* runtime span of its executable segments */
    char path[SYM_PATH];
    _Atomic int index;     /* 0 not built, 1 building, 2 built (maybe empty) */
    const struct sym_entry *syms;
    size_t nsyms;
    const char *strtab;
    size_t strtab_size;
    bool has_debug;        /* a .debug_line section in the file itself */
};

static struct sym_module modules[SYM_MODULES];
static _Atomic uint32_t module_count;

/* ------------------------------------------------------------------ modules */

struct find_ctx {
    uintptr_t pc;
    uintptr_t base, lo, hi;
    char path[SYM_PATH];
    bool found;
};

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int find_module_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct find_ctx *c = arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    bool hit = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
        hit = hit || (c->pc >= a && c->pc < b);
    }
    if (!hit)
        return 0;
    c->base = info->dlpi_addr;
    c->lo = lo;
    c->hi = hi;
    c->found = true;
    if (info->dlpi_name && info->dlpi_name[0]) {
        copy_str(c->path, sizeof c->path, info->dlpi_name);
    } else {
        ssize_t n = readlink("/proc/self/exe", c->path, sizeof c->path - 1);
        c->path[n > 0 ? n : 0] = '\0';
    }
    return 1;
}

static struct sym_module *module_for(uintptr_t pc)
{
    uint32_t n = atomic_load_explicit(&module_count, memory_order_acquire);
    for (uint32_t i = n; i-- > 0;) { /* newest first: a module loaded again wins */
        struct sym_module *m = &modules[i];
        if (atomic_load_explicit(&m->state, memory_order_acquire) == 2 && pc >= m->lo &&
            pc < m->hi)
            return m;
    }
    struct find_ctx c = {.pc = pc};
    dl_iterate_phdr(find_module_cb, &c);
    if (!c.found)
        return NULL;
    uint32_t i = atomic_fetch_add(&module_count, 1);
    if (i >= SYM_MODULES) {
        atomic_store(&module_count, SYM_MODULES);
        return NULL;
    }
    struct sym_module *m = &modules[i];
    m->base = c.base;
    m->lo = c.lo;
    m->hi = c.hi;
    memcpy(m->path, c.path, sizeof m->path);
    atomic_store_explicit(&m->state, 2, memory_order_release);
    return m;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ------------------------------------------------------------------ symbol tables */

static bool is_function(const ElfW(Sym) *s)
{
    int type = ELF64_ST_TYPE(s->st_info);
    return (type == STT_FUNC || type == STT_GNU_IFUNC) && s->st_shndx != SHN_UNDEF &&
           s->st_value != 0;
}

/* Entries by value, stable (aliases keep their symbol-table order, so the name
 * printed for an address is always the same one): a least-significant-digit
 * radix sort a byte at a time, over only the bytes the largest value uses (3 for
 * a library of a few MiB). A module's table is sorted once, at its first lookup,
 * and the exit leak report of every short process pays for it: the heap sort it
 * replaces cost about 1.0 M instructions on libc's 2,100 functions (callgrind,
 * each git process of the bench kernel), this about 0.1 M. tmp holds n entries. */
static void sort_entries(struct sym_entry *e, struct sym_entry *tmp, size_t n)
{
    uintptr_t max = 0;
    for (size_t i = 0; i < n; i++)
        max |= e[i].value;
    struct sym_entry *from = e, *to = tmp;
    for (unsigned shift = 0; shift < 8 * sizeof max && (max >> shift); shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((from[i].value >> shift) & 0xff) + 1]++;
        for (unsigned d = 1; d <= 256; d++)
            count[d] += count[d - 1];
        for (size_t i = 0; i < n; i++)
            to[count[(from[i].value >> shift) & 0xff]++] = from[i];
        struct sym_entry *t = from;
        from = to;
        to = t;
    }
    if (from != e)
        memcpy(e, from, n * sizeof *e);
}

static bool section_named(const char *shstr, size_t shstr_size, const ElfW(Shdr) *sh,
                          const char *name)
{
    return sh->sh_name < shstr_size &&
           strncmp(shstr + sh->sh_name, name, shstr_size - sh->sh_name) == 0;
}

/* Map the module's file and index its function symbols. */
static void index_build(struct sym_module *m)
{
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(ElfW(Ehdr)))
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    size_t size = (size_t)st.st_size;
    const uint8_t *base = map;
    const ElfW(Ehdr) *eh = map;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shentsize != sizeof(ElfW(Shdr)) || eh->e_shoff == 0 ||
        eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > size || eh->e_shstrndx >= eh->e_shnum)
        return; /* kept mapped: cheap, and a later lookup does not retry */
    const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(base + eh->e_shoff);
    const ElfW(Shdr) *shs = &sh[eh->e_shstrndx];
    if (shs->sh_offset + shs->sh_size > size)
        return;
    const char *shstr = (const char *)base + shs->sh_offset;
    const ElfW(Shdr) *symtab = NULL, *dynsym = NULL;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type == SHT_SYMTAB)
            symtab = &sh[i];
        else if (sh[i].sh_type == SHT_DYNSYM)
            dynsym = &sh[i];
        else if (section_named(shstr, shs->sh_size, &sh[i], ".debug_line"))
            m->has_debug = true;
    }
    const ElfW(Shdr) *tab = symtab ? symtab : dynsym;
    if (!tab || tab->sh_link >= eh->e_shnum || tab->sh_entsize != sizeof(ElfW(Sym)) ||
        tab->sh_offset + tab->sh_size > size)
        return;
    const ElfW(Shdr) *str = &sh[tab->sh_link];
    if (str->sh_offset + str->sh_size > size)
        return;
    const ElfW(Sym) *syms = (const ElfW(Sym) *)(base + tab->sh_offset);
    size_t n = tab->sh_size / sizeof(ElfW(Sym)), count = 0;
    for (size_t i = 0; i < n; i++)
        count += is_function(&syms[i]) && syms[i].st_name < str->sh_size;
    if (!count)
        return;
    size_t page = os_page_size();
    size_t bytes = (count * sizeof(struct sym_entry) + page - 1) & ~(page - 1);
    struct sym_entry *e = os_map(NULL, bytes);
    struct sym_entry *tmp = e ? os_map(NULL, bytes) : NULL;
    if (!tmp) {
        if (e)
            os_unmap(e, bytes);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (is_function(&syms[i]) && syms[i].st_name < str->sh_size)
            e[k++] = (struct sym_entry){syms[i].st_value, syms[i].st_size, syms[i].st_name, 0};
    sort_entries(e, tmp, k);
    os_unmap(tmp, bytes);
    m->strtab = (const char *)base + str->sh_offset;
    m->strtab_size = str->sh_size;
    m->syms = e;
    m->nsyms = k;
}

static void index_ensure(struct sym_module *m)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&m->index, &expected, 1)) {
        index_build(m);
        atomic_store_explicit(&m->index, 2, memory_order_release);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&m->index, memory_order_acquire) != 2; spins++)
        if (spins > 1000) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL); /* another thread is reading the file */
        }
}

/* The function containing the module-relative address off (NULL when none). */
static const char *function_at(struct sym_module *m, uintptr_t off, uintptr_t *func_off)
{
    index_ensure(m);
    size_t lo = 0, hi = m->nsyms;
    while (lo < hi) { /* first entry above off */
        size_t mid = (lo + hi) / 2;
        if (m->syms[mid].value <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i-- > 0 && i + 4 >= lo;) { /* nested or zero-size neighbours */
        const struct sym_entry *e = &m->syms[i];
        if (off < e->value + (e->size ? e->size : 1) || (e->size == 0 && i + 1 == lo)) {
            const char *name = m->strtab + e->name;
            if (!*name)
                continue;
            *func_off = off - e->value;
            return name;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ call sites */

/* The start of the call instruction that returns to ret (x86-64: a direct call
 * rel32, or an indirect call through a register or memory), or ret - 1 when it
 * cannot be told: either way an address inside the call, which is what makes a
 * line table name the line of the call. */
static uintptr_t call_site(uintptr_t ret, const struct sym_module *m)
{
#if defined(__x86_64__)
    if (m && ret - 7 >= m->lo && ret <= m->hi) {
        const uint8_t *p = (const uint8_t *)ret;
        if (p[-5] == 0xe8)
            return ret - 5; /* call rel32 */
        if (p[-2] == 0xff && (p[-1] & 0xf8) == 0xd0)
            return ret - 2; /* call *%reg */
        if (p[-3] == 0x41 && p[-2] == 0xff && (p[-1] & 0xf8) == 0xd0)
            return ret - 3; /* call *%r8-%r15 */
        if (p[-3] == 0xff && (p[-2] & 0xf8) == 0x50 && (p[-2] & 7) != 4)
            return ret - 3; /* call *disp8(%reg) */
        if (p[-6] == 0xff && (p[-5] == 0x15 || ((p[-5] & 0xf8) == 0x90 && (p[-5] & 7) != 4)))
            return ret - 6; /* call *disp32(%rip) or *disp32(%reg) */
        if (p[-4] == 0xff && p[-3] == 0x54)
            return ret - 4; /* call *disp8(%reg,%reg,s) */
        if (p[-7] == 0xff && p[-6] == 0x94)
            return ret - 7; /* call *disp32(%reg,%reg,s) */
    }
#else
    (void)m;
#endif
    return ret - 1;
}

/* ------------------------------------------------------------------ batches */

bool sym_batch_init(sym_batch_t *b, size_t max_frames)
{
    memset(b, 0, sizeof *b);
    size_t page = os_page_size();
    b->cap = max_frames ? max_frames : 1;
    b->slots = 2;
    while (b->slots < 2 * b->cap)
        b->slots <<= 1;
    b->text_cap = 64 * 1024 + b->cap * 96;
    size_t bytes = b->cap * sizeof(sym_frame_t) + b->slots * sizeof(uint32_t) + b->text_cap;
    b->map_bytes = (bytes + page - 1) & ~(page - 1);
    uint8_t *mem = os_map(NULL, b->map_bytes);
    if (!mem)
        return false;
    b->frames = (sym_frame_t *)mem;
    b->index = (uint32_t *)(mem + b->cap * sizeof(sym_frame_t));
    b->text = (char *)(b->index + b->slots);
    return true;
}

void sym_batch_free(sym_batch_t *b)
{
    if (b->frames)
        os_unmap(b->frames, b->map_bytes);
    memset(b, 0, sizeof *b);
}

const sym_frame_t *sym_batch_add(sym_batch_t *b, uintptr_t ret)
{
    if (!b->frames || !ret)
        return NULL;
    size_t mask = b->slots - 1;
    for (size_t i = mix64(ret) & mask;; i = (i + 1) & mask) {
        uint32_t k = b->index[i];
        if (k && b->frames[k - 1].ret == ret)
            return &b->frames[k - 1];
        if (!k) {
            if (b->n == b->cap)
                return NULL;
            sym_frame_t *f = &b->frames[b->n++];
            memset(f, 0, sizeof *f);
            f->ret = ret;
            f->pc = ret;
            b->index[i] = (uint32_t)b->n;
            return f;
        }
    }
}

static const char *text_keep(sym_batch_t *b, const char *s, size_t n)
{
    if (b->text_used + n + 1 > b->text_cap)
        return NULL;
    char *d = b->text + b->text_used;
    memcpy(d, s, n);
    d[n] = '\0';
    b->text_used += n + 1;
    return d;
}

/* Module, call site and function of every frame (no child process). */
static void resolve_names(sym_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        sym_frame_t *f = &b->frames[i];
        struct sym_module *m = module_for(f->ret);
        f->module = m ? m->path : NULL;
        f->pc = call_site(f->ret, m);
        if (!m)
            continue;
        f->module_off = f->pc - m->base;
        f->func = function_at(m, f->module_off, &f->func_off);
        f->debug = m->has_debug;
    }
}

/* ------------------------------------------------------------------ external symbolizer */

/* The symbolizer program: the symbolizer option, else the first of
 * llvm-symbolizer, llvm-symbolizer-N, addr2line on PATH. Found once. */
static char symbolizer_path[SYM_PATH];
static _Atomic int symbolizer_state; /* 0 not looked for, 1 looking, 2 found, 3 none */
static bool symbolizer_llvm;

static bool try_dir(const char *dir, size_t n, const char *name)
{
    if (n + 1 + strlen(name) + 1 > sizeof symbolizer_path)
        return false;
    memcpy(symbolizer_path, dir, n);
    symbolizer_path[n] = '/';
    strcpy(symbolizer_path + n + 1, name);
    return access(symbolizer_path, X_OK) == 0;
}

static bool search_path(const char *name)
{
    const char *path = options_process()->path_env;
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *p = path;;) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n && try_dir(p, n, name))
            return true;
        if (!end)
            return false;
        p = end + 1;
    }
}

static bool find_symbolizer(void)
{
    int st = atomic_load_explicit(&symbolizer_state, memory_order_acquire);
    if (st >= 2)
        return st == 2;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&symbolizer_state, &expected, 1))
        return false; /* another thread is looking: this report goes without */
    bool found = false;
    const char *given = options_process()->symbolizer;
    if (given) {
        copy_str(symbolizer_path, sizeof symbolizer_path, given);
        found = access(symbolizer_path, X_OK) == 0 || (strchr(given, '/') == NULL &&
                                                       search_path(given));
    } else {
        static const char *const names[] = {
            "llvm-symbolizer",    "llvm-symbolizer-19", "llvm-symbolizer-18",
            "llvm-symbolizer-17", "llvm-symbolizer-16", "llvm-symbolizer-15",
            "llvm-symbolizer-14", "llvm-symbolizer-13", "addr2line",
        };
        for (size_t i = 0; i < sizeof names / sizeof *names && !found; i++)
            found = search_path(names[i]);
    }
    symbolizer_llvm = found && strstr(base_name(symbolizer_path), "llvm-symbolizer") != NULL;
    atomic_store_explicit(&symbolizer_state, found ? 2 : 3, memory_order_release);
    return found;
}

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

#ifdef NMM_CHAOS_COVERAGE
#include <sys/syscall.h>
/* The gcov build (harness/coverage.py): gcc's --coverage turns a call of execve into
 * __gcov_execve, which writes the counters first and marks them written. In a vfork
 * child that is this process's memory: nothing it ran afterwards (the report this
 * symbolizes for) would ever reach the .gcda. The system call itself leaves the
 * counters to this process's exit. */
#define spawn_execve(path, argv, envp) syscall(SYS_execve, path, argv, envp)
#else
#define spawn_execve(path, argv, envp) execve(path, argv, envp)
#endif

/* Start argv with in_fd as its stdin, out_fd as its stdout and no stderr. */
static NMM_NOINLINE pid_t spawn(char *const argv[], int in_fd, int out_fd)
{
    char *envp[256];
    options_child_environ(envp, sizeof envp / sizeof *envp);
    pid_t pid = vfork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(in_fd, 0);
        dup2(out_fd, 1);
        if (null >= 0)
            dup2(null, 2);
        spawn_execve(argv[0], argv, envp);
        _exit(127);
    }
    return pid;
}

/* Run argv with in on its stdin; its stdout into out (at most cap - 1 bytes,
 * NUL-terminated). vfork + execve: nothing in this process allocates, and the
 * child gets the environment without LD_PRELOAD and NMM_OPTIONS (it must not
 * run under NMM, or report on itself). Gives up after 30 s. */
static size_t run_child(char *const argv[], const char *in, size_t in_len, char *out, size_t cap)
{
    int to[2], from[2];
    size_t got = 0;
    out[0] = '\0';
    if (pipe2(to, O_CLOEXEC) != 0)
        return 0;
    if (pipe2(from, O_CLOEXEC) != 0) {
        close(to[0]);
        close(to[1]);
        return 0;
    }
    pid_t pid = spawn(argv, to[0], from[1]);
    close(to[0]);
    close(from[1]);
    if (pid < 0) {
        close(to[1]);
        close(from[0]);
        return 0;
    }
    set_nonblock(to[1]);
    set_nonblock(from[0]);
    size_t sent = 0;
    int wfd = to[1];
    if (in_len == 0) {
        close(wfd);
        wfd = -1;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct pollfd pf[2] = {{from[0], POLLIN, 0}, {wfd, POLLOUT, 0}};
        int r = poll(pf, wfd >= 0 ? 2 : 1, 1000);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 30) {
            kill(pid, SIGKILL);
            break;
        }
        if (r < 0 && errno != EINTR)
            break;
        if (wfd >= 0 && (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(wfd, in + sent, in_len - sent);
            if (w > 0)
                sent += (size_t)w;
            if (sent == in_len || (w < 0 && errno != EAGAIN && errno != EINTR)) {
                close(wfd);
                wfd = -1;
            }
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char sink[4096];
            char *dst = got + 1 < cap ? out + got : sink;
            size_t room = got + 1 < cap ? cap - 1 - got : sizeof sink;
            ssize_t rd = read(from[0], dst, room);
            if (rd == 0)
                break;
            if (rd > 0 && dst != sink)
                got += (size_t)rd;
            if (rd < 0 && errno != EAGAIN && errno != EINTR)
                break;
        }
    }
    if (wfd >= 0)
        close(wfd);
    close(from[0]);
    out[got] = '\0';
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return got;
}

/* The next line of text at *p (without its newline); false at the end. */
static bool next_line(const char **p, const char *end, const char **line, size_t *len)
{
    if (*p >= end)
        return false;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    *line = *p;
    *len = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    *p = nl ? nl + 1 : end;
    return true;
}

/* "file:line[:column][ (discriminator N)]" into the frame; "??:0" leaves it. */
static void parse_location(sym_batch_t *b, sym_frame_t *f, const char *s, size_t n)
{
    const char *disc = memmem(s, n, " (discriminator", 15);
    if (disc)
        n = (size_t)(disc - s);
    uint64_t nums[2] = {0, 0};
    int found = 0;
    size_t end = n;
    for (int k = 0; k < 2; k++) { /* up to two trailing :numbers, column last */
        const char *colon = memrchr(s, ':', end);
        if (!colon || !options_parse_u64(colon + 1, end - (size_t)(colon + 1 - s), false, &nums[k]))
            break;
        end = (size_t)(colon - s);
        found++;
    }
    if (found == 0 || end == 0 || (end == 2 && s[0] == '?' && s[1] == '?'))
        return;
    uint64_t line = found == 2 ? nums[1] : nums[0], column = found == 2 ? nums[0] : 0;
    if (line == 0)
        return;
    f->file = text_keep(b, s, end);
    f->line = (uint32_t)line;
    f->column = (uint32_t)column;
}

static bool is_unknown(const char *s, size_t n)
{
    return n == 0 || (n == 2 && s[0] == '?' && s[1] == '?');
}

/* llvm-symbolizer: one request line per frame ("module" 0xoff), answers of
 * function / location pairs (inlined frames innermost first), each answer ended
 * by an empty line. */
static void run_llvm(sym_batch_t *b, char *in, size_t in_cap, char *out, size_t out_cap)
{
    strbuf_t req;
    strbuf_init(&req, in, in_cap);
    size_t asked = 0;
    for (size_t i = 0; i < b->n; i++) {
        const sym_frame_t *f = &b->frames[i];
        if (!f->debug)
            continue;
        strbuf_putc(&req, '"');
        strbuf_puts(&req, f->module);
        strbuf_puts(&req, "\" ");
        strbuf_hex(&req, f->module_off);
        strbuf_putc(&req, '\n');
        asked++;
    }
    if (!asked || req.len >= in_cap)
        return;
    char *argv[] = {symbolizer_path, "--inlining=true", "--demangle", NULL};
    size_t n = run_child(argv, in, req.len, out, out_cap);
    const char *p = out, *end = out + n, *line;
    size_t len;
    for (size_t i = 0; i < b->n; i++) {
        sym_frame_t *f = &b->frames[i];
        if (!f->debug)
            continue;
        const char *outer = NULL;
        size_t outer_len = 0;
        for (int pair = 0;; pair++) {
            const char *fn;
            size_t fn_len;
            if (!next_line(&p, end, &fn, &fn_len) || fn_len == 0)
                break;
            if (!next_line(&p, end, &line, &len))
                break;
            if (pair == 0) {
                parse_location(b, f, line, len);
                if (!is_unknown(fn, fn_len))
                    f->inner = text_keep(b, fn, fn_len);
            }
            outer = fn;
            outer_len = fn_len;
        }
        if (outer && !is_unknown(outer, outer_len))
            f->demangled = text_keep(b, outer, outer_len);
    }
}

/* addr2line: one process per module, two lines (function, location) per address. */
static void run_addr2line(sym_batch_t *b, char *in, size_t in_cap, char *out, size_t out_cap)
{
    for (size_t i = 0; i < b->n; i++) {
        sym_frame_t *first = &b->frames[i];
        if (!first->debug || first->done)
            continue;
        strbuf_t req;
        strbuf_init(&req, in, in_cap);
        for (size_t j = i; j < b->n; j++) {
            sym_frame_t *f = &b->frames[j];
            if (f->debug && !f->done && f->module == first->module) {
                strbuf_hex(&req, f->module_off);
                strbuf_putc(&req, '\n');
            }
        }
        if (req.len >= in_cap)
            return;
        char *argv[] = {symbolizer_path, "-f", "-C", "-e", (char *)first->module, NULL};
        size_t n = run_child(argv, in, req.len, out, out_cap);
        const char *p = out, *end = out + n, *fn, *line;
        size_t fn_len, len;
        for (size_t j = i; j < b->n; j++) {
            sym_frame_t *f = &b->frames[j];
            if (!f->debug || f->done || f->module != first->module)
                continue;
            f->done = true;
            if (!next_line(&p, end, &fn, &fn_len) || !next_line(&p, end, &line, &len))
                continue;
            parse_location(b, f, line, len);
            if (!is_unknown(fn, fn_len))
                f->demangled = f->inner = text_keep(b, fn, fn_len);
        }
    }
}

void sym_batch_resolve(sym_batch_t *b, bool external)
{
    resolve_names(b);
    bool any = false;
    for (size_t i = 0; i < b->n; i++)
        any = any || b->frames[i].debug;
    if (!external || !any || !options_process()->symbolize || !find_symbolizer())
        return;
    size_t page = os_page_size();
    size_t in_cap = (b->n * (SYM_PATH + 24) + page) & ~(page - 1);
    size_t out_cap = (b->n * 4096 + page) & ~(page - 1);
    char *in = os_map(NULL, in_cap + out_cap);
    if (!in)
        return;
    if (symbolizer_llvm)
        run_llvm(b, in, in_cap, in + in_cap, out_cap);
    else
        run_addr2line(b, in, in_cap, in + in_cap, out_cap);
    os_unmap(in, in_cap + out_cap);
}

/* ------------------------------------------------------------------ formatting */

/* "func+0x1c" (the symbolizer's demangled name when it has one), or nothing. */
static bool put_function(strbuf_t *sb, const sym_frame_t *f)
{
    const char *name = f->demangled ? f->demangled : f->func;
    if (!name)
        return false;
    strbuf_puts(sb, name);
    if (f->func) {
        strbuf_putc(sb, '+');
        strbuf_hex(sb, f->func_off);
    }
    return true;
}

void sym_frame_text(strbuf_t *sb, unsigned k, const sym_frame_t *f)
{
    strbuf_puts(sb, "    #");
    strbuf_u64(sb, k);
    strbuf_putc(sb, ' ');
    strbuf_hex(sb, f->pc);
    strbuf_puts(sb, " in ");
    if (f->inner && f->demangled && strcmp(f->inner, f->demangled) != 0) {
        strbuf_puts(sb, f->inner);
        strbuf_puts(sb, " (inlined into ");
        put_function(sb, f);
        strbuf_putc(sb, ')');
    } else if (!put_function(sb, f)) {
        strbuf_puts(sb, "??");
    }
    if (f->file) {
        strbuf_putc(sb, ' ');
        strbuf_puts(sb, f->file);
        strbuf_putc(sb, ':');
        strbuf_u64(sb, f->line);
        if (f->column) {
            strbuf_putc(sb, ':');
            strbuf_u64(sb, f->column);
        }
    }
    if (f->module) {
        strbuf_puts(sb, " (");
        strbuf_puts(sb, f->module);
        strbuf_putc(sb, '+');
        strbuf_hex(sb, f->module_off);
        strbuf_putc(sb, ')');
    }
    strbuf_putc(sb, '\n');
}

static void json_hex(strbuf_t *sb, const char *key, uint64_t v)
{
    strbuf_puts(sb, key);
    strbuf_puts(sb, ":\"");
    strbuf_hex(sb, v);
    strbuf_putc(sb, '"');
}

void sym_frame_json(strbuf_t *sb, const sym_frame_t *f)
{
    strbuf_putc(sb, '{');
    json_hex(sb, "\"pc\"", f->pc);
    strbuf_puts(sb, ",\"module\":");
    strbuf_json_str(sb, f->module ? f->module : "");
    strbuf_putc(sb, ',');
    json_hex(sb, "\"offset\"", f->module_off);
    strbuf_puts(sb, ",\"function\":");
    strbuf_json_str(sb, f->demangled ? f->demangled : f->func ? f->func : "");
    strbuf_puts(sb, ",\"function_offset\":");
    strbuf_u64(sb, f->func ? f->func_off : 0);
    if (f->inner && f->demangled && strcmp(f->inner, f->demangled) != 0) {
        strbuf_puts(sb, ",\"inlined\":");
        strbuf_json_str(sb, f->inner);
    }
    strbuf_puts(sb, ",\"file\":");
    strbuf_json_str(sb, f->file ? f->file : "");
    strbuf_puts(sb, ",\"line\":");
    strbuf_u64(sb, f->line);
    strbuf_puts(sb, ",\"column\":");
    strbuf_u64(sb, f->column);
    strbuf_putc(sb, '}');
}

void sym_describe(strbuf_t *sb, uintptr_t ret)
{
    struct sym_module *m = module_for(ret);
    if (!m) {
        strbuf_puts(sb, "pc ");
        strbuf_hex(sb, ret);
        return;
    }
    sym_frame_t f = {.ret = ret, .pc = call_site(ret, m)};
    f.module_off = f.pc - m->base;
    f.func = function_at(m, f.module_off, &f.func_off);
    if (!put_function(sb, &f))
        strbuf_hex(sb, f.module_off);
    strbuf_puts(sb, " (");
    const char *name = base_name(m->path);
    strbuf_puts(sb, *name ? name : "main program");
    strbuf_putc(sb, ')');
}
