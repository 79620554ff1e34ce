"""`run_inference_server.py --ray`: the same FastAPI app (bitnet.server.app.create_app) as Ray
Serve replicas, each with its own engine, threads and slots, behind Serve's router.

- One code path: a replica builds its app with create_app(settings) from the same ServerSettings
  the plain server uses (Serve's @serve.ingress with __serve_build_asgi_app__: the app is made in
  the replica's process, since a scheduler thread and a loaded model do not travel by pickle).
- A replica joins the router only once its model is loaded (its ASGI lifespan waits for it) and
  tags every response with X-Bitnet-Replica: <its id>.
- Health: Serve calls check_health every few seconds; it fails when the replica's scheduler
  (the thread that owns the engine) has failed or died, and Serve replaces the replica.
- Routing and queueing: a replica takes at most 2 x --parallel requests (one waiting per slot,
  so a freed slot is refilled at once); the rest wait in Serve's router, which sends each to the
  least loaded replica. Autoscaling (--min-replicas/--max-replicas) follows those queue lengths:
  --target-ongoing-requests per replica (default: --parallel).
- Drain: on scale-down or shutdown a replica gets no new requests and finishes those it has
  (streams included, for up to DRAIN_TIMEOUT_S), then its app's lifespan stops the scheduler.
- Failure: if a replica's process dies, its requests fail with a 5xx (the request was sent to
  that process; Serve does not resend it): a client that retries 5xx (OpenAI's client does, twice
  by default) gets it served by another replica, unless the reply had started streaming. Requests
  still waiting in the router are not lost. Serve starts a new replica in its place.

Needs the `ray` extra (pip install -e ".[ray]"); every node needs the package and the model
file at the same path (README: Serving beyond one machine).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bitnet.cli.common import one_line
from bitnet.server.settings import ServerSettings

APP_NAME = "bitnet"
REPLICA_HEADER = "x-bitnet-replica"
DRAIN_TIMEOUT_S = 120.0  # how long a replica being removed may take to finish its requests
LOCAL_OBJECT_STORE_BYTES = 128 << 20  # nothing big travels through Ray's object store here


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local cluster, owned by this process
    replicas: int | None = None  # a fixed number of replicas; None: autoscale
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: int | None = None  # None: the slots of a replica (--parallel)

    @property
    def autoscaling(self) -> bool:
        return self.replicas is None


def deployment_options(settings: ServerSettings, opts: RayOptions) -> dict:
    """The keyword arguments of serve.deployment for these settings."""
    options = {
        "name": APP_NAME,
        "ray_actor_options": {"num_cpus": settings.n_threads},  # each replica's engine threads
        "max_ongoing_requests": 2 * settings.n_parallel,
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_wait_loop_s": 1.0,
        "graceful_shutdown_timeout_s": DRAIN_TIMEOUT_S,
        "max_constructor_retry_count": 3,  # a model that cannot load will not load on the 4th try
    }
    if opts.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": opts.min_replicas, "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests or settings.n_parallel,
        }  # fmt: skip
    else:
        options["num_replicas"] = opts.replicas
    return options


class ReplicaHeader:
    """ASGI middleware: every response says which replica made it."""

    def __init__(self, app, replica: str):
        self.app, self.value = app, replica.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (REPLICA_HEADER.encode(), self.value)]}
            await send(message)

        await self.app(scope, receive, tagged)


def ready_when_loaded(lifespan, scheduler):
    """The app's lifespan, whose startup also waits for the model (or raises its load error)."""
    import anyio

    @asynccontextmanager
    async def wrapped(app):
        async with lifespan(app) as state:
            while scheduler.state == "loading":
                await anyio.sleep(0.05)
            if scheduler.state != "ready":
                raise RuntimeError(scheduler.status_message())
            yield state

    return wrapped


def build_app(settings: ServerSettings, opts: RayOptions):
    """The Serve application: a deployment of replicas, each serving create_app(settings)."""
    from ray import serve

    from bitnet.server.app import create_app

    @serve.ingress()
    class BitnetReplica:
        def __init__(self, settings: ServerSettings):
            # The file must be on this node (README): say so here, where Serve reports the message
            # (a load failure in the app's lifespan reaches Serve only as "lifespan startup failed").
            if not os.path.isfile(settings.model_path):
                raise FileNotFoundError(f"model file not found on node {socket.gethostname()}: {settings.model_path}")
            self.settings = settings
            self.replica = serve.get_replica_context().replica_id.unique_id

        def __serve_build_asgi_app__(self):
            app = create_app(self.settings)
            app.add_middleware(ReplicaHeader, replica=self.replica)
            app.router.lifespan_context = ready_when_loaded(app.router.lifespan_context, app.state.scheduler)
            return app  # Serve's wrapper keeps it as self.app

        def check_health(self) -> None:
            # The scheduler thread owns the engine; if it ends (an engine fault, a stop) its state
            # leaves "ready" on the way out, and Serve replaces this replica.
            try:
                scheduler = self.app.state.scheduler  # self.app: Serve's wrapper, once the app is built
            except AttributeError:
                raise RuntimeError("the replica's app is not built") from None
            if scheduler.state not in ("loading", "ready"):
                raise RuntimeError(scheduler.status_message())

    return serve.deployment(**deployment_options(settings, opts))(BitnetReplica).bind(settings)


def _deployment_error(serve) -> str | None:
    """The replicas' own error (a model that cannot load), from Serve's status; None if none is told."""
    try:
        status = serve.status().applications[APP_NAME].deployments[APP_NAME]
    except Exception:  # noqa: BLE001 (the status is a courtesy: the caller has a message anyway)
        return None
    lines = [line.strip() for line in (status.message or "").splitlines()]
    errors = [line.split(": ", 1)[1] for line in lines
              if re.match(r"^\w+(Error|Exception): ", line) and "Traceback" not in line]  # fmt: skip
    if not errors:
        return None
    if "lifespan startup failed" in errors[-1]:
        return ("a replica could not load the model (its log says why: "
                "/tmp/ray/session_latest/logs/serve/replica_*.log on its node)")
    return f"a replica failed: {errors[-1]}"


def serve_on_ray(settings: ServerSettings, opts: RayOptions, host: str, port: int) -> int:
    """Start (or join) a Ray cluster, run the deployment with Serve's HTTP proxy on host:port, and
    wait for SIGTERM / Ctrl+C; then remove the deployment (its replicas drain) and, for a local
    cluster, stop it. 0 on a clean stop, 1 if the deployment did not come up."""
    try:
        import ray
        from ray import serve
    except ImportError:
        print("error: --ray needs Ray Serve: pip install -e \".[ray]\" (or pip install \"ray[serve]\")",
              file=sys.stderr)
        return 1
    local = opts.address is None
    if local:
        # A cluster of this machine only, ended with this process. Only Serve's proxy listens on
        # --host: Ray's own daemons take the machine's address even when told 127.0.0.1 (Ray
        # resolves loopback to it on purpose) and guard their ports with its token authentication.
        ray.init(address="local", include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=opts.address, log_to_driver=False, configure_logging=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(settings, opts), name=APP_NAME, route_prefix="/", blocking=False)
        scale = (f"{opts.replicas} replica(s)" if not opts.autoscaling else
                 f"{opts.min_replicas} to {opts.max_replicas} replicas, target {opts.target_ongoing_requests or settings.n_parallel} "  # noqa: E501
                 "ongoing requests each")
        where = "a local Ray cluster" if local else f"the Ray cluster at {opts.address}"
        url_host = f"[{host}]" if ":" in host else host
        print(f"bitnet server: listening on http://{url_host}:{port} ({settings.model_id} on Ray Serve: {scale}, "
              f"{settings.n_parallel} slot(s) and {settings.n_threads} thread(s) each, on {where})",
              file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        serve.delete(APP_NAME)  # the replicas drain: requests in flight finish
        return 0
    except RuntimeError as exc:  # the deployment failed (a replica could not load the model)
        print(f"error: the Ray Serve deployment failed: {_deployment_error(serve) or one_line(str(exc))}",
              file=sys.stderr)
        return 1
    finally:
        if local:
            serve.shutdown()
            ray.shutdown()
