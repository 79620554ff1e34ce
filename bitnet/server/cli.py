"""`run_inference_server.py` / `python -m bitnet.server`: the OpenAI-compatible HTTP server.

Flags follow bitnet.cpp's run_inference_server.py and llama-server (-m -c -n -t --host --port
--parallel --api-key --api-key-file). The socket is bound before anything else, so a port in
use is one error line; the model loads in the background (/health says 503 until it is ready)
and a load failure ends the process with one error line and exit 1.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys

from bitnet.cli.common import (
    INT32_MAX,
    ArgumentParser,
    add_flag,
    default_threads,
    fail,
    int_at_least,
    run_main,
    sha256_hex,
)

DESCRIPTION = """\
Serve a ternary (1.58-bit) GGUF model over HTTP with OpenAI's API: /v1/chat/completions and
/v1/completions (streaming or not), /v1/models, plus /health, /tokenize, /detokenize,
/apply-template, /slots and /metrics (with --metrics).

--parallel N slots run at once, decoded together in one batched pass per token (continuous
batching); up to --queue-size more requests wait for a slot, and beyond that the server answers
503 with Retry-After. Each slot has its own context of -c tokens and keeps it after a request,
so a request that repeats a prefix (a system prompt, a conversation) skips that prefill.
SIGTERM (or Ctrl+C) stops accepting connections, finishes the requests in flight, then exits."""

EPILOG = """\
examples:
  python run_inference_server.py -m models/BitNet-b1.58-2B-4T/ggml-model-i2_s.gguf
  python run_inference_server.py -m model.gguf --host 0.0.0.0 --port 8080 --parallel 4 --api-key-file keys.txt
  curl -N http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'

exit status: 0 after a clean shutdown, 1 failure (missing or invalid model, port in use),
2 bad flags, 130 Ctrl+C."""

LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="run_inference_server.py", description=DESCRIPTION, epilog=EPILOG)
    p.add_flag("model", metavar="GGUF", required=True, help="path to the model file (.gguf)")
    p.add_flag("host", metavar="ADDR", default="127.0.0.1",
               help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_flag("port", metavar="N", type=int_at_least(0, 65535), default=8080,
               help="port to listen on; 0 = any free one (default: 8080)")
    p.add_flag("threads", metavar="N", type=int_at_least(1, INT32_MAX), default=default_threads(),
               help="threads to use (default: the cores available, %(default)s here)")
    p.add_flag("ctx_size", metavar="N", type=int_at_least(1, INT32_MAX), default=2048,
               help="context of each slot in tokens: prompt + reply of one request (default: 2048)")
    p.add_flag("n_predict", metavar="N", type=int_at_least(-1, INT32_MAX), default=-1,
               help="most tokens any request may generate (its max_tokens is held to it); "
                    "-1 = only the context limits it (default: -1)")
    p.add_flag("parallel", metavar="N", type=int_at_least(1, 1024), default=1,
               help="requests served at once, decoded together (default: 1)")
    p.add_flag("queue_size", metavar="N", type=int_at_least(0, 1 << 20), default=64,
               help="requests that may wait for a free slot; more get 503 (default: 64)")
    p.add_flag("batch_size", metavar="N", type=int_at_least(1, INT32_MAX), default=64,
               help="prompt tokens per engine call; a client that leaves is noticed between "
                    "two calls (default: 64)")
    keys = p.add_mutually_exclusive_group()
    add_flag(keys, "api_key", metavar="KEY", action="append", default=None,
             help="require 'Authorization: Bearer KEY'; several keys comma-separated or repeated "
                  "(other users of this machine can see it in the process list: prefer --api-key-file)")
    add_flag(keys, "api_key_file", metavar="FILE", default=None,
             help="read the API keys from FILE, one per line")
    p.add_flag("cors_origins", metavar="ORIGIN", nargs="+", default=None,
               help="let web pages from these origins call the server ('*' = any); default: none")
    p.add_flag("metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    p.add_flag("max_request_bytes", metavar="N", type=int_at_least(1, INT32_MAX), default=None,
               help="largest request body accepted, else 413 (default: 2 x the prompt cap "
                    "max(1 MiB, 64 bytes x -c), + 1 MiB)")
    p.add_flag("alias", metavar="NAME", default=None, help="model id shown to clients (default: the file name)")
    p.add_flag("model_sha256", metavar="HEX", type=sha256_hex, default=None,
               help="pin the model file: refuse to load it unless its SHA-256 is HEX (64 hex digits)")
    p.add_flag("log_level", choices=LOG_LEVELS, default="warning",
               help="server log detail; info adds a line per request (default: warning)")
    return p


def read_api_keys(args) -> tuple[str, ...]:
    """The keys of --api-key (comma-separated, repeatable) or --api-key-file (one per line)."""
    if args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                keys = [line.strip() for line in f]
        except FileNotFoundError:
            raise FileNotFoundError(f"API key file not found: {args.api_key_file}") from None
        except UnicodeDecodeError:
            raise ValueError(f"API key file {args.api_key_file} is not UTF-8 text") from None
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError(f"API key file {args.api_key_file} holds no key (one per line)")
        return tuple(keys)
    keys = [k.strip() for value in args.api_key or () for k in value.split(",")]
    if args.api_key is not None and not all(keys):
        raise UsageError("--api-key needs a non-empty key")
    return tuple(keys)


class UsageError(Exception):
    """A flag value argparse cannot check; reported like a bad flag (exit 2)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use (or a bad address) is an error before anything starts."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    sock.listen(2048)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        api_keys = read_api_keys(args)
    except UsageError as exc:
        parser.error(str(exc))
    from bitnet.cli.run_inference import check_model_path
    from bitnet.server.settings import ServerSettings

    check_model_path(args.model)
    origins = tuple(o.strip() for value in args.cors_origins or () for o in value.split(",") if o.strip())
    settings = ServerSettings(
        model_path=args.model, model_sha256=args.model_sha256, alias=args.alias, n_threads=args.threads,
        n_ctx=args.ctx_size, n_predict=args.n_predict, n_parallel=args.parallel, queue_size=args.queue_size,
        batch_size=args.batch_size, api_keys=api_keys, cors_origins=origins, metrics=args.metrics,
        max_request_bytes=args.max_request_bytes,
    )  # fmt: skip
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not api_keys and not _is_loopback(args.host):
        print(f"warning: listening on {args.host} without --api-key: anyone who can reach port {port} can use "
              "this server", file=sys.stderr, flush=True)
    return serve(settings, sock, f"http://{'[' + host + ']' if ':' in host else host}:{port}", args.log_level)


def serve(settings, sock: socket.socket, url: str, log_level: str) -> int:
    import uvicorn

    from bitnet.server.app import create_app

    logging.basicConfig(format="%(levelname)s:     %(message)s", level=log_level.upper())
    failure: list[str] = []

    def on_loaded(error: str | None) -> None:
        if error is None:
            from bitnet import engine

            m = app.state.scheduler.model
            print(f"bitnet server: listening on {url} ({settings.model_id}: {m.native.desc}; kernels {engine.isa()}; "
                  f"{settings.n_parallel} slot(s) of {m.n_ctx} tokens, {m.n_threads} thread(s))",
                  file=sys.stderr, flush=True)
        else:
            failure.append(error)
            server.should_exit = True

    app = create_app(settings, on_loaded)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=None,
                            access_log=log_level in ("debug", "info"))
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then raises the signal again under the handler it found: make
    # that one a no-op so that a requested shutdown ends here, with exit status 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failure:
        return fail(failure[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: run(argv))
