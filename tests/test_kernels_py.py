"""The C kernels through the C API: the numpy I2_S twin (used by the converter) and the C
kernels agree byte for byte, every kernel set computes the exact integer product, and the
activation quantizer equals PyTorch's (what transformers runs) bit for bit."""

import numpy as np
import pytest

from bitnet import engine
from bitnet.convert.i2s import pack_i2s

ISAS = ["scalar", "avx2", "avx512", "amx", "neon"]


def available(isa: str) -> bool:
    return isa in engine.available_isas()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n,k,m", [(1, 128, 1), (17, 256, 3), (64, 640, 5), (33, 2560, 8), (100, 384, 16)])
def test_i2s_matmul_is_the_exact_integer_product(isa, n, k, m):
    if not available(isa):
        pytest.skip(f"{isa} not available on this CPU")
    rng = np.random.default_rng(n * 1000 + k + m)
    w = rng.integers(-1, 2, size=(n, k), dtype=np.int8)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    packed = np.frombuffer(pack_i2s(w, 1.0), dtype=np.uint8)[: n * k // 4]
    expected = a.astype(np.int64) @ w.astype(np.int64).T
    for threads in (1, 2, 3):
        got = engine.i2s_matmul(packed, n, k, a, isa, threads)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("flavour", ["avx2maddubs", "avx2vnni"])
@pytest.mark.parametrize("n,k,m", [(9, 128, 2), (17, 384, 600), (41, 2688, 37), (100, 640, 193)])
def test_avx2_gemm_is_the_exact_integer_product(flavour, n, k, m):
    """The AVX2 register-tiled GEMM, both flavours, forced for every batch size (threshold 2)."""
    if "avx2" not in engine.available_isas():
        pytest.skip("avx2 not available on this CPU")
    rng = np.random.default_rng(n * 1000 + k + m)
    w = rng.integers(-1, 2, size=(n, k), dtype=np.int8)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    packed = np.frombuffer(pack_i2s(w, 1.0), dtype=np.uint8)[: n * k // 4]
    expected = a.astype(np.int64) @ w.astype(np.int64).T
    before = engine.get_tuning("avx2_gemm_min_batch")
    engine.set_tuning("avx2_gemm_min_batch", 2)
    try:
        for threads in (1, 2, 3):
            try:
                got = engine.i2s_matmul(packed, n, k, a, flavour, threads)
            except engine.BitnetError:
                pytest.skip(f"{flavour} not available on this CPU")
            np.testing.assert_array_equal(got, expected)
    finally:
        engine.set_tuning("avx2_gemm_min_batch", before)


def test_i2s_matmul_extremes_do_not_overflow():
    k, n = 1 << 14, 4
    w = np.ones((n, k), dtype=np.int8)
    w[1] = -1
    a = np.full((2, k), -128, dtype=np.int8)
    a[1] = 127
    packed = np.frombuffer(pack_i2s(w, 1.0), dtype=np.uint8)[: n * k // 4]
    expected = a.astype(np.int64) @ w.astype(np.int64).T
    for isa in filter(available, ISAS):
        np.testing.assert_array_equal(engine.i2s_matmul(packed, n, k, a, isa), expected)


def torch_activation_quant(x: np.ndarray):
    """transformers' BitLinear.activation_quant, the definition we must equal."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    scale = 127 / t.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    q = (t * scale).round().clamp(-128, 127)
    return q.to(torch.int8).numpy(), scale[:, 0].numpy()


@pytest.mark.parametrize("isa", ISAS)
def test_quantizer_equals_pytorch(isa):
    if not available(isa):
        pytest.skip(f"{isa} not available on this CPU")
    rng = np.random.default_rng(7)
    rows = [rng.standard_normal(k).astype(np.float32) * rng.uniform(1e-3, 1e3) for k in (1, 7, 33, 128, 2560, 6913)]
    halves = (np.arange(-254, 255, dtype=np.float32) / 2)  # x * s lands exactly on .5 ties
    halves[-1] = 127.0
    rows += [halves, np.zeros(64, np.float32), np.full(40, 1e-7, np.float32)]
    previous = engine.isa()
    engine.set_isa(isa)
    try:
        for x in rows:
            q, s = engine.quantize_activations(x)
            q_ref, s_ref = torch_activation_quant(x[None, :])
            np.testing.assert_array_equal(s, s_ref)
            np.testing.assert_array_equal(q, q_ref)
    finally:
        engine.set_isa(previous)
