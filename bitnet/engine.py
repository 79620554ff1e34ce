"""ctypes binding to libbitnet's C API (include/bitnet.h). Thin: handles, errors, arrays."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

import numpy as np

from bitnet import paths
from bitnet.errors import BitnetError

_LIB_NAMES = {"linux": "libbitnet.so", "darwin": "libbitnet.dylib", "win32": "bitnet.dll"}


class SamplerParams(ctypes.Structure):
    _fields_ = [
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("repeat_penalty", ctypes.c_float),
        ("repeat_last_n", ctypes.c_int32),
        ("presence_penalty", ctypes.c_float),
        ("frequency_penalty", ctypes.c_float),
        ("seed", ctypes.c_uint64),
    ]


# name: (restype, argtypes)
_P, _I32, _I64, _F = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
_S = ctypes.c_char_p
_SIGNATURES = {
    "bitnet_last_error": (_S, []),
    "bitnet_version": (_S, []),
    "bitnet_isa": (_S, []),
    "bitnet_set_isa": (ctypes.c_int, [_S]),
    "bitnet_available_isas": (_S, []),
    "bitnet_cpu_signature": (_S, []),
    "bitnet_load_preset": (ctypes.c_int, [_S]),
    "bitnet_set_tuning": (ctypes.c_int, [_S, _I64]),
    "bitnet_get_tuning": (_I64, [_S]),
    "bitnet_default_tuning": (_I64, [_S]),
    "bitnet_model_load": (_P, [_S]),
    "bitnet_model_free": (None, [_P]),
    "bitnet_model_n_vocab": (_I32, [_P]),
    "bitnet_model_n_ctx_train": (_I32, [_P]),
    "bitnet_model_n_embd": (_I32, [_P]),
    "bitnet_model_n_layer": (_I32, [_P]),
    "bitnet_model_arch": (_S, [_P]),
    "bitnet_model_desc": (_S, [_P]),
    "bitnet_model_size_bytes": (ctypes.c_uint64, [_P]),
    "bitnet_model_meta_count": (_I32, [_P]),
    "bitnet_model_meta_key": (_S, [_P, _I32]),
    "bitnet_model_meta_json": (_S, [_P, _S]),
    "bitnet_context_new": (_P, [_P, _I32, _I32]),
    "bitnet_model_set_head_act": (ctypes.c_int, [_P, _I32]),
    "bitnet_context_set_head_act": (ctypes.c_int, [_P, _I32]),
    "bitnet_context_free": (None, [_P]),
    "bitnet_context_n_ctx": (_I32, [_P]),
    "bitnet_context_n_past": (_I32, [_P]),
    "bitnet_context_truncate": (ctypes.c_int, [_P, _I32]),
    "bitnet_context_set_threads": (ctypes.c_int, [_P, _I32]),
    "bitnet_context_copy_prefix": (ctypes.c_int, [_P, _P, _I32]),
    "bitnet_context_set_dump_dir": (ctypes.c_int, [_P, _S]),
    "bitnet_decode": (ctypes.c_int, [_P, _P, _I32, _P, ctypes.c_int]),
    "bitnet_decode_multi": (ctypes.c_int, [_P, _P, _I32, _P]),
    "bitnet_hidden_multi": (ctypes.c_int, [_P, _I32, _P, _P, _P]),
    "bitnet_sampler_default_params": (SamplerParams, []),
    "bitnet_sampler_new": (_P, [ctypes.POINTER(SamplerParams)]),
    "bitnet_sampler_free": (None, [_P]),
    "bitnet_sampler_accept": (None, [_P, _I32]),
    "bitnet_sampler_reset": (None, [_P]),
    "bitnet_sampler_sample": (_I32, [_P, _P, _I32]),
    "bitnet_quantize_activations": (ctypes.c_int, [_P, _I64, _I64, _P, _P]),
    "bitnet_i2s_matmul": (ctypes.c_int, [_S, _P, _I64, _I64, _P, _I64, _P, _I32]),
}


def _candidate_paths() -> list[Path]:
    return paths.library_candidates(_LIB_NAMES.get(sys.platform, "libbitnet.so"), sys.path)


_lib = None


def lib() -> ctypes.CDLL:
    """The loaded library: $BITNET_LIB, a checkout's newest build, the package folder, or bitnet/
    on sys.path (bitnet/paths.py). One that this machine cannot load is passed over."""
    global _lib
    if _lib is None:
        problems = []
        for path in _candidate_paths():
            if not path.is_file():
                continue
            try:
                _lib = ctypes.CDLL(str(path))
                break
            except OSError as e:
                problems.append(f"{path}: {e}")
        else:
            tried = f" (could not load {'; '.join(problems)})" if problems else ""
            raise BitnetError(
                "the engine library libbitnet is not built: run `python setup_env.py` in the repository, or "
                f"install the package (`pip install .`){tried}"
            )
        for fname, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(_lib, fname)
            fn.restype, fn.argtypes = restype, argtypes
        _apply_preset(_lib)
    return _lib


def library_path() -> str:
    """The file the engine was loaded from."""
    return lib()._name


def preset_dir() -> Path:
    """Where an autotune writes: $BITNET_PRESET_DIR, else the per-user cache ($XDG_CACHE_HOME/bitnet/presets)."""
    return paths.tuned_preset_dir()


def preset_path() -> Path:
    """This CPU's preset file: the first in paths.preset_search_dirs() that exists (this user's
    tuned one, then the shipped one), else where a tune would write it."""
    return _find_preset(cpu_signature())


def _find_preset(signature: str) -> Path:
    for folder in paths.preset_search_dirs():
        if (folder / f"{signature}.json").is_file():
            return folder / f"{signature}.json"
    return preset_dir() / f"{signature}.json"


def _apply_preset(library: ctypes.CDLL) -> None:
    """This CPU's tuning preset, if there is one. A broken preset is reported and skipped: it
    can only cost speed, never change a result."""
    path = _find_preset(library.bitnet_cpu_signature().decode())
    if path.is_file() and library.bitnet_load_preset(os.fsencode(path)) != 0:
        print(f"bitnet: warning: {library.bitnet_last_error().decode()}; using built-in defaults", file=sys.stderr)


def cpu_signature() -> str:
    return lib().bitnet_cpu_signature().decode()


def set_tuning(key: str, value: int) -> None:
    check(lib().bitnet_set_tuning(key.encode(), int(value)))


def get_tuning(key: str) -> int:
    value = lib().bitnet_get_tuning(key.encode())
    if value < 0:
        raise BitnetError(f"unknown tuning parameter {key!r}")
    return value


def default_tuning(key: str) -> int:
    """A parameter's built-in value (before any preset or environment override)."""
    value = lib().bitnet_default_tuning(key.encode())
    if value < 0:
        raise BitnetError(f"unknown tuning parameter {key!r}")
    return value


def last_error() -> str:
    return lib().bitnet_last_error().decode("utf-8", "replace")


def check(status: int) -> int:
    if status < 0:
        raise BitnetError(last_error())
    return status


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


# The output head's activation modes (include/bitnet.h, enum bitnet_head_act): exact for the stored
# weights, or int8 per block with integer dot products (faster; its quality cost is in the README).
HEAD_ACTS = {"exact": 0, "int8": 1}


def head_act_code(mode: str) -> int:
    if mode not in HEAD_ACTS:
        raise BitnetError(f"unknown head activation mode {mode!r}: use one of {', '.join(HEAD_ACTS)}")
    return HEAD_ACTS[mode]


class NativeModel:
    """Owns a bitnet_model handle."""

    def __init__(self, path: str | os.PathLike):
        self._handle = lib().bitnet_model_load(os.fsencode(path))
        if not self._handle:
            raise BitnetError(last_error())
        L = lib()
        self.n_vocab = L.bitnet_model_n_vocab(self._handle)
        self.n_ctx_train = L.bitnet_model_n_ctx_train(self._handle)
        self.n_embd = L.bitnet_model_n_embd(self._handle)
        self.n_layer = L.bitnet_model_n_layer(self._handle)
        self.arch = L.bitnet_model_arch(self._handle).decode()
        self.desc = L.bitnet_model_desc(self._handle).decode()
        self.size_bytes = L.bitnet_model_size_bytes(self._handle)
        self.head_act = "exact"

    @property
    def handle(self):
        if not self._handle:
            raise BitnetError("the model has been closed")
        return self._handle

    def set_head_act(self, mode: str) -> None:
        """The output head's activations for contexts created from now on: "exact" (default) or
        "int8" (Q8_0 / Q6_K heads only; see HEAD_ACTS)."""
        check(lib().bitnet_model_set_head_act(self.handle, head_act_code(mode)))
        self.head_act = mode

    def metadata(self) -> dict:
        """Every GGUF key with its value (arrays as lists)."""
        L, out = lib(), {}
        for i in range(L.bitnet_model_meta_count(self.handle)):
            key = L.bitnet_model_meta_key(self.handle, i)
            text = L.bitnet_model_meta_json(self.handle, key)
            out[key.decode("utf-8", "replace")] = json.loads(text) if text is not None else None
        return out

    def close(self):
        if self._handle:
            lib().bitnet_model_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


class NativeContext:
    """Owns a bitnet_context: one sequence's KV cache. Keeps its model alive."""

    def __init__(self, model: NativeModel, n_ctx: int, n_threads: int):
        self.model = model
        self._handle = lib().bitnet_context_new(model.handle, int(n_ctx), int(n_threads))
        if not self._handle:
            raise BitnetError(last_error())
        self.n_ctx = lib().bitnet_context_n_ctx(self._handle)

    def set_head_act(self, mode: str) -> None:
        """This context's output head activations ("exact" or "int8"), as NativeModel.set_head_act."""
        check(lib().bitnet_context_set_head_act(self._handle, head_act_code(mode)))

    @property
    def n_past(self) -> int:
        return lib().bitnet_context_n_past(self._handle)

    def truncate(self, n_past: int):
        check(lib().bitnet_context_truncate(self._handle, int(n_past)))

    def copy_prefix_from(self, source: NativeContext, n_past: int):
        """Hold the first n_past cached positions of source (same model) and nothing after them."""
        check(lib().bitnet_context_copy_prefix(self._handle, source._handle, int(n_past)))

    def set_dump_dir(self, path: str | os.PathLike | None):
        """Write every named intermediate tensor of each batch to path as .npy (None: off)."""
        check(lib().bitnet_context_set_dump_dir(self._handle, os.fsencode(path) if path else None))

    def decode(self, tokens, all_logits: bool = False, want_logits: bool = True) -> np.ndarray | None:
        """Run tokens after the cached ones; logits [n, vocab] (all) or [vocab] (last)."""
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        if ids.ndim != 1 or ids.size == 0:
            raise BitnetError("decode needs a non-empty 1-D list of token ids")
        vocab = self.model.n_vocab
        out = None
        if want_logits:
            out = np.empty((ids.size, vocab) if all_logits else (vocab,), dtype=np.float32)
        check(
            lib().bitnet_decode(
                self._handle, _ptr(ids), ids.size, _ptr(out) if out is not None else None, int(all_logits)
            )
        )
        return out

    def close(self):
        if self._handle:
            lib().bitnet_context_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


def decode_multi(contexts: list[NativeContext], tokens) -> np.ndarray:
    """One new token for each context (all of one model) in a single batched pass over the
    weights; logits [len(contexts), vocab], row i exactly what contexts[i].decode would give."""
    ids = np.ascontiguousarray(tokens, dtype=np.int32)
    if ids.ndim != 1 or ids.size == 0 or ids.size != len(contexts):
        raise BitnetError("decode_multi needs one token id per context")
    handles = (ctypes.c_void_p * len(contexts))(*[c._handle for c in contexts])
    out = np.empty((ids.size, contexts[0].model.n_vocab), dtype=np.float32)
    check(lib().bitnet_decode_multi(handles, _ptr(ids), ids.size, _ptr(out)))
    return out


def hidden_multi(contexts: list[NativeContext], token_lists: list) -> np.ndarray:
    """Each token list appended to its own context (all of one model), in shared batches; the
    final hidden state after the output norm of every token, [sum of lengths, n_embd] in order."""
    if not contexts or len(contexts) != len(token_lists):
        raise BitnetError("hidden_multi needs one token list per context")
    counts = np.array([len(t) for t in token_lists], dtype=np.int32)
    ids = np.ascontiguousarray(np.concatenate([np.asarray(t, dtype=np.int32) for t in token_lists]), dtype=np.int32)
    handles = (ctypes.c_void_p * len(contexts))(*[c._handle for c in contexts])
    out = np.empty((ids.size, contexts[0].model.n_embd), dtype=np.float32)
    check(lib().bitnet_hidden_multi(handles, len(contexts), _ptr(ids), _ptr(counts), _ptr(out)))
    return out


class NativeSampler:
    def __init__(self, **params):
        p = lib().bitnet_sampler_default_params()
        for key, value in params.items():
            setattr(p, key, value)
        self._handle = lib().bitnet_sampler_new(ctypes.byref(p))
        if not self._handle:
            raise BitnetError(last_error())

    def accept(self, token: int):
        lib().bitnet_sampler_accept(self._handle, int(token))

    def sample(self, logits: np.ndarray) -> int:
        row = np.ascontiguousarray(logits, dtype=np.float32)
        return check(lib().bitnet_sampler_sample(self._handle, _ptr(row), row.size))

    def close(self):
        if self._handle:
            lib().bitnet_sampler_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


def isa() -> str:
    return lib().bitnet_isa().decode()


def available_isas() -> list[str]:
    return lib().bitnet_available_isas().decode().split(",")


def set_isa(name: str):
    check(lib().bitnet_set_isa(name.encode()))


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and per-row scales exactly as the engine computes them (DESIGN section 3)."""
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    q = np.empty(x.shape, dtype=np.int8)
    s = np.empty(x.shape[0], dtype=np.float32)
    check(lib().bitnet_quantize_activations(_ptr(x), x.shape[0], x.shape[1], _ptr(q), _ptr(s)))
    return q, s


def i2s_matmul(packed: np.ndarray, n: int, k: int, a: np.ndarray, isa_name: str = "", n_threads: int = 1):
    """int32 [m, n] = a [m, k] x W^T for I2_S codes `packed` (n*k/4 bytes, no scale tail)."""
    w = np.ascontiguousarray(packed, dtype=np.uint8)
    a = np.ascontiguousarray(np.atleast_2d(a), dtype=np.int8)
    if w.size != n * k // 4 or a.shape[1] != k:
        raise BitnetError("i2s_matmul: shapes do not match")
    y = np.empty((a.shape[0], n), dtype=np.int32)
    check(lib().bitnet_i2s_matmul(isa_name.encode(), _ptr(w), n, k, _ptr(a), a.shape[0], _ptr(y), n_threads))
    return y
