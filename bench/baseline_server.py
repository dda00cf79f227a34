"""The bare baseline: aiohttp + uvloop + msgspec with no ledger, no WAL, no fsync.

It does what machine-limits.md §2 measured, so every Tally row can be read as a fraction of
"the HTTP stack alone" on this machine:

- POST (any path): `await request.read()`, decode the JSON body into a 5-field `msgspec.Struct`,
  update a balance in a dict, encode a 9-field response Struct (about 200 bytes).
- GET (any path): a pre-encoded body of about 200 bytes.
- GET /health: 200, so bench/run.py can wait for it like it waits for Tally.

    python -m bench.baseline_server --host 127.0.0.1 --port 8080 [--processes 2]

`--processes N` (issue 14): N identical processes on the same port with SO_REUSEPORT (this one and
N-1 children it starts with subprocess and stops on SIGTERM), the bare counterpart of
`tally serve --workers N`.

`--hop` (issue 14): the floor of that split. The balance update moves to a hub process (started
first, a child like the others) that every HTTP process reaches over a Unix socket, as a front
reaches the ledger: a POST's (customer, amount) joins its process's frame for this loop turn, one
frame per turn, the hub answers a frame with one frame of balances. `--hop-fsync`: the hub first
writes the frames of each read to a log with O_DSYNC (preallocated, synced zeros, as Tally's WAL
segments; one write per read: group commit), so no answer leaves before its write is on disk.
Nothing else is added (no ledger, no parsing beyond the bare handler's): with both flags, about
the most `tally serve --workers N`, which does all of this and a ledger's work besides, can
reach on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import uvloop
from aiohttp import web


class BaselineRequest(msgspec.Struct):
    customer_id: str
    amount: int
    transaction_id: str = ""
    wallet: str = "default"
    description: str | None = None


class BaselineResponse(msgspec.Struct):
    transaction_id: str
    customer_id: str
    deducted_amount: int
    balance: int
    wallet: str
    source: str
    credit_type: str
    deducted_at: str
    is_idempotent_replay: bool


_DECODER = msgspec.json.Decoder(BaselineRequest)
_ENCODER = msgspec.json.Encoder()
_JSON = "application/json"
_GET_BODY = _ENCODER.encode({
    "customer_id": "c-1234", "balance": {"total": 1000000000000, "available": 999999999990,
    "frozen": 10, "used": 0}, "accounts": [], "wallets": {"default": 999999999990},
    "name": None, "email": None, "metadata": {}, "created_at": "2026-05-15T10:00:00.000Z",
})
_HEALTH_BODY = b'{"status":"ok"}'


_LENGTH = struct.Struct("=I")  # a hop frame: its length, then msgpack
_HopCall = tuple[str, int]  # (customer_id, amount) -> the new balance
_HOP_CALLS = msgspec.msgpack.Decoder(list[_HopCall])
_HOP_BALANCES = msgspec.msgpack.Decoder(list[int])
_MSGPACK = msgspec.msgpack.Encoder()


class _Frames(asyncio.Protocol):
    """Length-prefixed frames in both directions over one stream; `on_frames(payloads)` once per
    read with every whole frame it completed."""

    def __init__(self, on_frames: Callable[[list[bytes]], None]) -> None:
        self._on_frames = on_frames
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        payloads = []
        while len(buffer) - offset >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if len(buffer) - offset - _LENGTH.size < length:
                break
            start = offset + _LENGTH.size
            payloads.append(bytes(buffer[start : start + length]))
            offset = start + length
        del buffer[:offset]
        if payloads:
            self._on_frames(payloads)

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.writelines((_LENGTH.pack(len(payload)), payload))


class _HubLog:
    """The durable hub's log: each read's frames in one O_DSYNC write into preallocated, synced
    zeros (as Tally's WAL segments are), wrapping around at the end; nothing ever reads it."""

    SIZE_BYTES = 64 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o600)
        zeros = bytes(1024 * 1024)
        for _ in range(self.SIZE_BYTES // len(zeros)):
            os.write(self._fd, zeros)
        os.fsync(self._fd)
        self._offset = 0

    def write(self, data: bytes) -> None:
        if self._offset + len(data) > self.SIZE_BYTES:
            self._offset = 0
        os.pwrite(self._fd, data, self._offset)  # durable when it returns (O_DSYNC)
        self._offset += len(data)


async def _serve_hub(path: str, log: _HubLog | None) -> None:
    """The hub: every frame of calls -> one frame of balances, in order (the ledger's place);
    with `log`, the frames of one read are written to it, durably, before they are answered."""
    balances: dict[str, int] = {}

    def connection() -> _Frames:
        def on_frames(payloads: list[bytes]) -> None:
            replies = []
            for payload in payloads:
                out = []
                for customer_id, amount in _HOP_CALLS.decode(payload):
                    balance = balances.get(customer_id, 10**12) - amount
                    balances[customer_id] = balance
                    out.append(balance)
                replies.append(_MSGPACK.encode(out))
            if log is not None:
                log.write(b"".join(payloads))
            for reply in replies:
                frames.send(reply)

        frames = _Frames(on_frames)
        return frames

    server = await asyncio.get_running_loop().create_unix_server(connection, path)
    await _until_signalled()
    server.close()


class _HopClient:
    """An HTTP process's side of the hub: calls of one loop turn leave as one frame."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._calls: list[_HopCall] = []
        self._waiting: list[asyncio.Future[int]] = []  # the frames in flight, in order
        self._pending: list[asyncio.Future[int]] = []
        self._frames = _Frames(self._on_frames)

    async def connect(self, path: str) -> None:
        await self._loop.create_unix_connection(lambda: self._frames, path)

    def call(self, customer_id: str, amount: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        if not self._calls:
            self._loop.call_soon(self._flush)
        self._calls.append((customer_id, amount))
        self._pending.append(future)
        return future

    def _flush(self) -> None:
        self._frames.send(_MSGPACK.encode(self._calls))
        self._waiting.extend(self._pending)
        self._calls, self._pending = [], []

    def _on_frames(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            balances = _HOP_BALANCES.decode(payload)
            answered, self._waiting = self._waiting[: len(balances)], self._waiting[len(balances) :]
            for future, balance in zip(answered, balances):
                if not future.done():  # (a handler cancelled meanwhile)
                    future.set_result(balance)


def create_app(hop: _HopClient | None = None) -> web.Application:
    balances: dict[str, int] = {}

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        req = _DECODER.decode(body)
        if hop is None:
            balance = balances.get(req.customer_id, 10**12) - req.amount
            balances[req.customer_id] = balance
        else:
            balance = await hop.call(req.customer_id, req.amount)
        reply = BaselineResponse(
            transaction_id=req.transaction_id, customer_id=req.customer_id,
            deducted_amount=req.amount, balance=balance, wallet=req.wallet, source="default",
            credit_type=req.wallet, deducted_at="2026-05-15T10:00:00.000Z",
            is_idempotent_replay=False,
        )
        return web.Response(body=_ENCODER.encode(reply), content_type=_JSON)

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=_GET_BODY, content_type=_JSON)

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=_HEALTH_BODY, content_type=_JSON)

    app = web.Application()
    app.add_routes([
        web.get("/health", health),
        web.post("/{tail:.*}", post),
        web.get("/{tail:.*}", get),
    ])
    return app


async def _serve(host: str, port: int, reuse_port: bool, hub: str | None) -> None:
    hop = None
    if hub is not None:
        hop = _HopClient()
        await hop.connect(hub)
    runner = web.AppRunner(create_app(hop), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    try:
        await _until_signalled()
    finally:
        await runner.cleanup()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _start_hub(path: str, log_path: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.baseline_server", "--serve-hub", path]
    hub = subprocess.Popen([*argv, "--hub-log", log_path] if log_path else argv)
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if hub.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the hub did not start (exit {hub.poll()})")
        time.sleep(0.01)
    return hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--processes", type=int, default=1, help="N processes with SO_REUSEPORT (this one included)")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (set for --processes > 1)")
    parser.add_argument("--hop", action="store_true", help="each POST's balance update crosses to a hub process")
    parser.add_argument("--hub", help=argparse.SUPPRESS)  # a child's way to the hub (set by --hop)
    parser.add_argument("--hop-fsync", action="store_true",
                        help="with --hop: the hub writes each read's frames durably (O_DSYNC) before answering")
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)  # be the hub, on this Unix socket path
    parser.add_argument("--hub-log", help=argparse.SUPPRESS)  # the hub's durable log (set by --hop-fsync)
    args = parser.parse_args()
    if args.serve_hub:
        uvloop.run(_serve_hub(args.serve_hub, _HubLog(Path(args.hub_log)) if args.hub_log else None))
        return
    if args.port is None:
        parser.error("--port is required")
    if args.hop_fsync and not args.hop:
        parser.error("--hop-fsync needs --hop")
    reuse_port = args.reuse_port or args.processes > 1
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tally-hub-") as scratch:
        hub = args.hub
        if args.hop:
            hub = str(Path(scratch) / "hub.sock")
            children.append(_start_hub(hub, str(Path(scratch) / "hub.log") if args.hop_fsync else None))
        children += [
            subprocess.Popen([sys.executable, "-m", "bench.baseline_server", "--host", args.host, "--port",
                              str(args.port), "--reuse-port", *(("--hub", hub) if hub else ())])  # fmt: skip
            for _ in range(args.processes - 1)
        ]
        try:
            uvloop.run(_serve(args.host, args.port, reuse_port, hub))
        finally:
            for child in reversed(children):  # our own children, by PID; the hub last
                child.send_signal(signal.SIGTERM)
                child.wait(timeout=30)


if __name__ == "__main__":
    main()
