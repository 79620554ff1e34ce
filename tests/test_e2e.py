"""End to end: HF checkpoint -> our converter -> our engine, against transformers' own
BitNet forward on the same checkpoint (DESIGN.md section 3)."""

import numpy as np
import pytest

from bitnet import Model, engine
from tests.conftest import convert_checkpoint
from tests.hf_models import make_bitnet_checkpoint, reference_logits

LOGIT_TOLERANCE = 1e-2  # max |diff| <= this * max |reference logit|
NEAR_TIE = 0.02         # greedy may part where the reference's top two are this close
GREEDY_STEPS = 32

LAYOUTS = [
    ("packed", "autobitlinear"),
    ("packed", "bitlinear"),
    ("bf16", None),
    ("f32", None),
]


def prompt_ids(n_vocab: int, n: int = 12, seed: int = 1) -> list[int]:
    return np.random.default_rng(seed).integers(0, n_vocab, size=n).tolist()


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda p: "-".join(x for x in p if x))
def converted(request, tmp_path_factory):
    layout, linear_class = request.param
    kwargs = {"linear_class": linear_class} if linear_class else {}
    ckpt = make_bitnet_checkpoint(tmp_path_factory.mktemp(f"e2e-{layout}"), layout=layout, seed=3, **kwargs)
    return ckpt, convert_checkpoint(ckpt)


def assert_logits_close(ours: np.ndarray, ref: np.ndarray):
    assert ours.shape == ref.shape
    bound = LOGIT_TOLERANCE * np.abs(ref).max()
    worst = np.abs(ours - ref).max()
    assert worst <= bound, f"max |logit diff| {worst:.4g} > {bound:.4g}"


def test_logits_match_transformers(converted):
    ckpt, gguf = converted
    with Model(gguf, n_threads=2) as m:
        ids = prompt_ids(m.n_vocab, 24)
        assert_logits_close(m.logits(ids), reference_logits(ckpt, ids))


def test_greedy_tokens_match_transformers(converted):
    """Our greedy continuation, teacher-forced through the reference: every step must be the
    reference's argmax, or a near tie of it (where float order may legitimately decide)."""
    ckpt, gguf = converted
    with Model(gguf, n_threads=2) as m:
        prompt = prompt_ids(m.n_vocab, 8, seed=7)
        ours = list(m.generate_tokens(prompt, max_tokens=GREEDY_STEPS, temperature=0.0))
        eog = m.tokenizer.eog_ids
    assert len(ours) >= 8, "the random model stopped almost at once; give it more signal"
    assert len(set(ours)) >= 4, f"greedy output is degenerate: {ours}"
    ref = reference_logits(ckpt, prompt + ours)
    steps = ref[len(prompt) - 1 :]
    # Our last token was followed by an end-of-generation pick or the step budget.
    for s, token in enumerate(ours):
        row = steps[s]
        top2 = np.sort(row)[-2:]
        if int(np.argmax(row)) != token:
            gap = top2[1] - top2[0]
            bound = NEAR_TIE * np.abs(row).max()
            assert gap <= bound, f"step {s}: ours {token}, reference {np.argmax(row)}, gap {gap:.4g}"
    if len(ours) < GREEDY_STEPS:  # we stopped on an end-of-generation token: so must the reference
        row = steps[len(ours)]
        pick = int(np.argmax(row))
        gap = np.sort(row)[-1] - np.sort(row)[-2]
        assert pick in eog or gap <= NEAR_TIE * np.abs(row).max()


def test_threads_do_not_change_results(tiny_gguf):
    with Model(tiny_gguf, n_threads=1) as one, Model(tiny_gguf, n_threads=2) as two:
        ids = prompt_ids(one.n_vocab, 40, seed=5)
        np.testing.assert_array_equal(one.logits(ids), two.logits(ids))


def test_batch_equals_token_by_token(tiny_model):
    """Prompt processing as one batch gives the same logits as feeding tokens one at a time."""
    from bitnet.engine import NativeContext

    ids = prompt_ids(tiny_model.n_vocab, 20, seed=9)
    batch = tiny_model.logits(ids)
    ctx = NativeContext(tiny_model.native, 32, 2)
    steps = np.stack([ctx.decode([t]) for t in ids])
    ctx.close()
    np.testing.assert_allclose(steps, batch, rtol=0, atol=1e-4 * np.abs(batch).max())


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "amx", "neon"])
def test_every_kernel_set_gives_the_same_model(tiny_checkpoint, tiny_gguf, isa):
    if isa not in engine.available_isas():
        pytest.skip(f"{isa} not available on this CPU")
    previous = engine.isa()
    engine.set_isa(isa)
    try:
        with Model(tiny_gguf, n_threads=2) as m:
            ids = prompt_ids(m.n_vocab, 16, seed=11)
            assert_logits_close(m.logits(ids), reference_logits(tiny_checkpoint, ids))
    finally:
        engine.set_isa(previous)


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16"])
def test_float_outtypes_run_the_same_math(tiny_checkpoint, tiny_model, outtype, tmp_path):
    gguf = convert_checkpoint(tiny_checkpoint, outtype, tmp_path / f"m-{outtype}.gguf")
    with Model(gguf, n_threads=2) as m:
        ids = prompt_ids(m.n_vocab, 16, seed=13)
        assert_logits_close(m.logits(ids), reference_logits(tiny_checkpoint, ids))


# Row lengths that are not whole I2_S blocks: 1bitLLM-3B's FFN of 8640 (67.5 blocks, so every
# second ffn_down row starts inside a block) and a hidden size of 320 (5 heads of 64).
def test_rows_of_any_length_match_transformers(tmp_path):
    from bitnet.convert.gguf_reader import read_gguf
    from bitnet.convert.i2s import unpack_i2s
    from tests.hf_models import load_reference, reference_linear_weights

    ckpt = make_bitnet_checkpoint(tmp_path / "odd", layout="packed", hidden_size=320, intermediate_size=8640,
                                  num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5, seed=5)
    gguf = convert_checkpoint(ckpt)
    # The file holds bitnet.cpp's layout: the flattened tensor in 128-element blocks.
    down = read_gguf(gguf).tensors["blk.1.ffn_down.weight"]
    codes, scale = unpack_i2s(bytes(down.data), 320, 8640)
    want = reference_linear_weights(load_reference(ckpt))["model.layers.1.mlp.down_proj"]
    assert np.array_equal(codes, np.sign(want).astype(np.int8)) and scale > 0
    with Model(gguf, n_threads=2) as m:
        ids = prompt_ids(m.n_vocab, 24)
        assert_logits_close(m.logits(ids), reference_logits(ckpt, ids))
