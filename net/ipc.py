"""The front <-> ledger wire of `tally serve --workers N` (issue 14): framing and messages.

A frame is a 4-byte big-endian length then a msgpack array of messages (msgspec, tagged
array_like Structs). One frame carries every message one side produced during one event-loop turn
(at most BATCH_MESSAGES_MAX), so a burst of N requests costs one write and one read each way,
not N. Frames over FRAME_BYTES_MAX are a protocol error (the connection is closed: fail-stop).
Each end is a Connection (an asyncio Protocol): the frames that one read brings are decoded and
handled in that callback, with no reader task woken per frame.

Front -> ledger:  Hello(index)           first message of a connection
                  Write(id, command)     Runtime.submit(command): the write, validated by the front,
                                         in the very form the ledger applies (no op wrapper)
                  Call(id, op)           any other Runtime call; op is one of the *Op Structs below
                  KeysAck(seq)           the front applied Keys(seq)
                  MetricsPush(seq, ...)  its HTTP counters, answering CollectMetrics(seq)
Ledger -> front:  Oks(ids, bodies)       the OK answers of plain writes, one message per batch
                                         (bodies: the JSON bytes of each response Struct)
                  Reply(id, kind, ...)   kind OK (body: the JSON bytes of the response Struct),
                                         REJECTED (code, message, details), UNAVAILABLE (503 code,
                                         message), FAILED (message: an unexpected error, 500)
                  Status(...)            readiness, durable LSN, recovery progress, gate open
                  Keys(seq, full, ...)   the API-key table (full) or changed records (CONTRACT §9.2)
                  CollectMetrics(seq)    send your HTTP counters now (GET /metrics, §9.4)
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any, Final, cast

import msgspec

from engine.core.commands import AnyCommand
from engine.core.queries import LedgerFilters
from engine.core.reads import AnyRead
from engine.core.state import ApiKey

FRAME_BYTES_MAX: Final = 256 * 1024 * 1024  # a batch of large ledger pages still fits; anything more is a bug
BATCH_MESSAGES_MAX: Final = 256  # messages per frame; a fuller outbox is flushed at once
_HEADER: Final = struct.Struct(">I")


class FrameError(Exception):
    """A frame over FRAME_BYTES_MAX or one that does not decode: the peer is broken."""


class Msg(msgspec.Struct, tag_field="m", array_like=True, frozen=True):
    """Base of every message."""


class Op(msgspec.Struct, tag_field="op", array_like=True, frozen=True):
    """Base of every Runtime call (net/handlers.py Runtime protocol, one Struct per method)."""


class GetCustomer(Op, tag="get_customer", frozen=True):
    project: str
    customer_id: str


class GetLedger(Op, tag="get_ledger", frozen=True):
    project: str
    customer_id: str
    limit: int
    cursor: str | None
    filters: LedgerFilters


class ListCustomers(Op, tag="list_customers", frozen=True):
    project: str
    limit: int
    cursor: str | None
    prefix: str | None


class GetAlerts(Op, tag="get_alerts", frozen=True):
    project: str
    customer_id: str


class Read(Op, tag="read", frozen=True):
    read: AnyRead


class ListProjects(Op, tag="list_projects", frozen=True):
    pass


class ListKeys(Op, tag="list_keys", frozen=True):
    project: str | None


class ListWebhooks(Op, tag="list_webhooks", frozen=True):
    project: str | None


class ListDeliveries(Op, tag="list_deliveries", frozen=True):
    webhook_id: str
    limit: int
    cursor: str | None


class Metrics(Op, tag="metrics", frozen=True):
    """GET /metrics: the reply body is the Prometheus text of the ledger and every front."""


AnyOp = (
    GetCustomer | GetLedger | ListCustomers | GetAlerts | Read | ListProjects | ListKeys | ListWebhooks
    | ListDeliveries | Metrics
)  # fmt: skip


class FrontCounters(msgspec.Struct, array_like=True, frozen=True):
    """One front's HTTP counters (net/observe.py Observer): requests [(route, method, status,
    count)], durations [(route, bucket counts (not cumulative, +Inf last), sum seconds)]."""

    requests: list[tuple[str, str, int, int]]
    durations: list[tuple[str, list[int], float]]


class Hello(Msg, tag="hello", frozen=True):
    index: int


class Call(Msg, tag="call", frozen=True):
    id: int
    op: AnyOp


class Write(Msg, tag="write", frozen=True):
    """Runtime.submit(command) (the hot path: one Struct per write, not a Call holding an op)."""

    id: int
    command: AnyCommand


class KeysAck(Msg, tag="keys_ack", frozen=True):
    seq: int


class MetricsPush(Msg, tag="metrics_push", frozen=True):
    seq: int
    counters: FrontCounters


OK: Final = 0
REJECTED: Final = 1
UNAVAILABLE: Final = 2
FAILED: Final = 3


class Reply(Msg, tag="reply", frozen=True):
    id: int
    kind: int
    body: bytes = b""
    code: str = ""
    message: str = ""
    details: dict[str, Any] | None = None


class Oks(Msg, tag="oks", frozen=True):
    """The OK answers of a batch of plain writes: call ids[i]'s response body is bodies[i] (JSON
    bytes). One message for a whole batch instead of a Reply Struct per call; at most
    BATCH_MESSAGES_MAX answers each (the lists are filled by the ledger before it sends)."""

    ids: list[int]
    bodies: list[bytes]


class Status(Msg, tag="status", frozen=True):
    """`open`: recovery and bootstrap are done and every front has said hello (serve requests);
    `ready`: what GET /health says once open (Runtime.ready); `records`: replayed so far."""

    open: bool
    ready: bool
    durable_lsn: int
    records: int


class Keys(Msg, tag="keys", frozen=True):
    """`full`: replace the table with `keys` (and the project set with `projects`); otherwise
    upsert `keys` and add `projects`. The front answers KeysAck(seq)."""

    seq: int
    full: bool
    keys: list[ApiKey]
    projects: list[str]


class CollectMetrics(Msg, tag="collect_metrics", frozen=True):
    seq: int


FrontMsg = Hello | Write | Call | KeysAck | MetricsPush
LedgerMsg = Oks | Reply | Status | Keys | CollectMetrics


def frame(encoder: msgspec.msgpack.Encoder, messages: list[Any]) -> bytearray:
    """The bytes of one frame holding `messages` (header included), encoded in place after the
    header (no second copy of the payload to prepend it)."""
    buffer = bytearray(_HEADER.size)
    encoder.encode_into(messages, buffer, _HEADER.size)
    size = len(buffer) - _HEADER.size
    if size > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {size} bytes over {FRAME_BYTES_MAX}")
    _HEADER.pack_into(buffer, 0, size)
    return buffer


class Connection(asyncio.Protocol):
    """One end of a front <-> ledger socket. Incoming frames are decoded and handed to
    `on_messages` (the list of one frame, in order) straight from data_received: no reader task,
    no future per frame. `outbox` sends; `closed` resolves when the connection ends: None at a
    clean end between frames, else the error (FrameError, a decode error, a cut frame, the OS
    error). A frame that does not decode closes the connection (fail-stop)."""

    def __init__(self, decoder: msgspec.msgpack.Decoder[Any], on_messages: Callable[[Any], None]) -> None:
        self._decoder = decoder
        self._on_messages = on_messages
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.outbox = Outbox()
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.outbox.attach(self._transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
        try:
            used = self._deliver(buffer if buffer else data)
        except (FrameError, msgspec.DecodeError) as error:
            self._fail(error)
            return
        if buffer:
            del buffer[:used]
        elif used < len(data):
            buffer += memoryview(data)[used:]

    def _deliver(self, source: bytes | bytearray) -> int:
        """Hand every complete frame in `source` to on_messages; the bytes they took."""
        start, end, size_max = 0, len(source), FRAME_BYTES_MAX
        with memoryview(source) as view:
            while end - start >= _HEADER.size:
                (size,) = _HEADER.unpack_from(source, start)
                if size > size_max:
                    raise FrameError(f"frame of {size} bytes over {size_max}")
                stop = start + _HEADER.size + size
                if stop > end:
                    break
                messages = self._decoder.decode(view[start + _HEADER.size:stop])
                start = stop
                self._on_messages(messages)
        return start

    def eof_received(self) -> bool:
        if self._buffer:
            self._fail(FrameError(f"the peer closed the connection inside a frame ({len(self._buffer)} bytes)"))
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.outbox.closed = True
        if not self.closed.done():
            self.closed.set_result(exc)

    def _fail(self, error: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        self.outbox.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Send what is waiting, then close (the peer sees a clean end of stream)."""
        self.outbox.flush()
        if self._transport is not None:
            self._transport.close()


async def connect(sock: socket.socket, connection: Connection) -> None:
    """Run `connection` over a connected Unix stream socket (one end of a socketpair)."""
    await asyncio.get_running_loop().create_unix_connection(lambda: connection, sock=sock)


class Outbox:
    """Messages to send, flushed as one frame at the end of this loop turn (or at once when
    BATCH_MESSAGES_MAX are waiting, or when the owner calls flush; `put` queues for an owner
    that flushes itself); what is sent before the
    transport is attached waits for it. `closed` once the transport is gone: later sends are
    dropped."""

    __slots__ = ("_transport", "_loop", "_encoder", "_pending", "_scheduled", "closed")

    def __init__(self) -> None:
        self._transport: asyncio.WriteTransport | None = None
        self._loop = asyncio.get_running_loop()  # kept: get_running_loop() costs a getpid() each
        self._encoder = msgspec.msgpack.Encoder()
        self._pending: list[Any] = []
        self._scheduled = False
        self.closed = False

    def send(self, message: Any) -> None:
        if self.closed:
            return
        pending = self._pending
        pending.append(message)
        if len(pending) >= BATCH_MESSAGES_MAX:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def send_later(self) -> None:
        """Flush at the end of this loop turn what `put` queued (as `send` does)."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def put(self, message: Any) -> None:
        """Queue `message` without scheduling a flush: the caller calls `flush` itself before it
        yields to the loop (the ledger's resolver, which answers a whole group commit at once:
        no loop callback per front and turn)."""
        if not self.closed:
            self._pending.append(message)

    def attach(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self.closed or self._transport is None:
            return
        messages, self._pending = self._pending, []
        if self._transport.is_closing():
            self.closed = True
            return
        self._transport.write(frame(self._encoder, messages))
