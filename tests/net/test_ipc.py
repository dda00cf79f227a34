"""net/ipc.py frames and net/ledger_client.py's key replica, in-process (issue 14)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgspec
import pytest

from engine.core.commands import Deduct
from engine.core.keys import hash_api_key
from engine.core.reads import EntitlementEvents, SlotPools
from engine.core.results import Applied, Rejected
from engine.core.state import ApiKey
from engine.runtime import ADMIN
from net import ipc
from net.ledger_client import KeyReplica, LedgerClient


class _Received:
    """What a Connection handed over: each frame's messages, and how the connection ended."""

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []

    async def feed(self, chunks: list[bytes]) -> BaseException | None:
        """Write `chunks` (one write each) into a socket pair, then close it; the end's outcome."""
        ours, theirs = socket.socketpair()
        connection = ipc.Connection(msgspec.msgpack.Decoder(list[ipc.FrontMsg]), self.frames.append)
        await ipc.connect(ours, connection)
        with theirs:
            for chunk in chunks:
                theirs.sendall(chunk)
                for _ in range(20):  # let the loop read this chunk on its own
                    await asyncio.sleep(0)
        return await asyncio.wait_for(connection.closed, 10)


_CALLS = [
    ipc.Hello(1),
    ipc.Write(1, Deduct(at_ms=0, project="p", customer_id="c", amount=5, transaction_id="t")),
    ipc.Call(2, ipc.Read(SlotPools("p", "c", wallet=None))),
    ipc.Call(3, ipc.Read(EntitlementEvents("p", "c", limit=5, cursor=None, feature_key=None,
                                           types=frozenset({"set"}), from_ms=1, to_ms=None))),  # fmt: skip
    ipc.KeysAck(7),
]


async def test_a_batch_of_calls_is_one_frame_and_decodes_to_the_same_messages() -> None:
    data = ipc.frame(msgspec.msgpack.Encoder(), _CALLS)
    received = _Received()
    assert await received.feed([data + data]) is None  # a clean end between frames
    assert received.frames == [_CALLS, _CALLS]


async def test_frames_cut_anywhere_across_reads_decode_the_same() -> None:
    encoder = msgspec.msgpack.Encoder()
    data = ipc.frame(encoder, _CALLS) + ipc.frame(encoder, [ipc.KeysAck(8)]) + ipc.frame(encoder, _CALLS[:2])
    chunks = [data[:2], data[2:7], data[7:40], data[40:41], data[41:]]
    received = _Received()
    assert await received.feed(chunks) is None
    assert received.frames == [_CALLS, [ipc.KeysAck(8)], _CALLS[:2]]


class _Writes:
    """A write transport that records what is written (Outbox.attach takes any)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


async def test_put_waits_for_the_owners_flush_and_one_frame_carries_everything() -> None:
    outbox, transport = ipc.Outbox(), _Writes()
    outbox.attach(transport)  # type: ignore[arg-type]  # duck-typed: write and is_closing
    outbox.put(ipc.KeysAck(1))
    outbox.put(ipc.KeysAck(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.writes == []  # put schedules nothing
    outbox.flush()
    outbox.send(ipc.KeysAck(3))  # send schedules its own flush, at the end of this turn
    for _ in range(5):
        await asyncio.sleep(0)
    decoder = msgspec.msgpack.Decoder(list[ipc.FrontMsg])
    assert len(transport.writes) == 2
    for data, expected in zip(transport.writes, ([ipc.KeysAck(1), ipc.KeysAck(2)], [ipc.KeysAck(3)])):
        (size,) = struct.unpack_from(">I", data)
        assert size == len(data) - 4
        assert decoder.decode(data[4:]) == expected
    outbox.closed = True
    outbox.put(ipc.KeysAck(4))
    outbox.flush()
    assert len(transport.writes) == 2  # after the end nothing more is queued or sent


async def test_an_oversized_cut_or_garbled_frame_ends_the_connection() -> None:
    outcome = await _Received().feed([struct.pack(">I", ipc.FRAME_BYTES_MAX + 1)])
    assert isinstance(outcome, ipc.FrameError) and "over" in str(outcome)
    outcome = await _Received().feed([struct.pack(">I", 10) + b"abc"])
    assert isinstance(outcome, ipc.FrameError) and "inside a frame (7 bytes)" in str(outcome)
    received = _Received()
    outcome = await received.feed([ipc.frame(msgspec.msgpack.Encoder(), [ipc.KeysAck(1)]), struct.pack(">I", 2) + b"\xc1\xc1"])
    assert isinstance(outcome, msgspec.DecodeError)
    assert received.frames == [[ipc.KeysAck(1)]]  # what came before the bad frame was handled


def test_a_named_read_is_the_view_it_names() -> None:
    read = SlotPools("p", "c", wallet="w")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(read), type=SlotPools) == read


def test_key_replica_authenticates_like_the_runtime() -> None:
    replica = KeyReplica()
    key = ApiKey(key_id="k1", key_hash=hash_api_key("secret-1"), project="p")
    admin = ApiKey(key_id="k2", key_hash=hash_api_key("secret-2"), project="", admin=True)
    replica.apply(ipc.Keys(1, True, [key, admin], ["p"]))
    assert replica.authenticate("secret-1") == "p"
    assert replica.authenticate("secret-2") is ADMIN
    assert replica.authenticate("secret-1") == "p"  # again: the kept answer, until the table changes
    assert replica.authenticate("nope") == Rejected("invalid_api_key", "invalid API key")
    assert replica.has_project("p") and not replica.has_project("q")
    found = replica.find_key("k1")
    assert found is not None and found.key_id == "k1" and found.project == "p"
    assert replica.find_key("k2") is None  # an admin key is not managed by the admin API
    replica.apply(ipc.Keys(2, False, [msgspec.structs.replace(key, revoked=True)], ["p"]))
    result = replica.authenticate("secret-1")
    assert isinstance(result, Rejected) and result.code == "api_key_revoked"
    replica.apply(ipc.Keys(3, True, [], []))  # a full table replaces everything
    assert replica.authenticate("secret-2") == Rejected("invalid_api_key", "invalid API key")
    assert not replica.has_project("p")


async def test_a_front_resolves_each_write_from_its_batch_answer() -> None:
    """LedgerClient.submit sends the command itself (Write); one Oks answering three writes out
    of order, and a Reply refusing one, resolve each caller with its own answer."""
    ours, theirs = socket.socketpair()
    received: list[list[Any]] = []
    ledger = ipc.Connection(msgspec.msgpack.Decoder(list[ipc.FrontMsg]), received.append)
    await ipc.connect(ours, ledger)
    client = LedgerClient(0, on_open=lambda: None, on_records=lambda records: None,
                          counters=lambda: ipc.FrontCounters([], []))  # fmt: skip
    await client.connect(theirs)
    commands = [Deduct(at_ms=0, project="p", customer_id="c", amount=n, transaction_id=f"t{n}") for n in range(1, 5)]
    calls = [asyncio.ensure_future(client.submit(command)) for command in commands]
    while sum(len(frame) for frame in received) < 1 + len(commands):
        await asyncio.sleep(0.01)
    writes = [message for frame in received for message in frame if type(message) is ipc.Write]
    assert [write.command for write in writes] == commands
    ids = [write.id for write in writes]
    ledger.outbox.send(ipc.Oks([ids[2], ids[0], ids[3]], [b'{"n":3}', b'{"n":1}', b'{"n":4}']))
    ledger.outbox.send(ipc.Reply(ids[1], ipc.REJECTED, code="insufficient_balance", message="no"))
    results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [bytes(r.body) if type(r) is Applied else r for r in results] == [
        b'{"n":1}', Rejected("insufficient_balance", "no", None), b'{"n":3}', b'{"n":4}']
    assert all(r.logged for r in results if type(r) is Applied)  # answered after the fsync: durable
    ledger.close()
    client.close()
