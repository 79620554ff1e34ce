"""Scale a trained BitNet b1.58 model up to a bigger shape that computes the same function.

For benchmarks that need a real model's text at a big model's cost per token (speculative
decoding pays off only when drafts get accepted, and a random model's never are): the kernels
do not look at weight values, so a 2B-4T-shaped file holding the 5M demo model, zero padded,
runs at 2B-4T speed and generates the demo model's tokens.

Where the source goes (s: source, b: big):
    hidden      dims 0..E_s-1, the rest zero (but for two constant dims, below). Ternary matrices
                hold the source's codes in the mapped rows and columns and zeros elsewhere, with
                the source's f32 scale: int8 absmax quantization of an activation row sees only
                its non-zero dims, so every integer dot product is the source's.
    heads       head_dim grows R = hd_b / hd_s times. NeoX RoPE turns the pairs (j, j + hd/2) at
                frequency theta^(-2j/hd): source dim j < hd_s/2 goes to R*j and j + hd_s/2 to
                R*j + hd_b/2, so pairs and frequencies coincide (2Rj/hd_b is the same f32 quotient
                as 2j/hd_s). q's scale grows sqrt(R) to undo the attention's 1/sqrt(hd_b).
                Source kv head g -> big kv head g; query head i of group g -> big query heads
                g*G_b + m*G_s + i for every m < D = G_b / G_s (G: query heads per kv head). The
                m > 0 copies fill the group because a query head with q = 0 would attend uniformly
                and output the mean of its non-zero v; their attn_output columns are zero. The
                other kv heads (k = v = 0) and their query heads output exactly 0.
    ffn         units 0..F_s-1 (gate/up rows, down columns); act(0) * 0 = 0 elsewhere.
    layers      0..L_s-1; the others have all-zero ternary weights and add exactly 0.
    vocabulary  ids 0..V_s-1, then placeholder tokens of type "unused" (the tokenizer never
                produces them) whose logits are hugely negative rather than 0: 124k logits of 0
                would take ~90% of the demo model's softmax, and greedy decoding would pick one
                wherever all real logits are negative.

RMSNorm y = w x / sqrt(mean(x^2) + eps): over n_b dims holding the source's input times kappa,
each source dim D times (copies), mean_b = D kappa^2 n_s / n_b mean_s, so w_b = w_s sqrt(D n_s / n_b)
gives the source's y exactly when eps_b = eps_s D kappa^2 n_s / n_b. A model has one eps, so each
norm gets its own kappa instead: the residual stream keeps kappa = 1, which sets eps_b; the
attention sub-norm's input takes its kappa from v's scale and the FFN sub-norm's from up's scale
(attention output and relu2(gate) * up are linear in them). Every norm output, eps included, is
then the source's up to f32 rounding. That rounding still moves an activation across an int8
rounding boundary now and then (the ratios, 10 for 256 -> 2560 dims, are not powers of 4, so no
choice of weights makes the floats bit-identical), and a moved int8 code changes later logits by
up to ~1% of their range: identical text, except possibly at a near tie.

Padding logits: real embedding rows hold c in the constant dims d1, d2 (so does the residual
stream: no layer writes there); padding rows hold -K at d1 and +K at d2; output_norm weighs the
two +a and -a, attn_norm and ffn_norm weigh them 0 (no layer reads them). A real logit gains
a c^2 inv - a c^2 inv = 0; a padding logit is -2 K a c inv = -2 K / rms_s(x) for a = sqrt(E_s/E_b) / c.
The constants add 2 c^2 to the residual's sum of squares, in place of part of eps:
E_b eps_b + 2 c^2 = E_s eps_s (we take 2 c^2 = E_s eps_s / 2).
"""

from __future__ import annotations

import math
import struct
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bitnet import gguf_writer as gw
from bitnet.convert import i2s
from bitnet.convert.dtypes import FLOAT_TYPES, from_float_type, to_float_type
from bitnet.convert.dummy import (
    MODEL_SIZES, ModelShape, _Parser, _row_chunks, _UsageError, hparams_for, resolve_shape, write_model,
)  # fmt: skip
from bitnet.convert.gguf_reader import GGUFFile, GGUFTensor, read_gguf
from bitnet.convert.hf_bitnet import LAYER_TENSORS, TensorJob
from bitnet.convert.hparams import ARCH, HParams

PAD_TOKEN = "<|scaleup_pad_{}|>"
TOKEN_TYPE_UNUSED = 5
PAD_LOGIT_WEIGHT = 32768.0  # K: exact in f16, bf16 and f32
I2S_ZERO_BYTE = 0x55  # four codes 1 (weight 0)
FLOAT_NAMES = {ggml_type: name for name, (ggml_type, _, _) in FLOAT_TYPES.items()}

# Which index map (Placement.maps) places each tensor: linear layers (rows, columns), norms (dims).
LINEAR_MAPS = {"attn_q": ("q", "embd"), "attn_k": ("kv", "embd"), "attn_v": ("kv", "embd"),
               "attn_output": ("embd", "q_first"), "ffn_gate": ("ff", "embd"), "ffn_up": ("ff", "embd"),
               "ffn_down": ("embd", "ff")}  # fmt: skip
NORM_MAPS = {"attn_norm": "embd", "attn_sub_norm": "q", "ffn_norm": "embd", "ffn_sub_norm": "ff"}


# -- the source ----------------------------------------------------------------------------------
def source_hparams(f: GGUFFile) -> HParams:
    """The hyper-parameters of a bitnet-b1.58 file, and the checks this tool needs."""
    arch = f.kv.get("general.architecture")
    if arch != ARCH:
        raise ValueError(f"the source is a {arch!r} model; only {ARCH!r} (BitNet-b1.58-2B-4T style) files scale up")

    def get(key, default=None):
        value = f.kv.get(f"{ARCH}.{key}", default)
        if value is None:
            raise ValueError(f"the source lacks the key {ARCH}.{key}")
        return value

    embd = f.tensors.get("token_embd.weight")
    if embd is None or len(embd.ne) != 2 or embd.ggml_type not in FLOAT_NAMES:
        raise ValueError("the source's token_embd.weight is missing or not F32/F16/BF16 (quantized heads are not "
                         "supported)")  # fmt: skip
    n_embd, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", n_embd // n_head))
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise ValueError("the source uses partial RoPE, which this tool does not map")
    return HParams(
        name=f.kv.get("general.name"), n_vocab=embd.ne[1], n_ctx=int(get("context_length", 4096)), n_embd=n_embd,
        n_ff=int(get("feed_forward_length")), n_layer=int(get("block_count")), n_head=n_head,
        n_head_kv=int(get("attention.head_count_kv", n_head)), head_dim=head_dim,
        rope_theta=float(get("rope.freq_base", 500000.0)), rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        hidden_act=get("hidden_act", "relu2"), tied=True, linear_class="autobitlinear",
    )  # fmt: skip


def _check_tensors(f: GGUFFile, s: HParams) -> None:
    """The source holds exactly a tied bitnet-b1.58 model's tensors: I2_S linears, float norms."""
    expected = {"token_embd.weight": (s.n_embd, s.n_vocab), "output_norm.weight": (s.n_embd,)}
    for il in range(s.n_layer):
        for _, gguf, _, shape_of in LAYER_TENSORS:
            expected[f"blk.{il}.{gguf}.weight"] = tuple(reversed(shape_of(s)))
    odd = sorted(set(f.tensors) ^ set(expected)) or [n for n, ne in expected.items() if f.tensors[n].ne != ne]
    if odd:
        raise ValueError(f"the source's tensors are not a tied {ARCH} model's of its shape: {', '.join(odd[:5])} "
                         "(untied heads and per-linear input norms are not supported)")  # fmt: skip
    for t in f.tensors.values():
        if len(t.ne) == 2 and t.name != "token_embd.weight" and t.ggml_type != gw.GGML_TYPE_I2_S:
            raise ValueError(f"the source's {t.name} is not I2_S (ggml type {t.ggml_type}); convert it to i2_s first")
        if len(t.ne) == 1 and t.ggml_type not in FLOAT_NAMES:
            raise ValueError(f"the source's {t.name} is not a float vector")


# -- where the source goes -----------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    src: HParams
    big: HParams  # rms_eps is eps_b
    maps: dict[str, np.ndarray]  # name -> int [n, 2] of (source index, big index); a source index repeats per copy
    const_dims: tuple[int, ...]  # (d1, d2), or () when the vocabulary does not grow
    const: float  # c, exact in the embedding's float type

    def kappa(self, map_name: str, n_big: int) -> float:
        """The input scale that makes a norm over n_big dims holding maps[map_name] exact under eps_b."""
        return math.sqrt(self.big.rms_eps * n_big / (len(self.maps[map_name]) * self.src.rms_eps))

    def scale_factors(self) -> dict[str, float]:
        """Factors on the source's f32 tensor scales."""
        s, b = self.src, self.big
        return {
            "attn_q": math.sqrt(b.head_dim / s.head_dim),
            "attn_v": self.kappa("q", b.n_head * b.head_dim),
            "ffn_up": self.kappa("ff", b.n_ff),
        }


def _check_fits(s: HParams, b: HParams) -> None:
    need = [
        ("embedding_length", s.n_embd + (2 if b.n_vocab > s.n_vocab else 0), b.n_embd),
        ("feed_forward_length", s.n_ff, b.n_ff), ("block_count", s.n_layer, b.n_layer),
        ("vocabulary", s.n_vocab, b.n_vocab), ("head_count_kv", s.n_head_kv, b.n_head_kv),
        ("head_dim", s.head_dim, b.head_dim),
    ]  # fmt: skip
    for key, n_src, n_big in need:
        if n_big < n_src:
            raise ValueError(f"the target's {key} {n_big} is smaller than the source needs ({n_src})")
    g_s, g_b = s.n_head // s.n_head_kv, b.n_head // b.n_head_kv
    if b.head_dim % s.head_dim or s.head_dim % 2 or g_b % g_s:
        raise ValueError(
            f"the target's heads ({b.n_head}/{b.n_head_kv} of {b.head_dim}) are not whole multiples "
            f"of the source's ({s.n_head}/{s.n_head_kv} of {s.head_dim}) in size and group size"
        )
    for what, k in (("embedding_length", b.n_embd), ("head_count*head_dim", b.n_head * b.head_dim),
                    ("feed_forward_length", b.n_ff)):  # fmt: skip
        if k % i2s.BLOCK:
            raise ValueError(f"the target's {what} {k} is not a multiple of {i2s.BLOCK}, as I2_S rows need")


def _identity(n: int) -> np.ndarray:
    return np.stack([np.arange(n)] * 2, 1)


def place(src: HParams, shape: ModelShape, name: str, embd_type: str) -> Placement:
    """The big model's hyper-parameters (the source's RoPE, activation; eps_b) and index maps."""
    big = replace(hparams_for(shape, name), rope_theta=src.rope_theta, hidden_act=src.hidden_act)
    _check_fits(src, big)
    r, half_b = big.head_dim // src.head_dim, big.head_dim // 2
    j = np.arange(src.head_dim // 2)
    head_dims = np.concatenate([r * j, r * j + half_b])  # source dim in a head -> big dim (RoPE pairs kept)

    def head(src_head: int, big_head: int) -> np.ndarray:
        return np.stack([src_head * src.head_dim + np.arange(src.head_dim), big_head * big.head_dim + head_dims], 1)

    g_s, g_b = src.n_head // src.n_head_kv, big.n_head // big.n_head_kv
    q_copies = [np.concatenate([head(h, h // g_s * g_b + m * g_s + h % g_s) for h in range(src.n_head)])
                for m in range(g_b // g_s)]  # fmt: skip
    maps = {
        "embd": _identity(src.n_embd), "ff": _identity(src.n_ff), "q": np.concatenate(q_copies),
        "q_first": q_copies[0], "kv": np.concatenate([head(g, g) for g in range(src.n_head_kv)]),
    }  # fmt: skip
    budget = src.n_embd * src.rms_eps  # = E_b eps_b + (sum of the constants' squares)
    const_dims, const = (), 0.0
    if big.n_vocab > src.n_vocab:
        const_dims = (src.n_embd, src.n_embd + 1)
        stored = to_float_type(np.array([math.sqrt(budget) / 2], np.float32), embd_type)
        const = float(from_float_type(stored, embd_type)[0])
    eps = float(np.float32((budget - 2 * const * const) / big.n_embd))
    if not eps > 0:
        raise ValueError("the source's RMSNorm epsilon is too small to scale up")
    return Placement(src, replace(big, rms_eps=eps), maps, const_dims, const)


# -- tensors ---------------------------------------------------------------------------------------
def _i2s_job(name: str, n_out: int, n_in: int, codes, scale: float) -> TensorJob:
    tail = np.float32(scale).tobytes() + bytes(i2s.TAIL_BYTES - 4)
    return TensorJob(name, (n_in, n_out), gw.GGML_TYPE_I2_S, i2s.i2s_n_bytes(n_out, n_in), lambda: [codes(), tail])


def _zero_linear(name: str, n_out: int, n_in: int) -> TensorJob:
    return _i2s_job(name, n_out, n_in, lambda: np.full(n_out * n_in // 4, I2S_ZERO_BYTE, np.uint8), 1.0)


def _placed_linear(name: str, t: GGUFTensor, n_out: int, n_in: int, rows: np.ndarray, cols: np.ndarray,
                   factor: float) -> TensorJob:  # fmt: skip
    """The source's codes at the mapped rows and columns of an all-zero matrix; its scale times factor."""
    k_s, n_s = t.ne
    scale = struct.unpack("<f", t.data[n_s * k_s // 4 :][:4].tobytes())[0]

    def codes():
        ternary, _ = i2s.unpack_i2s(t.data, n_s, k_s)
        placed = np.zeros((len(rows), n_in), np.int8)
        placed[:, cols[:, 1]] = ternary[rows[:, 0]][:, cols[:, 0]]
        packed = np.frombuffer(i2s.pack_i2s(placed, 0.0), np.uint8)[: -i2s.TAIL_BYTES]
        out = np.full((n_out, n_in // 4), I2S_ZERO_BYTE, np.uint8)
        out[rows[:, 1]] = packed.reshape(len(rows), -1)  # every I2_S row packs on its own (k % 128 == 0)
        return out

    return _i2s_job(name, n_out, n_in, codes, float(np.float32(scale * factor)))


def _norm_job(name: str, values: np.ndarray) -> TensorJob:
    values = values.astype(np.float32)
    return TensorJob(name, (len(values),), gw.GGML_TYPE_F32, 4 * len(values), lambda: [values])


def _placed_norm(t: GGUFTensor, dims: np.ndarray, n_big: int) -> np.ndarray:
    """w_s sqrt(D n_s / n_b) at the mapped dims; their mean at dims whose input is always 0."""
    name = FLOAT_NAMES[t.ggml_type]
    w = from_float_type(np.frombuffer(t.data, FLOAT_TYPES[name][1]), name).astype(np.float64)
    w = w[dims[:, 0]] * math.sqrt(len(dims) / n_big)
    out = np.full(n_big, w.mean())
    out[dims[:, 1]] = w
    return out


def plan_tensors(f: GGUFFile, p: Placement, embd_type: str) -> list[TensorJob]:
    """Every tensor of the big model, in our converter's order and names (extra layers last)."""
    s, b = p.src, p.big
    factors = p.scale_factors()
    jobs = [_embedding_job(f.tensors["token_embd.weight"], p, embd_type)]
    for il in range(b.n_layer):
        for _, gguf, kind, shape_of in LAYER_TENSORS:
            name, shape = f"blk.{il}.{gguf}.weight", shape_of(b)
            hidden_norm = gguf in ("attn_norm", "ffn_norm")  # the constant dims stay out of every layer
            if kind == "norm":
                n_big = b.n_head * b.head_dim if gguf == "attn_sub_norm" else shape[0]
                w = np.ones(n_big) if il >= s.n_layer else _placed_norm(f.tensors[name], p.maps[NORM_MAPS[gguf]], n_big)
                jobs.append(_norm_job(name, _set(w, p.const_dims if hidden_norm else (), 0.0)))
            elif il >= s.n_layer:
                jobs.append(_zero_linear(name, *shape))
            else:
                rows, cols = (p.maps[m] for m in LINEAR_MAPS[gguf])
                jobs.append(_placed_linear(name, f.tensors[name], *shape, rows, cols, factors.get(gguf, 1.0)))
    out_norm = _placed_norm(f.tensors["output_norm.weight"], p.maps["embd"], b.n_embd)
    a = math.sqrt(s.n_embd / b.n_embd) / p.const if p.const_dims else 0.0
    jobs.append(_norm_job("output_norm.weight", _set(out_norm, p.const_dims, (a, -a)[: len(p.const_dims)])))
    return jobs


def _set(values: np.ndarray, dims: tuple[int, ...], to) -> np.ndarray:
    values[list(dims)] = to
    return values


def _embedding_job(t: GGUFTensor, p: Placement, embd_type: str) -> TensorJob:
    """Source rows in dims 0..E_s-1 and c in the constant dims; padding rows -K, +K there."""
    s, b = p.src, p.big
    ggml_type, dtype, elem_bytes = FLOAT_TYPES[embd_type]
    src_rows = np.frombuffer(t.data, dtype).reshape(s.n_vocab, s.n_embd)
    c, k_minus, k_plus = to_float_type(np.array([p.const, -PAD_LOGIT_WEIGHT, PAD_LOGIT_WEIGHT], np.float32), embd_type)
    d = list(p.const_dims)

    def produce():
        start = 0
        for _, n in _row_chunks(b.n_vocab, b.n_embd):
            chunk = np.zeros((n, b.n_embd), dtype)
            real = max(0, min(n, s.n_vocab - start))
            chunk[:real, : s.n_embd] = src_rows[start : start + real]
            if d:
                chunk[:real, d] = c
                chunk[real:, d] = (k_minus, k_plus)
            start += n
            yield chunk

    return TensorJob(t.name, (b.n_embd, b.n_vocab), ggml_type, b.n_vocab * b.n_embd * elem_bytes, produce)


# -- metadata ----------------------------------------------------------------------------------------
_SCALAR_KINDS = {gw.UINT8: "u8", gw.INT8: "i8", gw.UINT16: "u16", gw.INT16: "i16", gw.UINT32: "u32",
                 gw.INT32: "i32", gw.FLOAT32: "f32", gw.BOOL: "bool", gw.STRING: "string", gw.UINT64: "u64",
                 gw.INT64: "i64", gw.FLOAT64: "f64"}  # fmt: skip


def _kind(type_id: int, value) -> str:
    """The GGUFWriter kind of a value read back; arrays by their first element (GGUF's tokenizer
    arrays are strings, f32 scores and i32 token types)."""
    if type_id != gw.ARRAY:
        return _SCALAR_KINDS[type_id]
    first = value[0] if value else ""
    return "string_array" if isinstance(first, str) else "f32_array" if isinstance(first, float) else "i32_array"


def gguf_fields(f: GGUFFile, p: Placement) -> list[tuple[str, object, str]]:
    """general.* (a new name), the big shape's hyper-parameters, the source's other keys with
    placeholder tokens appended to the per-token arrays."""
    n_pad = p.big.n_vocab - p.src.n_vocab
    pad = {
        "tokenizer.ggml.tokens": [PAD_TOKEN.format(i) for i in range(n_pad)],
        "tokenizer.ggml.token_type": [TOKEN_TYPE_UNUSED] * n_pad,
        "tokenizer.ggml.scores": [-1e9] * n_pad,
    }
    description = (f"{p.src.name or 'a BitNet b1.58 model'}, zero padded to a bigger shape: it computes the source's "
                   "function at the cost of the big shape per token; for benchmarks")  # fmt: skip
    fields = [("general.name", p.big.name, "string"), ("general.description", description, "string")]
    fields += p.big.gguf_fields()
    replaced = {key for key, _, _ in fields} | {f"{ARCH}.attention.{k}_length" for k in ("key", "value")}
    for key, value in f.kv.items():
        if key in replaced:
            continue
        if key in pad:
            if len(value) != p.src.n_vocab:
                raise ValueError(f"the source's {key} has {len(value)} entries for {p.src.n_vocab} tokens")
            value = value + pad[key]
        fields.append((key, value, _kind(f.kv_types[key], value)))
    return sorted(fields, key=lambda kv: not kv[0].startswith("general."))  # stable: general.* first


# -- the file ------------------------------------------------------------------------------------
def scale_up(src, outfile, size: str | ModelShape = "2B-4T", *, name: str | None = None, overwrite: bool = False,
             progress: bool = True) -> Path:  # fmt: skip
    """Write src (an I2_S bitnet-b1.58 GGUF) in the shape of a dummy.MODEL_SIZES size (or a
    ModelShape), via a temporary file renamed into place; return the output path."""
    f = read_gguf(src)
    s = source_hparams(f)
    _check_tensors(f, s)
    embd_type = FLOAT_NAMES[f.tensors["token_embd.weight"].ggml_type]
    label = size if isinstance(size, str) else "custom"
    name = name or f"{s.name or Path(src).stem} scaled up to {label} shape (zero padded; benchmark model)"
    p = place(s, resolve_shape(size), name, embd_type)
    jobs = plan_tensors(f, p, embd_type)
    outfile = Path(outfile)
    if outfile.is_file() and outfile.samefile(src):
        raise ValueError("the output file is the source file")
    return write_model(outfile, gguf_fields(f, p), jobs, progress, overwrite)


# -- command line (utils/scale-up-bitnet-model.py) -------------------------------------------------
def _parser():
    p = _Parser(
        prog="scale-up-bitnet-model.py",
        description="Write a trained BitNet b1.58 model (an I2_S GGUF of architecture bitnet-b1.58) in a bigger "
        "shape, zero padded so that it computes the same logits (up to float rounding) and generates the same "
        "text at the big shape's cost per token: a benchmark model that writes real text.",
        epilog="Sizes: " + ", ".join(MODEL_SIZES) + ". An existing output file is kept unless --force is given.",
    )
    p.add_argument("src", metavar="SRC", help="source GGUF, e.g. models/bitnet-b1.58-austen-5M/ggml-model-i2_s.gguf")
    p.add_argument("out", metavar="OUT", help="output GGUF file")
    p.add_argument("--model-size", metavar="S", default="2B-4T", help="target shape (default 2B-4T)")
    p.add_argument("--model-name", help="general.name (default: '<source name> scaled up to <size> shape ...')")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    """utils/scale-up-bitnet-model.py: exit 0, 1 (failure), 2 (usage), 130 (interrupted)."""
    try:
        args = _parser().parse_args(argv)
        try:
            resolve_shape(args.model_size)
        except ValueError as e:
            raise _UsageError(e) from None
        t0 = time.perf_counter()
        out = scale_up(args.src, args.out, args.model_size, name=args.model_name, overwrite=args.force,
                       progress=not args.no_progress)  # fmt: skip
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s)")
        return 0
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from bitnet.gguf_writer import interrupted_exit_code

        print("error: interrupted; no output file was written (an existing one is unchanged)", file=sys.stderr)
        return interrupted_exit_code(e)
    except (ValueError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
