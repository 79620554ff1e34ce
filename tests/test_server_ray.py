"""run_inference_server.py --ray on one machine: a local Ray cluster started by the server process
(it ends with it), two replicas of the demo model with one thread each behind Serve's router.
OpenAI's client sends concurrent chat requests, whole and streamed: all complete and both replicas
serve some (X-Bitnet-Replica). Then one replica's process is killed in the middle of a burst:
every request that had not started streaming still completes (a request on the dead replica fails
with a 5xx and the client's retry goes to the other: OpenAI's client retries 5xx), and Serve brings
the deployment back to two replicas. SIGTERM drains: replies in flight finish (checked on a
slower dummy model, whose replies outlast the start of the removal); the server exits 0 and no
process of its cluster is left. Skipped, saying why, where Ray Serve is not installed (the `ray` extra)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bitnet.model import default_model_path

openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 150  # a local cluster and two replicas: ~20 s here, more on a loaded machine
HEADER = "x-bitnet-replica"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under root (the cluster's daemons and workers)."""
    parent, cmdline = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = cmdline.get(child, "")
                frontier.append(child)
    return found


def _replica_pids(server: subprocess.Popen) -> list[int]:
    return [pid for pid, cmd in _descendants(server.pid).items() if cmd.startswith("ray::ServeReplica:bitnet")]


@contextlib.contextmanager
def ray_server_process(model: Path, replicas: int, ctx: int = 512):
    """run_inference_server.py --ray --replicas N (one thread, one slot each) on a free port:
    (process, URL, its log lines so far); stopped with SIGTERM after, and no process of its
    cluster may outlive it (any that does is killed: they are ours, under the process we started)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -e '.[ray]'")
    port = _free_port()
    argv = [sys.executable, "run_inference_server.py", "-m", str(model), "--ray", "--replicas", str(replicas),
            "-t", "1", "--parallel", "1", "-c", str(ctx), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    server = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        for line in server.stderr:
            log.append(line)
            if "listening on" in line:
                ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    cluster: dict[int, str] = {}
    try:
        t0 = time.monotonic()
        while not ready.wait(0.5):
            if server.poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail("the Ray Serve server did not start:\n" + "".join(log[-30:]))
        print(f"Ray Serve up in {time.monotonic() - t0:.1f} s")
        cluster = _descendants(server.pid)
        yield server, f"http://127.0.0.1:{port}", log
    finally:
        cluster.update(_descendants(server.pid))
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(90)
        except subprocess.TimeoutExpired:
            rc = None
            server.kill()
        time.sleep(2)
        leftovers = [pid for pid in cluster if _alive(pid)]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert rc == 0, "the server did not stop cleanly on SIGTERM:\n" + "".join(log[-30:])
        assert not leftovers, f"processes of the Ray cluster outlived the server: {[cluster[p] for p in leftovers]}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_server():
    with ray_server_process(default_model_path(), replicas=2) as running:
        yield running


# ---- flags and deployment options (no cluster) ----------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--ray-address", "auto"], "--ray-address needs --ray"),
    (["--ray", "--replicas", "2", "--max-replicas", "3"], "exclude each other"),
    (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "--max-replicas 2 is below --min-replicas 3"),
    (["--ray", "--replicas", "0"], "--replicas"),
])  # fmt: skip
def test_bad_ray_flags_are_one_line_errors(argv, message):
    argv = [sys.executable, "run_inference_server.py", "-m", str(default_model_path()), *argv]
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_deployment_options_follow_the_flags():
    from bitnet.server.ray_serve import RayOptions, deployment_options
    from bitnet.server.settings import ServerSettings

    settings = ServerSettings(model_path="m.gguf", n_threads=2, n_parallel=3)
    fixed = deployment_options(settings, RayOptions(replicas=4))
    assert fixed["num_replicas"] == 4 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2} and fixed["max_ongoing_requests"] == 6
    auto = deployment_options(settings, RayOptions(min_replicas=1, max_replicas=5))
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 5, "target_ongoing_requests": 3}
    assert "num_replicas" not in auto and auto["graceful_shutdown_timeout_s"] > 0


# ---- a local cluster -------------------------------------------------------------------------------------
def _client(url: str, failures: list | None = None):
    """OpenAI's client (it retries a 5xx or a dropped connection, up to max_retries times); the
    statuses of failed attempts are appended to failures."""
    import httpx

    def note(response: httpx.Response) -> None:
        if response.status_code >= 500 and failures is not None:
            failures.append(response.status_code)

    http = httpx.Client(event_hooks={"response": [note]}, timeout=60)
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=4, timeout=60, http_client=http)


def _chat(client, i: int, stream: bool, max_tokens: int, streaming: threading.Event | None = None) -> dict:
    """One request; what it got and which replica served it. A stream whose 200 response has begun
    (the server sends it with the role chunk as soon as the replica takes the request) and then
    breaks raises StreamBroken: that one may be lost with its replica."""
    messages = [{"role": "user", "content": f"Tell me about letter {i}."}]
    raw = client.chat.completions.with_raw_response.create(model="bitnet", messages=messages, max_tokens=max_tokens,
                                                           temperature=0, stream=stream)
    replica = raw.headers.get(HEADER)
    if not stream:
        reply = raw.parse()
        return {"replica": replica, "text": reply.choices[0].message.content, "finish": reply.choices[0].finish_reason}
    text, finish, n_tokens = "", None, 0
    try:
        for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                n_tokens += 1
                if streaming is not None:
                    streaming.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    except Exception as exc:
        raise StreamBroken(replica, n_tokens, exc) from exc
    if finish is None:
        raise StreamBroken(replica, n_tokens, RuntimeError("the stream ended without a finish reason"))
    return {"replica": replica, "text": text, "finish": finish}


class StreamBroken(Exception):
    def __init__(self, replica: str | None, n_tokens: int, cause: Exception):
        super().__init__(f"stream from replica {replica} broken after {n_tokens} tokens: {cause!r}")
        self.replica = replica


def test_two_replicas_serve_concurrent_requests(ray_server):
    server, url, _ = ray_server
    assert len(_replica_pids(server)) == 2
    client = _client(url)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _chat(client, i, stream=i % 2 == 1, max_tokens=24), range(16)))
    assert all(r["finish"] == "length" and r["text"] for r in results)
    replicas = {r["replica"] for r in results}
    assert None not in replicas and len(replicas) == 2, replicas
    # Greedy and exact: the same request gets the same reply from either replica, whole or streamed.
    again = [_chat(client, i, stream=i % 2 == 0, max_tokens=24) for i in range(4)]
    assert [r["text"] for r in again] == [r["text"] for r in results[:4]]


def test_killed_replica_loses_no_request_that_had_not_started_streaming(ray_server):
    server, url, _ = ray_server
    failures: list[int] = []
    client = _client(url, failures)
    before = _replica_pids(server)
    assert len(before) == 2
    seen_before = {_chat(client, i, stream=False, max_tokens=2)["replica"] for i in range(6)}
    n, streaming = 16, threading.Event()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(_chat, client, 100 + i, i % 2 == 1, 320, streaming) for i in range(n)]
        # Mid-burst: a reply is streaming, both replicas are busy and most requests wait in the router.
        assert streaming.wait(60), "no reply started streaming"
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(timeout=120))
            except StreamBroken as exc:
                outcomes.append(exc)
    # Lost: only streams already begun on the killed replica, at most the 2 it may hold (a slot + one
    # waiting); every other request completed, retried on the other replica if it had hit the dead one.
    lost = [o for o in outcomes if isinstance(o, StreamBroken)]
    assert len(lost) <= 2 and len({o.replica for o in lost}) <= 1, [str(o) for o in lost]
    completed = [o for o in outcomes if isinstance(o, dict)]
    assert len(completed) + len(lost) == n and all(o["finish"] == "length" for o in completed)
    print(f"after a replica was killed: {len(completed)} of {n} completed, {len(lost)} streams cut mid-reply, "
          f"{len(failures)} attempts answered {sorted(set(failures))} and retried")
    assert failures or lost, "the kill hit no request: the burst was over before it"

    # Serve replaces the dead replica: two again, and the new one serves.
    deadline = time.monotonic() + 90
    while True:
        pids = _replica_pids(server)
        if len(pids) == 2 and victim not in pids:
            ids = {_chat(client, i, stream=False, max_tokens=2)["replica"] for i in range(8)}
            if len(ids) == 2 and ids - seen_before:
                break
        if time.monotonic() > deadline:
            pytest.fail(f"the deployment did not recover to two serving replicas: pids {pids}")
        time.sleep(1)


def test_sigterm_drains_the_requests_in_flight(tmp_path):
    """SIGTERM removes the deployment the way a scale-down removes a replica: no new requests, and
    those it holds (a streaming reply and one waiting for the slot) finish. A 125M-shaped dummy
    model (~95 tokens/s at one thread here) keeps them running while the removal starts."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -e '.[ray]'")
    from bitnet.convert.dummy import generate

    model = generate(tmp_path / "dummy-125m.gguf", "125M", progress=False)
    with ray_server_process(model, replicas=1, ctx=1024) as (server, url, log):
        streaming, client = threading.Event(), _client(url)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = [pool.submit(_chat, client, i, True, 300, streaming) for i in range(2)]
            assert streaming.wait(60), "no reply started streaming"
            server.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while not any("Deleting app" in line for line in log):
                assert time.monotonic() < deadline, "the server did not start removing its deployment"
                time.sleep(0.05)
            assert not any(r.done() for r in replies), "the replies ended before the removal began"
            results = [r.result(timeout=120) for r in replies]
        assert [r["finish"] for r in results] == ["length", "length"]
        assert server.wait(90) == 0
