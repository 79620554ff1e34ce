"""The int8-activation head option (head_act="int8", include/bitnet.h's bitnet_head_act): the
same logits bits on every kernel set this CPU has (the AVX2 and AVX-512 flavours included),
thread count and batch split, for a Q8_0 and a Q6_K head; what it computes, against a float64
twin of its definition on the engine's own final hidden states; and its plumbing and errors
(Model, NativeContext, run_inference.py --head-act, bitnet-bench --head-act). The kernels'
bit-identity on odd shapes is tests/native/test_head_int8.cpp's."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet import Model, engine
from bitnet.convert.dummy import ModelShape, generate
from bitnet.convert.gguf_reader import read_gguf
from bitnet.errors import BitnetError
from tests.context_logits import prompt_logits

REPO = Path(__file__).resolve().parent.parent
# hidden 512: two Q6_K super-blocks, 16 Q8_0 blocks per row; 2 layers; vocab 1000 (not a multiple of 256).
SHAPE = ModelShape(512, 1024, 2, 4, 2, 1000, 512, "relu2", 500000.0)
N_PROMPT = 40


def runnable_isas() -> list[str]:
    found = []
    for name in ("scalar", "avx2maddubs", "avx2vnni", "avx512bw", "avx512vnni", "neon"):
        try:
            engine.set_isa(name)
        except BitnetError:
            continue
        found.append(name)
    return found


@pytest.fixture(scope="module", params=["q8_0", "q6_k"])
def head_model(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("head") / f"{request.param}.gguf"
    return generate(out, SHAPE, "i2_s", seed=5, embedding_type=request.param, progress=False)


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("head") / "f16.gguf"
    return generate(out, SHAPE, "i2_s", seed=5, progress=False)


@pytest.fixture(autouse=True)
def restore_isa():
    before = engine.isa()
    yield
    engine.set_isa(before)


def int8_logits(model: engine.NativeModel, ids: np.ndarray, n_threads: int, splits=()) -> np.ndarray:
    return prompt_logits(model, ids, n_threads, splits, head_act="int8")


def test_same_bits_on_every_kernel_set_thread_count_and_split(head_model):
    model = engine.NativeModel(head_model)
    ids = np.random.default_rng(3).integers(0, model.n_vocab, N_PROMPT).astype(np.int32)
    isas = runnable_isas()
    engine.set_isa("scalar")
    want = int8_logits(model, ids, 1)
    assert np.isfinite(want).all()
    for isa in isas:
        engine.set_isa(isa)
        for n_threads in (1, 3):
            got = int8_logits(model, ids, n_threads)
            assert np.array_equal(got, want), f"{isa}, {n_threads} threads: int8-head logits differ from scalar"
        got = int8_logits(model, ids, 2, splits=(1, 2, 7, 30))
        assert np.array_equal(got, want), f"{isa}: int8-head logits depend on the batch split"
    assert len(isas) >= 1


def dequantized_head(path: Path) -> tuple[int, np.ndarray]:
    """(ggml type, the head's weights widened in float64 [vocab, n_embd])."""
    import gguf

    t = read_gguf(path).tensors["token_embd.weight"]
    rows = t.data.reshape(t.ne[1], -1)
    return t.ggml_type, gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(t.ggml_type)).astype(np.float64)


def int8_definition(hidden: np.ndarray, w: np.ndarray, block: int) -> np.ndarray:
    """head_int8.h's head in float64: per block a = max(max|x|, 1e-5), q = clip(rint(x 127/a)),
    logits = sum over blocks of (a / 127) * (W_block . q_block)."""
    x = hidden.astype(np.float32).reshape(hidden.shape[0], -1, block)
    a = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
    q = np.clip(np.rint(x * (np.float32(127) / a)), -127, 127)
    deq = (q * (a.astype(np.float64) / 127)).reshape(hidden.shape)
    return deq @ w.T


def test_int8_head_computes_its_definition(head_model):
    ggml_type, w = dequantized_head(head_model)
    block = {8: 32, 14: 256}[ggml_type]
    model = engine.NativeModel(head_model)
    ids = np.random.default_rng(4).integers(0, model.n_vocab, N_PROMPT).astype(np.int32)
    ctx = engine.NativeContext(model, N_PROMPT, 2)
    hidden = engine.hidden_multi([ctx], [ids])
    ctx.close()
    exact_model = Model(head_model, n_threads=2, n_ctx=N_PROMPT)
    int8_model = Model(head_model, n_threads=2, n_ctx=N_PROMPT, head_act="int8")
    exact, got = exact_model.logits(ids), int8_model.logits(ids)
    want = int8_definition(hidden, w, block)
    scale = np.abs(want).max()
    # float64 against the engine's f32 sums: float error only, far below what int8 activations
    # move (checked too: the exact head lies well outside this bound).
    assert np.abs(got - want).max() <= 2e-5 * scale
    assert np.abs(exact - want).max() > 50 * 2e-5 * scale
    assert not np.array_equal(got, exact), "head_act='int8' changed nothing"
    assert np.abs(exact - hidden.astype(np.float64) @ w.T).max() <= 2e-5 * scale


def test_f16_head_and_bad_modes_are_refused(f16_model, head_model):
    with pytest.raises(BitnetError, match="need a Q8_0 or Q6_K output head; this model's head is F16"):
        Model(f16_model, head_act="int8")
    with pytest.raises(BitnetError, match="unknown head activation mode 'int4'"):
        Model(head_model, head_act="int4")
    model = engine.NativeModel(f16_model)
    ctx = engine.NativeContext(model, 8, 1)
    with pytest.raises(BitnetError, match="Q8_0 or Q6_K"):
        ctx.set_head_act("int8")
    ctx.set_head_act("exact")  # always allowed
    assert engine.lib().bitnet_context_set_head_act(ctx._handle, 7) == -4  # BITNET_ERR_ARGUMENT
    assert "unknown head activation mode 7" in engine.last_error()
    ctx.close()


def test_model_setting_reaches_every_new_context(head_model):
    model = engine.NativeModel(head_model)
    ids = np.arange(1, 9, dtype=np.int32)
    ctx = engine.NativeContext(model, 8, 1)
    ctx.set_head_act("int8")
    want = ctx.decode(ids)
    ctx.close()
    model.set_head_act("int8")
    ctx = engine.NativeContext(model, 8, 1)
    assert np.array_equal(ctx.decode(ids), want)
    ctx.close()


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_inference.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_run_inference_flag(head_model, f16_model):
    ok = run("-m", head_model, "-p", "", "-n", "3", "-temp", "0", "--head-act", "int8")
    assert ok.returncode == 0, ok.stderr
    bad = run("-m", f16_model, "-p", "", "-n", "3", "--head-act", "int8")
    assert bad.returncode == 1 and "Q8_0 or Q6_K" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    usage = run("-m", head_model, "--head-act", "int4")
    assert usage.returncode == 2 and "--head-act" in usage.stderr


def bench_binary() -> Path:
    found = [p for p in REPO.glob("build/**/bin/bitnet-bench") if p.is_file()]
    if not found:
        pytest.skip("bitnet-bench is not built")
    return max(found, key=lambda p: p.stat().st_mtime)


def test_bench_flag(head_model, f16_model):
    cmd = [str(bench_binary()), "-p", "0", "-n", "2", "-r", "1", "-t", "1", "--no-bandwidth", "--json"]
    out = subprocess.run([*cmd, "-m", str(head_model), "--head-act", "exact,int8"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and "+int8head" in rows[1] and "+int8head" not in rows[0]
    bad = subprocess.run([*cmd, "-m", str(f16_model), "--head-act", "int8"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "Q8_0 or Q6_K" in bad.stderr


def test_e2e_benchmark_flag(head_model, f16_model):
    cmd = [sys.executable, str(REPO / "utils" / "e2e_benchmark.py"), "-p", "4", "-n", "2", "-r", "1", "-t", "1",
           "--json", "--head-act", "int8", "-m"]
    out = subprocess.run([*cmd, str(head_model)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0 and '"isa": ' in out.stdout and "+int8head" in out.stdout, out.stderr
    bad = subprocess.run([*cmd, str(f16_model)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 1 and "Q8_0 or Q6_K" in bad.stderr


def test_server_flag(f16_model):
    proc = subprocess.run([sys.executable, str(REPO / "run_inference_server.py"), "-m", str(f16_model), "--port", "0",
                           "--head-act", "int8"], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Q8_0 or Q6_K" in lines[0], proc.stderr
    from bitnet.server.cli import build_parser, settings_from_args

    args = build_parser().parse_args(["-m", "x.gguf", "--head-act", "int8"])
    assert settings_from_args(args, ()).head_act == "int8"
