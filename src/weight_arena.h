// The weights that decode streams, moved out of the file mapping into one anonymous,
// huge-page-backed block.
//
// Decode streams every ternary weight and the whole lm_head once per token. Read through the file mapping the stream
// crosses a 4 KiB page (and a TLB miss) every 4 KiB, where hardware prefetchers stop; the same
// bytes in 2 MiB pages stream at close to the machine's read bandwidth. The copy is made once at
// load time, tensor by tensor, and each copied range of the file is dropped from this process
// (MADV_DONTNEED on the mapping), so resident memory does not hold both.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bitnet {

struct model;

class weight_arena {
  public:
    weight_arena() = default;
    ~weight_arena();
    weight_arena(const weight_arena &) = delete;
    weight_arena &operator=(const weight_arena &) = delete;

    // Reserve n_bytes (rounded up to 2 MiB); false when the allocation fails.
    bool reserve(size_t n_bytes);
    // Room for n bytes (64-byte aligned), or nullptr when full.
    uint8_t *take(size_t n);
    size_t size() const { return used_; }

  private:
    uint8_t *base_ = nullptr;
    size_t capacity_ = 0, used_ = 0;
};

// Moves every ternary matrix (from the file mapping, or from its repacked copy, which is freed)
// and the lm_head (the embedding too, when tied) into m.arena. Returns false, leaving the model
// reading from where it is (slower, still correct), when the arena cannot be allocated. An F32 /
// F16 / BF16 head is checked for NaN and Inf as it is copied, piece by piece while the piece is in
// cache (finite_check.h), which costs next to nothing beside the copy: *head_non_finite gets the
// first such element's index, or -1 (left alone when the arena cannot be allocated).
bool relocate_streamed_weights(model &m, int64_t *head_non_finite);

}  // namespace bitnet
