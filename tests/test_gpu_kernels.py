"""The GPU backend's Triton kernels, run in Triton's interpreter on CPU tensors, against the CPU
engine's kernels bit for bit (integer sums, int8 codes, scales, and the scaled outputs whose
operation order DESIGN section 3 fixes), on small odd shapes, in both tilings (the GPU's and the
interpreter's wide one). On a machine with CUDA the same checks run on the GPU too (marked)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="the GPU backend needs torch")
pytest.importorskip("triton", reason="the GPU backend needs triton: pip install -e '.[gpu]'")

from bitnet import engine  # noqa: E402
from bitnet.convert import tq_packing  # noqa: E402
from bitnet.convert.i2s import pack_i2s  # noqa: E402
from bitnet.gpu import kernels, weights  # noqa: E402

# (m activation rows, n output rows, k): odd m and n, k from one I2_S block up, TQ-sized ones too.
SHAPES = [(1, 37, 128), (3, 45, 384), (5, 33, 256), (17, 70, 640), (2, 1, 512)]
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 and no CUDA device", allow_module_level=True)
devices = ["cpu" if INTERPRETED else "cuda"]


def _activations(rng, m: int, k: int) -> np.ndarray:
    x = (rng.standard_normal((m, k)) * rng.uniform(0.01, 30.0, size=(m, 1))).astype(np.float32)
    x[0, : min(k, 8)] = 0.0
    if m > 1:
        x[1] = 0.0  # an all-zero row: scale 127 / 1e-5
    # values on rounding boundaries (x * s = n + 0.5): half to even must decide
    amax = np.abs(x[-1]).max()
    if amax > 0:
        x[-1, 1:4] = np.float32([0.5, 1.5, -2.5]) * amax / np.float32(127)
    return x


def _packed(t: np.ndarray) -> np.ndarray:
    n, k = t.shape
    return np.frombuffer(pack_i2s(t, 1.0), np.uint8)[: n * k // 4].reshape(n, k // 4).copy()


WIDE = [False, True] if INTERPRETED else [False]  # the interpreter's wide tiles are not for a GPU


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("wide", WIDE)
def test_quantize_rows_equals_engine(m, n, k, wide):
    x = _activations(np.random.default_rng(m * 1000 + k), m, k)
    q_ref, s_ref = engine.quantize_activations(x)
    q, s = kernels.quantize_rows(torch.from_numpy(x).to(devices[0]), wide=wide)
    np.testing.assert_array_equal(q.cpu().numpy(), q_ref)
    np.testing.assert_array_equal(s.cpu().numpy(), s_ref)


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("gemv", [True, False])
@pytest.mark.parametrize("wide", WIDE)
def test_ternary_matmul_equals_engine(m, n, k, gemv, wide):
    rng = np.random.default_rng(n * 7 + k)
    x = _activations(rng, m, k)
    q_ref, s_ref = engine.quantize_activations(x)
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    packed = _packed(t)
    acc = engine.i2s_matmul(packed, n, k, q_ref, isa_name="scalar")
    np.testing.assert_array_equal(acc, q_ref.astype(np.int64) @ t.T.astype(np.int64))
    w_scale = np.float32(0.0371)
    want = acc.astype(np.float32) / s_ref[:, None] * w_scale  # the engine's scale_sums, in f32
    dev = devices[0]
    y = kernels.ternary_int_matmul(torch.from_numpy(q_ref).to(dev), torch.from_numpy(s_ref).to(dev),
                                   torch.from_numpy(packed).to(dev), n, k, float(w_scale), gemv=gemv, wide=wide)
    np.testing.assert_array_equal(y.cpu().numpy(), want)


@pytest.mark.parametrize("m,n,k", [(1, 19, 256), (3, 21, 512), (6, 40, 768)])
@pytest.mark.parametrize("gemv", [True, False])
def test_blocked_ternary_matmul_equals_engine_order(m, n, k, gemv):
    """TQ tensors whose 256-blocks carry their own scales: y = (sum_b d_b * acc_b) / s, b in order
    (the engine's ternary_blocked_matmul_ref), from a TQ2_0 tensor decoded as the loader does."""
    rng = np.random.default_rng(k + m)
    x = _activations(rng, m, k)
    q_ref, s_ref = engine.quantize_activations(x)
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    d = rng.uniform(0.01, 0.2, size=(n, k // 256)).astype(np.float16)
    host = weights.ternary_host(weights.GGML_TQ2_0, np.frombuffer(tq_packing.pack_tq2_0(t, d), np.uint8), k, n)
    assert host.block_scales is not None
    np.testing.assert_array_equal(host.codes, _packed(t))
    blocks = t.reshape(n, -1, 256).astype(np.int64)
    qb = q_ref.reshape(m, -1, 256).astype(np.int64)
    want = np.zeros((m, n), np.float32)
    for b in range(k // 256):
        want += host.block_scales[None, :, b] * np.einsum("mk,nk->mn", qb[:, b], blocks[:, b]).astype(np.float32)
    want /= s_ref[:, None]
    dev = devices[0]
    y = kernels.ternary_int_matmul(torch.from_numpy(q_ref).to(dev), torch.from_numpy(s_ref).to(dev),
                                   torch.from_numpy(host.codes.copy()).to(dev), n, k, 0.0,
                                   torch.from_numpy(host.block_scales).to(dev), gemv=gemv)
    np.testing.assert_array_equal(y.cpu().numpy(), want)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("wide", WIDE)
def test_dense_head_matches_float64(dtype, wide):
    """The head: stored weights times f32 activations, summed in f32 (not bitwise: a float sum)."""
    rng = np.random.default_rng(5)
    m, n, k = 3, 75, 320
    x = rng.standard_normal((m, k)).astype(np.float32)
    w32 = rng.standard_normal((n, k)).astype(np.float32)
    if dtype == "f16":
        w = torch.from_numpy(w32.astype(np.float16))
    elif dtype == "bf16":
        w = torch.from_numpy(w32).to(torch.bfloat16)
    else:
        w = torch.from_numpy(w32)
    exact = x.astype(np.float64) @ w.float().numpy().astype(np.float64).T
    y = kernels.dense_matmul(torch.from_numpy(x).to(devices[0]), w.to(devices[0]), wide=wide).cpu().numpy()
    assert np.abs(y - exact).max() <= 1e-5 * np.abs(exact).max()


def test_dequantize_heads_equal_engine_bits(tmp_path):
    """Q8_0 / Q6_K heads decode to the engine's f32 values (its logits of a one-layer model with a
    one-hot final norm would show them; here against ggml's equations via the gguf package)."""
    gguf = pytest.importorskip("gguf")
    from bitnet.convert.q6_k import pack_q6_k
    from bitnet.convert.q8_0 import pack_q8_0

    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    for ggml_type, pack, dq in ((weights.GGML_Q8_0, pack_q8_0, weights.dequantize_q8_0),
                                (weights.GGML_Q6_K, pack_q6_k, weights.dequantize_q6_k)):
        raw = np.frombuffer(pack(x), np.uint8)
        want = gguf.quants.dequantize(raw.reshape(4, -1), gguf.GGMLQuantizationType(ggml_type)).astype(np.float32)
        np.testing.assert_array_equal(dq(raw, x.size).reshape(x.shape), want)


@pytest.mark.skipif(not INTERPRETED, reason="on a GPU the autotuner itself runs every candidate")
@pytest.mark.parametrize("name", ["_gemv_tuned", "_gemm_tuned", "_dense_tuned"])
def test_every_autotune_candidate_gives_the_engines_bits(monkeypatch, name):
    """The tile sizes a GPU's autotuner may pick, each run alone (one candidate: no benchmark)."""
    tuner = getattr(kernels, name)
    monkeypatch.setattr(kernels, "_tuned", lambda: True)
    rng = np.random.default_rng(11)
    m, n, k = (19 if name == "_gemm_tuned" else 2), 45, 384
    x = _activations(rng, m, k)
    q, s = engine.quantize_activations(x)
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    packed = _packed(t)
    want = engine.i2s_matmul(packed, n, k, q).astype(np.float32) / s[:, None] * np.float32(0.75)
    w16 = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float16))
    exact = x.astype(np.float64) @ w16.float().numpy().astype(np.float64).T
    for config in list(tuner.configs):
        monkeypatch.setattr(tuner, "configs", [config])
        monkeypatch.setattr(tuner, "cache", {})
        if name == "_dense_tuned":
            y = kernels.dense_matmul(torch.from_numpy(x), w16, wide=False).numpy()
            assert np.abs(y - exact).max() <= 1e-5 * np.abs(exact).max(), config
        else:
            y = kernels.ternary_int_matmul(torch.from_numpy(q), torch.from_numpy(s), torch.from_numpy(packed), n, k,
                                           0.75, gemv=name == "_gemv_tuned", wide=False).numpy()
            np.testing.assert_array_equal(y, want, err_msg=str(config))
