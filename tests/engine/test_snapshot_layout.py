"""Snapshot layout 2 (engine/core/codec_v2.py, issue 14: restart speed) next to layout 1.

What: a state written in layout 2 restores to the same digest and the same bytes; a layout-1
snapshot (what servers wrote before) still restores, to the state layout 2 would give, also
through a snapshot file and `recover`; the restored layout is the live one (tuples of one, shared
strings, the deposit index holding the customers' own records, the bucket-owner index); bytes of
neither layout and counts that do not add up are refused.
How: the varied history of tests/engine/test_customer_layout.py (refunds, voids, slots,
entitlements, alert rules, both deposit shapes) plus a webhook, and fund.lua-like rounds.
How it could fail: a field dropped or reordered in layout 2, a customer's deposits taken from
another customer, an owner moved to another bucket, strings decoded but not shared, or a
layout-1 file no longer read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import wal
from bench.memory_probe import owned_sizes
from engine.core.codec import decode_state, encode_state, encode_state_v1, encode_state_v2, snapshot_layout
from engine.core.commands import CreateWebhook, Deposit
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.state import GRANT, CustomerState, DepositRecord, LedgerState
from engine.runtime.recovery import recover
from tests.engine.helpers import P, T0_MS, Driver
from tests.engine.test_customer_layout import IDLE_CUSTOMER_BYTES_MAX, _varied_history


def _rounds(d: Driver, customers: int, rounds: int) -> None:
    for r in range(rounds):
        for n in range(customers):
            d.ok(Deposit(at_ms=T0_MS + 1000 + d.state.last_lsn, project=P, customer_id=f"m-{n}",
                         amount=1000 if r == 0 else 1, idempotency_key=f"round-{r}-m-{n}"))  # fmt: skip


def _rounds_from(d: Driver, first: int, end: int) -> None:
    for n in range(first, end):
        d.ok(Deposit(at_ms=T0_MS + 1000 + d.state.last_lsn, project=P, customer_id=f"m-{n}", amount=5,
                     idempotency_key=f"round-0-m-{n}"))  # fmt: skip


def _history() -> LedgerState:
    d = Driver()
    _varied_history(d)
    _rounds(d, 5, 3)
    d.ok(Deposit(at_ms=T0_MS + 2000, project="other", customer_id="m-1", amount=3, wallet="w2", idempotency_key="o"))
    d.ok(CreateWebhook(at_ms=T0_MS + 2001, project=P, url="http://x/", events=("credits.expired",), secret="s"))
    assert d.state.hooks is not None and len(d.state.projects) == 2
    return d.state


def test_layout_2_restores_the_same_digest_and_bytes() -> None:
    state = _history()
    data = encode_state_v2(state)
    assert snapshot_layout(data) == 2 and msgspec.msgpack.decode(data)[0] == 2
    restored = decode_state(data)
    assert digest(restored) == digest(state)
    assert encode_state_v2(restored) == data
    assert check_invariants(restored) == []
    for name, project in state.projects.items():
        again = restored.projects[name]
        assert list(again.customers) == list(project.customers)
        assert list(again.bucket_lsns) == list(project.bucket_lsns) and again.bucket_lsns.typecode == "q"
        assert again.bucket_customers == project.bucket_customers
        assert sorted(again.deposit_records) == sorted(project.deposit_records)
        assert list(again.customer_ids) == list(project.customer_ids)
        assert again.open_freezes == project.open_freezes and again.txn_owner == project.txn_owner


def test_a_layout_1_snapshot_restores_what_layout_2_does() -> None:
    state = _history()
    old = encode_state_v1(state)
    assert snapshot_layout(old) == 1
    from_old = decode_state(old)
    assert digest(from_old) == digest(state)
    assert encode_state(from_old) == encode_state(state)
    assert encode_state_v1(from_old) == old


@pytest.mark.parametrize("encode", [encode_state_v2, encode_state], ids=["layout2", "layout3"])
def test_the_restored_layout_is_the_live_one(encode: Callable[[LedgerState], bytes]) -> None:
    d = Driver()
    _rounds(d, 2, 2)  # m-0, m-1: two deposits each
    _rounds_from(d, 2, 4)  # m-2, m-3: one each
    restored = decode_state(encode(d.state))
    project = restored.projects[P]
    one, three = project.customers["m-3"], project.customers["m-0"]
    assert type(one.buckets) is tuple and type(one.entries) is tuple and type(one.live) is tuple
    assert type(one.keyed_deposits) is DepositRecord
    assert project.deposit_records["round-0-m-3"] is one.keyed_deposits
    assert type(three.buckets) is list and type(three.entries) is list and type(three.live) is list
    assert [r.idempotency_key for r in three.deposits] == ["round-0-m-0", "round-1-m-0"]
    assert [r.idempotency_key for r in project.customers["m-1"].deposits] == ["round-0-m-1", "round-1-m-1"]
    assert all(project.deposit_records[r.idempotency_key] is r for r in three.deposits)
    wallets = {id(x.wallet) for c in project.customers.values() for x in (*c.buckets, *c.entries, *c.deposits)}
    sources = {id(x.source) for c in project.customers.values() for x in (*c.buckets, *c.entries, *c.deposits)}
    assert len(wallets) == 1 and len(sources) == 1
    assert all(entry.op is GRANT for c in project.customers.values() for entry in c.entries)


def test_a_restored_idle_customer_owns_what_a_live_one_does() -> None:
    d = Driver()
    _rounds(d, 3, 1)
    restored = decode_state(encode_state(d.state))
    sizes = []
    for state in (d.state, restored):
        customers = state.projects[P].customers
        shared: set[int] = set()
        owned_sizes(customers["m-0"], shared)
        sizes.append(owned_sizes(customers["m-1"], shared))
    # Containers as live. Strings: wallet, source and op shared, but the entry's copies of the
    # deposit key (its transaction_id) and of its business type are its own, as after a layout-1
    # restore. Ints: decoding makes one object per field where the live customer shares one lsn /
    # amount / stamp object between its records. Both known, left (issue 14 memory, reported).
    assert {k: v for k, v in sizes[1].items() if k not in ("int", "str")} == {
        k: v for k, v in sizes[0].items() if k not in ("int", "str")}  # fmt: skip
    entry = restored.projects[P].customers["m-1"].entries[0]
    assert sizes[1]["str"] == sizes[0]["str"] + sys.getsizeof(entry.transaction_id) + sys.getsizeof(entry.business_type)
    assert sum(sizes[0].values()) <= IDLE_CUSTOMER_BYTES_MAX


def test_bytes_of_neither_layout_and_counts_that_do_not_add_up_are_refused() -> None:
    assert snapshot_layout(b"") is None and snapshot_layout(b"\x01") is None
    assert snapshot_layout(msgspec.msgpack.encode([4, 0])) == 4
    with pytest.raises(ValueError, match="unknown snapshot version 4"):
        decode_state(msgspec.msgpack.encode([4, 0, [], [], 0]))
    d = Driver()
    _rounds(d, 2, 1)
    snap = msgspec.msgpack.decode(encode_state_v2(d.state))
    snap[3][0][1][0][9] = 2  # m-0 claims two keyed deposits: it would take m-1's
    with pytest.raises(ValueError, match="keyed deposits"):
        decode_state(msgspec.msgpack.encode(snap))
    snap[3][0][1][0][9] = 0  # m-0 claims none: one is left over
    with pytest.raises(ValueError, match="more keyed deposits"):
        decode_state(msgspec.msgpack.encode(snap))


def test_recovery_reads_a_layout_1_snapshot_file(tmp_path: Path) -> None:
    state = _history()
    wal.write_snapshot(tmp_path, state.last_lsn, encode_state_v1(state), version=1)
    snapshot = wal.load_newest_snapshot(tmp_path)
    assert snapshot is not None and snapshot.version == 1
    recovered = recover(tmp_path, truncate_torn_tail=False)
    assert (recovered.snapshot_lsn, recovered.records_replayed) == (state.last_lsn, 0)
    assert digest(recovered.state) == digest(state)
    customer = recovered.state.projects[P].customers["m-2"]
    assert isinstance(customer, CustomerState) and customer.last_lsn == state.projects[P].customers["m-2"].last_lsn
