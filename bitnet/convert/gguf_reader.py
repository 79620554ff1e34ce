"""A small GGUF reader for checking what the converter wrote (tests, `--verify` style tools).

The engine's reader (src/gguf.cpp) is the hardened one; this twin only needs to be right on
well-formed files, but still refuses to read past the end of the file. `gguf.GGUFReader` is
not used because it rejects bitnet.cpp's I2_S type id (36).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet import gguf_writer as gw

_SCALAR_FORMATS = {
    gw.UINT8: "<B", gw.INT8: "<b", gw.UINT16: "<H", gw.INT16: "<h", gw.UINT32: "<I",
    gw.INT32: "<i", gw.FLOAT32: "<f", gw.BOOL: "<?", gw.UINT64: "<Q", gw.INT64: "<q",
    gw.FLOAT64: "<d",
}  # fmt: skip
_ARRAY_DTYPES = {
    gw.UINT8: "<u1", gw.INT8: "<i1", gw.UINT16: "<u2", gw.INT16: "<i2", gw.UINT32: "<u4",
    gw.INT32: "<i4", gw.FLOAT32: "<f4", gw.BOOL: "?", gw.UINT64: "<u8", gw.INT64: "<i8",
    gw.FLOAT64: "<f8",
}  # fmt: skip


@dataclass
class GGUFTensor:
    name: str
    ne: tuple[int, ...]  # GGUF order: ne0 (fastest) first
    ggml_type: int
    offset: int  # absolute, in the file
    data: np.ndarray | None = None  # uint8 view of the tensor's bytes, filled by read_gguf


@dataclass
class GGUFFile:
    version: int
    kv: dict  # key -> Python value (lists for arrays)
    kv_types: dict  # key -> value type id (ARRAY for arrays)
    tensors: dict  # name -> GGUFTensor, in file order
    alignment: int


class _Cursor:
    def __init__(self, buf: np.ndarray):
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError(f"truncated GGUF: need {n} bytes at offset {self.pos}, file has {len(self.buf)}")
        out = self.buf[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8")

    def value(self, type_id: int):
        if type_id == gw.STRING:
            return self.string()
        if type_id in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[type_id])
        if type_id == gw.ARRAY:
            elem_type, count = self.unpack("<I"), self.unpack("<Q")
            if elem_type == gw.STRING:
                return [self.string() for _ in range(count)]
            if elem_type not in _ARRAY_DTYPES:
                raise ValueError(f"unsupported GGUF array element type {elem_type}")
            dtype = np.dtype(_ARRAY_DTYPES[elem_type])
            return np.frombuffer(self.take(count * dtype.itemsize), dtype).tolist()
        raise ValueError(f"unknown GGUF value type {type_id}")


# ggml type id -> (elements per block, bytes per block) of the block types this reader sizes.
_BLOCK_TYPES = {gw.GGML_TYPE_F32: (1, 4), gw.GGML_TYPE_F16: (1, 2), gw.GGML_TYPE_BF16: (1, 2), 8: (32, 34),
                14: (256, 210), 34: (256, 54), 35: (256, 66)}  # Q8_0, Q6_K, TQ1_0, TQ2_0  # fmt: skip


def tensor_n_bytes(ne: tuple[int, ...], ggml_type: int) -> int:
    n = int(np.prod(ne))
    if ggml_type == gw.GGML_TYPE_I2_S:
        return n // 4 + 32
    if ggml_type not in _BLOCK_TYPES:
        raise ValueError(f"ggml type {ggml_type} is not one this reader knows")
    block, n_bytes = _BLOCK_TYPES[ggml_type]
    return n // block * n_bytes


def read_gguf(path) -> GGUFFile:
    """Parse a GGUF v2/v3 file; tensor data are read-only uint8 views into a memory map."""
    buf = np.memmap(Path(path), dtype=np.uint8, mode="r")
    cur = _Cursor(buf)
    if cur.take(4) != gw.GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (bad magic)")
    version, n_tensors, n_kv = cur.unpack("<I"), cur.unpack("<Q"), cur.unpack("<Q")
    kv, kv_types = {}, {}
    for _ in range(n_kv):
        key, type_id = cur.string(), cur.unpack("<I")
        kv[key], kv_types[key] = cur.value(type_id), type_id
    infos = []
    for _ in range(n_tensors):
        name, n_dims = cur.string(), cur.unpack("<I")
        ne = tuple(cur.unpack("<Q") for _ in range(n_dims))
        infos.append((name, ne, cur.unpack("<I"), cur.unpack("<Q")))
    alignment = int(kv.get("general.alignment", gw.DEFAULT_ALIGNMENT))
    data_start = cur.pos + (alignment - cur.pos % alignment) % alignment
    tensors = {}
    for name, ne, ggml_type, offset in infos:
        start = data_start + offset
        end = start + tensor_n_bytes(ne, ggml_type)
        if end > len(buf):
            raise ValueError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = GGUFTensor(name, ne, ggml_type, start, buf[start:end])
    return GGUFFile(version, kv, kv_types, tensors, alignment)
