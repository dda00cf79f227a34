"""Cold customers (snapshot layout 3, engine/core/codec_v3.py + engine/core/cold.py, issue 14).

What: a layout-3 restore keeps quiet customers encoded; every command kind and every read that
touches one gives what the fully decoded state gives (same result, same digest after), and the
touched customer is then warm; listing, counts, digest, invariants and snapshots see every
customer without warming the untouched ones; layouts 1, 2 and 3 restore to the same digest; a
snapshot of a mix of cold and warm customers restores to the same state.
How: differential. One history is applied to a Driver; its layout-3 restore ("twin") and the
live state then get the same command or read, and results and digests are compared.
How it could fail: a command reading a cold customer's index entry (deposit key, transaction id,
bucket) without decoding it, an iteration that skips or mutates cold customers, a snapshot
dropping a cold customer's keys, a warm-up that leaves the deposit index naming the id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from engine.core.codec import decode_state, encode_state, encode_state_v1, encode_state_v2, snapshot_layout
from engine.core.commands import (
    AutoSettle,
    Command,
    Consume,
    Deduct,
    Deposit,
    EntitlementSet,
    ExpireBuckets,
    Freeze,
    Refund,
    SetAlerts,
    SlotClaim,
    SlotGrant,
    Unfreeze,
    Void,
)
from engine.core.digest import digest
from engine.core.freeze_queries import open_freezes
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.listings import customer_page, list_projects
from engine.core.queries import (
    bucket_owner,
    customer_count,
    customer_view,
    ledger_page,
    transaction_owner,
)
from engine.core.slot_queries import slot_pools
from engine.core.state import DepositRecord, LedgerState, account_id
from tests.engine.helpers import P, T0_MS, Driver

COLD = [f"c-{n}" for n in range(8)]
WARM = ["w-open", "w-expiring", "w-refund"]
NOW_MS = T0_MS + 10_000


def _history() -> Driver:
    """c-*: two keyed deposits, a deduct and a consumed freeze each (cold after a restore);
    w-open: an open freeze; w-expiring: a bucket with an expiry ahead; w-refund: a refund."""
    d = Driver()
    at = T0_MS
    for n, customer in enumerate(COLD):
        d.ok(Deposit(at_ms=at, project=P, customer_id=customer, amount=1000, idempotency_key=f"k-{n}-0"))
        d.ok(Deposit(at_ms=at, project=P, customer_id=customer, amount=500, wallet="w2", idempotency_key=f"k-{n}-1"))
        d.ok(Deduct(at_ms=at, project=P, customer_id=customer, amount=100, transaction_id=f"t-{n}"))
        d.ok(Freeze(at_ms=at, project=P, customer_id=customer, amount=50, transaction_id=f"f-{n}"))
        d.ok(Consume(at_ms=at, project=P, customer_id=customer, transaction_id=f"f-{n}", actual_amount=40))
    d.ok(Deposit(at_ms=at, project=P, customer_id="w-open", amount=10, idempotency_key="k-open"))
    d.ok(Freeze(at_ms=at, project=P, customer_id="w-open", amount=5, transaction_id="f-open"))
    d.ok(Deposit(at_ms=at, project=P, customer_id="w-expiring", amount=10, expires_at_ms=T0_MS + 3_600_000))
    d.ok(Deposit(at_ms=at, project=P, customer_id="w-refund", amount=10))
    d.ok(Deduct(at_ms=at, project=P, customer_id="w-refund", amount=4, transaction_id="t-refund"))
    d.ok(Refund(at_ms=at, project=P, customer_id="w-refund", refund_id="r-0", transaction_id="t-refund", amount=1))
    d.ok(Deposit(at_ms=at, project="other", customer_id="c-0", amount=7, idempotency_key="k-other"))
    return d


def _twin(d: Driver) -> LedgerState:
    data = encode_state(d.state)
    assert snapshot_layout(data) == 3
    twin = decode_state(data)
    customers = twin.projects[P].customers
    assert [c for c in COLD if customers.is_cold(c)] == COLD
    assert [c for c in WARM if customers.is_cold(c)] == []
    assert customers.cold_count == len(COLD)
    return twin


def test_a_restore_keeps_quiet_customers_cold_and_the_same_state() -> None:
    d = _history()
    data = encode_state(d.state)
    twin = decode_state(data)
    assert twin.projects[P].customers.cold_count == len(COLD)
    assert digest(twin) == digest(d.state)
    assert check_invariants(twin) == []
    def no_peek(data: bytes) -> Any:
        raise AssertionError("a snapshot decoded a cold customer")

    peek = twin.projects[P].customers._peek
    twin.projects[P].customers._peek = no_peek
    assert encode_state(twin) == data  # untouched cold customers are re-emitted as they are, not decoded
    twin.projects[P].customers._peek = peek
    assert twin.projects[P].customers.cold_count == len(COLD)  # digest, invariants, snapshot warmed none
    project, live = twin.projects[P], d.state.projects[P]
    assert list(project.customers) == list(live.customers) and list(project.customer_ids) == list(live.customer_ids)
    assert project.txn_owner == live.txn_owner and project.open_freezes == live.open_freezes
    assert project.deposit_records["k-3-1"] == "c-3" and isinstance(project.deposit_records["k-open"], DepositRecord)
    assert sorted(project.deposit_records) == sorted(live.deposit_records)
    assert project.bucket_customers == live.bucket_customers and list(project.bucket_lsns) == list(live.bucket_lsns)


def test_layouts_1_2_and_3_restore_to_the_same_digest() -> None:
    d = _history()
    expected = digest(d.state)
    for encode in (encode_state_v1, encode_state_v2, encode_state):
        restored = decode_state(encode(d.state))
        assert digest(restored) == expected
        assert check_invariants(restored) == []
        # and back: a state with cold customers writes every older layout too
        assert digest(decode_state(encode_state_v1(restored))) == expected
        assert digest(decode_state(encode_state_v2(restored))) == expected


def _bucket(d: Driver, customer: str, key: str) -> str:
    record = d.state.projects[P].deposit_records[key]
    assert isinstance(record, DepositRecord) and d.state.projects[P].bucket_owner(record.lsn) == customer
    return account_id(record.lsn)


_COMMANDS: list[tuple[str, str, Callable[[Driver], Command]]] = [
    ("deposit", "c-0", lambda d: Deposit(at_ms=NOW_MS, project=P, customer_id="c-0", amount=5, idempotency_key="new")),
    ("deposit-replay", "c-1", lambda d: Deposit(at_ms=NOW_MS, project=P, customer_id="c-1", amount=500, wallet="w2",
                                                idempotency_key="k-1-1")),
    ("deposit-key-of-another", "c-3", lambda d: Deposit(at_ms=NOW_MS, project=P, customer_id="c-2", amount=1000,
                                                        idempotency_key="k-3-0")),
    ("deposit-key-other-amount", "c-2", lambda d: Deposit(at_ms=NOW_MS, project=P, customer_id="c-2", amount=9,
                                                          idempotency_key="k-2-0")),
    ("deduct", "c-4", lambda d: Deduct(at_ms=NOW_MS, project=P, customer_id="c-4", amount=1200, transaction_id="t-new")),
    ("deduct-replay", "c-5", lambda d: Deduct(at_ms=NOW_MS, project=P, customer_id="c-5", amount=100, transaction_id="t-5")),
    ("deduct-id-of-another", "c-5", lambda d: Deduct(at_ms=NOW_MS, project=P, customer_id="c-5", amount=100,
                                                     transaction_id="t-6")),
    ("freeze", "c-6", lambda d: Freeze(at_ms=NOW_MS, project=P, customer_id="c-6", amount=10, transaction_id="f-new",
                                       unfreeze_after_s=60)),
    ("consume-settled", "c-7", lambda d: Consume(at_ms=NOW_MS, project=P, customer_id="c-7", transaction_id="f-7",
                                                 actual_amount=40)),
    ("unfreeze-settled", "c-0", lambda d: Unfreeze(at_ms=NOW_MS, project=P, customer_id="c-0", transaction_id="f-0")),
    ("expire", "c-1", lambda d: ExpireBuckets(at_ms=NOW_MS, project=P, customer_id="c-1")),
    ("auto-settle", "c-1", lambda d: AutoSettle(at_ms=NOW_MS, project=P, customer_id="c-1", transaction_id="f-1")),
    ("refund", "c-2", lambda d: Refund(at_ms=NOW_MS, project=P, customer_id="c-2", refund_id="r-new", transaction_id="t-2")),
    ("void", "c-3", lambda d: Void(at_ms=NOW_MS, project=P, customer_id="c-3", void_id="v-new",
                                   account_id=_bucket(d, "c-3", "k-3-1"))),
    ("alerts", "c-4", lambda d: SetAlerts(at_ms=NOW_MS, project=P, customer_id="c-4", wallet=None, thresholds=(100,))),
    ("slot-grant", "c-5", lambda d: SlotGrant(at_ms=NOW_MS, project=P, customer_id="c-5", wallet="seats", source="plan",
                                              amount=2)),
    ("slot-claim-no-pool", "c-6", lambda d: SlotClaim(at_ms=NOW_MS, project=P, customer_id="c-6", wallet="seats",
                                                      source="plan", resource_id="u")),
    ("entitlement", "c-7", lambda d: EntitlementSet(at_ms=NOW_MS, project=P, customer_id="c-7", feature_key="tier",
                                                    value="pro")),
]  # fmt: skip


@pytest.mark.parametrize(("customer", "make"), [(c, m) for _, c, m in _COMMANDS], ids=[n for n, _, _ in _COMMANDS])
def test_every_command_kind_on_a_cold_customer_does_what_it_does_on_a_warm_one(
    customer: str, make: Callable[[Driver], Command]
) -> None:
    d = _history()
    twin = _twin(d)
    command = make(d)
    expected = apply(d.state, d.state.last_lsn + 1, command)
    got = apply(twin, twin.last_lsn + 1, command)
    assert got == expected
    assert digest(twin) == digest(d.state)
    assert not twin.projects[P].customers.is_cold(customer)
    assert check_invariants(twin) == []
    restored = decode_state(encode_state(twin))  # a snapshot of a mix of cold and warm customers
    assert digest(restored) == digest(d.state) and check_invariants(restored) == []
    assert encode_state(decode_state(encode_state(restored))) == encode_state(restored)


_READS: list[tuple[str, str, Callable[[LedgerState], Any]]] = [
    ("customer", "c-3", lambda s: customer_view(s, P, "c-3", NOW_MS)),
    ("ledger", "c-3", lambda s: ledger_page(s, P, "c-3", limit=100, cursor=None)),
    ("ledger-by-txn", "c-4", lambda s: ledger_page(s, P, "c-4", limit=100, cursor=None, transaction_id="t-4")),
    ("freezes", "c-5", lambda s: open_freezes(s, P, "c-5", limit=100, cursor=None)),
    ("slots", "c-6", lambda s: slot_pools(s, P, "c-6", None)),
]


@pytest.mark.parametrize(("customer", "read"), [(c, r) for _, c, r in _READS], ids=[n for n, _, _ in _READS])
def test_a_read_of_a_cold_customer_gives_what_a_warm_one_gives(customer: str, read: Callable[[LedgerState], Any]) -> None:
    d = _history()
    twin = _twin(d)
    assert read(twin) == read(d.state)
    assert not twin.projects[P].customers.is_cold(customer)
    assert digest(twin) == digest(d.state) and check_invariants(twin) == []


def test_listings_counts_and_owner_lookups_see_cold_customers() -> None:
    d = _history()
    twin = _twin(d)
    assert customer_count(twin) == customer_count(d.state) == len(COLD) + len(WARM) + 1
    assert list_projects(twin) == list_projects(d.state)
    assert transaction_owner(twin, P, "t-6") == "c-6" and transaction_owner(twin, P, "f-2") == "c-2"
    account = _bucket(d, "c-1", "k-1-0")
    assert bucket_owner(twin, P, account) == bucket_owner(d.state, P, account) == "c-1"
    assert twin.projects[P].customers.cold_count == len(COLD)  # none of these decoded a customer
    page = customer_page(twin, P, limit=3, cursor=None, prefix="c-", now_ms=NOW_MS)
    assert page == customer_page(d.state, P, limit=3, cursor=None, prefix="c-", now_ms=NOW_MS)
    assert [item.customer_id for item in page.items] == ["c-0", "c-1", "c-2"]  # type: ignore[union-attr]
    assert twin.projects[P].customers.cold_count == len(COLD) - 3  # a listed customer is read: warm now


def test_values_peek_without_warming_and_peeked_objects_are_fresh() -> None:
    d = _history()
    twin = _twin(d)
    customers = twin.projects[P].customers
    first = {c.customer_id: c for c in customers.values()}
    second = {c.customer_id: c for c in customers.values()}
    assert customers.cold_count == len(COLD) and list(first) == list(customers)
    assert first["c-0"] == second["c-0"] and first["c-0"] is not second["c-0"]
    assert first["w-open"] is second["w-open"]  # a warm customer is the live object
    warm = customers["c-0"]
    assert warm == first["c-0"] and customers["c-0"] is warm and customers.cold_count == len(COLD) - 1
    assert {c.customer_id for c in customers.warm_values()} == {"c-0", *WARM}
    record = twin.projects[P].deposit_records["k-0-1"]
    assert record is warm.deposits[1]


def test_a_cold_record_that_is_not_a_quiet_customer_is_refused() -> None:
    d = _history()
    snap = msgspec.msgpack.decode(encode_state(d.state))
    cold = snap[3][0][5]  # project P's cold_customers
    assert cold and cold[0][0] == "c-0"
    cold[0][8] = [["refund", "r", "t-0", 1, T0_MS, 1, None, 0, []]]  # a refund written into a cold customer
    twin = decode_state(msgspec.msgpack.encode(snap))
    with pytest.raises(ValueError, match="only freezes and deducts"):
        twin.projects[P].customers.get("c-0")
    snap[3][0][2] = b"\x01" * (len(COLD) + len(WARM))  # every customer flagged cold
    with pytest.raises(ValueError, match="cold flags"):
        decode_state(msgspec.msgpack.encode(snap))
