"""JsonAnswer: an encoded JSON body as aiohttp's `web.Response` sends it, in fewer steps (issue 14).

    JsonAnswer(body, status=200)   `body` the encoded JSON bytes; Content-Type application/json
    JsonAnswer(body, status, json_headers(("X-Request-Id", rid)))   headers first, Content-Type last,
                                   as web.Response(headers={...}, content_type=...) orders them

What goes on the wire is what `web.Response(body=body, status=status, content_type="application/json")`
sends: the same status line, the same headers in the same order (Content-Type, then any the
caller adds, e.g. X-Request-Id, then Content-Length, Date, Server, and Connection: close when the
connection will not be kept) and the same body. What it leaves out per answer, for the usual
request (HTTP/1.1, not HEAD):

    Response.__init__'s argument checks, header dict copy and body/charset setters
    StreamResponse._start's three awaited steps (_prepare_headers, the request's _prepare_hook,
      _write_headers) and Response._start's Content-Length recomputation
    the compression, cookie, chunking and empty-body checks for things it never has

Anything else (HTTP/1.0, HEAD, a response someone compressed or gave cookies) goes through
aiohttp's own `_start`, unchanged. The app must have no on_response_prepare signal (that is what
the skipped _prepare_hook would send): net/transport.py TallyRunner asserts it.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict

JSON_CONTENT_TYPE: Final = "application/json"
_JSON_HEADERS: Final = ((hdrs.CONTENT_TYPE, JSON_CONTENT_TYPE),)
_STATUS_LINES: Final = {status: f"HTTP/1.1 {status} {reason}" for status, reason in REASON_PHRASES.items()}


def json_headers(*headers: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """`headers`, then Content-Type: application/json: JsonAnswer's `headers` argument."""
    return (*headers, (hdrs.CONTENT_TYPE, JSON_CONTENT_TYPE))


class JsonAnswer(web.Response):
    """A finished JSON answer: status and encoded body fixed at construction (see the module
    docstring). Raises KeyError for a status that is not a registered HTTP status."""

    def __init__(self, body: bytes, status: int = 200, headers: tuple[tuple[str, str], ...] = _JSON_HEADERS) -> None:
        # web.Response.__init__ for (body=bytes, status, content_type=JSON), without its checks:
        # the attributes StreamResponse.__init__ and Response.__init__ set.
        self._state: dict[str | web.ResponseKey[Any], Any] = {}
        self._headers = CIMultiDict(headers)
        self._status = status
        self._reason = REASON_PHRASES[status]
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def _start(self, request: web.BaseRequest) -> AbstractStreamWriter:
        """Response._start + StreamResponse._start for HTTP/1.1, not HEAD, nothing compressed,
        no cookies: the same headers, one awaited step (the writer's write_headers)."""
        if (
            request.version != HttpVersion11
            or request.method == hdrs.METH_HEAD
            or self._compression
            or self._cookies
            or self._chunked
            or self._must_be_empty_body
        ):
            return await super()._start(request)
        self._req = request
        writer = self._payload_writer = request._payload_writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        body = self._body
        assert type(body) is bytes, type(body)
        length = len(body)
        headers[hdrs.CONTENT_LENGTH] = str(length)
        writer.length = length
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if not keep_alive and hdrs.CONNECTION not in headers:
            headers[hdrs.CONNECTION] = "close"
        await writer.write_headers(_STATUS_LINES[self._status], headers)
        return writer
