"""Ternary Hugging Face checkpoint -> GGUF, one tensor at a time, for every family in families.py.

Reads config.json and the safetensors tensors (packed uint8 + weight_scale, or float masters
ternarized by absmean; see ternary.py), checks every shape against the config before the
output file is created, then streams: plan every tensor (name, dims, type, size), write the
header, write each tensor's bytes. Nothing larger than one tensor is held in memory.
Ternary tensors are written as I2_S (bitnet.cpp's layout), TQ2_0 / TQ1_0 (llama.cpp's, under
an architecture name llama.cpp knows; the scale rounded to f16, as those types store it) or
as floats t * scale. Families whose GGUF architecture is llama.cpp's `llama` get their q/k rows
permuted for its "normal" RoPE, as llama.cpp's own converter does.
Pickle checkpoints (pytorch_model.bin, *.pt, ...) can run code when loaded: they are refused
unless allow_pickle=True, and then read with torch.load(weights_only=True) (pickle_reader.py).
The output is written to a temporary file renamed into place when complete (GGUFWriter), so
a failure or Ctrl+C leaves an existing output file as it was.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitnet.convert import i2s, q6_k, q8_0
from bitnet.convert import tq_packing as tq
from bitnet.convert.dtypes import FLOAT_TYPES, SAFETENSORS_FLOATS, from_float_type, to_float_type
from bitnet.convert.hparams import HParams, read_config
from bitnet.convert.pickle_reader import PickleCheckpoint, find_pickle_files
from bitnet.convert.safetensors_reader import INDEX_FILE, SINGLE_FILE, Checkpoint, TensorSource
from bitnet.convert.ternary import absmean_ternarize, effective_scale, unpack_hf_packed
from bitnet.convert.output_check import check_loads
from bitnet.gguf_writer import GGML_TYPE_I2_S, GGUFWriter, check_output_path


@dataclass(frozen=True)
class TernaryEncoding:
    ggml_type: int
    block: int  # required multiple of the row length
    n_bytes: Callable[[int, int], int]  # (rows, k) -> tensor bytes
    pack: Callable[[np.ndarray, np.float32], object]  # (int8 codes [rows, k], scale) -> bytes


# llama.cpp's quantizer gives each 256-block d = max|w|: the scale, or 0 for an all-zero block.
TERNARY_ENCODINGS = {
    "i2_s": TernaryEncoding(GGML_TYPE_I2_S, 1, i2s.i2s_n_bytes, i2s.pack_i2s),  # whole tensor % 128: i2s.py
    "tq2_0": TernaryEncoding(tq.GGML_TYPE_TQ2_0, tq.QK, tq.tq2_0_n_bytes,
                             lambda t, s: tq.pack_tq2_0(t, tq.llama_cpp_block_scales(t, s))),
    "tq1_0": TernaryEncoding(tq.GGML_TYPE_TQ1_0, tq.QK, tq.tq1_0_n_bytes,
                             lambda t, s: tq.pack_tq1_0(t, tq.llama_cpp_block_scales(t, s))),
}  # fmt: skip
OUTTYPES = ("f32", "f16", "bf16", *TERNARY_ENCODINGS)
# general.file_type (llama_ftype): MOSTLY_TQ1_0 36, MOSTLY_TQ2_0 37, bitnet.cpp's MOSTLY_I2_S 40
FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "i2_s": 40, "tq1_0": 36, "tq2_0": 37}


@dataclass(frozen=True)
class HeadEncoding:
    ggml_type: int
    n_bytes: Callable[[int, int], int]  # (rows, k) -> tensor bytes; ValueError for a k it cannot hold
    pack: Callable[[np.ndarray], np.ndarray]  # f32 [rows, k] -> bytes (uint8, flat)


# ggml's quantized types for the token embedding / output head, only when the user asks: smaller
# and faster to read, but no longer the checkpoint's exact values (not lossless).
HEAD_ENCODINGS = {
    "q8_0": HeadEncoding(q8_0.GGML_TYPE_Q8_0, q8_0.q8_0_n_bytes, q8_0.pack_q8_0),
    "q6_k": HeadEncoding(q6_k.GGML_TYPE_Q6_K, q6_k.q6_k_n_bytes, q6_k.pack_q6_k),
}
HEAD_TYPES = (*FLOAT_TYPES, *HEAD_ENCODINGS)  # for token_embd / output: as stored by default
FLOAT_CHUNK_ROWS = 4096
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

# Per layer: HF module -> (GGUF name, kind, HF shape (out, in) or (n,) from the hparams).
LAYER_TENSORS: list[tuple[str, str, str, Callable[[HParams], tuple[int, ...]]]] = [
    ("input_layernorm", "attn_norm", "norm", lambda h: (h.n_embd,)),
    ("self_attn.q_proj", "attn_q", "linear", lambda h: (h.n_head * h.head_dim, h.n_embd)),
    ("self_attn.k_proj", "attn_k", "linear", lambda h: (h.n_head_kv * h.head_dim, h.n_embd)),
    ("self_attn.v_proj", "attn_v", "linear", lambda h: (h.n_head_kv * h.head_dim, h.n_embd)),
    ("self_attn.o_proj", "attn_output", "linear", lambda h: (h.n_embd, h.n_head * h.head_dim)),
    ("self_attn.attn_sub_norm", "attn_sub_norm", "norm", lambda h: (h.n_embd,)),
    ("post_attention_layernorm", "ffn_norm", "norm", lambda h: (h.n_embd,)),
    ("mlp.gate_proj", "ffn_gate", "linear", lambda h: (h.n_ff, h.n_embd)),
    ("mlp.up_proj", "ffn_up", "linear", lambda h: (h.n_ff, h.n_embd)),
    ("mlp.down_proj", "ffn_down", "linear", lambda h: (h.n_embd, h.n_ff)),
    ("mlp.ffn_sub_norm", "ffn_sub_norm", "norm", lambda h: (h.n_ff,)),
]


@dataclass
class TensorJob:
    name: str
    ne: tuple[int, ...]  # GGUF order (ne0 = input features first)
    ggml_type: int
    n_bytes: int
    produce: Callable[[], Iterable]  # yields the bytes (arrays or bytes chunks)


class _Planner:
    """Builds the TensorJobs, checking each source tensor and recording which were used."""

    def __init__(self, ckpt: TensorSource, hp: HParams, outtype: str):
        self.ckpt, self.hp, self.outtype = ckpt, hp, outtype
        self.used: set[str] = set()

    def _source(self, name: str, shape: tuple[int, ...]) -> str:
        if name not in self.ckpt:
            raise ValueError(f"checkpoint is missing tensor {name!r}")
        if self.ckpt.shape(name) != shape:
            raise ValueError(f"tensor {name!r} has shape {list(self.ckpt.shape(name))}, config says {list(shape)}")
        self.used.add(name)
        return self.ckpt.dtype(name)

    def float_tensor(self, gguf_name: str, hf_name: str, shape, as_type: str | None) -> TensorJob:
        """A float tensor copied as stored (as_type None), converted to f32/f16/bf16, or quantized
        to Q8_0 / Q6_K (embedding / output head only, when the user asks)."""
        stored = SAFETENSORS_FLOATS.get(self._source(hf_name, shape))
        if stored is None:
            raise ValueError(f"tensor {hf_name!r} is {self.ckpt.dtype(hf_name)}, expected F32, F16 or BF16")
        target = as_type or stored
        rows = shape[0] if len(shape) == 2 else 1
        if target in HEAD_ENCODINGS:
            head = HEAD_ENCODINGS[target]
            try:
                n_bytes = head.n_bytes(rows, math.prod(shape) // rows)
            except ValueError as e:
                raise ValueError(f"cannot store {gguf_name!r} as {target}: {e}; choose another type") from None
            ggml_type = head.ggml_type
            encode = lambda chunk: head.pack(from_float_type(chunk, stored))
        else:
            ggml_type, _, elem_bytes = FLOAT_TYPES[target]
            n_bytes = math.prod(shape) * elem_bytes
            encode = lambda chunk: chunk if target == stored else to_float_type(from_float_type(chunk, stored), target)

        def produce():
            raw = self.ckpt.raw(hf_name).reshape(rows, -1)
            for start in range(0, rows, FLOAT_CHUNK_ROWS):
                yield encode(raw[start : start + FLOAT_CHUNK_ROWS])
                self.ckpt.release_pages()  # the writer is done with the chunk

        return TensorJob(gguf_name, tuple(reversed(shape)), ggml_type, n_bytes, produce)

    def ternary_source(self, hf: str, out_f: int, in_f: int) -> Callable[[], tuple[np.ndarray, np.float32]]:
        weight, scale_name = f"{hf}.weight", f"{hf}.weight_scale"
        if weight in self.ckpt and self.ckpt.dtype(weight) == "U8":
            if out_f % 4:
                raise ValueError(f"tensor {weight!r}: {out_f} output rows cannot be packed 4 per byte")
            self._source(weight, (out_f // 4, in_f))
            codes = lambda: unpack_hf_packed(self.ckpt.raw(weight))
        else:
            self._source(weight, (out_f, in_f))
            if self.ckpt.dtype(weight) not in SAFETENSORS_FLOATS:
                raise ValueError(
                    f"tensor {weight!r} is {self.ckpt.dtype(weight)}: expected U8 (packed) or a float type"
                )
            if scale_name not in self.ckpt:  # float master: absmean, as transformers' online mode
                return lambda: absmean_ternarize(self.ckpt.load_f32(weight))
            codes = lambda: _as_ternary(weight, self.ckpt.load_f32(weight))
        if scale_name not in self.ckpt:
            raise ValueError(f"checkpoint is missing tensor {scale_name!r} (packed weights need their scale)")
        if math.prod(self.ckpt.shape(scale_name)) != 1:
            raise ValueError(f"tensor {scale_name!r} has shape {list(self.ckpt.shape(scale_name))}: one scale expected")
        self._source(scale_name, self.ckpt.shape(scale_name))
        linear_class = self.hp.linear_class
        return lambda: (codes(), effective_scale(self.ckpt.load_f32(scale_name).reshape(-1)[0], linear_class))

    def linear(self, gguf_name: str, hf: str, shape: tuple[int, int]) -> TensorJob:
        out_f, in_f = shape
        load = self._in_rope_order(gguf_name, self.ternary_source(hf, out_f, in_f))
        ne = (in_f, out_f)
        enc = TERNARY_ENCODINGS.get(self.outtype)
        if enc is not None:
            if in_f % enc.block:
                raise ValueError(
                    f"{hf}: {self.outtype.upper()} packs each row in blocks of {enc.block} and cannot hold rows of "
                    f"{in_f} input features; use --outtype i2_s or f16 (or bf16/f32)"
                )
            try:
                n_bytes = enc.n_bytes(out_f, in_f)
            except ValueError as e:
                raise ValueError(f"{hf}: {e}") from None
            return TensorJob(gguf_name, ne, enc.ggml_type, n_bytes, lambda: [enc.pack(*load())])
        ggml_type, _, elem_bytes = FLOAT_TYPES[self.outtype]

        def produce():
            codes, scale = load()
            yield to_float_type(codes.astype(np.float32) * scale, self.outtype)

        return TensorJob(gguf_name, ne, ggml_type, out_f * in_f * elem_bytes, produce)

    def _in_rope_order(self, gguf_name: str, load):
        """attn_q / attn_k rows of a `llama` file in llama.cpp's order for "normal" RoPE: within
        each head, rows d and hd/2 + d become rows 2d and 2d + 1 (its converter's permute)."""
        heads = {"attn_q": self.hp.n_head, "attn_k": self.hp.n_head_kv}.get(gguf_name.split(".")[-2])
        if not self.hp.family.permute_qk or heads is None:
            return load

        def permuted():
            codes, scale = load()
            rows = codes.shape[0]
            return codes.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(codes.shape), scale

        return permuted

    def linear_input_norm(self, gguf_name: str, hf: str, n_in: int) -> TensorJob:
        """use_rms_norm: the RMSNorm weight inside a BitLinear (transformers initializes a missing one
        to ones, and so do we)."""
        name = f"{hf}.rms_norm.weight"
        if name in self.ckpt:
            return self.float_tensor(gguf_name, name, (n_in,), "f32")
        return TensorJob(gguf_name, (n_in,), FLOAT_TYPES["f32"][0], 4 * n_in, lambda: [np.ones(n_in, np.float32)])

    def leftovers(self) -> list[str]:
        return [n for n in self.ckpt.names() if n not in self.used and not n.endswith(IGNORED_SUFFIXES)]


def _as_ternary(name: str, w: np.ndarray) -> np.ndarray:
    if not np.isin(w, (-1.0, 0.0, 1.0)).all():
        raise ValueError(f"tensor {name!r} has a weight_scale but its float weights are not all -1, 0 or 1")
    return w.astype(np.int8)


def plan_tensors(ckpt: TensorSource, hp: HParams, outtype: str, token_embedding_type: str | None,
                 output_type: str | None = None) -> list[TensorJob]:  # fmt: skip
    p = _Planner(ckpt, hp, outtype)
    jobs = [
        p.float_tensor("token_embd.weight", "model.embed_tokens.weight", (hp.n_vocab, hp.n_embd), token_embedding_type)
    ]
    sub_norms = {"attn_sub_norm": hp.family.attn_sub_norm, "ffn_sub_norm": hp.family.ffn_sub_norm}
    for i in range(hp.n_layer):
        for hf, gguf, kind, shape_of in LAYER_TENSORS:
            hf = sub_norms.get(gguf, hf)
            if hf is None:  # a family without sub-norms
                continue
            name, hf_name, shape = f"blk.{i}.{gguf}.weight", f"model.layers.{i}.{hf}", shape_of(hp)
            if kind == "norm":
                jobs.append(p.float_tensor(name, hf_name + ".weight", shape, "f32"))
                continue
            jobs.append(p.linear(name, hf_name, shape))
            if hp.linear_norms:
                jobs.append(p.linear_input_norm(f"blk.{i}.{gguf}.input_norm.weight", hf_name, shape[1]))
    jobs.append(p.float_tensor("output_norm.weight", "model.norm.weight", (hp.n_embd,), "f32"))
    if "lm_head.weight" in ckpt:
        if hp.tied:
            p.used.add("lm_head.weight")  # transformers ties it to the embedding and ignores it
        else:
            jobs.append(p.float_tensor("output.weight", "lm_head.weight", (hp.n_vocab, hp.n_embd), output_type))
    extra = p.leftovers()
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise ValueError(
            f"checkpoint has tensors that are not part of a {hp.family.hf_architectures[0]} model as this converter "
            f"knows it: {', '.join(extra[:5])}{more}"
        )
    return jobs


def open_checkpoint(model_dir: Path, allow_pickle: bool = False) -> TensorSource:
    """The checkpoint's tensors: safetensors when present, else pickle files if allowed."""
    if (model_dir / SINGLE_FILE).is_file() or (model_dir / INDEX_FILE).is_file():
        return Checkpoint(model_dir)
    files, index = find_pickle_files(model_dir)
    if not files:
        raise FileNotFoundError(
            f"{model_dir}: no checkpoint found ({SINGLE_FILE}, {INDEX_FILE}; or, with --allow-pickle, "
            "pytorch_model.bin, *.pt, *.pth, *.ckpt)"
        )
    if not allow_pickle:
        names = ", ".join(p.name for p in ([index] if index else files)[:3])
        raise ValueError(
            f"{model_dir}: the weights are a pickle checkpoint ({names}), and loading a pickle file can run "
            "arbitrary code, so it is refused; get the model's .safetensors files instead, or, if you trust "
            "this file, pass --allow-pickle (allow_pickle=True) to read it with torch.load(weights_only=True)"
        )
    return PickleCheckpoint(files, index)


def _check_outfile(outfile: Path, model_dir: Path, ckpt: TensorSource) -> None:
    check_output_path(outfile)  # no device, FIFO, socket, directory or symlink is ever replaced
    if not outfile.exists():
        return
    inputs = [p for p in model_dir.iterdir() if p.is_file() and p.suffix != ".gguf"] + ckpt.paths
    if any(outfile.samefile(p) for p in inputs):
        raise ValueError(f"refusing to overwrite the input file {outfile}; choose another --outfile")


def convert(
    model_dir,
    outfile,
    outtype: str = "i2_s",
    token_embedding_type: str | None = None,
    progress: bool = True,
    allow_pickle: bool = False,
    output_type: str | None = None,
) -> Path:
    """Convert a ternary checkpoint directory (any family in families.py) to a GGUF file; return its path.

    allow_pickle: read a pickle checkpoint (only with torch.load(weights_only=True)) when the
    directory has no safetensors; without it such a checkpoint is refused (ValueError).
    """
    from bitnet.convert.tokenizer_meta import gguf_tokenizer_fields

    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    for what, value in (("token embedding", token_embedding_type), ("output tensor", output_type)):
        if value not in (None, *HEAD_TYPES):
            raise ValueError(f"unknown {what} type {value!r} (choose from {', '.join(HEAD_TYPES)})")
    model_dir, outfile = Path(model_dir), Path(outfile)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    hp = read_config(model_dir)
    ckpt = open_checkpoint(model_dir, allow_pickle)
    jobs = plan_tensors(ckpt, hp, outtype, token_embedding_type, output_type)
    tokenizer_fields = gguf_tokenizer_fields(model_dir, n_vocab=hp.n_vocab, kind=hp.family.tokenizer)
    _check_outfile(outfile, model_dir, ckpt)

    arch = hp.family.tq_arch if outtype.startswith("tq") else hp.family.gguf_arch
    with GGUFWriter(outfile, verify=check_loads) as w:
        w.add_kv("general.architecture", arch, "string")
        w.add_kv("general.name", hp.name or model_dir.resolve().name, "string")
        w.add_kv("general.file_type", FILE_TYPES[outtype], "u32")
        w.add_kv("general.quantization_version", 2, "u32")
        w.add_kv("general.alignment", 32, "u32")
        for key, value, kind in (*hp.gguf_fields(arch), *tokenizer_fields):
            w.add_kv(key, value, kind)
        for job in jobs:
            w.add_tensor(job.name, job.ne, job.ggml_type, job.n_bytes)
        w.write_header()
        _write_tensors(w, jobs, progress, after_each=ckpt.release_pages)
    return outfile


def _write_tensors(w: GGUFWriter, jobs: list[TensorJob], progress: bool, after_each: Callable[[], None]) -> None:
    from tqdm import tqdm

    show = progress and sys.stderr.isatty()
    total = sum(j.n_bytes for j in jobs)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not show, leave=False) as bar:
        for job in jobs:
            bar.set_postfix_str(job.name, refresh=False)
            w.write_tensor_data(job.name, job.produce())
            after_each()
            bar.update(job.n_bytes)
