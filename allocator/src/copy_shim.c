/* copy_shim.c — checked bulk copies in libnmm_preload.so: memcpy, memmove, memset,
 * strcpy, strncpy, strcat, stpcpy and their _FORTIFY_SOURCE forms (__memcpy_chk,
 * ...). At standard and above a range that starts in (or just before) a live
 * block of the default heap and leaves its requested bytes is reported before
 * anything is copied (access.c: overflow or underflow, with the exact reach; the
 * report names the call); with policy=record the call then goes on clamped to
 * the block's bytes (overflow) or skipped (underflow). A pointer outside the
 * heap's slab region costs two compares and the C library's own routine; a range
 * in it, the slab lookup and the block's header word, inline (core.h's
 * access_fits_plain: memcpy & co. are leaves that tail-call the C library's
 * routine), and only a range that does not fit there goes to the full check.
 *
 * The real routines: the C library's (dlsym(RTLD_NEXT) in this file's
 * constructor, which resolves their IFUNCs), and until then private byte-exact
 * ones, so the loader's and libc's early calls never depend on the heap. NMM's
 * own calls of memcpy & co. never come here: build.py links the other objects
 * of this library with --wrap for each name, so they call the copy_wrap_*
 * functions below, which go straight to the real routines. Any thread.
 */
#define _GNU_SOURCE
#include "shim.h"
/* The slab descriptor and the header word, for the inline fit (the one periphery
 * file that reads them: the copy check's cost is that lookup). core.h brings
 * <string.h>: its memcpy & co. are other C names for the symbols this file
 * defines under asm labels, and nothing here calls them. */
#include "core.h"

#include <dlfcn.h>
/* glibc's: "*** buffer overflow detected ***: terminated", then abort. */
extern void __chk_fail(void) __attribute__((noreturn));

typedef void *(*copy_fn)(void *, const void *, size_t);
typedef void *(*set_fn)(void *, int, size_t);
typedef char *(*str_fn)(char *, const char *);
typedef char *(*strn_fn)(char *, const char *, size_t);

/* The default heap's slab region while its blocks are checked; empty before the
 * heap exists, at level off and with copy_check=0. Written once, by the constructor (before the
 * program's threads), read plainly: the filter is two compares. copy_map: its chunk map. */
static uintptr_t copy_base;
static size_t copy_span;
static slab_t *const *copy_map;

/* ------------------------------------------------------------------ private routines */

/* Before the C library's are known. No loop here may be turned into a call of
 * memcpy or memset by the compiler (it would come back here). */
#define NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns"), noinline))

NO_LIBCALL static void *own_copy(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
#else
    unsigned char *d = dst;
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++)
        d[i] = s[i];
#endif
    return dst;
}

NO_LIBCALL static void *own_move(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + n)
        return own_copy(dst, src, n);  /* forward is safe */
    for (size_t i = n; i-- > 0;)
        d[i] = s[i];
    return dst;
}

NO_LIBCALL static void *own_set(void *dst, int c, size_t n)
{
#if defined(__x86_64__)
    void *d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
#else
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++)
        d[i] = (unsigned char)c;
#endif
    return dst;
}

/* The C library's routines once resolved; the private ones until then (the
 * string ones: NULL, and the callers build them from strlen and a copy). */
static copy_fn real_memcpy = own_copy, real_memmove = own_move;
static set_fn real_memset = own_set;
static str_fn real_strcpy, real_strcat, real_stpcpy;
static strn_fn real_strncpy;

static inline void *do_copy(void *d, const void *s, size_t n)
{
    return __atomic_load_n(&real_memcpy, __ATOMIC_RELAXED)(d, s, n);
}

static inline void *do_move(void *d, const void *s, size_t n)
{
    return __atomic_load_n(&real_memmove, __ATOMIC_RELAXED)(d, s, n);
}

static inline void *do_set(void *d, int c, size_t n)
{
    return __atomic_load_n(&real_memset, __ATOMIC_RELAXED)(d, c, n);
}

/* NMM's own calls (build.py: -Wl,--wrap=memcpy ... for every other object). */
#define WRAP_API __attribute__((visibility("hidden")))
WRAP_API void *copy_wrap_memcpy(void *d, const void *s, size_t n) __asm__("__wrap_memcpy");
WRAP_API void *copy_wrap_memcpy(void *d, const void *s, size_t n) { return do_copy(d, s, n); }
WRAP_API void *copy_wrap_memmove(void *d, const void *s, size_t n) __asm__("__wrap_memmove");
WRAP_API void *copy_wrap_memmove(void *d, const void *s, size_t n) { return do_move(d, s, n); }
WRAP_API void *copy_wrap_memset(void *d, int c, size_t n) __asm__("__wrap_memset");
WRAP_API void *copy_wrap_memset(void *d, int c, size_t n) { return do_set(d, c, n); }

/* ------------------------------------------------------------------ the check */

static inline bool in_region(const void *p)
{
    return (uintptr_t)p - copy_base < copy_span;
}

/* [p, p + n) needs no access_check: outside the region, in a chunk no slab uses,
 * or inside its block's requested bytes (access_fits_plain). Inline, no call. */
static inline __attribute__((always_inline)) bool range_fits(const void *p, size_t n)
{
    uintptr_t off = (uintptr_t)p - copy_base;
    if (off >= copy_span)
        return true;
    const slab_t *s = __atomic_load_n(&copy_map[off >> CORE_CHUNK_SHIFT], __ATOMIC_ACQUIRE);
    return !s || access_fits_plain(s, (uintptr_t)p, n);
}

/* A call with a range in the region that needs nothing more: nothing to copy (the
 * full check passes n = 0 too: 0.6 M of sqlite3's 2.7 M checked calls, nearly all
 * memmove's and memset's), or each range fits. */
static inline __attribute__((always_inline)) bool copy_fits(const void *d, const void *s, size_t n)
{
    return n == 0 || (range_fits(d, n) && range_fits(s, n));
}

/* One range of a call, written or read: the bytes from p the call may go on
 * with (n: all is well). */
static size_t range_checked(const char *call, const void *p, size_t n, bool write, void *caller)
{
    nmm_heap_t *h = __atomic_load_n(&shim_heap, __ATOMIC_ACQUIRE);
    if (!h || range_fits(p, n))
        return n;
    access_note_t note = {.call = call, .len = n, .caller = (uintptr_t)caller, .write = write,
                          .record = heap_config(h)->policy == NMM_POLICY_RECORD, .echo = 1};
    return access_check(h, p, n, 0, &note);
}

/* dst (written) and src (read, NULL: none) of an n-byte call: the bytes it may
 * copy (each range reported on its own). */
static size_t copy_checked(const char *call, const void *dst, const void *src, size_t n,
                           void *caller)
{
    size_t keep = range_checked(call, dst, n, true, caller);
    if (src) {
        size_t k = range_checked(call, src, n, false, caller);
        keep = k < keep ? k : keep;
    }
    return keep;
}

#define RA __builtin_return_address(0)
/* A call to look at: a range in the region. */
#define IN_REGION(d, s) unlikely(in_region(d) || in_region(s))

static inline void fortify(size_t n, size_t destlen)
{
    if (unlikely(n > destlen))
        __chk_fail();
}

/* ------------------------------------------------------------------ memory */

/* Each entry point is a leaf: the filter, the inline fit for a call with a range in
 * the region (copy_fits), and a tail call of the C library's routine. A range that
 * does not fit goes out of line to the whole check (copy_checked), which reports. */
NMM_NOINLINE static void *copy_slow(const char *call, void *d, const void *s, size_t n,
                                    size_t destlen, bool move, void *ra)
{
    n = copy_checked(call, d, s, n, ra);
    fortify(n, destlen);
    return move ? do_move(d, s, n) : do_copy(d, s, n);
}

NMM_NOINLINE static void *set_slow(void *d, int c, size_t n, size_t destlen, void *ra)
{
    n = copy_checked("memset", d, NULL, n, ra);
    fortify(n, destlen);
    return do_set(d, c, n);
}

#define SHIM_FN(ret, cname, sym, params) \
    SHIM_API ret cname params __asm__(sym); \
    SHIM_API ret cname params

/* A memcpy, memmove or memset whose range does not fit: the whole check, out of
 * line, with the entry point's arguments where they are (no moves before the jump). */
NMM_COLD static void *memcpy_unfit(void *d, const void *s, size_t n, void *ra)
{
    return copy_slow("memcpy", d, s, n, SIZE_MAX, false, ra);
}

NMM_COLD static void *memmove_unfit(void *d, const void *s, size_t n, void *ra)
{
    return copy_slow("memmove", d, s, n, SIZE_MAX, true, ra);
}

NMM_COLD static void *memset_unfit(void *d, int c, size_t n, void *ra)
{
    return set_slow(d, c, n, SIZE_MAX, ra);
}

/* memcpy skips copy_fits' n == 0 test: 1 in 2000 of its checked calls in sqlite3, and
 * access_fits_plain gives such a call inside a block the same answer (one in a head
 * goes to the whole check, which lets it through). */
SHIM_FN(void *, copy_memcpy, "memcpy", (void *d, const void *s, size_t n))
{
    if (IN_REGION(d, s) && !(range_fits(d, n) && range_fits(s, n)))
        return memcpy_unfit(d, s, n, RA);
    return do_copy(d, s, n);
}

SHIM_FN(void *, copy_memmove, "memmove", (void *d, const void *s, size_t n))
{
    if (IN_REGION(d, s) && !copy_fits(d, s, n))
        return memmove_unfit(d, s, n, RA);
    return do_move(d, s, n);
}

SHIM_FN(void *, copy_memset, "memset", (void *d, int c, size_t n))
{
    if (unlikely(in_region(d)) && n && !range_fits(d, n))
        return memset_unfit(d, c, n, RA);
    return do_set(d, c, n);
}

/* The fortify forms: NMM's check first (its report is the more precise, and a
 * clamped call then fits), then the compiler's object size as glibc checks it. */
SHIM_FN(void *, copy_memcpy_chk, "__memcpy_chk", (void *d, const void *s, size_t n, size_t dl))
{
    if (IN_REGION(d, s) && !copy_fits(d, s, n))
        return copy_slow("memcpy", d, s, n, dl, false, RA);
    fortify(n, dl);
    return do_copy(d, s, n);
}

SHIM_FN(void *, copy_memmove_chk, "__memmove_chk", (void *d, const void *s, size_t n, size_t dl))
{
    if (IN_REGION(d, s) && !copy_fits(d, s, n))
        return copy_slow("memmove", d, s, n, dl, true, RA);
    fortify(n, dl);
    return do_move(d, s, n);
}

SHIM_FN(void *, copy_memset_chk, "__memset_chk", (void *d, int c, size_t n, size_t dl))
{
    if (unlikely(in_region(d)) && n && !range_fits(d, n))
        return set_slow(d, c, n, dl, RA);
    fortify(n, dl);
    return do_set(d, c, n);
}

/* ------------------------------------------------------------------ strings */

/* A string copy of len bytes (terminator included) to d, checked; a clamped
 * copy still ends in a terminator inside the block. Returns the bytes written
 * (0: skipped). */
static size_t string_copy(const char *call, char *d, const char *s, size_t len, void *ra,
                          size_t destlen)
{
    size_t n = copy_checked(call, d, s, len, ra);
    fortify(n, destlen);
    if (n == len) {
        do_move(d, s, len);
        return len;
    }
    if (n) {
        do_move(d, s, n - 1);
        d[n - 1] = '\0';
    }
    return n;
}

static char *str_copy(const char *call, char *d, const char *s, size_t dl, void *ra, bool stp)
{
    if (IN_REGION(d, s)) {
        size_t len = strlen(s) + 1;
        size_t n = string_copy(call, d, s, len, ra, dl);
        return stp ? d + (n ? n - 1 : 0) : d;
    }
    str_fn f = __atomic_load_n(stp ? &real_stpcpy : &real_strcpy, __ATOMIC_RELAXED);
    if (dl != SIZE_MAX || !f) {  /* fortified: the length is needed anyway */
        size_t len = strlen(s) + 1;
        fortify(len, dl);
        do_copy(d, s, len);
        return stp ? d + len - 1 : d;
    }
    return f(d, s);
}

SHIM_FN(char *, copy_strcpy, "strcpy", (char *d, const char *s))
{
    return str_copy("strcpy", d, s, SIZE_MAX, RA, false);
}

SHIM_FN(char *, copy_stpcpy, "stpcpy", (char *d, const char *s))
{
    return str_copy("stpcpy", d, s, SIZE_MAX, RA, true);
}

SHIM_FN(char *, copy_strcpy_chk, "__strcpy_chk", (char *d, const char *s, size_t dl))
{
    return str_copy("strcpy", d, s, dl, RA, false);
}

SHIM_FN(char *, copy_stpcpy_chk, "__stpcpy_chk", (char *d, const char *s, size_t dl))
{
    return str_copy("stpcpy", d, s, dl, RA, true);
}

static char *str_cat(char *d, const char *s, size_t dl, void *ra)
{
    size_t at = strlen(d);
    if (IN_REGION(d, s)) {
        if (dl != SIZE_MAX)
            dl = dl > at ? dl - at : 0;
        string_copy("strcat", d + at, s, strlen(s) + 1, ra, dl);
        return d;
    }
    str_fn f = __atomic_load_n(&real_strcat, __ATOMIC_RELAXED);
    if (dl != SIZE_MAX || !f) {
        size_t len = strlen(s) + 1;
        fortify(at + len, dl);
        do_copy(d + at, s, len);
        return d;
    }
    return f(d, s);
}

SHIM_FN(char *, copy_strcat, "strcat", (char *d, const char *s))
{
    return str_cat(d, s, SIZE_MAX, RA);
}

SHIM_FN(char *, copy_strcat_chk, "__strcat_chk", (char *d, const char *s, size_t dl))
{
    return str_cat(d, s, dl, RA);
}

/* strncpy writes exactly n bytes (the string, then NULs) and reads at most n. */
static char *str_ncpy(char *d, const char *s, size_t n, size_t dl, void *ra)
{
    fortify(n, dl);
    strn_fn f = __atomic_load_n(&real_strncpy, __ATOMIC_RELAXED);
    if (!IN_REGION(d, s) && f)
        return f(d, s, n);
    size_t len = strnlen(s, n);
    size_t r = len < n ? len + 1 : n;  /* bytes read */
    size_t w = range_checked("strncpy", d, n, true, ra);
    if (range_checked("strncpy", s, r, false, ra) != r)
        w = 0;  /* reading past the source block: skipped */
    size_t c = len < w ? len : w;
    do_move(d, s, c);
    do_set(d + c, 0, w - c);
    return d;
}

SHIM_FN(char *, copy_strncpy, "strncpy", (char *d, const char *s, size_t n))
{
    return str_ncpy(d, s, n, SIZE_MAX, RA);
}

SHIM_FN(char *, copy_strncpy_chk, "__strncpy_chk", (char *d, const char *s, size_t n, size_t dl))
{
    return str_ncpy(d, s, n, dl, RA);
}

/* ------------------------------------------------------------------ set-up */

/* The functions whose frames are the library's own (unwind.c's entry points). */
const void *const copy_shim_functions[] = {
    (const void *)copy_memcpy,     (const void *)copy_memmove,     (const void *)copy_memset,
    (const void *)copy_memcpy_chk, (const void *)copy_memmove_chk, (const void *)copy_memset_chk,
    (const void *)copy_strcpy,     (const void *)copy_stpcpy,      (const void *)copy_strcpy_chk,
    (const void *)copy_stpcpy_chk, (const void *)copy_strcat,      (const void *)copy_strcat_chk,
    (const void *)copy_strncpy,    (const void *)copy_strncpy_chk, NULL,
};

static void *next_symbol(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* Early (priority 101): the C library is initialised before any preloaded
 * library, and the sooner its routines replace the private ones the better. */
__attribute__((constructor(101))) static void copy_init(void)
{
    copy_fn copy = (copy_fn)next_symbol("memcpy"), move = (copy_fn)next_symbol("memmove");
    set_fn set = (set_fn)next_symbol("memset");
    if (copy && move && set) {  /* else the private routines stay */
        __atomic_store_n(&real_memcpy, copy, __ATOMIC_RELAXED);
        __atomic_store_n(&real_memmove, move, __ATOMIC_RELAXED);
        __atomic_store_n(&real_memset, set, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&real_strcpy, (str_fn)next_symbol("strcpy"), __ATOMIC_RELAXED);
    __atomic_store_n(&real_stpcpy, (str_fn)next_symbol("stpcpy"), __ATOMIC_RELAXED);
    __atomic_store_n(&real_strcat, (str_fn)next_symbol("strcat"), __ATOMIC_RELAXED);
    __atomic_store_n(&real_strncpy, (strn_fn)next_symbol("strncpy"), __ATOMIC_RELAXED);
    uintptr_t base;
    size_t span;
    /* copy_check=0: the region stays empty, every call is two compares and libc's */
    nmm_heap_t *heap = shim_get();
    if (options_process()->copy_check && access_region(heap, &base, &span)) {
        copy_base = base;
        copy_span = span;
        copy_map = heap->chunk_map;
    }
}
