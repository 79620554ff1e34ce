"""Converter: I2_S layout, ternarization vs transformers, GGUF writer, HF -> GGUF end to end, CLI."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet.convert.dtypes import bf16_to_f32, f32_to_bf16
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.hf_bitnet import convert
from bitnet.convert.i2s import pack_i2s, unpack_i2s
from bitnet.convert.safetensors_reader import Checkpoint
from bitnet.convert.ternary import absmean_ternarize, effective_scale, pack_hf, unpack_hf_packed
from bitnet.gguf_writer import GGUFWriter
from tests import hf_models  # sets TORCHDYNAMO_DISABLE before transformers is imported

torch = pytest.importorskip("torch")
from transformers.integrations import bitnet as tf_bitnet  # noqa: E402  (after importorskip)

ROOT = Path(__file__).resolve().parent.parent
CASES = [("packed", "autobitlinear"), ("packed", "bitlinear"), ("bf16", "autobitlinear"), ("f32", "autobitlinear")]
LINEAR_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}  # fmt: skip
NORM_NAMES = {"input_layernorm": "attn_norm", "self_attn.attn_sub_norm": "attn_sub_norm",
              "post_attention_layernorm": "ffn_norm", "mlp.ffn_sub_norm": "ffn_sub_norm"}  # fmt: skip


# -- I2_S -----------------------------------------------------------------------------------------
def test_i2s_bytes_match_hand_made_example():
    # Row 0: +1 x32, -1 x32, 0 x32, +1 x32 -> codes 2,0,1,2 -> byte 0b10_00_01_10 for every m.
    # Row 1: element m of each 32-group is m % 3 - 1 -> byte c<<6|c<<4|c<<2|c with c = m % 3.
    row0 = np.repeat(np.array([1, -1, 0, 1], np.int8), 32)
    row1 = np.tile(np.arange(32) % 3 - 1, 4).astype(np.int8)
    data = pack_i2s(np.stack([row0, row1]), 0.25)
    expected = bytes([0x86] * 32) + bytes((m % 3) * 0b01010101 for m in range(32))
    assert data == expected + struct.pack("<f", 0.25) + bytes(28)


def test_i2s_packs_the_flattened_tensor():
    # bitnet.cpp's quantize_i2_s: blocks of 128 over the flattened tensor, across row ends.
    rng = np.random.default_rng(2)
    t = rng.integers(-1, 2, size=(4, 96), dtype=np.int8)
    data = pack_i2s(t, 0.5)
    flat = t.reshape(-1, 4, 32) + 1
    expected = (flat[:, 0] << 6) | (flat[:, 1] << 4) | (flat[:, 2] << 2) | flat[:, 3]
    assert data[:96] == expected.astype(np.uint8).tobytes()
    codes, scale = unpack_i2s(data, 4, 96)
    assert (codes == t).all() and scale == 0.5


def test_i2s_round_trip_and_errors():
    rng = np.random.default_rng(1)
    t = rng.integers(-1, 2, size=(5, 384), dtype=np.int8)
    codes, scale = unpack_i2s(pack_i2s(t, 0.3), 5, 384)
    assert codes.dtype == np.int8 and (codes == t).all() and scale == np.float32(0.3)
    with pytest.raises(ValueError, match="I2_S cannot hold a 2x96 tensor"):
        pack_i2s(np.zeros((2, 96), np.int8), 1.0)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        pack_i2s(np.full((1, 128), 2, np.int8), 1.0)
    with pytest.raises(ValueError, match="unused code 3"):
        unpack_i2s(b"\xff" * 32 + bytes(32), 1, 128)
    with pytest.raises(ValueError, match="needs 64 bytes"):
        unpack_i2s(bytes(63), 1, 128)


# -- ternary weights vs transformers ------------------------------------------------------------
def test_absmean_equals_torch_weightquant():
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    # mean|W| = 1 exactly, values on the rounding ties: 0.5 -> 0 and 1.5/2.5 -> clipped, half to even
    ties = np.array([[0.5, -0.5, 1.5, -1.5, 2.5, -0.5, 0.0, 1.0] * 16], np.float32)
    for w in [ties, *(rng.standard_normal((64, 128)).astype(np.float32) * a for a in (1e-3, 0.05, 3.0))]:
        codes, scale = absmean_ternarize(w)
        wt = torch.from_numpy(w)
        s = 1.0 / wt.abs().mean().clamp(min=1e-5)
        assert (codes == (wt * s).round().clamp(-1, 1).numpy()).all()
        # torch's f32 sum may sit one ulp from the correctly rounded mean we compute
        assert abs(scale - np.float32(1 / s.item())) <= np.spacing(scale)
        ref = tf_bitnet.WeightQuant.forward(None, wt).numpy()
        np.testing.assert_allclose(codes * scale, ref, rtol=2**-22, atol=0)
    assert absmean_ternarize(np.zeros((1, 128), np.float32))[1] == np.float32(1e-5)


def test_hf_packed_layout_equals_transformers():
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, size=(32, 16), dtype=np.int8)
    packed = pack_hf(t)
    assert (packed == tf_bitnet.pack_weights(torch.from_numpy(t.copy())).numpy()).all()
    assert (unpack_hf_packed(packed) == tf_bitnet.unpack_weights(torch.from_numpy(packed), torch.int8).numpy()).all()
    # output row i*(out/4)+r lives in bits 2i..2i+1 of packed row r
    assert ((packed[3, 5] >> 4) & 3) == t[2 * 8 + 3, 5] + 1


@pytest.mark.parametrize("linear_class", ["bitlinear", "autobitlinear"])
def test_weight_scale_rule_matches_transformers_forward(linear_class):
    rng = np.random.default_rng(4)
    t = rng.integers(-1, 2, size=(64, 128), dtype=np.int8)
    ws = np.float32(0.37)
    x = torch.from_numpy(rng.standard_normal((3, 128)).astype(np.float32))
    if linear_class == "bitlinear":
        layer = tf_bitnet.BitLinear(128, 64, bias=False, dtype=torch.float32)
        layer.weight.copy_(torch.from_numpy(pack_hf(t)))
    else:
        layer = tf_bitnet.AutoBitLinear(128, 64, bias=False, dtype=torch.float32, online_quant=False)
        layer.weight.data.copy_(torch.from_numpy(t.astype(np.float32)))
    layer.weight_scale.fill_(float(ws))
    with torch.no_grad():
        y = layer(x).numpy()
    w_eff = torch.from_numpy(t.astype(np.float32) * effective_scale(ws, linear_class))
    xq = tf_bitnet.ActQuant.forward(None, x)
    np.testing.assert_allclose(y, (xq @ w_eff.T).numpy(), rtol=1e-5, atol=1e-5)


def test_bf16_conversions_match_torch():
    x = np.random.default_rng(5).standard_normal(4096).astype(np.float32)
    x[:3] = [1.00390625, 1.01171875, -3.0e38]  # exact ties (to even: down, up) and an overflow
    ours = f32_to_bf16(x)
    assert (ours.view(np.int16) == torch.from_numpy(x).bfloat16().view(torch.int16).numpy()).all()
    assert (bf16_to_f32(ours) == torch.from_numpy(x).bfloat16().float().numpy()).all()


# -- GGUF writer ---------------------------------------------------------------------------------
def test_writer_output_reads_back_with_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    path, a = tmp_path / "w.gguf", np.arange(12, dtype=np.float32)
    with GGUFWriter(path) as w:
        for key, value, kind in [("u8", 7, "u8"), ("i16", -3, "i16"), ("u64", 2**40, "u64"), ("f64", 0.5, "f64"),
                                 ("b", True, "bool"), ("s", "héllo", "string"), ("sa", ["a", "bc"], "string_array"),
                                 ("ia", [1, -2], "i32_array"), ("fa", [0.25], "f32_array")]:  # fmt: skip
            w.add_kv(key, value, kind)
        w.add_tensor("a", (4, 3), 0, 48)
        w.add_tensor("b", (5,), 1, 10)
        w.write_header()
        w.write_tensor_data("a", a)
        w.write_tensor_data("b", [np.ones(2, np.float16), np.zeros(3, np.float16).tobytes()])
    r = gguf.GGUFReader(path)
    assert r.fields["s"].contents() == "héllo" and r.fields["sa"].contents() == ["a", "bc"]
    assert r.fields["u64"].contents() == 2**40 and r.fields["ia"].contents() == [1, -2]
    assert (r.get_tensor(0).data.reshape(-1) == a).all() and r.get_tensor(1).data.tolist() == [1, 1, 0, 0, 0]
    assert r.get_tensor(1).data_offset % 32 == 0


def test_writer_leaves_nothing_behind_on_failure(tmp_path):
    path = tmp_path / "out.gguf"
    path.write_bytes(b"old")
    for failure in (KeyboardInterrupt, "missing", "order", "size"):
        with pytest.raises((KeyboardInterrupt, ValueError)), GGUFWriter(path) as w:
            w.add_tensor("x", (128,), 0, 512)
            w.add_tensor("y", (128,), 0, 512)
            w.write_header()
            if failure is KeyboardInterrupt:
                raise KeyboardInterrupt
            if failure == "order":
                w.write_tensor_data("y", bytes(512))
            w.write_tensor_data("x", bytes(512 if failure == "missing" else 100))
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.gguf"]


# -- HF checkpoint -> GGUF -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    out = {case: hf_models.make_bitnet_checkpoint(root / "-".join(case), layout=case[0], linear_class=case[1])
           for case in CASES}  # fmt: skip
    out["untied"] = hf_models.make_bitnet_checkpoint(root / "untied", tie_word_embeddings=False, seed=1)
    return out


def _hf_name(i, suffix):
    return f"model.layers.{i}.{suffix}"


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_i2s_conversion_equals_reference_weights(case, checkpoints, tmp_path):
    model_dir = checkpoints[case]
    g = read_gguf(convert(model_dir, tmp_path / "m.gguf", progress=False))
    ckpt, config = Checkpoint(model_dir), json.loads((model_dir / "config.json").read_text())
    ref = hf_models.reference_linear_weights(hf_models.load_reference(model_dir))
    for i in range(config["num_hidden_layers"]):
        for hf, gguf_name in LINEAR_NAMES.items():
            t = g.tensors[f"blk.{i}.{gguf_name}.weight"]
            expected = ref[_hf_name(i, hf)]
            assert t.ggml_type == 36 and t.ne == expected.shape[::-1]
            codes, scale = unpack_i2s(t.data, expected.shape[0], expected.shape[1])
            if case[0] == "packed":  # the stored codes and scale, exactly
                assert (codes * np.float32(scale) == expected).all()
            else:  # transformers' online absmean: same codes, scale within one ulp (see ternary.py)
                assert (codes == np.sign(expected)).all()
                np.testing.assert_allclose(codes * np.float32(scale), expected, rtol=2**-22, atol=0)
        for hf, gguf_name in NORM_NAMES.items():
            t = g.tensors[f"blk.{i}.{gguf_name}.weight"]
            assert t.ggml_type == 0 and (t.data.view(np.float32) == ckpt.load_f32(_hf_name(i, hf) + ".weight")).all()
    embd = g.tensors["token_embd.weight"]
    assert embd.ggml_type == (0 if case[0] == "f32" else 30) and embd.ne == (128, config["vocab_size"])
    assert embd.data.tobytes() == ckpt.raw("model.embed_tokens.weight").tobytes()
    assert "output.weight" not in g.tensors and len(g.tensors) == 2 + 11 * config["num_hidden_layers"]
    a = "bitnet-b1.58"
    assert g.kv["general.architecture"] == a and g.kv["general.file_type"] == 40 and g.kv["general.alignment"] == 32
    expected_kv = {"vocab_size": config["vocab_size"], "context_length": 512, "embedding_length": 128,
                   "block_count": 2, "feed_forward_length": 256, "attention.head_count": 4,
                   "attention.head_count_kv": 2, "rope.dimension_count": 32, "rope.freq_base": 500000.0,
                   "attention.layer_norm_rms_epsilon": np.float32(1e-5), "hidden_act": "relu2"}  # fmt: skip
    assert {k: g.kv[f"{a}.{k}"] for k in expected_kv} == expected_kv
    assert len(g.kv["tokenizer.ggml.tokens"]) == config["vocab_size"] and g.kv["tokenizer.ggml.model"] == "gpt2"


@pytest.mark.parametrize("outtype,ggml_type,file_type", [("f32", 0, 0), ("f16", 1, 1), ("bf16", 30, 32)])
def test_float_outtypes(outtype, ggml_type, file_type, checkpoints, tmp_path):
    model_dir = checkpoints[("packed", "bitlinear")]
    i2s = read_gguf(convert(model_dir, tmp_path / "q.gguf", progress=False))
    g = read_gguf(convert(model_dir, tmp_path / "f.gguf", outtype=outtype, token_embedding_type="f16", progress=False))
    assert g.kv["general.file_type"] == file_type
    for name, t in g.tensors.items():
        if name.endswith(tuple(f"{v}.weight" for v in LINEAR_NAMES.values())):
            codes, scale = unpack_i2s(i2s.tensors[name].data, t.ne[1], t.ne[0])
            w = (codes * np.float32(scale)).reshape(-1)
            stored = {"f32": w, "f16": w.astype(np.float16), "bf16": f32_to_bf16(w)}[outtype]
            assert t.ggml_type == ggml_type and t.data.tobytes() == stored.tobytes()
    embd = Checkpoint(model_dir).load_f32("model.embed_tokens.weight").astype(np.float16)
    assert (
        g.tensors["token_embd.weight"].ggml_type == 1
        and g.tensors["token_embd.weight"].data.tobytes() == embd.tobytes()
    )


def test_untied_head_is_written_as_stored(checkpoints, tmp_path):
    model_dir = checkpoints["untied"]
    g = read_gguf(convert(model_dir, tmp_path / "m.gguf", progress=False))
    head = g.tensors["output.weight"]
    assert head.ggml_type == 30 and head.data.tobytes() == Checkpoint(model_dir).raw("lm_head.weight").tobytes()


def _copy_checkpoint(src: Path, dst: Path, drop: str | None = None, config_patch: dict | None = None) -> Path:
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        if f.suffix in (".json",) and f.name != "config.json":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = {k: v for k, v in load_file(src / "model.safetensors").items() if k != drop}
    save_file(tensors, dst / "model.safetensors")
    config = {**json.loads((src / "config.json").read_text()), **(config_patch or {})}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"architectures": ["LlamaForCausalLM"]}, "supports BitNetForCausalLM"),
        ({"num_key_value_heads": 3}, "does not divide"),
        ({"hidden_size": 130}, "not a multiple of num_attention_heads"),
        ({"intermediate_size": 384}, "has shape"),
        ({"hidden_act": "gelu"}, "not supported"),
        ({"hidden_size": 2**40}, "positive integer up to 2147483647"),
        ({"vocab_size": True}, "positive integer"),
        ({"rope_theta": float("inf")}, "positive finite number"),
        ({"rms_norm_eps": float("nan")}, "positive finite number"),
        ({"quantization_config": "bitnet"}, "must be an object"),
        ({"rope_scaling": ["linear"]}, "must be an object"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false, got 'yes'"),
        ({"attention_bias": "no"}, "attention_bias must be true or false"),
        ({"eos_token_id": "x"}, "eos_token_id in generation_config.json or config.json must be an integer token id"),
        ({"bos_token_id": 10**6}, "bos token id 1000000 is outside the vocab"),
        ({"eos_token_id": 2.0}, "must be an integer token id, got 2.0"),
        (
            {
                "quantization_config": {
                    "quant_method": "bitnet",
                    "modules_to_not_convert": ["model.layers.0.mlp.up_proj"],
                }
            },
            "kept in float",
        ),
    ],
)
def test_bad_config_is_refused(patch, message, checkpoints, tmp_path):
    model_dir = _copy_checkpoint(checkpoints[("f32", "autobitlinear")], tmp_path / "m", config_patch=patch)
    with pytest.raises(ValueError, match=message):
        convert(model_dir, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("patch, message", [
    (lambda tok: tok["model"].update(vocab={}), "vocab is empty"),
    (lambda tok: tok["model"]["vocab"].update(huge=2**40), "not an integer in"),
    (lambda tok: tok["model"]["vocab"].update(neg=-1), "not an integer in"),
    (lambda tok: tok["model"]["vocab"].update(text="7"), "not an integer in"),
])  # fmt: skip
def test_tokenizer_json_the_loader_would_refuse_is_refused(patch, message, checkpoints, tmp_path):
    """The converter never writes a file its own loader refuses (an empty vocab used to be written)."""
    model_dir = _copy_checkpoint(checkpoints[("f32", "autobitlinear")], tmp_path / "m")
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    patch(tok)
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match=message):
        convert(model_dir, tmp_path / "out.gguf", progress=False)
    assert os.listdir(tmp_path) == ["m"]


def test_sharded_and_truncated_safetensors(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    src = checkpoints[("bf16", "autobitlinear")]
    sharded = _copy_checkpoint(src, tmp_path / "sharded")
    tensors = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    names, weight_map = sorted(tensors), {}
    for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        shard = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, sharded / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    one, two = (read_gguf(convert(d, tmp_path / f"{d.name}.gguf", progress=False)) for d in (src, sharded))
    assert {n: t.data.tobytes() for n, t in one.tensors.items()} == {
        n: t.data.tobytes() for n, t in two.tensors.items()
    }

    truncated = _copy_checkpoint(src, tmp_path / "truncated")
    with open(truncated / "model.safetensors", "r+b") as f:
        f.truncate(f.seek(0, 2) - 100)
    with pytest.raises(ValueError, match="truncated download"):
        convert(truncated, tmp_path / "t.gguf", progress=False)


# -- command line --------------------------------------------------------------------------------
def _cli(*args, script="convert-hf-to-gguf-bitnet.py"):
    env = {**os.environ, "TORCHDYNAMO_DISABLE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "utils" / script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def _assert_one_line_error(proc, code, text):
    assert proc.returncode == code and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert text in proc.stderr


def test_cli_success_help_and_usage_errors(checkpoints, tmp_path):
    model_dir = _copy_checkpoint(checkpoints[("packed", "autobitlinear")], tmp_path / "m")
    proc = _cli(model_dir, "--outtype", "i2_s")
    out = model_dir / "ggml-model-i2_s.gguf"
    assert proc.returncode == 0 and str(out) in proc.stdout and "KiB" in proc.stdout and out.is_file()
    assert _cli(model_dir, script="convert-helper-bitnet.py").returncode == 0 and out.is_file()
    helped = _cli("--help")
    assert helped.returncode == 0 and "--outtype" in helped.stdout and "--token-embedding-type" in helped.stdout
    _assert_one_line_error(_cli(model_dir, "--outtype", "q4_0"), 2, "invalid choice")
    _assert_one_line_error(_cli(model_dir, "--bogus"), 2, "unrecognized arguments")
    _assert_one_line_error(_cli(), 2, "required")
    _assert_one_line_error(_cli(tmp_path / "nope"), 1, "does not exist")
    _assert_one_line_error(_cli(model_dir, "--outfile", model_dir / "model.safetensors"), 1, "refusing to overwrite")
    assert (model_dir / "model.safetensors").stat().st_size > 1000


def test_cli_failures_leave_no_file(checkpoints, tmp_path):
    src = checkpoints[("packed", "autobitlinear")]
    not_bitnet = _copy_checkpoint(src, tmp_path / "llama", config_patch={"architectures": ["LlamaForCausalLM"]})
    _assert_one_line_error(_cli(not_bitnet), 1, "LlamaForCausalLM")
    missing = _copy_checkpoint(src, tmp_path / "missing", drop="model.layers.1.mlp.up_proj.weight")
    _assert_one_line_error(_cli(missing), 1, "model.layers.1.mlp.up_proj.weight")
    # A failure while tensor data is being written (code 3 in a packed weight): the old file stays.
    corrupt = _copy_checkpoint(src, tmp_path / "corrupt")
    from safetensors.torch import load_file, save_file

    tensors = load_file(corrupt / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = 0xFF
    save_file(tensors, corrupt / "model.safetensors")
    (corrupt / "ggml-model-i2_s.gguf").write_bytes(b"previous")
    _assert_one_line_error(_cli(corrupt), 1, "unused code 3")
    assert (corrupt / "ggml-model-i2_s.gguf").read_bytes() == b"previous"
    for d in (not_bitnet, missing, corrupt):
        assert not [f for f in os.listdir(d) if f.endswith(".tmp") or (f.endswith(".gguf") and d is not corrupt)]


def test_cli_q6_k_and_q8_0_embedding_and_head(checkpoints, tmp_path):
    """--token-embedding-type / --output-tensor-type q6_k and q8_0: ggml's bytes of the checkpoint's
    values; a hidden size Q6_K cannot hold (128) is refused in one line before any file is written."""
    from bitnet.convert.cli import HEAD_CHOICES
    from bitnet.convert.hf_bitnet import HEAD_ENCODINGS, HEAD_TYPES

    assert HEAD_CHOICES == HEAD_TYPES
    model_dir = hf_models.make_bitnet_checkpoint(tmp_path / "m", hidden_size=256, num_hidden_layers=1,
                                                 tie_word_embeddings=False, seed=5)  # fmt: skip
    ckpt = Checkpoint(model_dir)
    for embd_type, head_type in (("q6_k", "q6_k"), ("q8_0", "q6_k"), ("q6_k", "q8_0")):
        out = tmp_path / f"{embd_type}-{head_type}.gguf"
        proc = _cli(model_dir, "--outfile", out, "--token-embedding-type", embd_type,
                    "--output-tensor-type", head_type, "--no-progress")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        g = read_gguf(out)
        for name, hf_name, qtype in (("token_embd.weight", "model.embed_tokens.weight", embd_type),
                                     ("output.weight", "lm_head.weight", head_type)):  # fmt: skip
            t, head = g.tensors[name], HEAD_ENCODINGS[qtype]
            assert t.ggml_type == head.ggml_type and t.ne == (256, ckpt.shape(hf_name)[0]), name
            assert bytes(t.data) == head.pack(ckpt.load_f32(hf_name)).tobytes(), name
    narrow = _copy_checkpoint(checkpoints[("packed", "autobitlinear")], tmp_path / "narrow")
    proc = _cli(narrow, "--token-embedding-type", "q6_k")
    _assert_one_line_error(proc, 1, "cannot store 'token_embd.weight' as q6_k: Q6_K needs rows that are a positive "
                                    "multiple of 256 long, got 128; choose another type")  # fmt: skip
    assert not [f for f in os.listdir(narrow) if ".gguf" in f]
