"""The error envelope (CONTRACT §3.14), request ids, and the middleware that applies both.

    HttpError                     an answer with a status and a contract code
      ClientError                 4xx: auth (401), shape (400, net/schemas), engine Rejected
    engine.runtime.errors.Unavailable     503 retryable: overloaded, storage_unavailable
    aiohttp web.HTTPException     404 not_found, 405 method_not_allowed, 413 request_too_large
    anything else                 500 server_error: a bug, logged with its request id

Every response, success or error, carries `X-Request-Id`; error bodies repeat it as
`error.request_id`. Envelope: {"error": {"code", "type", "message", "details", "retryable",
"request_id"}}; `details` is always an object ({} when there is nothing to add).
"""

import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from engine.runtime.errors import Unavailable

logger = logging.getLogger("tally.net")

REQUEST_ID_HEADER: Final = "X-Request-Id"

TYPE_BY_STATUS: Final = {
    400: "bad_request",
    401: "auth_error",
    403: "permission_denied",
    404: "not_found",
    405: "bad_request",  # the contract names no type for 405; it is the client's mistake
    409: "conflict",
    413: "bad_request",
    422: "unprocessable",
    429: "rate_limited",
    500: "server_error",
    503: "server_error",
}
RETRYABLE_STATUSES: Final = frozenset({429, 503})


class HttpError(Exception):
    """An error answer: `status`, contract `code`, human `message`, `details` object or None."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r}, {self.details!r})"


class ClientError(HttpError):
    """A 4xx answer. net/schemas returns these (parsing is pure); handlers raise them."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        assert 400 <= status <= 499, status
        super().__init__(status, code, message, details)


# -- request ids ----------------------------------------------------------------------------------

# "req_" + 8 hex chosen at random once per process + 12 hex of a counter: unique across restarts
# (with overwhelming probability) and within a process, without a syscall per request.
_REQUEST_ID_PREFIX: Final = "req_" + os.urandom(4).hex()
_request_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter) & 0xFFFF_FFFF_FFFF:012x}"


# -- the envelope ---------------------------------------------------------------------------------


class _ErrorInfo(msgspec.Struct):
    code: str
    type: str
    message: str
    details: dict[str, Any]
    retryable: bool
    request_id: str


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorInfo


_encoder = msgspec.json.Encoder()


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None, request_id: str
) -> web.Response:
    envelope = _ErrorEnvelope(
        _ErrorInfo(
            code=code,
            type=TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "bad_request"),
            message=message,
            details={} if details is None else details,
            retryable=status in RETRYABLE_STATUSES,
            request_id=request_id,
        )
    )
    return web.Response(
        status=status,
        body=_encoder.encode(envelope),
        content_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )


# aiohttp raises these from the router (404, 405) and from request.read() (413).
_HTTP_EXCEPTION_CODES: Final = {
    400: ("invalid_request", "the request could not be read"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("request_too_large", "request body is over the size limit"),
}


def _http_exception_response(exc: web.HTTPException, request_id: str) -> web.Response:
    status = exc.status
    code, message = _HTTP_EXCEPTION_CODES.get(status, ("http_error", exc.reason))
    details: dict[str, Any] | None = None
    if isinstance(exc, web.HTTPMethodNotAllowed):
        details = {"method": exc.method, "allowed": sorted(exc.allowed_methods)}
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = exc.text or message  # "Maximum request body size 65536 exceeded."
    if status < 400:  # not raised by our routes; answer it as aiohttp would, with an id
        exc.headers[REQUEST_ID_HEADER] = request_id
        return web.Response(status=status, headers=exc.headers)
    response = error_response(status, code, message, details, request_id)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stamp a request id on every response; turn every exception into the error envelope."""
    request_id = new_request_id()
    try:
        response = await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, request_id)
    except Unavailable as exc:
        return error_response(503, exc.code, exc.message, None, request_id)
    except web.HTTPException as exc:
        return _http_exception_response(exc, request_id)
    except Exception:
        # A bug: no input may reach this branch (CONTRACT §3.14).
        logger.exception("unhandled error, request_id=%s %s %s", request_id, request.method, request.path)
        return error_response(500, "server_error", "internal server error", None, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
