"""The ledger process answers a frame's writes as one batch (net/ledger_server.py, issue 14).

What: one frame from a front holding deposits, deducts (one refused), a read and a key create, on
a real Runtime in this process over a socket pair: every call gets its own exact reply; the plain
writes are applied in frame order as the frame is read, and none of their replies leaves before
the fdatasync of the log that holds them (CONTRACT §4); a key create still takes the slow path
(the front must ack the key table first) and is answered.
How it could fail: replies sent on apply instead of on durability, a reply lost or given another
call's id, writes reordered, or the key create answered without reaching the key table.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import threading
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from engine.core.commands import CreateApiKey, Deduct, Deposit
from engine.runtime import Runtime, RuntimeConfig
from net import ipc
from net.ledger_server import LedgerServer
from net.observe import Observer
from wal.appender import OsLogFile
from tests.wal.faults import WAIT_S, Gate

P = "proj"
T0_MS = 1_775_563_200_000  # a fixed clock: no timer ever falls due
LOOP_TURNS = 200  # loop turns given to anything that would wrongly complete


class FakeFront:
    """The front's end of the socket pair: says hello, sends frames, collects replies and acks
    every key-table change (as a front does, so a key create can be answered)."""

    def __init__(self) -> None:
        self.connection = ipc.Connection(msgspec.msgpack.Decoder(list[ipc.LedgerMsg]), self._on_frame)
        self.replies: dict[int, ipc.Reply] = {}

    async def connect(self, sock: socket.socket) -> None:
        await ipc.connect(sock, self.connection)
        self.send([ipc.Hello(0)])

    def send(self, messages: list[Any]) -> None:
        for message in messages:
            self.connection.outbox.send(message)
        self.connection.outbox.flush()

    def _on_frame(self, messages: list[ipc.LedgerMsg]) -> None:
        for message in messages:
            if type(message) is ipc.Oks:
                for call_id, body in zip(message.ids, message.bodies, strict=True):
                    self.replies[call_id] = ipc.Reply(call_id, ipc.OK, body=body)
            elif type(message) is ipc.Reply:
                self.replies[message.id] = message
            elif type(message) is ipc.Keys:
                self.send([ipc.KeysAck(message.seq)])

    async def until_replies(self, count: int) -> None:
        for _ in range(int(WAIT_S / 0.01)):
            if len(self.replies) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.replies)} of {count} replies")


async def _front(server: LedgerServer) -> tuple[FakeFront, asyncio.Task[None]]:
    ours, theirs = socket.socketpair()
    served = await server.attach(0, ours)
    front = FakeFront()
    await front.connect(theirs)
    return front, served


async def test_a_frame_of_writes_is_one_batch_answered_after_its_fsync(tmp_path: Path) -> None:
    gate = Gate()
    config = RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config, clock=lambda: T0_MS, log_file_factory=gate.factory)
    server = LedgerServer(1, Observer(CollectorRegistry(), None), kill_front=lambda index: None)
    front, served = await _front(server)
    try:
        await server.open(runtime)
        gate.close()
        calls = [
            ipc.Write(1, Deposit(at_ms=0, project=P, customer_id="c1", amount=100)),
            ipc.Write(2, Deduct(at_ms=0, project=P, customer_id="c1", amount=30, transaction_id="t1")),
            ipc.Write(3, Deduct(at_ms=0, project=P, customer_id="c1", amount=1000, transaction_id="t2")),
            ipc.Call(4, ipc.GetCustomer(P, "c1")),
            ipc.Write(5, CreateApiKey(at_ms=0, project=P, key_id="k2", key_hash="h" * 64)),
        ]
        last_lsn = runtime.state.last_lsn
        front.send(calls)
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)
        assert runtime.state.last_lsn == last_lsn + 3  # deposit, deduct, key: applied, not durable
        assert runtime.durable_lsn == last_lsn
        assert front.replies == {}, "a reply left before the fsync of what it shows"
        gate.open()
        await front.until_replies(len(calls))
        assert runtime.durable_lsn == runtime.state.last_lsn
    finally:
        gate.open()
        front.connection.close()
        await asyncio.gather(served, front.connection.closed)  # both end at the closed connection
        server.close()
        await runtime.close()
    _check(front.replies)


def _check(replies: dict[int, ipc.Reply]) -> None:
    assert {i: r.kind for i, r in replies.items()} == {1: ipc.OK, 2: ipc.OK, 3: ipc.REJECTED, 4: ipc.OK, 5: ipc.OK}
    assert json.loads(replies[1].body)["total_amount"] == 100
    deducted = json.loads(replies[2].body)
    assert (deducted["transaction_id"], deducted["deducted_amount"]) == ("t1", 30)
    assert (replies[3].code, replies[3].details) == (
        "insufficient_balance", {"wallet": None, "requested": 1000, "available": 70})
    balance = json.loads(replies[4].body)["balance"]
    assert (balance["total"], balance["used"], balance["available"]) == (100, 30, 70)
    assert json.loads(replies[5].body)["key_id"] == "k2"



class StuckThenFailing:
    """Log files whose fdatasync, once `armed`, waits for `release` and then fails (EIO): the
    WAL stops (fail-stop) with the batch in flight."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def factory(self, path: Path) -> Any:
        gate = self

        class File(OsLogFile):
            def fdatasync(self) -> None:
                if gate.armed:
                    gate.entered.set()
                    assert gate.release.wait(WAIT_S), "the test never released the fsync"
                    raise OSError(errno.EIO, "injected fdatasync failure")
                super().fdatasync()

        return File(path)


async def test_held_frames_of_every_front_answer_503_when_the_log_fails(tmp_path: Path) -> None:
    """Frames from two fronts wait for the log in one queue; the fsync that would cover them
    fails: every held call is answered 503 storage_unavailable (outcome unknown), none OK, none
    lost, each on its own front's connection."""
    log = StuckThenFailing()
    config = RuntimeConfig(data_dir=tmp_path, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config, clock=lambda: T0_MS, log_file_factory=log.factory)
    server = LedgerServer(2, Observer(CollectorRegistry(), None), kill_front=lambda index: None)
    fronts, served = [], []
    for index in range(2):
        ours, theirs = socket.socketpair()
        served.append(await server.attach(index, ours))
        front = FakeFront()
        await ipc.connect(theirs, front.connection)
        front.send([ipc.Hello(index)])
        fronts.append(front)
    try:
        await server.open(runtime)
        log.armed = True
        fronts[0].send([ipc.Write(1, Deposit(at_ms=0, project=P, customer_id="c1", amount=100))])
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)
        assert log.entered.wait(WAIT_S)  # the deposit's fsync is in flight, stuck
        fronts[1].send([ipc.Write(7, Deduct(at_ms=0, project=P, customer_id="c1", amount=1, transaction_id="t1"))])
        fronts[0].send([ipc.Write(2, Deduct(at_ms=0, project=P, customer_id="c1", amount=2, transaction_id="t2"))])
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)
        assert fronts[0].replies == {} and fronts[1].replies == {}, "a reply left before its fsync"
        log.release.set()
        await fronts[0].until_replies(2)
        await fronts[1].until_replies(1)
    finally:
        log.release.set()
        for front in fronts:
            front.connection.close()
        await asyncio.gather(*served)
        server.close()
        await runtime.close()
    outcomes = {(front, i): (r.kind, r.code) for front in (0, 1) for i, r in fronts[front].replies.items()}
    unavailable = (ipc.UNAVAILABLE, "storage_unavailable")
    assert outcomes == {(0, 1): unavailable, (0, 2): unavailable, (1, 7): unavailable}
