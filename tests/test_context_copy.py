"""bitnet_context_copy_prefix: a context that copies another's cached prompt continues exactly as
the original does (the n choices of a server request share one prompt evaluation this way)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.engine import NativeContext
from bitnet.errors import BitnetError


def test_copied_prefix_continues_bit_for_bit(tiny_model):
    native = tiny_model.native
    ids = tiny_model.tokenize("The quick brown fox jumps over the lazy dog")
    source = NativeContext(native, 64, 1)
    whole = source.decode(ids + [5, 6], all_logits=True)
    for n in (len(ids), 3):  # the whole prompt, and a shorter prefix of it
        copy = NativeContext(native, 48, 1)  # a different n_ctx: the cache rows are laid out per context
        copy.decode([7, 8, 9, 10, 11])  # something to be replaced
        copy.copy_prefix_from(source, n)
        assert copy.n_past == n
        rest = (ids + [5, 6])[n:]
        np.testing.assert_array_equal(copy.decode(rest, all_logits=True), whole[n:])
        copy.close()
    with pytest.raises(BitnetError, match="cannot copy"):
        NativeContext(native, 64, 1).copy_prefix_from(source, len(ids) + 3)
    source.close()
