"""Runs the native C++ test programs (built by `pip install -e .` or `python setup_env.py`):
the kernel test once per kernel set this CPU has, as CI must (STYLE.md, habit 14)."""

import os
import subprocess
from pathlib import Path

import pytest

from bitnet import engine

REPO = Path(__file__).resolve().parent.parent
NATIVE_TESTS = sorted(p.stem for p in (REPO / "tests" / "native").glob("test_*.cpp"))


def find_binary(name: str) -> Path:
    found = [p for p in REPO.glob(f"build/**/bin/{name}") if p.is_file()]
    if not found:
        pytest.fail(f"native test {name} is not built: run `pip install -e .` (or `python setup_env.py`) first")
    return max(found, key=lambda p: p.stat().st_mtime)


def run(name: str, env_extra: dict | None = None) -> str:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([str(find_binary(name))], capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed:\n{out[-4000:]}"
    assert " passed, 0 failed" in out, out[-2000:]
    return out


@pytest.mark.parametrize("name", [n for n in NATIVE_TESTS if n != "test_kernels"])
def test_native_program(name):
    run(name)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "amx", "neon"])
def test_kernels_under_forced_isa(isa):
    if isa not in engine.available_isas():
        pytest.skip(f"{isa} is not available on this CPU")
    run("test_kernels", {"BITNET_ISA": isa})
