"""Installing like a library (issue 16): where the package finds the engine, bitnet-bench, the
presets and the demo model; setup_env.py's quiet build and per-user tuning; the console
entries; the "missing package" errors naming their extra; a dump folder that does not exist.
(The built wheel itself is checked by tests/wheel/check_wheel.sh, which .ci/run runs.)"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitnet import BitnetError, engine, paths
from bitnet.engine import NativeContext

REPO = Path(__file__).resolve().parent.parent
SETUP_ENV = REPO / "setup_env.py"


def run_python(code: str, env: dict | None = None, cwd=REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "BITNET_PRESET_DIR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout)


# ---- where things are found ----


def test_newest_build_library_wins_and_instrumented_builds_are_passed_over(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path)
    made = {}
    for i, name in enumerate(["old", "new", "sanitize", "cross"]):
        lib = tmp_path / "build" / name / "lib" / "libbitnet.so"
        lib.parent.mkdir(parents=True)
        lib.write_bytes(b"")
        os.utime(lib, (1000 + i, 1000 + i))
        made[name] = lib
    # Configured before lib-sanitize/ and lib-<cpu>/ existed: their CMake caches say what they are.
    (tmp_path / "build/sanitize/CMakeCache.txt").write_text("BITNET_SANITIZE:BOOL=ON\n")
    (tmp_path / "build/cross/CMakeCache.txt").write_text("CMAKE_TOOLCHAIN_FILE:FILEPATH=/x.cmake\n")
    assert paths.newest_build_output("lib/libbitnet.so") == [made["new"], made["old"]]
    monkeypatch.delenv("BITNET_LIB", raising=False)
    candidates = paths.library_candidates("libbitnet.so", [])
    assert candidates[:3] == [made["new"], made["old"], paths.PACKAGE_DIR / "libbitnet.so"]


def test_this_checkout_loads_a_built_library_not_one_in_the_package_folder():
    if os.environ.get("BITNET_LIB"):
        pytest.skip("BITNET_LIB names the library")
    loaded = Path(engine.library_path()).resolve()
    assert loaded != (paths.PACKAGE_DIR / loaded.name).resolve() or paths.CHECKOUT is None, loaded


def test_presets_this_users_tuned_one_then_the_shipped_one(tmp_path):
    show = "from bitnet import engine; print(engine.preset_path()); print(engine.get_tuning('prefetch_bytes'))"
    shipped = run_python(show, {"XDG_CACHE_HOME": str(tmp_path)})
    assert shipped.returncode == 0, shipped.stderr
    sig = engine.cpu_signature()
    expected_shipped = paths.shipped_preset_dir() / f"{sig}.json"
    if expected_shipped.is_file():
        assert shipped.stdout.split()[0] == str(expected_shipped)
    tuned = tmp_path / "bitnet" / "presets" / f"{sig}.json"
    tuned.parent.mkdir(parents=True)
    tuned.write_text('{"prefetch_bytes": 3072}')
    out = run_python(show, {"XDG_CACHE_HOME": str(tmp_path)})
    assert out.stdout.split() == [str(tuned), "3072"], out.stderr


def test_demo_model_and_shipped_presets_are_found_from_any_folder(tmp_path):
    code = "from bitnet import paths; from bitnet.model import DEFAULT_MODEL; print(DEFAULT_MODEL.is_file(), " \
           "paths.shipped_preset_dir().is_dir())"
    out = run_python(code, {"PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert out.stdout.split() == ["True", "True"], out.stderr


# ---- commands ----


def test_bitnet_bench_entry_runs_the_built_program():
    if paths.bench_binary() is None:
        pytest.skip("bitnet-bench is not built")
    out = subprocess.run([sys.executable, "-m", "bitnet.cli.bench", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout.lower(), out.stdout + out.stderr
    bad = subprocess.run([sys.executable, "-m", "bitnet.cli.bench", "--frobnicate"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.startswith("error: unknown flag"), bad.stderr


def test_server_without_its_extra_names_the_extra(tiny_gguf):
    code = ("import sys; sys.modules['uvicorn'] = None; from bitnet.server.cli import main; "
            f"sys.exit(main(['-m', {str(tiny_gguf)!r}, '--port', '0']))")
    out = run_python(code)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert 'pip install "bitnet[server]"' in lines[0] and "uvicorn" in lines[0]


@pytest.mark.parametrize("module, extra", [("fastapi", "server"), ("huggingface_hub", "hub"), ("torch", "test")])
def test_missing_package_errors_name_the_extra(module, extra):
    from bitnet.cli.python_deps import install_hint

    assert f'bitnet[{extra}]' in install_hint(module)


# ---- setup_env.py ----


def fake_cmake(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cmake").write_text("#!/bin/sh\necho \"$@\"\n")
    (bin_dir / "cmake").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_setup(tmp_path, *args, env=None):
    full_env = {**os.environ, **fake_cmake(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env or {})}
    full_env.pop("BITNET_PRESET_DIR", None)
    return subprocess.run([sys.executable, str(SETUP_ENV), "-ld", str(tmp_path / "logs"), *args], capture_output=True,
                          text=True, env=full_env, timeout=60, cwd=REPO)


def test_setup_builds_one_configuration_of_the_engine_under_build(tmp_path):
    proc = run_setup(tmp_path, "--skip-tune")
    assert proc.returncode == 0, proc.stderr
    configure = (tmp_path / "logs" / "generate_build_files.log").read_text()
    assert f"-B {REPO / 'build' / 'release'}" in configure
    assert "-DCMAKE_BUILD_TYPE=Release" in configure and "-DBITNET_BUILD_TESTS=OFF" in configure


def test_setup_use_pretuned_drops_this_users_tuned_preset(tmp_path):
    tuned = tmp_path / "cache" / "bitnet" / "presets" / f"{engine.cpu_signature()}.json"
    tuned.parent.mkdir(parents=True)
    tuned.write_text('{"prefetch_bytes": 4096}')
    proc = run_setup(tmp_path, "--use-pretuned")
    assert proc.returncode == 0, proc.stderr
    assert not tuned.exists() and "removed this user's tuned preset" in proc.stderr


def test_setup_help_says_what_use_pretuned_does():
    out = subprocess.run([sys.executable, str(SETUP_ENV), "-h"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "does nothing" not in out.stdout and "XDG_CACHE_HOME" in out.stdout


def test_a_tuning_search_stops_at_its_deadline(tiny_gguf):
    from bitnet.tune import PREFETCH_CANDIDATES, tune_settings

    model = engine.NativeModel(tiny_gguf)
    ctx = NativeContext(model, 64, 1)
    before = engine.get_tuning("prefetch_bytes")
    try:
        t0 = time.monotonic()
        candidates = [{"prefetch_bytes": c} for c in PREFETCH_CANDIDATES]
        best, table = tune_settings(ctx, candidates, rounds=10**6, n_tokens=10**6, deadline=t0 + 0.5)
        assert time.monotonic() - t0 < 20
        assert best in candidates and len(table) == len(candidates) and all(v > 0 for v in table.values())
    finally:
        engine.set_tuning("prefetch_bytes", before)
        ctx.close()
        model.close()


def test_a_budgeted_autotune_writes_its_preset(tmp_path):
    from bitnet.tune import autotune

    before = {k: engine.get_tuning(k) for k in ("prefetch_bytes", "head_gemv_rows", "head_prefetch_bytes")}
    try:
        path = autotune(tmp_path, n_threads=1, rounds=1, n_tokens=2, progress=False, n_layer=1, n_vocab=512,
                        seconds=1, bar=False)
        assert path == tmp_path / f"{engine.cpu_signature()}.json" and '"prefetch_bytes"' in path.read_text()
    finally:
        for k, v in before.items():
            engine.set_tuning(k, v)


# ---- debug dumps ----


def test_a_dump_folder_that_does_not_exist_is_an_error(tiny_model, tmp_path, monkeypatch):
    ctx = NativeContext(tiny_model.native, 16, 1)
    try:
        with pytest.raises(BitnetError, match="does not exist"):
            ctx.set_dump_dir(tmp_path / "missing")
        ctx.set_dump_dir(tmp_path)  # an existing folder is fine
        ctx.set_dump_dir(None)
    finally:
        ctx.close()
    monkeypatch.setenv("BITNET_DUMP_DIR", str(tmp_path / "missing"))
    with pytest.raises(BitnetError, match="BITNET_DUMP_DIR: dump folder .* does not exist"):
        NativeContext(tiny_model.native, 16, 1)
