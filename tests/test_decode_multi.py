"""Several sequences decoded in one batched pass (bitnet_decode_multi) give, row for row and bit
for bit, the logits each sequence gets when decoded alone: per-row activation scales, exact
integer products and the same dense-kernel order per row make batching invisible."""

import numpy as np
import pytest

from bitnet import BitnetError
from bitnet.engine import NativeContext, decode_multi

PROMPTS = ([5, 9, 13], [7], [21, 4, 4, 8, 30, 2], [11, 12])


def _alone(native, prompt, steps):
    ctx = NativeContext(native, 64, 1)
    rows = [ctx.decode(prompt)]
    for t in steps:
        rows.append(ctx.decode([t]))
    return np.stack(rows)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_multi_decode_equals_each_sequence_alone(tiny_model, n_threads):
    native = tiny_model.native
    steps = [[3 + i, 17 + i, 40 + i] for i in range(len(PROMPTS))]  # step j: one token per sequence
    ctxs = [NativeContext(native, 32 + 16 * i, n_threads) for i in range(len(PROMPTS))]
    together = [[c.decode(p)] for c, p in zip(ctxs, PROMPTS)]
    for j in range(3):
        out = decode_multi(ctxs, [s[j] for s in steps])
        for i, row in enumerate(out):
            together[i].append(row)
    for i, prompt in enumerate(PROMPTS):
        np.testing.assert_array_equal(np.stack(together[i]), _alone(native, prompt, steps[i]))
        assert ctxs[i].n_past == len(prompt) + 3


def test_multi_decode_refuses_bad_batches(tiny_model, tiny_gguf):
    from bitnet.engine import NativeModel

    native = tiny_model.native
    a, b = NativeContext(native, 8, 1), NativeContext(native, 8, 1)
    with pytest.raises(BitnetError, match="repeats sequence 0"):
        decode_multi([a, a], [1, 2])
    with pytest.raises(BitnetError, match="out of range"):
        decode_multi([a, b], [1, native.n_vocab])
    other = NativeContext(NativeModel(tiny_gguf), 8, 1)
    with pytest.raises(BitnetError, match="another model"):
        decode_multi([a, other], [1, 2])
    b.decode(list(range(8)))
    with pytest.raises(BitnetError, match="context is full"):
        decode_multi([a, b], [1, 2])
    with pytest.raises(BitnetError, match="one token id per context"):
        decode_multi([a, b], [1])
    assert a.n_past == 0  # a refused batch changes nothing
