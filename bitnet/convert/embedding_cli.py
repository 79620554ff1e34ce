"""Command line of utils/convert-bitnet-embedding-to-gguf.py (bitnet.cpp's name and flags):
DIR [--outtype f32|f16|i2_s] [--outfile F]. One-line errors: exit 2 for usage, 1 for failures."""

from __future__ import annotations

import sys
from pathlib import Path

from bitnet.convert.cli import _error, _human_size, _Parser, _UsageError
from bitnet.convert.cli import EXIT_FAILURE, EXIT_USAGE

# bitnet.cpp's default output names, by outtype
_SUFFIX = {"f32": "-f32", "f16": "-f16", "i2_s": "-f16-new-i2_s"}


def _parser() -> _Parser:
    p = _Parser(prog="convert-bitnet-embedding-to-gguf.py",
                description="Convert a BitNet embedding model (Qwen3 / Gemma3 backbone, as "
                "microsoft/bitnet-embedding-0.6b and -270m publish it) to GGUF for bitnet's engine.")  # fmt: skip
    p.add_argument("model_dir", metavar="DIR", help="model directory with config.json, *.safetensors, tokenizer")
    p.add_argument("--outtype", choices=("f32", "f16", "i2_s"), default="i2_s",
                   help="linear weights: i2_s (default; 2-bit codes + f32 scale), or the dequantized t*scale as f32 / "
                   "f16 (f16 is not lossless when it cannot hold the scale)")  # fmt: skip
    p.add_argument("--outfile", metavar="F", help="output file (default: DIR/<DIR name>-<outtype suffix>.gguf)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    from bitnet.convert.embedding_models import convert_embedding

    try:
        args = _parser().parse_args(argv)
        d = Path(args.model_dir)
        outfile = Path(args.outfile) if args.outfile else d / f"{d.resolve().name}{_SUFFIX[args.outtype]}.gguf"
        out = convert_embedding(d, outfile, args.outtype, progress=not args.no_progress)
        print(f"wrote {out} ({_human_size(out.stat().st_size)})")
        return 0
    except _UsageError as e:
        _error(e)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP while writing (gguf_writer.OutputInterrupted)
        from bitnet.gguf_writer import interrupted_exit_code

        print("error: interrupted; no output file was written (an existing one is unchanged)", file=sys.stderr)
        return interrupted_exit_code(e)
    except (ValueError, OSError, KeyError) as e:
        _error(e)
        return EXIT_FAILURE
