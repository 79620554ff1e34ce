"""Read character vectors out of an installed R package's data: the lazy-load database pair
`data/Rdata.rdx` (the index) and `data/Rdata.rdb` (the objects), in R's XDR serialization.

Only what a text package needs is read: character vectors, integer/logical vectors and lists
with their attribute pair-lists (names). Any other R type is refused by name, never guessed.

    Rdata.rdx  gzip(serialize(list(variables = list(<name> = c(offset, length), ...), ...)))
    Rdata.rdb  at each (offset, length): u32 big-endian raw length, then the object's
               serialization compressed: zlib when the index says compressed = 1; for 2 / 3
               a type byte ('2' bzip2, 'X' xz, '0' stored) comes first
    object     "X\\n", i32 version (2 or 3), i32 writer, i32 min reader, [v3: i32 n, n bytes of
               the native encoding], then items: i32 flags (type = flags & 0xff, has-attributes
               bit 9, has-tag bit 10), then the type's payload
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

NILVALUE, SYM, LIST, CHAR, LGL, INT, STR, VEC, REF = 254, 1, 2, 9, 10, 13, 16, 19, 255
NA_INT = -(2**31)
LATIN1_LEVEL = 4  # a CHARSXP's encoding bit (flags >> 12); otherwise ASCII or UTF-8


class _Reader:
    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization (expected 'X\\n')")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # writer and minimal reader versions
        if version == 3:
            n_encoding = self.int()
            self.pos += n_encoding  # the native encoding's name
        elif version != 2:
            raise ValueError(f"R serialization version {version} is not supported")

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more words
            hi, lo = self.int(), self.int()
            n = (hi << 32) | (lo & 0xFFFFFFFF)
        return n

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == NILVALUE:
            return None
        if kind == REF:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == LIST:  # pair-list: [attributes] [tag] car cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            return [(tag, car), *(self.item() or [])]
        if kind == CHAR:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            latin1 = (flags >> 12) & LATIN1_LEVEL
            text = self.data[self.pos : self.pos + n].decode("latin-1" if latin1 else "utf-8")
            self.pos += n
            return text
        if kind in (LGL, INT):
            n = self.length()
            values = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
            value = [None if v == NA_INT else v for v in values]
        elif kind in (STR, VEC):
            value = [self.item() for _ in range(self.length())]
        else:
            raise ValueError(f"R object type {kind} is not supported by this reader (text data only)")
        if has_attr:
            names = dict(self.item() or []).get("names")
            if names is not None and kind == VEC:
                return dict(zip(names, value))
        return value


def unserialize(data: bytes):
    """An R object: character/integer/logical vectors -> list, a named list -> dict."""
    return _Reader(data).item()


def _decompress(blob: bytes, compressed: int) -> bytes:
    (n_raw,) = struct.unpack_from(">I", blob, 0)
    if compressed == 1:
        raw = zlib.decompress(blob[4:])
    else:
        kind, body = blob[4:5], blob[5:]
        codecs = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
        if kind not in codecs:
            raise ValueError(f"unknown R lazy-load compression {kind!r}")
        raw = codecs[kind](body)
    if len(raw) != n_raw:
        raise ValueError(f"R lazy-load entry: {len(raw)} bytes decompressed, the header says {n_raw}")
    return raw


def read_lazyload(data_dir) -> dict:
    """{variable name: R object} of an R package's `data/Rdata.rdx` + `data/Rdata.rdb`."""
    data_dir = Path(data_dir)
    index = unserialize(gzip.decompress((data_dir / "Rdata.rdx").read_bytes()))
    compressed = index.get("compressed") or [1]
    db = (data_dir / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        out[name] = unserialize(_decompress(db[offset : offset + length], int(compressed[0])))
    return out
