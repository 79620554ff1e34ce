"""Copy a GGUF with tensors replaced (new type and bytes), added or dropped, and keys changed:
for tests that need another engine's file kinds (TQ blocks with their own scales, a Q8_0 head,
an ARM-layout I2_S tensor) made from one of ours. gguf_edit.py keeps types and sizes; this does not."""

from __future__ import annotations

from pathlib import Path

from bitnet import gguf_writer as gw
from bitnet.convert.gguf_reader import read_gguf
from tests.gguf_edit import _kind


def rebuild_gguf(src: Path, dst: Path, *, replace: dict | None = None, add: dict | None = None,
                 drop=(), set_kv: dict | None = None) -> Path:  # fmt: skip
    """replace: name -> (ggml_type, bytes) for a tensor of the same shape; add: name -> (ne, ggml_type,
    bytes), appended; set_kv: key -> (value, kind)."""
    f = read_gguf(src)
    replace, add, set_kv = replace or {}, add or {}, set_kv or {}
    tensors = []
    for t in f.tensors.values():
        if t.name in drop:
            continue
        ggml_type, data = replace.get(t.name, (t.ggml_type, bytes(t.data)))
        tensors.append((t.name, t.ne, ggml_type, bytes(data)))
    tensors += [(name, ne, ggml_type, bytes(data)) for name, (ne, ggml_type, data) in add.items()]
    with gw.GGUFWriter(dst) as w:
        for key, value in f.kv.items():
            if key not in set_kv:
                w.add_kv(key, value, _kind(f.kv_types[key], value))
        for key, (value, kind) in set_kv.items():
            w.add_kv(key, value, kind)
        for name, ne, ggml_type, data in tensors:
            w.add_tensor(name, ne, ggml_type, len(data))
        w.write_header()
        for name, _, _, data in tensors:
            w.write_tensor_data(name, data)
    return Path(dst)
