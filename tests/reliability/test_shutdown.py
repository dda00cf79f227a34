"""SIGTERM while request bodies are still arriving (CONTRACT §5, §7.12) against a real server.

What: a request whose headers have arrived is read to its end and answered (200, or 503
`shutting_down` with the envelope) before exit; a client stalled mid-body is cut after a bounded
wait; an idle keep-alive connection is closed; the server then exits 0; a 200 given during the
drain survives the restart (CONTRACT §4), a 503 left nothing.
How: `tally serve` on 127.0.0.1 (a process this test started, signalled by its PID); raw sockets
send headers with `Expect: 100-continue` and half a body once the `100 Continue` shows the handler
is reading; SIGTERM; once the listening socket refuses connections (the shutdown has begun) one
client sends the rest of its body, the other stays silent. Bounds are hang detectors (HANG_S,
pytest.fail), not timing assertions.
How it could fail: the body's bytes dropped once shutdown starts (no answer, exit after aiohttp's
10 s shutdown timeout), a stalled client holding the exit, a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from engine.core.codes import CODES
from tests.api.harness import API_KEY, Server, customer_path, request

HANG_S = 8.0  # hang detector for each wait, generous: the contract's cut is at most 2 s
POLL_S = 0.02
T = TypeVar("T")


def _head(body_length: int) -> bytes:
    return (
        "POST /v1/customers/deposit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {body_length}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


async def _bounded(awaitable: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, HANG_S)
    except TimeoutError:
        pytest.fail(f"hang: {what}")


async def open_mid_body(port: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A deposit whose handler is reading its body, of which the first half has been sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head(len(body)))
    await writer.drain()
    interim = await _bounded(reader.readuntil(b"\r\n\r\n"), "no 100 Continue")
    assert interim.startswith(b"HTTP/1.1 100"), interim
    writer.write(body[: len(body) // 2])
    await writer.drain()
    return reader, writer


async def wait_until_not_listening(port: int) -> None:
    """The server closes its listening socket first thing on SIGTERM."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        await asyncio.sleep(POLL_S)
    pytest.fail("hang: the server kept listening after SIGTERM")


async def read_to_eof(reader: asyncio.StreamReader, what: str) -> bytes:
    try:
        return await _bounded(reader.read(), what)
    except ConnectionResetError:  # a cut may arrive as a reset
        return b""


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", len(body)))
    return int(status_line.split(" ")[1]), headers, body[:length]


def assert_answered(data: bytes) -> int:
    """200, or 503 shutting_down with the §3.14 envelope and its X-Request-Id."""
    assert data, "the request whose body was finishing got no answer"
    status, headers, body = parse(data)
    assert "x-request-id" in headers, headers
    if status != 200:
        assert status == 503, (status, body)
        error = json.loads(body)["error"]
        assert error["code"] == "shutting_down" and error["type"] == CODES["shutting_down"].type, error
        assert error["retryable"] is True
        assert error["request_id"] == headers["x-request-id"]
    return status


async def test_sigterm_answers_finishing_bodies_and_cuts_stalled_ones(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    server.start()
    try:
        proc = server.proc
        assert proc is not None
        finishing_body = b'{"customer_id": "term_fin", "amount": 7}'
        finisher = await open_mid_body(server.port, finishing_body)
        staller = await open_mid_body(server.port, b'{"customer_id": "term_stall", "amount": 9}')
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
        idle_writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await idle_writer.drain()
        await _bounded(idle_reader.readuntil(b'{"status":"ok"}'), "no /health answer")

        proc.send_signal(signal.SIGTERM)  # our own child, by PID
        await wait_until_not_listening(server.port)
        finisher[1].write(finishing_body[len(finishing_body) // 2 :])
        await finisher[1].drain()

        status = assert_answered(await read_to_eof(finisher[0], "the finishing request was not answered"))
        assert await read_to_eof(staller[0], "the stalled client was never cut") == b""
        assert await read_to_eof(idle_reader, "the idle connection was never closed") == b""
        try:
            exit_code = await asyncio.to_thread(proc.wait, HANG_S)
        except subprocess.TimeoutExpired:
            pytest.fail("hang: the server did not exit after SIGTERM")
        assert exit_code == 0, server.log()
        for writer in (finisher[1], staller[1], idle_writer):
            writer.close()

        server.proc = None
        server.start()
        reply = request(server.port, "GET", customer_path("term_fin"))
        if status == 200:  # answered during the drain: durable (CONTRACT §4)
            assert reply.status == 200 and reply.json()["balance"]["available"] == 7, reply.body
        else:  # refused: no trace (CONTRACT §7.1)
            assert reply.status == 404, reply.body
        assert request(server.port, "GET", customer_path("term_stall")).status == 404
        assert "Traceback" not in server.log_path.read_text(errors="replace")
    finally:
        server.kill()
