"""Read safetensors checkpoints lazily, one tensor at a time, through a memory map.

File layout: u64 header length N (little-endian) | N bytes of JSON | data. The JSON maps each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
start) plus an optional "__metadata__". Sharded checkpoints add model.safetensors.index.json
whose "weight_map" names the shard holding each tensor. Every offset is checked against the
file size when the file is opened, so a truncated download fails with its name, not a crash.
The converter calls release_pages() after each tensor: the mapped pages it has read leave
the process (they stay in the page cache), so a 2B model is never resident all at once.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

import numpy as np

from bitnet.convert.dtypes import bf16_to_f32

# safetensors dtype -> numpy storage dtype (BF16 as its uint16 bit pattern)
DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "U8": np.dtype("u1"), "I8": np.dtype("i1"),
}  # fmt: skip
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Sanity limits on a header, so that a small hostile one cannot buy minutes or gigabytes: real
# checkpoints have a few thousand tensors per shard (headers of a few MB), names under 100
# characters and at most 5 dimensions.
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_ENTRIES = 1 << 17  # JSON objects in one header (tensors, __metadata__ and the entries' own)
MAX_DIMS = 8
MAX_NAME_CHARS = 1024
MAX_DIM = 1 << 62


def _shown(name: str) -> str:
    """A name as an error message quotes it: at most 80 characters."""
    return repr(name[:80] + "..." if len(name) > 80 else name)


class _ObjectCounter:
    """json object_pairs_hook that stops the parse once a header holds too many objects."""

    def __init__(self, path: Path):
        self.path, self.count = path, 0

    def __call__(self, pairs: list) -> dict:
        self.count += 1
        if self.count > MAX_ENTRIES:
            raise ValueError(f"{self.path}: header lists more than {MAX_ENTRIES} entries; not a real checkpoint")
        return dict(pairs)


class SafetensorsFile:
    """One .safetensors file: header parsed and validated at open, data mapped on first use."""

    def __init__(self, path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{self.path}: too short to be a safetensors file ({size} bytes)")
            n_header = struct.unpack("<Q", head)[0]
            if n_header > min(size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"{self.path}: header length {n_header} does not fit in the file ({size} bytes)")
            try:
                header = json.loads(f.read(n_header), object_pairs_hook=_ObjectCounter(self.path))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                raise ValueError(f"{self.path}: header is not valid JSON ({str(e)[:200]})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: header is not a JSON object")  # noqa: TRY004 (bad file content)
        header.pop("__metadata__", None)
        self.data_start = 8 + n_header
        self.entries = {name: self._check_entry(name, e, size - self.data_start) for name, e in header.items()}
        self._map = None

    def _check_entry(self, name: str, entry, n_data: int) -> tuple[str, tuple[int, ...], int, int]:
        if len(name) > MAX_NAME_CHARS:
            raise ValueError(f"{self.path}: tensor name {_shown(name)} is {len(name)} characters long, over the "
                             f"limit of {MAX_NAME_CHARS}")
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if isinstance(shape, list) and len(shape) > MAX_DIMS:  # before any work on the list
            raise ValueError(f"{self.path}: tensor {_shown(name)} has {len(shape)} dimensions (at most {MAX_DIMS})")
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = all(type(v) is int and 0 <= v <= MAX_DIM for v in (*shape, begin, end)) and isinstance(dtype, str)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{self.path}: malformed header entry for tensor {_shown(name)}")
        if not begin <= end <= n_data:
            raise ValueError(
                f"{self.path}: tensor {_shown(name)} data [{begin}, {end}) lies outside the file's {n_data} data "
                "bytes (truncated download?)"
            )
        if dtype in DTYPES and end - begin != math.prod(shape) * DTYPES[dtype].itemsize:  # exact, no overflow
            raise ValueError(
                f"{self.path}: tensor {_shown(name)} has {end - begin} bytes, not {dtype} of shape {list(shape)}"
            )
        return dtype[:32], shape, begin, end

    def raw(self, name: str) -> np.ndarray:
        """The tensor in its storage dtype (BF16 as uint16), a read-only view into the map."""
        dtype, shape, begin, end = self.entries[name]
        if dtype not in DTYPES:
            raise ValueError(f"{self.path}: tensor {_shown(name)} has dtype {dtype!r}, not one of {', '.join(DTYPES)}")
        if self._map is None:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._map = np.frombuffer(self._mmap, dtype=np.uint8)
        return self._map[self.data_start + begin : self.data_start + end].view(DTYPES[dtype]).reshape(shape)

    def release_pages(self) -> None:
        """Drop this process's mapped pages (views stay valid: pages fault back in on use)."""
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


class TensorSource:
    """What the converter reads tensors through; subclasses provide names, dtype (safetensors'
    spelling: F32, F16, BF16, U8, I8, ...), shape, raw (storage dtype), release_pages, paths."""

    def dtype(self, name: str) -> str:
        raise NotImplementedError

    def raw(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def load_f32(self, name: str) -> np.ndarray:
        """A float tensor as a new f32 array (exact for F32/F16/BF16)."""
        dtype, raw = self.dtype(name), self.raw(name)
        if dtype == "BF16":
            return bf16_to_f32(raw)
        if dtype in ("F32", "F16"):
            return raw.astype(np.float32)
        raise ValueError(f"tensor {name!r} is {dtype}, expected a float type (F32/F16/BF16)")


class Checkpoint(TensorSource):
    """All tensors of a Hugging Face model directory, single-file or sharded."""

    def __init__(self, model_dir):
        root = Path(model_dir)
        self.files: dict[str, SafetensorsFile] = {}
        if (root / SINGLE_FILE).is_file():
            self._where = {name: SINGLE_FILE for name in self._open(root, SINGLE_FILE).entries}
        elif (root / INDEX_FILE).is_file():
            self._where = self._read_index(root)
        else:
            raise FileNotFoundError(f"{root}: no {SINGLE_FILE} or {INDEX_FILE}")

    def _open(self, root: Path, file_name: str) -> SafetensorsFile:
        if file_name not in self.files:
            self.files[file_name] = SafetensorsFile(root / file_name)
        return self.files[file_name]

    def _read_index(self, root: Path) -> dict[str, str]:
        if (root / INDEX_FILE).stat().st_size > MAX_HEADER_BYTES:
            raise ValueError(f"{root / INDEX_FILE}: over {MAX_HEADER_BYTES} bytes; not a real safetensors index")
        try:
            text = (root / INDEX_FILE).read_text(encoding="utf-8")
            weight_map = json.loads(text, object_pairs_hook=_ObjectCounter(root / INDEX_FILE))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"{root / INDEX_FILE}: not a valid safetensors index ({str(e)[:200]})") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{root / INDEX_FILE}: 'weight_map' is not a JSON object")
        for name, file_name in weight_map.items():
            if not isinstance(file_name, str) or Path(file_name).name != file_name:
                raise ValueError(f"{root / INDEX_FILE}: shard {_shown(str(file_name))} for {_shown(name)} is not a "
                                 "file name")
            if name not in self._open(root, file_name).entries:
                raise ValueError(f"{root / INDEX_FILE}: tensor {_shown(name)} is not in its shard {_shown(file_name)}")
        return dict(weight_map)

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def _file(self, name: str) -> SafetensorsFile:
        if name not in self._where:
            raise KeyError(name)
        return self.files[self._where[name]]

    def dtype(self, name: str) -> str:
        return self._file(name).entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file(name).entries[name][1]

    def raw(self, name: str) -> np.ndarray:
        return self._file(name).raw(name)

    def release_pages(self) -> None:
        for f in self.files.values():
            f.release_pages()

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files.values()]
