// Debug dumps of the forward pass's named intermediate tensors, for layer-by-layer diffs
// against a reference (llm.c's habit). Off unless a directory is set; then every named tensor
// of the latest batch is written as <dir>/<layer>-<name>.npy (f32, rows = tokens).
#pragma once
#include <cstdint>
#include <string>

namespace bitnet {

// "" when dir is an existing folder, else why not: a dump folder that does not exist would make
// every write fail in silence, so setting one is checked (issue 16).
std::string dump_dir_problem(const std::string &dir);

// Writes one f32 matrix as a .npy file; layer < 0 means "not in a layer" (prefix "out").
// Failures are ignored: a debugging aid must never change what the engine computes.
void dump_tensor(const std::string &dir, const char *name, int64_t layer, const float *data, int64_t rows,
                 int64_t cols);

}  // namespace bitnet
