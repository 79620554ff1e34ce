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


def n_scored(n_ctx: int) -> int:
    return n_ctx - 1 - n_ctx // 2


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


def save_kl_base(path, windows: np.ndarray, scored_logits: np.ndarray) -> None:
    """Store windows with their scored logits [chunks, scored, n_vocab] (see the module doc)."""
    logits = np.asarray(scored_logits, dtype=np.float32)
    if logits.ndim != 3 or logits.shape[:2] != (len(windows), n_scored(windows.shape[1])):
        raise ValueError(f"scored logits {logits.shape} do not match windows {windows.shape}")
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
    if windows.ndim != 2 or logits.ndim != 3 or logits.shape[:2] != (len(windows), n_scored(windows.shape[1])):
        raise ValueError(f"{path}: logits {logits.shape} do not match windows {windows.shape}")
    return windows, logits


class TransformersScorer:
    """The reference: a Hugging Face checkpoint run by transformers in float32 (needs torch)."""

    def __init__(self, model_dir):
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoConfig, AutoModelForCausalLM

        self._torch = torch
        config = AutoConfig.from_pretrained(model_dir)
        if getattr(config, "quantization_config", None) is None:
            # Float masters: without this transformers would run them unquantized, not as BitNet.
            config.quantization_config = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                          "quantization_mode": "online"}  # fmt: skip
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32,
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


# ---- utils/perplexity.py --------------------------------------------------------------------

EPILOG = """\
examples:
  python utils/perplexity.py -f models/bitnet-b1.58-austen-5M/heldout.txt            # the demo model
  python utils/perplexity.py -m model.gguf -f text.txt -c 512 -t 2
  python utils/perplexity.py --hf-reference models/bitnet-b1.58-austen-5M -f text.txt  # transformers
  python utils/perplexity.py -m ref.gguf -f text.txt --kl-base base.npz              # save the reference
  python utils/perplexity.py -m test.gguf --kl-base base.npz --kl-divergence         # compare to it

exit status: 0 ok, 1 failure (missing file, text too short, ...), 2 bad flags, 130 Ctrl+C."""


def build_parser():
    from bitnet.cli.common import ArgumentParser, add_flag, default_threads, int_at_least

    p = ArgumentParser(prog="perplexity.py", epilog=EPILOG,
                       description="Perplexity of a model on a text, and the KL divergence and top-1 agreement "
                                   "against saved reference logits, chunked as llama.cpp's llama-perplexity.")
    add_flag(p, "model", metavar="GGUF", default=None, help="the model (default: the demo model in models/)")
    p.add_argument("--hf-reference", metavar="DIR", default=None,
                   help="score with transformers on this Hugging Face checkpoint instead (needs torch)")
    add_flag(p, "file", metavar="TEXT", default=None, help="the text (UTF-8); not needed with --kl-divergence")
    add_flag(p, "ctx_size", metavar="N", type=int_at_least(4), default=512, help="window length (default: 512)")
    add_flag(p, "threads", metavar="N", type=int_at_least(1), default=default_threads(),
             help="threads (default: %(default)s)")
    p.add_argument("--chunks", metavar="N", type=int_at_least(1), default=None, help="score at most N windows")
    p.add_argument("--kl-base", "--kl-divergence-base", metavar="FILE", dest="kl_base", default=None,
                   help="reference logits: written by this run, or read with --kl-divergence")
    p.add_argument("--kl-divergence", action="store_true", help="compare against --kl-base instead of writing it")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return p


def _scorer(args):
    """(tokenize, bos id, logits_of, close) for the engine or the transformers reference."""
    if args.hf_reference:
        ref = TransformersScorer(args.hf_reference)
        return ref.tokenize, ref.bos_id, ref.logits, lambda: None
    from bitnet.model import Model

    model = Model(args.model, n_threads=args.threads, n_ctx=args.ctx_size)
    bos = model.tokenizer.bos_id if model.tokenizer.add_bos_token else None
    return model.tokenize, bos, lambda w: model.logits(w.tolist()), model.close


def run(argv: list[str] | None = None) -> int:
    import json
    import sys

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kl_divergence and not args.kl_base:
        parser.error("--kl-divergence needs --kl-base FILE (the saved reference)")
    if not args.kl_divergence and not args.file:
        parser.error("give the text with -f")
    if args.hf_reference and args.model:
        parser.error("give -m (our engine) or --hf-reference (transformers), not both")
    if args.kl_divergence and args.file:
        parser.error("with --kl-divergence the windows come from --kl-base: drop -f")
    base = load_kl_base(args.kl_base) if args.kl_divergence else None
    text = Path(args.file).read_text(encoding="utf-8") if args.file else None
    tokenize, bos, logits_of, close = _scorer(args)
    try:
        if base is not None:
            windows, base_logits = base[0][: args.chunks], base[1]
        else:
            windows, base_logits = make_windows(tokenize(text), args.ctx_size, bos, args.chunks), None

        def show(i: int, report: Report) -> None:
            print(f"[{i + 1}]{report.perplexity()[0]:.4f}", end="," if i + 1 < len(windows) else "\n",
                  file=sys.stderr, flush=True)  # fmt: skip

        saved, rows = [], scored_rows(windows.shape[1])

        def recorded(window: np.ndarray) -> np.ndarray:
            logits = logits_of(window)
            saved.append(logits[rows])
            return logits

        saving = args.kl_base and not args.kl_divergence
        report = evaluate(recorded if saving else logits_of, windows, base_logits, progress=show)
        if saving:
            save_kl_base(args.kl_base, windows, np.stack(saved))
    finally:
        close()
    ppl, err = report.perplexity()
    if args.json:
        out = {"perplexity": ppl, "perplexity_err": err, "n_chunks": len(windows), "n_ctx": windows.shape[1],
               "n_scored": int(sum(len(x) for x in report.nll))}  # fmt: skip
        if report.kld:
            out.update(mean_kld=float(np.concatenate(report.kld).mean()),
                       same_top=float(np.concatenate(report.same_top).mean()),
                       reference_perplexity=math.exp(np.concatenate(report.base_nll).mean()))  # fmt: skip
        print(json.dumps(out))
    else:
        print("\n".join(report.lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from bitnet.cli.common import run_main

    return run_main(lambda: run(argv))
