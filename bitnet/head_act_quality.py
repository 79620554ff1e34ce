"""What the int8-activation head costs: for each GGUF file (a Q8_0 or Q6_K head), the text's
perplexity with the exact head and with `head_act="int8"`, the KL divergence of the int8 head's
next-token distribution from the exact one's (mean and 99th percentile over every position of
every window), and how often both pick the same top token.

Windows as bitnet.perplexity (llama-perplexity's): the text is tokenized with BOS and cut into
windows of n_ctx tokens, each starting with BOS; perplexity scores each window's second half,
KL and top-1 cover all of its positions. Both heads run the same windows on the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bitnet.perplexity import log_softmax, make_windows, window_nll


def compare(model_path: str, text: str, n_ctx: int, n_threads: int, max_chunks: int | None = None) -> dict:
    """One file's row of the table (see the module doc)."""
    from bitnet import Model

    exact = Model(model_path, n_threads=n_threads, n_ctx=n_ctx)
    int8 = Model(model_path, n_threads=n_threads, n_ctx=n_ctx, head_act="int8")
    bos = exact.tokenizer.bos_id if exact.tokenizer.add_bos_token else None
    windows = make_windows(exact.tokenize(text), n_ctx, bos, max_chunks)
    nll_exact, nll_int8, kl, same = [], [], [], []
    for window in windows:
        ids = window.tolist()
        a, b = exact.logits(ids), int8.logits(ids)
        nll_exact.append(window_nll(a, window))
        nll_int8.append(window_nll(b, window))
        la, lb = log_softmax(a), log_softmax(b)
        kl.append((np.exp(la) * (la - lb)).sum(axis=-1))
        same.append(la.argmax(axis=-1) == lb.argmax(axis=-1))
    kl_all = np.concatenate(kl)
    return {
        "model": model_path,
        "head": exact.native.desc,
        "windows": int(len(windows)),
        "positions": int(kl_all.size),
        "ppl_exact": float(np.exp(np.concatenate(nll_exact).mean())),
        "ppl_int8": float(np.exp(np.concatenate(nll_int8).mean())),
        "kl_mean": float(kl_all.mean()),
        "kl_p99": float(np.percentile(kl_all, 99)),
        "kl_max": float(kl_all.max()),
        "top1_agree": float(np.concatenate(same).mean()),
    }


def head_type(desc: str) -> str:
    for t in ("Q6_K", "Q8_0", "F16", "BF16", "F32"):
        if t in desc:
            return t
    return "?"


def table(rows: list[dict]) -> str:
    lines = ["| head | perplexity, exact head | perplexity, int8 head | mean KL | 99th pct KL | same top token |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} | {r['ppl_exact']:.3f} | {r['ppl_int8']:.3f} | {r['kl_mean']:.2e} "
                     f"| {r['kl_p99']:.2e} | {100 * r['top1_agree']:.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="head_act_quality.py", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="GGUF", help="files with a Q8_0 or Q6_K head")
    p.add_argument("-f", "--file", required=True, help="the evaluation text")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="window length in tokens (default 512)")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--chunks", type=int, default=None, help="at most this many windows")
    p.add_argument("--json", action="store_true", help="one JSON object per file instead of the table")
    args = p.parse_args(argv)
    text = Path(args.file).read_text(encoding="utf-8")
    rows = [compare(m, text, args.ctx_size, args.threads, args.chunks) for m in args.models]
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(f"{rows[0]['windows']} windows of {args.ctx_size} tokens, {rows[0]['positions']} positions")
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
