"""Aggregate generation tokens/s of the HTTP server under concurrent streaming clients.

For each --parallel P it runs run_inference_server.py with P slots and lets P clients stream
--requests-per-client greedy completions each (distinct prompts, so no prefix is shared). It
reports the completion tokens of all requests over the wall time, mean +- std over --repeats
runs (interleaved: every slot count once per repeat), the ratio against --parallel 1 measured
in the same run, and the engine alone doing the same work (batched greedy decode without HTTP,
JSON or the event loop), so that the server's own overhead shows. Every request must end with
[DONE] and a usage chunk; a lost or failed one is counted and makes the exit status 1.

  python utils/server_benchmark.py -m model.gguf --parallel 1 2 4 -t 2 -n 64

The clients use httpx (in the test extra). tests/test_server_soak.py drives run_load too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path



@dataclass
class LoadResult:
    n_requests: int = 0
    n_completed: int = 0
    errors: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    wall_s: float = 0.0
    first_token_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0


def stream_completion(client, body: dict) -> tuple[int, float | None]:
    """One streaming request: (completion tokens, seconds to the first text); raises on any failure."""
    t0 = time.perf_counter()
    first, usage, done = None, None, False
    with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter() - t0
    if not done or usage is None:
        raise RuntimeError("the stream ended without [DONE] and a usage chunk")
    return usage["completion_tokens"], first


def run_load(url: str, n_clients: int, requests_per_client: int, max_tokens: int,
             headers: dict | None = None, prompt: str = "Request {i}: once upon a time") -> LoadResult:  # fmt: skip
    """n_clients threads, each streaming requests_per_client greedy completions one after another."""
    import httpx

    result = LoadResult(n_requests=n_clients * requests_per_client)
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=url, headers=headers or {}, timeout=600) as client:
            for r in range(requests_per_client):
                body = {"prompt": prompt.format(i=c * requests_per_client + r), "max_tokens": max_tokens,
                        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
                try:
                    tokens, first = stream_completion(client, body)
                except Exception as exc:  # noqa: BLE001 (a benchmark counts failures, it does not stop)
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    result.n_completed += 1
                    result.completion_tokens += tokens
                    if first is not None:
                        result.first_token_s.append(first)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    return result


def start_server(model: str, parallel: int, threads: int, ctx: int,
                 extra: tuple[str, ...] = (), timeout_s: float = 300) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """run_inference_server.py (with `extra` flags, e.g. --ray) on a free port; (process, URL) once it
    says it is listening. Its stderr is read on until it exits, so that its log never blocks it."""
    argv = [sys.executable, "-m", "bitnet.server", "-m", model, "--parallel", str(parallel), "-t", str(threads),
            "-c", str(ctx), "--port", "0", *extra]
    package_root = str(Path(__file__).resolve().parent.parent.parent)  # this checkout's bitnet, installed or not
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})  # fmt: skip
    seen: list[str] = []
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            seen.append(line)
            if "listening on" in line:
                threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
                return proc, line.split("listening on ")[1].split()[0]
    finally:
        timer.cancel()
    proc.kill()
    raise RuntimeError("the server did not start: " + "".join(seen[-10:]))


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure_all(args, parallels: list[int]) -> list[dict]:
    """One server per slot count, all started first; then, repeat after repeat, each in turn under
    load (and the engine alone after it): on a shared machine, interleaving spreads the other
    users' bursts over every configuration instead of penalizing whichever ran during one."""
    model = None
    if not args.no_engine_baseline:
        from bitnet import Model

        model = Model(args.model, n_threads=args.threads, n_ctx=args.ctx_size)
    servers = {}
    try:
        for p in parallels:
            servers[p] = start_server(args.model, p, args.threads, args.ctx_size)
            run_load(servers[p][1], 1, 1, 4)  # warm-up: first touch of the weights' pages
        runs = {p: [] for p in parallels}
        engine = {p: [] for p in parallels}
        for _ in range(args.repeats):
            for p in parallels:
                runs[p].append(run_load(servers[p][1], p, args.requests_per_client, args.n_predict))
                if model is not None:
                    engine[p].append(engine_tokens_per_s(model, p, args.requests_per_client, args.n_predict))
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
        if model is not None:
            model.close()
    return [summarize(p, runs[p], engine[p]) for p in parallels]


def summarize(parallel: int, runs: list[LoadResult], engine: list[float]) -> dict:
    tps = [r.tokens_per_s for r in runs]
    ttft = [t for r in runs for t in r.first_token_s]
    return {
        "parallel": parallel, "clients": parallel, "requests": sum(r.n_requests for r in runs),
        "completed": sum(r.n_completed for r in runs), "errors": [e for r in runs for e in r.errors],
        "completion_tokens": sum(r.completion_tokens for r in runs),
        "tokens_per_s_mean": statistics.mean(tps), "tokens_per_s_std": statistics.stdev(tps) if len(tps) > 1 else 0.0,
        "first_token_ms_mean": statistics.mean(ttft) * 1e3 if ttft else None,
        "engine_tokens_per_s": statistics.mean(engine) if engine else None,
    }  # fmt: skip


def engine_tokens_per_s(model, parallel: int, requests_per_client: int, n_tokens: int) -> float:
    """The engine alone, in this process, doing the server's work for one run: per round, the
    prompts of `parallel` fresh sequences, then n_tokens greedy tokens for all of them in batched
    steps (without HTTP, JSON, the event loop or the scheduler); generated tokens/s."""
    import numpy as np

    from bitnet.engine import NativeContext, decode_multi

    t0, n_generated = time.perf_counter(), 0
    for r in range(requests_per_client):
        prompts = [model.tokenize(f"Request {c * requests_per_client + r}: once upon a time")
                   for c in range(parallel)]  # fmt: skip
        contexts = [NativeContext(model.native, len(p) + n_tokens + 1, model.n_threads) for p in prompts]
        tokens = [int(np.argmax(c.decode(p))) for c, p in zip(contexts, prompts)]
        for _ in range(n_tokens - 1):
            rows = decode_multi(contexts, tokens) if parallel > 1 else [contexts[0].decode(tokens)]
            tokens = [int(np.argmax(row)) for row in rows]
        n_generated += parallel * n_tokens
        for c in contexts:
            c.close()
    return n_generated / (time.perf_counter() - t0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", required=True, help="GGUF model to serve")
    p.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4],
                   help="slot counts to measure, each with as many clients (default: 1 2 4)")
    p.add_argument("-t", "--threads", type=int, default=2, help="server threads (default: 2)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="context per slot (default: 512)")
    p.add_argument("-n", "--n-predict", type=int, default=64, help="tokens per request (default: 64)")
    p.add_argument("--requests-per-client", type=int, default=2, help="requests each client makes per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per slot count (default: 3)")
    p.add_argument("--no-engine-baseline", action="store_true",
                   help="skip the engine-alone measurement (batched decode without the server)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--ray", action="store_true",
                   help="measure run_inference_server.py --ray with each of --replicas replicas (of --parallel "
                        "slots each) instead, against the server without Ray (bitnet/server/ray_benchmark.py)")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2], help="with --ray: replica counts (default: 1 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.model).is_file():
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 1
    if args.ray:
        from bitnet.server.ray_benchmark import run as run_ray

        return run_ray(args)
    parallels = sorted(set(args.parallel) | {1})  # the baseline is always measured
    rows = measure_all(args, parallels)
    base = next(r for r in rows if r["parallel"] == 1)["tokens_per_s_mean"]
    print(f"model {args.model}, {args.threads} thread(s), {args.n_predict} tokens per request, "
          f"{args.requests_per_client} request(s) per client, {args.repeats} run(s)")
    print(f"{'parallel':>8} {'requests':>9} {'errors':>6} {'server tokens/s':>16} {'vs 1':>6} {'first token':>12}"
          f" {'engine alone':>13} {'server/engine':>13}")
    for r in rows:
        r["ratio_vs_parallel_1"] = r["tokens_per_s_mean"] / base if base else None
        ttft = f"{r['first_token_ms_mean']:.0f} ms" if r["first_token_ms_mean"] is not None else "-"
        engine = r.get("engine_tokens_per_s")
        engine_cells = f" {engine:>13.1f} {r['tokens_per_s_mean'] / engine:>12.2f}x" if engine else ""
        print(f"{r['parallel']:>8} {r['completed']:>4}/{r['requests']:<4} {len(r['errors']):>6} "
              f"{r['tokens_per_s_mean']:>9.1f} +- {r['tokens_per_s_std']:<4.1f} {r['ratio_vs_parallel_1']:>5.2f}x "
              f"{ttft:>12}{engine_cells}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads, "results": rows},
                                              indent=2))
    failed = [e for r in rows for e in r["errors"]]
    for e in failed[:5]:
        print(f"error: {e}", file=sys.stderr)
    return 1 if failed or any(r["completed"] != r["requests"] for r in rows) else 0

