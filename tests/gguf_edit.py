"""Copy a GGUF with its metadata or tensors changed: for tests of the loader's checks."""

from __future__ import annotations

from pathlib import Path

from bitnet import gguf_writer as gw
from bitnet.convert.gguf_reader import read_gguf

_SCALAR_KINDS = {gw.UINT8: "u8", gw.INT8: "i8", gw.UINT16: "u16", gw.INT16: "i16", gw.UINT32: "u32",
                 gw.INT32: "i32", gw.FLOAT32: "f32", gw.BOOL: "bool", gw.STRING: "string",
                 gw.UINT64: "u64", gw.INT64: "i64", gw.FLOAT64: "f64"}


def _kind(type_id: int, value) -> str:
    if type_id != gw.ARRAY:
        return _SCALAR_KINDS[type_id]
    first = value[0] if len(value) else ""
    return "string_array" if isinstance(first, str) else "f32_array" if isinstance(first, float) else "i32_array"


def rewrite_gguf(src: Path, dst: Path, *, set_kv: dict | None = None, drop_kv=(), rename_prefix: tuple | None = None,
                 drop_tensors=(), tensor_bytes: dict | None = None) -> Path:
    """set_kv: key -> (value, kind); rename_prefix: (old, new) for keys starting with `old.`;
    tensor_bytes: name -> replacement bytes (same size)."""
    f = read_gguf(src)
    set_kv = set_kv or {}
    entries = []
    for key, value in f.kv.items():
        kind = _kind(f.kv_types[key], value)
        if rename_prefix and key.startswith(rename_prefix[0] + "."):
            key = rename_prefix[1] + key[len(rename_prefix[0]):]
        if key not in drop_kv and key not in set_kv:
            entries.append((key, value, kind))
    entries += [(k, v, kind) for k, (v, kind) in set_kv.items()]
    tensors = [t for t in f.tensors.values() if t.name not in drop_tensors]
    with gw.GGUFWriter(dst) as w:
        for key, value, kind in entries:
            w.add_kv(key, value, kind)
        for t in tensors:
            w.add_tensor(t.name, t.ne, t.ggml_type, len(t.data))
        w.write_header()
        for t in tensors:
            w.write_tensor_data(t.name, (tensor_bytes or {}).get(t.name, bytes(t.data)))
    return Path(dst)

