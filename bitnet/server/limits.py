"""The request body cap: 413 for a body over max_bytes, whether it declares its length or comes
in chunks. The body is read here, up to the cap and no further, before any route sees it, so
that no handler, parser or middleware below can be made to buffer more."""

from __future__ import annotations

from bitnet.server.errors import error_response


class RequestBodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await self._too_large(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its request
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        replayed = False

        async def replay():
            # the body once, then the connection's own messages (the disconnect handlers wait for)
            nonlocal replayed
            if not replayed:
                replayed = True
                return whole
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(413, f"the request body is over the limit of {self.max_bytes} bytes",
                                  code="request_too_large", headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses a malformed length before we get here
    return None
