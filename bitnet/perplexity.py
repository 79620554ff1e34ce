"""Perplexity and KL divergence on a text, measured as llama.cpp's llama-perplexity does.

Chunks: the text is tokenized once (with BOS), cut into floor(n / n_ctx) windows of n_ctx
tokens, and each window's first token is replaced by BOS. Each window is evaluated in a fresh
context, and only its second half is scored: the logits at positions n_ctx/2 .. n_ctx-2
against the next token, so that every scored token has at least n_ctx/2 tokens of context.

    NLL_i = logsumexp(z_i) - z_i[next token]       (float64)
    PPL   = exp(mean NLL)

KL mode (llama-perplexity's --kl-divergence-base): a first run saves the windows and the scored
logits of a reference (this engine on another file, or transformers) to a file; a second run
reads it, evaluates the same windows and reports, per scored token,
KL(reference || ours) = sum p_ref (log p_ref - log p_ours), and how often both pick the same top
token. The file is an uncompressed .npz: `windows` int32 [chunks, n_ctx], `logits` float32
[chunks, scored, n_vocab] (4 bytes per vocab entry per scored token: keep the text short).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KL_BASE_FORMAT = "bitnet-kl-base-v1"


def scored_rows(n_ctx: int) -> slice:
    """The logit rows of a window that are scored (each against the token after it)."""
    return slice(n_ctx // 2, n_ctx - 1)


def make_windows(ids: list[int], n_ctx: int, bos_id: int | None, max_chunks: int | None = None) -> np.ndarray:
    """int32 [chunks, n_ctx]: consecutive windows of ids, each starting with BOS (when the model has one)."""
    if n_ctx < 4:
        raise ValueError(f"the context must be at least 4 tokens, got {n_ctx}")
    n_chunk = len(ids) // n_ctx
    if max_chunks is not None:
        n_chunk = min(n_chunk, max_chunks)
    if n_chunk < 1:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {n_ctx}: use a longer "
                         "text or a smaller context (-c)")  # fmt: skip
    windows = np.asarray(ids[: n_chunk * n_ctx], dtype=np.int32).reshape(n_chunk, n_ctx).copy()
    if bos_id is not None:
        windows[:, 0] = bos_id
    return windows


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def window_nll(logits: np.ndarray, window: np.ndarray) -> np.ndarray:
    """float64 NLL of the scored tokens of one window, from its logits [n_ctx, n_vocab]."""
    rows = scored_rows(len(window))
    logp = log_softmax(logits[rows])
    return -logp[np.arange(logp.shape[0]), window[rows.start + 1 :]]


@dataclass
class Report:
    nll: list[np.ndarray] = field(default_factory=list)  # per window
    kld: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)
    base_nll: list[np.ndarray] = field(default_factory=list)

    @staticmethod
    def _mean_err(parts: list[np.ndarray]) -> tuple[float, float]:
        x = np.concatenate(parts)
        return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0

    def perplexity(self) -> tuple[float, float]:
        """PPL and its standard error (from the NLL's, as llama-perplexity reports it)."""
        mean, err = self._mean_err(self.nll)
        return math.exp(mean), math.exp(mean) * err

    def lines(self) -> list[str]:
        ppl, err = self.perplexity()
        n = sum(len(x) for x in self.nll)
        out = [f"Final estimate: PPL = {ppl:.4f} +/- {err:.4f} ({len(self.nll)} chunks, {n} scored tokens)"]
        if self.kld:
            base_ppl = math.exp(np.concatenate(self.base_nll).mean())
            kld = np.concatenate(self.kld)
            mean, kerr = self._mean_err(self.kld)
            top, terr = self._mean_err([s.astype(np.float64) for s in self.same_top])
            out += [f"Reference PPL = {base_ppl:.4f}; ln(PPL ratio) = {math.log(ppl / base_ppl):.6f}",
                    f"Mean KLD: {mean:.6f} +/- {kerr:.6f}; median {np.median(kld):.6f}, "
                    f"99.0% {np.quantile(kld, 0.99):.6f}, max {kld.max():.6f}",
                    f"Same top p: {100 * top:.3f} +/- {100 * terr:.3f} %"]  # fmt: skip
        return out


def evaluate(logits_of, windows: np.ndarray, base_logits=None, progress=None) -> Report:
    """Score every window; logits_of(window) -> float32 [n_ctx, n_vocab]. base_logits (from
    load_kl_base) adds the KL divergence and top-1 agreement against them."""
    report = Report()
    rows = scored_rows(windows.shape[1])
    for i, window in enumerate(windows):
        logits = logits_of(window)
        report.nll.append(window_nll(logits, window))
        if base_logits is not None:
            base = log_softmax(base_logits[i])
            ours = log_softmax(logits[rows])
            if base.shape != ours.shape:
                raise ValueError(f"the reference has {base.shape[1]} logits per token, this model {ours.shape[1]}")
            report.kld.append((np.exp(base) * (base - ours)).sum(axis=-1))
            report.same_top.append(base.argmax(axis=-1) == ours.argmax(axis=-1))
            targets = window[rows.start + 1 :]
            report.base_nll.append(-base[np.arange(len(targets)), targets])
        if progress is not None:
            progress(i, report)
    return report


def save_kl_base(path, windows: np.ndarray, logits_of) -> None:
    """Evaluate windows with logits_of and store them with their scored logits (see module doc)."""
    rows = scored_rows(windows.shape[1])
    logits = np.stack([np.asarray(logits_of(w), dtype=np.float32)[rows] for w in windows])
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to the name
        np.savez(f, format=np.array(KL_BASE_FORMAT), windows=windows.astype(np.int32), logits=logits)


def load_kl_base(path) -> tuple[np.ndarray, np.ndarray]:
    """(windows, scored logits) of a file written by save_kl_base; ValueError if it is not one."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if "format" not in data or str(data["format"]) != KL_BASE_FORMAT:
                raise ValueError(f"{path} is not a KL base file written by utils/perplexity.py")
            windows, logits = data["windows"], data["logits"]
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read a KL base file ({exc})") from None
    n_ctx = windows.shape[1] if windows.ndim == 2 else 0
    if logits.ndim != 3 or logits.shape[:2] != (len(windows), len(range(n_ctx)[scored_rows(n_ctx)])):
        raise ValueError(f"{path}: logits {logits.shape} do not match windows {windows.shape}")
    return windows, logits


class TransformersScorer:
    """The reference: a Hugging Face checkpoint run by transformers in float32 (needs torch)."""

    def __init__(self, model_dir):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager", device_map="cpu")  # fmt: skip
        torch.nn.Module.float(self.model)  # with a quantizer transformers keeps the file's float dtypes
        self.model.eval()
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.bos_id = self.model.config.bos_token_id

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids  # the post-processor adds BOS, as our tokenizer does

    def logits(self, window) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            ids = torch.tensor(np.asarray(window, dtype=np.int64)[None])
            return self.model(ids).logits[0].float().numpy()
