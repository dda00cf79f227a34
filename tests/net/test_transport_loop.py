"""net/transport.py _Connection.start: aiohttp's request loop without a Task per request.

Method: a small app served by TallyRunner (the production protocol) on 127.0.0.1, spoken to over
raw sockets: keep-alive and pipelined requests, a handler leaving its body unread, a handler that
raises, a client that hangs up mid-handler. Each answer is read whole and compared with what
aiohttp's own loop gives (status, body, order, connection kept or closed). The handler records
`asyncio.current_task()`: it must be the connection's task (request.task), which fails on
aiohttp's loop (a fresh Task per request). The first test fails when aiohttp's start() changes
(net/transport.py copies it, so a new aiohttp's loop must be read again before it is trusted).
"""

import asyncio
import hashlib
import inspect
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from net.observe import Observer
from net.transport import TallyRunner

# sha256 of aiohttp 3.14.5's web.RequestHandler.start source, the loop net/transport.py copies
AIOHTTP_START_SHA256 = "2e565fd40c8e04fb3afb481d5ba52691a61d28396573b4b8a4cf3b168782288e"


def test_aiohttp_start_is_the_one_copied() -> None:
    source = inspect.getsource(web.RequestHandler.start)
    assert hashlib.sha256(source.encode()).hexdigest() == AIOHTTP_START_SHA256, (
        "aiohttp's RequestHandler.start changed: compare it with net/transport.py _Connection.start/_serve")


class _Seen:
    def __init__(self) -> None:
        self.same_task: list[bool] = []
        self.finished = 0


def _app(seen: _Seen) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        seen.same_task.append(asyncio.current_task() is request.task)
        body = await request.read()
        return web.Response(body=b"echo:" + body)

    async def unread(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"unread")  # leaves the body for the loop to drain

    async def boom(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        seen.finished += 1
        return web.Response(body=b"slow")

    async def size(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.1)  # the body piles up past the high water mark meanwhile
        return web.Response(body=b"%d" % len(await request.read()))

    app = web.Application(client_max_size=2**21)
    app.add_routes([web.post("/size", size), web.post("/echo", echo), web.post("/unread", unread), web.get("/boom", boom), web.get("/slow", slow)])
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, _Seen]]:
    seen = _Seen()
    observer = Observer(CollectorRegistry(), None, runtime=object())
    runner = TallyRunner(_app(seen), observer=observer, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"Content-Length: (\d+)", head)
    assert match is not None, head
    return status, head, await reader.readexactly(int(match.group(1)))


def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (path, len(body), extra, body)


@asynccontextmanager
async def _connected(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw client connection to 127.0.0.1:`port`, closed on the way out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_keep_alive_and_pipelined_requests_answered_in_order(served: tuple[int, _Seen]) -> None:
    port, seen = served
    async with _connected(port) as (reader, writer):
        writer.write(_post(b"/echo", b"a"))
        assert (await _read_answer(reader))[2] == b"echo:a"
        writer.write(_post(b"/echo", b"b") + _post(b"/echo", b"cc") + _post(b"/echo", b"d"))  # pipelined
        bodies = [(await _read_answer(reader))[2] for _ in range(3)]
        assert bodies == [b"echo:b", b"echo:cc", b"echo:d"]
        writer.write(_post(b"/echo", b"e", b"Connection: close\r\n"))
        status, head, body = await _read_answer(reader)
        assert (status, body) == (200, b"echo:e") and b"Connection: close" in head
        assert await reader.read() == b""  # closed after the answer
    assert seen.same_task == [True] * 5  # handlers ran in the connection's own task


async def test_unread_body_is_drained_and_the_connection_kept(served: tuple[int, _Seen]) -> None:
    port, _ = served
    async with _connected(port) as (reader, writer):
        writer.write(_post(b"/unread", b"x" * 1000) + _post(b"/echo", b"next"))
        assert (await _read_answer(reader))[2] == b"unread"
        assert (await _read_answer(reader))[2] == b"echo:next"


async def test_a_handler_bug_is_a_500_envelope_and_the_connection_serves_on(served: tuple[int, _Seen]) -> None:
    port, _ = served
    async with _connected(port) as (reader, writer):
        writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, head, body = await _read_answer(reader)
        assert status == 500 and b'"code":"server_error"' in body and b"X-Request-Id: req_" in head
        writer.write(_post(b"/echo", b"after"))
        assert (await _read_answer(reader))[2] == b"echo:after"


async def test_a_client_that_hangs_up_does_not_cancel_its_handler(served: tuple[int, _Seen]) -> None:
    port, seen = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    for _ in range(100):
        if seen.finished:
            break
        await asyncio.sleep(0.02)
    assert seen.finished == 1  # CONTRACT §4/§7.12: a hang-up never cancels a handler half-way


async def test_a_body_past_flow_control_pauses_and_resumes_reading(served: tuple[int, _Seen]) -> None:
    """A body over the reader's high water (2 x 64 KiB) pauses reading while the handler reads
    it: _Connection.resume_reading must then resume it (it skips only when nothing is paused)."""
    port, _ = served
    async with _connected(port) as (reader, writer):
        body = b"x" * 1_500_000
        writer.write(_post(b"/size", body) + _post(b"/echo", b"then"))
        assert (await asyncio.wait_for(_read_answer(reader), 10))[2] == b"1500000"
        assert (await asyncio.wait_for(_read_answer(reader), 10))[2] == b"echo:then"
