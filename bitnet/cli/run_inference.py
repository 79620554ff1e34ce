"""`run_inference.py`: generate text or chat with a ternary model from the command line.

bitnet.cpp's script, flag for flag (-m -p -n -t -c -temp -cnv), plus llama.cpp's long forms of
the sampling flags. It talks to the engine only through `bitnet.Model`.
"""

from __future__ import annotations

import os
import sys

from bitnet.cli.common import (
    INT32_MAX,
    UINT64_MAX,
    ArgumentParser,
    add_flag,
    default_threads,
    float_in,
    int_at_least,
    one_line,
    run_main,
    sha256_hex,
)
from bitnet.errors import BitnetError

DESCRIPTION = """\
Generate text from a prompt, or chat (-cnv), with a ternary (1.58-bit) model in GGUF format.

Without -cnv the prompt is printed, then the generated text streams after it; a summary line
(tokens and speed) goes to stderr. An empty prompt (no -p / -f) generates from the
beginning-of-sequence token alone, as llama.cpp does.

With -cnv (for instruct models) the program reads one user message per line from stdin and
streams each reply, keeping the conversation. -p is then the system prompt, as in bitnet.cpp.
Type /exit or end the input (Ctrl+D) to quit, /clear to forget the conversation so far.
Ctrl+C stops a reply; at the `> ` prompt it quits."""

EPILOG = """\
examples:
  python run_inference.py -p "It is a truth universally acknowledged" -n 48          # the demo model
  python run_inference.py -m models/BitNet-b1.58-2B-4T/ggml-model-i2_s.gguf -p "The capital of France is" -n 32
  python run_inference.py -m model.gguf -p "You are a helpful assistant." -cnv
  python run_inference.py -m model.gguf -f prompt.txt -n -1 -temp 0 --seed 42
  python run_inference.py -m model.gguf -p "Hi" --model-sha256 "$(sha256sum model.gguf | cut -c1-64)"

A prompt may be at most max(1 MiB, 64 bytes x -c) long (checked before tokenization), and its
tokens must fit the context with room for one generated token: a longer one is an error,
never silently cut.

exit status: 0 ok, 1 failure (missing or invalid model file, ...), 2 bad flags, 130 Ctrl+C."""

CHAT_EXIT = "/exit"
CHAT_CLEAR = "/clear"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="run_inference.py", description=DESCRIPTION, epilog=EPILOG)
    p.add_flag("model", metavar="GGUF", default=None,
               help="path to the model file (.gguf); default: the demo model in models/, "
                    "a 5M-parameter BitNet b1.58 trained on Jane Austen's novels")
    p.add_flag("prompt", metavar="TEXT", default=None,
               help="prompt to continue; with -cnv, the system prompt (default: empty)")
    p.add_flag("file", metavar="PATH", default=None,
               help="read the prompt from a file instead of -p ('-' = stdin, not with -cnv)")
    p.add_flag("n_predict", metavar="N", type=int_at_least(-1), default=128,
               help="tokens to generate (per reply with -cnv); -1 = until the model ends the "
                    "text or the context is full (default: 128)")
    p.add_flag("threads", metavar="N", type=int_at_least(1, INT32_MAX), default=default_threads(),
               help="threads to use (default: the cores available, %(default)s here)")
    p.add_flag("ctx_size", metavar="N", type=int_at_least(1, INT32_MAX), default=2048,
               help="context size in tokens: prompt + generated text (default: 2048)")
    p.add_flag("temperature", metavar="T", type=float_in(lo=0.0), default=0.8,
               help="sampling temperature; 0 = greedy, always the most likely token (default: 0.8)")
    p.add_flag("conversation", action="store_true",
               help="chat mode for instruct models: -p is the system prompt, messages come from stdin")
    sampling = p.add_argument_group("sampling (llama.cpp's flags)")
    add_flag(sampling, "top_k", metavar="K", type=int_at_least(0, INT32_MAX), default=40,
             help="keep the K most likely tokens; 0 = all (default: 40)")
    add_flag(sampling, "top_p", metavar="P", type=float_in(lo=0.0, hi=1.0, lo_open=True),
             default=0.95, help="keep the most likely tokens up to probability mass P, "
                                "in (0, 1]; 1 = off (default: 0.95)")
    add_flag(sampling, "min_p", metavar="P", type=float_in(lo=0.0, hi=1.0), default=0.05,
             help="drop tokens less likely than P x the top one; 0 = off (default: 0.05)")
    add_flag(sampling, "repeat_penalty", metavar="X", type=float_in(lo=0.0, lo_open=True),
             default=1.0, help="penalize tokens already seen; 1 = off (default: 1.0)")
    add_flag(sampling, "seed", metavar="N", type=int_at_least(-1, UINT64_MAX), default=-1,
             help="random seed; -1 = a new one each run (default: -1)")
    add_flag(sampling, "stop", metavar="TEXT", action="append", default=None,
             help="stop when the text contains TEXT (not included); repeatable")
    p.add_flag("no_display_prompt", action="store_true",
               help="print only the generated text, not the prompt before it")
    p.add_flag("model_sha256", metavar="HEX", type=sha256_hex, default=None,
               help="pin the model file: refuse to load it unless its SHA-256 is HEX (64 hex digits)")
    p.add_flag("head_act", choices=("exact", "int8"), default="exact",
               help="output head activations: exact (default) for the stored weights, or int8 per block "
                    "with integer dot products (Q8_0 / Q6_K heads only: faster, not exact; see the README)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="cpu (the engine, default) or cuda[:N]: the GPU backend (gpu/README.md)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say more at start-up: the library and preset files, the tuning in force, the "
                        "model's shape")
    return p


class UsageError(Exception):
    """A flag combination argparse cannot check; reported like a bad flag (exit 2)."""


def read_prompt(args) -> str:
    """The prompt text of -p / -f; a file is read no further than the prompt byte cap."""
    if args.file is not None and args.prompt is not None:
        raise UsageError("give the prompt with -p or with -f, not both")
    if args.file is None:
        return args.prompt or ""
    if args.file == "-" and args.conversation:
        raise UsageError("-f - reads stdin, which -cnv needs for the chat: use -p or a file")
    from bitnet.model import default_max_prompt_bytes

    limit = default_max_prompt_bytes(args.ctx_size)
    if args.file == "-":
        return _decode_prompt(_read_capped(sys.stdin.buffer, "the prompt on stdin", limit), "stdin")
    try:
        with open(args.file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ValueError(f"prompt file {args.file} is {size} bytes, over the limit of {limit} bytes "
                                 "(max(1 MiB, 64 bytes x -c)); shorten it")
            data = _read_capped(f, f"prompt file {args.file}", limit)
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt file not found: {args.file}") from None
    return _decode_prompt(data, f"prompt file {args.file}")


def _read_capped(stream, what: str, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} is over the limit of {limit} bytes (max(1 MiB, 64 bytes x -c)); shorten it")
    return data


def _decode_prompt(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None


def check_model_path(path: str) -> None:
    """Catch the common mistakes before the engine loads, with a hint at what to do."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path} (make one with "
                                f"`python setup_env.py -hr REPO` or `-md DIR`)")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory: pass the .gguf file inside it with -m")


def sampling_kwargs(args) -> dict:
    """The flags as keyword arguments of Model.generate / create_chat_completion."""
    return {
        "max_tokens": args.n_predict if args.n_predict >= 0 else None,  # None: no limit
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": None if args.seed < 0 else args.seed,
        "stop": args.stop,
    }


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def complete(model, prompt: str, args) -> None:
    """Print the prompt, stream the continuation, then one summary line on stderr."""
    pieces = model.generate(prompt, stream=True, **sampling_kwargs(args))
    # The prompt is checked (and prefilled) before the first piece: a prompt the model cannot take
    # is then one error line, with no start-up line or echoed prompt before it.
    first = next(pieces, "")
    print(startup_line(model, args.verbose), file=sys.stderr, flush=True)
    if not args.no_display_prompt:
        write(prompt)
    write(first)
    for piece in pieces:
        write(piece)
    write("\n")
    print(summary_line(model.last_timings, args.threads), file=sys.stderr)


def startup_line(model, verbose: bool = False) -> str:
    """What runs, on stderr before the text: `model austen-5M.gguf (bitnet-b1.58 5.3M) | kernels
    avx512vnni | 2 threads | context 2048 tokens`; with -v, lines on the library, preset and model."""
    from bitnet import engine

    native = model.native
    line = (f"model {os.path.basename(model.model_path)} ({native.desc}) | kernels {engine.isa()} | "
            f"{model.n_threads} thread{'s' if model.n_threads != 1 else ''} | context {model.n_ctx} tokens")
    if not verbose:
        return line
    preset = engine.preset_path()
    tuning = ", ".join(f"{k} {engine.get_tuning(k)}" for k in TUNING_KEYS)
    return "\n".join([
        line,
        f"  model file {model.model_path}: {native.arch}, {native.n_layer} layers, embedding {native.n_embd}, "
        f"vocabulary {native.n_vocab}, trained context {native.n_ctx_train}",
        f"  engine {engine.library_path()}; kernel sets here: {', '.join(engine.available_isas())} "
        "(BITNET_ISA picks one)",
        f"  cpu {engine.cpu_signature()}; preset {preset if preset.is_file() else 'none (built-in defaults)'}; "
        f"tuning: {tuning}",
    ])


TUNING_KEYS = ("prefetch_bytes", "head_prefetch_bytes", "head_gemv_rows", "amx_min_batch")


def summary_line(timings: dict | None, n_threads: int) -> str:
    """`prompt: 12 tokens, 85.3 tok/s | generation: 128 tokens, 31.2 tok/s | 2 threads`."""
    t = timings or {}

    def part(name: str, n_key: str, tps_key: str) -> str:
        n, tps = t.get(n_key) or 0, t.get(tps_key)
        speed = f"{tps:.1f} tok/s" if n and tps else "- tok/s"
        return f"{name}: {n} tokens, {speed}"

    return " | ".join([part("prompt", "n_prompt", "prompt_tps"),
                       part("generation", "n_gen", "gen_tps"),
                       f"{n_threads} thread{'s' if n_threads != 1 else ''}"])


def read_user_line(interactive: bool) -> str | None:
    """One line of user input without its newline, or None at the end of the input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            write("\n")
            return None
    line = sys.stdin.readline()
    return line.rstrip("\r\n") if line else None


def stream_reply(model, messages: list[dict], kwargs: dict) -> str:
    """Stream one assistant reply to stdout and return its text (partial if Ctrl+C'd)."""
    pieces: list[str] = []
    chunks = model.create_chat_completion(messages, stream=True, **kwargs)
    try:
        for chunk in chunks:
            content = chunk["choices"][0]["delta"].get("content")
            if content:
                pieces.append(content)
                write(content)
    except KeyboardInterrupt:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        if not sys.stdin.isatty():
            raise
        # Interactive: Ctrl+C ends this reply only, as in llama.cpp; at the prompt it quits.
    write("\n")
    return "".join(pieces)


def chat(model, system_prompt: str, args) -> None:
    """The interactive loop: one user line in, one streamed reply out, history kept."""
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_line_editing()
        print(f"chat mode: type a message and press Enter; {CHAT_EXIT} or Ctrl+D quits, "
              f"{CHAT_CLEAR} starts over", file=sys.stderr)
    start = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages = list(start)
    kwargs = sampling_kwargs(args)
    while True:
        line = read_user_line(interactive)
        if line is None or line.strip() == CHAT_EXIT:
            return
        if line.strip() == CHAT_CLEAR:
            messages = list(start)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        try:
            reply = stream_reply(model, messages, kwargs)
        except (BitnetError, ValueError) as exc:
            # Most often the conversation outgrew the context: say so and let the user go on.
            messages.pop()
            print(f"error: {one_line(str(exc))}; {CHAT_CLEAR} forgets the conversation so far",
                  file=sys.stderr)
            continue
        messages.append({"role": "assistant", "content": reply})


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (importing it gives input() history and editing)
    except ImportError:
        pass


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        prompt = read_prompt(args)
    except UsageError as exc:
        parser.error(str(exc))
    if args.model is None:
        from bitnet.model import default_model_path

        args.model = str(default_model_path())
    check_model_path(args.model)
    from bitnet import Model  # after parsing: --help and flag errors need no engine

    model = Model(args.model, n_threads=args.threads, n_ctx=args.ctx_size,
                  seed=None if args.seed < 0 else args.seed, model_sha256=args.model_sha256, device=args.device,
                  head_act=args.head_act)
    try:
        if args.conversation:
            print(startup_line(model, args.verbose), file=sys.stderr, flush=True)
            chat(model, prompt, args)
        else:
            complete(model, prompt, args)
    finally:
        model.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
