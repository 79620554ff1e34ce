"""End-to-end speed through the Python API (`utils/e2e_benchmark.py` is the command line).

pp: the whole prompt as one batch into an emptied context (logits for its last token).
tg: n single-token decode steps after a short prompt (logits every step).
Each test runs once to warm up, then `repetitions` timed times: mean +- sample std of tokens/s.
Token ids are random (the speed of a dense forward pass does not depend on them).

With `--compare llama-cpp-python FILE` llama.cpp runs the same tests on FILE (e.g. the TQ2_0
conversion of the same model) through llama-cpp-python, in a child process right after ours for
each thread count, so its memory and threads stay out of our figures, and our ratio is printed.
`--compare llama-bench PATH FILE` does the same with the llama-bench binary at PATH (llama.cpp's,
ik_llama.cpp's or bitnet.cpp's). Repeat `--compare` to time several peers in the same run. `--rounds N`
repeats the whole comparison N times, ours and the peers taking turns, so that a shared machine's
slow minutes fall on all alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bitnet.errors import BitnetError

TG_PROMPT_TOKENS = 8  # the short prompt before a tg test (not timed)
TG_WARMUP_TOKENS = 16
PEERS = {"llama-cpp-python": 1, "llama-bench": 2}  # engine -> arguments after it


@dataclass(frozen=True)
class Config:
    n_prompt: int
    n_gen: int
    n_threads: int
    repetitions: int

    @property
    def n_ctx(self) -> int:
        return max(self.n_prompt, TG_PROMPT_TOKENS + self.n_gen, 1)


@dataclass
class Timings:
    pp: list[float]  # tokens/s per timed run
    tg: list[float]
    peak_rss_mb: float


def mean_std(samples: Sequence[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    return statistics.fmean(samples), statistics.stdev(samples) if len(samples) > 1 else 0.0


def peak_rss_mb() -> float:
    """This process's peak RSS. On Linux its own memory's high-water mark (VmHWM): ru_maxrss of a
    process that a big one started (the llama-cpp-python child of a benchmark that has just run
    our model) also holds the parent's peak, which fork/vfork and exec hand down."""
    from bitnet.bench_peers import vm_hwm_mb

    hwm = vm_hwm_mb("self")
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def random_tokens(n_vocab: int, count: int, seed: int = 1234) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(0, n_vocab, size=count).tolist()


def measure(decode: Callable[[list[int]], object], reset: Callable[[], object], n_vocab: int,
            cfg: Config) -> tuple[list[float], list[float]]:
    """pp and tg tokens/s of one engine, given as decode(ids) (append to the context) and reset()."""
    tokens = random_tokens(n_vocab, cfg.n_ctx)
    pp, tg = [], []
    for rep in range(cfg.repetitions + 1 if cfg.n_prompt else 0):
        reset()
        t0 = time.perf_counter()
        decode(tokens[: cfg.n_prompt])
        if rep:  # run 0 warms up (and faults in the mapped weights)
            pp.append(cfg.n_prompt / (time.perf_counter() - t0))
    for rep in range(cfg.repetitions + 1 if cfg.n_gen else 0):
        n = cfg.n_gen if rep else min(cfg.n_gen, TG_WARMUP_TOKENS)
        reset()
        decode(tokens[:TG_PROMPT_TOKENS])
        t0 = time.perf_counter()
        for token in tokens[TG_PROMPT_TOKENS: TG_PROMPT_TOKENS + n]:
            decode([token])
        if rep:
            tg.append(n / (time.perf_counter() - t0))
    return pp, tg


def time_bitnet(model, cfg: Config) -> Timings:
    """Our engine; `model` is a bitnet.engine.NativeModel."""
    from bitnet.engine import NativeContext

    ctx = NativeContext(model, cfg.n_ctx, cfg.n_threads)
    try:
        pp, tg = measure(ctx.decode, lambda: ctx.truncate(0), model.n_vocab, cfg)
    finally:
        ctx.close()
    return Timings(pp, tg, peak_rss_mb())


def time_llama_cpp(path: str, cfg: Config) -> Timings:
    """llama.cpp through llama-cpp-python, in this process (the child `run_peer` starts)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise BitnetError(f"cannot import llama_cpp ({exc}): pip install llama-cpp-python") from None

    batch = max(cfg.n_prompt, 1)  # the whole prompt in one (physical) batch, as ours
    llm = llama_cpp.Llama(model_path=path, n_ctx=cfg.n_ctx, n_batch=batch, n_ubatch=batch,
                          n_threads=cfg.n_threads, n_threads_batch=cfg.n_threads, verbose=False)
    try:
        pp, tg = measure(llm.eval, llm.reset, llm.n_vocab(), cfg)
    finally:
        getattr(llm, "close", lambda: None)()
    return Timings(pp, tg, peak_rss_mb())


def run_peer(peer: str, path: str, cfg: Config, binary: str | None = None) -> Timings:
    """Time a peer engine in a child process; BitnetError with its one-line message on failure."""
    if peer == "llama-bench":
        from bitnet.bench_peers import llama_bench

        pp, tg, rss = llama_bench(binary, path, cfg.n_prompt, cfg.n_gen, cfg.n_threads, cfg.repetitions)
        return Timings(pp, tg, rss)
    args = [sys.executable, "-m", "bitnet.bench", "--peer", peer, path,
            *map(str, (cfg.n_prompt, cfg.n_gen, cfg.n_threads, cfg.repetitions))]
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise BitnetError(f"{peer} failed on {path}: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    return Timings(**json.loads(proc.stdout.strip().splitlines()[-1]))


def check_peer(peer: str, path: str, binary: str | None = None) -> None:
    if peer == "llama-cpp-python" and importlib.util.find_spec("llama_cpp") is None:
        raise BitnetError("--compare llama-cpp-python needs the llama_cpp module: pip install llama-cpp-python")
    if binary is not None and not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise FileNotFoundError(f"--compare llama-bench: no executable at {binary}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--compare model not found: {path}")


# ---- reporting ----------------------------------------------------------------------------------


def record(path: str, model, isa: str, cfg: Config, ours: Timings, peer: Timings | None,
           peer_name: str | None, peer_path: str | None) -> dict:
    """One JSON object per run configuration (and peer: with several, ours repeats in each)."""
    pp, pp_std = mean_std(ours.pp)
    tg, tg_std = mean_std(ours.tg)
    out = {
        "model": path, "model_desc": model.desc, "isa": isa, "n_threads": cfg.n_threads,
        "n_prompt": cfg.n_prompt, "n_gen": cfg.n_gen, "repetitions": cfg.repetitions,
        "pp_tokens_per_s": pp, "pp_tokens_per_s_std": pp_std,
        "tg_tokens_per_s": tg, "tg_tokens_per_s_std": tg_std,
        "pp_tokens_per_s_samples": ours.pp, "tg_tokens_per_s_samples": ours.tg,
        "peak_rss_mb": ours.peak_rss_mb, "model_size_bytes": model.size_bytes,
    }
    if peer is not None:
        ppp, ppp_std = mean_std(peer.pp)
        ptg, ptg_std = mean_std(peer.tg)
        out.update({
            "compare_engine": peer_name, "compare_model": peer_path,
            "compare_pp_tokens_per_s": ppp, "compare_pp_tokens_per_s_std": ppp_std,
            "compare_tg_tokens_per_s": ptg, "compare_tg_tokens_per_s_std": ptg_std,
            "compare_peak_rss_mb": peer.peak_rss_mb,
            "pp_ratio": pp / ppp if pp and ppp else None, "tg_ratio": tg / ptg if tg and ptg else None,
        })
    return out


def _cell(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def table_rows(rec: dict, ours: bool = True, index: int | None = None) -> list[list[str]]:
    """Ours (unless ours=False: a later peer of the same slot), the peer and the ratio; index:
    the peer's number when there are several."""
    label = f"{rec.get('compare_engine')} #{index}" if index else None
    threads = str(rec["n_threads"])
    rows = [["bitnet", threads, _cell(rec["pp_tokens_per_s"], rec["pp_tokens_per_s_std"]),
             _cell(rec["tg_tokens_per_s"], rec["tg_tokens_per_s_std"]), f"{rec['peak_rss_mb']:.0f}"]][: int(ours)]
    if "compare_engine" in rec:
        rows.append([label or rec["compare_engine"], threads,
                     _cell(rec["compare_pp_tokens_per_s"], rec["compare_pp_tokens_per_s_std"]),
                     _cell(rec["compare_tg_tokens_per_s"], rec["compare_tg_tokens_per_s_std"]),
                     f"{rec['compare_peak_rss_mb']:.0f}"])
        rows.append([f"ratio (bitnet / {f'#{index}' if index else 'peer'})", threads,
                     _ratio(rec["pp_tokens_per_s"], rec["compare_pp_tokens_per_s"]),
                     _ratio(rec["tg_tokens_per_s"], rec["compare_tg_tokens_per_s"]), ""])
    return rows


def print_table_header(path: str, model, isa: str, args) -> None:
    print(f"model: {path}\n{model.desc}")
    print(f"ISA {isa}; {args.repetitions} timed runs after one warm-up; random token ids")
    peers = peer_args(args.compare)
    for i, (name, path_, binary) in enumerate(peers):
        label = f"#{i + 1}: " if len(peers) > 1 else ""
        print(f"compared with {label}{name}{' ' + binary if binary else ''} on {path_}")
    print()
    head = ["engine", "threads", f"pp{args.n_prompt} t/s", f"tg{args.n_gen} t/s", "peak RSS MB"]
    print("| " + " | ".join(f"{h:>{w}}" for h, w in zip(head, WIDTHS)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in WIDTHS) + "|")


WIDTHS = (22, 7, 20, 20, 11)


def print_rows(rows: list[list[str]]) -> None:
    for row in rows:
        print("| " + " | ".join(f"{c:>{w}}" for c, w in zip(row, WIDTHS)) + " |", flush=True)


# ---- command line -------------------------------------------------------------------------------


def thread_list(text: str) -> list[int]:
    try:
        values = [int(item, 10) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text[:80]!r}") from None
    if any(v < 1 or v > 512 for v in values):
        raise argparse.ArgumentTypeError(f"thread counts must be in 1..512, got {text[:80]!r}")
    return values


def build_parser():
    from bitnet.cli.common import ArgumentParser, default_threads, int_at_least

    p = ArgumentParser(prog="e2e_benchmark.py", description=__doc__)
    p.add_argument("-m", "--model", required=True, metavar="GGUF", help="model file (.gguf)")
    p.add_argument("-n", "--n-token", dest="n_gen", type=int_at_least(0, 1 << 20), default=128, metavar="N",
                   help="tokens to generate in the tg test, 0 skips it (default 128)")
    p.add_argument("-p", "--n-prompt", dest="n_prompt", type=int_at_least(0, 1 << 20), default=512,
                   metavar="N", help="prompt tokens in the pp test, 0 skips it (default 512)")
    p.add_argument("-t", "--threads", type=thread_list, default=[default_threads()], metavar="T[,T..]",
                   help=f"thread counts to run (default {default_threads()})")
    p.add_argument("-r", "--repetitions", type=int_at_least(1, 1000), default=5, metavar="R",
                   help="timed runs per test, after one warm-up (default 5)")
    p.add_argument("--isa", default=None, metavar="NAME", help="force a kernel set (scalar, avx2, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per run configuration")
    p.add_argument("--head-act", choices=("exact", "int8"), default="exact",
                   help="output head activations: exact (default) or int8 per block (Q8_0 / Q6_K heads; not exact)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="cpu (the engine, default) or cuda[:N] (bitnet.gpu, see gpu/README.md; -t is then ignored)")
    p.add_argument("--compare", nargs="+", action="append", metavar=("ENGINE", "ARG"),
                   help="also time a peer on GGUF (e.g. the TQ2_0 file) in this run: llama-cpp-python GGUF, "
                        "or llama-bench PATH GGUF (PATH: a llama-bench binary); repeat for several peers")
    p.add_argument("--rounds", type=int_at_least(1, 100), default=1, metavar="N",
                   help="repeat everything N times, ours and the peers taking turns (default 1)")
    p.add_argument("--embedding", action="store_true", help="time Model.embed instead (bench_embedding.py)")
    p.add_argument("--embd-batch", type=int_at_least(1, 4096), default=32, metavar="B", help="texts per call (32)")
    p.add_argument("--embd-tokens", type=int_at_least(1, 1 << 16), default=128, metavar="L",
                   help="tokens per text (128)")
    return p


def run(args) -> int:
    from bitnet import engine

    peers = peer_args(args.compare)
    for peer in peers:
        check_peer(*peer)
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file not found: {args.model}")
    if args.embedding:
        from bitnet.bench_embedding import run_embedding

        return run_embedding(args)
    if args.isa:
        engine.set_isa(args.isa)
    model = engine.NativeModel(args.model)
    isa = engine.isa()
    if args.head_act != "exact":
        if args.device != "cpu":
            raise ValueError(f"--head-act {args.head_act} is a CPU engine option, not for --device {args.device}")
        model.set_head_act(args.head_act)
        isa += f"+{args.head_act}head"
    gpu = None
    if args.device != "cpu":
        from bitnet.gpu.bench import GpuTimer

        gpu = GpuTimer(args.model, args.device, model)
        isa, args.threads = gpu.device_name, args.threads[:1]
    if not args.json:
        print_table_header(args.model, model, isa, args)
    for round_ in range(args.rounds):
        for n_threads in args.threads:
            cfg = Config(args.n_prompt, args.n_gen, n_threads, args.repetitions)
            ours = time_bitnet(model, cfg) if gpu is None else gpu.time(cfg)
            for i, (name, path, binary) in enumerate(peers or [(None, None, None)]):
                peer = run_peer(name, path, cfg, binary) if name else None
                rec = record(args.model, model, isa, cfg, ours, peer, name, path)
                if args.rounds > 1:
                    rec["round"] = round_ + 1
                if len(peers) > 1:
                    rec["compare_index"] = i + 1
                if args.json:
                    print(json.dumps(rec), flush=True)
                else:
                    print_rows(table_rows(rec, ours=i == 0, index=i + 1 if len(peers) > 1 else None))
    model.close()
    return 0


def peer_args(compare: list[list[str]] | None) -> list[tuple[str, str, str | None]]:
    """Each --compare's words as (engine, model file, llama-bench binary or None)."""
    return [(c[0], c[-1], c[1] if c[0] == "llama-bench" else None) for c in compare or []]



def main(argv: list[str] | None = None) -> int:
    from bitnet.cli.common import run_main

    parser = build_parser()
    args = parser.parse_args(argv)
    for compare in args.compare or []:
        if compare[0] not in PEERS:
            parser.error(f"--compare: unknown engine {compare[0]!r} (known: {', '.join(PEERS)})")
        if len(compare) != PEERS[compare[0]] + 1:
            parser.error("--compare takes llama-cpp-python GGUF, or llama-bench PATH GGUF")
    if args.n_prompt == 0 and args.n_gen == 0:
        parser.error("nothing to run: -p and -n are both 0")
    return run_main(lambda: run(args))


def _peer_main(argv: list[str]) -> int:
    """Child-process entry: `python -m bitnet.bench --peer ENGINE GGUF P N T R` -> one JSON line."""
    from bitnet.cli.common import run_main

    def body() -> int:
        peer, path = argv[1], argv[2]
        cfg = Config(*map(int, argv[3:7]))
        if peer != "llama-cpp-python":
            raise BitnetError(f"unknown engine {peer!r}")
        timings = time_llama_cpp(path, cfg)
        print(json.dumps(timings.__dict__))
        return 0

    return run_main(body)


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--peer":
        sys.exit(_peer_main(sys.argv[1:]))
    sys.exit(main())
