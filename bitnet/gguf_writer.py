"""A streaming GGUF v3 writer: header first, then tensor data one tensor at a time.

File layout (little-endian):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x { string key | u32 value_type | value }            string = u64 length + UTF-8 bytes
    n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
    padding to `general.alignment` (default 32)
    tensor data, each tensor starting at a multiple of the alignment (offsets relative to here)

Usage:
    with GGUFWriter(path) as w:
        w.add_kv("general.architecture", "bitnet-b1.58", "string")
        w.add_tensor("token_embd.weight", (n_embd, n_vocab), GGML_TYPE_F16, n_bytes)
        w.write_header()
        w.write_tensor_data("token_embd.weight", array_or_bytes_or_chunks)

The file is written to a temporary file made with O_EXCL and an unpredictable name next to
`path` (tempfile.mkstemp: a planted symlink cannot redirect it), and renamed onto `path` only
when the block exits cleanly with every declared tensor written (and, given `verify`, after
verify(temporary path) accepted it: the converters load it with our own loader, so a file we
cannot read is never put in place). Otherwise the temporary file is removed, also on SIGTERM,
SIGHUP and SIGINT (raised as OutputInterrupted), and an existing file at `path` is left as it
was. A `path` that exists and is not a regular file (a device such as /dev/null, a FIFO, a
socket, a directory or a symbolic link) is refused, never replaced. Tests that craft corrupt files can go around every
check: add_kv_raw() writes any type id and payload, add_tensor(offset=...) any offset,
write_header(n_tensors=..., n_kv=...) any counts, write_raw() any bytes; strict=False allows
duplicate tensor names and skips the "all tensors written" rule; magic, version and the
padding alignment are constructor arguments.
"""

from __future__ import annotations

import os
import signal
import stat
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_BF16 = 30
GGML_TYPE_I2_S = 36

# GGUF value type ids.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

# kind -> (value type id, struct format) for scalars.
_SCALARS = {
    "u8": (UINT8, "<B"),
    "i8": (INT8, "<b"),
    "u16": (UINT16, "<H"),
    "i16": (INT16, "<h"),
    "u32": (UINT32, "<I"),
    "i32": (INT32, "<i"),
    "u64": (UINT64, "<Q"),
    "i64": (INT64, "<q"),
    "f32": (FLOAT32, "<f"),
    "f64": (FLOAT64, "<d"),
    "bool": (BOOL, "<?"),
}
# kind -> (element type id, numpy dtype) for numeric arrays.
_ARRAYS = {
    "i32_array": (INT32, "<i4"),
    "u32_array": (UINT32, "<u4"),
    "f32_array": (FLOAT32, "<f4"),
}
KINDS = (*_SCALARS, "string", "string_array", *_ARRAYS)

if sys.byteorder != "little":  # tensor data is written from native arrays
    raise ImportError("bitnet.gguf_writer needs a little-endian host")


def encode_string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return struct.pack("<Q", len(data)) + data


def encode_value(value, kind: str) -> tuple[int, bytes]:
    """(GGUF value type id, payload bytes) for a Python value of the given kind."""
    if kind in _SCALARS:
        type_id, fmt = _SCALARS[kind]
        if kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"bool value expected, got {type(value).__name__}")
        elif not kind.startswith("f") and (isinstance(value, bool) or int(value) != value):
            raise TypeError(f"{kind} value must be an integer, got {value!r}")
        try:
            return type_id, struct.pack(fmt, value)
        except struct.error as e:
            raise ValueError(f"{value!r} does not fit in {kind}: {e}") from None
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"string value expected, got {type(value).__name__}")
        return STRING, encode_string(value)
    if kind == "string_array":
        items = [encode_string(v) for v in value]
        return ARRAY, struct.pack("<IQ", STRING, len(items)) + b"".join(items)
    if kind in _ARRAYS:
        type_id, dtype = _ARRAYS[kind]
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise ValueError(f"{kind} value must be one-dimensional")
        converted = arr.astype(dtype)
        if kind != "f32_array" and not np.array_equal(converted.astype(np.int64), arr.astype(np.int64)):
            raise ValueError(f"{kind} value has elements out of range")
        return ARRAY, struct.pack("<IQ", type_id, len(converted)) + converted.tobytes()
    raise ValueError(f"unknown GGUF value kind {kind!r} (known: {', '.join(KINDS)})")


def _pad(n: int, alignment: int) -> int:
    return (alignment - n % alignment) % alignment


class OutputInterrupted(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT arrived while an output file was being written (it was removed)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def interrupted_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal that stopped a write (130 for Ctrl+C), as a shell reports it."""
    return 128 + getattr(exc, "signum", 2)


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


def check_output_path(path) -> None:
    """ValueError unless path is absent or a regular file (never a device, FIFO, socket,
    directory or symbolic link: replacing one of those would destroy it, not update it)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output directory {path.parent} does not exist") from None
        return
    if stat.S_ISDIR(mode):
        raise ValueError(f"output {path} is a directory; give a file name")
    if stat.S_ISLNK(mode):
        raise ValueError(f"output {path} is a symbolic link; refusing to replace it (give the real file's path)")
    if not stat.S_ISREG(mode):
        raise ValueError(f"output {path} exists and is not a regular file (a device, FIFO or socket); "
                         "refusing to replace it")


class GGUFWriter:
    def __init__(
        self,
        path,
        *,
        magic: bytes = GGUF_MAGIC,
        version: int = GGUF_VERSION,
        alignment: int = DEFAULT_ALIGNMENT,
        strict: bool = True,
        verify=None,
    ):
        self.path = Path(path)
        check_output_path(self.path)
        self.tmp_path: Path | None = None  # made on entering the block
        self.verify = verify  # verify(tmp_path) raises if the finished file must not be put in place
        self._old_handlers: dict = {}
        self.magic, self.version, self.strict = magic, version, strict
        self.alignment = alignment  # padding actually written; add_kv("general.alignment") sets it too
        self._kvs: list[bytes] = []
        self._keys: set[str] = set()
        self._tensors: list[dict] = []  # name, n_bytes, offset, written
        self._tensor_infos: list[bytes] = []
        self._next_offset = 0
        self._next_tensor = 0
        self._data_start = None
        self._file = None

    # -- context manager: temp file, rename on success, cleanup on any exception ----------------
    def __enter__(self):
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp_path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._catch_signals()
        return self

    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; its own handlers then apply

        def stop(signum, frame):
            raise OutputInterrupted(signum)

        for signum in _STOP_SIGNALS:
            try:
                self._old_handlers[signum] = signal.signal(signum, stop)
            except (ValueError, OSError):
                pass

    def _restore_signals(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._old_handlers.clear()

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            self._discard()
            raise
        finally:
            self._restore_signals()
        if exc_type is not None:
            self._discard()
        return False

    def _finish(self) -> None:
        if self._data_start is None:
            raise ValueError(f"{self.path}: write_header() was never called")
        missing = [t["name"] for t in self._tensors if not t["written"]]
        if missing and self.strict:
            raise ValueError(f"{self.path}: tensor data never written for {', '.join(missing[:5])}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp_path, 0o666 & ~umask)  # mkstemp's 0600, as open() would have made it
        if self.verify is not None:
            self.verify(self.tmp_path)
        check_output_path(self.path)  # again: it may have been swapped for something else meanwhile
        os.replace(self.tmp_path, self.path)

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.tmp_path is None:
            return
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass

    # -- header --------------------------------------------------------------------------------
    def add_kv(self, key: str, value, kind: str) -> None:
        if key in self._keys:
            raise ValueError(f"duplicate GGUF key {key!r}")
        type_id, payload = encode_value(value, kind)
        if key == "general.alignment":
            if kind != "u32" or value < 1 or value & (value - 1):
                raise ValueError("general.alignment must be a u32 power of two")
            if self._tensors:
                raise ValueError("set general.alignment before adding tensors")
            self.alignment = value
        self.add_kv_raw(key, type_id, payload)

    def add_kv_raw(self, key: str | bytes, type_id: int, payload: bytes) -> None:
        """Write key, then u32 type_id, then payload verbatim (no checks: for crafted files)."""
        self._check_not_started()
        if isinstance(key, str):
            self._keys.add(key)
        self._kvs.append(encode_string(key) + struct.pack("<I", type_id) + payload)

    def add_tensor(self, name: str, ne: tuple, ggml_type: int, n_bytes: int, *, offset: int | None = None) -> None:
        """Declare a tensor; ne in GGUF order (ne0, the fastest dimension, first)."""
        self._check_not_started()
        if self.strict and any(t["name"] == name for t in self._tensors):
            raise ValueError(f"duplicate tensor name {name!r}")
        if offset is None:
            offset = self._next_offset
            self._next_offset += n_bytes + _pad(n_bytes, self.alignment)
        info = encode_string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        self._tensor_infos.append(info + struct.pack("<IQ", ggml_type, offset))
        self._tensors.append({"name": name, "n_bytes": n_bytes, "offset": offset, "written": False})

    def write_header(self, *, n_tensors: int | None = None, n_kv: int | None = None) -> None:
        self._check_not_started()
        n_tensors = len(self._tensor_infos) if n_tensors is None else n_tensors
        n_kv = len(self._kvs) if n_kv is None else n_kv
        head = self.magic + struct.pack("<IQQ", self.version, n_tensors, n_kv)
        self._file.write(head)
        for blob in (*self._kvs, *self._tensor_infos):
            self._file.write(blob)
        self.write_raw(b"\0" * _pad(self._file.tell(), self.alignment))
        self._data_start = self._file.tell()

    def _check_not_started(self) -> None:
        if self._file is None:
            raise ValueError("use GGUFWriter as a context manager (with GGUFWriter(path) as w: ...)")
        if self._data_start is not None:
            raise ValueError("the header is already written")

    # -- data ----------------------------------------------------------------------------------
    def write_raw(self, data: bytes) -> None:
        self._file.write(data)

    def write_tensor_data(self, name: str, data) -> None:
        """Write one tensor's bytes: bytes, a numpy array, or an iterable of those (chunks)."""
        if self._data_start is None:
            raise ValueError("write_header() must come before tensor data")
        if self._next_tensor >= len(self._tensors):
            raise ValueError(f"tensor {name!r} was not declared (or is written twice)")
        tensor = self._tensors[self._next_tensor]
        if tensor["name"] != name:
            raise ValueError(f"tensor data out of order: expected {tensor['name']!r}, got {name!r}")
        pos = self._file.tell() - self._data_start
        if pos < tensor["offset"]:
            self.write_raw(b"\0" * (tensor["offset"] - pos))
        written = 0
        chunks = [data] if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) else data
        for chunk in _as_byte_views(chunks):
            written += len(chunk)
            if written > tensor["n_bytes"]:
                raise ValueError(f"tensor {name!r}: more than the declared {tensor['n_bytes']} bytes")
            self._file.write(chunk)
        if written != tensor["n_bytes"]:
            raise ValueError(f"tensor {name!r}: wrote {written} bytes, declared {tensor['n_bytes']}")
        self.write_raw(b"\0" * _pad(written, self.alignment))
        tensor["written"] = True
        self._next_tensor += 1


def _as_byte_views(chunks: Iterable) -> Iterable[memoryview]:
    for chunk in chunks:
        if isinstance(chunk, np.ndarray):
            if chunk.dtype.byteorder == ">":
                raise ValueError("big-endian arrays cannot be written to GGUF")
            chunk = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        yield memoryview(chunk).cast("B")
