"""Requests aiohttp's HTTP parser refuses, and bodies that do not decode, against a real server.

What: CONTRACT §7.12 "every answer is ours": a request line or header over 8 KiB, bad chunked
framing (in the first packet and mid-body), `Content-Length: abc`, both Content-Length and
Transfer-Encoding, an unknown `Content-Encoding` (`br`), gzip/deflate bodies that fail to decode
(in the first packet and mid-body), a bad method, TLS bytes on the HTTP port.
How: exact bytes over a raw socket (asyncio.open_connection to 127.0.0.1) to one `tally serve`;
each answer must be a 4xx with Content-Type application/json, the §3.14 envelope (type by status,
retryable false) and an X-Request-Id equal to error.request_id; the message must not echo the
request's bytes (an oversized header may be a key). At the end: the refused writes left no
customer, the server still serves, and its log holds no traceback.
How it could fail: aiohttp's text/plain 400 page, a 500 from gzip garbage read in the handler, a
handler waiting forever on a body the parser gave up on, a traceback per bad request in the log.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.codes import CODES
from tests.api.harness import API_KEY, Server, customer_path, deposit, request

HANG_S = 10.0  # hang detector for one exchange, not a performance bound
SECRET = "tly_secret_in_an_oversized_header_0123456789"
DEPOSIT = b"POST /v1/customers/deposit HTTP/1.1\r\n"
HEADERS = (f"Host: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n").encode()
BODY = b'{"customer_id": "edge_c", "amount": 5}'
GARBAGE = b"0123456789"


def _post(extra_headers: bytes, body: bytes) -> bytes:
    return DEPOSIT + HEADERS + extra_headers + b"\r\n" + body


# name -> (bytes sent at once, bytes sent after the server has read the first part, status)
CASES: dict[str, tuple[bytes, bytes, int]] = {
    "request line over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"", 400),
    "header over 8 KiB": (b"GET /health HTTP/1.1\r\nX-Key: " + SECRET.encode() * 200 + b"\r\n\r\n", b"", 400),
    "bad chunk size": (_post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"), b"", 400),
    "bad chunk size mid-body": (_post(b"Transfer-Encoding: chunked\r\n", b'5\r\n{"cus\r\n'), b"zz\r\nabc\r\n0\r\n\r\n", 400),
    "Content-Length: abc": (_post(b"Content-Length: abc\r\n", b""), b"", 400),
    "Content-Length and chunked": (_post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), b"", 400),
    "Content-Encoding br": (_post(b"Content-Encoding: br\r\nContent-Length: %d\r\n" % len(BODY), BODY), b"", 400),
    "gzip garbage": (_post(b"Content-Encoding: gzip\r\nContent-Length: 10\r\n", GARBAGE), b"", 400),
    "deflate garbage": (_post(b"Content-Encoding: deflate\r\nContent-Length: 10\r\n", GARBAGE), b"", 400),
    "gzip garbage mid-body": (_post(b"Content-Encoding: gzip\r\nContent-Length: 10\r\n", b""), GARBAGE, 400),
    "bad method": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", b"", 400),
    "TLS on the HTTP port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, b"", 400),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("edges") / "data")
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def exchange(port: int, first: bytes, rest: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One exchange: send `first`; with a `rest`, `first` also asks `Expect: 100-continue` and
    `rest` is sent only after the interim `100 Continue` (the handler is running and reading
    the body, so `rest` really arrives mid-body). Reads to EOF (a refusal closes) and returns
    (status, lower-case headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if rest:
            first = first.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n", 1)
        writer.write(first)
        await writer.drain()
        if rest:
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_S)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            writer.write(rest)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), HANG_S)
    except TimeoutError:
        pytest.fail("no answer: the server waits on a request it cannot read")
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def assert_envelope(status: int, headers: dict[str, str], body: bytes, expected_status: int) -> dict[str, Any]:
    assert status == expected_status, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "type", "message", "details", "retryable", "request_id"}, error
    assert CODES[error["code"]].status == status, error
    assert error["type"] == CODES[error["code"]].type
    assert error["retryable"] is False
    assert error["details"] == {}
    assert headers.get("x-request-id") == error["request_id"], (headers, error)
    return error


@pytest.mark.parametrize("name", list(CASES))
async def test_refused_request_gets_the_envelope(srv: Server, name: str) -> None:
    first, rest, expected = CASES[name]
    status, headers, body = await exchange(srv.port, first, rest)
    error = assert_envelope(status, headers, body, expected)
    assert error["code"] == "invalid_request"
    assert SECRET[:20] not in error["message"] and "aaaa" not in error["message"]


async def test_good_gzip_body_still_works(srv: Server) -> None:
    packed = gzip.compress(b'{"customer_id": "edge_gz", "amount": 3}')
    status, _, body = await exchange(srv.port, _post(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(packed), packed))
    assert status == 200, body
    assert json.loads(body)["customer_id"] == "edge_gz"


async def test_client_hanging_up_never_cancels_a_write(srv: Server) -> None:
    """handler_cancellation stays off: a deposit whose client leaves right after sending it is
    still applied (and logged) in full; the poll is bounded, a hang detector."""
    _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    body = b'{"customer_id": "edge_gone", "amount": 4}'
    writer.write(_post(b"Content-Length: %d\r\n" % len(body), body))
    await writer.drain()
    writer.close()
    for _ in range(200):
        reply = await asyncio.to_thread(request, srv.port, "GET", customer_path("edge_gone"))
        if reply.status == 200:
            assert reply.json()["balance"]["available"] == 4
            return
        await asyncio.sleep(0.05)
    pytest.fail("the deposit of a client that hung up was never applied")


def test_refusals_wrote_nothing_and_left_no_traceback(srv: Server) -> None:
    """Runs after the cases above (file order): nothing was created, the server still serves, and
    its log has neither a traceback nor the oversized header's secret."""
    reply = request(srv.port, "GET", customer_path("edge_c"))
    assert reply.status == 404 and reply.code == "customer_not_found", reply.body
    deposit(srv.port, "edge_after", 1)
    log = Path(srv.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert SECRET not in log
