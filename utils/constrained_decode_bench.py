#!/usr/bin/env python3
"""What structured output costs per token: the same sampling loop (decode, then step) with and
without a JSON-schema grammar, in alternating rounds, on any model (e.g. the 2B-4T shape:
utils/generate-dummy-bitnet-model.py /tmp/2b4t --model-size 2B-4T).

Reports ms per token both ways, and the part of each constrained step spent waiting for the
token mask (computed on a worker thread while the engine decodes the previous token) and
applying it to the logits.

  python utils/constrained_decode_bench.py /tmp/2b4t/dummy-bitnet-2B-4T.i2_s.gguf -t 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bitnet import Model, constraints  # noqa: E402
from bitnet.engine import NativeContext  # noqa: E402
from bitnet.generation import Generation  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "mood": {"enum": ["happy", "sad", "proud"]},
        "friends": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "home": {"type": "object", "properties": {"town": {"type": "string", "maxLength": 30}},
                 "required": ["town"], "additionalProperties": False},
    },
    "required": ["name", "age", "mood", "friends", "home"],
    "additionalProperties": False,
}  # fmt: skip


def run_once(model: Model, ctx: NativeContext, grammar: str | None, n_tokens: int, seed: int) -> dict:
    request = model.prepare_completion("Describe a person as JSON:", max_tokens=n_tokens, temperature=0.8,
                                       seed=seed, grammar=grammar)
    ctx.truncate(0)
    logits = ctx.decode(request.prompt_ids)
    gen = Generation(model.tokenizer, request)
    t_decode = t_step = 0.0
    try:
        while True:
            t0 = time.perf_counter()
            emission = gen.step(logits)
            t_step += time.perf_counter() - t0
            if emission.finish_reason or emission.token is None:
                break
            t0 = time.perf_counter()
            logits = ctx.decode([emission.token])
            t_decode += time.perf_counter() - t0
        return {"n": gen.n_gen, "decode_s": t_decode, "step_s": t_step, "mask_wait_s": gen.mask_seconds}
    finally:
        gen.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--tokens", type=int, default=48)
    ap.add_argument("-r", "--rounds", type=int, default=4)
    args = ap.parse_args()
    with Model(args.model, n_threads=args.threads, n_ctx=512) as model:
        t0 = time.perf_counter()
        grammar = constraints.grammar_from_json_schema(SCHEMA)
        constraints.check_grammar(grammar, model.tokenizer)
        print(f"vocab {model.n_vocab}; llguidance tokenizer + grammar check: {time.perf_counter() - t0:.2f} s")
        ctx = NativeContext(model.native, 512, args.threads)
        totals = {False: [0, 0.0, 0.0, 0.0], True: [0, 0.0, 0.0, 0.0]}
        run_once(model, ctx, None, 4, 0)  # warm-up
        for r in range(args.rounds):
            for constrained in (False, True):  # interleaved: both see the same machine load
                out = run_once(model, ctx, grammar if constrained else None, args.tokens, r)
                t = totals[constrained]
                t[0] += out["n"]
                t[1] += out["decode_s"]
                t[2] += out["step_s"]
                t[3] += out["mask_wait_s"]
        for constrained, (n, dec, step, wait) in totals.items():
            label = "json schema" if constrained else "free text  "
            print(f"{label}: {n} tokens, {1e3 * (dec + step) / n:.2f} ms/token (decode {1e3 * dec / n:.2f}, "
                  f"sample {1e3 * step / n:.3f}, of which mask wait {1e3 * wait / n:.3f})")
        free, cons = totals[False], totals[True]
        per_free = (free[1] + free[2]) / free[0]
        per_cons = (cons[1] + cons[2]) / cons[0]
        print(f"constrained / free: {per_cons / per_free:.3f}; sampling overhead of the mask "
              f"{100 * (cons[2] / cons[0] - free[2] / free[0]) / (free[1] / free[0]):.1f}% of decode time")


if __name__ == "__main__":
    main()
