"""llama.cpp's TQ2_0 / TQ1_0: our converter's bytes are llama.cpp's, the engine reads them (repacked to
I2_S when every non-zero block shares one scale, per-block otherwise), and the same weights as I2_S,
TQ2_0 and TQ1_0 give the same logits where the scales make the formats equivalent."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet.convert import tq_packing as tq
from bitnet.convert.dtypes import bf16_to_f32
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.i2s import unpack_i2s
from tests.conftest import convert_checkpoint
from tests.gguf_rebuild import rebuild_gguf
from tests.hf_families import make_llama_bitnet_checkpoint
from tests.hf_models import make_bitnet_checkpoint, reference_logits
from tests.onebitllm_reference import LINEAR_KEYS, ReferenceModel
from tests.onebitllm_reference import reference_logits as equations_logits
from tests.test_families import assert_logits_close, prompt_ids

gguf = pytest.importorskip("gguf")
OUTTYPES = ("i2_s", "tq2_0", "tq1_0")
GGUF_NAMES = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output", "wg": "ffn_gate",
              "wu": "ffn_up", "wd": "ffn_down"}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2B-4T-layout checkpoint whose scales are f16-exact (autobitlinear stores them in bf16),
    converted to every ternary outtype; and a Llama-family one (bitlinear: 1/scale is not)."""
    root = tmp_path_factory.mktemp("tq")
    b158 = make_bitnet_checkpoint(root / "b158", hidden_size=256, intermediate_size=512, num_attention_heads=8,
                                  num_key_value_heads=4, seed=11)  # fmt: skip
    llama = make_llama_bitnet_checkpoint(root / "llama", seed=12)
    out = {"b158": b158, "llama": llama}
    for name, ckpt in (("b158", b158), ("llama", llama)):
        for outtype in OUTTYPES:
            out[name, outtype] = convert_checkpoint(ckpt, outtype, root / f"{name}-{outtype}.gguf")
    return out


def test_tq_bytes_are_llama_cpps(files):
    """gguf-py (llama.cpp's Python twin) quantizes our dequantized weights to the same bytes."""
    types = {"tq2_0": gguf.GGMLQuantizationType.TQ2_0, "tq1_0": gguf.GGMLQuantizationType.TQ1_0}
    i2s = read_gguf(files["b158", "i2_s"])
    for outtype, qtype in types.items():
        g = read_gguf(files["b158", outtype])
        assert g.kv["general.architecture"] == "bitnet"
        assert g.kv["general.file_type"] == {"tq2_0": 37, "tq1_0": 36}[outtype]
        assert g.kv["bitnet.hidden_act"] == "relu2"
        for name, t in g.tensors.items():
            if t.ggml_type not in (34, 35):
                continue
            codes, scale = unpack_i2s(i2s.tensors[name].data, t.ne[1], t.ne[0])
            w = codes.astype(np.float32) * np.float32(np.float16(scale))
            assert bytes(t.data) == gguf.quants.quantize(w, qtype).tobytes(), name
            assert (gguf.quants.dequantize(np.asarray(t.data).reshape(t.ne[1], -1), qtype) == w).all(), name


def _i2s_with_f16_scales(path, dst):
    """The I2_S file with every tensor scale rounded to f16: the numbers a TQ file of it holds."""
    g, replace = read_gguf(path), {}
    for name, t in g.tensors.items():
        if t.ggml_type == 36:
            data, n = bytearray(t.data), t.ne[0] * t.ne[1] // 4
            data[n : n + 4] = np.float32(np.float16(np.frombuffer(bytes(data[n : n + 4]), np.float32)[0])).tobytes()
            replace[name] = (36, bytes(data))
    return rebuild_gguf(path, dst, replace=replace)


def _run(path, ids):
    with Model(path, n_threads=2) as m:
        tokens = list(m.generate_tokens(ids[:6], max_tokens=16, temperature=0.0))
        return m.logits(ids), tokens, m.native.desc


@pytest.mark.parametrize("family", ["b158", "llama"])
def test_i2s_tq2_0_tq1_0_give_the_same_model(files, family, tmp_path):
    """Bit for bit where the numbers agree: always between TQ2_0 and TQ1_0, and with I2_S when the
    scales are f16-exact (autobitlinear: bf16) or once I2_S's f32 scales are rounded to f16
    (bitlinear's 1/weight_scale), which is all a TQ file holds."""
    ids = prompt_ids(500, 20, seed=3)
    runs = {outtype: _run(files[family, outtype], ids) for outtype in OUTTYPES}
    for outtype in ("tq2_0", "tq1_0"):
        assert "repacked to I2_S" in runs[outtype][2] and "per-block" not in runs[outtype][2]
    same_numbers = runs["i2_s"]
    if family == "llama":
        same_numbers = _run(_i2s_with_f16_scales(files[family, "i2_s"], tmp_path / "f16.gguf"), ids)
    for outtype in ("tq2_0", "tq1_0"):
        np.testing.assert_array_equal(runs[outtype][0], same_numbers[0])
        assert runs[outtype][1] == same_numbers[1]
    assert_logits_close(runs["i2_s"][0], reference_logits(files[family], ids))


def _reference_from_gguf(path) -> ReferenceModel:
    """DESIGN §3's math on a 2B-4T-layout file's own weights, dequantized by gguf-py."""
    import torch

    g = read_gguf(path)
    kv = g.kv

    def tensor(name):
        t = g.tensors[name]
        data, shape = np.asarray(t.data), tuple(reversed(t.ne))
        if t.ggml_type in (34, 35):
            values = gguf.quants.dequantize(data.reshape(shape[0], -1), gguf.GGMLQuantizationType(t.ggml_type))
        elif t.ggml_type == 30:
            values = bf16_to_f32(data.view(np.uint16))
        else:
            values = data.view(np.float32 if t.ggml_type == 0 else np.float16).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(values).reshape(shape))

    a = kv["general.architecture"]
    embed = tensor("token_embd.weight")
    m = ReferenceModel(embed, embed, tensor("output_norm.weight"), n_head=kv[f"{a}.attention.head_count"],
                       n_head_kv=kv[f"{a}.attention.head_count_kv"], rope_theta=kv[f"{a}.rope.freq_base"],
                       eps=kv[f"{a}.attention.layer_norm_rms_epsilon"], act=kv[f"{a}.hidden_act"])  # fmt: skip
    for i in range(kv[f"{a}.block_count"]):
        layer = {key: tensor(f"blk.{i}.{GGUF_NAMES[key]}.weight") for key in LINEAR_KEYS}
        for norm in ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm"):
            layer[norm] = tensor(f"blk.{i}.{norm}.weight")
        m.layers.append(layer)
    return m


def test_blocks_with_their_own_scales_run_the_per_block_path(files, tmp_path):
    """A TQ2_0 file whose non-zero blocks have different scales cannot be one I2_S tensor: the
    engine keeps one scale per block (y = sum_b d_b * dot_b / s), checked against the equations
    on the same dequantized weights."""
    src = read_gguf(files["b158", "tq2_0"])
    rng = np.random.default_rng(5)
    replace = {}
    for name, t in src.tensors.items():
        if t.ggml_type != 35:
            continue
        codes, d = tq.unpack_tq2_0(t.data, t.ne[1], t.ne[0])
        d = (d * rng.uniform(0.5, 1.5, d.shape)).astype(np.float16)
        replace[name] = (35, tq.pack_tq2_0(codes, d.reshape(-1)).tobytes())
    path = rebuild_gguf(files["b158", "tq2_0"], tmp_path / "blocks.gguf", replace=replace)
    ids = prompt_ids(500, 16, seed=9)
    with Model(path, n_threads=2) as m:
        assert "per-block scales" in m.native.desc
        ours = m.logits(ids)
        one_by_one = np.stack([m.logits(ids[: i + 1])[-1] for i in range(4)])
    assert_logits_close(ours, equations_logits(_reference_from_gguf(path), ids))
    np.testing.assert_allclose(one_by_one, ours[:4], rtol=0, atol=1e-4 * np.abs(ours).max())


def test_tq2_0_code_3_is_refused(files, tmp_path):
    name = "blk.0.ffn_up.weight"
    data = bytearray(read_gguf(files["b158", "tq2_0"]).tensors[name].data)
    data[3] |= 0b11 << 4
    path = rebuild_gguf(files["b158", "tq2_0"], tmp_path / "bad.gguf", replace={name: (35, bytes(data))})
    with pytest.raises(BitnetError, match=r"blk\.0\.ffn_up\.weight' holds the unused 2-bit code 3: not a valid TQ2_0"):
        Model(path)


def test_tq_rows_must_be_whole_blocks(files, tmp_path):
    with pytest.raises(ValueError, match="TQ2_0 packs each row in blocks of 256 and cannot hold rows of 128"):
        convert_checkpoint(make_bitnet_checkpoint(tmp_path / "c", seed=1), "tq2_0", tmp_path / "x.gguf")
