"""JsonAnswer: an encoded JSON body as aiohttp's `web.Response` sends it, in fewer steps (issue 14).

    JsonAnswer(body, status=200)   `body` the encoded JSON bytes; Content-Type application/json
    JsonAnswer(body, status, json_headers(("X-Request-Id", rid)))   headers first, Content-Type last,
                                   as web.Response(headers={...}, content_type=...) orders them
    answer.add_header(name, value) a header after those (net/observe.py: X-Request-Id), as
                                   `answer.headers[name] = value`, without making the multidict

What goes on the wire is what `web.Response(body=body, status=status, content_type="application/json")`
sends: the same status line, the same headers in the same order (Content-Type, then any the
caller adds, e.g. X-Request-Id, then Content-Length, Date, Server, and Connection: close when the
connection will not be kept) and the same body. What it leaves out per answer, for the usual
request (HTTP/1.1, not HEAD):

    Response.__init__'s argument checks, header dict copy and body/charset setters
    the header CIMultiDict itself: the headers stay a tuple (`_fields`) unless someone reads
      `headers` (then __getattr__ makes the multidict once and aiohttp's path below is taken)
    prepare: head and body formatted and written in one transport write, in place of
      StreamResponse._start's three awaited steps (_prepare_headers, the request's
      _prepare_hook, _write_headers), the header serializer, and write_eof's three coroutines
      (Response's, StreamResponse's, the writer's) and drain; the write_eof aiohttp calls
      after finds the answer sent
    the compression, cookie, chunking and empty-body checks for things it never has

Anything else (HTTP/1.0, HEAD, 1xx/204/304, a header value with a control character, headers
read, a response someone compressed or gave cookies) goes through `_start` below (fewer steps,
headers in the multidict) or aiohttp's own, unchanged. The app must have no on_response_prepare signal (that is what
the skipped _prepare_hook would send): net/transport.py TallyRunner asserts it.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict

JSON_CONTENT_TYPE: Final = "application/json"
_JSON_HEADERS: Final = ((hdrs.CONTENT_TYPE, JSON_CONTENT_TYPE),)
_STATUS_LINES: Final = {status: f"HTTP/1.1 {status} {reason}" for status, reason in REASON_PHRASES.items()}
_EMPTY_BODY_STATUSES: Final = frozenset((204, 304))  # (and 1xx): aiohttp sends no body
_STATUS_HEADS: Final = {status: line + "\r\n" for status, line in _STATUS_LINES.items()}
# The last headers aiohttp adds (after Content-Length and Date), and the blank line
_SERVER_TAIL: Final = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()
_SERVER_CLOSE_TAIL: Final = f"Server: {SERVER_SOFTWARE}\r\nConnection: close\r\n\r\n".encode()


def json_headers(*headers: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """`headers`, then Content-Type: application/json: JsonAnswer's `headers` argument."""
    return (*headers, (hdrs.CONTENT_TYPE, JSON_CONTENT_TYPE))


class JsonAnswer(web.Response):
    """A finished JSON answer: status and encoded body fixed at construction (see the module
    docstring). Raises KeyError for a status that is not a registered HTTP status."""

    # aiohttp's _handle_request asks every answer getattr(resp, "__http_exception__", False): found
    # here, it never reaches __getattr__ (whose AttributeError would cost more than the lookup).
    __http_exception__: Final = False

    def __init__(self, body: bytes, status: int = 200, headers: tuple[tuple[str, str], ...] = _JSON_HEADERS) -> None:
        # web.Response.__init__ for (body=bytes, status, content_type=JSON), without its checks:
        # the attributes StreamResponse.__init__ and Response.__init__ set, but the header
        # multidict, which `_fields` stands for until someone asks for it (__getattr__).
        self._state: dict[str | web.ResponseKey[Any], Any] = {}
        self._fields: tuple[tuple[str, str], ...] | None = headers
        self._status = status
        self._reason = REASON_PHRASES[status]
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    def __getattr__(self, name: str) -> Any:
        """Only for an attribute not set: `_headers`, the CIMultiDict of `_fields`, made the
        first time aiohttp or a caller reads `headers` (the fast path never does)."""
        if name != "_headers":
            raise AttributeError(name)
        fields = self._fields
        assert fields is not None, "made once, then an attribute"
        self._fields = None
        headers = self._headers = CIMultiDict(fields)
        return headers

    def add_header(self, name: str, value: str) -> None:
        """Add a header this answer does not have yet (net/observe.py: X-Request-Id), after the
        others, as `response.headers[name] = value` does, without making the multidict."""
        fields = self._fields
        if fields is None:
            self._headers[name] = value
        else:
            self._fields = (*fields, (name, value))

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        """StreamResponse.prepare + write_eof in one step for HTTP/1.1, not HEAD, headers never
        read, nothing compressed, chunked or cookied: the same bytes in one transport write, so
        aiohttp's write_eof that follows has nothing left to do. Anything else: aiohttp's way."""
        fields = self._fields
        writer = request._payload_writer
        if (
            fields is None
            or self._eof_sent
            or self._payload_writer is not None
            or request.version != HttpVersion11
            or request.method == hdrs.METH_HEAD
            or self._compression
            or self._cookies
            or self._chunked
            or self._status < 200
            or self._status in _EMPTY_BODY_STATUSES
            or type(writer) is not StreamWriter
            or writer._compress is not None
            or writer._on_headers_sent is not None
            or writer._on_chunk_sent is not None
            or writer.on_body_write is not None
        ):
            return await super().prepare(request)
        self._must_be_empty_body = False  # not HEAD, not 1xx, 204 or 304
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        head = _STATUS_HEADS[self._status]
        for name, value in fields:
            if not (name.isprintable() and value.isprintable()):  # aiohttp's way refuses it (ValueError)
                return await super().prepare(request)
            head += f"{name}: {value}\r\n"
        body = self._body
        assert type(body) is bytes, type(body)
        head += f"Content-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}\r\n"
        writer.length = len(body)
        writer._write(head.encode() + (_SERVER_TAIL if keep_alive else _SERVER_CLOSE_TAIL) + body)
        if writer._protocol._paused:  # as StreamWriter.write_eof: wait while the client is slow
            await writer.drain()
        writer._eof = True
        # what StreamResponse.write_eof leaves behind
        self._eof_sent = True
        self._body_length = writer.output_size
        return writer

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
