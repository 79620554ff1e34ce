"""Seed corpus for the GGUF fuzzer (tests/fuzz/fuzz_gguf.cpp): small valid files and corrupt ones.

usage: python tests/fuzz/make_corpus.py OUTDIR [--no-hf]

Writes into OUTDIR (created if missing; existing files of the same names are replaced):
    valid-*.gguf    models the engine loads: a tiny converted Hugging Face checkpoint (real
                    tokenizer metadata, chat template; skipped with --no-hf or without torch),
                    and hand-built minimal models (~25 KB: n_embd 128, one layer, 64 heads of
                    dim 2) with I2_S, F32/F16/BF16 weights, tied and untied heads, GGUF v2
    meta-*.gguf     files without a model: every value type, odd strings, every ggml type id
    bad-*.gguf      one corruption each (header, key/values, tensor infos, data, hyper-parameters)
Small seeds keep the fuzzer fast: libFuzzer's default input size limit is the largest seed.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bitnet import gguf_writer as gw  # noqa: E402
from bitnet.convert.dtypes import f32_to_bf16  # noqa: E402
from bitnet.convert.i2s import i2s_n_bytes, pack_i2s  # noqa: E402

ARCH = "bitnet-b1.58"
E, N_HEAD, N_HEAD_KV, HEAD_DIM, FF, VOCAB = 128, 64, 1, 2, 128, 4
Q, KV = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM
# (GGUF name, ne0 = inputs, ne1 = outputs) of the ternary layers of one block.
LINEARS = [("attn_q", E, Q), ("attn_k", E, KV), ("attn_v", E, KV), ("attn_output", Q, E),
           ("ffn_gate", E, FF), ("ffn_up", E, FF), ("ffn_down", FF, E)]  # fmt: skip
NORMS = [("attn_norm", E), ("attn_sub_norm", Q), ("ffn_norm", E), ("ffn_sub_norm", FF)]
FLOAT_BYTES = {gw.GGML_TYPE_F32: 4, gw.GGML_TYPE_F16: 2, gw.GGML_TYPE_BF16: 2}

# A key/value: (key, value, kind) as gguf_writer.add_kv takes it, or (key, (type_id, payload), "raw").
# A tensor: (name, ne, ggml type, bytes).


def _floats(x: np.ndarray, ggml_type: int) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if ggml_type == gw.GGML_TYPE_F32:
        return x.tobytes()
    if ggml_type == gw.GGML_TYPE_F16:
        return x.astype(np.float16).tobytes()
    return f32_to_bf16(x).tobytes()


def mini_model(rng: np.random.Generator, *, arch: str = ARCH, embd_type: int = gw.GGML_TYPE_F32,
               linear_types: dict | None = None, untied: bool = False, hidden_act: str = "relu2"):  # fmt: skip
    """(kvs, tensors) of the smallest model our loader accepts, with a token list for the kv parser."""
    a = arch
    kvs = [
        ("general.architecture", arch, "string"),
        ("general.name", "fuzz-mini", "string"),
        ("general.file_type", 40, "u32"),
        ("general.quantization_version", 2, "u32"),
        ("general.alignment", 32, "u32"),
        (f"{a}.vocab_size", VOCAB, "u32"),
        (f"{a}.context_length", 64, "u32"),
        (f"{a}.embedding_length", E, "u32"),
        (f"{a}.block_count", 1, "u32"),
        (f"{a}.feed_forward_length", FF, "u32"),
        (f"{a}.attention.head_count", N_HEAD, "u32"),
        (f"{a}.attention.head_count_kv", N_HEAD_KV, "u32"),
        (f"{a}.rope.dimension_count", HEAD_DIM, "u32"),
        (f"{a}.rope.freq_base", 500000.0, "f32"),
        (f"{a}.attention.layer_norm_rms_epsilon", 1e-5, "f32"),
        (f"{a}.hidden_act", hidden_act, "string"),
        ("tokenizer.ggml.model", "gpt2", "string"),
        ("tokenizer.ggml.pre", "llama-bpe", "string"),
        ("tokenizer.ggml.tokens", ["a", "b", "ab", "<|eot_id|>"], "string_array"),
        ("tokenizer.ggml.token_type", [1, 1, 1, 3], "i32_array"),
        ("tokenizer.ggml.merges", ["a b"], "string_array"),
        ("tokenizer.ggml.eos_token_id", 3, "u32"),
    ]
    tensors = [("token_embd.weight", (E, VOCAB), embd_type, _floats(rng.standard_normal((VOCAB, E)), embd_type))]
    tensors.append(("output_norm.weight", (E,), gw.GGML_TYPE_F32, _floats(1 + 0.1 * rng.standard_normal(E), 0)))
    if untied:
        head = _floats(rng.standard_normal((VOCAB, E)), gw.GGML_TYPE_BF16)
        tensors.append(("output.weight", (E, VOCAB), gw.GGML_TYPE_BF16, head))
    for name, n in NORMS:
        tensors.append((f"blk.0.{name}.weight", (n,), gw.GGML_TYPE_F32, _floats(1 + 0.1 * rng.standard_normal(n), 0)))
    for name, n_in, n_out in LINEARS:
        t = rng.integers(-1, 2, size=(n_out, n_in)).astype(np.int8)
        kind = (linear_types or {}).get(name, gw.GGML_TYPE_I2_S)
        data = pack_i2s(t, 0.5) if kind == gw.GGML_TYPE_I2_S else _floats(t * np.float32(0.5), kind)
        tensors.append((f"blk.0.{name}.weight", (n_in, n_out), kind, data))
    return kvs, tensors


def every_value_type():
    """Key/values of every GGUF value type, scalars and arrays, with awkward strings and numbers."""
    raw_arrays = {
        "u8": (gw.UINT8, "<u1", [0, 1, 255]), "i8": (gw.INT8, "<i1", [-128, 0, 127]),
        "u16": (gw.UINT16, "<u2", [0, 65535]), "i16": (gw.INT16, "<i2", [-32768, 32767]),
        "u64": (gw.UINT64, "<u8", [0, 2**64 - 1]), "i64": (gw.INT64, "<i8", [-(2**63), 2**63 - 1]),
        "f64": (gw.FLOAT64, "<f8", [0.0, -1e308, float("nan")]), "bool": (gw.BOOL, "<u1", [0, 1, 1]),
    }  # fmt: skip
    kvs = [(f"t.{kind}", value, kind) for kind, value in (
        ("u8", 255), ("i8", -128), ("u16", 65535), ("i16", -32768), ("u32", 2**32 - 1), ("i32", -(2**31)),
        ("u64", 2**64 - 1), ("i64", -(2**63)), ("f32", float("inf")), ("f64", 2.0**53 + 1), ("bool", True),
        ("string", "Zürich 中文 😀 \"quoted\" back\\slash\ttab\n"),
        ("string_array", ["", "x", "<0x0A>", "Ġhello", "\u0000nul"]), ("i32_array", [-1, 0, 2**31 - 1]),
        ("u32_array", []), ("f32_array", [float("nan"), -0.0, 1e-45]),
    )]  # fmt: skip
    for kind, (type_id, dtype, values) in raw_arrays.items():
        payload = struct.pack("<IQ", type_id, len(values)) + np.array(values, dtype=dtype).tobytes()
        kvs.append((f"t.{kind}_array", (gw.ARRAY, payload), "raw"))
    bad_utf8 = b"\xff\xfe \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 \x00\x1f\x7f end"
    kvs.append(("t.bad_utf8", (gw.STRING, gw.encode_string(bad_utf8)), "raw"))
    two_bad = struct.pack("<IQ", gw.STRING, 2) + gw.encode_string(bad_utf8) * 2
    kvs.append(("t.bad_utf8_array", (gw.ARRAY, two_bad), "raw"))
    kvs.append(("general.alignment", 64, "u32"))
    return kvs


def every_tensor_type():
    """One small tensor of each ggml type id the reader knows (sized as its table says)."""
    # id: (ne0, bytes per row)
    types = {0: (4, 16), 1: (4, 8), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
             9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
             15: (256, 292), 24: (4, 4), 25: (4, 8), 26: (4, 16), 27: (4, 32), 28: (4, 32), 30: (4, 8),
             34: (256, 54), 35: (256, 66), 39: (32, 17)}  # fmt: skip
    tensors = [(f"t{i}", (ne0, 2), i, bytes(2 * row)) for i, (ne0, row) in types.items()]
    tensors.append(("t36", (128, 2), 36, bytes(i2s_n_bytes(2, 128))))  # I2_S: n/4 + 32
    tensors.append(("t38", (4, 2, 1, 1), 38, bytes(2 + 32)))  # TL1 sized like I2_S
    return tensors


def write(path: Path, kvs, tensors, *, magic=gw.GGUF_MAGIC, version=3, alignment=32, n_tensors=None,
          n_kv=None, offsets: dict | None = None, ne: dict | None = None) -> None:  # fmt: skip
    """Write a GGUF; the keyword arguments override what a valid writer would put there."""
    with gw.GGUFWriter(path, magic=magic, version=version, alignment=alignment, strict=False) as w:
        for key, value, kind in kvs:  # raw: no duplicate or alignment checks; padding follows `alignment`
            w.add_kv_raw(key, *(value if kind == "raw" else gw.encode_value(value, kind)))
        for name, shape, ggml_type, data in tensors:
            offset = (offsets or {}).get(name)
            w.add_tensor(name, (ne or {}).get(name, shape), ggml_type, len(data), offset=offset)
        w.write_header(n_tensors=n_tensors, n_kv=n_kv)
        if offsets:  # explicit offsets: lay the data out by hand, in declaration order
            for _, _, _, data in tensors:
                w.write_raw(data + bytes(-len(data) % alignment))
        else:
            for name, _, _, data in tensors:
                w.write_tensor_data(name, data)


def _replace_kv(kvs, key, value, kind):
    return [(k, v, t) for k, v, t in kvs if k != key] + ([(key, value, kind)] if kind else [])


def _replace_tensor(tensors, name, data):
    return [(n, s, t, data if n == name else d) for n, s, t, d in tensors]


def write_hf_model(out: Path, work: Path) -> bool:
    """A converted tiny Hugging Face checkpoint (~100 KB, 310 tokens); False if torch is missing."""
    try:
        import tests.hf_models as hf_models
        from bitnet.convert.hf_bitnet import convert
        from tests.tokenizer_fixture import write_test_tokenizer
    except ImportError as e:
        print(f"make_corpus: skipping the converted Hugging Face model ({e})", file=sys.stderr)
        return False
    # A smaller vocab than the fixture's default keeps the seed (and so every fuzz input) small.
    default = hf_models.write_test_tokenizer
    hf_models.write_test_tokenizer = lambda d: write_test_tokenizer(d, vocab_size=300)
    try:
        ckpt = hf_models.make_bitnet_checkpoint(work / "hf", intermediate_size=128, num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    finally:
        hf_models.write_test_tokenizer = default
    convert(ckpt, out / "valid-hf-i2s.gguf", outtype="i2_s", progress=False)
    return True


def make_corpus(out: Path, with_hf: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    f32, f16, bf16 = gw.GGML_TYPE_F32, gw.GGML_TYPE_F16, gw.GGML_TYPE_BF16
    kvs, tensors = mini_model(rng)
    a = ARCH

    write(out / "valid-mini-i2s.gguf", kvs, tensors)
    write(out / "valid-mini-float-untied.gguf",
          *mini_model(rng, embd_type=f16, linear_types={"attn_k": f32, "attn_v": bf16},
                      untied=True, arch="bitnet", hidden_act="silu"))  # fmt: skip
    write(out / "valid-mini-v2-bf16.gguf", *mini_model(rng, embd_type=bf16, linear_types={"attn_k": f16}), version=2)
    write(out / "meta-every-value-type.gguf", every_value_type(), [], alignment=64)
    write(out / "meta-every-tensor-type.gguf", [("general.alignment", 32, "u32")], every_tensor_type())

    # Header and layout corruptions.
    write(out / "bad-magic.gguf", kvs, tensors, magic=b"GGUX")
    write(out / "bad-version-1.gguf", kvs, tensors, version=1)
    write(out / "bad-byteswapped.gguf", kvs, tensors, version=0x03000000)
    write(out / "bad-n-kv-huge.gguf", kvs, tensors, n_kv=2**63 + 5)
    write(out / "bad-n-tensors-huge.gguf", kvs, tensors, n_tensors=2**40)
    write(out / "bad-alignment-3.gguf", _replace_kv(kvs, "general.alignment", 3, "u32"), tensors)
    write(out / "bad-duplicate-key.gguf", kvs + [kvs[0]], tensors)
    write(out / "bad-array-of-arrays.gguf", kvs + [("x", (gw.ARRAY, struct.pack("<IQ", gw.ARRAY, 1)), "raw")], tensors)
    write(out / "bad-string-past-end.gguf", kvs + [("x", (gw.STRING, struct.pack("<Q", 2**62)), "raw")], [])
    write(out / "bad-offset-past-end.gguf", kvs, tensors, offsets={"token_embd.weight": 1 << 20})
    write(out / "bad-type39-wrong-size.gguf", kvs, [("t", (32, 4), 39, bytes(100))])
    write(out / "bad-dims-overflow.gguf", kvs, tensors, ne={"output_norm.weight": (2**62, 4)})
    # Model-level corruptions: a valid GGUF with contradicting hyper-parameters or weights.
    write(out / "bad-block-count.gguf", _replace_kv(kvs, f"{a}.block_count", 100000, "u32"), tensors)
    write(out / "bad-heads.gguf", _replace_kv(kvs, f"{a}.attention.head_count", 3, "u32"), tensors)
    write(out / "bad-vocab-size.gguf", _replace_kv(kvs, f"{a}.vocab_size", 5, "u32"), tensors)
    write(out / "bad-arch-type.gguf", _replace_kv(kvs, "general.architecture", 7, "u32"), tensors)
    nan_norm = _floats(np.full(E, np.nan), f32)
    write(out / "bad-nan-norm.gguf", kvs, _replace_tensor(tensors, "blk.0.attn_norm.weight", nan_norm))
    code3 = b"\xff" * (E * Q // 4) + struct.pack("<f", 0.5) + bytes(28)
    write(out / "bad-i2s-code3.gguf", kvs, _replace_tensor(tensors, "blk.0.attn_q.weight", code3))
    # Truncations of a valid file: inside the header, the key/values, the tensor infos, the data.
    whole = (out / "valid-mini-i2s.gguf").read_bytes()
    for cut in (20, 100, 900, 1500, len(whole) // 2, len(whole) - 1):
        (out / f"bad-truncated-{cut}.gguf").write_bytes(whole[:cut])

    if with_hf:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            write_hf_model(out, Path(work))
    return sorted(out.glob("*.gguf"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--no-hf", action="store_true", help="skip the converted Hugging Face model (needs torch)")
    args = parser.parse_args(argv)
    files = make_corpus(args.outdir, with_hf=not args.no_hf)
    print(f"make_corpus: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes in {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
