// nmm.hpp — C++17 RAII over nmm.h: nmm::heap (owns a heap), nmm::unique_block (owns a
// block, frees it in its destructor) and nmm::allocator<T> (an STL allocator on a heap).
// Header-only; adds no state of its own, so thread-safety is nmm.h's: one heap may be
// used from many threads; a unique_block or heap object is not itself synchronised.
#ifndef NMM_HPP
#define NMM_HPP

#include "nmm.h"

#include <cstddef>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace nmm {

// Thrown when a C call reports misuse or a bad argument (not for lack of memory:
// that is std::bad_alloc, as the standard library expects).
class error : public std::runtime_error {
public:
    error(nmm_status_t status, const std::string &what)
        : std::runtime_error(what + ": " + nmm_status_str(status)), status_(status) {}
    nmm_status_t status() const noexcept { return status_; }

private:
    nmm_status_t status_;
};

// A move-only owning block: heap + pointer + requested size. Frees in its destructor.
class unique_block {
public:
    unique_block() noexcept = default;

    // Allocate size bytes from heap; throws std::bad_alloc when the heap returns NULL.
    unique_block(nmm_heap_t *heap, std::size_t size, nmm_site_t site = 0)
        : heap_(heap), ptr_(nmm_alloc(heap, size, site)), size_(size) {
        if (ptr_ == nullptr) throw std::bad_alloc();
    }

    // Take ownership of a block already allocated from heap.
    static unique_block adopt(nmm_heap_t *heap, void *ptr, std::size_t size) noexcept {
        unique_block b;
        b.heap_ = heap;
        b.ptr_ = ptr;
        b.size_ = size;
        return b;
    }

    unique_block(const unique_block &) = delete;
    unique_block &operator=(const unique_block &) = delete;

    unique_block(unique_block &&other) noexcept
        : heap_(other.heap_), ptr_(std::exchange(other.ptr_, nullptr)),
          size_(std::exchange(other.size_, 0)) {}

    unique_block &operator=(unique_block &&other) noexcept {
        if (this != &other) {
            reset();
            heap_ = other.heap_;
            ptr_ = std::exchange(other.ptr_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }

    ~unique_block() { reset(); }

    void *get() const noexcept { return ptr_; }
    template <class T> T *as() const noexcept { return static_cast<T *>(ptr_); }
    std::size_t size() const noexcept { return size_; }
    nmm_heap_t *heap() const noexcept { return heap_; }
    explicit operator bool() const noexcept { return ptr_ != nullptr; }

    // Give up ownership: the caller must nmm_free the returned pointer.
    void *release() noexcept {
        size_ = 0;
        return std::exchange(ptr_, nullptr);
    }

    // Free the block now (a no-op when empty). Returns the free's status.
    nmm_status_t reset() noexcept {
        void *p = std::exchange(ptr_, nullptr);
        size_ = 0;
        return p ? nmm_free(heap_, p, 0) : NMM_OK;
    }

private:
    nmm_heap_t *heap_ = nullptr;
    void *ptr_ = nullptr;
    std::size_t size_ = 0;
};

// Owns one NMM heap; destroying it releases every block still in it.
class heap {
public:
    // Defaults, or an NMM_OPTIONS string ("level=standard:limit=64M");
    // a bad option throws nmm::error with the parser's message.
    heap() : heap(static_cast<const char *>(nullptr)) {}
    explicit heap(const char *options) {
        nmm_config_t cfg;
        nmm_config_init(&cfg);
        if (options != nullptr) {
            char err[256] = {0};
            nmm_status_t st = nmm_config_parse(&cfg, options, err, sizeof err);
            if (st != NMM_OK) throw error(st, err[0] ? err : "nmm_config_parse");
        }
        create(&cfg);
    }
    explicit heap(const nmm_config_t &cfg) { create(&cfg); }

    heap(const heap &) = delete;
    heap &operator=(const heap &) = delete;
    heap(heap &&other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
    heap &operator=(heap &&other) noexcept {
        if (this != &other) {
            if (h_) nmm_heap_destroy(h_);
            h_ = std::exchange(other.h_, nullptr);
        }
        return *this;
    }
    ~heap() {
        if (h_) nmm_heap_destroy(h_);
    }

    nmm_heap_t *get() const noexcept { return h_; }

    unique_block alloc(std::size_t size, nmm_site_t site = 0) { return unique_block(h_, size, site); }

    nmm_stats_t stats() const {
        nmm_stats_t s{};
        s.size = sizeof s;
        nmm_status_t st = nmm_stats_get(h_, &s);
        if (st != NMM_OK) throw error(st, "nmm_stats_get");
        return s;
    }

    std::size_t validate() const noexcept { return nmm_validate(h_); }

private:
    void create(const nmm_config_t *cfg) {
        h_ = nmm_heap_create(cfg);
        if (h_ == nullptr) throw std::bad_alloc();
    }
    nmm_heap_t *h_ = nullptr;
};

// STL allocator on an NMM heap (which must outlive every container using it).
// Allocators compare equal when they use the same heap.
template <class T> class allocator {
public:
    using value_type = T;
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    using propagate_on_container_copy_assignment = std::true_type;
    using propagate_on_container_move_assignment = std::true_type;
    using propagate_on_container_swap = std::true_type;
    using is_always_equal = std::false_type;
    template <class U> struct rebind {
        using other = allocator<U>;
    };

    explicit allocator(nmm_heap_t *heap) noexcept : heap_(heap) {}
    explicit allocator(const nmm::heap &heap) noexcept : heap_(heap.get()) {}
    template <class U> allocator(const allocator<U> &other) noexcept : heap_(other.heap()) {}

    T *allocate(std::size_t n) {
        if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
        void *p = alignof(T) > 16 ? nmm_aligned_alloc(heap_, alignof(T), n * sizeof(T), 0)
                                  : nmm_alloc(heap_, n * sizeof(T), 0);
        if (p == nullptr) throw std::bad_alloc();
        return static_cast<T *>(p);
    }

    void deallocate(T *p, std::size_t) noexcept { nmm_free(heap_, p, 0); }

    nmm_heap_t *heap() const noexcept { return heap_; }

private:
    nmm_heap_t *heap_;
};

template <class T, class U>
bool operator==(const allocator<T> &a, const allocator<U> &b) noexcept {
    return a.heap() == b.heap();
}
template <class T, class U>
bool operator!=(const allocator<T> &a, const allocator<U> &b) noexcept {
    return !(a == b);
}

}  // namespace nmm

#endif  // NMM_HPP
