"""Request hardening: who may talk to a keyless server, in what form, and how slowly.

- **Host and Origin** (only when no API key is set: a key is what a web page cannot have). A
  page on any site can make a browser send requests to http://127.0.0.1:8080, and with DNS
  rebinding (a name of the attacker's that resolves to 127.0.0.1) even read the answers. So the
  Host header must be an IP address, `localhost`, the name the server was started with
  (--host), or one of --allowed-hosts ('*' = any); and a request that carries an Origin must
  come from the server's own origin (its page at /) or one of --cors-origins.
- **JSON only**: a POST must say `Content-Type: application/json`. HTML forms and the "simple"
  requests a page can send without asking (text/plain, form encodings, none) are refused,
  so no page can post to the server behind the user's back.
- **Read timeouts**: the request headers must arrive within --header-timeout seconds of the
  connection (or of the first byte of the next request on a kept-alive one), else the
  connection is closed (HeaderTimeoutH11Protocol); the body must arrive within --body-timeout
  seconds of the request's start, else 408. So connections that trickle a byte at a time
  (slowloris) are dropped instead of held forever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from urllib.parse import urlsplit

import h11
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from bitnet.server.errors import error_response

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0


def _host_name(host_header: str) -> str:
    """The name or address of a Host header (or an Origin's netloc), without the port."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestHardening:
    """ASGI middleware: Host/Origin check (keyless servers) and the body deadline."""

    def __init__(self, app, *, keyless: bool, bind_host: str | None = None, allowed_hosts=(), cors_origins=(),
                 body_timeout_s: float = BODY_TIMEOUT_S):  # fmt: skip
        self.app, self.keyless, self.body_timeout_s = app, keyless, body_timeout_s
        names = {"localhost"} | {h.strip().lower() for h in allowed_hosts if h.strip()}
        if bind_host and not _is_ip(bind_host) and bind_host not in ("", "0.0.0.0", "::"):
            names.add(bind_host.lower())
        self.any_host = "*" in names
        self.allowed_hosts = frozenset(names)
        self.cors_origins = frozenset(o.rstrip("/").lower() for o in cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value.decode("latin-1"))
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            return await error_response(status, message, headers={"Connection": "close"})(scope, receive, send)
        started = False

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _with_body_deadline(receive, self.body_timeout_s), watched_send)
        except _BodyTimeout as e:
            if started:
                raise
            await error_response(408, str(e.detail), headers={"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope, headers: dict) -> tuple[int, str] | None:
        if self.keyless and scope["path"] != "/health":  # probes may name the server anyhow; it tells nothing
            host = _host_name(headers.get(b"host", ""))
            if not (self.any_host or _is_ip(host) or host in self.allowed_hosts):
                return 403, (f"host {host[:80]!r} is not allowed: this server answers requests for its address, "
                             "localhost or the names of --allowed-hosts (DNS rebinding defence)")
            origin = headers.get(b"origin")
            if origin is not None and not self._origin_allowed(origin, headers.get(b"host", "")):
                return 403, (f"requests from the web page of {origin[:80]!r} are not allowed (start the server "
                             "with --cors-origins or --api-key to allow them)")
        return None

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host_header.strip().lower()  # same origin


class JsonContentType:
    """ASGI middleware: 415 for a POST that is not `Content-Type: application/json` (inside the
    body cap, so an oversized body is a 413 whatever its type)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = next((v for k, v in scope.get("headers", ()) if k == b"content-type"), b"")
            if kind.split(b";", 1)[0].strip().lower() != b"application/json":
                message = "send the request body as JSON, with the header 'Content-Type: application/json'"
                return await error_response(415, message)(scope, receive, send)
        return await self.app(scope, receive, send)


class _BodyTimeout(HTTPException):
    pass


def _with_body_deadline(receive, timeout_s: float):
    """receive, held to a deadline until the body is complete (then as it was: a streaming
    response waits on it for the client's disconnect, for as long as it streams)."""
    deadline = time.monotonic() + timeout_s
    complete = False

    async def receive_before_deadline():
        nonlocal complete
        if complete:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise _BodyTimeout(408, f"the request body did not arrive within {timeout_s:g} s") from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return receive_before_deadline


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than
    header_timeout_s (uvicorn itself waits forever for headers that trickle in)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        self._header_timer = None
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        waiting = self.conn.their_state is h11.IDLE  # no complete request head yet
        if waiting and self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)
        elif not waiting:
            self._cancel_header_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutH11Protocol]:
    """The protocol class for uvicorn.Config(http=...) with this header timeout."""
    return type("HeaderTimeoutH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": seconds})
