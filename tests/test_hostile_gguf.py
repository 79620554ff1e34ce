"""Hostile GGUF files (the loader-hardening table of DESIGN section 5): every class of corrupt or
lying file is refused through the real C API with one line that names the problem, and none
crashes the process; valid variants of the same edits load.

CASES is the table: each row edits a byte-level copy of the tiny I2_S model (`tiny_gguf`) and
gives the message it must produce (a regex), or None for a file that must load. Classes that
need many files or a running model (truncation at many lengths, byte flips, chat templates)
have their own tests below. CI also runs this file against the AddressSanitizer build of the
library: that is what shows a hostile file never makes the loader read out of bounds.
"""

from __future__ import annotations

import copy
import os
import random
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bitnet import BitnetError, Model
from bitnet import gguf_writer as gw
from bitnet.convert.gguf_reader import read_gguf
from bitnet.engine import NativeModel

# What the table knows of the fixture (checked by test_the_spec_copies_the_fixture_byte_for_byte).
A = "bitnet-b1.58"  # the architecture: hyper-parameter keys are "A.<name>"
N_VOCAB = 522
Q = "blk.0.attn_q.weight"  # I2_S, 128 x 128: 4096 bytes of codes + a 32-byte tail, then attn_k
U64_MAX = 2**64 - 1  # also -1 as an int64
FAR = 1 << 24  # tensor offsets from here on stand for "past the end": no data is written there


# ---- a GGUF file as the writer's raw pieces, to bend out of shape ------------------------------
@dataclass
class Tensor:
    name: str | bytes
    ne: tuple
    type: int
    data: bytes
    offset: int | None = None  # None: right after the previous tensor, padded to the alignment


@dataclass
class Spec:
    kvs: list = field(default_factory=list)  # [key, value type id, payload bytes], in file order
    tensors: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # the source file's values, for edits to start from
    magic: bytes = gw.GGUF_MAGIC
    version: int = gw.GGUF_VERSION
    alignment: int = gw.DEFAULT_ALIGNMENT  # the padding written (general.alignment is just a kv)
    n_tensors: int | None = None  # header counts; None: the real ones
    n_kv: int | None = None
    cut: str | None = None  # cut the file in the middle of this section

    @classmethod
    def from_file(cls, path) -> Spec:
        f, raw = read_gguf(path), Path(path).read_bytes()
        pos, kvs = 24, []
        for _ in f.kv:
            (key_len,) = struct.unpack_from("<Q", raw, pos)
            key = raw[pos + 8 : pos + 8 + key_len].decode()
            (type_id,) = struct.unpack_from("<I", raw, pos + 8 + key_len)
            start = pos + 8 + key_len + 4
            pos = _value_end(raw, start, type_id)
            kvs.append([key, type_id, raw[start:pos]])
        tensors = [Tensor(t.name, t.ne, t.ggml_type, bytes(t.data)) for t in f.tensors.values()]
        return cls(kvs, tensors, f.kv, version=f.version, alignment=f.alignment)

    def set(self, key, value, kind: str) -> Spec:
        return self.set_raw(key, *gw.encode_value(value, kind))

    def set_raw(self, key, type_id: int, payload: bytes) -> Spec:
        """Replace the value of `key` where it stands, or append the key."""
        for kv in self.kvs:
            if kv[0] == key:
                kv[1:] = [type_id, payload]
                return self
        self.kvs.append([key, type_id, payload])
        return self

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def offsets(self) -> list[int]:
        out, pos = [], 0
        for t in self.tensors:
            out.append(pos if t.offset is None else t.offset)
            pos = out[-1] + len(t.data)
            pos += -pos % self.alignment
        return out

    def write(self, path: Path) -> Path:
        self.to_bytes(path)
        return path

    def to_bytes(self, path: Path) -> bytes:
        """Write through GGUFWriter's raw hooks (no checks); the file's bytes, cut if asked."""
        offsets = self.offsets()
        with gw.GGUFWriter(path, magic=self.magic, version=self.version, alignment=self.alignment,
                           strict=False) as w:
            for key, type_id, payload in self.kvs:
                w.add_kv_raw(key, type_id, payload)
            for t, offset in zip(self.tensors, offsets):
                w.add_tensor(t.name, t.ne, t.type, len(t.data), offset=offset)
            w.write_header(n_tensors=self.n_tensors, n_kv=self.n_kv)
            w.write_raw(self._data_section(offsets))
        raw = path.read_bytes()
        if self.cut:
            lo, hi = self._sections(len(raw))[self.cut]
            raw = raw[: (lo + hi) // 2]
            path.write_bytes(raw)
        return raw

    def _data_section(self, offsets) -> bytes:
        near = [(offset, t.data) for offset, t in zip(offsets, self.tensors) if offset < FAR]
        data = bytearray(max((offset + len(d) for offset, d in near), default=0))
        for offset, d in near:  # overlapping tensors: the later one's bytes win
            data[offset : offset + len(d)] = d
        return bytes(data + bytes(-len(data) % self.alignment))

    def _sections(self, size: int) -> dict:
        kv_end = 24 + sum(len(gw.encode_string(k)) + 4 + len(p) for k, _, p in self.kvs)
        infos_end = kv_end + sum(len(gw.encode_string(t.name)) + 4 + 8 * len(t.ne) + 12 for t in self.tensors)
        data_start = infos_end + -infos_end % self.alignment
        return {"header": (0, 24), "kv": (24, kv_end), "tensor infos": (kv_end, infos_end), "data": (data_start, size)}


_SCALAR_BYTES = {gw.UINT8: 1, gw.INT8: 1, gw.UINT16: 2, gw.INT16: 2, gw.UINT32: 4, gw.INT32: 4,
                 gw.FLOAT32: 4, gw.BOOL: 1, gw.UINT64: 8, gw.INT64: 8, gw.FLOAT64: 8}


def _value_end(raw: bytes, pos: int, type_id: int) -> int:
    if type_id == gw.STRING:
        return pos + 8 + struct.unpack_from("<Q", raw, pos)[0]
    if type_id != gw.ARRAY:
        return pos + _SCALAR_BYTES[type_id]
    elem, n = struct.unpack_from("<IQ", raw, pos)
    pos += 12
    if elem != gw.STRING:
        return pos + n * _SCALAR_BYTES[elem]
    for _ in range(n):
        pos = _value_end(raw, pos, gw.STRING)
    return pos


@pytest.fixture(scope="module")
def base(tiny_gguf) -> Spec:
    return Spec.from_file(tiny_gguf)


def test_the_spec_copies_the_fixture_byte_for_byte(base, tiny_gguf, tmp_path):
    assert copy.deepcopy(base).to_bytes(tmp_path / "copy.gguf") == Path(tiny_gguf).read_bytes()
    assert base.meta["general.architecture"] == A and len(base.meta["tokenizer.ggml.tokens"]) == N_VOCAB
    names = [t.name for t in base.tensors]
    assert base.tensor(Q).ne == (128, 128) and names[names.index(Q) + 1] == "blk.0.attn_k.weight"


# ---- edits used by the table ------------------------------------------------------------------
def header(**fields):
    return lambda s: [setattr(s, k, v) for k, v in fields.items()]


def both(*edits):
    return lambda s: [edit(s) for edit in edits]


def byte_swapped(s: Spec):
    """A big-endian writer's header: the magic bytes as usual, every number byte-swapped."""
    s.version = 3 << 24
    s.n_tensors = int.from_bytes(len(s.tensors).to_bytes(8, "little"), "big")
    s.n_kv = int.from_bytes(len(s.kvs).to_bytes(8, "little"), "big")


def kv(key, value, kind):
    return lambda s: s.set(key, value, kind)


def kv_raw(key, type_id, payload):
    return lambda s: s.set_raw(key, type_id, payload)


def first_entries(key, n, kind):
    """One of the tokenizer's per-token arrays cut to its first n entries."""
    return lambda s: s.set(key, s.meta[key][:n], kind)


def set_tensor(tensor_name, /, **changes):
    """Change a tensor's fields; a callable value gets the tensor and returns the new value."""

    def edit(s: Spec):
        t = s.tensor(tensor_name)
        for k, v in changes.items():
            setattr(t, k, v(t) if callable(v) else v)

    return edit


def add_tensor(name, ne, ggml_type, n_bytes):
    return lambda s: s.tensors.append(Tensor(name, ne, ggml_type, bytes(n_bytes)))


def swap_offsets(a, b):
    """Adjacent tensors a and b (the same size) trade places in the data: the offsets fall."""

    def edit(s: Spec):
        i, offsets = s.tensors.index(s.tensor(a)), s.offsets()
        assert s.tensors[i + 1].name == b and len(s.tensors[i].data) == len(s.tensors[i + 1].data)
        s.tensors[i].offset, s.tensors[i + 1].offset = offsets[i + 1], offsets[i]

    return edit


def at_offset_of_previous(name, plus=0):
    def edit(s: Spec):
        i = s.tensors.index(s.tensor(name))
        s.tensors[i].offset = s.offsets()[i - 1] + plus

    return edit


def f32_value(name, index, value):
    def data(t: Tensor) -> bytes:
        values = np.frombuffer(t.data, np.float32).copy()
        values[index] = value
        return values.tobytes()

    return set_tensor(name, data=data)


def stored_value(name, index, value):
    """Element `index` of an F32 / F16 / BF16 tensor set to value, in the tensor's own type."""

    def data(t: Tensor) -> bytes:
        if t.type == gw.GGML_TYPE_BF16:  # the top half of the f32
            values = np.frombuffer(t.data, np.uint16).copy()
            values[index] = np.array([value], np.float32).view(np.uint32)[0] >> 16
            return values.tobytes()
        values = np.frombuffer(t.data, {gw.GGML_TYPE_F32: np.float32, gw.GGML_TYPE_F16: np.float16}[t.type]).copy()
        values[index] = value
        return values.tobytes()

    return set_tensor(name, data=data)


def i2s_scale(name, value):
    """The f32 scale: the first 4 bytes of the 32-byte tail."""
    return set_tensor(name, data=lambda t: t.data[:-32] + struct.pack("<f", value) + t.data[-28:])


ARRAY_OF_ARRAYS = struct.pack("<IQ", gw.ARRAY, 1) + struct.pack("<IQ", gw.UINT8, 1) + b"\0"
MXFP4_BYTES = 128 * 4 // 32 * 17  # a (128, 4) tensor: 16 blocks of 32 elements, 17 bytes each

# (id, edit, message regex; None: the file loads and runs)
CASES = [
    # -- header
    ("bad magic", header(magic=b"GGML"),
     r"not a GGUF file \(bad magic 47 47 4d 4c, expected \"GGUF\"\)"),
    ("version 0", header(version=0), r"unsupported GGUF version 0 \(expected 2 or 3\)"),
    ("version 1", header(version=1), r"GGUF v1 is not supported \(re-convert the model\)"),
    ("future version", header(version=4), r"unsupported GGUF version 4 \(expected 2 or 3\)"),
    ("version 2 loads", header(version=2), None),
    ("byte-swapped header", byte_swapped,
     r"big-endian GGUF is not supported \(the header is byte-swapped; re-convert the model"),
    ("huge tensor count", header(n_tensors=2**40),
     r"n_tensors = 1099511627776 is implausible for \d+ bytes of header \(limit \d+\)"),
    ("negative tensor count", header(n_tensors=U64_MAX), r"n_tensors = 18446744073709551615 is implausible"),
    ("huge kv count", header(n_kv=2**40), r"n_kv = 1099511627776 is implausible for \d+ bytes of header"),
    ("negative kv count", header(n_kv=U64_MAX), r"n_kv = 18446744073709551615 is implausible"),
    # -- key/values
    ("string longer than the file", kv_raw("general.name", gw.STRING, struct.pack("<Q", 2**40) + b"tiny"),
     r"key 'general\.name': string #0 of 1099511627776 bytes runs past the end of the file \(\d+ bytes left\)"),
    ("array longer than the file",
     kv_raw("tokenizer.ggml.token_type", gw.ARRAY, struct.pack("<IQ", gw.INT32, 2**40)),
     r"key 'tokenizer\.ggml\.token_type': array of 1099511627776 int32 needs more bytes than the \d+ left"),
    ("string array count beyond the file",
     kv_raw("tokenizer.ggml.merges", gw.ARRAY, struct.pack("<IQ", gw.STRING, 2**61)),
     r"key 'tokenizer\.ggml\.merges': 2305843009213693952 strings cannot fit in the \d+ bytes left"),
    ("unknown value type", kv_raw("x.odd", 13, bytes(4)), r"key 'x\.odd' has unknown value type 13"),
    ("array of unknown type", kv_raw("x.odd", gw.ARRAY, struct.pack("<IQ", 77, 0)),
     r"key 'x\.odd' is an array of unknown value type 77"),
    ("array of arrays", kv_raw("x.nested", gw.ARRAY, ARRAY_OF_ARRAYS),
     r"key 'x\.nested' is an array of arrays, which is not supported"),
    ("duplicate key", lambda s: s.kvs.append(["general.architecture", gw.STRING, gw.encode_string(A)]),
     r"duplicate key 'general\.architecture'"),
    ("empty key", kv("", 1, "u8"), r"key #\d+ at offset \d+ is 0 bytes long \(allowed 1\.\.65535\)"),
    ("NUL byte in a key", kv(b"general.name\0x", 1, "u8"), r"key #\d+ at offset \d+ contains a NUL byte"),
    ("bool byte 2", kv_raw("tokenizer.ggml.add_bos_token", gw.BOOL, b"\x02"),
     r"key 'tokenizer\.ggml\.add_bos_token': bool byte is 2 \(must be 0 or 1\)"),
    # -- a known key of the wrong type
    ("block_count as a string", kv(f"{A}.block_count", "2", "string"),
     r"key 'bitnet-b1\.58\.block_count' is string, expected an integer"),
    ("block_count as u64 2^64-1", kv(f"{A}.block_count", U64_MAX, "u64"),
     r"key 'bitnet-b1\.58\.block_count' = 18446744073709551615 is out of range for int64"),
    ("rms epsilon as a string", kv(f"{A}.attention.layer_norm_rms_epsilon", "1e-5", "string"),
     r"key 'bitnet-b1\.58\.attention\.layer_norm_rms_epsilon' is string, expected a number"),
    ("architecture as an integer", kv("general.architecture", 7, "u32"),
     r"key 'general\.architecture' is uint32, expected string"),
    ("general.alignment as u64", kv("general.alignment", 32, "u64"),
     r"general\.alignment must be uint32, found uint64"),
    ("tokens as integers", kv("tokenizer.ggml.tokens", list(range(N_VOCAB)), "i32_array"),
     r"GGUF key tokenizer\.ggml\.tokens is missing or not a list of strings"),
    # -- alignment
    ("alignment 0", kv("general.alignment", 0, "u32"),
     r"general\.alignment = 0 is invalid \(must be a power of two, 1\.\.1048576\)"),
    ("alignment 48", kv("general.alignment", 48, "u32"), r"general\.alignment = 48 is invalid \(must be a power"),
    ("alignment 2^31", kv("general.alignment", 2**31, "u32"), r"general\.alignment = 2147483648 is invalid"),
    ("alignment 64 loads", both(kv("general.alignment", 64, "u32"), header(alignment=64)), None),
    ("alignment key disagrees with the layout", kv("general.alignment", 4096, "u32"),
     r"tensor 'blk\.0\.attn_norm\.weight' offset \d+ is not a multiple of the alignment 4096"),
    # -- tensor infos
    ("tensor name of 64 bytes", set_tensor("output_norm.weight", name="x" * 64),
     r"tensor #\d+ name at offset \d+ is 64 bytes long \(allowed 1\.\.63\)"),
    ("tensor name of 63 bytes loads", add_tensor("y" * 63, (4,), gw.GGML_TYPE_F32, 16), None),
    ("NUL byte in a tensor name", set_tensor("output_norm.weight", name=b"output_norm\0weight"),
     r"tensor #\d+ name at offset \d+ contains a NUL byte"),
    ("duplicate tensor name", add_tensor("output_norm.weight", (128,), gw.GGML_TYPE_F32, 512),
     r"duplicate tensor name 'output_norm\.weight'"),
    ("n_dims 0", set_tensor("output_norm.weight", ne=()),
     r"tensor 'output_norm\.weight' has n_dims = 0 \(expected 1\.\.4\)"),
    ("n_dims 5", set_tensor("output_norm.weight", ne=(128, 1, 1, 1, 1)), r"has n_dims = 5 \(expected 1\.\.4\)"),
    ("zero dim", set_tensor("token_embd.weight", ne=(128, 0)),
     r"tensor 'token_embd\.weight' dimension 1 is 0 \(must be 1\.\.2\^63-1\)"),
    ("negative dim", set_tensor("token_embd.weight", ne=(128, U64_MAX)),
     r"tensor 'token_embd\.weight' dimension 1 is 18446744073709551615 \(must be 1\.\.2\^63-1\)"),
    ("element count overflows 64 bits", set_tensor("token_embd.weight", ne=(2**32, 2**32)),
     r"tensor 'token_embd\.weight' element count overflows int64"),
    ("byte count overflows 64 bits", set_tensor("token_embd.weight", ne=(2**31, 2**31), type=gw.GGML_TYPE_F32),
     r"tensor 'token_embd\.weight' byte size overflows 64 bits"),
    ("unknown type id", set_tensor("output_norm.weight", type=4),
     r"tensor 'output_norm\.weight' has unknown ggml type id 4"),
    ("type id 39 in a bitnet file", add_tensor("x.weight", (128, 4), 39, MXFP4_BYTES),
     r"tensor 'x\.weight' has ggml type 39, which is TL2 in bitnet\.cpp files and MXFP4 upstream; the "
     r"architecture 'bitnet-b1\.58' is bitnet\.cpp's, and TL2 is not supported \(re-convert the model with i2_s\)"),
    ("type id 39 not MXFP4-sized",
     both(kv("general.architecture", "gpt-oss", "string"), add_tensor("x.weight", (128, 4), 39, 160)),
     r"tensor 'x\.weight' has ggml type 39, .*; its data is not MXFP4-sized, and TL2 is not supported"),
    ("I2_S elements not a multiple of 128", set_tensor(Q, ne=(96, 3)),
     r"tensor 'blk\.0\.attn_q\.weight' of type I2_S has 288 elements, not a multiple of its block size 128 "
     r"\(the layout has no room for a partial last block\)"),
    ("Q8_0 rows not a multiple of 32", set_tensor("output_norm.weight", type=8, ne=(100,)),
     r"tensor 'output_norm\.weight' of type Q8_0 has ne0 = 100, not a multiple of its block size 32"),
    # -- tensor data placement
    ("I2_S tail too short", set_tensor(Q, data=lambda t: t.data[:-32]),
     r"I2_S tensor 'blk\.0\.attn_q\.weight' needs 4128 bytes \(n/4 codes \+ a 32-byte scale tail\) but only "
     r"4096 lie before 'blk\.0\.attn_k\.weight': its tail is not 32 bytes \(re-convert the model\)"),
    ("I2_S tail too long", set_tensor(Q, data=lambda t: t.data + bytes(32)),
     r"I2_S tensor 'blk\.0\.attn_q\.weight' needs 4128 bytes .* but 4160 lie before 'blk\.0\.attn_k\.weight'"),
    ("offset not aligned", at_offset_of_previous("output_norm.weight", plus=1024 + 4),
     r"tensor 'output_norm\.weight' offset \d+ is not a multiple of the alignment 32"),
    ("offsets out of order", swap_offsets("blk.0.attn_k.weight", "blk.0.attn_v.weight"),
     r"tensor offsets are out of order: 'blk\.0\.attn_v\.weight' at \d+ follows 'blk\.0\.attn_k\.weight' at \d+ "
     r"\(data must be in tensor-info order\)"),
    ("offsets overlap", at_offset_of_previous("blk.0.attn_v.weight"),
     r"tensors 'blk\.0\.attn_k\.weight' and 'blk\.0\.attn_v\.weight' overlap in the data section"),
    ("offset past the end", set_tensor("output_norm.weight", offset=2**40),
     r"tensor 'output_norm\.weight' data \(offset 1099511627776, 512 bytes\) is past the end of the file"),
    ("offset near 2^64", set_tensor("output_norm.weight", offset=2**64 - 32),
     r"tensor 'output_norm\.weight' data \(offset 18446744073709551584, 512 bytes\) is past the end"),
    # -- truncated in each section (every length: test_truncation_at_many_lengths_is_always_refused)
    ("truncated in the header", header(cut="header"),
     r"file is truncated: 12 bytes, shorter than the 24-byte GGUF header"),
    ("truncated in the key/values", header(cut="kv"),
     r"file is truncated: string length at offset \d+ needs 8 bytes, \d+ left"),
    ("truncated in the tensor infos", header(cut="tensor infos"),
     r"file is truncated: tensor [#\w ]+ at offset \d+ needs \d+ bytes, \d+ left"),
    ("truncated in the data", header(cut="data"),
     r"tensor '[\w.]+' data \[\d+, \d+\) is past the end of the file \(\d+ bytes\)"),
    # -- hyper-parameters against the tensors
    ("shapes contradict hyper-parameters", kv(f"{A}.feed_forward_length", 512, "u32"),
     r"tensor 'blk\.0\.ffn_gate\.weight' has shape \[128, 256\], expected \[128, 512\] \(the hyper-parameters "
     r"and the tensors disagree\)"),
    ("block_count above the limit", kv(f"{A}.block_count", 1025, "u32"),
     r"key 'bitnet-b1\.58\.block_count' = 1025 is out of range \[1, 1024\]"),
    ("block_count -1", kv(f"{A}.block_count", -1, "i32"), r"block_count' = -1 is out of range \[1, 1024\]"),
    ("heads do not divide the width", kv(f"{A}.attention.head_count", 5, "u32"),
     r"embedding_length 128 is not divisible by head_count 5"),
    ("zero kv heads", kv(f"{A}.attention.head_count_kv", 0, "u32"),
     r"key 'bitnet-b1\.58\.attention\.head_count_kv' = 0 is out of range \[1, 1024\]"),
    ("rms epsilon NaN", kv(f"{A}.attention.layer_norm_rms_epsilon", float("nan"), "f32"),
     r"key 'bitnet-b1\.58\.attention\.layer_norm_rms_epsilon' must be a positive number"),
    # -- tokenizer metadata
    ("bos id = n_vocab", kv("tokenizer.ggml.bos_token_id", N_VOCAB, "u32"),
     r"GGUF key tokenizer\.ggml\.bos_token_id = 522 is outside the vocab"),
    ("eos id 2^32-1", kv("tokenizer.ggml.eos_token_id", 2**32 - 1, "u32"),
     r"GGUF key tokenizer\.ggml\.eos_token_id = 4294967295 is outside the vocab"),
    ("padding id -1", kv("tokenizer.ggml.padding_token_id", -1, "i32"),
     r"GGUF key tokenizer\.ggml\.padding_token_id = -1 is outside the vocab"),
    ("fewer tokens than embedding rows", first_entries("tokenizer.ggml.tokens", 500, "string_array"),
     r"key 'tokenizer\.ggml\.tokens' has 500 entries but token_embd\.weight has 522 rows \(one per token\)"),
    ("token types shorter than tokens", first_entries("tokenizer.ggml.token_type", 521, "i32_array"),
     r"key 'tokenizer\.ggml\.token_type' has 521 entries but token_embd\.weight has 522 rows"),
    ("scores longer than tokens", kv("tokenizer.ggml.scores", [0.0] * 600, "f32_array"),
     r"key 'tokenizer\.ggml\.scores' has 600 entries but token_embd\.weight has 522 rows"),
    ("scores as long as tokens load", kv("tokenizer.ggml.scores", [0.0] * N_VOCAB, "f32_array"), None),
    # -- weights (NaN in a norm: tests/test_model_validation.py)
    ("Inf in a norm weight", f32_value("output_norm.weight", 7, np.inf),
     r"tensor 'output_norm\.weight' contains NaN or Inf; the file is corrupt"),
    ("NaN in the embedding", stored_value("token_embd.weight", 300, np.nan),
     r"tensor 'token_embd\.weight' contains NaN or Inf \(row 2, column 44\); the file is corrupt"),
    ("Inf in the embedding, last value", stored_value("token_embd.weight", N_VOCAB * 128 - 1, -np.inf),
     r"tensor 'token_embd\.weight' contains NaN or Inf \(row 521, column 127\); the file is corrupt"),
    ("Inf I2_S scale", i2s_scale(Q, float("inf")),
     r"tensor 'blk\.0\.attn_q\.weight' has scale inf \(must be finite and >= 0\); the file is corrupt"),
    ("NaN I2_S scale", i2s_scale(Q, float("nan")),
     r"tensor 'blk\.0\.attn_q\.weight' has scale -?nan \(must be finite and >= 0\); the file is corrupt"),
]


def assert_one_line(message: str):
    assert message and "\n" not in message and message == message.strip() and len(message) < 400, message


@pytest.mark.parametrize("edit,message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_file(base, tmp_path, edit, message):
    spec = copy.deepcopy(base)
    edit(spec)
    path = spec.write(tmp_path / "hostile.gguf")
    if message is None:
        with Model(path, n_threads=1, n_ctx=64) as m:
            assert np.isfinite(m.logits([1, 2, 3])).all()
        return
    with pytest.raises(BitnetError) as err:
        Model(path)
    assert_one_line(str(err.value))
    assert re.search(message, str(err.value)), str(err.value)


# ---- many files: every prefix, byte flips ----------------------------------------------------
@pytest.fixture(scope="module")
def small_model(base, tmp_path_factory) -> tuple[bytes, list[tuple[int, int]]]:
    """The tiny model without its tokenizer keys (the engine alone, NativeModel, loads it):
    its bytes and each tensor's (start, end) in the file."""
    spec = copy.deepcopy(base)
    spec.kvs = [kv for kv in spec.kvs if not kv[0].startswith("tokenizer.")]
    path = tmp_path_factory.mktemp("small") / "small.gguf"
    raw = spec.to_bytes(path)
    NativeModel(path).close()
    return raw, [(t.offset, t.offset + len(t.data)) for t in read_gguf(path).tensors.values()]


def test_truncation_at_many_lengths_is_always_refused(small_model, tmp_path):
    """Every length through the header and tensor infos, then each tensor's edges and a stride
    through the data: each prefix is refused with one line, none crashes. (The file is cut
    shorter in place, longest first: rewriting a file is slow on some file systems.)"""
    raw, extents = small_model
    data_start = extents[0][0]
    lengths = set(range(data_start + 1)) | set(range(data_start, len(raw), 61))
    for start, end in extents:
        lengths |= {start + 1, end - 1, end}
    lengths.discard(len(raw))
    path = tmp_path / "cut.gguf"
    path.write_bytes(raw)
    for n in sorted(lengths, reverse=True):
        os.truncate(path, n)
        with pytest.raises(BitnetError) as err:
            NativeModel(path)
        assert_one_line(str(err.value))


def test_byte_flips_in_the_header_never_crash(small_model, tmp_path):
    """Seeded single-byte flips in the header and tensor infos: each file loads or is refused
    with one line (a flip inside a name or a float can leave a valid model)."""
    raw, extents = small_model
    rng = random.Random(6)
    path, refused = tmp_path / "flip.gguf", 0
    path.write_bytes(raw)
    with open(path, "r+b") as f:
        for _ in range(3000):
            i = rng.randrange(extents[0][0])
            os.pwrite(f.fileno(), bytes([raw[i] ^ rng.choice((0x01, 0x02, 0x10, 0x80, 0xFF))]), i)
            try:
                NativeModel(path).close()
            except BitnetError as e:
                assert_one_line(str(e))
                refused += 1
            os.pwrite(f.fileno(), raw[i : i + 1], i)
    assert refused > 1500


# ---- tokenizer metadata that loads -----------------------------------------------------------
def test_malformed_byte_tokens_are_plain_text(base, tmp_path):
    """SentencePiece-style "<0x..>" byte tokens mean nothing to byte-level BPE: malformed ones,
    even typed BYTE (6), are plain tokens, loaded, encoded and decoded as their text."""
    tokens, types = list(base.meta["tokenizer.ggml.tokens"]), list(base.meta["tokenizer.ggml.token_type"])
    ids, texts = [514, 515, 516], ["<0xZZ>", "<0x>", "<0x1FF>"]
    assert all(tokens[i].startswith("<|reserved_special_token") for i in ids)  # no merge needs them
    for i, text, kind in zip(ids, texts, [3, 6, 6]):
        tokens[i], types[i] = text, kind
    spec = copy.deepcopy(base).set("tokenizer.ggml.tokens", tokens, "string_array")
    spec.set("tokenizer.ggml.token_type", types, "i32_array")
    with Model(spec.write(tmp_path / "bytes.gguf"), n_threads=1, n_ctx=64) as m:
        assert m.detokenize(ids) == "".join(texts)
        ids = m.tokenize("<0xZZ> and <0x>", add_bos=False)
        assert ids[0] == 514 and m.detokenize(ids) == "<0xZZ> and <0x>"


# ---- chat templates from the file, through create_chat_completion ----------------------------
CHAT = [{"role": "user", "content": "Hi"}]


def model_with_template(base, tmp_path, template: str) -> Model:
    spec = copy.deepcopy(base).set("tokenizer.chat_template", template, "string")
    return Model(spec.write(tmp_path / "template.gguf"), n_threads=1, n_ctx=128)


def test_template_that_does_not_parse_falls_back_to_the_builtin(base, tmp_path):
    # found once, when the model loads
    with pytest.warns(UserWarning, match=r"chat template does not compile \(TemplateSyntaxError.*built-in BitNet"):
        with model_with_template(base, tmp_path, "{% for m in %}{{ m }}") as m:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                reply = m.create_chat_completion(CHAT, max_tokens=2, temperature=0)
    assert reply["object"] == "chat.completion" and reply["usage"]["prompt_tokens"] > 0


def test_template_that_recurses_forever_falls_back(base, tmp_path):
    template = "{% macro again() %}{{ again() }}{% endmacro %}{{ again() }}"
    with model_with_template(base, tmp_path, template) as m:
        with pytest.warns(UserWarning, match=r"RecursionError.*built-in BitNet template"):
            reply = m.create_chat_completion(CHAT, max_tokens=2, temperature=0)
    assert reply["object"] == "chat.completion"


def test_template_that_renders_megabytes_is_refused(base, tmp_path):
    with model_with_template(base, tmp_path, "{{ 'x' * 2 ** 23 }}") as m:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # refused outright, not a fallback
            with pytest.raises(BitnetError, match=r"chat template (renders|builds a value of) more than \d+ "
                                                  r"(characters|items); refusing it"):
                m.create_chat_completion(CHAT, max_tokens=2)


# ---- tokenizer vocabularies that would cost more than their size ------------------------------------
def _spm_meta(pieces: list[str]) -> dict:
    tokens = ["<unk>", "<s>", "</s>", *pieces]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [2, 3, 3] + [1] * len(pieces), "tokenizer.ggml.scores": [0.0] * len(tokens)}


@pytest.mark.parametrize("n", [1000, 2048])
def test_spm_vocabulary_of_ever_longer_pieces_is_refused_quickly(n):
    """"a", "aa", "aaa", ...: the merges grew with the cube of the count (2,048 pieces ran out of memory)."""
    import resource
    import time

    from bitnet.tokenizer import Tokenizer

    rss0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(BitnetError, match="too many long pieces|characters long, over the limit"):
        Tokenizer.from_gguf_metadata(_spm_meta(["a" * k for k in range(1, n + 1)]))
    assert time.perf_counter() - t0 < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200 << 10  # KiB


def test_spm_vocabulary_of_real_shape_builds():
    """Many short pieces (SentencePiece's default max_piece_length is 16) and a few long ones build."""
    import itertools

    from bitnet.tokenizer import Tokenizer

    letters = "abcdefghijklmnop"
    pieces = list(letters) + ["".join(p) for p in itertools.islice(itertools.product(letters, repeat=4), 20000)]
    pieces += ["▁" * k for k in range(1, 17)] + ["=" * 200]
    tok = Tokenizer.from_gguf_metadata(_spm_meta(pieces))
    assert tok.decode(tok.encode("abcd", add_bos=False)) == "abcd"


def test_gpt2_token_over_the_length_limit_is_refused():
    from bitnet.tokenizer import MAX_TOKEN_CHARS, Tokenizer

    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b" * (MAX_TOKEN_CHARS + 1)],
            "tokenizer.ggml.merges": []}
    with pytest.raises(BitnetError, match=r"token 1 is 1025 characters long, over the limit of 1024"):
        Tokenizer.from_gguf_metadata(meta)
