#!/usr/bin/env bash
# The aarch64 (NEON + dotprod) kernels, tested bit for bit on an x86-64 machine: cross-compile
# the native test programs and run them under qemu-user (tests/cross/README.md).
#
# usage: tests/cross/run_neon_qemu.sh [gcc] [clang]      (default: both; clang where installed)
#
# Builds tests/native/test_*.cpp with cmake/aarch64-linux-gnu.cmake into build/aarch64 (gcc) and
# with cmake/aarch64-linux-gnu-clang.cmake into build/aarch64-clang, then runs each program under
# `qemu-aarch64 -L /usr/aarch64-linux-gnu` on qemu's default CPU and on `-cpu max` (dotprod: the
# NEON kernels must be among those test_kernels and test_dense check), test_kernels again with BITNET_ISA=neon
# and =scalar, and on `-cpu cortex-a53` (ARMv8.0, no dotprod: dispatch must fall back to scalar
# and refuse BITNET_ISA=neon). Installs the cross toolchain and qemu with apt-get when missing and
# running as root. Exit status: 0 all passed; 1 a test failed; 2 a build failed; 77 no cross
# toolchain or qemu (nothing was run). Environment: JOBS (build parallelism, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."

sysroot=/usr/aarch64-linux-gnu
compilers=("$@")
[ ${#compilers[@]} -eq 0 ] && compilers=(gcc clang-if-present)
for c in "${compilers[@]}"; do
  case $c in gcc | clang | clang-if-present) ;; *)
    echo "usage: tests/cross/run_neon_qemu.sh [gcc] [clang]" >&2
    exit 2
    ;;
  esac
done

find_qemu() { command -v qemu-aarch64 || command -v qemu-aarch64-static || true; }
have_tools() {
  command -v aarch64-linux-gnu-g++ >/dev/null && [ -n "$(find_qemu)" ] &&
    [ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] && command -v cmake >/dev/null
}
if ! have_tools && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "run_neon_qemu: installing g++-aarch64-linux-gnu, qemu-user, libc6-arm64-cross with apt-get"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    g++-aarch64-linux-gnu qemu-user libc6-arm64-cross >/dev/null 2>&1 || true
fi
if ! have_tools; then
  echo "run_neon_qemu: needs aarch64-linux-gnu-g++, qemu-aarch64 and $sysroot (Debian: apt-get install" \
       "g++-aarch64-linux-gnu qemu-user libc6-arm64-cross); nothing was run" >&2
  exit 77
fi
qemu=$(find_qemu)

clangxx=""
for c in clang++-19 clang++-18 clang++-17 clang++; do
  if command -v "$c" >/dev/null; then clangxx=$c; break; fi
done

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
mapfile -t programs < <(for f in tests/native/test_*.cpp; do basename "$f" .cpp; done)
start=$SECONDS

# build TOOLCHAIN DIR: configure and build the test programs only (not libbitnet, not the tools).
build() {
  local toolchain=$1 dir=$2
  if ! cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$PWD/$toolchain" -DCMAKE_BUILD_TYPE=Release \
         -DBITNET_BUILD_TESTS=ON >"$dir.configure.log" 2>&1 ||
     ! cmake --build "$dir" -j"${JOBS:-2}" --target "${programs[@]}" >"$dir.build.log" 2>&1; then
    echo "run_neon_qemu: building $dir failed; the last lines of $dir.configure.log / $dir.build.log:" >&2
    tail -20 "$dir.configure.log" "$dir.build.log" >&2 2>/dev/null || true
    exit 2
  fi
}

runs=0 failed_runs=0 checks_passed=0 checks_failed=0

# run DIR CPU ISA PROGRAM [REQUIRED_OUTPUT]: one program under qemu (CPU "" = qemu's default;
# ISA "" = BITNET_ISA unset). It passes when it exits 0, ends with "N passed, 0 failed" and
# prints REQUIRED_OUTPUT. test_kernels re-runs itself (BITNET_ISA child processes) through
# argv[0]: qemu's -0 points that at a host script that starts the same program under the same
# qemu, so those checks run too instead of being skipped for want of binfmt_misc.
run() {
  local dir=$1 cpu=$2 isa=$3 prog=$4 want=${5:-}
  local bin=$dir/bin-aarch64/$prog tag=${cpu:-default}${isa:+-$isa}
  local wrapper=$dir/qemu/$prog-$tag log=$dir/logs/$prog-$tag.log
  local cpu_args=()
  [ -n "$cpu" ] && cpu_args=(-cpu "$cpu")
  mkdir -p "$dir/qemu" "$dir/logs"
  printf '#!/bin/sh\nexec %q %s -L %q %q "$@"\n' "$qemu" "${cpu:+-cpu $cpu}" "$sysroot" "$PWD/$bin" >"$wrapper"
  chmod +x "$wrapper"
  local t0=$SECONDS rc=0
  env ${isa:+BITNET_ISA=$isa} BITNET_SAME_BITS_QUICK=1 timeout 600 "$qemu" "${cpu_args[@]}" -L "$sysroot" -0 "$PWD/$wrapper" "$bin" \
    >"$log" 2>&1 || rc=$?
  local summary
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
  local ok=1 why=""
  if [ $rc -ne 0 ]; then ok=0 why="exit $rc"; fi
  if [[ ! $summary =~ \ 0\ failed$ ]]; then ok=0 why="${why:+$why, }no \"N passed, 0 failed\" line"; fi
  if [ -n "$want" ] && ! grep -qF -- "$want" "$log"; then ok=0 why="${why:+$why, }no \"$want\" in its output"; fi
  if grep -q 'child-process checks skipped' "$log"; then ok=0 why="${why:+$why, }BITNET_ISA child checks skipped"; fi
  if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    checks_passed=$((checks_passed + BASH_REMATCH[1])) checks_failed=$((checks_failed + BASH_REMATCH[2]))
  fi
  runs=$((runs + 1))
  printf '  %-15s cpu=%-11s BITNET_ISA=%-7s %-13s %-24s %3ds' "${dir#build/}" "${cpu:-default}" "${isa:--}" \
    "$prog" "${summary:-(no summary)}" $((SECONDS - t0))
  if [ $ok = 1 ]; then
    echo
  else
    failed_runs=$((failed_runs + 1))
    echo "  FAILED: $why ($log):"
    { grep -E '^(FAIL|testing|note)' "$log" || tail -15 "$log"; } | head -20 | sed 's/^/      /' || true
  fi
}

for c in "${compilers[@]}"; do
  if [ "$c" = gcc ]; then
    toolchain=cmake/aarch64-linux-gnu.cmake dir=build/aarch64 cxx=aarch64-linux-gnu-g++
  elif [ -n "$clangxx" ]; then
    toolchain=cmake/aarch64-linux-gnu-clang.cmake dir=build/aarch64-clang cxx=$clangxx
  elif [ "$c" = clang ]; then
    echo "run_neon_qemu: no clang++ found (Debian: apt-get install clang-19); nothing was run" >&2
    exit 77
  else
    echo "run_neon_qemu: no clang++ found: gcc build only"
    continue
  fi
  build "$toolchain" "$dir"
  echo "run_neon_qemu: $dir ($("$cxx" --version | head -1)) under $($qemu --version | head -1)"
  # test_same_bits (a 520-token forward pass per kernel set and thread count) once, on -cpu max.
  for prog in "${programs[@]}"; do [ "$prog" = test_same_bits ] || run "$dir" "" "" "$prog"; done
  for prog in "${programs[@]}"; do
    want=""
    [ "$prog" = test_kernels ] && want="testing: scalar, neon "
    [ "$prog" = test_dense ] && want="testing dense kernels: scalar, neon"
    run "$dir" max "" "$prog" "$want"
  done
  run "$dir" max neon test_kernels "testing: scalar, neon "
  run "$dir" max scalar test_kernels "testing: scalar, neon "
  run "$dir" cortex-a53 "" test_kernels "(available: scalar)"
  run "$dir" cortex-a53 neon test_kernels "(available: scalar)"
done

echo "run_neon_qemu: $runs program runs, $failed_runs failed, in $((SECONDS - start)) s"
echo "neon_qemu: $checks_passed passed, $checks_failed failed"
[ $failed_runs -eq 0 ] || exit 1
