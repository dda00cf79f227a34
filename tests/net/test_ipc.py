"""net/ipc.py frames and net/ledger_client.py's key replica, in-process (issue 14)."""

from __future__ import annotations

import asyncio
import struct

import msgspec
import pytest

from engine.core.commands import Deduct
from engine.core.keys import hash_api_key
from engine.core.reads import EntitlementEvents, SlotPools
from engine.core.results import Rejected
from engine.core.state import ApiKey
from engine.runtime import ADMIN
from net import ipc
from net.ledger_client import KeyReplica


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_a_batch_of_calls_is_one_frame_and_decodes_to_the_same_messages() -> None:
    calls = [
        ipc.Hello(1),
        ipc.Call(1, ipc.Submit(Deduct(at_ms=0, project="p", customer_id="c", amount=5, transaction_id="t"))),
        ipc.Call(2, ipc.Read(SlotPools("p", "c", wallet=None))),
        ipc.Call(3, ipc.Read(EntitlementEvents("p", "c", limit=5, cursor=None, feature_key=None,
                                               types=frozenset({"set"}), from_ms=1, to_ms=None))),  # fmt: skip
        ipc.KeysAck(7),
    ]
    data = ipc.frame(msgspec.msgpack.Encoder(), calls)
    reader = _reader(data + data)
    decoder = msgspec.msgpack.Decoder(list[ipc.FrontMsg])
    first = await ipc.read_frame(reader)
    second = await ipc.read_frame(reader)
    assert first is not None and second is not None
    assert decoder.decode(first) == calls == decoder.decode(second)
    assert await ipc.read_frame(reader) is None  # a clean end between frames


async def test_an_oversized_or_cut_frame_is_refused() -> None:
    with pytest.raises(ipc.FrameError):
        await ipc.read_frame(_reader(struct.pack(">I", ipc.FRAME_BYTES_MAX + 1)))
    with pytest.raises(asyncio.IncompleteReadError):
        await ipc.read_frame(_reader(struct.pack(">I", 10) + b"abc"))


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
