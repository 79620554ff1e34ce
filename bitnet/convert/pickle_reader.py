"""PyTorch pickle checkpoints (pytorch_model.bin, sharded .bin, *.pt, *.pth, *.ckpt), opt-in only.

A pickle file is a program: unpickling it may call any Python function, so a model file from
a stranger can run code on the machine that converts it. The converter therefore reads pickle
checkpoints only when asked (--allow-pickle), and then only through
`torch.load(weights_only=True)`, whose restricted unpickler builds tensors and plain
containers and refuses everything else. PyTorch is needed for that and for nothing else here.

The tensors are offered with the interface of safetensors_reader.Checkpoint (names, dtype as
safetensors spells it, shape, raw, load_f32), so the converter does not care which it reads.
Unlike safetensors nothing is checked before the file is unpickled, and a whole shard is
loaded at once (memory-mapped where the file's format allows it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from bitnet.convert.safetensors_reader import TensorSource

SINGLE_FILE = "pytorch_model.bin"
INDEX_FILE = "pytorch_model.bin.index.json"
SUFFIXES = (".pt", ".pth", ".ckpt")
# torch dtype name -> safetensors dtype name (the ones the converter reads)
DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "uint8": "U8", "int8": "I8"}
STATE_DICT_KEYS = ("state_dict", "model")  # where training frameworks nest the weights


def find_pickle_files(root: Path) -> tuple[list[Path], Path | None]:
    """The pickle checkpoint files of a model directory, and its shard index if any.

    Order of preference: pytorch_model.bin.index.json (its shards), pytorch_model.bin, then one
    *.pt / *.pth / *.ckpt file. ([], None) when there is none.
    """
    if (root / INDEX_FILE).is_file():
        shards = sorted(set(_read_index(root).values()))
        return [root / s for s in shards], root / INDEX_FILE
    if (root / SINGLE_FILE).is_file():
        return [root / SINGLE_FILE], None
    found = sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if len(found) > 1:
        raise ValueError(
            f"{root}: several pickle files ({', '.join(p.name for p in found[:5])}), so which one holds the "
            "weights is unclear; keep only the model's weights in the folder"
        )
    return found, None


def _read_index(root: Path) -> dict[str, str]:
    path = root / INDEX_FILE
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        ok = isinstance(weight_map, dict)
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not a valid checkpoint index (a JSON object with a 'weight_map')")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise ValueError(f"{path}: shard {shard!r} for {name!r} is not a file name in the folder")
    return weight_map


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ValueError(
            "reading a pickle checkpoint needs PyTorch (pip install torch); or convert the checkpoint "
            "to safetensors first"
        ) from None
    return torch


def _refusal_reason(exc: BaseException) -> str:
    """The informative line of torch's weights_only error (not its advice to turn the check off)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", s).strip() for s in str(exc).splitlines()]
    lines = [s for s in lines if s]
    advice = ("Weights only load failed", "Check the documentation", "(1)", "(2)")
    blocked = [s for s in lines if "GLOBAL" in s or "Unsupported" in s]
    useful = blocked or [s for s in lines if not s.startswith(advice)] or lines or [type(exc).__name__]
    return useful[0].split(". Please")[0][:200]


def _load_state_dict(torch, path: Path) -> dict:
    """torch.load(weights_only=True) of one file, unwrapped to a {name: tensor} dict."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # noqa: BLE001 (an unreadable or hostile file raises anything)
        raise ValueError(
            f"{path}: torch.load(weights_only=True) cannot read it ({type(exc).__name__}: {_refusal_reason(exc)})"
        ) from None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: not a state dict (a mapping of tensor names to tensors)")
    for name, t in obj.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise ValueError(f"{path}: entry {str(name)[:80]!r} is not a named tensor")
        if t.layout != torch.strided or t.is_quantized or t.is_complex():
            raise ValueError(f"{path}: tensor {name!r} is not a plain dense tensor")
    return {name: t.detach() for name, t in obj.items()}


class PickleCheckpoint(TensorSource):
    """The tensors of pickle checkpoint files, loaded with torch.load(weights_only=True)."""

    def __init__(self, files: list[Path], index: Path | None = None):
        torch = _import_torch()
        self._torch, self.files = torch, list(files)
        self._tensors: dict = {}
        shard_of: dict[str, str] = {}
        for path in self.files:
            for name, t in _load_state_dict(torch, path).items():
                if name in self._tensors:
                    raise ValueError(f"tensor {name!r} is in both {shard_of[name]} and {path.name}")
                self._tensors[name], shard_of[name] = t, path.name
        if index is not None:
            for name, shard in _read_index(index.parent).items():
                if shard_of.get(name) != shard:
                    raise ValueError(f"{index}: tensor {name!r} is not in its shard {shard}")

    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def dtype(self, name: str) -> str:
        torch_name = str(self._tensors[name].dtype).removeprefix("torch.")
        return DTYPE_NAMES.get(torch_name, torch_name.upper())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in self._tensors[name].shape)

    def raw(self, name: str) -> np.ndarray:
        """The tensor in its storage dtype (BF16 as its uint16 bit pattern), as numpy."""
        dtype, t = self.dtype(name), self._tensors[name].contiguous()
        if dtype not in DTYPE_NAMES.values():
            raise ValueError(f"tensor {name!r} has dtype {dtype}, not one of {', '.join(DTYPE_NAMES.values())}")
        if dtype == "BF16":
            return t.view(self._torch.int16).numpy().view(np.uint16)
        return t.numpy()

    def release_pages(self) -> None:
        pass  # torch owns the memory (or the map) of what it loaded

    @property
    def paths(self) -> list[Path]:
        return list(self.files)
