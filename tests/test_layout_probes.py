"""Smoke tests of the layout probes (tools/probes/, built with -DBITNET_BUILD_PROBES=ON):
lut-layout-probe's lookup-table kernels (ternary_lut*.cpp) and base3-layout-probe's base-3 kernel
equal the scalar I2_S reference bit for bit, and bad flags are one-line errors. Speed is never asserted
here (DESIGN section 6)."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Odd shapes: k = 640 and 1152 are not multiples of 9 (lut3 pads columns), n = 40 and 130 are not
# multiples of the 64-row tile (padded rows), m = 3 and 5 leave partial passes of activation rows.
SMALL_RUN = ["--shapes", "96x640,40x384,130x1152", "-m", "1,2,3,5,32", "--mib", "1", "-t", "2", "-r", "1"]


def find_binary(name: str) -> Path:
    found = [p for p in REPO.glob(f"build/**/bin/{name}") if p.is_file()]
    if not found:
        # The probes are research tools, outside the default build (issue 16); .ci/run builds them.
        pytest.skip(f"{name} is not built: configure a build with -DBITNET_BUILD_PROBES=ON")
    return max(found, key=lambda p: p.stat().st_mtime)


def run(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int):
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_lut_layout_probe_kernels_agree():
    # The probe compares every kernel with the scalar reference (all rows, and a row range cut
    # inside tiles) before timing anything, and exits 1 on the first difference.
    proc = run([find_binary("lut-layout-probe"), *SMALL_RUN])
    if proc.returncode == 2 and "lacks AVX2" in proc.stderr:
        pytest.skip("this CPU has no AVX2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all kernels equal the scalar reference" in out
    assert "lut2-avx2" in out and "i2s-avx2" in out
    for section in ("96x640 (n x k), in cache", "130x1152 (n x k), in cache", "DRAM streaming, m = 1",
                    "repack from I2_S"):
        assert section in out, out
    # One line per kernel and batch size in each in-cache table.
    kernels = out.splitlines()[0].split("kernels ")[1].split(";")[0].split()
    rows = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 3 * 5 * len(kernels)


def test_lut_layout_probe_help():
    proc = run([find_binary("lut-layout-probe"), "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: lut-layout-probe")


@pytest.mark.parametrize("args", [
    ["--shapes", "64x100"],        # k not a multiple of 128
    ["--shapes", "64"],            # not NxK
    ["--shapes", "64x128,"],       # empty item
    ["-m", "0"],
    ["-m", "1,,2"],
    ["-k", "100"],
    ["-t", "0"],
    ["--mib", "-5"],
    ["-r", "x"],
    ["--frobnicate", "1"],
    ["-r"],                        # missing value
])
def test_lut_layout_probe_bad_flags(args):
    assert_one_line_error(run([find_binary("lut-layout-probe"), *args]), 2)


# ---- base3-layout-probe (native) -----------------------------------------------------------------

def test_base3_layout_probe_kernels_agree():
    # k = 640: an odd number of I2_S blocks (the GEMV's masked last block) and rows padded to 960
    # for the base-3 layout; the probe exits 1 if the two kernels' results differ.
    proc = run([find_binary("base3-layout-probe"), "-k", "640", "--mib", "1", "-t", "2", "-r", "1"])
    if proc.returncode == 2 and "lacks AVX-512 VBMI" in proc.stderr:
        pytest.skip("this CPU has no AVX-512 VBMI")
    assert proc.returncode == 0, proc.stderr
    assert "both results equal" in proc.stdout
    assert "base-3 time per pass / I2_S" in proc.stdout


@pytest.mark.parametrize("args", [["-k", "100"], ["-t", "0"], ["--frobnicate", "1"], ["-r"]])
def test_base3_layout_probe_bad_flags(args):
    assert_one_line_error(run([find_binary("base3-layout-probe"), *args]), 2)


# ---- gemm-ceiling-probe (native) -----------------------------------------------------------------

def test_gemm_ceiling_probe_measures_exact_kernels():
    # Odd shapes: 40 and 17 rows (a 16-row slice plus a part-filled 8-row panel), k of 3 and 5
    # blocks, batches below, at and above the GEMM's 6-row tile; exits 1 if the AVX2 GEMM or tiles
    # differ from the scalar reference.
    proc = run([find_binary("gemm-ceiling-probe"), "--shapes", "40x384,17x640", "-m", "2,7,37", "-r", "1"])
    if proc.returncode == 1 and "lacks AVX2" in proc.stderr:
        pytest.skip("this CPU has no AVX2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ceiling maddubs+paddw" in proc.stdout
    assert sum(line.startswith("avx2maddubs 17x640") for line in proc.stdout.splitlines()) == 3


@pytest.mark.parametrize("args", [["--shapes", "40x100"], ["--shapes", "40"], ["-m", "0"], ["-r", "x"],
                                  ["--frobnicate", "1"], ["-m"]])
def test_gemm_ceiling_probe_bad_flags(args):
    assert_one_line_error(run([find_binary("gemm-ceiling-probe"), *args]), 2)


# ---- head-gemv-probe (native) ----------------------------------------------------------------------

def test_head_gemv_probe_checks_and_measures():
    # 70 rows of K = 512 (two Q6_K super-blocks, 16 Q8_0 blocks): every x86 set this CPU runs is
    # checked against the scalar reference (exit 1 on a difference) before one timed pass.
    proc = run([find_binary("head-gemv-probe"), "--rows", "70", "-k", "512", "--cache-rows", "9", "-r", "1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| avx")]
    assert rows and all("differs" not in line for line in rows), proc.stdout
    assert {line.split("|")[2].strip() for line in rows} == {"f16", "q8_0", "q6_k"}


@pytest.mark.parametrize("args", [["-k", "100"], ["-r", "0"], ["--rows", "0"], ["--frobnicate", "1"], ["-r"]])
def test_head_gemv_probe_bad_flags(args):
    assert_one_line_error(run([find_binary("head-gemv-probe"), *args]), 2)
