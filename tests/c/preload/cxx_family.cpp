// cxx_family.cpp — C++'s allocation surface under libnmm_preload.so (and, to
// compare, under glibc): every replaceable operator new/delete form, the
// alignment x size grid through aligned new, an alignas(8192) type, STL
// containers, bad_alloc and nothrow on exhaustion; then, with an argument, one
// deliberate misuse that never crashes the program:
//   cxx_family                  the checks; prints "all checks passed"
//   cxx_family MISUSE           malloc_delete | new_free | new_array_delete |
//                               new_delete_array | sized_delete | aligned_delete |
//                               usable_size_interior | usable_size_freed; then
//                               prints "survived"
// Each misuse happens in its own named function, so reports can name the sites.
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::printf("FAILED line %d: %s\n", __LINE__, #cond);                    \
            return 1;                                                                \
        }                                                                            \
    } while (0)

struct alignas(8192) Page2 {
    unsigned char bytes[100];
};

struct alignas(64) Line {
    int v;
    Line() : v(7) {}
};

static bool aligned(const void *p, std::size_t a)
{
    return reinterpret_cast<std::uintptr_t>(p) % a == 0;
}

static int checks()
{
    // plain and array
    int *one = new int(5);
    CHECK(one && *one == 5);
    delete one;
    int *many = new int[1000]();
    CHECK(many[999] == 0);
    delete[] many;
    // nothrow
    int *nt = new (std::nothrow) int(3);
    CHECK(nt && *nt == 3);
    delete nt;
    char *nta = new (std::nothrow) char[100];
    CHECK(nta);
    delete[] nta;
    // sized delete, called explicitly (the compiler does it for complete types)
    void *s = ::operator new(48);
    ::operator delete(s, 48);
    void *sa = ::operator new[](480);
    ::operator delete[](sa, 480);
    // over-aligned types: aligned new, aligned (and sized) delete
    Page2 *pg = new Page2;
    CHECK(aligned(pg, 8192));
    std::memset(pg->bytes, 1, sizeof pg->bytes);
    delete pg;
    Page2 *pgs = new Page2[3];
    CHECK(aligned(pgs, 8192));
    delete[] pgs;
    Line *ln = new Line[5];
    CHECK(aligned(ln, 64) && ln[4].v == 7);
    delete[] ln;
    // the alignment x size grid through the aligned forms
    unsigned blocks = 0;
    for (int shift = 0; shift <= 22; shift++) {
        std::size_t a = std::size_t(1) << shift;
        for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(17), std::size_t(4096),
                              std::size_t(100000), std::size_t(1) << 20}) {
            void *p = ::operator new(n, std::align_val_t(a));
            CHECK(aligned(p, a));
            std::memset(p, 0x5a, n);
            ::operator delete(p, n, std::align_val_t(a));
            void *q = ::operator new[](n, std::align_val_t(a), std::nothrow);
            CHECK(q && aligned(q, a));
            std::memset(q, 0x5b, n);
            ::operator delete[](q, std::align_val_t(a));
            void *r = ::operator new(n, std::align_val_t(a), std::nothrow);
            CHECK(r && aligned(r, a));
            ::operator delete(r, std::align_val_t(a), std::nothrow);
            blocks += 3;
        }
    }
    CHECK(blocks == 23 * 6 * 3);
    // the STL
    std::vector<std::string> words;
    for (int i = 0; i < 20000; i++)
        words.push_back("word-" + std::to_string(i * 7919 % 10007));
    std::map<std::string, int> counts;
    for (const auto &w : words)
        counts[w]++;
    std::unordered_map<int, std::vector<int>> buckets;
    for (int i = 0; i < 20000; i++)
        buckets[i % 97].push_back(i);
    auto shared = std::make_shared<std::vector<double>>(1000, 1.5);
    std::unique_ptr<Line[]> lines(new Line[10]);
    CHECK(counts.size() == 10007 && buckets[3].size() == 207 && (*shared)[999] == 1.5);
    CHECK(lines[9].v == 7);
    // exhaustion: bad_alloc from the throwing forms, nullptr from nothrow
    volatile std::size_t huge = std::size_t(1) << 62;
    bool threw = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
        void *p = ::operator new[](huge, std::align_val_t(4096));
        ::operator delete[](p, std::align_val_t(4096));
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
    CHECK(::operator new(huge, std::nothrow) == nullptr);
    CHECK(::operator new[](huge, std::align_val_t(64), std::nothrow) == nullptr);
    // a new_handler that gives up after one call
    static int handler_calls;
    std::set_new_handler([] {
        handler_calls++;
        std::set_new_handler(nullptr);
    });
    threw = false;
    try {
        void *p = ::operator new(huge);
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw && handler_calls == 1);
    std::printf("all checks passed\n");
    return 0;
}

// ---------------------------------------------------------------- misuse

__attribute__((noinline)) void *make_with_malloc(std::size_t n) { return std::malloc(n); }
__attribute__((noinline)) void *make_with_new(std::size_t n) { return ::operator new(n); }
__attribute__((noinline)) void *make_with_new_array(std::size_t n) { return ::operator new[](n); }
__attribute__((noinline)) void *make_aligned(std::size_t n)
{
    return ::operator new(n, std::align_val_t(64));
}
__attribute__((noinline)) void release_with_delete(void *p) { ::operator delete(p); }
__attribute__((noinline)) void release_with_delete_array(void *p) { ::operator delete[](p); }
__attribute__((noinline)) void release_with_free(void *p) { std::free(p); }
__attribute__((noinline)) void release_sized(void *p, std::size_t n) { ::operator delete(p, n); }
__attribute__((noinline)) std::size_t ask_usable(void *p) { return malloc_usable_size(p); }

static int misuse(const char *what)
{
    if (!std::strcmp(what, "malloc_delete")) {
        release_with_delete(make_with_malloc(64));
    } else if (!std::strcmp(what, "new_free")) {
        release_with_free(make_with_new(64));
    } else if (!std::strcmp(what, "new_array_delete")) {
        release_with_delete(make_with_new_array(64));
    } else if (!std::strcmp(what, "new_delete_array")) {
        release_with_delete_array(make_with_new(64));
    } else if (!std::strcmp(what, "sized_delete")) {
        release_sized(make_with_new(64), 32);
    } else if (!std::strcmp(what, "aligned_delete")) {
        release_with_delete(make_aligned(64));
    } else if (!std::strcmp(what, "usable_size_interior")) {
        char *p = static_cast<char *>(make_with_malloc(64));
        std::printf("usable %zu\n", ask_usable(p + 8));
        release_with_free(p);
    } else if (!std::strcmp(what, "usable_size_freed")) {
        void *p = make_with_malloc(64);
        release_with_free(p);
        std::printf("usable %zu\n", ask_usable(p));
    } else {
        std::printf("unknown misuse %s\n", what);
        return 2;
    }
    // the heap still works afterwards
    for (int i = 0; i < 1000; i++) {
        std::vector<int> v(static_cast<std::size_t>(i % 100) + 1, i);
        std::string s(static_cast<std::size_t>(i % 300), 'x');
        if (v.back() != i)
            return 3;
    }
    std::printf("survived\n");
    return 0;
}

int main(int argc, char **argv)
{
    return argc > 1 ? misuse(argv[1]) : checks();
}
