"""Kernel tuning: presets are applied when the library loads, environment variables win, bad
presets cost nothing but a warning, and no parameter changes a single bit of the logits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bitnet import BitnetError, engine

SHOW = "from bitnet import engine; print(engine.get_tuning('prefetch_bytes'), engine.get_tuning('amx_min_batch'))"


def _child(preset_dir, extra_env=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BITNET_PREFETCH_BYTES", "BITNET_AMX_MIN_BATCH")}
    env.update(BITNET_PRESET_DIR=str(preset_dir), **(extra_env or {}))
    return subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True, env=env, timeout=60)


def _write_preset(tmp_path, body) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    (tmp_path / f"{engine.cpu_signature()}.json").write_text(text, encoding="utf-8")


def test_preset_for_this_cpu_is_applied_at_load(tmp_path):
    _write_preset(tmp_path, {"cpu": "x", "prefetch_bytes": 4096, "amx_min_batch": 24, "measured": {"a": [1, 2]}})
    out = _child(tmp_path)
    assert out.returncode == 0 and out.stdout.split() == ["4096", "24"], out.stderr


def test_environment_wins_over_the_preset(tmp_path):
    _write_preset(tmp_path, {"prefetch_bytes": 4096})
    out = _child(tmp_path, {"BITNET_PREFETCH_BYTES": "2048"})
    assert out.stdout.split()[0] == "2048", out.stderr


@pytest.mark.parametrize("body", ["{not json", '{"prefetch_bytes": -5}', '{"prefetch_bytes": 1.5}', "[]"])
def test_a_broken_preset_warns_and_keeps_the_defaults(tmp_path, body):
    defaults = _child(tmp_path).stdout.split()  # no preset there yet
    _write_preset(tmp_path, body)
    out = _child(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == defaults
    assert "warning" in out.stderr and out.stderr.count("\n") == 1


def test_default_tuning_is_the_built_in_value_whatever_is_in_force():
    before = engine.get_tuning("prefetch_bytes")
    try:
        engine.set_tuning("prefetch_bytes", 12345)
        assert engine.default_tuning("prefetch_bytes") == 8192 and engine.get_tuning("prefetch_bytes") == 12345
    finally:
        engine.set_tuning("prefetch_bytes", before)
    with pytest.raises(BitnetError, match="unknown tuning parameter"):
        engine.default_tuning("tile_size")


def test_set_tuning_checks_names_and_ranges():
    with pytest.raises(BitnetError, match="unknown tuning parameter"):
        engine.set_tuning("tile_size", 4)
    with pytest.raises(BitnetError, match="out of range"):
        engine.set_tuning("amx_min_batch", 0)


def test_no_parameter_changes_the_logits(tiny_model):
    ids = list(range(3, 40))
    before = {k: engine.get_tuning(k) for k in ("prefetch_bytes", "amx_min_batch")}
    try:
        runs = []
        for prefetch, batch in ((0, 1), (16384, 1 << 20), (512, 4)):
            engine.set_tuning("prefetch_bytes", prefetch)
            engine.set_tuning("amx_min_batch", batch)
            runs.append(tiny_model.logits(ids))
        for r in runs[1:]:
            np.testing.assert_array_equal(r, runs[0])
    finally:
        for k, v in before.items():
            engine.set_tuning(k, v)


def test_head_gemv_rows_do_not_change_decode_logits(tiny_gguf):
    from bitnet.engine import NativeContext, NativeModel

    model = NativeModel(tiny_gguf)
    before = engine.get_tuning("head_gemv_rows")
    runs = []
    try:
        for rows in (1, 2):
            engine.set_tuning("head_gemv_rows", rows)
            ctx = NativeContext(model, 32, 2)
            runs.append(np.stack([ctx.decode([t]) for t in range(3, 15)]))  # one token at a time: the GEMV
    finally:
        engine.set_tuning("head_gemv_rows", before)
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(BitnetError, match="out of range"):
        engine.set_tuning("head_gemv_rows", 3)


@pytest.mark.skipif("avx2" not in engine.available_isas(), reason="no AVX2 on this CPU")
def test_ternary_gemv_rows_do_not_change_avx2_decode_logits(tiny_gguf):
    from bitnet.engine import NativeContext, NativeModel

    model = NativeModel(tiny_gguf)
    before, isa = engine.get_tuning("ternary_gemv_rows"), engine.isa()
    runs = []
    try:
        engine.set_isa("avx2")
        for rows in (1, 2):
            engine.set_tuning("ternary_gemv_rows", rows)
            ctx = NativeContext(model, 32, 2)
            runs.append(np.stack([ctx.decode([t]) for t in range(3, 15)]))  # one token at a time: the GEMV
    finally:
        engine.set_tuning("ternary_gemv_rows", before)
        engine.set_isa(isa)
    np.testing.assert_array_equal(runs[0], runs[1])
    with pytest.raises(BitnetError, match="out of range"):
        engine.set_tuning("ternary_gemv_rows", 3)


def test_autotune_writes_a_preset_the_engine_reads(tmp_path):
    from bitnet.tune import autotune

    before = {k: engine.get_tuning(k) for k in ("prefetch_bytes", "amx_min_batch", "head_gemv_rows")}
    try:
        path = autotune(tmp_path, n_threads=1, rounds=1, n_tokens=2, progress=False, n_layer=1, n_vocab=512)
    finally:
        for k, v in before.items():
            engine.set_tuning(k, v)
    preset = json.loads(path.read_text())
    assert path.name == f"{engine.cpu_signature()}.json" and preset["prefetch_bytes"] > 0
    assert preset["head_gemv_rows"] in (1, 2)
    out = _child(tmp_path)
    assert out.stdout.split() == [str(preset["prefetch_bytes"]), str(preset["amx_min_batch"])], out.stderr


@pytest.mark.skipif("avx2" not in engine.available_isas(), reason="no AVX2 on this CPU")
@pytest.mark.parametrize("isa", ["avx2maddubs", "avx2"])
def test_avx2_gemm_min_batch_does_not_change_prompt_logits(tiny_model, isa):
    ids = list(range(3, 40))  # one batch of 37 rows: the GEMM from threshold 2, the tiles at 1 << 20
    before, isa_before = engine.get_tuning("avx2_gemm_min_batch"), engine.isa()
    runs = []
    try:
        engine.set_isa(isa)
        for threshold in (2, 1 << 20, 16):
            engine.set_tuning("avx2_gemm_min_batch", threshold)
            runs.append(tiny_model.logits(ids))
    finally:
        engine.set_tuning("avx2_gemm_min_batch", before)
        engine.set_isa(isa_before)
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])
    with pytest.raises(BitnetError, match="out of range"):
        engine.set_tuning("avx2_gemm_min_batch", 1)


@pytest.mark.skipif("avx2" not in engine.available_isas(), reason="no AVX2 on this CPU")
def test_autotune_under_avx2_tunes_the_gemm_threshold(tmp_path):
    from bitnet.tune import NEVER, autotune

    keys = ("prefetch_bytes", "amx_min_batch", "head_gemv_rows", "head_prefetch_bytes", "ternary_gemv_rows",
            "avx2_gemm_min_batch")
    before, isa_before = {k: engine.get_tuning(k) for k in keys}, engine.isa()
    try:
        engine.set_isa("avx2")
        path = autotune(tmp_path, n_threads=1, rounds=1, n_tokens=2, progress=False, n_layer=1, n_vocab=512)
        preset = json.loads(path.read_text())
        assert preset["avx2_gemm_min_batch"] in (4, 8, 12, 16, 24, 32, NEVER)
        assert engine.get_tuning("avx2_gemm_min_batch") == preset["avx2_gemm_min_batch"]
        assert set(preset["measured_avx2_gemm_batch"]["16"]) == {"gemm_ms", "tiles_ms"}
    finally:
        for k, v in before.items():
            engine.set_tuning(k, v)
        engine.set_isa(isa_before)
