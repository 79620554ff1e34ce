"""Device-side sampling (bitnet.gpu.sampling) keeps the engine sampler's candidates: checked
against the rules written out in numpy, and against the engine's own draws (which must all fall
in the kept set); the device draws follow softmax(logit / T) over that set."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the GPU backend needs torch")

from bitnet.engine import NativeSampler  # noqa: E402
from bitnet.gpu.sampling import keep_mask, sample  # noqa: E402

SETTINGS = [(40, 0.95, 0.05), (0, 1.0, 0.0), (5, 1.0, 0.0), (0, 0.5, 0.0), (0, 1.0, 0.3), (3, 0.9, 0.1),
            (1, 0.95, 0.05), (0, 0.999, 0.0)]


def reference_keep(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> set[int]:
    order = sorted((i for i in range(len(logits)) if np.isfinite(logits[i])), key=lambda i: (-logits[i], i))
    if top_k > 0:
        order = order[:top_k]
    if top_p < 1.0 and len(order) > 1:
        w = [math.exp(logits[i] - logits[order[0]]) for i in order]
        target, cum, cut = top_p * sum(w), 0.0, 0
        while cut < len(order):
            cum += w[cut]
            cut += 1
            if cum >= target:
                break
        order = order[:cut]
    if min_p > 0.0 and len(order) > 1:
        floor = np.float32(logits[order[0]]) + np.float32(math.log(min_p))
        order = [i for i in order if logits[i] >= floor] or order[:1]
    return set(order)


def _logits(seed: int, vocab: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(vocab) * 2).astype(np.float32)
    x[rng.integers(0, vocab, 20)] = x[0]  # ties
    x[5], x[6] = -np.inf, np.nan
    return x


@pytest.mark.parametrize("top_k,top_p,min_p", SETTINGS)
def test_kept_set_is_the_engines(top_k, top_p, min_p):
    for seed in range(4):
        x = _logits(seed)
        mask = keep_mask(torch.from_numpy(x)[None], top_k, top_p, min_p)[0].numpy()
        assert set(np.flatnonzero(mask)) == reference_keep(x, top_k, top_p, min_p)
        native = {NativeSampler(temperature=1.5, top_k=top_k, top_p=top_p, min_p=min_p, seed=s).sample(x)
                  for s in range(200)}
        assert native <= set(np.flatnonzero(mask))


def test_draws_follow_the_tempered_softmax():
    x = _logits(7, vocab=50)
    gen = torch.Generator().manual_seed(0)
    rows = torch.from_numpy(x)[None].repeat(20000, 1)
    got = np.bincount(sample(rows, temperature=0.7, top_k=0, top_p=0.9, min_p=0.0, generator=gen).numpy(),
                      minlength=50) / 20000
    keep = np.array(sorted(reference_keep(x, 0, 0.9, 0.0)))
    p = np.zeros(50)
    p[keep] = np.exp((x[keep] - x[keep].max()) / 0.7)
    p /= p.sum()
    assert np.abs(got - p).max() < 0.015
    assert got[p == 0].sum() == 0


def test_greedy_and_special_rows():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [float("nan"), float("-inf"), float("nan"), float("-inf")],
                      [0.0, float("inf"), 1.0, float("inf")]])
    assert sample(x, temperature=0).tolist() == [1, -1, 1]
    assert sample(x[0], temperature=0).item() == 1
    for _ in range(20):
        assert sample(x, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)[[0, 2]].tolist()[1] in (1, 3)
    assert sample(x, temperature=1.0)[1].item() == -1
