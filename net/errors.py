"""The error envelope (CONTRACT §3.14), request ids, and `exception_response`, which applies both.

    HttpError                     an answer with a registered code (status from engine/core/codes.py)
      ClientError                 4xx: auth (401), shape (400, net/schemas), engine Rejected
    engine.runtime.errors.Unavailable     503 retryable: overloaded, storage_unavailable
    aiohttp web.HTTPException     404 not_found, 405 method_not_allowed, 413 request_too_large
    aiohttp HttpProcessingError   400 invalid_request: the parser refused the request line, a header,
      RequestPayloadError           the framing or the body's Content-Encoding (CONTRACT §7.12)
    ConnectionResetError          400 invalid_request: the client left before its body ended
    anything else                 500 server_error: a bug, logged with its request id

Requests the parser refuses before any handler runs are answered by net/server.py's protocol
subclass through `refusal_response`, with the same envelope and a fresh request id.

Every response, success or error, carries `X-Request-Id`; error bodies repeat it as
`error.request_id`. Envelope: {"error": {"code", "type", "message", "details", "retryable",
"request_id"}}; `details` is always an object ({} when there is nothing to add).
"""

import itertools
import logging
import os
from typing import Any, Final

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import (
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestPayloadError

from engine.core.codes import CODES
from net.answer import JsonAnswer, json_headers
from engine.runtime.errors import Unavailable

logger = logging.getLogger("tally.net")

REQUEST_ID_HEADER: Final = "X-Request-Id"
# The code of an error response, kept on the response object for the request log line
# (net/observe.py); never sent.
ERROR_CODE: Final = web.ResponseKey("code", str)

class HttpError(Exception):
    """An error answer: a registered contract `code` (engine/core/codes.py decides its status,
    type and retryable), a human `message`, a `details` object or None."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = CODES[code].status  # KeyError: an unregistered code is a bug
        self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.details!r})"


class ClientError(HttpError):
    """A 4xx answer, raised by parsing (net/schemas.py), auth and the handlers."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, details)
        assert 400 <= self.status <= 499, code


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


def error_response(code: str, message: str, details: dict[str, Any] | None, request_id: str) -> web.Response:
    """The §3.14 envelope for a registered code; status, type and retryable from the registry."""
    info = CODES[code]
    envelope = _ErrorEnvelope(
        _ErrorInfo(
            code=code,
            type=info.type,
            message=message,
            details={} if details is None else details,
            retryable=info.retryable,
            request_id=request_id,
        )
    )
    response = JsonAnswer(_encoder.encode(envelope), info.status, json_headers((REQUEST_ID_HEADER, request_id)))
    response[ERROR_CODE] = code
    return response


# aiohttp raises these from the router (404, 405) and from request.read() (413); any other 4xx
# it raises is a request it could not read.
_HTTP_EXCEPTION_CODES: Final = {
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
    413: ("request_too_large", "request body is over the size limit"),
}
_UNREADABLE: Final = ("invalid_request", "the request could not be read")


def _http_exception_response(exc: web.HTTPException, request_id: str) -> web.Response:
    if exc.status < 400:  # not raised by our routes; answer it as aiohttp would, with an id
        exc.headers[REQUEST_ID_HEADER] = request_id
        return web.Response(status=exc.status, headers=exc.headers)
    code, message = _HTTP_EXCEPTION_CODES.get(exc.status, _UNREADABLE)
    details: dict[str, Any] | None = None
    if isinstance(exc, web.HTTPMethodNotAllowed):
        details = {"method": exc.method, "allowed": sorted(exc.allowed_methods)}
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = exc.text or message  # "Maximum request body size 65536 exceeded."
    response = error_response(code, message, details, request_id)
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


# What the client hears when aiohttp could not read its request (CONTRACT §7.12). Fixed texts:
# aiohttp's own messages echo up to 100 bytes of the offending line, which may be a key.
_UNREADABLE_MESSAGES: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (LineTooLong, "the request line or a header is over the size limit"),
    (ContentEncodingError, "the body's Content-Encoding is not supported or the body does not decode"),
    (TransferEncodingError, "the chunked body is malformed"),
    (ContentLengthError, "the body ended before its Content-Length"),
    (BadStatusLine, "the request line is malformed"),
    (InvalidHeader, "a header is malformed"),
    (ConnectionResetError, "the connection closed before the request body ended"),
)
_REASON_LENGTH_MAX: Final = 100


def unreadable_message(exc: BaseException | None) -> str:
    """A safe human message for a request aiohttp could not read: `exc` is the parser's
    HttpProcessingError, a RequestPayloadError caused by one, or a ConnectionResetError."""
    if isinstance(exc, RequestPayloadError) and exc.__cause__ is not None:
        exc = exc.__cause__
    for kind, message in _UNREADABLE_MESSAGES:
        if isinstance(exc, kind):
            return message
    if isinstance(exc, HttpProcessingError):
        # llhttp's reason ("Invalid character in Content-Length:") is the first line; a line that
        # quotes the request's bytes (b'...') is not repeated.
        reason = exc.message.split("\n", 1)[0].strip().rstrip(":")
        if reason and len(reason) <= _REASON_LENGTH_MAX and "'" not in reason and '"' not in reason:
            return f"the request is malformed: {reason}"
    return _UNREADABLE[1]


def refusal_response(status: int, exc: BaseException | None, request_id: str) -> web.Response:
    """The envelope for a request aiohttp refused before or while reading it (CONTRACT §7.12):
    `status` as aiohttp chose it (400 for parser errors, 413 too large, 5xx a failure of ours)
    becomes 400 invalid_request, 413 request_too_large or 500 server_error. The connection is
    closed after the answer: its byte stream cannot be trusted any further."""
    if status >= 500:
        response = error_response("server_error", "internal server error", None, request_id)
    elif status == 413:
        response = error_response("request_too_large", _HTTP_EXCEPTION_CODES[413][1], None, request_id)
    else:
        response = error_response(_UNREADABLE[0], unreadable_message(exc), None, request_id)
    response.force_close()
    return response


def exception_response(exc: Exception, request: web.Request, request_id: str) -> web.Response:
    """The §3.14 answer to what a handler raised (`request_id` its id, already stamped on it).

    A plain function, not a middleware or a wrapping coroutine: net/observe.py's request handler
    awaits the route's handler itself and calls this from its `except` (issue 14: each layer is on
    the hot path)."""
    if isinstance(exc, HttpError):
        return error_response(exc.code, exc.message, exc.details, request_id)
    if isinstance(exc, Unavailable):
        return error_response(exc.code, exc.message, None, request_id)
    if isinstance(exc, web.HTTPException):
        return _http_exception_response(exc, request_id)
    if isinstance(exc, (HttpProcessingError, RequestPayloadError, ConnectionResetError)):
        # The body could not be read: bad chunking, gzip/deflate garbage, or the client left
        # (then nobody hears this answer; aiohttp drops it). Never a 500 (CONTRACT §7.12).
        logger.info("unreadable request body, request_id=%s: %s", request_id, unreadable_message(exc))
        return refusal_response(400, exc, request_id)
    # A bug: no input may reach this branch (CONTRACT §3.14).
    # No path: it may hold a customer id (an email, say); the request line has the route.
    logger.error("unhandled error, request_id=%s %s", request_id, request.method, exc_info=exc)
    return error_response("server_error", "internal server error", None, request_id)
