// test_nmm_hpp.cpp — proves nmm.hpp: unique_block ownership (move-only, frees in its
// destructor, release), nmm::heap RAII, and nmm::allocator<T> in std::vector and
// (through rebind) std::map, throwing std::bad_alloc past the heap's limit.
// Built and run by tests/test_cpp_header.py; prints "ok" and exits 0 on success.
#include "nmm.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <type_traits>
#include <vector>

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            std::exit(1);                                                        \
        }                                                                        \
    } while (0)

static_assert(!std::is_copy_constructible_v<nmm::unique_block>, "unique_block is move-only");
static_assert(std::is_nothrow_move_constructible_v<nmm::unique_block>, "moves never throw");
static_assert(!std::is_copy_constructible_v<nmm::heap>, "heap is move-only");

static void test_unique_block(nmm::heap &h) {
    uint64_t frees0 = h.stats().frees;
    {
        nmm::unique_block a = h.alloc(100);
        CHECK(a && a.size() == 100 && a.heap() == h.get());
        std::memset(a.get(), 0xab, a.size());
        CHECK(nmm_usable_size(h.get(), a.get()) >= 100);
        nmm::unique_block b = std::move(a);  // ownership moves, a is empty
        CHECK(!a && a.get() == nullptr && b.size() == 100);
        CHECK(b.as<unsigned char>()[99] == 0xab);
        nmm::unique_block c;
        c = std::move(b);
        CHECK(!b && c);
    }  // c freed here, exactly once
    CHECK(h.stats().frees == frees0 + 1);

    nmm::unique_block d = h.alloc(32);
    void *raw = d.release();
    CHECK(!d && raw != nullptr);
    CHECK(h.stats().frees == frees0 + 1);  // release does not free
    CHECK(nmm_free(h.get(), raw, 0) == NMM_OK);
    CHECK(h.stats().frees == frees0 + 2);

    nmm::unique_block e = nmm::unique_block::adopt(h.get(), nmm_alloc(h.get(), 8, 0), 8);
    CHECK(e.reset() == NMM_OK && !e);
    CHECK(h.stats().live_blocks == 0);
}

static void test_vector_and_map(nmm::heap &h) {
    uint64_t allocs0 = h.stats().allocs;
    {
        nmm::allocator<int> alloc(h);
        std::vector<int, nmm::allocator<int>> v(alloc);
        for (int i = 0; i < 100000; i++) v.push_back(i);
        long long sum = 0;
        for (int x : v) sum += x;
        CHECK(sum == 100000LL * 99999 / 2);
        CHECK(v.get_allocator() == alloc);
        CHECK(nmm_usable_size(h.get(), v.data()) >= v.capacity() * sizeof(int));

        // rebind: the map allocates its nodes through allocator<node>, from the same heap
        using pair_alloc = nmm::allocator<std::pair<const int, double>>;
        std::map<int, double, std::less<int>, pair_alloc> m{pair_alloc(alloc)};
        for (int i = 0; i < 1000; i++) m[i] = i * 0.5;
        CHECK(m.size() == 1000 && m[999] == 499.5);
        CHECK(h.stats().live_blocks >= 1001);  // the vector's buffer + 1000 nodes
    }
    nmm_stats_t s = h.stats();
    CHECK(s.allocs > allocs0 + 1000);
    CHECK(s.live_blocks == 0);  // containers gave everything back

    nmm::heap other;
    CHECK(nmm::allocator<int>(h) != nmm::allocator<int>(other));
    CHECK(nmm::allocator<int>(h) == nmm::allocator<long>(h));
}

static void test_bad_alloc_past_limit() {
    nmm::heap limited("limit=1M");
    std::vector<char, nmm::allocator<char>> v{nmm::allocator<char>(limited)};
    bool threw = false;
    try {
        v.resize(8u << 20);  // 8 MiB > 1 MiB limit
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
    CHECK(limited.stats().alloc_failures >= 1);
    v.resize(1000);  // the heap recovers: a small request still succeeds
    CHECK(v.size() == 1000);

    threw = false;
    try {
        nmm::unique_block big = limited.alloc(4u << 20);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
}

static void test_bad_option() {
    bool threw = false;
    try {
        nmm::heap h("no_such_option=1");
    } catch (const nmm::error &e) {
        threw = e.status() == NMM_E_INVALID_ARGUMENT;
    }
    CHECK(threw);
}

int main() {
    nmm::heap h("level=standard");
    test_unique_block(h);
    test_vector_and_map(h);
    test_bad_alloc_past_limit();
    test_bad_option();
    CHECK(h.validate() == 0);
    std::puts("ok");
    return 0;
}
