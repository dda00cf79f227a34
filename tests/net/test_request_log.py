"""net/logs.py RequestLog: one line per request, formatted and written in batches (CONTRACT §9.4).

What: the exact JSON shape of a line, the text format, a flush past FLUSH_LINES_MAX lines without
waiting for the timer, and the scheduled flush. How it could fail: a field dropped or renamed
when formatting moved to the flush, lines lost or duplicated across flushes.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from net.logs import FLUSH_INTERVAL_S, FLUSH_LINES_MAX, RequestLog


class _Sink:
    """A file the log writes to; `new()` returns what was written since the last call."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.path = path
        self.seen = 0

    def new(self) -> bytes:
        data = self.path.read_bytes()[self.seen :]
        self.seen += len(data)
        return data


async def test_json_lines_and_batches(tmp_path: Path) -> None:
    sink = _Sink(tmp_path / "log")
    try:
        log = RequestLog("json", sink.fd)
        log.line("req_1", "POST", "/v1/billing/deduct", 200, None, 0.0004124)
        log.line("req_2", "GET", "/v1/customers/{customer_id}", 404, "customer_not_found", 0.001)
        assert sink.new() == b""  # buffered until the timer fires
        await asyncio.sleep(FLUSH_INTERVAL_S * 3)
        lines = [json.loads(line) for line in sink.new().splitlines()]
        assert [{k: v for k, v in line.items() if k != "ts"} for line in lines] == [
            {"level": "info", "logger": "tally.request", "msg": "request", "request_id": "req_1", "method": "POST",
             "route": "/v1/billing/deduct", "status": 200, "code": None, "duration_ms": 0.412},
            {"level": "info", "logger": "tally.request", "msg": "request", "request_id": "req_2", "method": "GET",
             "route": "/v1/customers/{customer_id}", "status": 404, "code": "customer_not_found", "duration_ms": 1.0},
        ]  # fmt: skip
        assert all(isinstance(line["ts"], float) for line in lines)
        for i in range(FLUSH_LINES_MAX):  # the last one flushes at once, no timer needed
            log.line(f"req_b{i}", "POST", "/v1/billing/deduct", 200, None, 0.0)
        ids = [json.loads(line)["request_id"] for line in sink.new().splitlines()]
        assert ids == [f"req_b{i}" for i in range(FLUSH_LINES_MAX)]
        log.flush()
        assert sink.new() == b""
    finally:
        os.close(sink.fd)


async def test_text_lines(tmp_path: Path) -> None:
    sink = _Sink(tmp_path / "log")
    try:
        log = RequestLog("text", sink.fd)
        log.line("req_9", "POST", "/v1/billing/freeze", 409, "transaction_conflict", 0.0025)
        log.flush()
        text = sink.new().decode()
        assert text.endswith(" INFO tally.request req_9 POST /v1/billing/freeze 409 transaction_conflict 2.500ms\n")
        assert text.count("\n") == 1
    finally:
        os.close(sink.fd)
