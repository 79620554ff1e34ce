"""A prompt's logits at every position from a fresh engine context, the prompt fed in pieces
(`splits`: where each piece ends), so that tests can compare batch splits, thread counts and
kernel sets bit for bit."""

import numpy as np

from bitnet import engine


def prompt_logits(model: engine.NativeModel, ids: np.ndarray, n_threads: int, splits=(),
                  head_act: str | None = None) -> np.ndarray:
    ctx = engine.NativeContext(model, len(ids), n_threads)
    try:
        if head_act is not None:
            ctx.set_head_act(head_act)
        parts, start = [], 0
        for end in [*splits, len(ids)]:
            parts.append(ctx.decode(ids[start:end], all_logits=True))
            start = end
        return np.concatenate(parts)
    finally:
        ctx.close()
