"""Server-sent events as OpenAI streams them: `data: {json}` per chunk, `data: [DONE]` at the end.

EventStreamResponse also watches the connection for the client leaving, even while nothing is
being sent (a prompt still in prefill, a request waiting for a slot), and says so at once
through on_disconnect; a plain StreamingResponse under ASGI 2.4 would only notice at its next
write."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import StreamingResponse

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies see traffic
KEEPALIVE_S = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no buffering in nginx & co


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None]):
        super().__init__(events, headers=HEADERS)
        self._on_disconnect = on_disconnect

    async def __call__(self, scope, receive, send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:  # the client went away in the middle of a write
                    self._on_disconnect()
                group.cancel_scope.cancel()

            async def watch() -> None:
                await self.listen_for_disconnect(receive)
                self._on_disconnect()
                group.cancel_scope.cancel()

            group.start_soon(stream)
            group.start_soon(watch)
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:  # run the generator's cleanup now, not whenever it is collected
            await close()
