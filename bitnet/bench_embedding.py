"""Embedding throughput for `utils/e2e_benchmark.py --embedding` (bench.py's other mode).

Each timed run embeds --embd-batch texts of --embd-tokens random token ids each in one
Model.embed call (texts share batched passes, as the server's /v1/embeddings does), after one
warm-up call that also creates the contexts: texts/s and tokens/s, mean +- sample std.
"""

from __future__ import annotations

import json
import time

from bitnet.bench import mean_std, peak_rss_mb, random_tokens


def time_embedding(model, n_texts: int, n_tokens: int, repetitions: int) -> list[float]:
    """Seconds per call of model.embed on n_texts random token lists of n_tokens each."""
    texts = [random_tokens(model.n_vocab, n_tokens, seed=i) for i in range(n_texts)]
    model.embed(texts)  # warm-up: contexts, pages, caches
    seconds = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        model.embed(texts)
        seconds.append(time.perf_counter() - t0)
    return seconds


def run_embedding(args) -> int:
    from bitnet import engine
    from bitnet.model import Model

    if args.isa:
        engine.set_isa(args.isa)
    for n_threads in args.threads:
        with Model(args.model, n_threads=n_threads, n_ctx=args.embd_tokens) as m:
            secs = time_embedding(m, args.embd_batch, args.embd_tokens, args.repetitions)
            texts, texts_std = mean_std([args.embd_batch / s for s in secs])
            toks, toks_std = mean_std([args.embd_batch * args.embd_tokens / s for s in secs])
            rec = {"model": args.model, "model_desc": m.native.desc, "isa": engine.isa(), "n_threads": n_threads,
                   "n_texts": args.embd_batch, "tokens_per_text": args.embd_tokens, "repetitions": args.repetitions,
                   "texts_per_s": texts, "texts_per_s_std": texts_std, "tokens_per_s": toks,
                   "tokens_per_s_std": toks_std, "peak_rss_mb": peak_rss_mb()}  # fmt: skip
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            print(f"{rec['model_desc']}\nISA {rec['isa']}, {n_threads} threads, {args.embd_batch} texts x "
                  f"{args.embd_tokens} tokens per call, {args.repetitions} timed calls after one warm-up: "
                  f"{texts:.2f} ± {texts_std:.2f} texts/s, {toks:.1f} ± {toks_std:.1f} tokens/s, "
                  f"peak RSS {rec['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return 0
