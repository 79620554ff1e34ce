// Picks the ternary kernel set once per process: the best one this CPU runs, or the one the
// BITNET_ISA environment variable names ("scalar", "avx2", "avx512", "neon"; "" or "auto" =
// best; the variant names "avx512bw" and "avx512vnni" force one AVX-512 flavour, "avx2maddubs"
// and "avx2vnni" one AVX2 flavour).
// This file is compiled without ISA flags, so it runs on any CPU of the architecture.
//
//   x86-64:  scalar < avx2 (AVX2 + FMA + F16C; AVX-VNNI picked inside) < avx512 (F + BW + VL + DQ; VNNI picked inside)
//            < amx (avx512 with VNNI, plus AMX-TILE + AMX-INT8 tiles for batched matmuls)
//   aarch64: scalar < neon (ASIMD dot product, armv8.2-a+dotprod)
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/ternary.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

namespace bitnet {

// Tables of ISAs this build does not compile: present so that every build links, never picked.
#if !defined(__x86_64__)
const ternary_kernel_set *ternary_kernels_avx2() {
    return nullptr;
}
const ternary_kernel_set *ternary_kernels_avx2_maddubs() {
    return nullptr;
}
const ternary_kernel_set *ternary_kernels_avxvnni() {
    return nullptr;
}
const ternary_kernel_set *ternary_kernels_avx512() {
    return nullptr;
}
const ternary_kernel_set *ternary_kernels_avx512bw() {
    return nullptr;
}
const ternary_kernel_set *ternary_kernels_amx() {
    return nullptr;
}
#endif
#if !defined(__aarch64__)
const ternary_kernel_set *ternary_kernels_neon() {
    return nullptr;
}
#endif

namespace {

#if defined(__x86_64__)
bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool cpu_has_avx512() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && cpu_has_avx2();
}
bool cpu_has_avx512vnni() {
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
}
// AMX needs the CPU (CPUID.7.0:EDX bits 24 AMX-TILE, 25 AMX-INT8), the OS (XCR0 bits 17-18:
// tile state saved on context switches) and, on Linux, the process's permission to use tile
// data, which the kernel grants on request (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16).
bool cpu_has_amx() {
    static const bool ok = [] {
        if (!cpu_has_avx512vnni()) return false;
        unsigned a, b, c, d;
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || (d & (3u << 24)) != (3u << 24)) return false;
        if (!__get_cpuid(1, &a, &b, &c, &d) || (c & (1u << 27)) == 0) return false;  // OSXSAVE
        uint32_t xcr0_lo, xcr0_hi;
        __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
        if ((xcr0_lo & (3u << 17)) != (3u << 17)) return false;
#if defined(__linux__)
        constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
#endif
        return true;
    }();
    return ok;
}
#else
bool cpu_has_avx2() {
    return false;
}
bool cpu_has_avx512() {
    return false;
}
bool cpu_has_avx512vnni() {
    return false;
}
bool cpu_has_amx() {
    return false;
}
#endif

#if defined(__aarch64__) && defined(__linux__)
bool cpu_has_dotprod() {
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}
#elif defined(__aarch64__) && defined(__APPLE__)
bool cpu_has_dotprod() {
    return true;
}  // every Apple arm64 CPU has it
#else
bool cpu_has_dotprod() {
    return false;
}
#endif

bool cpu_has_nothing_special() {
    return true;
}

struct isa_entry {
    const char *name;
    const ternary_kernel_set *(*table)();
    bool (*cpu_supports)();
    bool listed;  // false: a variant name (forcing it is allowed; never picked by default)
};

// Listed entries from worst to best. ternary_kernels_avx512() returns the VNNI table exactly
// when the CPU has VNNI, so "avx512vnni" may reuse it.
const isa_entry kIsas[] = {
    {"scalar", ternary_kernels_scalar, cpu_has_nothing_special, true},
    {"avx2maddubs", ternary_kernels_avx2_maddubs, cpu_has_avx2, false},
    {"avx2vnni", ternary_kernels_avxvnni, cpu_has_avx2, false},  // nullptr without AVX-VNNI
    {"avx2", ternary_kernels_avx2, cpu_has_avx2, true},
    {"avx512bw", ternary_kernels_avx512bw, cpu_has_avx512, false},
    {"avx512vnni", ternary_kernels_avx512, cpu_has_avx512vnni, false},
    {"avx512", ternary_kernels_avx512, cpu_has_avx512, true},
    {"amx", ternary_kernels_amx, cpu_has_amx, true},
    {"neon", ternary_kernels_neon, cpu_has_dotprod, true},
};

const ternary_kernel_set *runnable(const isa_entry &e) {
    return e.cpu_supports() ? e.table() : nullptr;
}

struct dispatch_state {
    std::string available;  // "scalar,avx2"
    const ternary_kernel_set *chosen = nullptr;
    std::string error;
};

const dispatch_state &state() {
    static const dispatch_state st = [] {
        dispatch_state s;
        for (const isa_entry &e : kIsas) {
            if (!e.listed) continue;
            if (const ternary_kernel_set *t = runnable(e)) {
                if (!s.available.empty()) s.available += ",";
                s.available += e.name;
                s.chosen = t;
            }
        }
        const char *env = std::getenv("BITNET_ISA");
        if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return s;
        bool known = false;
        for (const isa_entry &e : kIsas) known = known || std::strcmp(e.name, env) == 0;
        s.chosen = ternary_kernels_by_name(env);
        if (s.chosen == nullptr)
            s.error = std::string("BITNET_ISA=") + env +
                      (known ? " is not supported by this CPU" : " is not a known kernel set") +
                      " (available: " + s.available + ")";
        return s;
    }();
    return st;
}

std::atomic<const ternary_kernel_set *> g_forced{nullptr};

}  // namespace

const ternary_kernel_set *ternary_kernels_by_name(const char *name) {
    if (name == nullptr) return nullptr;
    for (const isa_entry &e : kIsas)
        if (std::strcmp(e.name, name) == 0) return runnable(e);
    return nullptr;
}

const ternary_kernel_set *ternary_kernels_active(const char **error) {
    if (const ternary_kernel_set *forced = g_forced.load(std::memory_order_acquire)) {
        if (error) *error = nullptr;
        return forced;
    }
    const dispatch_state &s = state();
    if (error) *error = s.error.empty() ? nullptr : s.error.c_str();
    return s.chosen;
}

bool ternary_kernels_force(const char *name) {
    const ternary_kernel_set *t = ternary_kernels_by_name(name);
    if (t == nullptr) return false;
    g_forced.store(t, std::memory_order_release);
    return true;
}

const char *ternary_kernels_available() {
    return state().available.c_str();
}

}  // namespace bitnet
