// Run-time kernel parameters: built-in defaults, then a preset file for this CPU
// (preset_kernels/<cpu signature>.json, written by setup_env.py's autotune), then environment
// overrides. No parameter changes a result: every choice gives the same bits (integer sums;
// prefetches; which exact kernel runs a batch), only the speed.
//
//   prefetch_bytes   how far ahead of a ternary GEMV tile the weights are prefetched into L2
//   head_prefetch_bytes  the same for the dense (lm_head) GEMV
//   amx_min_batch    smallest batch that goes to the AMX tile GEMM instead of VNNI
//   head_gemv_rows   rows of a dense (lm_head) GEMV tile side by side: 1 or 2 memory streams
//   ternary_gemv_rows  the same for the AVX2 sets' ternary GEMV (the AVX-512 ones run one row)
//   avx2_gemm_min_batch  smallest batch that the AVX2 sets run with the register-tiled GEMM
//                    (ternary_gemm_avx2.h) instead of the small-batch tiles
#pragma once
#include <cstdint>
#include <string>

namespace bitnet {

struct kernel_tuning {
    int64_t prefetch_bytes = 8192;
    int64_t amx_min_batch = 16;
    int64_t head_gemv_rows = 2;
    int64_t head_prefetch_bytes = 8192;
    int64_t ternary_gemv_rows = 1;
    int64_t avx2_gemm_min_batch = 16;
};

// The parameters in force (defaults, then BITNET_PREFETCH_BYTES / BITNET_AMX_MIN_BATCH on first use).
const kernel_tuning &tuning();

// Set one parameter by name ("prefetch_bytes", "amx_min_batch"); false (and *error) for an
// unknown name or a value out of range. Takes effect for kernels started afterwards.
bool tuning_set(const std::string &key, int64_t value, std::string *error);

// The value of one parameter by name (in force, or the built-in default); false for an unknown name.
bool tuning_get(const std::string &key, int64_t *value, bool built_in_default = false);

// Read a preset: a JSON object whose known numeric keys are applied (others, such as "cpu" or
// nested "measured_*" tables, are ignored). Environment overrides still win.
bool tuning_load_preset(const std::string &path, std::string *error);

// "vendor-family-model" from CPUID (x86-64) or "aarch64-<implementer>-<part>"; names a preset.
std::string cpu_signature();

}  // namespace bitnet
