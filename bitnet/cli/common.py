"""Plumbing shared by the command-line scripts: flag names, number checks, errors, exit codes.

Every script reports a problem as ONE line on stderr and an exit code, never a traceback:
  usage errors (a bad flag or value)      `error: <message> (see --help)`   exit 2
  failures (a missing file, a bad model)  `error: <message>`                exit 1
  Ctrl+C                                  (nothing)                         exit 130
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from bitnet.errors import BitnetError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl+C'd program
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports for `yes`

# Flag spellings, by destination name: bitnet.cpp's (short, single dash) first, then llama.cpp's
# long forms, then other spellings people type. A script declares a flag by its destination
# and gets every spelling, so the same option is spelled the same way in every script.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    # run_inference.py / run_inference_server.py
    "model": ("-m", "--model"),
    "prompt": ("-p", "--prompt"),
    "file": ("-f", "--file"),
    "n_predict": ("-n", "--n-predict"),
    "threads": ("-t", "--threads"),
    "ctx_size": ("-c", "--ctx-size"),
    "temperature": ("-temp", "--temp", "--temperature"),
    "conversation": ("-cnv", "--conversation"),
    "top_k": ("--top-k",),
    "top_p": ("--top-p",),
    "min_p": ("--min-p",),
    "repeat_penalty": ("--repeat-penalty",),
    "seed": ("-s", "--seed"),
    "stop": ("-r", "--reverse-prompt", "--stop"),
    "no_display_prompt": ("--no-display-prompt",),
    "model_sha256": ("--model-sha256",),
    "head_act": ("--head-act",),
    # run_inference_server.py (llama-server's spellings)
    "host": ("--host",),
    "port": ("--port",),
    "parallel": ("-np", "--parallel"),
    "queue_size": ("--queue-size",),
    "n_max": ("--n-max",),
    "batch_size": ("-b", "--batch-size"),
    "api_key": ("--api-key",),
    "api_key_file": ("--api-key-file",),
    "cors_origins": ("--cors-origins",),
    "metrics": ("--metrics",),
    "max_request_bytes": ("--max-request-bytes",),
    "alias": ("-a", "--alias"),
    "log_level": ("--log-level",),
    "no_webui": ("--no-webui",),
    "ray": ("--ray",),
    "replicas": ("--replicas",),
    "ray_address": ("--ray-address",),
    "min_replicas": ("--min-replicas",),
    "max_replicas": ("--max-replicas",),
    "target_ongoing_requests": ("--target-ongoing-requests",),
    # setup_env.py
    "hf_repo": ("-hr", "--hf-repo"),
    "model_dir": ("-md", "--model-dir"),
    "quant_type": ("-q", "--quant-type"),
    "quant_embd": ("--quant-embd",),
    "use_pretuned": ("-p", "--use-pretuned"),
    "log_dir": ("-ld", "--log-dir"),
    "skip_build": ("--skip-build",),
    "skip_tune": ("--skip-tune",),
    "jobs": ("-j", "--jobs"),
    "allow_pickle": ("--allow-pickle",),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `error: ... (see --help)` and exit 2.

    Abbreviations are off: with `-temp` and `-t` both defined, a guessed prefix would be a trap.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"error: {one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def add_flag(self, dest: str, **kwargs) -> argparse.Action:
        return add_flag(self, dest, **kwargs)


def add_flag(container, dest: str, **kwargs) -> argparse.Action:
    """Add the option `dest` to a parser or argument group under every spelling in FLAG_ALIASES."""
    return container.add_argument(*FLAG_ALIASES[dest], dest=dest, **kwargs)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description/epilog layout as written; give option help a wider column."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("max_help_position", 32)
        super().__init__(prog, **kwargs)


# ---- number checks (argparse `type=` functions; their message becomes the one-line error) ----


INT32_MAX = 2**31 - 1  # what the engine's C API holds for counts (threads, context, top-k)
UINT64_MAX = 2**64 - 1


def int_at_least(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer >= lo (and <= hi when given: a value the C API would wrap is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:80]!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi]; lo_open / hi_open make that end exclusive."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo:g}, got {text}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def sha256_hex(text: str) -> str:
    """A SHA-256 digest (64 hex digits, either case) as lower-case hex."""
    from bitnet.model import parse_sha256  # only when the flag is given: --help stays light

    try:
        return parse_sha256(text)
    except BitnetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


sha256_hex.__name__ = "sha256"


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), as the engine uses by default."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ---- errors and exit codes ----


def one_line(message: str) -> str:
    """Collapse a message onto one line (engine messages may quote multi-line text)."""
    return " ".join(str(message).split())


def describe_error(exc: BaseException) -> str:
    """The user-facing text of an exception: OSErrors as `path: reason`, others as their message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return one_line(f"{exc.filename}: {exc.strerror}")
    text = one_line(str(exc))
    return text or type(exc).__name__


def configure_stdio() -> None:
    """Never die on a character the terminal's encoding lacks: replace it instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass


def run_main(fn: Callable[[], int | None]) -> int:
    """Run a script's body and turn the expected failures into one line + an exit code.

    Returns the exit code (the caller passes it to sys.exit). A bug (any other exception) still
    shows its traceback: hiding it would make it impossible to report.
    """
    configure_stdio()
    try:
        code = fn()
        sys.stdout.flush()
        return int(code or 0)
    except KeyboardInterrupt:
        _quiet_stdout_flush()
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as a C program killed by SIGPIPE.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ModuleNotFoundError as exc:  # a dependency missing: say how to get it
        _quiet_stdout_flush()
        from bitnet.cli.python_deps import install_hint

        print(f"error: the Python package {exc.name!r} is missing: {install_hint(exc.name)}", file=sys.stderr)
        return EXIT_FAILURE
    except (BitnetError, FileNotFoundError, ValueError, OSError) as exc:
        _quiet_stdout_flush()
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE


def fail(message: str) -> int:
    """Print a one-line failure and return the exit code, for errors found by the script."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return EXIT_FAILURE


def _quiet_stdout_flush() -> None:
    """Flush what was printed so far so the error line comes after it; ignore a closed pipe."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        _silence_stdout()


def _silence_stdout() -> None:
    # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
