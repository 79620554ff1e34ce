#include "weight_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/dense.h"
#include "model.h"

namespace bitnet {

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kAlign = 64;
constexpr size_t kCopySlice = size_t{32} << 20;
constexpr size_t kCopyThreads = 4;

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

size_t code_bytes(const ternary_matrix &t) { return static_cast<size_t>(t.n_out * t.k_pad / 4); }

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

uint8_t *weight_arena::take(size_t n) {
    const size_t at = round_up(used_, kAlign);
    if (base_ == nullptr || at + n > capacity_) return nullptr;
    used_ = at + n;
    return base_ + at;
}

namespace {

// One stretch of the file mapping and where it goes in the arena.
struct copy_job {
    const uint8_t *src;
    uint8_t *dst;
    size_t n;
};

// Copies every job in slices of kCopySlice, each dropped from the mapping (or from a repacked heap
// copy, freed afterwards) once copied: resident memory holds the copy and at most one slice per
// thread of the original, never both whole (a 0.66 GB head would hold both). Several threads: most of the time goes to the kernel clearing
// the fresh huge pages as they are first written (70% of a 2B-4T load on one thread), which
// runs in parallel on different pages.
void copy_in_slices(const std::vector<copy_job> &jobs) {
    std::vector<copy_job> slices;
    for (const copy_job &j : jobs)
        for (size_t done = 0; done < j.n; done += kCopySlice)
            slices.push_back({j.src + done, j.dst + done, std::min(kCopySlice, j.n - done)});
    std::atomic<size_t> next{0};
    const auto work = [&] {
        for (size_t i = next.fetch_add(1); i < slices.size(); i = next.fetch_add(1)) {
            std::memcpy(slices[i].dst, slices[i].src, slices[i].n);
            release_mapped_range(slices[i].src, slices[i].n);
        }
    };
    const size_t n_threads = std::min<size_t>({slices.size(), kCopyThreads, std::max(1u, std::thread::hardware_concurrency())});
    std::vector<std::thread> helpers;
    try {
        for (size_t t = 1; t < n_threads; ++t) helpers.emplace_back(work);
    } catch (const std::system_error &) {
        // no more threads: the ones started and this one finish the copy
    }
    work();
    for (std::thread &t : helpers) t.join();
}

}  // namespace

bool relocate_streamed_weights(model &m) {
    const size_t head = head_bytes(m.output);
    size_t total = round_up(head, kAlign);
    for_each_ternary(m, [&](ternary_matrix &t) { total += round_up(code_bytes(t), kAlign); });
    if (total == 0) return true;
    auto arena = std::make_unique<weight_arena>();
    if (!arena->reserve(total)) return false;
    // Places first (the pointers move once all bytes are in), then the bytes.
    std::vector<copy_job> jobs;
    uint8_t *head_copy = head > 0 ? arena->take(head) : nullptr;
    if (head_copy != nullptr) jobs.push_back({static_cast<const uint8_t *>(m.output.data), head_copy, head});
    std::vector<std::pair<ternary_matrix *, uint8_t *>> moved;
    // Repacked matrices (TQ1_0 / TQ2_0, the ARM I2_S layout, float files) move too: their heap
    // copies sit in 4 KiB pages (a TQ2_0 file decoded 1.5x slower than the same I2_S one).
    for_each_ternary(m, [&](ternary_matrix &t) {
        uint8_t *copy = arena->take(code_bytes(t));
        if (copy == nullptr) return;  // cannot happen (reserved above); the mapping still works
        jobs.push_back({t.codes, copy, code_bytes(t)});
        moved.emplace_back(&t, copy);
    });
    copy_in_slices(jobs);
    if (head_copy != nullptr) {
        // A tied head is the embedding itself: both keep pointing at the same (moved) bytes.
        if (m.token_embd.data == m.output.data) m.token_embd.data = head_copy;
        m.output.data = head_copy;
    }
    for (auto &[t, copy] : moved) {
        t->codes = copy;
        std::vector<uint8_t>().swap(t->owned);
    }
    m.arena = std::move(arena);
    return true;
}

}  // namespace bitnet
