"""The device benchmark's model builders (gpu/device_check.sh runs the benchmark on a GPU): the
random 2B-4T-style model and its bf16 twin compute the same function, checked on a tiny shape in
Triton's interpreter, so that a session with a GPU spends its minutes measuring, not debugging."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="the GPU backend needs torch")
pytest.importorskip("triton", reason="the GPU backend needs triton: pip install -e '.[gpu]'")

from bitnet.convert.i2s import pack_i2s  # noqa: E402
from bitnet.gpu import device_bench as db  # noqa: E402
from bitnet.gpu.forward import GpuContext  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="runs the builders on CPU tensors under the interpreter")


def test_bf16_twin_computes_the_same_model():
    hp = dataclasses.replace(db.shape_2b4t(1), n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64,
                             n_vocab=512)  # fmt: skip
    md = db.random_model(hp, "cpu", seed=1)
    bf = db.Bf16Model(md)
    t = np.random.default_rng(2).integers(-1, 2, (3, 384)).astype(np.int8)
    packed = np.frombuffer(pack_i2s(t, 1.0), np.uint8)[: t.size // 4].reshape(3, 96).copy()
    np.testing.assert_array_equal(db.unpack_codes(torch.from_numpy(packed)).numpy(), t)
    ids = torch.tensor([[3, 9, 27, 81, 243]])
    ours = GpuContext(md, 8).decode_tensor(ids[0])
    theirs = bf.forward(ids, bf.new_cache(1, 8))[0].float()
    corr = np.corrcoef(ours.numpy(), theirs.numpy())[0, 1]
    assert corr > 0.99, corr  # bf16 rounding of activations and weights apart, the same function


def test_slot_pool_rates_run(monkeypatch):
    """pool_rates (the server's decode path in the benchmark) runs, timed here without CUDA."""
    hp = dataclasses.replace(db.shape_2b4t(1), n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64,
                             n_vocab=512)  # fmt: skip
    calls = []

    def timed(fn, reps):
        for _ in range(reps + 1):
            fn()
        calls.append(reps)
        return 1.0

    monkeypatch.setattr(db, "_timed", timed)
    r = db.pool_rates(db.random_model(hp, "cpu", seed=1), 2, 2)
    assert r == {"ours_pool": 2.0, "pool_graphs": False} and calls == [2]
