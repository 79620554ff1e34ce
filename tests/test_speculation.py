"""Prompt-lookup speculative decoding: drafts verified in one batch must leave greedy output
exactly as plain decoding gives it, keep the KV cache equal to the tokens it claims to hold,
and actually run (batches of more than one token) on text that repeats."""

import numpy as np
import pytest

from bitnet.engine import NativeContext
from bitnet.speculation import LOOKUP_MIN_MODEL_BYTES, NgramIndex, use_lookup

REPEATING = [
    "one two three four one two three four one two three four one two",
    "def f(x):\n    return x + 1\n\ndef g(x):\n    return x + 1\n\ndef h(x):\n",
    "The cat sat. The cat sat. The cat sat. The cat",
]
PLAIN = ["A quiet morning by the river, birds and wind.", "7 9 13 21 34 55"]


def test_ngram_index_drafts_what_followed_the_suffix():
    idx = NgramIndex([1, 2, 3, 4, 5, 9, 1, 2, 3])
    assert idx.draft(2) == [4, 5]  # "1 2 3" was followed by 4 5
    idx.append(7)
    assert idx.draft(4) == []  # "2 3 7" and "3 7" never occurred before
    idx = NgramIndex([5, 6, 8, 5, 6])
    assert idx.draft(8) == [8, 5, 6]  # the 2-gram "5 6" when no 3-gram matches


@pytest.mark.parametrize("which", ["tiny", "demo"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_batch_rows_equal_single_decode_steps_bit_for_bit(tiny_gguf, which, n_threads):
    """What makes lookup decoding lossless: row j of a batch's logits is, to the bit, what decoding
    the tokens one at a time gives. The demo model's heads of 64 take the attention tiles
    (attend_rows with AVX-512); the tiny model's heads of 32 take the one-query path."""
    from bitnet.engine import NativeModel
    from bitnet.model import default_model_path

    model = NativeModel(tiny_gguf if which == "tiny" else default_model_path())
    tokens = [(37 * i + 11) % model.n_vocab for i in range(40)]
    batched, stepped = NativeContext(model, 64, n_threads), NativeContext(model, 64, n_threads)
    for ctx in (batched, stepped):
        ctx.decode(tokens[:7], want_logits=False)
    rows = batched.decode(tokens[7:], all_logits=True)  # 33 rows: blocks of 16 and a rest
    steps = np.stack([stepped.decode([t]) for t in tokens[7:]])
    assert np.array_equal(rows, steps)


def test_lookup_is_on_by_default_only_for_models_read_from_memory(tiny_model, batch_sizes):
    assert use_lookup(None, LOOKUP_MIN_MODEL_BYTES) and not use_lookup(None, LOOKUP_MIN_MODEL_BYTES - 1)
    assert use_lookup(True, 1) and not use_lookup(False, 1 << 40)
    list(tiny_model.generate_tokens(" ".join(["p q r"] * 10), max_tokens=24, temperature=0))
    assert max(batch_sizes[1:]) == 1  # the tiny test model is far below the threshold


@pytest.fixture
def batch_sizes(monkeypatch):
    sizes = []
    real = NativeContext.decode

    def counting(self, tokens, *args, **kwargs):
        sizes.append(len(tokens))
        return real(self, tokens, *args, **kwargs)

    monkeypatch.setattr(NativeContext, "decode", counting)
    return sizes


@pytest.mark.parametrize("prompt", REPEATING + PLAIN)
def test_greedy_output_is_identical_with_and_without_lookup(tiny_gguf, prompt, batch_sizes):
    from bitnet import Model

    with Model(tiny_gguf, n_threads=2, n_ctx=256) as plain, Model(tiny_gguf, n_threads=2, n_ctx=256) as fast:
        want = list(plain.generate_tokens(prompt, max_tokens=48, temperature=0, lookup_decoding=False))
        batch_sizes.clear()
        got = list(fast.generate_tokens(prompt, max_tokens=48, temperature=0, lookup_decoding=True))
        assert got == want
        # The cache still holds exactly the tokens it claims: a follow-up that reuses it
        # continues as a fresh model would.
        follow = prompt + fast.detokenize(got)
        assert list(fast.generate_tokens(follow, max_tokens=8, temperature=0, lookup_decoding=True)) == list(
            plain.generate_tokens(follow, max_tokens=8, temperature=0, lookup_decoding=False))


def test_lookup_runs_batches_on_repeating_text(tiny_gguf, batch_sizes):
    from bitnet import Model

    with Model(tiny_gguf, n_threads=2, n_ctx=512) as m:
        prompt = " ".join(["alpha beta gamma delta"] * 12)
        n = len(list(m.generate_tokens(prompt, max_tokens=64, temperature=0, lookup_decoding=True)))
    generation_batches = batch_sizes[1:]  # after the prompt
    assert max(generation_batches) > 1
    assert len(generation_batches) < n  # fewer passes than tokens


def test_sampling_with_temperature_never_drafts(tiny_gguf, batch_sizes):
    from bitnet import Model

    with Model(tiny_gguf, n_threads=2, n_ctx=256) as m:
        list(m.generate_tokens(REPEATING[0], max_tokens=24, temperature=0.7, seed=3, lookup_decoding=True))
    assert max(batch_sizes[1:]) == 1


def test_lookup_respects_max_tokens_and_the_context(tiny_gguf):
    from bitnet import Model

    prompt = " ".join(["x y z"] * 20)
    with Model(tiny_gguf, n_threads=2, n_ctx=96) as m:
        for max_tokens in (1, 2, 5, 17):
            got = list(m.generate_tokens(prompt, max_tokens=max_tokens, temperature=0, lookup_decoding=True))
            want = list(m.generate_tokens(prompt, max_tokens=max_tokens, temperature=0, lookup_decoding=False))
            assert got == want and len(got) <= max_tokens
        n_prompt = len(m.tokenize(prompt))
        got = list(m.generate_tokens(prompt, max_tokens=None, temperature=0, lookup_decoding=True))
        want = list(m.generate_tokens(prompt, max_tokens=None, temperature=0, lookup_decoding=False))
        assert got == want
        assert n_prompt + len(got) == 96 + 1  # the last token is sampled from position 96's logits
