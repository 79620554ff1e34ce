"""A llama-bench binary as a peer of `utils/e2e_benchmark.py` (llama.cpp, ik_llama.cpp and
bitnet.cpp all build one): run as a child process with the same -p/-n/-t/-r, read back through
its JSON output.

Its peak RSS is read from /proc while it runs (VmHWM, its own memory's high-water mark):
wait4's ru_maxrss would also hold our process's peak, which the spawn and exec hand down."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

from bitnet.errors import BitnetError


def llama_bench(binary: str, path: str, n_prompt: int, n_gen: int, n_threads: int,
                repetitions: int) -> tuple[list[float], list[float], float]:
    """pp and tg tokens/s samples of `binary -m path ... -o json`, and its peak RSS in MB."""
    args = [binary, "-m", path, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(n_threads),
            "-r", str(repetitions), "-o", "json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, stdout=out, stderr=err)
        except OSError as exc:
            raise BitnetError(f"cannot run llama-bench {binary}: {exc.strerror}") from None
        status, usage, peak_mb = _wait_watching_rss(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        raise BitnetError(f"llama-bench failed on {path}: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    try:
        tests = json.loads(stdout[stdout.index("["):])
    except ValueError:
        raise BitnetError(f"llama-bench printed no JSON test list on {path} (is {binary} llama-bench?)") from None
    pp, tg = [], []
    for test in tests:
        samples = test.get("samples_ts") or [test["avg_ts"]]
        if test.get("n_prompt", 0) > 0 and test.get("n_gen", 0) == 0:
            pp = [float(s) for s in samples]
        elif test.get("n_gen", 0) > 0 and test.get("n_prompt", 0) == 0:
            tg = [float(s) for s in samples]
    return pp, tg, peak_mb if peak_mb is not None else usage.ru_maxrss / 1024


RSS_POLL_S = 0.02


def vm_hwm_mb(pid: int | str) -> float | None:
    """VmHWM of a live process (pid or "self") in MB, or None where /proc does not give it (not
    Linux, or the process has exited: a zombie has no memory left to report)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _wait_watching_rss(pid: int):
    """Reap pid; (wait status, rusage, its own peak RSS in MB or None), the peak polled from /proc
    (a high-water mark: the last read before exit holds all but the final few ms, its teardown)."""
    peak = None
    while True:
        hwm = vm_hwm_mb(pid)
        if hwm is not None:
            peak = hwm if peak is None else max(peak, hwm)
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak
        time.sleep(RSS_POLL_S)
