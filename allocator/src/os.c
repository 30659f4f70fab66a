/* os.c — the only file that talks to the kernel for memory: mmap, munmap, madvise,
 * mremap, mprotect, getrandom, gettid. Must not allocate or take locks (os_map consults the
 * heap's "os.map" fail point, which is lock-free when disarmed). Any thread.
 */
#define _GNU_SOURCE
#include "core.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void os_forget_thread_id(void);

static size_t os_page_cached;

size_t os_page_size(void)
{
    size_t p = __atomic_load_n(&os_page_cached, __ATOMIC_RELAXED);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        __atomic_store_n(&os_page_cached, p, __ATOMIC_RELAXED);
    }
    return p;
}

void *os_map(nmm_heap_t *heap, size_t bytes)
{
    if (heap && unlikely(heap_failpoints_armed(heap)) &&
        failpoint_should_fail(heap, FP_OS_MAP, bytes)) {
        __atomic_fetch_add(&heap->injected_failures, 1, __ATOMIC_RELAXED);
        errno = ENOMEM;
        return NULL;
    }
    /* No MAP_NORESERVE: the kernel's overcommit check refuses absurd sizes. */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *os_map_sparse(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void os_unmap(void *addr, size_t bytes)
{
    if (addr && bytes)
        munmap(addr, bytes);
}

void *os_remap(void *addr, size_t old_bytes, size_t new_bytes)
{
    void *p = mremap(addr, old_bytes, new_bytes, MREMAP_MAYMOVE);
    return p == MAP_FAILED ? NULL : p;
}

void *os_reserve(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

bool os_commit(void *addr, size_t bytes)
{
    return mprotect(addr, bytes, PROT_READ | PROT_WRITE) == 0;
}

void os_decommit(void *addr, size_t bytes)
{
    madvise(addr, bytes, MADV_DONTNEED);
}

bool os_protect_none(void *addr, size_t bytes)
{
    return mprotect(addr, bytes, PROT_NONE) == 0;
}

/* Per-heap secrets: getrandom, falling back to clock and address bits when the
 * syscall is unavailable (a weaker key, never a failure). */
void os_random(void *buf, size_t n)
{
    uint8_t *b = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(b + got, n - got, GRND_NONBLOCK);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uintptr_t)buf;
        for (; got < n; got++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b[got] = (uint8_t)(x >> 24);
        }
    }
}

static NMM_TLS uint32_t os_tid_cached;

uint32_t os_thread_id(void)
{
    uint32_t t = os_tid_cached;
    if (!t) {
        t = (uint32_t)syscall(SYS_gettid);
        os_tid_cached = t;
    }
    return t;
}

/* After fork the child has a new tid; the cache must not keep the parent's. */
void os_forget_thread_id(void)
{
    os_tid_cached = 0;
}
