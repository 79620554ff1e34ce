"""A short autotune of the kernel parameters for this CPU (`setup_env.py` runs it), written as
preset_kernels/<cpu signature>.json, which the engine applies when it loads (bitnet/engine.py).

No parameter changes a result, only the speed (src/kernels/tuning.h), so the tuner may pick
freely. It times whole decode steps (logits included) of a model of the 2B-4T shape with random
weights (1.2 GB: far more than a last-level cache holds, so decode is memory-bound as in real
use; a head timed apart from the layers picked a prefetch distance that was 10% slower in the
whole model):
  prefetch_bytes   decode speed of each candidate distance, the candidates taking turns token by
                   token (median token time);
  head_gemv_rows, head_prefetch_bytes
                   the same, together, for the lm_head GEMV: one or two rows per tile (one memory
                   stream or two) and its own prefetch distance;
  ternary_gemv_rows  (AVX2 kernels) one or two rows per ternary GEMV tile, the same way;
  amx_min_batch    (AMX CPUs) the smallest batch size at which the tile GEMM beats VNNI;
  avx2_gemm_min_batch  (AVX2 kernels) the same for the register-tiled GEMM against the
                   small-batch tiles.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bitnet import engine

PREFETCH_CANDIDATES = (2048, 4096, 8192, 16384)
HEAD_ROWS_CANDIDATES = (1, 2)
HEAD_PREFETCH_CANDIDATES = (4096, 8192, 16384)
BATCH_CANDIDATES = (4, 8, 12, 16, 24, 32)
MIN_SEARCH_SECONDS = 10  # the searches' share of a time budget, however long making the model took
BLOCK, SETTLE = 12, 3  # tokens per turn of a candidate, and how many of them are not counted
MIN_GAIN = 0.03  # what a candidate must gain over the built-in default to replace it
NEVER = 1 << 20  # an amx_min_batch that no batch reaches: VNNI only
TUNE_SIZE = "2B-4T"


def _batch_seconds(ctx: engine.NativeContext, n: int) -> float:
    ctx.truncate(0)
    ids = np.arange(3, 3 + n, dtype=np.int32)
    t0 = time.perf_counter()
    ctx.decode(ids, want_logits=False)
    return time.perf_counter() - t0


def _blocks(n_candidates: int, n_tokens: int) -> int:
    return max(1, n_tokens // (BLOCK - SETTLE)) * n_candidates


def decode_steps(rounds: int, n_tokens: int) -> int:
    """How many decode steps autotune's searches take (what its progress bar counts)."""
    per_round = sum(_blocks(n, n_tokens) * BLOCK for n in (len(PREFETCH_CANDIDATES), len(HEAD_CANDIDATES)))
    return rounds * per_round


def _seconds_ticker(bar, start: float, total: float):
    """A tick() that moves a bar counting seconds (capped at its total), a second at a time."""
    shown = [0.0]

    def tick():
        now = min(total, time.monotonic() - start)
        if now - shown[0] >= 1:
            bar.update(now - shown[0])
            shown[0] = now

    return tick


def tune_settings(ctx, candidates: list[dict], rounds: int, n_tokens: int, logits: bool = False,
                  tick=lambda: None, deadline: float | None = None) -> tuple[dict, dict]:
    """The candidate settings ({parameter: value}) with the best decode speed. The candidates take
    turns in blocks of tokens, and each is judged by its median token time: a shared machine's
    bandwidth moves from second to second, so whole runs of one candidate each picked 4096 or
    16384 bytes of prefetch at random; but a setting also takes a few tokens to show its speed
    (switching the prefetch distance every token, or every 6 tokens, hid the 5-19% by which 8192
    beat 4096 in blocks of 16), so the first tokens of each block are not counted. Returns the
    winner and tokens/s per candidate.

    deadline (time.monotonic()): stop at the first full turn of the candidates after it (at least
    one turn: every candidate measured in BLOCK - SETTLE tokens), even within the rounds."""
    block, settle = BLOCK, SETTLE
    times = [[] for _ in candidates]
    for r in range(rounds):
        if r > 0 and deadline is not None and time.monotonic() >= deadline:
            break
        ctx.truncate(0)
        ctx.decode([1], want_logits=False)
        for b in range(_blocks(len(candidates), n_tokens)):
            j = b % len(candidates)
            if j == 0 and b > 0 and deadline is not None and time.monotonic() >= deadline:
                break
            for name, value in candidates[j].items():
                engine.set_tuning(name, value)
            for t in range(block):
                if ctx.n_past >= ctx.n_ctx:
                    ctx.truncate(1)
                t0 = time.perf_counter()
                ctx.decode([2 + (b * block + t) % 50], want_logits=logits)
                if t >= settle:
                    times[j].append(time.perf_counter() - t0)
                tick()
    speed = [1.0 / statistics.median(t) for t in times]
    best = max(range(len(candidates)), key=speed.__getitem__)
    # The built-in defaults stay unless beaten by more than this machine's noise between rounds.
    is_default = [all(engine.default_tuning(n) == v for n, v in c.items()) for c in candidates]
    default = is_default.index(True) if True in is_default else None
    if default is not None and speed[best] < speed[default] * (1 + MIN_GAIN):
        best = default
    label = lambda c: ",".join(str(v) for v in c.values())  # noqa: E731
    return candidates[best], {label(c): round(v, 2) for c, v in zip(candidates, speed)}


def tune_prefetch(ctx, rounds: int, n_tokens: int, tick=lambda: None,
                  deadline: float | None = None) -> tuple[int, dict]:
    best, table = tune_settings(ctx, [{"prefetch_bytes": c} for c in PREFETCH_CANDIDATES], rounds, n_tokens,
                                logits=True, tick=tick, deadline=deadline)
    return best["prefetch_bytes"], table


def tune_min_batch(ctx, rounds: int, key: str = "amx_min_batch", always: int = 1,
                   labels: tuple[str, str] = ("amx_ms", "vnni_ms")) -> tuple[int, dict]:
    """The smallest candidate batch from which the batch kernel that `key` switches on (AMX tiles;
    the AVX2 register-tiled GEMM) is at least as fast as the kernel below it at every larger
    candidate too (one noisy win below the crossover must not pull the threshold down). `always`
    is the key's smallest value; labels name the two kernels' times in the table."""
    on_s, off_s = {}, {}
    for _ in range(rounds):
        for n in BATCH_CANDIDATES:
            for threshold, store in ((always, on_s), (NEVER, off_s)):
                engine.set_tuning(key, threshold)
                t = _batch_seconds(ctx, n)
                store[n] = min(store.get(n, t), t)
    chosen = NEVER
    for n in reversed(BATCH_CANDIDATES):
        if on_s[n] > off_s[n]:
            break
        chosen = n
    table = {str(n): {labels[0]: round(on_s[n] * 1e3, 2), labels[1]: round(off_s[n] * 1e3, 2)}
             for n in BATCH_CANDIDATES}
    return chosen, table


def tune_amx_batch(ctx, rounds: int) -> tuple[int, dict]:
    return tune_min_batch(ctx, rounds)


def tune_avx2_gemm_batch(ctx, rounds: int) -> tuple[int, dict]:
    return tune_min_batch(ctx, rounds, "avx2_gemm_min_batch", always=2, labels=("gemm_ms", "tiles_ms"))


HEAD_CANDIDATES = [{"head_gemv_rows": r, "head_prefetch_bytes": p} for r in HEAD_ROWS_CANDIDATES
                   for p in HEAD_PREFETCH_CANDIDATES]


def autotune(out_dir: Path | None = None, n_threads: int = 2, rounds: int = 3, n_tokens: int = 24,
             progress: bool = True, n_layer: int | None = None, n_vocab: int | None = None,
             bar: bool = False, seconds: float | None = None) -> Path:
    """Tune, write the preset, apply it to this process; returns the preset's path. n_layer and
    n_vocab shrink the tuning model (tests); by default it has the 2B-4T shape. bar: a tqdm
    progress bar on stderr. seconds: a time budget for the whole tune (making the tuning model
    included): the searches take turns until their share of it is spent (at most `rounds`
    rounds; at least one turn of every candidate), so a slow machine measures fewer tokens
    instead of taking longer; the bar then counts seconds. None: exactly `rounds` rounds."""
    started = time.monotonic()
    from tqdm import tqdm

    from bitnet.convert.dummy import generate

    out_dir = Path(out_dir) if out_dir is not None else engine.preset_dir()
    say = print if progress else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        if bar:
            print("kernel autotune: making a model of the 2B-4T shape (random weights) ...", file=sys.stderr,
                  flush=True)
        gguf = generate(Path(tmp) / "tune.gguf", TUNE_SIZE, "i2_s", n_layer=n_layer, n_vocab=n_vocab, progress=bar)
        model = engine.NativeModel(gguf)
        ctx = engine.NativeContext(model, 64, n_threads)
        if seconds is None:
            steps = tqdm(total=decode_steps(rounds, n_tokens), desc="kernel autotune", unit="step", disable=not bar,
                         file=sys.stderr, leave=False)
            tick, prefetch_deadline, search_end = steps.update, None, None
        else:
            search_s = max(seconds - (time.monotonic() - started), MIN_SEARCH_SECONDS)
            steps = tqdm(total=round(search_s), desc="kernel autotune", unit="s", disable=not bar, file=sys.stderr,
                         leave=False, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s")
            tick = _seconds_ticker(steps, time.monotonic(), search_s)
            # Shares by number of candidates; the head search ends with the budget (a last turn of
            # the prefetch search that ran over is taken from its share).
            share = len(PREFETCH_CANDIDATES) / (len(PREFETCH_CANDIDATES) + len(HEAD_CANDIDATES))
            prefetch_deadline, search_end = time.monotonic() + search_s * share, time.monotonic() + search_s
        try:
            say(f"autotune: {engine.cpu_signature()}, kernels {engine.isa()}, {n_threads} threads ...", flush=True)
            prefetch, tg = tune_prefetch(ctx, rounds, n_tokens, tick=tick, deadline=prefetch_deadline)
            engine.set_tuning("prefetch_bytes", prefetch)
            preset = {"cpu": engine.cpu_signature(), "isa": engine.isa(), "n_threads": n_threads,
                      "prefetch_bytes": prefetch, "measured_tg_tokens_per_s": tg}
            head, head_tg = tune_settings(ctx, HEAD_CANDIDATES, rounds, n_tokens, logits=True, tick=tick,
                                          deadline=search_end)
            for name, value in head.items():
                engine.set_tuning(name, value)
            preset.update(head, measured_head_tg_tokens_per_s=head_tg)
            if engine.isa().startswith("avx2"):
                rows, rows_tg = tune_settings(ctx, [{"ternary_gemv_rows": r} for r in (1, 2)], rounds, n_tokens,
                                              logits=True)
                engine.set_tuning("ternary_gemv_rows", rows["ternary_gemv_rows"])
                preset.update(rows, measured_ternary_gemv_rows_tg_tokens_per_s=rows_tg)
                gemm_batch, gemm_table = tune_avx2_gemm_batch(ctx, rounds)
                engine.set_tuning("avx2_gemm_min_batch", gemm_batch)
                preset.update(avx2_gemm_min_batch=gemm_batch, measured_avx2_gemm_batch=gemm_table)
            if "amx" in engine.available_isas():
                batch, table = tune_amx_batch(ctx, rounds)
                preset.update(amx_min_batch=batch, measured_batch=table)
            else:
                preset["amx_min_batch"] = engine.get_tuning("amx_min_batch")
        finally:
            steps.close()
            ctx.close()
            model.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{preset['cpu']}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(preset, indent=1) + "\n", encoding="utf-8")
    tmp_path.replace(path)
    engine.lib().bitnet_load_preset(str(path).encode())
    say(f"autotune: prefetch_bytes {preset['prefetch_bytes']}, head_gemv_rows {preset['head_gemv_rows']}, "
        f"head_prefetch_bytes {preset['head_prefetch_bytes']}, amx_min_batch {preset['amx_min_batch']}"
        + (f", avx2_gemm_min_batch {preset['avx2_gemm_min_batch']}" if "avx2_gemm_min_batch" in preset else "")
        + f" -> {path}")
    return path
