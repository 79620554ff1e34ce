"""Helpers for the server tests (no tests here): a real uvicorn server on a free 127.0.0.1 port in
a background thread, with the app in this process so that tests can slow its engine down or
make it fail; and small HTTP utilities."""

from __future__ import annotations

import contextlib
import functools
import threading
import time

import httpx
import pytest

from bitnet.server.settings import ServerSettings

pytest.importorskip("fastapi")

# The bound for a client that leaves: its slot is free within 1 s. The tests poll for
# that with extra slack, since a loaded 2-core CI machine can stall any thread for a moment.
FREED_WITHIN_S = 1.0
LOADED_MACHINE_SLACK_S = 2.0


class LiveServer:
    """uvicorn serving create_app(settings) on 127.0.0.1:<free port>, in a thread."""

    def __init__(self, settings: ServerSettings, wait_ready: bool = True):
        import uvicorn

        from bitnet.server.app import create_app
        from bitnet.server.cli import bind_socket

        self.settings = settings
        self.app = create_app(settings)
        self._sock = bind_socket("127.0.0.1", 0)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        self._wait_listening()
        if wait_ready:
            self.wait_ready()

    @property
    def scheduler(self):
        return self.app.state.scheduler

    def headers(self) -> dict:
        keys = self.settings.api_keys
        return {"Authorization": f"Bearer {keys[0]}"} if keys else {}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=30, **kw)

    def openai(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=(self.settings.api_keys or ("none",))[0],
                             max_retries=0, timeout=30, **kw)

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.scheduler.state != "ready":
            if self.scheduler.state == "failed" or time.monotonic() > deadline:
                raise RuntimeError(f"the test server's model did not load: {self.scheduler.error}")
            time.sleep(0.01)

    def slots(self) -> list[dict]:
        return httpx.get(self.url + "/slots", headers=self.headers(), timeout=10).json()

    def wait_slots(self, predicate, timeout: float) -> float:
        """Poll /slots until predicate(slots) holds; the seconds it took (pytest.fail after timeout)."""
        t0 = time.monotonic()
        while True:
            slots = self.slots()
            if predicate(slots):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"/slots did not reach the expected state in {timeout:.1f} s: {slots}")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(20)
        self._sock.close()


@contextlib.contextmanager
def live_server(model_path, wait_ready: bool = True, **settings):
    settings.setdefault("n_threads", 1)  # two spinning threads on a shared 2-core machine are slower than one
    settings.setdefault("n_ctx", 256)
    server = LiveServer(ServerSettings(model_path=str(model_path), **settings), wait_ready=wait_ready)
    try:
        yield server
    finally:
        server.close()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def all_idle(slots: list[dict]) -> bool:
    return all(s["state"] == "idle" and s["job_id"] is None for s in slots)


def slowed(method, seconds: float):
    """method, sleeping first: makes the tiny model slow enough to disconnect in the middle."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        time.sleep(seconds)
        return method(*args, **kwargs)

    return wrapper


def sse_payloads(lines) -> list:
    """The JSON payloads of `data:` lines of an SSE stream, with "[DONE]" kept as a string."""
    import json

    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out
