"""HTTP errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so that the
official clients raise their typed exceptions (BadRequestError, AuthenticationError, ...) with
our one-line message. No handler ever sends a traceback to a client."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from bitnet.cli.common import one_line

log = logging.getLogger("bitnet.server")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
               413: "invalid_request_error", 415: "invalid_request_error", 500: "server_error",
               503: "server_error"}  # fmt: skip


class ApiError(Exception):
    """An error to answer with: status, one-line message, and optionally the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, one_line(message), param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": one_line(message), "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """One line naming the first bad field and what it should be; the field's dotted path."""
    if not errors:
        return "the request is not valid", None
    first = errors[0]
    loc = _public_loc(first.get("loc", ()))
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    value = first.get("input")
    shown = ""
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        shown = f", got {value!r}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{param + ': ' if param else ''}{msg}{shown}{more}", param


def json_error_text(exc: ValueError) -> str:
    """Why json.loads refused a body, in our words (Python's own advice is for programmers)."""
    text = str(exc)
    if "integer string conversion" in text:
        return "an integer has more than 4300 digits"
    return text[:200]


# Parts of a pydantic error location that name its internals (validator functions, the members
# of a union) rather than a field of the request.
_INTERNAL_LOC = re.compile(r"^(function-[\w-]+(\[.*\])?|[a-z-]+\[.*\]|str|int|float|bool|list|dict|none)$")


def _public_loc(loc) -> list[str]:
    return [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _INTERNAL_LOC.match(p))]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def _invalid(request: Request, exc):
        message, param = validation_message(list(exc.errors()))
        return error_response(400, message, param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
