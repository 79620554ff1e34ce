"""Dummy BitNet b1.58 models: random ternary weights in a real model's shape, streamed to GGUF.

For benchmarks and tests without a download: bitnet.cpp's model sizes plus BitNet-b1.58-2B-4T's
shape, with a synthetic byte-level BPE vocabulary (synthetic_vocab.py) so the file loads in our
engine, in bitnet.cpp (i2_s) and in llama.cpp (tq2_0, tq1_0). Same tensor names and keys as our
converter (hf_bitnet.py): i2_s and f16 files use the architecture `bitnet-b1.58`; tq1_0/tq2_0
files use `bitnet`, the only name upstream llama.cpp knows for this model family.

Weights are drawn, never held whole: each tensor is produced in row chunks of about
CHUNK_WEIGHTS weights, each chunk from its own generator seeded by (seed, tensor name, chunk),
so every outtype of one seed holds the same ternary weights (the i2_s and f16 files give
identical logits) and memory stays at a few chunks whatever the model size.

Scale, so that activations stay O(1) through any number of layers: after an RMS norm every
ternary layer's input has mean square ~1; codes are uniform over {-1, 0, 1} (E[t^2] = 2/3), so
a tensor with fan-in K gets scale sqrt(3 / (2K)) (times a per-tensor factor in [0.9, 1.1],
rounded to f16 so that the f16, I2_S and TQ files hold the same number) and outputs of unit
variance. Sub-norms before o_proj and down_proj keep it so; the residual grows like sqrt(layers).
Norm weights are uniform in [0.9, 1.1]; the tied embedding is N(0, (2 / sqrt(n_embd))^2), giving
logits of standard deviation ~2.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bitnet.convert import i2s, synthetic_vocab, tq_packing
from bitnet.convert.dtypes import FLOAT_TYPES, to_float_type
from bitnet.convert.hf_bitnet import HEAD_ENCODINGS, LAYER_TENSORS, TensorJob
from bitnet.convert.hparams import ARCH, HParams
from bitnet.convert.output_check import check_loads
from bitnet.gguf_writer import GGML_TYPE_F16, GGML_TYPE_I2_S, GGUFWriter, check_output_path, interrupted_exit_code

CHUNK_WEIGHTS = 1 << 22  # weights per generated chunk (1 MiB of I2_S, 8 MiB of f16)
LOGIT_STD = 2.0
MAX_VOCAB = 1 << 22  # the engine's limit


@dataclass(frozen=True)
class ModelShape:
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx: int
    hidden_act: str
    rope_theta: float


def _bitnet_cpp(n_embd: int, n_ff: int, n_layer: int, n_head: int) -> ModelShape:
    # bitnet.cpp's sizes were made for its `bitnet` architecture (1bitLLM's bitnet_b1_58 models):
    # key/value heads = heads, the 32002-token embedding of that tokenizer, context 2048, SiLU, theta 1e4.
    return ModelShape(n_embd, n_ff, n_layer, n_head, n_head, 32002, 2048, "silu", 10000.0)


# Source: microsoft/BitNet utils/generate-dummy-bitnet-model.py, `model_config` (hidden_size,
# intermediate_size, num_hidden_layers, num_attention_heads). 2B-4T: microsoft/bitnet-b1.58-2B-4T's
# config.json (Llama-3 vocabulary of 128256, 5 key/value heads, relu2, theta 500000, tied F16 embedding).
MODEL_SIZES: dict[str, ModelShape] = {
    "125M": _bitnet_cpp(768, 3072, 11, 12),
    "350M": _bitnet_cpp(1024, 3072, 24, 16),
    "1B": _bitnet_cpp(2048, 3584, 24, 32),
    "1.5B": _bitnet_cpp(1536, 9216, 28, 32),
    "2.7B": _bitnet_cpp(3072, 7680, 24, 32),
    "3.8B": _bitnet_cpp(3840, 8192, 24, 32),
    "7B": _bitnet_cpp(4096, 12032, 32, 32),
    "13B": _bitnet_cpp(5120, 13824, 40, 40),
    "30B": _bitnet_cpp(6656, 16384, 60, 52),
    "70B": _bitnet_cpp(8192, 24576, 80, 64),
    "100B": _bitnet_cpp(8192, 45568, 72, 64),
    "2B-4T": ModelShape(2560, 6912, 30, 20, 5, 128256, 4096, "relu2", 500000.0),
    # 1bitLLM/bitnet_b1_58-large and -3B's config.json (bitnet.cpp's codegen_tl*.py lists the same
    # [hidden, FFN] pairs). The 3B's FFN of 8640 is 67.5 I2_S blocks: rows start inside blocks.
    "large": _bitnet_cpp(1536, 4096, 24, 16),
    "3B": _bitnet_cpp(3200, 8640, 26, 32),
}


# -- random numbers: only PCG64's raw 64-bit stream (stable across numpy versions) -------------------
def _rng(seed: int, name: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def _random_u16(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]


def _random_uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    return low + (high - low) * ((rng.bit_generator.random_raw(n) >> np.uint64(11)) * 2.0**-53)


def _i2s_pair_table() -> np.ndarray:
    """uint16 [65536]: a random u16 -> two I2_S code bytes holding eight ternary codes.

    u selects v = (u * 3^8) >> 16, and v's eight base-3 digits are the codes: 6487 of the 6561
    patterns have 10 preimages and 74 have 9, so each code is uniform over 0..2 to within 0.01%."""
    v = (np.arange(65536, dtype=np.uint32) * 6561) >> 16
    digits = (v[:, None] // 3 ** np.arange(7, -1, -1, dtype=np.uint32)) % 3  # most significant first
    shifts = np.array([6, 4, 2, 0, 14, 12, 10, 8], dtype=np.uint32)
    return (digits << shifts).sum(axis=1).astype(np.uint16)


I2S_PAIRS = _i2s_pair_table()


def random_i2s_codes(rng: np.random.Generator, n_weights: int) -> np.ndarray:
    """I2_S code bytes (no scale tail) of n_weights random ternary weights (n_weights % 8 == 0)."""
    return I2S_PAIRS[_random_u16(rng, n_weights // 8)].view(np.uint8)


def _i2s_tail(scale: float) -> bytes:
    return np.float32(scale).tobytes() + bytes(i2s.TAIL_BYTES - 4)


def _ternary(codes: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    return i2s.unpack_i2s(np.concatenate([codes, np.zeros(i2s.TAIL_BYTES, np.uint8)]), n_rows, k)[0]


def _as_f16(codes: np.ndarray, n_rows: int, k: int, scale: float) -> np.ndarray:
    return np.array([-scale, 0, scale], dtype=np.float16)[_ternary(codes, n_rows, k) + 1]


@dataclass(frozen=True)
class Outtype:
    arch: str  # general.architecture
    file_type: int  # general.file_type (llama_ftype)
    ggml_type: int  # of the linear weights
    block: int  # required multiple of a linear layer's row length (I2_S: of the whole tensor, see i2s.py)
    n_bytes: Callable[[int, int], int]  # (rows, k) -> tensor bytes
    encode: Callable[[np.ndarray, int, int, float], np.ndarray]  # (I2_S codes, rows, k, scale) -> bytes
    tail: Callable[[float], bytes]  # bytes after the last chunk


OUTTYPES = {
    "i2_s": Outtype(ARCH, 40, GGML_TYPE_I2_S, 1, i2s.i2s_n_bytes, lambda c, r, k, s: c, _i2s_tail),
    "f16": Outtype(ARCH, 1, GGML_TYPE_F16, 1, lambda r, k: 2 * r * k, _as_f16, lambda s: b""),
    "tq2_0": Outtype("bitnet", 37, tq_packing.GGML_TYPE_TQ2_0, tq_packing.QK, tq_packing.tq2_0_n_bytes,
                     lambda c, r, k, s: tq_packing.pack_tq2_0(_ternary(c, r, k), s), lambda s: b""),
    "tq1_0": Outtype("bitnet", 36, tq_packing.GGML_TYPE_TQ1_0, tq_packing.QK, tq_packing.tq1_0_n_bytes,
                     lambda c, r, k, s: tq_packing.pack_tq1_0(_ternary(c, r, k), s), lambda s: b""),
}  # fmt: skip


# -- tensors ---------------------------------------------------------------------------------------
def _row_chunks(n_rows: int, k: int) -> Iterator[tuple[int, int]]:
    """(chunk index, rows) covering n_rows; depends only on the shape, so every outtype draws alike."""
    # Whole I2_S blocks per chunk (the flattened tensor's blocks may straddle rows), so that a
    # chunk decodes on its own: rows a multiple of 128 / gcd(k, 128).
    align = i2s.BLOCK // math.gcd(k, i2s.BLOCK)
    step = max(align, CHUNK_WEIGHTS // k // align * align)
    for i, start in enumerate(range(0, n_rows, step)):
        yield i, min(step, n_rows - start)


def ternary_scale(seed: int, name: str, fan_in: int) -> float:
    """The tensor's weight scale: sqrt(3 / (2 fan_in)) times a factor in [0.9, 1.1], f16-exact."""
    factor = _random_uniform(_rng(seed, name, 1 << 31), 1, 0.9, 1.1)[0]
    return float(np.float16(math.sqrt(1.5 / fan_in) * factor))


@functools.lru_cache(maxsize=8)
def _normal_table(std: float, float_type: str) -> np.ndarray:
    """65536 quantiles of N(0, std^2) in float_type's storage: a uint16 draw indexes one sample."""
    inv = statistics.NormalDist(0.0, std).inv_cdf
    return to_float_type(np.array([inv((i + 0.5) / 65536) for i in range(65536)], np.float32), float_type)


def _linear(name: str, n_out: int, n_in: int, outtype: Outtype, seed: int) -> TensorJob:
    if n_in % outtype.block:
        raise ValueError(f"{name}: rows of {n_in} weights are not a multiple of {outtype.block}, as this type needs")
    try:
        n_bytes = outtype.n_bytes(n_out, n_in)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    scale = ternary_scale(seed, name, n_in)

    def produce():
        for chunk, rows in _row_chunks(n_out, n_in):
            codes = random_i2s_codes(_rng(seed, name, chunk), rows * n_in)
            yield outtype.encode(codes, rows, n_in, scale)
        yield outtype.tail(scale)

    return TensorJob(name, (n_in, n_out), outtype.ggml_type, n_bytes, produce)


def _norm(name: str, n: int, seed: int) -> TensorJob:
    produce = lambda: [_random_uniform(_rng(seed, name, 0), n, 0.9, 1.1).astype(np.float32)]
    return TensorJob(name, (n,), FLOAT_TYPES["f32"][0], 4 * n, produce)


EMBEDDING_TYPES = (*FLOAT_TYPES, *HEAD_ENCODINGS)  # q8_0 / q6_k: ggml's heads (smaller, faster, not lossless)


def _embedding(name: str, hp: HParams, embedding_type: str, seed: int) -> TensorJob:
    head = HEAD_ENCODINGS.get(embedding_type)
    table = _normal_table(LOGIT_STD / math.sqrt(hp.n_embd), "f32" if head else embedding_type)

    def produce():
        for chunk, rows in _row_chunks(hp.n_vocab, hp.n_embd):
            values = table[_random_u16(_rng(seed, name, chunk), rows * hp.n_embd)]
            yield head.pack(values.reshape(rows, hp.n_embd)) if head else values

    if head:
        try:
            n_bytes = head.n_bytes(hp.n_vocab, hp.n_embd)
        except ValueError as e:
            raise ValueError(f"cannot store {name!r} as {embedding_type}: {e}") from None
        return TensorJob(name, (hp.n_embd, hp.n_vocab), head.ggml_type, n_bytes, produce)
    ggml_type, _, elem_bytes = FLOAT_TYPES[embedding_type]
    return TensorJob(name, (hp.n_embd, hp.n_vocab), ggml_type, hp.n_vocab * hp.n_embd * elem_bytes, produce)


def plan_tensors(hp: HParams, outtype: str, embedding_type: str, seed: int) -> list[TensorJob]:
    """Every tensor of the model, in our converter's order and names (tied head: no output.weight)."""
    ot = OUTTYPES[outtype]
    jobs = [_embedding("token_embd.weight", hp, embedding_type, seed)]
    for i in range(hp.n_layer):
        for _, gguf, kind, shape_of in LAYER_TENSORS:
            name, shape = f"blk.{i}.{gguf}.weight", shape_of(hp)
            jobs.append(_norm(name, shape[0], seed) if kind == "norm" else _linear(name, *shape, ot, seed))
    jobs.append(_norm("output_norm.weight", hp.n_embd, seed))
    return jobs


# -- the file ------------------------------------------------------------------------------------
def hparams_for(shape: ModelShape, name: str) -> HParams:
    if shape.n_embd % shape.n_head or shape.n_head % shape.n_head_kv:
        raise ValueError(f"heads {shape.n_head}/{shape.n_head_kv} do not divide n_embd {shape.n_embd}")
    return HParams(
        name=name, n_vocab=shape.n_vocab, n_ctx=shape.n_ctx, n_embd=shape.n_embd, n_ff=shape.n_ff,
        n_layer=shape.n_layer, n_head=shape.n_head, n_head_kv=shape.n_head_kv, head_dim=shape.n_embd // shape.n_head,
        rope_theta=shape.rope_theta, rms_eps=1e-5, hidden_act=shape.hidden_act, tied=True,
        linear_class="autobitlinear",
    )  # fmt: skip


def gguf_fields(hp: HParams, outtype: str, seed: int) -> list[tuple[str, object, str]]:
    """Every GGUF key/value: general.*, the hyper-parameters under the outtype's architecture, tokenizer.*."""
    ot = OUTTYPES[outtype]
    fields = [
        ("general.architecture", ot.arch, "string"),
        ("general.name", hp.name, "string"),
        ("general.description", f"random ternary weights (seed {seed}); not a trained model", "string"),
        ("general.file_type", ot.file_type, "u32"),
        ("general.quantization_version", 2, "u32"),
        ("general.alignment", 32, "u32"),
    ]
    fields += [(ot.arch + key[len(ARCH) :], value, kind) for key, value, kind in hp.gguf_fields()]
    if ot.arch == "bitnet":  # llama.cpp's name for the activation key (versions that read one)
        fields.append(("bitnet.hidden_activation", hp.hidden_act, "string"))
    return fields + synthetic_vocab.gguf_tokenizer_fields(hp.n_vocab)


def resolve_shape(size: str | ModelShape, n_vocab: int | None = None, n_layer: int | None = None) -> ModelShape:
    """A size name (case-insensitive) or a ModelShape, with optional vocabulary / layer overrides."""
    if isinstance(size, str):
        names = {k.lower(): k for k in MODEL_SIZES}
        if size.lower() not in names:
            raise ValueError(f"unknown model size {size!r} (choose from {', '.join(MODEL_SIZES)})")
        size = MODEL_SIZES[names[size.lower()]]
    if n_vocab is not None and not synthetic_vocab.MIN_VOCAB <= n_vocab <= MAX_VOCAB:
        raise ValueError(f"vocabulary size must be {synthetic_vocab.MIN_VOCAB}..{MAX_VOCAB}, got {n_vocab}")
    if n_layer is not None and not 1 <= n_layer <= 1024:
        raise ValueError(f"layer count must be 1..1024, got {n_layer}")
    return replace(size, n_vocab=n_vocab or size.n_vocab, n_layer=n_layer or size.n_layer)


def generate(
    outfile,
    size: str | ModelShape = "2B-4T",
    outtype: str = "i2_s",
    *,
    seed: int = 0,
    n_vocab: int | None = None,
    n_layer: int | None = None,
    embedding_type: str = "f16",
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a dummy model to outfile (via a temporary file renamed into place); return its path."""
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if embedding_type not in EMBEDDING_TYPES:
        raise ValueError(f"unknown embedding type {embedding_type!r} (choose from {', '.join(EMBEDDING_TYPES)})")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, str) and size.lower().startswith("embedding-"):  # dummy_embedding.EMBEDDING_SIZES
        from bitnet.convert.dummy_embedding import generate_embedding

        return generate_embedding(outfile, size, outtype, seed=seed, n_vocab=n_vocab, n_layer=n_layer,
                                  embedding_type=embedding_type, name=name, overwrite=overwrite, progress=progress)
    shape = resolve_shape(size, n_vocab, n_layer)
    label = size if isinstance(size, str) else "custom"
    hp = hparams_for(shape, name or f"dummy-bitnet-{label}")
    jobs = plan_tensors(hp, outtype, embedding_type, seed)  # checks row lengths before any output
    return write_model(outfile, gguf_fields(hp, outtype, seed), jobs, progress, overwrite)


def write_model(outfile, fields, jobs: list[TensorJob], progress: bool, overwrite: bool) -> Path:
    """Write GGUF key-values ((key, value, kind) triples) and tensors (jobs, produced one by one)
    to outfile, via a temporary file renamed into place; return its path."""
    outfile = Path(outfile)
    check_output_path(outfile)  # no device, FIFO, socket, directory or symlink is ever replaced
    if outfile.exists() and not overwrite:
        raise FileExistsError(f"{outfile} exists; pass --force to overwrite it")
    with GGUFWriter(outfile, verify=check_loads) as w:
        for key, value, kind in fields:
            w.add_kv(key, value, kind)
        for job in jobs:
            w.add_tensor(job.name, job.ne, job.ggml_type, job.n_bytes)
        w.write_header()
        _write_tensors(w, jobs, progress)
    return outfile


def _write_tensors(w: GGUFWriter, jobs: list[TensorJob], progress: bool) -> None:
    from tqdm import tqdm

    total = sum(j.n_bytes for j in jobs)
    show = progress and sys.stderr.isatty()
    chunks = _prefetched((i, chunk) for i, job in enumerate(jobs) for chunk in job.produce())
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not show, leave=False) as bar:
        for i, group in itertools.groupby(chunks, key=lambda item: item[0]):
            bar.set_postfix_str(jobs[i].name, refresh=False)
            w.write_tensor_data(jobs[i].name, _counted((chunk for _, chunk in group), bar))


def _prefetched(items: Iterator) -> Iterator:
    """items, each drawn on a worker thread while the caller writes the previous one (numpy's
    generators and file writes release the GIL, so drawing and writing overlap)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _counted(chunks: Iterator, bar) -> Iterator:
    for chunk in chunks:
        yield chunk
        bar.update(chunk.nbytes if isinstance(chunk, np.ndarray) else len(chunk))


# -- command line (utils/generate-dummy-bitnet-model.py) -------------------------------------------
EXIT_FAILURE, EXIT_USAGE = 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise _UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="generate-dummy-bitnet-model.py",
        description="Write a BitNet b1.58 model with random ternary weights (a seed makes it reproducible) in "
        "the shape of a real one, with a synthetic vocabulary, for benchmarks and tests. i2_s/f16 files run in "
        "this engine (and i2_s in bitnet.cpp); tq2_0/tq1_0 files are for llama.cpp.",
        epilog="Sizes: "
        + ", ".join(f"{k} ({v.n_embd}x{v.n_ff}, {v.n_layer} layers)" for k, v in MODEL_SIZES.items())
        + "; embedding-0.6b and embedding-270m (bitnet-embedding-0.6b / -270m: Qwen3 / Gemma3, i2_s or f16)"
        + ". An existing output file is kept unless --force is given.",
    )
    p.add_argument(
        "out",
        nargs="?",
        metavar="OUT",
        help="output GGUF file; or a directory, to write dummy-bitnet-<size>.<outtype>.gguf in it",
    )
    p.add_argument(
        "--outfile",
        metavar="F",
        help="output file (bitnet.cpp's flag; OUT, if also given, must then "
        "be a directory, as in bitnet.cpp's usage, and is not used)",
    )
    p.add_argument(
        "--model-size", metavar="S", default="2B-4T", help=f"one of {', '.join(MODEL_SIZES)} (default 2B-4T)"
    )
    p.add_argument(
        "--outtype",
        choices=tuple(OUTTYPES),
        default="i2_s",
        help="type of the ternary weights (default i2_s; f16 holds t*scale)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--vocab-size", type=int, metavar="V", help="vocabulary size (default: the size's own)")
    p.add_argument("--n-layers", type=int, metavar="N", help="override the number of layers (quick tests)")
    p.add_argument(
        "--embedding-type",
        choices=EMBEDDING_TYPES,
        default="f16",
        help="type of the token embedding (the tied output head too; default f16; q8_0 / q6_k, ggml's 8-bit "
        "and 6-bit types, are smaller and faster but no longer lossless; q6_k needs n_embd a multiple of 256)",
    )
    p.add_argument("--model-name", help="general.name (default dummy-bitnet-<size>)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _outfile(args) -> Path:
    if args.outfile is not None:
        if args.out is not None and not Path(args.out).is_dir():
            raise _UsageError("give the output file once: OUT or --outfile (OUT may be a directory with --outfile)")
        return Path(args.outfile)
    if args.out is None:
        raise _UsageError("the output file OUT is required (see --help)")
    out = Path(args.out)
    return out / f"dummy-bitnet-{args.model_size.lower()}.{args.outtype}.gguf" if out.is_dir() else out


def _run(argv) -> int:
    args = _parser().parse_args(argv)
    outfile = _outfile(args)
    if args.seed < 0:
        raise _UsageError(f"--seed must be >= 0, got {args.seed}")
    try:
        if args.model_size.lower() not in ("embedding-0.6b", "embedding-270m"):  # dummy_embedding.py
            resolve_shape(args.model_size, args.vocab_size, args.n_layers)
    except ValueError as e:
        raise _UsageError(e) from None
    t0 = time.perf_counter()
    out = generate(outfile, args.model_size, args.outtype, seed=args.seed, n_vocab=args.vocab_size,
                   n_layer=args.n_layers, embedding_type=args.embedding_type, name=args.model_name,
                   overwrite=args.force, progress=not args.no_progress)  # fmt: skip
    size_mib = out.stat().st_size / 2**20
    print(f"wrote {out} ({size_mib:.1f} MiB in {time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None) -> int:
    """utils/generate-dummy-bitnet-model.py: exit 0, 1 (failure), 2 (usage), 130 (interrupted)."""
    try:
        return _run(argv)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print("error: interrupted; no output file was written (an existing one is unchanged)", file=sys.stderr)
        return interrupted_exit_code(e)
    except (ValueError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_FAILURE
