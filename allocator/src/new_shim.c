/* new_shim.c — C++'s replaceable operator new / new[] / delete / delete[] (plain,
 * nothrow, sized, aligned, aligned and sized) on NMM's default heap; linked only
 * into libnmm_preload.so. Written in C under the Itanium C++ ABI's mangled names,
 * so a C program does not pull in libstdc++: what only the C++ runtime can do
 * (std::get_new_handler, throwing std::bad_alloc) is looked up when an
 * allocation fails, in whatever C++ runtime the process has. Each block records
 * its family, so a delete of a malloc'd block, a free of a new'd one or
 * new[]/delete mixed up are reported (alloc_dealloc_mismatch), and a sized or
 * aligned delete is checked against the block (delete_size_mismatch). Any thread.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

_Static_assert(sizeof(size_t) == 8, "the mangled names below spell size_t as unsigned long (m)");

typedef void (*new_handler_t)(void);

/* The C++ runtime's std::get_new_handler and std::__throw_bad_alloc, found once
 * an allocation fails (never on the way there; dlsym may allocate). */
static void *cxx_symbol(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

NMM_COLD static void cxx_no_runtime(void)
{
    static const char msg[] = "nmm: operator new: out of memory, and no C++ runtime to throw "
                              "std::bad_alloc\n";
    out_write_all(2, msg, sizeof msg - 1);
    abort();
}

/* The throwing forms: while the heap says no, call the new_handler if one is
 * set (it may free memory, throw, or end the program), else throw bad_alloc. */
NMM_COLD static void *new_failed(nmm_family_t family, size_t size, size_t align, void *caller)
{
    new_handler_t (*get_handler)(void) = (new_handler_t (*)(void))cxx_symbol("_ZSt15get_new_handlerv");
    for (;;) {
        new_handler_t handler = get_handler ? get_handler() : NULL;
        if (!handler)
            break;
        handler();
        void *p = nmm_alloc_as(shim_get(), family, size, align, shim_site(caller));
        shim_after();
        if (p)
            return p;
    }
    void (*throw_bad_alloc)(void) = (void (*)(void))cxx_symbol("_ZSt17__throw_bad_allocv");
    if (!throw_bad_alloc)
        cxx_no_runtime();
    throw_bad_alloc();
    __builtin_unreachable();
}

static inline void *new_throwing(nmm_family_t family, size_t size, size_t align, void *caller)
{
    void *p = nmm_alloc_as(shim_get(), family, size, align, shim_site(caller));
    shim_after();
    return likely(p != NULL) ? p : new_failed(family, size, align, caller);
}

/* The nothrow forms: NULL when the heap says no (the new_handler is not tried). */
static inline void *new_nothrow(nmm_family_t family, size_t size, size_t align, void *caller)
{
    void *p = nmm_alloc_as(shim_get(), family, size, align, shim_site(caller));
    shim_after();
    return p;
}

static inline void delete_as(void *p, nmm_family_t family, size_t size, size_t align, void *caller)
{
    if (!p)
        return;
    nmm_heap_t *h = shim_get();
    events_caller_pc = (uintptr_t)caller;
    (void)nmm_free_as(h, p, family, size, align, 0);
    events_caller_pc = 0;
    shim_after();
}

#define RA __builtin_return_address(0)
#define NEW NMM_FAMILY_NEW
#define ARR NMM_FAMILY_NEW_ARRAY

/* operator new(size_t) and friends: the asm label is the symbol's (mangled) name. */
#define SHIM_NEW(cname, sym, params, body)                                  \
    SHIM_API void *cname params __asm__(sym);                               \
    SHIM_API void *cname params body
#define SHIM_DELETE(cname, sym, params, body)                               \
    SHIM_API void cname params __asm__(sym);                                \
    SHIM_API void cname params body

/* new, new[] */
SHIM_NEW(shim_new, "_Znwm", (size_t n), { return new_throwing(NEW, n, 0, RA); })
SHIM_NEW(shim_new_array, "_Znam", (size_t n), { return new_throwing(ARR, n, 0, RA); })
SHIM_NEW(shim_new_nothrow, "_ZnwmRKSt9nothrow_t", (size_t n, const void *nt),
         { (void)nt; return new_nothrow(NEW, n, 0, RA); })
SHIM_NEW(shim_new_array_nothrow, "_ZnamRKSt9nothrow_t", (size_t n, const void *nt),
         { (void)nt; return new_nothrow(ARR, n, 0, RA); })
SHIM_NEW(shim_new_aligned, "_ZnwmSt11align_val_t", (size_t n, size_t a),
         { return new_throwing(NEW, n, a, RA); })
SHIM_NEW(shim_new_array_aligned, "_ZnamSt11align_val_t", (size_t n, size_t a),
         { return new_throwing(ARR, n, a, RA); })
SHIM_NEW(shim_new_aligned_nothrow, "_ZnwmSt11align_val_tRKSt9nothrow_t",
         (size_t n, size_t a, const void *nt), { (void)nt; return new_nothrow(NEW, n, a, RA); })
SHIM_NEW(shim_new_array_aligned_nothrow, "_ZnamSt11align_val_tRKSt9nothrow_t",
         (size_t n, size_t a, const void *nt), { (void)nt; return new_nothrow(ARR, n, a, RA); })

/* delete, delete[]: plain, nothrow, sized, aligned, sized and aligned */
SHIM_DELETE(shim_delete, "_ZdlPv", (void *p), { delete_as(p, NEW, NMM_UNSIZED, 0, RA); })
SHIM_DELETE(shim_delete_array, "_ZdaPv", (void *p), { delete_as(p, ARR, NMM_UNSIZED, 0, RA); })
SHIM_DELETE(shim_delete_nothrow, "_ZdlPvRKSt9nothrow_t", (void *p, const void *nt),
            { (void)nt; delete_as(p, NEW, NMM_UNSIZED, 0, RA); })
SHIM_DELETE(shim_delete_array_nothrow, "_ZdaPvRKSt9nothrow_t", (void *p, const void *nt),
            { (void)nt; delete_as(p, ARR, NMM_UNSIZED, 0, RA); })
SHIM_DELETE(shim_delete_sized, "_ZdlPvm", (void *p, size_t n), { delete_as(p, NEW, n, 0, RA); })
SHIM_DELETE(shim_delete_array_sized, "_ZdaPvm", (void *p, size_t n),
            { delete_as(p, ARR, n, 0, RA); })
SHIM_DELETE(shim_delete_aligned, "_ZdlPvSt11align_val_t", (void *p, size_t a),
            { delete_as(p, NEW, NMM_UNSIZED, a, RA); })
SHIM_DELETE(shim_delete_array_aligned, "_ZdaPvSt11align_val_t", (void *p, size_t a),
            { delete_as(p, ARR, NMM_UNSIZED, a, RA); })
SHIM_DELETE(shim_delete_aligned_nothrow, "_ZdlPvSt11align_val_tRKSt9nothrow_t",
            (void *p, size_t a, const void *nt), { (void)nt; delete_as(p, NEW, NMM_UNSIZED, a, RA); })
SHIM_DELETE(shim_delete_array_aligned_nothrow, "_ZdaPvSt11align_val_tRKSt9nothrow_t",
            (void *p, size_t a, const void *nt), { (void)nt; delete_as(p, ARR, NMM_UNSIZED, a, RA); })
SHIM_DELETE(shim_delete_sized_aligned, "_ZdlPvmSt11align_val_t", (void *p, size_t n, size_t a),
            { delete_as(p, NEW, n, a, RA); })
SHIM_DELETE(shim_delete_array_sized_aligned, "_ZdaPvmSt11align_val_t",
            (void *p, size_t n, size_t a), { delete_as(p, ARR, n, a, RA); })
