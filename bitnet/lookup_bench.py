"""Speed of prompt-lookup speculative decoding against plain greedy decoding, in one run
(`utils/lookup_benchmark.py` is the command line).

For every prompt of two sets, greedy generation runs with lookup off and on, interleaved, each
`repetitions` times after a warm-up; the tokens must be identical (they are by construction,
and this checks it on the real model). Reports generation tokens/s of both and their ratio.
  repetitive:      text that repeats itself (code, lists, a quoted passage)
  non-repetitive:  prose without repeated phrases
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bitnet.errors import BitnetError

REPETITIVE = [
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n\n"
    "def div(a, b):\n    return a / b\n\ndef mod(a, b):\n",
    "Monday: wash, cook, read. Tuesday: wash, cook, read. Wednesday: wash, cook, read. Thursday: wash,",
    "<item><name>apple</name><price>3</price></item>\n<item><name>pear</name><price>4</price></item>\n<item>",
    "To be, or not to be, that is the question. Quote it again: To be, or not to be, that is",
]
NON_REPETITIVE = [
    "The harbour woke slowly: gulls argued over nets while a ferry horn rolled across the grey water.",
    "Explain in plain words why the sky looks blue at noon but orange when the sun is setting.",
    "Our quarterly figures show modest growth in exports, offset by rising costs of energy and freight.",
    "She packed a torch, two apples and an old map, then walked north until the road became a path.",
]


def _time_generation(model, prompt: str, n: int, lookup: bool) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    ids = list(model.generate_tokens(prompt, max_tokens=n, temperature=0, lookup_decoding=lookup))
    return ids, time.perf_counter() - t0


def run_set(model, prompts: list[str], n: int, repetitions: int) -> dict:
    plain_s, lookup_s, tokens = [], [], 0
    for prompt in prompts:
        ref, _ = _time_generation(model, prompt, n, False)  # warm-up, and the reference tokens
        _time_generation(model, prompt, n, True)
        for _ in range(repetitions):
            for lookup, bucket in ((False, plain_s), (True, lookup_s)):
                model.reset()  # every run starts from an empty cache: no prefix reuse
                ids, seconds = _time_generation(model, prompt, n, lookup)
                if ids != ref:
                    raise BitnetError(f"lookup changed the greedy output for prompt {prompt[:40]!r}")
                bucket.append(len(ids) / seconds)
        tokens += len(ref)
    plain, fast = statistics.fmean(plain_s), statistics.fmean(lookup_s)
    return {"plain_tokens_per_s": plain, "lookup_tokens_per_s": fast, "speedup": fast / plain,
            "plain_std": statistics.stdev(plain_s), "lookup_std": statistics.stdev(lookup_s),
            "n_prompts": len(prompts), "tokens_per_prompt": tokens / len(prompts)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lookup_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", required=True, metavar="GGUF")
    p.add_argument("-n", "--n-predict", type=int, default=96, metavar="N", help="tokens per prompt (default 96)")
    p.add_argument("-t", "--threads", type=int, default=2, metavar="N")
    p.add_argument("-r", "--repetitions", type=int, default=3, metavar="R", help="timed runs per prompt and mode")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt set")
    args = p.parse_args(argv)
    from bitnet import Model

    try:
        with Model(args.model, n_threads=args.threads, n_ctx=1024) as model:
            print(f"{model.native.desc}; {args.threads} threads, {args.n_predict} tokens per prompt", file=sys.stderr)
            for name, prompts in (("repetitive", REPETITIVE), ("non-repetitive", NON_REPETITIVE)):
                r = run_set(model, prompts, args.n_predict, args.repetitions)
                if args.json:
                    print(json.dumps({"set": name, "model": args.model, "n_threads": args.threads, **r}))
                else:
                    print(f"{name:>15}: plain {r['plain_tokens_per_s']:6.2f} ± {r['plain_std']:.2f} t/s, "
                          f"lookup {r['lookup_tokens_per_s']:6.2f} ± {r['lookup_std']:.2f} t/s, "
                          f"x{r['speedup']:.2f} (greedy output identical)")
    except (BitnetError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
