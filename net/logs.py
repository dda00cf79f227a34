"""Logs on stderr (CONTRACT §9.4): JSON lines by default, `--log-format text` for people.

    configure_logging(fmt, level)   the root logger: lifecycle lines (recovery progress, snapshots,
                                    timers fired, fail-stop) through the standard `logging` module
    RequestLog(fmt, fd)             one line per request, encoded by hand-off to msgspec and
                                    written in batches (one write per FLUSH_INTERVAL_S at most)

Shapes (JSON; one object per line, `ts` in seconds since the Unix epoch, UTC):

    {"ts": 1764461400.123, "level": "info", "logger": "tally.snapshots", "msg": "snapshot published lsn=42 ..."}
    {"ts": 1764461400.125, "level": "info", "logger": "tally.request", "msg": "request",
     "request_id": "req_…", "method": "POST", "route": "/v1/billing/deduct", "status": 200,
     "code": null, "duration_ms": 0.412}

What a line may hold is decided here and in net/observe.py, never by a caller's free text: a
request line has the route TEMPLATE (never the raw path, which holds customer ids), the error
code (never its message) and no header, body, key or email.

Cost: the stdlib `logging` path takes ~10 µs a record, too much for every request at 15k req/s;
request lines skip it (a tuple appended per request; at each flush, one msgspec encode_lines call
for all of them) and reach stderr in one `os.write` per flush. Lines not yet flushed are lost if the process is SIGKILLed (<= 20 ms of them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Final, TextIO

import msgspec

LOG_FORMATS: Final = ("json", "text")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
FLUSH_INTERVAL_S: Final = 0.02
FLUSH_LINES_MAX: Final = 512  # flush at once past this many buffered lines (~100 KiB)


class _Line(msgspec.Struct, omit_defaults=True):
    ts: float
    level: str
    logger: str
    msg: str
    exc: str | None = msgspec.field(default=None)


class _RequestLine(msgspec.Struct):
    ts: float
    level: str
    logger: str
    msg: str
    request_id: str
    method: str
    route: str
    status: int
    code: str | None
    duration_ms: float


_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """A `logging` record as one JSON object (no trailing newline; the handler adds it)."""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        line = _Line(round(record.created, 3), record.levelname.lower(), record.name, record.getMessage(), exc)
        return _encoder.encode(line).decode()


TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Point the root logger at `stream` (stderr) in `log_format` ("json" | "text") at `level`
    ("debug" | "info" | "warning" | "error"). Replaces any handler set before (idempotent)."""
    assert log_format in LOG_FORMATS and level in LOG_LEVELS, (log_format, level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


class RequestLog:
    """One line per request on file descriptor `fd` (2: stderr), written in batches.

    `line(...)` is called on the event loop once per response and only keeps the fields (a
    tuple); a flush is scheduled on the loop FLUSH_INTERVAL_S later (or done at once past
    FLUSH_LINES_MAX lines); `flush()` formats and writes what is buffered, JSON lines in one
    msgspec call (call it at shutdown). Never raises: a failed write drops the lines it held.
    """

    __slots__ = ("_fd", "_json", "_lines", "_scheduled")

    def __init__(self, log_format: str, fd: int = 2) -> None:
        assert log_format in LOG_FORMATS, log_format
        self._fd = fd
        self._json = log_format == "json"
        self._lines: list[tuple[float, str, str, str, int, str | None, float]] = []
        self._scheduled: asyncio.TimerHandle | None = None

    def line(self, request_id: str, method: str, route: str, status: int, code: str | None, duration_s: float) -> None:
        """Buffer one request line: ids, the route template, status, error code, duration."""
        lines = self._lines
        lines.append((time.time(), request_id, method, route, status, code, duration_s))
        if len(lines) >= FLUSH_LINES_MAX:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        """Write every buffered line now (one os.write in practice)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        data = _json_lines(lines) if self._json else _text_lines(lines)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            pass  # stderr closed or full disk: the ledger keeps serving; the lines are lost


def _json_lines(lines: list[tuple[float, str, str, str, int, str | None, float]]) -> bytes:
    # Millisecond rounding by int(): round(x, 3) goes through a correctly rounded decimal
    # conversion, ~2x the cost, twice a line (issue 14); the two differ only where x * 1000 lies
    # within a rounding error of a half (then by 1 µs of duration or 1 ms of ts).
    return _encoder.encode_lines([
        _RequestLine(int(now * 1000 + 0.5) / 1000, "info", "tally.request", "request", request_id, method, route,
                     status, code, int(duration_s * 1_000_000 + 0.5) / 1000)
        for now, request_id, method, route, status, code, duration_s in lines
    ])  # fmt: skip


def _text_lines(lines: list[tuple[float, str, str, str, int, str | None, float]]) -> bytes:
    out = []
    for now, request_id, method, route, status, code, duration_s in lines:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        out.append(f"{stamp},{int(now * 1000) % 1000:03d} INFO tally.request {request_id} {method} {route} "
                   f"{status} {code or '-'} {duration_s * 1000:.3f}ms\n")  # fmt: skip
    return "".join(out).encode()
