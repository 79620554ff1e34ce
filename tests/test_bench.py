"""Smoke tests of the benchmark tools on the tiny model: they run and print well-formed output.
Speed is never asserted here (DESIGN section 6): the figures live in benchmark runs."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
E2E = REPO / "utils" / "e2e_benchmark.py"
TINY_RUN = ["-p", "8", "-n", "4", "-r", "2"]

BENCH_KEYS = {"model", "model_desc", "isa", "n_threads", "test", "tokens_per_s_mean", "tokens_per_s_std", "reps",
              "bandwidth_gb_s", "bytes_per_token", "bandwidth_fraction"}
E2E_KEYS = {"pp_tokens_per_s", "pp_tokens_per_s_std", "tg_tokens_per_s", "tg_tokens_per_s_std", "n_threads",
            "n_prompt", "n_gen", "model", "model_desc", "isa", "peak_rss_mb", "repetitions"}


def find_binary(name: str) -> Path:
    found = [p for p in REPO.glob(f"build/**/bin/{name}") if p.is_file()]
    if not found:
        pytest.fail(f"{name} is not built: run `pip install -e .` (or `python setup_env.py`) first")
    return max(found, key=lambda p: p.stat().st_mtime)


def run(args: list, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int):
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


# ---- bitnet-bench (native) ----------------------------------------------------------------------


def test_bitnet_bench_json(tiny_gguf):
    proc = run([find_binary("bitnet-bench"), "-m", tiny_gguf, *TINY_RUN, "-t", "1,2", "--bw-mib", "8",
                "--bw-passes", "2", "--json"])
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [(r["n_threads"], r["test"]) for r in records] == [(1, "pp8"), (1, "tg4"), (2, "pp8"), (2, "tg4")]
    for r in records:
        assert BENCH_KEYS <= r.keys()
        assert r["model"] == str(tiny_gguf) and r["reps"] == 2 and len(r["tokens_per_s_samples"]) == 2
        assert r["tokens_per_s_mean"] > 0 and r["tokens_per_s_std"] >= 0 and r["bytes_per_token"] > 0
        assert "bitnet-b1.58" in r["model_desc"] and r["isa"]
    tg = [r for r in records if r["test"].startswith("tg")]
    assert all(r["bandwidth_gb_s"] > 0 and r["bandwidth_fraction"] > 0 for r in tg)
    assert all(r["bandwidth_fraction"] is None for r in records if r["test"].startswith("pp"))


def test_bitnet_bench_table_without_bandwidth(tiny_gguf):
    proc = run([find_binary("bitnet-bench"), "-m", tiny_gguf, *TINY_RUN, "-t", "1", "--no-bandwidth"])
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and "pp8" in rows[2] and "tg4" in rows[3] and "±" in rows[3]
    assert "bandwidth probe off" in proc.stdout


@pytest.mark.parametrize("args, code", [
    (["-p", "x"], 2), (["-t", "0"], 2), (["--frobnicate"], 2), (["-r"], 2), (["--isa", "nonesuch"], 2),
])
def test_bitnet_bench_bad_flags(tiny_gguf, args, code):
    assert_one_line_error(run([find_binary("bitnet-bench"), "-m", tiny_gguf, *args]), code)


def test_bitnet_bench_missing_model(tmp_path):
    assert_one_line_error(run([find_binary("bitnet-bench")]), 2)
    assert_one_line_error(run([find_binary("bitnet-bench"), "-m", tmp_path / "absent.gguf"]), 1)


def test_bitnet_bench_finds_the_preset_as_the_package_does(tiny_gguf, tmp_path):
    """bitnet-bench applies this CPU's preset from where bitnet.engine looks ($BITNET_PRESET_DIR here),
    says which in its header, takes --preset FILE|none, and skips a broken preset it found itself."""
    from bitnet import engine

    preset = tmp_path / f"{engine.cpu_signature()}.json"
    preset.write_text('{"prefetch_bytes": 4096, "head_gemv_rows": 1}')
    base = [find_binary("bitnet-bench"), "-m", tiny_gguf, *TINY_RUN, "-t", "1", "--no-bandwidth"]
    env = {"BITNET_PRESET_DIR": str(tmp_path)}
    proc = run(base, env)
    assert proc.returncode == 0, proc.stderr
    assert f"kernel preset: {preset}" in proc.stdout
    proc = run([*base, "--preset", "none"], env)
    assert proc.returncode == 0 and "kernel preset: none (built-in defaults)" in proc.stdout
    preset.write_text('{"prefetch_bytes": ')
    proc = run(base, env)
    assert proc.returncode == 0 and "warning: kernel preset skipped" in proc.stderr
    assert "kernel preset: none (built-in defaults)" in proc.stdout
    assert_one_line_error(run([*base, "--preset", preset], env), 1)
    assert_one_line_error(run([*base, "--preset", tmp_path / "absent.json"], env), 1)


# ---- utils/e2e_benchmark.py ---------------------------------------------------------------------


def test_e2e_benchmark_json(tiny_gguf):
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1,2", "--json"])
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [r["n_threads"] for r in records] == [1, 2]
    for r in records:
        assert E2E_KEYS <= r.keys()
        assert (r["n_prompt"], r["n_gen"], r["repetitions"], r["model"]) == (8, 4, 2, str(tiny_gguf))
        assert r["pp_tokens_per_s"] > 0 and r["tg_tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["pp_tokens_per_s_std"] >= 0 and r["tg_tokens_per_s_std"] >= 0


def test_e2e_benchmark_table(tiny_gguf):
    proc = run([sys.executable, E2E, "-m", tiny_gguf, "-p", "8", "-n", "0", "-r", "1", "-t", "1"])
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(rows) == 3 and "pp8 t/s" in rows[0] and "bitnet" in rows[2] and "±" in rows[2]


# A stand-in for llama-cpp-python with the calls the benchmark makes, to test the plumbing of
# --compare without building llama.cpp.
FAKE_LLAMA_CPP = textwrap.dedent("""
    class Llama:
        def __init__(self, model_path, n_ctx, n_batch, n_ubatch, n_threads, n_threads_batch, verbose):
            assert n_batch >= 8 and n_threads == n_threads_batch
            self.n_ctx, self.n_past = n_ctx, 0

        def n_vocab(self):
            return 100

        def reset(self):
            self.n_past = 0

        def eval(self, tokens):
            self.n_past += len(tokens)
            assert self.n_past <= self.n_ctx
""")


def test_e2e_benchmark_compare(tiny_gguf, tmp_path):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA_CPP)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1", "--json",
                "--compare", "llama-cpp-python", tiny_gguf], env)
    assert proc.returncode == 0, proc.stderr
    (r,) = json_lines(proc.stdout)
    assert r["compare_engine"] == "llama-cpp-python" and r["pp_ratio"] > 0 and r["tg_ratio"] > 0
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1",
                "--compare", "llama-cpp-python", tiny_gguf], env)
    assert proc.returncode == 0, proc.stderr
    assert "llama-cpp-python" in proc.stdout and "ratio" in proc.stdout


# A stand-in for a llama-bench binary: checks the flags it is given and prints llama-bench's JSON.
FAKE_LLAMA_BENCH = textwrap.dedent("""\
    #!{python}
    import json, sys
    a = sys.argv[1:]
    flag = dict(zip(a[::2], a[1::2]))
    assert flag["-o"] == "json" and flag["-m"].endswith(".gguf"), a
    p, n, r = int(flag["-p"]), int(flag["-n"]), int(flag["-r"])
    tests = [{{"n_prompt": p, "n_gen": 0, "avg_ts": 100.0, "samples_ts": [100.0] * r}}] if p else []
    tests += [{{"n_prompt": 0, "n_gen": n, "avg_ts": 10.0, "samples_ts": [10.0] * r}}] if n else []
    print("build info on stderr", file=sys.stderr)
    print(json.dumps(tests, indent=2))
""")


def test_e2e_benchmark_compare_llama_bench(tiny_gguf, tmp_path):
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    fake.chmod(0o755)
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1,2", "--json", "--rounds", "2",
                "--compare", "llama-bench", fake, tiny_gguf])
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [(r["round"], r["n_threads"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for r in records:
        assert r["compare_engine"] == "llama-bench" and r["compare_pp_tokens_per_s"] == 100.0
        assert r["compare_tg_tokens_per_s"] == 10.0 and r["pp_ratio"] > 0 and r["compare_peak_rss_mb"] > 0
    proc = run([sys.executable, E2E, "-m", tiny_gguf, "-p", "8", "-n", "0", "-r", "1", "-t", "1",
                "--compare", "llama-bench", fake, tiny_gguf])
    assert proc.returncode == 0, proc.stderr
    assert "llama-bench" in proc.stdout and "100.00" in proc.stdout and "ratio" in proc.stdout
    # Not an executable, or not llama-bench: one line, exit status 1.
    assert_one_line_error(run([sys.executable, E2E, "-m", tiny_gguf, "--compare", "llama-bench",
                               tmp_path / "absent", tiny_gguf]), 1)
    assert_one_line_error(run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "--compare", "llama-bench",
                               "/bin/true", tiny_gguf]), 1)


def test_e2e_benchmark_compare_several_peers(tiny_gguf, tmp_path):
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    fake.chmod(0o755)
    two = ["--compare", "llama-bench", fake, tiny_gguf, "--compare", "llama-bench", fake, tmp_path / "b.gguf"]
    (tmp_path / "b.gguf").write_bytes(b"")
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1", "--json", "--rounds", "2", *two])
    assert proc.returncode == 0, proc.stderr
    records = json_lines(proc.stdout)
    assert [(r["round"], r["compare_index"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [r["compare_model"] for r in records[:2]] == [str(tiny_gguf), str(tmp_path / "b.gguf")]
    assert records[0]["tg_tokens_per_s"] == records[1]["tg_tokens_per_s"]  # ours timed once per slot
    proc = run([sys.executable, E2E, "-m", tiny_gguf, *TINY_RUN, "-t", "1", *two])
    assert proc.returncode == 0, proc.stderr
    names = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("|")][2:]
    assert names == ["bitnet", "llama-bench #1", "ratio (bitnet / #1)", "llama-bench #2", "ratio (bitnet / #2)"]
    # A bad second peer is a usage error like a bad first one.
    assert_one_line_error(run([sys.executable, E2E, "-m", tiny_gguf, *two[:4], "--compare", "llama-bench",
                               tiny_gguf]), 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is read from Linux's /proc")
def test_peer_peak_rss_is_the_peers_own(tmp_path, monkeypatch):
    # A spawned child's ru_maxrss also holds the parent's peak (handed down through vfork/fork and
    # exec); with our model in memory the peers' RSS read as ours. Here the parent holds 256 MB.
    from bitnet import bench, bench_peers

    ballast = bytearray(256 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    fake = tmp_path / "llama-bench"
    fake.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    fake.chmod(0o755)
    pp, tg, rss = bench_peers.llama_bench(str(fake), str(tmp_path / "m.gguf"), 8, 4, 1, 2)
    assert pp == [100.0, 100.0] and tg == [10.0, 10.0]
    assert 0 < rss < 128, rss
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text(FAKE_LLAMA_CPP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    peer = bench.run_peer("llama-cpp-python", str(tmp_path / "m.gguf"), bench.Config(8, 4, 1, 2))
    assert len(peer.pp) == 2 and 0 < peer.peak_rss_mb < 128, peer.peak_rss_mb
    assert bench.peak_rss_mb() >= 256  # ours still counts its own memory
    del ballast


@pytest.mark.parametrize("args, code", [
    (["-t", "0"], 2), (["-p", "-1"], 2), (["-p", "0", "-n", "0"], 2), (["--bogus"], 2),
    (["--compare", "nonesuch", "x.gguf"], 2), (["--compare", "llama-bench", "x.gguf"], 2),
    (["--compare", "llama-cpp-python", "a", "x.gguf"], 2), (["--rounds", "0"], 2),
])
def test_e2e_benchmark_bad_flags(tiny_gguf, args, code):
    assert_one_line_error(run([sys.executable, E2E, "-m", tiny_gguf, *args]), code)


def test_e2e_benchmark_failures(tiny_gguf, tmp_path):
    assert_one_line_error(run([sys.executable, E2E, "-m", tmp_path / "absent.gguf"]), 1)
    # With a llama_cpp that does not import: one line naming the package to install.
    env = {"PYTHONPATH": str(tmp_path / "no_llama")}
    (tmp_path / "no_llama" / "llama_cpp").mkdir(parents=True)
    (tmp_path / "no_llama" / "llama_cpp" / "__init__.py").write_text("raise ImportError('no')\n")
    proc = run([sys.executable, E2E, "-m", tiny_gguf, "--compare", "llama-cpp-python", tiny_gguf], env)
    assert_one_line_error(proc, 1)
    assert "pip install llama-cpp-python" in proc.stderr
