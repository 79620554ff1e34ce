"""API keys: `Authorization: Bearer KEY` on every route but /health, compared in constant time.

Each key is stored as its SHA-256 and a presented key is hashed too, then compared with
hmac.compare_digest against every key (no early exit): neither a key's content nor its length
shows in the response time."""

from __future__ import annotations

import hashlib
import hmac

from bitnet.server.errors import error_response

OPEN_PATHS = frozenset({"/health"})  # load balancers probe it without credentials


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeyAuth:
    """ASGI middleware: 401 unless the request carries one of the keys (no keys: open server)."""

    def __init__(self, app, keys: tuple[str, ...] | list[str]):
        self.app = app
        self._digests = [_digest(k.encode("utf-8")) for k in keys]

    def accepts(self, presented: bytes | None) -> bool:
        given = _digest(presented or b"")
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(given, digest)
        return ok and presented is not None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self._digests or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.accepts(_bearer_token(scope)):
            return await self.app(scope, receive, send)
        response = error_response(401, "missing or invalid API key: send the header 'Authorization: Bearer KEY'",
                                  code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def _bearer_token(scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None
