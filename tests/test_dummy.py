"""Dummy models (utils/generate-dummy-bitnet-model.py): the size table, TQ1_0/TQ2_0 packing, the
synthetic vocabulary, files that load and run, streaming, and the command line."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitnet import Model
from bitnet.convert import dummy, i2s, synthetic_vocab
from bitnet.convert.gguf_reader import read_gguf
from bitnet.convert.hf_bitnet import HEAD_ENCODINGS
from bitnet.convert.tq_packing import (
    dequantize_tq1_0,
    dequantize_tq2_0,
    pack_tq1_0,
    pack_tq2_0,
    tq1_0_n_bytes,
    tq2_0_n_bytes,
    unpack_tq1_0,
    unpack_tq2_0,
)
from bitnet.tokenizer import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, Tokenizer

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "utils" / "generate-dummy-bitnet-model.py"
TINY = dummy.ModelShape(n_embd=256, n_ff=512, n_layer=2, n_head=4, n_head_kv=2, n_vocab=1000, n_ctx=512,
                        hidden_act="relu2", rope_theta=500000.0)  # fmt: skip
HPARAM_KEYS = ("vocab_size", "context_length", "embedding_length", "block_count", "feed_forward_length",
               "attention.head_count", "attention.head_count_kv", "rope.dimension_count", "rope.freq_base",
               "attention.layer_norm_rms_epsilon", "hidden_act")  # fmt: skip
TOKENIZER_KEYS = ("model", "pre", "tokens", "token_type", "merges", "bos_token_id", "eos_token_id",
                  "eot_token_id", "add_bos_token")  # fmt: skip


def run_script(*args, timeout: float = 120):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """The tiny shape in every outtype, one seed."""
    out = tmp_path_factory.mktemp("dummy")
    return {t: dummy.generate(out / f"tiny-{t}.gguf", TINY, t, seed=7, progress=False) for t in dummy.OUTTYPES}


# -- the size table ----------------------------------------------------------------------------------
def test_size_table_has_bitnet_cpp_sizes_and_2b4t():
    assert list(dummy.MODEL_SIZES) == ["125M", "350M", "1B", "1.5B", "2.7B", "3.8B", "7B", "13B", "30B", "70B",
                                       "100B", "2B-4T", "large", "3B"]  # fmt: skip
    b3 = dummy.MODEL_SIZES["3B"]
    assert (b3.n_embd, b3.n_ff, b3.n_layer, b3.n_head, b3.n_vocab) == (3200, 8640, 26, 32, 32002)
    large = dummy.MODEL_SIZES["large"]
    assert (large.n_embd, large.n_ff, large.n_layer, large.n_head, large.n_vocab) == (1536, 4096, 24, 16, 32002)
    for name, s in dummy.MODEL_SIZES.items():
        if name != "3B":  # 1bitLLM's 3200 / 8640: I2_S and f16 only (TQ rows are whole 256-blocks)
            assert s.n_embd % 256 == 0 and s.n_ff % 256 == 0, name  # every outtype's block fits
        assert s.n_embd % s.n_head == 0 and s.n_head % s.n_head_kv == 0 and (s.n_embd // s.n_head) % 2 == 0, name
    assert dummy.MODEL_SIZES["2B-4T"] == dummy.ModelShape(2560, 6912, 30, 20, 5, 128256, 4096, "relu2", 500000.0)
    assert dummy.MODEL_SIZES["125M"] == dummy.ModelShape(768, 3072, 11, 12, 12, 32002, 2048, "silu", 10000.0)
    assert (dummy.MODEL_SIZES["100B"].n_ff, dummy.MODEL_SIZES["30B"].n_head) == (45568, 52)


def test_2b4t_plan_has_the_official_tensor_shapes():
    hp = dummy.hparams_for(dummy.MODEL_SIZES["2B-4T"], "x")
    jobs = {j.name: j for j in dummy.plan_tensors(hp, "i2_s", "f16", seed=0)}
    assert len(jobs) == 2 + 30 * 11 and "output.weight" not in jobs
    assert jobs["token_embd.weight"].ne == (2560, 128256) and jobs["token_embd.weight"].n_bytes == 2560 * 128256 * 2
    shapes = {"attn_q": (2560, 2560), "attn_k": (2560, 640), "attn_v": (2560, 640), "attn_output": (2560, 2560),
              "ffn_gate": (2560, 6912), "ffn_up": (2560, 6912), "ffn_down": (6912, 2560)}  # fmt: skip
    for name, ne in shapes.items():
        job = jobs[f"blk.29.{name}.weight"]
        assert job.ne == ne and job.ggml_type == 36 and job.n_bytes == ne[0] * ne[1] // 4 + 32
    assert jobs["blk.0.ffn_sub_norm.weight"].ne == (6912,) and jobs["blk.0.attn_sub_norm.weight"].ne == (2560,)


# -- TQ2_0 / TQ1_0 -------------------------------------------------------------------------------------
def test_tq2_0_hand_made_block():
    # Weight 0 = +1, 32 = -1, 64 = 0, 96 = +1, the rest 0: byte 0 = 2 | 0 << 2 | 1 << 4 | 2 << 6.
    t = np.zeros((1, 256), np.int8)
    t[0, [0, 32, 64, 96]] = [1, -1, 0, 1]
    t[0, 128 + 33] = -1  # second half, m = 1, n = 1: byte 33 = 1 | 0 << 2 | 1 << 4 | 1 << 6
    data = pack_tq2_0(t, 1.0).tobytes()
    assert len(data) == 66 == tq2_0_n_bytes(1, 256)
    expected = bytearray([0x55] * 64)
    expected[0], expected[33] = 0x92, 0x51
    assert data == bytes(expected) + struct.pack("<e", 1.0)


def test_tq1_0_hand_made_block():
    # All-zero trits (codes 1) give v = 121 -> ceil(121 * 256 / 243) = 128 in qs; the qh bytes hold
    # four trits then a 0: v = 40 * 3 = 120 -> 127. Weight 0 = +1 (first trit of byte 0): v = 202 -> 213.
    # Weight 240 + 4 = -1 (qh byte 0, second trit): v = (27 + 0 + 3 + 1) * 3 = 93 -> 98.
    t = np.zeros((1, 256), np.int8)
    t[0, 0], t[0, 244] = 1, -1
    data = pack_tq1_0(t, 0.5).tobytes()
    assert len(data) == 54 == tq1_0_n_bytes(1, 256)
    assert data == bytes([213] + [128] * 47 + [98, 127, 127, 127]) + struct.pack("<e", 0.5)


@pytest.mark.parametrize("pack, unpack, dequantize", [(pack_tq2_0, unpack_tq2_0, dequantize_tq2_0),
                                                      (pack_tq1_0, unpack_tq1_0, dequantize_tq1_0)])  # fmt: skip
def test_tq_round_trip(pack, unpack, dequantize):
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, size=(3, 768), dtype=np.int8)
    d = np.float16(rng.uniform(0.01, 1, size=9)).astype(np.float32)  # one scale per block
    back, d_back = unpack(pack(t, d), 3, 768)
    assert back.dtype == np.int8 and (back == t).all() and (d_back.reshape(-1) == d).all()
    assert np.array_equal(dequantize(pack(t, d), 3, 768), t * np.repeat(d, 256).reshape(3, 768))


@pytest.mark.parametrize("name, pack, dequantize", [("TQ2_0", pack_tq2_0, dequantize_tq2_0),
                                                    ("TQ1_0", pack_tq1_0, dequantize_tq1_0)])  # fmt: skip
def test_tq_bytes_equal_gguf_py_reference(name, pack, dequantize):
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[name]
    rng = np.random.default_rng(4)
    t = rng.integers(-1, 2, size=(4, 512), dtype=np.int8)
    w = t * np.float32(np.float16(0.037))  # llama.cpp's quantizer: d = max|w| of the block
    ours = pack(t, np.float16(0.037))
    assert ours.tobytes() == gguf.quants.quantize(w, qtype).tobytes()
    assert np.array_equal(dequantize(ours, 4, 512), gguf.quants.dequantize(ours.reshape(4, -1), qtype))


def test_tq_errors():
    with pytest.raises(ValueError, match="multiple of 256"):
        pack_tq2_0(np.zeros((1, 128), np.int8), 1.0)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        pack_tq1_0(np.full((1, 256), 2, np.int8), 1.0)
    with pytest.raises(ValueError, match="needs 66 bytes"):
        unpack_tq2_0(bytes(65), 1, 256)
    with pytest.raises(ValueError, match="unused code 3"):
        unpack_tq2_0(b"\xff" * 64 + bytes(2), 1, 256)


# -- the canonical weights: I2_S code bytes -----------------------------------------------------------
def test_random_i2s_codes_are_valid_i2s_and_uniform():
    codes = dummy.random_i2s_codes(np.random.default_rng(0), 4 * 128 * 256)
    t = dummy._ternary(codes, 4 * 128, 256)  # unpack_i2s refuses the unused code 3
    assert i2s.pack_i2s(t, 0.5) == codes.tobytes() + struct.pack("<f", 0.5) + bytes(28)
    assert np.allclose(np.bincount(t.reshape(-1) + 1) / t.size, 1 / 3, atol=0.01)


def test_scale_keeps_unit_variance_and_is_f16_exact():
    s = dummy.ternary_scale(0, "blk.0.ffn_down.weight", 6912)
    assert s == float(np.float16(s)) and 0.9 <= s * np.sqrt(2 * 6912 / 3) <= 1.1


# -- synthetic vocabulary ----------------------------------------------------------------------------
def test_vocab_2b4t_layout():
    v = synthetic_vocab.build_vocab(128256)
    assert len(v.tokens) == len(v.types) == 128256 and len(set(v.tokens)) == 128256
    assert (v.bos_id, v.eos_id, v.eot_id) == (128000, 128001, 128009)
    assert v.tokens[128000:128010] == list(synthetic_vocab.LLAMA3_FIRST_SPECIALS)
    assert v.tokens[128010] == "<|reserved_special_token_5|>" and v.tokens[-1] == "<|reserved_special_token_250|>"
    assert set(v.types[:128000]) == {TOKEN_TYPE_NORMAL} and set(v.types[128000:]) == {TOKEN_TYPE_CONTROL}
    assert len(v.merges) == 128000 - 256


@pytest.mark.parametrize("n_vocab", [512, 1000, 32002])
def test_vocab_merges_are_consistent(n_vocab):
    v = synthetic_vocab.build_vocab(n_vocab)
    assert len(v.tokens) == n_vocab and v == synthetic_vocab.build_vocab(n_vocab)  # deterministic
    ids = {t: i for i, t in enumerate(v.tokens)}
    for rank, merge in enumerate(v.merges):
        left, right = merge.split(" ")
        assert ids[left] < ids[left + right] and ids[right] < ids[left + right] and ids[left + right] == 256 + rank
    assert all(synthetic_vocab.BYTE_OF_CHAR.get(c) is not None for t in v.tokens[: v.bos_id] for c in t)


def test_vocab_loads_in_our_tokenizer_and_round_trips_text():
    meta = {key: value for key, value, _ in synthetic_vocab.gguf_tokenizer_fields(32002)}
    tok = Tokenizer.from_gguf_metadata(meta)
    text = "The quick brown fox's 123 jumps!\n\n\tdef f(x):  return x**2  # Zürich 😀 Привет"
    ids = tok.encode(text, add_bos=False)
    assert tok.decode(ids) == text and len(ids) < len(text.encode()) * 0.8  # merges do merge
    assert tok.encode("<|eot_id|>", add_bos=False) == [tok.eot_id] and tok.is_eog(tok.eos_id)
    assert tok.encode("hi")[0] == tok.bos_id == 31752


def test_vocab_size_limits():
    with pytest.raises(ValueError, match="too small"):
        synthetic_vocab.build_vocab(100)


# -- generated files --------------------------------------------------------------------------------
def test_i2s_and_f16_files_give_identical_logits_and_tokens(tiny_files):
    with Model(tiny_files["i2_s"], n_threads=2, n_ctx=128) as a, Model(tiny_files["f16"], n_threads=2, n_ctx=128) as b:
        ids = a.tokenize("Once upon a time, the quick brown fox")
        la = a.logits(ids)
        assert np.array_equal(la, b.logits(ids)) and np.isfinite(la).all()
        assert 0.5 < la.std() < 8  # numerically sane: N(0, 2^2)-like logits
        text = a.generate("Hello", max_tokens=8, temperature=0)
        assert text == b.generate("Hello", max_tokens=8, temperature=0)
        assert 1 <= len(list(a.generate_tokens("Hello", max_tokens=8, temperature=0))) <= 8
        chat = a.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=4)
        assert chat["object"] == "chat.completion"


@pytest.mark.parametrize("embedding_type", ["q8_0", "q6_k"])
def test_quantized_embedding_is_the_f32_one_quantized(tmp_path, embedding_type):
    """--embedding-type q8_0 / q6_k: ggml's bytes of the values the f32 file holds, read by the engine
    as the tied head. The logits move (not lossless; a random ternary model amplifies the change,
    ~5% of max|logit| here) but stay close: correlation 0.998 measured."""
    f32 = dummy.generate(tmp_path / "f32.gguf", TINY, "i2_s", seed=7, embedding_type="f32", progress=False)
    quant = dummy.generate(tmp_path / "q.gguf", TINY, "i2_s", seed=7, embedding_type=embedding_type, progress=False)
    values = read_gguf(f32).tensors["token_embd.weight"].data.view(np.float32).reshape(TINY.n_vocab, TINY.n_embd)
    t, head = read_gguf(quant).tensors["token_embd.weight"], HEAD_ENCODINGS[embedding_type]
    assert t.ggml_type == head.ggml_type and bytes(t.data) == head.pack(values).tobytes()
    with Model(f32, n_threads=2, n_ctx=64) as a, Model(quant, n_threads=2, n_ctx=64) as b:
        assert f"embedding {embedding_type.upper()} (tied head)" in b.native.desc
        ids = a.tokenize("Once upon a time, the quick brown fox")
        la, lb = a.logits(ids), b.logits(ids)
    assert np.isfinite(lb).all() and np.corrcoef(la.ravel(), lb.ravel())[0, 1] > 0.99


def test_deep_model_activations_stay_bounded(tmp_path):
    shape = dummy.ModelShape(256, 512, 24, 4, 4, 600, 256, "silu", 10000.0)
    path = dummy.generate(tmp_path / "deep.gguf", shape, "i2_s", seed=1, progress=False)
    with Model(path, n_threads=2, n_ctx=64) as m:
        logits = m.logits(m.tokenize("a b c d e f g"))
    assert np.isfinite(logits).all() and 0.5 < logits.std() < 8


def test_gguf_has_every_key_and_tensor(tiny_files):
    f = read_gguf(tiny_files["i2_s"])
    a = "bitnet-b1.58"
    assert f.kv["general.architecture"] == a and f.kv["general.file_type"] == 40
    assert {f"{a}.{k}" for k in HPARAM_KEYS} | {f"tokenizer.ggml.{k}" for k in TOKENIZER_KEYS} <= set(f.kv)
    expected = {"vocab_size": 1000, "context_length": 512, "embedding_length": 256, "block_count": 2,
                "feed_forward_length": 512, "attention.head_count": 4, "attention.head_count_kv": 2,
                "rope.dimension_count": 64, "rope.freq_base": 500000.0, "hidden_act": "relu2"}  # fmt: skip
    assert {k: f.kv[f"{a}.{k}"] for k in expected} == expected
    assert len(f.kv["tokenizer.ggml.tokens"]) == 1000 and f.kv["tokenizer.chat_template"]
    assert list(f.tensors) == [j.name for j in dummy.plan_tensors(dummy.hparams_for(TINY, "x"), "i2_s", "f16", 7)]
    assert f.tensors["token_embd.weight"].ggml_type == 1 and f.tensors["blk.1.ffn_down.weight"].ne == (512, 256)
    f16 = read_gguf(tiny_files["f16"])
    assert f16.kv["general.file_type"] == 1
    w = f16.tensors["blk.1.ffn_down.weight"].data.view(np.float16).reshape(256, 512)
    t, scale = i2s.unpack_i2s(f.tensors["blk.1.ffn_down.weight"].data, 256, 512)
    assert np.array_equal(w, (t * np.float16(scale)).astype(np.float16)) and scale == np.abs(w).max()


def test_tq_files_are_llama_cpp_bitnet_and_hold_the_same_weights(tiny_files):
    gguf = pytest.importorskip("gguf")
    f16 = read_gguf(tiny_files["f16"])
    for outtype, file_type in (("tq2_0", 37), ("tq1_0", 36)):
        r = gguf.GGUFReader(tiny_files[outtype])
        kv = {k: field.contents() for k, field in r.fields.items() if not k.startswith("GGUF.")}
        assert kv["general.architecture"] == "bitnet" and kv["general.file_type"] == file_type
        assert {f"bitnet.{k}" for k in HPARAM_KEYS} <= set(kv) and kv["bitnet.hidden_activation"] == "relu2"
        for t in r.tensors:
            stored = np.asarray(t.data)
            if t.tensor_type.name == outtype.upper():
                stored = gguf.quants.dequantize(stored, t.tensor_type)
            ref = f16.tensors[t.name]
            ref = ref.data.view(np.float32 if ref.ggml_type == 0 else np.float16).astype(np.float32)
            assert np.array_equal(stored.astype(np.float32).reshape(-1), ref), t.name
        # The engine reads llama.cpp's TQ types too (repacked to I2_S): the same weights and f16-exact
        # scales, so the same logits as the I2_S file, bit for bit.
        ids = [1, 5, 9, 14, 3]
        with Model(tiny_files[outtype], n_threads=1, n_ctx=64) as tq, Model(tiny_files["i2_s"], n_threads=1,
                                                                            n_ctx=64) as ref:  # fmt: skip
            np.testing.assert_array_equal(tq.logits(ids), ref.logits(ids))


def test_same_seed_same_file_other_seed_other_weights(tiny_files, tmp_path):
    again = dummy.generate(tmp_path / "again.gguf", TINY, "i2_s", seed=7, progress=False)
    assert again.read_bytes() == tiny_files["i2_s"].read_bytes()
    other = read_gguf(dummy.generate(tmp_path / "other.gguf", TINY, "i2_s", seed=8, progress=False))
    mine = read_gguf(tiny_files["i2_s"])
    assert not np.array_equal(other.tensors["blk.0.attn_q.weight"].data, mine.tensors["blk.0.attn_q.weight"].data)


def test_generation_streams_in_bounded_memory(tmp_path):
    # 125M as f16 (a ~250 MiB file): peak RSS grows by a few chunks, not by the file.
    code = (
        "import resource, sys, json; from bitnet.convert import dummy, synthetic_vocab;"
        "synthetic_vocab.build_vocab(32002); base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "dummy.generate(sys.argv[1], '125M', 'f16', progress=False);"
        "print(json.dumps([base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))"
    )
    out = tmp_path / "m.gguf"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=True)  # fmt: skip
    base_kib, peak_kib = json.loads(proc.stdout)
    size = out.stat().st_size
    assert size > 240 * 2**20
    assert (peak_kib - base_kib) * 1024 < size / 5, (base_kib, peak_kib, size)


# -- command line ---------------------------------------------------------------------------------
def assert_one_error_line(proc, code: int, match: str = ""):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr


@pytest.mark.parametrize("args, match", [
    (["--model-size", "5B"], "unknown model size"),
    (["--outtype", "tl2"], "invalid choice"),
    (["--vocab-size", "10"], "vocabulary size"),
    (["--n-layers", "0"], "layer count"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "x"], "invalid int"),
    (["--bogus"], "unrecognized"),
])  # fmt: skip
def test_cli_usage_errors_exit_2(tmp_path, args, match):
    proc = run_script(tmp_path / "x.gguf", *args)
    assert_one_error_line(proc, 2, match)
    assert not (tmp_path / "x.gguf").exists()


def test_cli_requires_an_output():
    assert_one_error_line(run_script("--model-size", "125M"), 2, "OUT")


def test_cli_writes_refuses_to_overwrite_and_forces(tmp_path):
    args = ["--model-size", "125m", "--n-layers", "1", "--vocab-size", "1000", "--no-progress"]
    proc = run_script(tmp_path, *args)  # a directory: bitnet.cpp-style file name inside it
    out = tmp_path / "dummy-bitnet-125m.i2_s.gguf"
    assert proc.returncode == 0 and proc.stdout.startswith(f"wrote {out}"), proc.stderr
    with Model(out, n_ctx=64) as m:
        assert m.n_vocab == 1000 and m.metadata["bitnet-b1.58.block_count"] == 1
    before = out.read_bytes()
    assert_one_error_line(run_script(out, *args, "--seed", "1"), 1, "--force")
    assert out.read_bytes() == before
    assert run_script(out, *args, "--seed", "1", "--force").returncode == 0 and out.read_bytes() != before
    # bitnet.cpp's form: a model directory, then --outfile
    proc = run_script(tmp_path, "--outfile", tmp_path / "b.gguf", "--outtype", "tq2_0", *args)
    assert proc.returncode == 0 and (tmp_path / "b.gguf").stat().st_size > 0, proc.stderr
    assert_one_error_line(run_script(tmp_path / "c.gguf", "--outfile", tmp_path / "d.gguf", *args), 2, "once")


def test_cli_embedding_type_q6_k(tmp_path):
    out = tmp_path / "q6.gguf"
    args = ["--model-size", "125M", "--n-layers", "1", "--vocab-size", "1000", "--no-progress"]
    proc = run_script(out, *args, "--embedding-type", "q6_k")
    assert proc.returncode == 0, proc.stderr
    assert read_gguf(out).tensors["token_embd.weight"].ggml_type == HEAD_ENCODINGS["q6_k"].ggml_type
    assert_one_error_line(run_script(tmp_path / "x.gguf", *args, "--embedding-type", "q4_0"), 2, "invalid choice")


def test_cli_help_lists_sizes():
    proc = run_script("--help")
    assert proc.returncode == 0 and "2B-4T" in proc.stdout and "100B" in proc.stdout
    assert os.access(SCRIPT, os.X_OK)
