"""One answer on every CPU (DESIGN section 3): a 520-token prompt's logits are bit for bit the same
whatever the kernel set this machine has, the thread count (1, 2, 3) and how the prompt is split
into batches; on the demo model and on random models whose shapes the kernels must pad (rows not a
multiple of 128, head size 100, grouped-query attention). The demo model is checked the same way by
tests/native/test_same_bits.cpp (run by test_native.py, and for NEON under qemu by
tests/cross/run_neon_qemu.sh)."""

from pathlib import Path

import numpy as np
import pytest

from bitnet import engine
from bitnet.convert.dummy import ModelShape, generate
from tests.context_logits import prompt_logits

N_PROMPT = 520
# (hidden, FFN, layers, heads, kv heads, vocab, ctx, activation, theta)
ODD_SHAPES = {
    "hidden320": ModelShape(320, 704, 2, 5, 5, 1000, 1024, "silu", 10000.0),  # 5 heads of 64; FFN 5.5 blocks
    "head100": ModelShape(400, 1080, 2, 4, 2, 1000, 1024, "relu2", 500000.0),  # heads of 100, GQA; 3.125 blocks
}


def table_name(isa: str) -> str | None:
    """The name of the kernel table a set name resolves to here ("avx2" -> "avx2vnni" on CPUs with
    AVX-VNNI), or None if this CPU does not run it."""
    before = engine.isa()
    try:
        engine.set_isa(isa)
    except engine.BitnetError:
        return None
    name = engine.isa()
    engine.set_isa(before)
    return name


ISAS = [i for i in ("scalar", "avx2", "avx512bw", "avx512", "amx", "neon") if i in engine.available_isas()]
# Both AVX2 flavours (vpmaddubsw; AVX-VNNI where the CPU has it): the one "avx2" does not pick too.
if "avx2" in ISAS:
    ISAS[1:1] = [v for v in ("avx2maddubs", "avx2vnni") if table_name(v) not in (None, table_name("avx2"))]


@pytest.fixture(scope="module", params=list(ODD_SHAPES))
def model_path(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("odd") / f"{request.param}.gguf"
    return generate(out, ODD_SHAPES[request.param], "i2_s", seed=3, progress=False)


@pytest.fixture(autouse=True)
def restore_isa():
    before = engine.isa()
    yield
    engine.set_isa(before)


def test_logits_equal_across_kernel_sets_threads_and_batches(model_path):
    model = engine.NativeModel(model_path)
    ids = np.random.default_rng(11).integers(0, model.n_vocab, N_PROMPT).astype(np.int32)
    engine.set_isa("scalar")
    want = prompt_logits(model, ids, 1)
    assert np.isfinite(want).all()
    for isa in ISAS:
        engine.set_isa(isa)
        for n_threads in (1, 2, 3):
            got = prompt_logits(model, ids, n_threads)
            diff = np.flatnonzero((got != want).any(axis=1))
            assert diff.size == 0, f"{isa}, {n_threads} threads: rows {diff[:8]} differ from scalar (of {len(diff)})"
    # The same rows in other batches: single-token steps, a short batch, one past the batch limit.
    engine.set_isa(ISAS[-1])
    got = prompt_logits(model, ids, 2, splits=(1, 2, 17, 300, 301))
    assert np.array_equal(got, want), f"{ISAS[-1]}: logits depend on how the prompt is split into batches"
