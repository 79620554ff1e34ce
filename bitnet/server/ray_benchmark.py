"""`utils/server_benchmark.py --ray`: aggregate generation tokens/s of run_inference_server.py --ray
with 1, 2... replicas (each --parallel slots and -t threads), against the server without Ray in
the same run: with one replica's slots, and with all the replicas' slots in one process. Each
configuration gets as many concurrent streaming clients as it has slots in all, interleaved over
--repeats runs like the plain benchmark (benchmark.py).

  python utils/server_benchmark.py --ray -m model.gguf --replicas 1 2 -t 1 --parallel 1 -n 64

Each Ray configuration runs its own local Ray cluster (the server starts it); a replica reserves
-t CPUs, so replicas x -t must fit the machine's cores.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bitnet.server.benchmark import run_load, start_server, stop_server


def run(args) -> int:
    parallel = args.parallel[0]
    replica_counts = sorted(set(args.replicas))
    # (name, clients, slots per server or replica, extra flags): the server alone with one replica's
    # slots, and with as many slots as the largest replica count has in all (the same concurrency
    # in one process: its slots share each weight read), then Serve with each replica count.
    configs = [(f"no Ray, {parallel} slot(s)", parallel, parallel, ())]
    if replica_counts[-1] > 1:
        total = replica_counts[-1] * parallel
        configs.append((f"no Ray, {total} slots", total, total, ()))
    configs += [(f"Ray, {r} replica(s)", r * parallel, parallel, ("--ray", "--replicas", str(r)))
                for r in replica_counts]  # fmt: skip
    servers = {}
    try:
        for name, clients, slots, extra in configs:
            servers[name] = start_server(args.model, slots, args.threads, args.ctx_size, extra)
            run_load(servers[name][1], clients, 1, 4)  # warm-up: weights paged in, routes known
        runs = {name: [] for name, *_ in configs}
        for _ in range(args.repeats):
            for name, clients, _, _ in configs:
                runs[name].append(run_load(servers[name][1], clients, args.requests_per_client, args.n_predict))
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    print(f"model {args.model}, {args.threads} thread(s) per server or replica, {args.n_predict} tokens per request, "
          f"{args.requests_per_client} request(s) per client, {args.repeats} run(s)")
    print(f"{'configuration':<22} {'clients':>7} {'requests':>9} {'errors':>6} {'tokens/s':>16} {'vs first':>8}")
    rows, base = [], None
    for name, clients, slots, extra in configs:
        tps = [r.tokens_per_s for r in runs[name]]
        mean, std = statistics.mean(tps), statistics.stdev(tps) if len(tps) > 1 else 0.0
        base = base or mean
        completed = sum(r.n_completed for r in runs[name])
        requests = sum(r.n_requests for r in runs[name])
        errors = [e for r in runs[name] for e in r.errors]
        rows.append({"configuration": name, "ray": bool(extra), "clients": clients, "slots": slots,
                     "requests": requests, "completed": completed, "errors": errors,
                     "tokens_per_s_mean": mean, "tokens_per_s_std": std})
        print(f"{name:<22} {clients:>7} {completed:>4}/{requests:<4} {len(errors):>6} "
              f"{mean:>9.1f} +- {std:<4.1f} {mean / base:>7.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads, "parallel": parallel,
                                               "results": rows}, indent=2))
    failed = [e for r in rows for e in r["errors"]]
    return 1 if failed or any(r["completed"] != r["requests"] for r in rows) else 0
