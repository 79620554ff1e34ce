"""The chat page at `/`: static HTML, CSS and JavaScript shipped in this folder (no build step, no
CDN), served by an ASGI middleware ahead of the API-key check: the page holds no secret, it asks
the user for the key and sends it with each API call. A Content-Security-Policy lets the page
load and call nothing but this server, and no inline script, so text from the model (put on
the page with textContent) could not run even if it were ever parsed as HTML.

GET /webui/config.json tells the page whether to show the API-key field; the model's name is in
it only on a server without keys (with keys, naming the model is for those who hold one)."""

from __future__ import annotations

import json
from importlib import resources

from bitnet.server.settings import ServerSettings

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/webui/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
         "/webui/chat.css": ("chat.css", "text/css; charset=utf-8")}  # fmt: skip


def page_config(settings: ServerSettings) -> dict:
    config = {"api_key_required": bool(settings.api_keys), "max_tokens": settings.n_predict if settings.n_predict > 0
              else settings.n_ctx}  # fmt: skip
    if not settings.api_keys:
        config["model"] = settings.model_id
    return config


class WebUI:
    """ASGI middleware: answers GET/HEAD for the page's files, passes everything else on."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        folder = resources.files(__name__)
        self.files = {path: (folder.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in FILES.items()}
        self.files["/webui/config.json"] = (json.dumps(page_config(settings)).encode(), "application/json")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or scope.get("path") not in self.files:
            return await self.app(scope, receive, send)
        body, ctype = self.files[scope["path"]]
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()),
                   (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
