"""bitnet.convert.scale_up (utils/scale-up-bitnet-model.py): the demo model, zero padded to a bigger
shape, computes the demo model's function. Small target shapes keep this fast; the 2B-4T file
itself (1.18 GB) is a manual check:
    python utils/scale-up-bitnet-model.py models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf /tmp/austen-2b4t.gguf

Two shapes: EXACT, where every size ratio is a power of 4 and head_dim is unchanged, so every
float of the forward pass is the source's bit for bit; LIKE_2B4T, with all of 2B-4T's
differences at a small size, where norms over 6x the dims, RoPE pairs spread over a wider head
and so on round differently in the last f32 bit, and that now and then moves an activation across
an int8 rounding boundary: each position agrees to f32 rounding until such a move, which then
shifts later logits by up to ~1% of their range (DESIGN section 3's end-to-end bound).
"""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from bitnet import Model
from bitnet.convert import dummy
from bitnet.convert.dummy import ModelShape
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.scale_up import PAD_TOKEN, TOKEN_TYPE_UNUSED, main, place, scale_up, source_hparams
from bitnet.engine import NativeContext
from tests.conftest import REPO

DEMO = REPO / "models" / "bitnet-b1.58-austen-5M" / "ggml-model-i2_s.gguf"
N_DEMO_VOCAB = 4096
PROMPTS = ("It is a truth universally acknowledged", "Mr. Darcy", "She was")
_SHAPE = dict(n_layer=8, n_ctx=1024, hidden_act="relu2", rope_theta=500000.0)
# The source (256 hidden, 4/2 heads of 64, FFN 640, 6 layers, 4096 tokens) into: hidden x6 plus the
# two constant dims, head_dim x2 (RoPE pairs remapped), groups of 4 query heads (copies), an unused kv
# head, FFN x1.6, 2 all-zero layers, 256 padding tokens.
LIKE_2B4T = ModelShape(n_embd=1536, n_ff=1024, n_head=12, n_head_kv=3, n_vocab=4352, **_SHAPE)
# Hidden and FFN x4, groups of 8 (4 copies of each query head), head_dim 64, no padding tokens.
EXACT = ModelShape(n_embd=1024, n_ff=2560, n_head=16, n_head_kv=2, n_vocab=N_DEMO_VOCAB, **_SHAPE)


@pytest.fixture(scope="module")
def demo():
    with Model(DEMO, n_threads=1, n_ctx=512) as m:
        yield m


@pytest.fixture(scope="module")
def heldout_ids(demo):
    return demo.tokenize((DEMO.parent / "heldout.txt").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def like_2b4t_path(tmp_path_factory):
    return scale_up(DEMO, tmp_path_factory.mktemp("scale-up") / "like-2b4t.gguf", LIKE_2B4T, progress=False)


@pytest.fixture(scope="module")
def like_2b4t(like_2b4t_path):
    with Model(like_2b4t_path, n_threads=1, n_ctx=512) as m:
        yield m


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    path = scale_up(DEMO, tmp_path_factory.mktemp("scale-up") / "exact.gguf", EXACT, progress=False)
    with Model(path, n_threads=1, n_ctx=512) as m:
        yield m


def windows(ids, n_windows, length):
    """n_windows pieces of the text, each BOS + length - 1 tokens."""
    return [[ids[0], *ids[1 + i * length : (i + 1) * length]] for i in range(n_windows)]


def test_exact_shape_is_the_source_bit_for_bit(demo, exact, heldout_ids):
    ids = heldout_ids[:256]
    want, got = demo.logits(ids), exact.logits(ids)
    # observed: 0.0 (the f16 head may sum the extra zeros in another order: allow f32 rounding)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    for prompt in PROMPTS:
        assert list(exact.generate_tokens(prompt, max_tokens=48, temperature=0)) == list(
            demo.generate_tokens(prompt, max_tokens=48, temperature=0)
        )


def test_2b4t_like_logits_equal_the_sources(demo, like_2b4t, heldout_ids):
    diffs, scale = [], 0.0
    for ids in windows(heldout_ids, 8, 24):
        want, got = demo.logits(ids), like_2b4t.logits(ids)
        real, pad = got[:, :N_DEMO_VOCAB], got[:, N_DEMO_VOCAB:]
        assert (pad.max(axis=1) < real.min(axis=1) - 1000).all()  # observed: 7800 or more below
        diffs.append(np.abs(real - want).max(axis=1))
        scale = max(scale, np.abs(want).max())
    d = np.concatenate(diffs) / scale
    # observed: median 1.8e-7 (f32 rounding; most positions see no moved int8 code), max 5e-3
    assert np.median(d) <= 1e-5
    assert d.max() <= 1e-2


def greedy_parts_only_at_near_tie(demo, model, prompt):
    """True if greedy tokens are identical; if not, the source's top two at the first difference
    must be within 2% of max|logit| (DESIGN section 3's near-tie rule)."""
    want = list(demo.generate_tokens(prompt, max_tokens=48, temperature=0))
    got = list(model.generate_tokens(prompt, max_tokens=48, temperature=0))
    if got == want:
        return True
    k = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b)
    logits = demo.logits(demo.tokenize(prompt) + want[:k])
    top2 = np.sort(logits[-1])[-2:]
    assert top2[1] - top2[0] <= 0.02 * np.abs(logits).max(), f"{prompt!r}: parts at token {k} without a near tie"
    return False


def test_2b4t_like_greedy_text_is_the_sources(demo, like_2b4t):
    # Float rounding differs between the shapes (norms over other widths, attention sums in other
    # orders), so a text may part from the source's, but only where the source's top two tokens
    # nearly tie (asserted inside); most texts must not part at all.
    identical = [greedy_parts_only_at_near_tie(demo, like_2b4t, p) for p in PROMPTS]
    assert sum(identical) >= len(PROMPTS) - 1, identical


def test_2b4t_like_layer_zero_matches_to_f32_rounding(demo, like_2b4t, heldout_ids, tmp_path):
    """Every named tensor of layer 0, read at the big model's mapped dims and divided by its known
    factor (q: sqrt(head_dim ratio), v and attention: kappa, up and ffn_act: kappa)."""
    ids = heldout_ids[:8]
    for name, model in (("src", demo), ("big", like_2b4t)):
        ctx = NativeContext(model.native, 16, 1)
        (tmp_path / name).mkdir()
        ctx.set_dump_dir(tmp_path / name)
        ctx.decode(ids, all_logits=True)
        ctx.close()
    p = place(source_hparams(read_gguf(DEMO)), LIKE_2B4T, "x", "f16")
    f = p.scale_factors()
    q_cols, kv_cols, embd, ff = p.maps["q_first"][:, 1], p.maps["kv"][:, 1], np.arange(256), np.arange(640)
    checks = {"attn_norm": (embd, 1), "q": (q_cols, f["attn_q"]), "k": (kv_cols, 1), "v": (kv_cols, f["attn_v"]),
              "attn": (q_cols, f["attn_v"]), "attn_sub_norm": (q_cols, 1), "attn_out": (embd, 1),
              "ffn_norm": (embd, 1), "gate": (ff, 1), "up": (ff, f["ffn_up"]), "ffn_act": (ff, f["ffn_up"]),
              "ffn_sub_norm": (ff, 1), "ffn_out": (embd, 1)}  # fmt: skip
    copies = p.maps["q"][:, 1].reshape(-1, len(q_cols))  # every copy of the query heads, first copy first
    for name, (cols, factor) in checks.items():
        want = np.load(tmp_path / "src" / f"00-{name}.npy")
        got = np.load(tmp_path / "big" / f"00-{name}.npy")
        assert np.abs(got[:, cols] / factor - want).max() <= 1e-5 * np.abs(want).max(), name  # observed 3e-7
        placed = copies.ravel() if cols is q_cols else cols
        if name in ("q", "attn", "attn_sub_norm"):
            assert all(np.array_equal(got[:, c], got[:, q_cols]) for c in copies), name  # copies are exact
        assert not np.delete(got, placed, axis=1).any(), name  # other dims (the constant ones too) are exactly 0


def test_2b4t_like_tokenizer_and_metadata(demo, like_2b4t, like_2b4t_path):
    text = "“Tis so, Mr. Bennet!” <|eot_id|> naïve 1813 <|scaleup_pad_0|>\n\n  <|begin_of_text|>"
    assert like_2b4t.tokenize(text) == demo.tokenize(text)
    assert like_2b4t.tokenize(text, special=False) == demo.tokenize(text, special=False)
    assert like_2b4t.n_vocab == len(like_2b4t.tokenizer) == LIKE_2B4T.n_vocab
    assert "ARM layout" not in like_2b4t.native.desc  # the I2_S layout guess keeps the canonical reading
    f, src = read_gguf(like_2b4t_path), read_gguf(DEMO)
    kv = f.kv
    assert "scaled up to custom shape" in kv["general.name"]
    assert kv["bitnet-b1.58.embedding_length"] == 1536 and kv["bitnet-b1.58.block_count"] == 8
    assert kv["bitnet-b1.58.attention.head_count_kv"] == 3 and kv["bitnet-b1.58.rope.dimension_count"] == 128
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert tokens[:N_DEMO_VOCAB] == src.kv["tokenizer.ggml.tokens"] and tokens[-1] == PAD_TOKEN.format(255)
    assert set(types[N_DEMO_VOCAB:]) == {TOKEN_TYPE_UNUSED}
    for key in ("tokenizer.ggml.merges", "tokenizer.chat_template", "tokenizer.ggml.bos_token_id", "general.file_type"):
        assert kv[key] == src.kv[key], key
    # E_b eps_b + 2 c^2 = E_s eps_s: the two constant dims take half of the source's eps
    eps_key = "bitnet-b1.58.attention.layer_norm_rms_epsilon"
    eps_s, eps_b = src.kv[eps_key], kv[eps_key]
    assert eps_b == pytest.approx(eps_s * 256 / 1536 / 2, rel=1e-3)


def test_sampling_never_picks_a_padding_token(like_2b4t):
    ids = list(like_2b4t.generate_tokens(PROMPTS[0], max_tokens=64, temperature=1.5, top_k=0, top_p=1.0,
                                         min_p=0.0, seed=1))  # fmt: skip
    assert len(ids) > 0 and max(ids) < N_DEMO_VOCAB


@pytest.mark.parametrize(
    "shape, message",
    [
        (dummy.MODEL_SIZES["125M"], "heads"),  # groups of 1 query head cannot hold the source's 2
        (replace(EXACT, n_vocab=4000), "vocabulary"),
        (replace(LIKE_2B4T, n_embd=256, n_head=2, n_head_kv=1), "embedding_length"),  # no room for the constants
        (replace(LIKE_2B4T, n_layer=4), "block_count"),
    ],
)
def test_refuses_a_shape_that_cannot_hold_the_source(tmp_path, shape, message):
    with pytest.raises(ValueError, match=message):
        scale_up(DEMO, tmp_path / "out.gguf", shape, progress=False)
    assert not list(tmp_path.iterdir())


def test_command_line(tmp_path, monkeypatch, capsys):
    script = REPO / "utils" / "scale-up-bitnet-model.py"
    out = tmp_path / "out.gguf"
    run = lambda *args: subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True)
    r = run(DEMO, out, "--model-size", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model size") and r.stderr.count("\n") == 1
    r = run(DEMO, out, "--model-size", "125M")
    assert r.returncode == 1 and "head" in r.stderr and r.stderr.count("\n") == 1 and not out.exists()
    monkeypatch.setitem(dummy.MODEL_SIZES, "tiny-test", EXACT)  # a size small enough to write here
    assert main([str(DEMO), str(out), "--model-size", "tiny-test", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out and read_gguf(out).kv["bitnet-b1.58.embedding_length"] == 1024
    assert main([str(DEMO), str(out), "--model-size", "tiny-test"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main([str(DEMO), str(out), "--model-size", "tiny-test", "--force", "--no-progress"]) == 0
