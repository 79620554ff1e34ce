#!/usr/bin/env bash
# Build the libFuzzer target and fuzz the GGUF loader for a fixed time (tests/fuzz/README.md).
#
# usage: tests/fuzz/run_fuzz.sh [SECONDS] [-- LIBFUZZER_FLAGS...]      (SECONDS defaults to 60)
#
# Builds build/fuzz/bin/fuzz_gguf with clang (ASan + UBSan + libFuzzer), writes the seed corpus
# (tests/fuzz/make_corpus.py) into build/fuzz/corpus, replays tests/fuzz/regressions/, then
# fuzzes. Exit status: 0 nothing found; 1 a finding (the reproducer's path is printed);
# 2 the build or corpus failed; 77 no clang with a libFuzzer runtime (nothing was run).
# Environment: CXX (a clang++), PYTHON (default python), JOBS (build parallelism, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "usage: tests/fuzz/run_fuzz.sh [SECONDS] [-- LIBFUZZER_FLAGS...]" >&2
  exit 2
fi

out=build/fuzz
python=${PYTHON:-python}

# A clang whose libFuzzer runtime links (Debian/Ubuntu: clang-19 + libclang-rt-19-dev).
clang=""
for c in ${CXX:-} clang++-19 clang++-18 clang++-17 clang++; do
  if command -v "$c" >/dev/null && "$c" --version 2>/dev/null | grep -q clang; then clang=$c; break; fi
done
if [ -z "$clang" ]; then
  echo "run_fuzz: no clang++ found; install clang (Debian: apt-get install clang-19 libclang-rt-19-dev)" >&2
  exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }' >"$probe/p.cpp"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  echo "run_fuzz: $clang cannot link -fsanitize=fuzzer,address,undefined: the libFuzzer/sanitizer runtime" \
       "is missing (Debian/Ubuntu: apt-get install libclang-rt-19-dev, matching clang-19)." >&2
  sed 's/^/  /' "$probe/err" | tail -3 >&2
  exit 77
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if ! cmake -S . -B "$out" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$clang" \
       -DBITNET_FUZZ=ON -DBITNET_BUILD_TESTS=OFF >"$out.configure.log" 2>&1 ||
   ! cmake --build "$out" --target fuzz_gguf -j"${JOBS:-2}" >"$out.build.log" 2>&1; then
  echo "run_fuzz: building fuzz_gguf failed; the last lines of $out.configure.log / $out.build.log:" >&2
  tail -20 "$out.configure.log" "$out.build.log" >&2 2>/dev/null || true
  exit 2
fi
fuzzer=$out/bin/fuzz_gguf

if ! "$python" tests/fuzz/make_corpus.py "$out/corpus"; then
  echo "run_fuzz: writing the seed corpus failed" >&2
  exit 2
fi

symbolizer=$(command -v llvm-symbolizer-19 || command -v llvm-symbolizer || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer

artifacts=$out/artifacts
mkdir -p "$artifacts"
report_findings() {
  echo "run_fuzz: FINDING: $1" >&2
  for f in "$artifacts"/*; do
    [ -e "$f" ] && [ "$f" -nt "$out/started" ] || continue
    echo "run_fuzz: reproducer: $f" >&2
    echo "run_fuzz:   reproduce: $fuzzer $f   (keep it: cp $f tests/fuzz/regressions/)" >&2
  done
  exit 1
}
touch "$out/started"

# Inputs that once crashed must keep loading (or failing) cleanly.
shopt -s nullglob
regressions=(tests/fuzz/regressions/*)
shopt -u nullglob
if [ ${#regressions[@]} -gt 0 ]; then
  if ! "$fuzzer" -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$artifacts/" "${regressions[@]}" \
       >"$out/regressions.log" 2>&1; then
    tail -60 "$out/regressions.log" >&2
    report_findings "a file in tests/fuzz/regressions/ fails again (log: $out/regressions.log)"
  fi
  echo "run_fuzz: ${#regressions[@]} regression inputs replayed cleanly"
fi

echo "run_fuzz: fuzzing for ${seconds}s ($fuzzer, corpus $out/corpus, log $out/fuzz.log)"
set +e
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -dict=tests/fuzz/gguf.dict -artifact_prefix="$artifacts/" "$@" "$out/corpus" >"$out/fuzz.log" 2>&1
status=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$out/fuzz.log" | tail -2 || true
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$out/fuzz.log" || true
if [ $status -ne 0 ]; then
  grep -n -m1 -E 'ERROR: |runtime error|fuzz_gguf: |==[0-9]+==' "$out/fuzz.log" >&2 || true
  tail -60 "$out/fuzz.log" >&2
  report_findings "fuzz_gguf exited with status $status (log: $out/fuzz.log)"
fi
echo "run_fuzz: no findings in ${seconds}s"
