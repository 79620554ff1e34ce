"""`run_inference_server.py` / `python -m bitnet.server`: the OpenAI-compatible HTTP server.

Flags follow bitnet.cpp's run_inference_server.py and llama-server (-m -c -n -t --host --port
--parallel --api-key --api-key-file). The socket is bound before anything else, so a port in
use is one error line; the model loads in the background (/health says 503 until it is ready)
and a load failure ends the process with one error line and exit 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
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
--device cuda runs the slots on a GPU (bitnet/gpu, gpu/README.md): one KV cache for all slots,
one batched step per token (a CUDA graph), greedy tokens picked on the GPU; each request's
output is the same whichever others share its batch, as on the CPU.
SIGTERM (or Ctrl+C) stops accepting connections, finishes the requests in flight, then exits."""

EPILOG = """\
examples:
  python run_inference_server.py -m models/BitNet-b1.58-2B-4T/ggml-model-i2_s.gguf
  python run_inference_server.py -m model.gguf --host 0.0.0.0 --port 8080 --parallel 4 --api-key-file keys.txt
  python run_inference_server.py -m model.gguf --ray --replicas 2 -t 1     # two replicas on a local Ray cluster
  python run_inference_server.py -m model.gguf --device cuda --parallel 16 -ctk f16 -ctv f16
  curl -N http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'

exit status: 0 after a clean shutdown, 1 failure (missing or invalid model, port in use),
2 bad flags, 130 Ctrl+C."""

LOG_LEVELS = ("debug", "info", "warning", "error")
CACHE_TYPES = ("f32", "f16")  # the GPU cache's types (bitnet.gpu.batch.CACHE_TYPES), by llama.cpp's names


def device_name(text: str) -> str:
    """--device: cpu, cuda or cuda:N."""
    if re.fullmatch(r"cpu|cuda(:\d{1,4})?", text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text[:80]!r}")
    return text


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
    p.add_flag("n_max", metavar="N", type=int_at_least(1, 128), default=8,
               help="most choices (n) one request may ask for (default: 8)")
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
    p.add_argument("--allowed-hosts", dest="allowed_hosts", metavar="NAME", nargs="+", default=None,
               help="without --api-key, also answer requests whose Host is NAME (IP addresses, localhost "
                    "and the --host name always are; '*' = any); a defence against DNS rebinding")
    p.add_argument("--special-in-messages", dest="special_in_messages", action="store_true",
                   help="tokenize special-token text in chat messages (e.g. '<|eot_id|>') as the special token; "
                        "by default it is plain text, so a user cannot forge the template's role markers")
    p.add_argument("--header-timeout", dest="header_timeout", metavar="S", type=float, default=10.0,
               help="close a connection whose request headers take longer than S seconds (default: 10)")
    p.add_argument("--body-timeout", dest="body_timeout", metavar="S", type=float, default=60.0,
               help="answer 408 to a request whose body takes longer than S seconds (default: 60)")
    p.add_argument("--device", default="cpu", metavar="DEV", type=device_name,
                   help="cpu (the engine, default) or cuda[:N]: the slots on a GPU (gpu/README.md; with "
                        "TRITON_INTERPRET=1 the GPU code runs on the CPU, slowly, for checking)")
    for short, name, what in (("-ctk", "--cache-type-k", "keys"), ("-ctv", "--cache-type-v", "values")):
        p.add_argument(short, name, dest=name[2:].replace("-", "_"), choices=CACHE_TYPES, default="f32",
                       help=f"--device cuda: the KV cache's type for {what}; f16 halves that memory but is not "
                            "exact: logits move by up to a few %% of the largest, and greedy text may differ "
                            "from the CPU's (gpu/README.md; default: f32, within DESIGN's contract)")
    p.add_flag("metrics", action="store_true", help="serve Prometheus metrics at /metrics")
    p.add_flag("no_webui", action="store_true", help="do not serve the chat page at / (default: served)")
    p.add_flag("max_request_bytes", metavar="N", type=int_at_least(1, INT32_MAX), default=None,
               help="largest request body accepted, else 413 (default: 2 x the prompt cap "
                    "max(1 MiB, 64 bytes x -c), + 1 MiB)")
    p.add_flag("alias", metavar="NAME", default=None, help="model id shown to clients (default: the file name)")
    p.add_flag("model_sha256", metavar="HEX", type=sha256_hex, default=None,
               help="pin the model file: refuse to load it unless its SHA-256 is HEX (64 hex digits)")
    p.add_flag("head_act", choices=("exact", "int8"), default="exact",
               help="output head activations: exact (default) or int8 per block (Q8_0 / Q6_K heads only: "
                    "faster, not exact; see the README)")
    p.add_flag("log_level", choices=LOG_LEVELS, default="warning",
               help="server log detail; info adds a line per request (default: warning)")
    add_ray_flags(p)
    return p


def add_ray_flags(p: ArgumentParser) -> None:
    g = p.add_argument_group("Ray Serve (pip install -e \".[ray]\"; bitnet/server/ray_serve.py)")
    add_flag(g, "ray", action="store_true",
             help="serve replicas of the app on Ray Serve (each: -t threads, --parallel slots), "
                  "Serve's HTTP proxy listening on --host/--port")
    add_flag(g, "ray_address", metavar="ADDR", default=None,
             help="join the Ray cluster at ADDR ('auto': the one started on this machine by 'ray start'); "
                  "default: start a local cluster, ended with the server")
    add_flag(g, "replicas", metavar="N", type=int_at_least(1, 1 << 16), default=None,
             help="a fixed number of replicas (default: autoscale from --min-replicas to --max-replicas)")
    add_flag(g, "min_replicas", metavar="N", type=int_at_least(0, 1 << 16), default=None,
             help="autoscaling: fewest replicas (default: 1)")
    add_flag(g, "max_replicas", metavar="N", type=int_at_least(1, 1 << 16), default=None,
             help="autoscaling: most replicas (default: --min-replicas, at least 1)")
    add_flag(g, "target_ongoing_requests", metavar="N", type=int_at_least(1, 1 << 20), default=None,
             help="autoscaling: requests per replica, running or queued, that it aims for (default: --parallel)")


def ray_options(args, parser: ArgumentParser):
    """The Ray Serve part of the flags, checked (None without --ray)."""
    ray_flags = ("ray_address", "replicas", "min_replicas", "max_replicas", "target_ongoing_requests")
    if not args.ray:
        given = [f for f in ray_flags if getattr(args, f) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --ray")
        return None
    from bitnet.server.ray_serve import RayOptions

    if args.replicas is not None and (args.max_replicas is not None or args.min_replicas is not None):
        parser.error("--replicas (a fixed number) and --min-replicas/--max-replicas (autoscaling) exclude each other")
    min_replicas = args.min_replicas if args.min_replicas is not None else 1
    max_replicas = args.max_replicas if args.max_replicas is not None else max(1, min_replicas)
    if max_replicas < min_replicas:
        parser.error(f"--max-replicas {max_replicas} is below --min-replicas {min_replicas}")
    return RayOptions(address=args.ray_address, replicas=args.replicas, min_replicas=min_replicas,
                      max_replicas=max_replicas, target_ongoing_requests=args.target_ongoing_requests)


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

    check_model_path(args.model)
    ray = ray_options(args, parser)
    if args.device == "cpu" and "f16" in (args.cache_type_k, args.cache_type_v):
        parser.error("an f16 KV cache (-ctk/-ctv f16) needs --device cuda: the CPU engine's cache is f32")
    settings = settings_from_args(args, api_keys)
    for flag in ("header_timeout", "body_timeout"):
        if not 0 < getattr(args, flag) <= 3600:
            parser.error(f"--{flag.replace('_', '-')} must be in (0, 3600] seconds")
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if ray is not None:  # Serve's proxy binds the port itself: a port in use has been reported by now
        sock.close()
    if not api_keys and not _is_loopback(args.host):
        print(f"warning: listening on {args.host} without --api-key: anyone who can reach port {port} can use "
              "this server", file=sys.stderr, flush=True)
    if ray is not None:
        from bitnet.server.ray_serve import serve_on_ray

        return serve_on_ray(settings, ray, args.host, port)
    return serve(settings, sock, f"http://{'[' + host + ']' if ':' in host else host}:{port}", args.log_level,
                 args.header_timeout, args.special_in_messages)


def settings_from_args(args, api_keys: tuple[str, ...]):
    """The ServerSettings of the flags: the one description of a server, plain or on Ray Serve."""
    from bitnet.server.settings import ServerSettings

    origins = tuple(o.strip() for value in args.cors_origins or () for o in value.split(",") if o.strip())
    return ServerSettings(
        model_path=args.model, model_sha256=args.model_sha256, head_act=args.head_act, alias=args.alias,
        n_threads=args.threads,
        n_ctx=args.ctx_size, n_predict=args.n_predict, n_parallel=args.parallel, queue_size=args.queue_size,
        n_max=args.n_max, batch_size=args.batch_size, api_keys=api_keys, cors_origins=origins, metrics=args.metrics,
        max_request_bytes=args.max_request_bytes, webui=not args.no_webui, host=args.host,
        allowed_hosts=tuple(h.strip() for value in args.allowed_hosts or () for h in value.split(",") if h.strip()),
        body_timeout_s=args.body_timeout, device=args.device, cache_type_k=args.cache_type_k,
        cache_type_v=args.cache_type_v,
    )  # fmt: skip


def serve(settings, sock: socket.socket, url: str, log_level: str, header_timeout_s: float = 10.0,
          special_in_messages: bool = False) -> int:
    import uvicorn

    from bitnet.server.app import create_app
    from bitnet.server.hardening import header_timeout_protocol

    logging.basicConfig(format="%(levelname)s:     %(message)s", level=log_level.upper())
    failure: list[str] = []

    def on_loaded(error: str | None) -> None:
        if error is None:
            m = app.state.scheduler.model
            m.special_in_messages = special_in_messages  # set before /health says ready
            m._chat.warm_up()  # the chat template's worker process, before the first chat needs it
            print(f"bitnet server: listening on {url} ({settings.model_id}: {m.native.desc}; "
                  f"{app.state.scheduler.device_description}; {settings.n_parallel} slot(s) of {m.n_ctx} tokens, "
                  f"{m.n_threads} thread(s))", file=sys.stderr, flush=True)
        else:
            failure.append(error)
            server.should_exit = True

    app = create_app(settings, on_loaded)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=None,
                            access_log=log_level in ("debug", "info"), timeout_keep_alive=5,
                            http=header_timeout_protocol(header_timeout_s), h11_max_incomplete_event_size=64 << 10)
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
