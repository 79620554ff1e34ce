"""GGUF kinds the ecosystem writes: bitnet.cpp's ARM-layout I2_S (detected and repacked), TL1/TL2 and
the id-39 TL2/MXFP4 ambiguity (refused, saying why), upstream llama.cpp's `bitnet` 2B-4T files with
per-tensor `.scale` tensors, and Q8_0 / Q6_K embeddings and heads (widened to F32 as ggml does)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.i2s import TAIL_BYTES, unpack_i2s
from tests.conftest import convert_checkpoint
from tests.gguf_rebuild import rebuild_gguf
from tests.hf_families import make_llama_bitnet_checkpoint

gguf = pytest.importorskip("gguf")
IDS = [3, 17, 250, 42, 8, 99, 123, 7, 311, 64]
MXFP4_BLOCK_BYTES = 17  # 32 elements: e8m0 scale + 16 bytes of e2m1


def logits_of(path, ids=IDS):
    with Model(path, n_threads=2) as m:
        return m.logits(ids), m.native.desc


def pack_arm64_i2s(ternary: np.ndarray, scale: float) -> bytes:
    """bitnet.cpp's ARM build: 64-element blocks in 16 bytes,
    byte[m] = c[m] << 6 | c[16+m] << 4 | c[32+m] << 2 | c[48+m]."""
    codes = (ternary.astype(np.int8) + 1).astype(np.uint8).reshape(-1, 4, 16)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    return packed.tobytes() + np.float32(scale).tobytes() + bytes(TAIL_BYTES - 4)


def as_arm_layout(src, dst):
    g, replace = read_gguf(src), {}
    for name, t in g.tensors.items():
        if t.ggml_type == 36:
            replace[name] = (36, pack_arm64_i2s(*unpack_i2s(t.data, t.ne[1], t.ne[0])))
    return rebuild_gguf(src, dst, replace=replace)


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    """A Llama-family model whose FFN neurons have their own gains, as trained models' do."""
    root = tmp_path_factory.mktemp("arm")
    return convert_checkpoint(make_llama_bitnet_checkpoint(root / "m", structured=True, seed=21))


def test_arm_layout_i2s_is_detected_and_repacked(structured, tmp_path):
    canonical, canonical_desc = logits_of(structured)
    assert "ARM" not in canonical_desc
    arm, desc = logits_of(as_arm_layout(structured, tmp_path / "arm.gguf"))
    assert "ARM layout" in desc and "repacked" in desc
    np.testing.assert_array_equal(arm, canonical)


def test_arm_layout_can_be_forced(tiny_gguf, tmp_path, monkeypatch):
    """Random weights have no structure to tell the layouts apart: such a file is read as the
    canonical (published) layout unless BITNET_I2S_LAYOUT says otherwise."""
    arm_file = as_arm_layout(tiny_gguf, tmp_path / "arm.gguf")
    canonical, _ = logits_of(tiny_gguf)
    monkeypatch.setenv("BITNET_I2S_LAYOUT", "64")
    forced, desc = logits_of(arm_file)
    assert "BITNET_I2S_LAYOUT=64" in desc
    np.testing.assert_array_equal(forced, canonical)
    monkeypatch.setenv("BITNET_I2S_LAYOUT", "96")
    with pytest.raises(BitnetError, match="BITNET_I2S_LAYOUT must be 128 or 64"):
        Model(arm_file)


def _retyped(src, dst, name, ggml_type, n_bytes, **kv):
    set_kv = {k.replace("__", "."): v for k, v in kv.items()}
    return rebuild_gguf(src, dst, replace={name: (ggml_type, bytes(n_bytes))}, set_kv=set_kv)


def test_tl1_is_refused_with_a_way_out(tiny_gguf, tmp_path):
    t = read_gguf(tiny_gguf).tensors["blk.0.attn_q.weight"]
    path = _retyped(tiny_gguf, tmp_path / "tl1.gguf", t.name, 38, len(t.data))
    with pytest.raises(BitnetError, match=r"attn_q\.weight' has type TL1, bitnet\.cpp's lookup-table layout.*cannot "
                                          r"be decoded from the file alone; convert the model from its Hugging Face "
                                          r"checkpoint instead"):  # fmt: skip
        Model(path)


@pytest.mark.parametrize("arch,file_type,message", [
    ("bitnet-b1.58", 40, r"type 39, which is TL2 in bitnet\.cpp files and MXFP4 upstream; the architecture "
                         r"'bitnet-b1\.58' is bitnet\.cpp's, and TL2 is not supported"),
    ("llama", 39, r"type 39, which is TL2 in bitnet\.cpp files and MXFP4 upstream; general\.file_type 39 is "
                  r"bitnet\.cpp's TL2"),
    ("llama", 1, r"attn_q\.weight' has type 39, MXFP4 in this \(non-bitnet\.cpp\) file: 4-bit floats, not a "
                 r"ternary type"),
])  # fmt: skip
def test_id_39_is_tl2_or_mxfp4_by_the_file_and_refused_either_way(structured, tmp_path, arch, file_type, message):
    t = read_gguf(structured).tensors["blk.0.attn_q.weight"]
    n_bytes = t.ne[0] * t.ne[1] // 32 * MXFP4_BLOCK_BYTES
    # The file reader decides id 39 from these two keys before the model is looked at.
    kv = {"general__architecture": (arch, "string"), "general__file_type": (file_type, "u32")}
    path = _retyped(structured, tmp_path / "id39.gguf", t.name, 39, n_bytes, **kv)
    with pytest.raises(BitnetError, match=message):
        Model(path)


def test_upstream_bitnet_scale_tensors_multiply(tiny_gguf, tmp_path):
    """Upstream llama.cpp's `bitnet` may carry `blk.N.attn_q.scale` (F32 [1]) multiplying the layer:
    the same model with every I2_S scale moved into such a tensor gives the same logits."""
    g = read_gguf(tiny_gguf)
    replace, add = {}, {}
    for name, t in g.tensors.items():
        if t.ggml_type == 36:
            data, n = bytearray(t.data), t.ne[0] * t.ne[1] // 4
            add[name.removesuffix(".weight") + ".scale"] = ((1,), 0, bytes(data[n : n + 4]))
            data[n : n + 4] = np.float32(1.0).tobytes()
            replace[name] = (36, bytes(data))
    path = rebuild_gguf(tiny_gguf, tmp_path / "scales.gguf", replace=replace, add=add)
    np.testing.assert_array_equal(logits_of(path)[0], logits_of(tiny_gguf)[0])


@pytest.fixture(scope="module")
def llama_heads(tmp_path_factory):
    """An untied Llama-family file and a tied one (Falcon-E), BF16 heads, for Q8_0 / Q6_K variants."""
    root = tmp_path_factory.mktemp("heads")
    untied = convert_checkpoint(make_llama_bitnet_checkpoint(root / "untied", seed=31))
    tied = convert_checkpoint(make_llama_bitnet_checkpoint(root / "tied", linear_class="autobitlinear", tied=True,
                                                           seed=32))  # fmt: skip
    return {"untied": untied, "tied": tied}


def _f32_tensor(path, name) -> np.ndarray:
    from bitnet.convert.dtypes import bf16_to_f32

    t = read_gguf(path).tensors[name]
    return bf16_to_f32(np.asarray(t.data).view(np.uint16)).reshape(t.ne[1], t.ne[0])


def _random_q6_k(rows: int, k: int, rng) -> bytes:
    blocks = np.zeros((rows * k // 256, 210), np.uint8)
    blocks[:, :192] = rng.integers(0, 256, (len(blocks), 192))
    blocks[:, 192:208] = rng.integers(-40, 40, (len(blocks), 16)).astype(np.int8).view(np.uint8)
    blocks[:, 208:] = np.full(len(blocks), 2e-3, np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.tobytes()


@pytest.mark.parametrize("kind", ["untied", "tied"])
@pytest.mark.parametrize("qtype", ["Q8_0", "Q6_K"])
def test_q8_0_and_q6_k_heads_run_as_ggml_dequantizes_them(llama_heads, tmp_path, kind, qtype):
    src = llama_heads[kind]
    name = "output.weight" if kind == "untied" else "token_embd.weight"
    head = _f32_tensor(src, name)
    ggml = gguf.GGMLQuantizationType[qtype]
    if qtype == "Q8_0":
        quantized = gguf.quants.quantize(head, ggml).tobytes()
    else:  # gguf-py dequantizes Q6_K but does not quantize it: any bytes are a valid Q6_K tensor
        quantized = _random_q6_k(*head.shape, np.random.default_rng(4))
    widened = gguf.quants.dequantize(np.frombuffer(quantized, np.uint8).reshape(head.shape[0], -1), ggml)
    quant_file = rebuild_gguf(src, tmp_path / "q.gguf", replace={name: (int(ggml), quantized)})
    f32_file = rebuild_gguf(src, tmp_path / "f.gguf", replace={name: (0, widened.astype(np.float32).tobytes())})
    ours, desc = logits_of(quant_file)  # read in place by the quantized kernels
    assert (f"output head {qtype}" if kind == "untied" else f"embedding {qtype} (tied head)") in desc
    np.testing.assert_array_equal(ours, logits_of(f32_file)[0])


def test_converter_writes_q8_0_heads_as_ggml_does(tmp_path):
    from bitnet.convert.hf_bitnet import convert
    from bitnet.convert.safetensors_reader import Checkpoint

    ckpt = make_llama_bitnet_checkpoint(tmp_path / "m", num_hidden_layers=1, seed=33)
    out = convert(ckpt, tmp_path / "q.gguf", output_type="q8_0", token_embedding_type="q8_0", progress=False)
    g = read_gguf(out)
    for name, hf_name in (("output.weight", "lm_head.weight"), ("token_embd.weight", "model.embed_tokens.weight")):
        expected = gguf.quants.quantize(Checkpoint(ckpt).load_f32(hf_name), gguf.GGMLQuantizationType.Q8_0)
        assert g.tensors[name].ggml_type == 8 and bytes(g.tensors[name].data) == expected.tobytes(), name
    logits, desc = logits_of(out)
    assert "embedding Q8_0 + output head Q8_0" in desc
    assert np.isfinite(logits).all()


def test_newer_bitnet_cpp_lut_ids_are_named(tiny_gguf, tmp_path):
    t = read_gguf(tiny_gguf).tensors["blk.0.attn_q.weight"]
    path = _retyped(tiny_gguf, tmp_path / "tl2-42.gguf", t.name, 42, len(t.data))
    message = r"unknown ggml type id 42 \(newer bitnet\.cpp builds .*TL1/TL2 .*convert the model from its Hugging Face"
    with pytest.raises(BitnetError, match=message):
        Model(path)
