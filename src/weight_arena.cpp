#include "weight_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "kernels/dense.h"
#include "model.h"

namespace bitnet {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kAlign = 64;
constexpr size_t kCopySlice = size_t{32} << 20;

size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

// Drop this process's pages of [p, p + n) of a read-only file mapping: the bytes stay in the
// page cache (and would fault back in if read), but stop counting as resident here.
void release_mapped_range(const uint8_t *p, size_t n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = round_up(reinterpret_cast<uintptr_t>(p), page);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (end > begin) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

template <class Fn>
void for_each_ternary(model &m, Fn fn) {
    for (layer_weights &l : m.layers)
        for (ternary_matrix *t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) fn(*t);
}

size_t code_bytes(const ternary_matrix &t) { return static_cast<size_t>(t.n_out * t.n_in / 4); }

size_t head_bytes(const dense_matrix &d) { return static_cast<size_t>(d.n_out * dense_row_bytes(d.type, d.n_in)); }

}  // namespace

weight_arena::~weight_arena() {
    if (base_ != nullptr) munmap(base_, capacity_);
}

bool weight_arena::reserve(size_t n_bytes) {
    capacity_ = round_up(n_bytes, kHugePage);
    void *p = mmap(nullptr, capacity_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        capacity_ = 0;
        return false;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, capacity_, MADV_HUGEPAGE);  // advice only: without THP the copy still works
#endif
    base_ = static_cast<uint8_t *>(p);
    return true;
}

const uint8_t *weight_arena::append(const uint8_t *src, size_t n) {
    const size_t at = round_up(used_, kAlign);
    if (base_ == nullptr || at + n > capacity_) return nullptr;
    // In slices, each dropped from the mapping once copied: resident memory holds the copy and
    // at most one slice of the original, never both whole (a 0.66 GB head would hold both).
    for (size_t done = 0; done < n; done += kCopySlice) {
        const size_t len = std::min(kCopySlice, n - done);
        std::memcpy(base_ + at + done, src + done, len);
        release_mapped_range(src + done, len);
    }
    used_ = at + n;
    return base_ + at;
}

bool relocate_streamed_weights(model &m) {
    const size_t head = head_bytes(m.output);
    size_t total = round_up(head, kAlign);
    for_each_ternary(m, [&](ternary_matrix &t) {
        if (t.owned.empty()) total += round_up(code_bytes(t), kAlign);
    });
    if (total == 0) return true;
    auto arena = std::make_unique<weight_arena>();
    if (!arena->reserve(total)) return false;
    if (head > 0) {
        // A tied head is the embedding itself: both keep pointing at the same (moved) bytes.
        const void *old = m.output.data;
        m.output.data = arena->append(static_cast<const uint8_t *>(old), head);
        if (m.token_embd.data == old) m.token_embd.data = m.output.data;
    }
    for_each_ternary(m, [&](ternary_matrix &t) {
        if (!t.owned.empty()) return;  // already repacked into memory of its own
        const size_t n = code_bytes(t);
        const uint8_t *src = t.codes;
        const uint8_t *copy = arena->append(src, n);
        if (copy == nullptr) return;  // cannot happen (reserved above); the mapping still works
        t.codes = copy;
    });
    m.arena = std::move(arena);
    return true;
}

}  // namespace bitnet
