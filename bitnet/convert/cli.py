"""Command lines of utils/convert-hf-to-gguf-bitnet.py and utils/convert-helper-bitnet.py.

Errors are one line `error: ...` on stderr: exit 2 for usage (bad or missing flags), 1 when
the conversion fails (missing directory, unsupported checkpoint, I/O), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_FAILURE, EXIT_USAGE = 1, 2
HEAD_CHOICES = ("f32", "f16", "bf16", "q8_0", "q6_k")  # hf_bitnet.HEAD_TYPES (not imported: --help stays fast)
QUANTIZED_HEAD_NOTE = (
    "q8_0 / q6_k, ggml's 8-bit and 6-bit types, are smaller and faster but no longer lossless; "
    "q6_k needs a hidden size that is a multiple of 256"
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + "prog: error:"; we want one line
        raise _UsageError(f"{message} (see --help)")


def _converter_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="convert-hf-to-gguf-bitnet.py",
        description=(
            "Convert a ternary Hugging Face checkpoint (BitNetForCausalLM, 1bitLLM's BitnetForCausalLM, or "
            "LlamaForCausalLM with a bitnet quantization_config: packed uint8 weights with weight_scale, or "
            "bf16/f16/f32 masters) into a GGUF file for bitnet's engine."
        ),
        epilog="Example: convert-hf-to-gguf-bitnet.py models/bitnet-b1.58-2B-4T --outtype i2_s",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory with config.json, *.safetensors, tokenizer.json")
    p.add_argument(
        "--outtype",
        choices=("f32", "f16", "bf16", "i2_s", "tq2_0", "tq1_0"),
        default="i2_s",
        help="type of the linear (ternary) weights: i2_s = 2-bit codes + one f32 scale per tensor (default, "
        "what the engine runs fast; bitnet.cpp's format); tq2_0/tq1_0 = llama.cpp's ternary types (scale "
        "rounded to f16; rows a multiple of 256), for files llama.cpp also runs; f32/f16/bf16 = the "
        "dequantized weights t*scale",
    )
    p.add_argument("--outfile", metavar="F", help="output file (default: DIR/ggml-model-<outtype>.gguf)")
    p.add_argument(
        "--token-embedding-type",
        choices=HEAD_CHOICES,
        help="store the token embedding (and only it; for a tied model it is the output head too) in this type; "
        f"default: exactly as the checkpoint stores it ({QUANTIZED_HEAD_NOTE})",
    )
    p.add_argument(
        "--output-tensor-type",
        choices=HEAD_CHOICES,
        help="store an untied output head (lm_head) in this type; default: exactly as the checkpoint stores it "
        f"({QUANTIZED_HEAD_NOTE})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_allow_pickle(p)
    return p


def _helper_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="convert-helper-bitnet.py",
        description="bitnet.cpp's helper: convert a Hugging Face BitNet checkpoint in DIR to DIR/ggml-model-i2_s.gguf.",
    )
    p.add_argument("model_dir", metavar="DIR", help="model directory with config.json, *.safetensors, tokenizer.json")
    _add_allow_pickle(p)
    return p


def _add_allow_pickle(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a pickle checkpoint (pytorch_model.bin, *.pt, *.pth, *.ckpt) when there are no safetensors; "
        "pickle files can run code when loaded, so use this only for files you trust (they are read with "
        "torch.load(weights_only=True), which needs PyTorch)",
    )


def _human_size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024
    raise AssertionError


def _run(parser: argparse.ArgumentParser, argv, outtype_default: str | None) -> int:
    from bitnet.convert.hf_bitnet import convert

    args = parser.parse_args(argv)
    outtype = getattr(args, "outtype", None) or outtype_default
    model_dir = Path(args.model_dir)
    outfile = Path(getattr(args, "outfile", None) or model_dir / f"ggml-model-{outtype}.gguf")
    out = convert(
        model_dir,
        outfile,
        outtype=outtype,
        token_embedding_type=getattr(args, "token_embedding_type", None),
        output_type=getattr(args, "output_tensor_type", None),
        progress=not getattr(args, "no_progress", False),
        allow_pickle=args.allow_pickle,
    )
    print(f"wrote {out} ({_human_size(out.stat().st_size)})")
    return 0


def _error(message) -> None:
    print("error: " + " ".join(str(message).split()), file=sys.stderr)


def _guarded(parser_factory, argv, outtype_default=None) -> int:
    try:
        return _run(parser_factory(), argv, outtype_default)
    except _UsageError as e:
        _error(e)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        from bitnet.gguf_writer import interrupted_exit_code

        print("error: interrupted; no output file was written (an existing one is unchanged)", file=sys.stderr)
        return interrupted_exit_code(e)
    except (ValueError, OSError) as e:
        _error(e)
        return EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 (a bug of ours: still one line, with the type to report it by)
        _error(f"conversion failed ({type(e).__name__}: {e})")
        return EXIT_FAILURE


def main(argv=None) -> int:
    """utils/convert-hf-to-gguf-bitnet.py"""
    return _guarded(_converter_parser, argv)


def helper_main(argv=None) -> int:
    """utils/convert-helper-bitnet.py"""
    return _guarded(_helper_parser, argv, "i2_s")
