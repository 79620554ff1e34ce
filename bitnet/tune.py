"""A short autotune of the kernel parameters for this CPU (`setup_env.py` runs it), written as
preset_kernels/<cpu signature>.json, which the engine applies when it loads (bitnet/engine.py).

No parameter changes a result, only the speed (src/kernels/tuning.h), so the tuner may pick
freely. It times a model of the 2B-4T layer shape with a small vocabulary (its 0.5 GB of
weights are more than a last-level cache holds, so decode is memory-bound as in real use):
  prefetch_bytes   decode tokens/s for each candidate distance, interleaved, best of `rounds`;
  head_gemv_rows   the same for one or two lm_head rows per GEMV tile (one memory stream or two);
  amx_min_batch    (AMX CPUs) the smallest batch size at which the tile GEMM beats VNNI.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bitnet import engine

PREFETCH_CANDIDATES = (2048, 4096, 8192, 16384)
HEAD_ROWS_CANDIDATES = (1, 2)
BATCH_CANDIDATES = (4, 8, 12, 16, 24, 32)
NEVER = 1 << 20  # an amx_min_batch that no batch reaches: VNNI only
TUNE_SHAPE = dict(size="2B-4T", n_layer=30, n_vocab=4096)
# head_gemv_rows is timed on a 2B-4T-sized head alone (its 0.66 GB stream is what it decides).
HEAD_SHAPE = dict(size="2B-4T", n_layer=1, n_vocab=128256)


def _decode_tokens_per_s(ctx: engine.NativeContext, n_tokens: int, logits: bool = False) -> float:
    ctx.truncate(0)
    ctx.decode([1], want_logits=False)
    t0 = time.perf_counter()
    for i in range(n_tokens):
        ctx.decode([2 + i % 50], want_logits=logits)
    return n_tokens / (time.perf_counter() - t0)


def _batch_seconds(ctx: engine.NativeContext, n: int) -> float:
    ctx.truncate(0)
    ids = np.arange(3, 3 + n, dtype=np.int32)
    t0 = time.perf_counter()
    ctx.decode(ids, want_logits=False)
    return time.perf_counter() - t0


def tune_parameter(ctx, name: str, candidates, rounds: int, n_tokens: int, logits: bool = False) -> tuple[int, dict]:
    """The candidate value of a parameter with the best decode tokens/s, interleaved, best of rounds."""
    best = {c: 0.0 for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            engine.set_tuning(name, c)
            best[c] = max(best[c], _decode_tokens_per_s(ctx, n_tokens, logits))
    return max(best, key=best.get), {str(c): round(v, 2) for c, v in best.items()}


def tune_prefetch(ctx, rounds: int, n_tokens: int) -> tuple[int, dict]:
    return tune_parameter(ctx, "prefetch_bytes", PREFETCH_CANDIDATES, rounds, n_tokens)


def tune_amx_batch(ctx, rounds: int) -> tuple[int, dict]:
    """The smallest candidate batch from which AMX is at least as fast as VNNI at every larger
    candidate too (one noisy win below the crossover must not pull the threshold down)."""
    amx_s, vnni_s = {}, {}
    for _ in range(rounds):
        for n in BATCH_CANDIDATES:
            for threshold, store in ((1, amx_s), (NEVER, vnni_s)):
                engine.set_tuning("amx_min_batch", threshold)
                t = _batch_seconds(ctx, n)
                store[n] = min(store.get(n, t), t)
    chosen = NEVER
    for n in reversed(BATCH_CANDIDATES):
        if amx_s[n] > vnni_s[n]:
            break
        chosen = n
    table = {str(n): {"amx_ms": round(amx_s[n] * 1e3, 2), "vnni_ms": round(vnni_s[n] * 1e3, 2)}
             for n in BATCH_CANDIDATES}
    return chosen, table


def _tune_head_rows(tmp: Path, n_threads: int, rounds: int, n_tokens: int, n_vocab: int) -> tuple[int, dict]:
    from bitnet.convert.dummy import generate

    gguf = generate(tmp / "tune-head.gguf", HEAD_SHAPE["size"], "i2_s", n_layer=HEAD_SHAPE["n_layer"],
                    n_vocab=n_vocab, progress=False)
    model = engine.NativeModel(gguf)
    ctx = engine.NativeContext(model, 64, n_threads)
    try:
        return tune_parameter(ctx, "head_gemv_rows", HEAD_ROWS_CANDIDATES, rounds, n_tokens, logits=True)
    finally:
        ctx.close()
        model.close()


def autotune(out_dir: Path | None = None, n_threads: int = 2, rounds: int = 3, n_tokens: int = 24,
             progress: bool = True, n_layer: int = TUNE_SHAPE["n_layer"], head_vocab: int = HEAD_SHAPE["n_vocab"]) -> Path:
    """Tune, write the preset, apply it to this process; returns the preset's path."""
    from bitnet.convert.dummy import generate

    out_dir = Path(out_dir) if out_dir is not None else engine.preset_dir()
    say = print if progress else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = generate(Path(tmp) / "tune.gguf", TUNE_SHAPE["size"], "i2_s", n_layer=n_layer,
                        n_vocab=TUNE_SHAPE["n_vocab"], progress=False)
        model = engine.NativeModel(gguf)
        ctx = engine.NativeContext(model, 64, n_threads)
        try:
            say(f"autotune: {engine.cpu_signature()}, kernels {engine.isa()}, {n_threads} threads ...", flush=True)
            prefetch, tg = tune_prefetch(ctx, rounds, n_tokens)
            engine.set_tuning("prefetch_bytes", prefetch)
            preset = {"cpu": engine.cpu_signature(), "isa": engine.isa(), "n_threads": n_threads,
                      "prefetch_bytes": prefetch, "measured_tg_tokens_per_s": tg}
            head_rows, head_tg = _tune_head_rows(Path(tmp), n_threads, rounds, n_tokens, head_vocab)
            engine.set_tuning("head_gemv_rows", head_rows)
            preset.update(head_gemv_rows=head_rows, measured_head_tg_tokens_per_s=head_tg)
            if "amx" in engine.available_isas():
                batch, table = tune_amx_batch(ctx, rounds)
                preset.update(amx_min_batch=batch, measured_batch=table)
            else:
                preset["amx_min_batch"] = engine.get_tuning("amx_min_batch")
        finally:
            ctx.close()
            model.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{preset['cpu']}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(preset, indent=1) + "\n", encoding="utf-8")
    tmp_path.replace(path)
    engine.lib().bitnet_load_preset(str(path).encode())
    say(f"autotune: prefetch_bytes {preset['prefetch_bytes']}, amx_min_batch {preset['amx_min_batch']} -> {path}")
    return path
