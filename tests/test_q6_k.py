"""Q6_K writer (bitnet/convert/q6_k.py): ggml's reference quantizer byte for byte, the round trip
through gguf-py's dequantizer, the edge cases, and a model whose Q6_K head the engine reads."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.q6_k import BLOCK_BYTES, GGML_TYPE_Q6_K, QK_K, pack_q6_k, q6_k_n_bytes
from tests.gguf_rebuild import rebuild_gguf
from tests.hf_families import make_llama_bitnet_checkpoint
from tests.test_file_kinds import logits_of

gguf = pytest.importorskip("gguf")


def dequantize(packed: np.ndarray, n_rows: int) -> np.ndarray:
    return gguf.quants.dequantize(packed.reshape(n_rows, -1), gguf.GGMLQuantizationType.Q6_K)


# -- inputs that are the same bits on every machine (only integer hashing and f32 + - * /) -------
def hashed_uniform(shape, salt: int) -> np.ndarray:
    """f32 in [0, 1): splitmix64 of (salt, index), top 24 bits / 2^24."""
    z = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(salt * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)).reshape(shape)


def bell(shape, salt: int) -> np.ndarray:
    """Roughly N(0, 1/3): a sum of four uniforms."""
    return sum(hashed_uniform(shape, 4 * salt + i) for i in range(4)) - np.float32(2)


SHAPE = (16, 512)  # 32 super-blocks per case


def case_inputs(name: str) -> np.ndarray:
    if name == "bell":
        return bell(SHAPE, 1) * np.float32(0.05)
    if name == "heavy_tails":  # ratios of uniforms: outliers that set a sub-block's scale alone
        return (hashed_uniform(SHAPE, 2) - np.float32(0.5)) / (hashed_uniform(SHAPE, 3) + np.float32(2**-10))
    if name == "mixed_sub_blocks":  # 2^0 .. 2^-23 per sub-block: many int8 scales round to 0
        shift = (hashed_uniform((SHAPE[0], SHAPE[1] // 16, 1), 4) * np.float32(24)).astype(np.int32)
        return np.ldexp(bell((SHAPE[0], SHAPE[1] // 16, 16), 5), -shift).reshape(SHAPE)
    if name == "zeros":  # zero sub-blocks, a zero super-block and a zero row, among bell values
        x = bell(SHAPE, 6)
        x[:, 16:48], x[3, 256:], x[5] = 0, 0, 0
        return x
    if name == "ties":  # multiples of 1/4 in [-8, 8): codes that fall on rounding ties
        return np.floor(hashed_uniform(SHAPE, 7) * np.float32(64)) / np.float32(4) - np.float32(8)
    if name == "positive":
        return hashed_uniform(SHAPE, 8)
    if name == "f16_embedding":
        return (bell(SHAPE, 9) * np.float32(0.03)).astype(np.float16).astype(np.float32)
    if name == "non_finite":  # NaN, infinities, f32 overflow of x^3, f16 overflow of d: ggml's garbage
        x = bell(SHAPE, 11) * np.float32(1e3)
        x[:4, :16] *= np.float32(1e7)  # d = inf, and inf * (int8 scale 0) = NaN for the other sub-blocks
        u = hashed_uniform(SHAPE, 12)
        for i, v in enumerate((np.nan, np.inf, -np.inf, 3e38)):
            x[(u >= i * 0.002) & (u < (i + 1) * 0.002)] = v
        return x
    raise KeyError(name)


# SHA-256 of quantize_row_q6_K_ref's output for case_inputs(name), from libggml-base of the llama.cpp
# that llama-cpp-python 0.3.36 (PyPI sdist) vendors, called with ctypes (see q6_k.py's docstring);
# the input's own hash first, to tell a changed input from a changed quantizer.
GGML_SHA256 = {  # name: (first 16 hex digits of the input's SHA-256, the output's)
    "bell": ("b7b3cd2818caba40", "dc934d2c1cdb640132ccb678c6ecd1e85880fbb84bef0bccf9e30c6d362670cd"),
    "heavy_tails": ("9253337c00f94cf2", "85c37086ba13cf3e646095fa67f93883984de510cc54150250d8375086b21f90"),
    "mixed_sub_blocks": ("d4f26acb30061e25", "800c7b267c1099768a6e7b206e7a940092fbc98d92a153cdf62e247b00525bdf"),
    "zeros": ("acbf2872cab6a90a", "5a638903f9dc8838856db114d87e2df8d99a9881f849a16486d7f336fb45c7ed"),
    "ties": ("6e5bf2ad4db18348", "e972a3c21aeb8596d0ab8df6379ba0af7327a90fd1c584501ce64067512e3c15"),
    "positive": ("06cb58128abec35f", "aad498f3b27af64f8f24394c7f34a048208dd1becedb842059d45c192575ef71"),
    "f16_embedding": ("657eb619b01a28f0", "50690ab752fcef0966b490a37f3a66c01047372d94e9fac9ae4c8ed27e2e9fb5"),
    "non_finite": ("5cc43be5314d9235", "53e1c18b50974d9a5113d36b0cd412036f9413e003902a0d56e73ea4136a70ea"),
}


@pytest.mark.parametrize("name", GGML_SHA256)
def test_bytes_equal_ggml_reference_quantizer(name):
    x = case_inputs(name)
    input_sha, output_sha = GGML_SHA256[name]
    assert x.dtype == np.float32 and hashlib.sha256(x.tobytes()).hexdigest()[:16] == input_sha
    packed = pack_q6_k(x)
    assert packed.dtype == np.uint8 and packed.size == q6_k_n_bytes(*SHAPE)
    assert hashlib.sha256(packed.tobytes()).hexdigest() == output_sha


def test_cases_reach_every_path():
    """The hashed cases hold what makes Q6_K's quantizer branch: sub-blocks whose int8 scale is 0
    (their codes stay those of the scale search), zero sub-blocks, zero super-blocks."""
    mixed = pack_q6_k(case_inputs("mixed_sub_blocks")).reshape(-1, BLOCK_BYTES)
    assert (mixed[:, 192:208] == 0).sum() > 20
    zeros = pack_q6_k(case_inputs("zeros")).reshape(-1, BLOCK_BYTES)
    assert (zeros == 0).all(axis=1).sum() == 3  # row 3's second block, row 5's two blocks


# -- the round trip through gguf-py's dequantizer ------------------------------------------------
@pytest.mark.parametrize("name", ["normal", "student_t", "uniform", "positive", "signs", "sparse", "mixed"])
def test_round_trip_error_is_within_one_step(name):
    """Rounding to the nearest of 64 levels costs half a step, max|x| / 64, in the super-block's
    largest sub-block; the scale search and the one-sided clamp (codes -32..31) can cost up to a
    whole step. Measured worst over these distributions: 0.023 * max|x|."""
    rng = np.random.default_rng(11)
    n = 512
    magnitudes = lambda: 10.0 ** rng.uniform(-6, 2, (n, 16, 1)).repeat(16, 2).reshape(n, QK_K)
    x = {
        "normal": lambda: rng.standard_normal((n, QK_K)),
        "student_t": lambda: rng.standard_t(2, (n, QK_K)),
        "uniform": lambda: rng.uniform(-1, 1, (n, QK_K)),
        "positive": lambda: rng.uniform(0, 1, (n, QK_K)),
        "signs": lambda: rng.choice([-1.0, 1.0], (n, QK_K)),
        "sparse": lambda: rng.standard_normal((n, QK_K)) * (rng.random((n, QK_K)) < 0.05),
        "mixed": lambda: rng.standard_normal((n, QK_K)) * magnitudes(),
    }[name]().astype(np.float32)
    x[0] = 0  # a zero block among them
    back = dequantize(pack_q6_k(x), n)
    err = np.abs(back - x).max(axis=1)
    assert (err <= np.abs(x).max(axis=1) / 32).all()
    assert (back[0] == 0).all()
    rel = np.abs(back - x).max(axis=1)[1:] / np.abs(x).max(axis=1)[1:]
    assert rel.mean() < 0.017  # ~1/64 typically


def test_values_on_its_own_grid_come_back_exactly():
    """x = d * s_j * l with d a power of two, int8 s_j (one of them -128) and codes l in -32..31
    that reach -32 in every sub-block: ggml's search finds exactly that scale, so the round trip
    is exact. (Its scale for the largest sub-block is always -128 and its codes reach -32: a
    grid point of another sign convention, e.g. a sub-block whose largest value is +31 steps,
    is not reproduced.)"""
    rng = np.random.default_rng(12)
    n = 400
    d = np.float32(2.0) ** rng.integers(-20, 0, (n, 1, 1)).astype(np.float32)
    s = rng.integers(-127, 128, (n, 16, 1))
    s[np.arange(n), rng.integers(0, 16, n)] = -128
    codes = rng.integers(-31, 32, (n, 16, 16))
    codes[np.arange(n)[:, None], np.arange(16), rng.integers(0, 16, (n, 16))] = -32
    x = (d * s.astype(np.float32) * codes.astype(np.float32)).reshape(n, QK_K)
    packed = pack_q6_k(x).reshape(n, BLOCK_BYTES)
    np.testing.assert_array_equal(dequantize(packed, n), x)
    assert (packed[:, 208:].view(np.float16)[:, 0] == d[:, 0, 0]).all()
    assert (packed[:, 192:208].view(np.int8) == s[:, :, 0]).all()


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-16, -3e-20])
def test_zero_and_negligible_blocks_are_zero_bytes(value):
    """A super-block whose every sub-block scale is below 1e-15 is stored as 210 zero bytes."""
    x = np.full((3, 2 * QK_K), value, np.float32)
    x[1, :QK_K] = np.float32(0.5)  # one real block among them
    packed = pack_q6_k(x).reshape(-1, BLOCK_BYTES)
    assert (packed[[0, 1, 3, 4, 5]] == 0).all() and packed[2].any()
    back = dequantize(packed, 3)
    assert (back[1, :QK_K] == np.float32(0.5)).all() and (back[[0, 2]] == 0).all()


def test_row_length_must_be_a_multiple_of_256():
    assert q6_k_n_bytes(3, 512) == 3 * 2 * 210
    for k in (0, 128, 320, 2560 + 16):
        with pytest.raises(ValueError, match="Q6_K needs rows that are a positive multiple of 256 long, got"):
            q6_k_n_bytes(4, k)
    with pytest.raises(ValueError, match="multiple of 256"):
        pack_q6_k(np.ones((2, 384), np.float32))


def test_a_large_head_quantizes_in_row_chunks_alike():
    """The converter quantizes a head in row chunks: any split gives the same bytes."""
    x = bell((96, 1024), 10)
    whole = pack_q6_k(x)
    np.testing.assert_array_equal(whole, np.concatenate([pack_q6_k(x[:40]), pack_q6_k(x[40:])]))


# -- the engine reads what we write --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["untied", "tied"])
def test_engine_reads_our_q6_k_head_as_ggml_dequantizes_it(tmp_path, kind):
    """Converted with the embedding (and an untied head) as Q6_K: the bytes are pack_q6_k of the
    checkpoint's tensors, and the logits equal those of the same file with each Q6_K tensor replaced
    by gguf-py's dequantization of it in F32."""
    from bitnet.convert.hf_bitnet import convert
    from bitnet.convert.safetensors_reader import Checkpoint

    tied = kind == "tied"
    ckpt = make_llama_bitnet_checkpoint(tmp_path / "m", num_hidden_layers=1, tied=tied, seed=35,
                                        linear_class="autobitlinear" if tied else "bitlinear")  # fmt: skip
    out = convert(ckpt, tmp_path / "q6_k.gguf", token_embedding_type="q6_k", output_type="q6_k", progress=False)
    g = read_gguf(out)
    names = {"token_embd.weight": "model.embed_tokens.weight"} | ({} if tied else {"output.weight": "lm_head.weight"})
    replace = {}
    for name, hf_name in names.items():
        t = g.tensors[name]
        values = Checkpoint(ckpt).load_f32(hf_name)
        assert t.ggml_type == GGML_TYPE_Q6_K and bytes(t.data) == pack_q6_k(values).tobytes(), name
        widened = dequantize(np.asarray(t.data), t.ne[1]).astype(np.float32)
        assert np.abs(widened - values).max() <= np.abs(values).max() / 32
        replace[name] = (0, widened.tobytes())
    f32_file = rebuild_gguf(out, tmp_path / "f32.gguf", replace=replace)
    ours, desc = logits_of(out)
    assert ("embedding Q6_K (tied head)" if tied else "embedding Q6_K + output head Q6_K") in desc
    np.testing.assert_array_equal(ours, logits_of(f32_file)[0])
