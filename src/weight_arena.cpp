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

#include "finite_check.h"
#include "kernels/dense.h"
#include "model.h"
#include "quant_types.h"

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

// One stretch of the file mapping and where it goes in the arena; check_type >= 0: its values
// (of that ggml float type) are checked finite as they are copied, the first bad index (counted
// from the job's start) kept in *first_bad.
struct copy_job {
    const uint8_t *src;
    uint8_t *dst;
    size_t n;
    int64_t check_type = -1;
    const uint8_t *job_dst = nullptr;
    std::atomic<int64_t> *first_bad = nullptr;
};

// Bytes copied then checked at a time: the piece is still in L2 when it is read back.
constexpr size_t kCheckPiece = size_t{256} << 10;

void copy_checked(const copy_job &j) {
    const size_t elem = j.check_type == GGML_F32 ? 4 : 2;
    for (size_t done = 0; done < j.n; done += kCheckPiece) {
        const size_t n = std::min(kCheckPiece, j.n - done);
        std::memcpy(j.dst + done, j.src + done, n);
        const int64_t bad = first_non_finite(static_cast<uint32_t>(j.check_type), j.dst + done, static_cast<int64_t>(n / elem));
        if (bad < 0) continue;
        const int64_t at = static_cast<int64_t>((j.dst + done - j.job_dst) / elem) + bad;
        int64_t seen = j.first_bad->load();
        while ((seen < 0 || at < seen) && !j.first_bad->compare_exchange_weak(seen, at)) {
        }
        return;
    }
}

// Copies every job in slices of kCopySlice, each dropped from the mapping (or from a repacked heap
// copy, freed afterwards) once copied: resident memory holds the copy and at most one slice per
// thread of the original, never both whole (a 0.66 GB head would hold both). Several threads: most of the time goes to the kernel clearing
// the fresh huge pages as they are first written (70% of a 2B-4T load on one thread), which
// runs in parallel on different pages.
void copy_in_slices(const std::vector<copy_job> &jobs) {
    std::vector<copy_job> slices;
    for (const copy_job &j : jobs)
        for (size_t done = 0; done < j.n; done += kCopySlice)
            slices.push_back({j.src + done, j.dst + done, std::min(kCopySlice, j.n - done), j.check_type, j.dst,
                              j.first_bad});
    std::atomic<size_t> next{0};
    const auto work = [&] {
        for (size_t i = next.fetch_add(1); i < slices.size(); i = next.fetch_add(1)) {
            if (slices[i].check_type >= 0) copy_checked(slices[i]);
            else std::memcpy(slices[i].dst, slices[i].src, slices[i].n);
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

bool relocate_streamed_weights(model &m, int64_t *head_non_finite) {
    const size_t head = head_bytes(m.output);
    size_t total = round_up(head, kAlign);
    for_each_ternary(m, [&](ternary_matrix &t) { total += round_up(code_bytes(t), kAlign); });
    if (total == 0) return true;
    auto arena = std::make_unique<weight_arena>();
    if (!arena->reserve(total)) return false;
    // Places first (the pointers move once all bytes are in), then the bytes.
    std::vector<copy_job> jobs;
    uint8_t *head_copy = head > 0 ? arena->take(head) : nullptr;
    std::atomic<int64_t> head_bad{-1};
    const bool float_head = m.output.type == GGML_F32 || m.output.type == GGML_F16 || m.output.type == GGML_BF16;
    if (head_copy != nullptr)
        jobs.push_back({static_cast<const uint8_t *>(m.output.data), head_copy, head,
                        float_head ? static_cast<int64_t>(m.output.type) : -1, head_copy, &head_bad});
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
    *head_non_finite = head_bad.load();
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
