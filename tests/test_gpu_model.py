"""The GPU backend's whole forward pass against the CPU engine, on tiny models of every family and
storage type, run in Triton's interpreter on CPU tensors (`bitnet.Model(path, device="cuda")` with
TRITON_INTERPRET=1). Contract (DESIGN section 3): logits float-exact, <= 1e-5 x max|logit| from
the engine (both are within float error of the model's own arithmetic; an int8 rounding-boundary
onset would show as a larger gap and is checked for explicitly), greedy text equal."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="the GPU backend needs torch")
pytest.importorskip("triton", reason="the GPU backend needs triton: pip install -e '.[gpu]'")

from bitnet import BitnetError, Model  # noqa: E402
from bitnet.convert import dummy  # noqa: E402
from bitnet.engine import NativeContext, NativeModel  # noqa: E402
from bitnet.gpu import GpuModel  # noqa: E402
from tests.conftest import REPO, convert_checkpoint  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET=0 and no CUDA device", allow_module_level=True)

DEMO = REPO / "models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf"
# head_dim 64, grouped-query attention, odd-ish widths that are still whole TQ blocks.
TINY = dummy.ModelShape(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_vocab=512, n_ctx=64,
                        hidden_act="relu2", rope_theta=500000.0)  # fmt: skip
PROMPT = [1, 17, 300, 42, 7, 99]
FLOAT_EXACT = 1e-5


def compare(path, ids=PROMPT, steps=(3, 250)) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest |gpu - cpu| / max|cpu logit| over a prompt's logits and decode steps after it."""
    gpu = GpuModel(path, "cuda")
    native = NativeModel(path)
    try:
        g_ctx, c_ctx = gpu.new_context(32), NativeContext(native, 32, 1)
        g = [g_ctx.decode(ids, all_logits=True)] + [g_ctx.decode([t])[None] for t in steps]
        c = [c_ctx.decode(ids, all_logits=True)] + [c_ctx.decode([t])[None] for t in steps]
        c_ctx.close()
    finally:
        native.close()
    g, c = np.concatenate(g), np.concatenate(c)
    return float(np.abs(g - c).max() / np.abs(c).max()), g, c


def assert_float_exact(path, **kw):
    err, g, c = compare(path, **kw)
    assert err <= FLOAT_EXACT, f"logits differ by {err:.2e} x max|logit|"
    np.testing.assert_array_equal(g.argmax(1), c.argmax(1))


def test_demo_model_logits_match_engine():
    assert_float_exact(DEMO)


def test_demo_model_greedy_text_equals_engine():
    kw = dict(max_tokens=4, temperature=0)
    with Model(DEMO, n_ctx=64) as cpu, Model(DEMO, n_ctx=64, device="cuda") as gpu:
        prompt = "It is a truth universally acknowledged"
        assert gpu.generate(prompt, **kw) == cpu.generate(prompt, **kw)
        # the cached prefix is reused on the GPU context as on the engine's
        assert gpu.generate(prompt + ", that", **kw) == cpu.generate(prompt + ", that", **kw)
        # prompt-lookup drafts verified in batches (several rows with all logits, then truncation)
        echo = f"{prompt}. {prompt}. {prompt}"
        assert gpu.generate(echo, lookup_decoding=True, **kw) == cpu.generate(echo, lookup_decoding=True, **kw)
        np.testing.assert_allclose(gpu.logits([5, 6, 7]), cpu.logits([5, 6, 7]), rtol=0,
                                   atol=FLOAT_EXACT * np.abs(cpu.logits([5, 6, 7])).max())


@pytest.mark.parametrize("outtype,embedding", [("i2_s", "f16"), ("tq2_0", "bf16"), ("tq1_0", "q8_0"),
                                               ("f16", "q6_k"), ("i2_s", "f32")])
def test_dummy_models_of_every_storage_type(tmp_path, outtype, embedding):
    """Ternary I2_S / TQ2_0 / TQ1_0 / F16 (TQ files are the `bitnet` architecture: SiLU) with every
    embedding (tied head) type."""
    path = dummy.generate(tmp_path / "m.gguf", TINY, outtype, seed=3, embedding_type=embedding, progress=False)
    assert_float_exact(path, steps=(5,))


@pytest.fixture(scope="module")
def llama_files(tmp_path_factory):
    from tests.hf_families import make_llama_bitnet_checkpoint

    root = tmp_path_factory.mktemp("gpu-llama")
    plain = make_llama_bitnet_checkpoint(root / "llama", num_hidden_layers=1, seed=4)
    falcon_e = make_llama_bitnet_checkpoint(root / "falcon-e", num_hidden_layers=1, use_rms_norm=True,
                                            linear_class="autobitlinear", seed=5)  # fmt: skip
    return {"llama": convert_checkpoint(plain, "i2_s", root / "llama.gguf"),
            "llama-tq2_0-blocks": _with_block_scales(convert_checkpoint(plain, "tq2_0", root / "llama-tq2.gguf")),
            "falcon-e": convert_checkpoint(falcon_e, "i2_s", root / "falcon-e.gguf")}


def _with_block_scales(path):
    """The TQ2_0 file with each block's scale moved by its own factor: per-block scales."""
    from bitnet.convert import tq_packing as tq
    from bitnet.convert.gguf_reader import read_gguf
    from tests.gguf_rebuild import rebuild_gguf

    rng, replace = np.random.default_rng(6), {}
    for name, t in read_gguf(path).tensors.items():
        if t.ggml_type == tq.GGML_TYPE_TQ2_0:
            codes, d = tq.unpack_tq2_0(t.data, t.ne[1], t.ne[0])
            d = (d * rng.uniform(0.5, 1.5, d.shape)).astype(np.float16)
            replace[name] = (tq.GGML_TYPE_TQ2_0, tq.pack_tq2_0(codes, d.reshape(-1)).tobytes())
    return rebuild_gguf(path, path.with_name("blocks.gguf"), replace=replace)


@pytest.mark.parametrize("name", ["llama", "llama-tq2_0-blocks", "falcon-e"])
def test_llama_family(llama_files, name):
    """`llama` with ternary tensors: "normal" RoPE, no sub-norms, untied BF16 head; per-block TQ
    scales (bitlinear's 1/scale is not f16-exact); Falcon-E's RMSNorm on every linear's input."""
    if name == "llama-tq2_0-blocks":
        assert "per-block scales" in GpuModel(llama_files[name], "cuda").desc  # the blocked kernels ran
    assert_float_exact(llama_files[name], steps=(5,))


def test_context_limits_and_bad_tokens():
    gpu = GpuModel(DEMO, "cuda")
    ctx = gpu.new_context(4)
    with pytest.raises(BitnetError, match="out of range"):
        ctx.decode([1, 10**6])
    with pytest.raises(BitnetError, match="context is full"):
        ctx.decode([1, 2, 3, 4, 5])
    assert ctx.n_past == 0
    with pytest.raises(BitnetError, match="CUDA device"):
        GpuModel(DEMO, "cpu")


def test_batched_sequences_match_one_by_one(tmp_path):
    """Three sequences in lockstep (one batch of rows per step: the GEMM path, batched attention)
    give each sequence the engine's logits for it alone."""
    path = dummy.generate(tmp_path / "m.gguf", TINY, "i2_s", seed=8, progress=False)
    prompts = np.array([[1, 2, 3, 4], [9, 8, 7, 6], [100, 200, 300, 400]])
    steps = np.array([[11], [12], [13]])
    gpu = GpuModel(path, "cuda")
    ctx = gpu.new_context(16, n_seq=3)
    got = np.concatenate([ctx.decode(prompts, all_logits=True), ctx.decode(steps, all_logits=True)], axis=1)
    native = NativeModel(path)
    try:
        for i in range(3):
            c = NativeContext(native, 16, 1)
            want = np.concatenate([c.decode(prompts[i], all_logits=True), c.decode(steps[i], all_logits=True)])
            c.close()
            assert np.abs(got[i] - want).max() <= FLOAT_EXACT * np.abs(want).max()
    finally:
        native.close()


def test_static_decode_step_equals_dynamic(tmp_path, llama_files):
    """The fixed-shape step that CUDA graphs replay (whole-cache attention, masked past the
    position) gives the plain step's logits, on two sequences, for the "normal" RoPE too."""
    tiny = dummy.generate(tmp_path / "tiny.gguf", TINY, "i2_s", seed=2, progress=False)
    for path in (tiny, llama_files["llama"]):
        gpu = GpuModel(path, "cuda")
        a, b = gpu.new_context(12, n_seq=2), gpu.new_context(12, n_seq=2)
        prompt = np.array([[5, 6, 7], [8, 9, 10]])
        a.decode(prompt)
        b.decode(prompt)
        for token in (11, 12):
            want = a.decode(np.array([[token], [token + 1]]))
            for n_keys in (None, b.n_past + 1):  # the whole cache; a bucket just holding the position
                with torch.no_grad():
                    got = b.forward_step_static(torch.tensor([token, token + 1]), torch.tensor(b.n_past),
                                                n_keys).numpy()
                assert np.abs(got - want).max() <= FLOAT_EXACT * np.abs(want).max()
            b._n_past += 1  # what GraphedDecoder.step does after a replay


def test_graph_buckets():
    from bitnet.gpu.graphs import bucket_for

    assert [bucket_for(p, 4096) for p in (0, 63, 64, 127, 128, 4095)] == [64, 64, 128, 128, 256, 4096]
    assert bucket_for(100, 100) == 100


def test_arm_layout_i2s_is_repacked_as_the_engine_does(tmp_path, monkeypatch):
    """bitnet.cpp's ARM I2_S layout (64-element blocks): the engine's note says it read it so, and
    the GPU loader repacks the same way (forced here: random codes carry no layout evidence)."""
    monkeypatch.setenv("BITNET_I2S_LAYOUT", "64")
    path = dummy.generate(tmp_path / "m.gguf", TINY, "i2_s", seed=4, progress=False)
    assert "ARM layout" in GpuModel(path, "cuda").desc
    assert_float_exact(path, steps=(5,))


def test_clear_errors_without_cuda_or_triton(monkeypatch):
    from bitnet.gpu import device

    monkeypatch.setattr(device, "interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BitnetError, match="no CUDA device is available.*TRITON_INTERPRET=1"):
        Model(DEMO, device="cuda")
    monkeypatch.setitem(__import__("sys").modules, "triton", None)  # import triton -> ImportError
    with pytest.raises(BitnetError, match=r"needs triton: pip install -e \"\.\[gpu\]\""):
        device.require_packages()


def test_scripts_take_device_cuda():
    """run_inference.py and e2e_benchmark.py with --device cuda, as a user runs them (here in the
    interpreter): the same greedy text as the engine; a benchmark record naming the device."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run([sys.executable, *map(str, a)], capture_output=True, text=True, env=env,
                                    cwd=REPO, timeout=600)  # fmt: skip
    args = ("run_inference.py", "-p", "It is a truth", "-n", "3", "-temp", "0", "-c", "32")
    gpu, cpu = run(*args, "--device", "cuda"), run(*args)
    assert gpu.returncode == 0 and cpu.returncode == 0, gpu.stderr + cpu.stderr
    assert gpu.stdout == cpu.stdout
    bench = run("utils/e2e_benchmark.py", "-m", DEMO, "-p", "4", "-n", "2", "-r", "1", "--json", "--device", "cuda")
    assert bench.returncode == 0, bench.stderr
    rec = json.loads(bench.stdout.splitlines()[-1])
    assert rec["isa"] == "triton-interpreter (CPU)" and rec["pp_tokens_per_s"] > 0 and rec["tg_tokens_per_s"] > 0
    bad = run(*args, "--device", "tpu")
    assert bad.returncode == 1 and "runs on a CUDA device, not 'tpu'" in bad.stderr
