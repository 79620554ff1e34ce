#!/usr/bin/env bash
# One run on a machine with an NVIDIA GPU: build the engine if needed, run the GPU tests on the
# GPU (TRITON_INTERPRET=0: the same tests that run in Triton's interpreter in CI, now against real
# kernels), then benchmark the 2B-4T shape against a bf16 PyTorch forward pass in the same run.
# Needs torch with CUDA and triton (pip install -e ".[gpu]"; the device image has both); nothing
# is downloaded. Output: stdout, and $OUT (or ./gpu-results) gets tests.log and bench.json.
#
#   gpu/device_check.sh            # tests + benchmark (~3-5 min on an H100)
#   gpu/device_check.sh --bench    # benchmark only
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
export TORCHDYNAMO_DISABLE=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>/dev/null || true

# The CPU engine is the reference the tests compare against.
if [ ! -f bitnet/libbitnet.so ]; then
  cmake -S . -B build/gpu-check -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITNET_BUILD_TESTS=OFF >/dev/null &&
    cmake --build build/gpu-check -j16 --target bitnet >/dev/null || { echo "could not build libbitnet"; exit 1; }
fi

status=0
if [ "${1:-}" != "--bench" ]; then
  python3 -m pytest -q -p no:cacheprovider tests/test_gpu_kernels.py tests/test_gpu_model.py tests/test_gpu_server.py 2>&1 | tee "$out/tests.log"
  status=${PIPESTATUS[0]}
fi
python3 -m bitnet.gpu.device_bench --json "$out/bench.json" || status=1
exit $status
