"""net/answer.py JsonAnswer sends the bytes aiohttp's web.Response sends for the same JSON body.

Method: one aiohttp app on 127.0.0.1 with two routes answering the same body and status, one
through `JsonAnswer`, one through `web.Response(body=..., content_type="application/json")`, each
adding an X-Request-Id header after construction as net/observe.py does. Raw HTTP requests over a
socket (HTTP/1.1 keep-alive, Connection: close, HTTP/1.0, HEAD, an error status) read the whole
answer; the two answers must be byte-identical once the Date value is blanked. Fails if a header
is missing, added, reordered or spelled differently, or the status line or body differ.
"""

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from net.answer import JsonAnswer, json_headers

BODY = b'{"customer_id":"c","balance":{"total":5}}'
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def _app() -> web.Application:
    async def fast(request: web.Request) -> web.StreamResponse:
        response = JsonAnswer(BODY, int(request.query.get("status", "200")))
        response.headers["X-Request-Id"] = "req_1"
        return response

    async def plain(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=BODY, status=int(request.query.get("status", "200")), content_type="application/json")
        response.headers["X-Request-Id"] = "req_1"
        return response

    async def fast_added(request: web.Request) -> web.StreamResponse:  # net/observe.py's way
        response = JsonAnswer(BODY, int(request.query.get("status", "200")))
        response.add_header("X-Request-Id", "req_1")
        return response

    async def fast_read(request: web.Request) -> web.StreamResponse:  # headers read: the multidict is made
        response = JsonAnswer(BODY, int(request.query.get("status", "200")))
        assert response.headers["Content-Type"] == "application/json"
        response.add_header("X-Request-Id", "req_1")
        return response

    async def fast_headed(request: web.Request) -> web.StreamResponse:  # net/errors.py's way
        return JsonAnswer(BODY, int(request.query.get("status", "200")), json_headers(("X-Request-Id", "req_1")))

    async def plain_headed(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, status=int(request.query.get("status", "200")), content_type="application/json",
                            headers={"X-Request-Id": "req_1"})  # fmt: skip

    app = web.Application()
    app.add_routes([web.get("/fast", fast), web.get("/plain", plain), web.post("/fast", fast), web.post("/plain", plain),
                    web.get("/fast_headed", fast_headed), web.get("/plain_headed", plain_headed),
                    web.post("/fast_headed", fast_headed), web.post("/plain_headed", plain_headed),
                    web.get("/fast_added", fast_added), web.post("/fast_added", fast_added),
                    web.get("/fast_read", fast_read), web.post("/fast_read", fast_read)])  # fmt: skip
    return app


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner = web.AppRunner(_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _exchange(port: int, request: bytes) -> bytes:
    """Send `request` on a fresh connection; every byte answered until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        closes = b"Connection: close" in request or (b"HTTP/1.0" in request and b"keep-alive" not in request)
        if not closes:
            # keep-alive: read the head and the body it announces, then hang up
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1)) if b"Content-Length" in head else 0  # type: ignore[union-attr]
            body = await reader.readexactly(length) if b"HEAD " not in request else b""
            return head + body
        return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_line, extra",
    [
        (b"GET {path} HTTP/1.1", b""),
        (b"GET {path}?status=404 HTTP/1.1", b""),
        (b"GET {path}?status=503 HTTP/1.1", b""),
        (b"GET {path}?status=204 HTTP/1.1", b""),
        (b"GET {path}?status=304 HTTP/1.1", b""),
        (b"GET {path} HTTP/1.1", b"Connection: close\r\n"),
        (b"GET {path} HTTP/1.0", b""),
        (b"GET {path} HTTP/1.0", b"Connection: keep-alive\r\n"),
        (b"HEAD {path} HTTP/1.1", b""),
        (b"POST {path} HTTP/1.1", b"Content-Length: 2\r\n\r\n{}"),
    ],
)
@pytest.mark.parametrize("fast, plain", [(b"/fast", b"/plain"), (b"/fast_headed", b"/plain_headed"),
                                         (b"/fast_added", b"/plain"), (b"/fast_read", b"/plain")])  # fmt: skip
async def test_same_bytes_as_web_response(port: int, request_line: bytes, extra: bytes, fast: bytes, plain: bytes) -> None:
    answers = []
    for path in (fast, plain):
        head = request_line.replace(b"{path}", path) + b"\r\nHost: x\r\n"
        request = head + extra if extra.endswith(b"{}") else head + extra + b"\r\n"
        answer = await _exchange(port, request)
        assert _DATE.search(answer), answer
        answers.append(_DATE.sub(b"\r\nDate: -\r\n", answer))
    assert answers[0] == answers[1]
    assert answers[0].startswith(b"HTTP/1."), answers[0]
    if b"HEAD" not in request_line and b"status=204" not in request_line and b"status=304" not in request_line:
        assert answers[0].endswith(b"\r\n\r\n" + BODY)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(KeyError):
        JsonAnswer(BODY, 999)


async def test_header_injection_is_refused_as_aiohttp_does() -> None:
    """A header value with CR/LF never reaches the wire: the fast path leaves it to aiohttp,
    whose header serializer raises ValueError; aiohttp then cuts the connection, nothing sent."""
    app = web.Application()

    async def bad(request: web.Request) -> web.StreamResponse:
        response = JsonAnswer(BODY)
        response.add_header("X-Request-Id", "req_1\r\nSet-Cookie: x=1")
        return response

    app.add_routes([web.get("/bad", bad)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        answer = await _exchange(runner.addresses[0][1], b"GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await runner.cleanup()
    assert answer == b""
