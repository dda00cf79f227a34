"""CONTRACT §10 in the pure core: refund, void, ledger filters, and that old histories keep their bytes.

Method: drive engine.core.ledger.apply through tests.engine.helpers.Driver (a rejection or a replay
must leave the digest unchanged) and assert exact bodies, bucket counters and ledger entries, then
check_invariants. Amounts are chosen so a wrong order (oldest first instead of newest, overage
last), a wrong bucket or a missing write-off gives different numbers.
"""

from __future__ import annotations

import hashlib
import random

import msgspec
import pytest

from engine.core.codec import decode_state, encode_state, encode_state_v1
from engine.core.commands import Consume, Deduct, Deposit, ExpireBuckets, Freeze, Refund, Unfreeze, Void
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.queries import LedgerFilters, customer_view, ledger_page
from engine.core.results import Rejected, RefundDetail
from engine.core.state import LedgerState, rebuild_derived
from tests.engine.helpers import T0_MS, P
from tests.engine.helpers import Driver as _Driver

T = T0_MS


class Driver(_Driver):
    """A command built with at=None is stamped "now": the newest stamp so far (never backwards)."""

    def run(self, command):  # type: ignore[no-untyped-def]
        if getattr(command, "at_ms", 0) is None:
            command = msgspec.structs.replace(command, at_ms=max(self.state.stamp_ms_last, T))
        return super().run(command)


def dep(amount, at=None, cid="c1", **kw) -> Deposit:
    return Deposit(at_ms=at, project=P, customer_id=cid, amount=amount, **kw)


def ded(tid, amount, at=None, cid="c1", **kw) -> Deduct:
    return Deduct(at_ms=at, project=P, customer_id=cid, amount=amount, transaction_id=tid, **kw)


def ref(rid, tid, amount=None, at=None, cid="c1", **kw) -> Refund:
    return Refund(at_ms=at, project=P, customer_id=cid, refund_id=rid, transaction_id=tid, amount=amount, **kw)


def void(vid, account, at=None, cid="c1", **kw) -> Void:
    return Void(at_ms=at, project=P, customer_id=cid, void_id=vid, account_id=account, **kw)


def counters(d: Driver, lsn: int, cid="c1") -> tuple[int, int, int, int]:
    b = d.state.projects[P].customers[cid].bucket_by_lsn(lsn)
    return b.used, b.frozen, b.expired, b.available


def entries(d: Driver, cid="c1", **filters) -> list[tuple[str, int, str, str | None]]:
    page = ledger_page(d.state, P, cid, limit=100, cursor=None, filters=LedgerFilters(**filters))
    assert not isinstance(page, Rejected), page
    return [(e.operation_type, e.amount, e.account_id, e.transaction_id) for e in page.items]


def sound(d: Driver) -> None:
    assert check_invariants(d.state) == []
    copy = decode_state(encode_state(d.state))
    assert digest(copy) == digest(d.state)
    replayed = LedgerState()
    for lsn, command in d.history:
        apply(replayed, lsn, command)
    assert digest(replayed) == digest(d.state)


def two_buckets() -> Driver:
    d = Driver()
    d.ok(dep(30, expires_at_ms=T + 10_000))  # acc_1: allocated first (expires soonest)
    d.ok(dep(100))  # acc_2
    return d


def test_10_1_refund_goes_back_newest_first_in_reverse_allocation_order():
    d = two_buckets()
    d.ok(ded("d1", 50, at=T + 1, business_type="TASK"))  # acc_1 30, then acc_2 20
    body = d.ok(ref("r1", "d1", 25, at=T + 2, reason="bad answer"))
    # reverse allocation order: acc_2's 20 first, then 5 of acc_1's 30
    assert body.refund_details == [
        RefundDetail(account_id="acc_2", wallet="default", source="default", amount=20),
        RefundDetail(account_id="acc_1", wallet="default", source="default", amount=5),
    ]
    assert (body.refund_id, body.transaction_id, body.customer_id) == ("r1", "d1", "c1")
    assert (body.refunded_amount, body.refundable_amount, body.is_idempotent_replay) == (25, 25, False)
    assert counters(d, 1) == (25, 0, 0, 5) and counters(d, 2) == (0, 0, 0, 100)
    view = customer_view(d.state, P, "c1", T + 2)
    assert (view.balance.total, view.balance.used, view.balance.available) == (130, 25, 105)
    page = ledger_page(d.state, P, "c1", limit=2, cursor=None, transaction_id="d1", operation_type="REFUND")
    assert [(e.amount, e.account_id, e.refund_id, e.business_type, e.description) for e in page.items] == [
        (5, "acc_1", "r1", "TASK", "bad answer"), (20, "acc_2", "r1", "TASK", "bad answer")
    ]  # fmt: skip
    # the rest, amount omitted: what is left, from the older layer
    body = d.ok(ref("r2", "d1", at=T + 3))
    assert (body.refunded_amount, body.refundable_amount) == (25, 0)
    assert [(x.account_id, x.amount) for x in body.refund_details] == [("acc_1", 25)]
    assert counters(d, 1) == (0, 0, 0, 30)
    sound(d)


def test_10_4_consumed_freeze_overage_comes_back_before_its_frozen_part():
    d = two_buckets()
    d.ok(Freeze(at_ms=T + 1, project=P, customer_id="c1", amount=20, transaction_id="f1"))  # acc_1 20
    d.ok(Consume(at_ms=T + 2, project=P, customer_id="c1", transaction_id="f1", actual_amount=60))
    # overage 40: acc_1's last 10, then acc_2 30. Newest first: overage reversed (acc_2 30, acc_1 10),
    # then the frozen part (acc_1 20). A refund of 35 takes acc_2 30 + acc_1 5 (overage layer).
    body = d.ok(ref("r1", "f1", 35, at=T + 3))
    assert [(x.account_id, x.amount) for x in body.refund_details] == [("acc_2", 30), ("acc_1", 5)]
    assert counters(d, 1) == (25, 0, 0, 5) and counters(d, 2) == (0, 0, 0, 100)
    body = d.ok(ref("r2", "f1", at=T + 4))
    assert [(x.account_id, x.amount) for x in body.refund_details] == [("acc_1", 25)]
    assert d.rejected(ref("r3", "f1", 1, at=T + 5)).code == "no_refundable_charge"
    sound(d)


def test_10_1_credit_returning_to_an_expired_bucket_is_written_off_at_once():
    d = two_buckets()
    d.ok(ded("d1", 40, at=T + 1))  # acc_1 30, acc_2 10
    d.tick("c1", T + 10_000)  # acc_1 expires with 0 left: no EXPIRE entry
    body = d.ok(ref("r1", "d1", at=T + 10_001))
    assert [(x.account_id, x.amount) for x in body.refund_details] == [("acc_2", 10), ("acc_1", 30)]
    assert counters(d, 1) == (0, 0, 30, 0)
    assert entries(d)[:3] == [
        ("EXPIRE", 30, "acc_1", None), ("REFUND", 30, "acc_1", "d1"), ("REFUND", 10, "acc_2", "d1")
    ]  # fmt: skip
    view = customer_view(d.state, P, "c1", T + 10_001)
    assert (view.balance.total, view.balance.used, view.balance.available) == (100, 0, 100)
    sound(d)


def test_10_1_codes_no_refundable_charge_exceeds_and_conflicts_after_business_rules():
    d = two_buckets()
    d.ok(ded("d1", 50, at=T + 1))
    d.ok(ded("d2", 10, at=T + 1))
    d.ok(Freeze(at_ms=T + 1, project=P, customer_id="c1", amount=5, transaction_id="f1"))
    d.ok(Freeze(at_ms=T + 1, project=P, customer_id="c1", amount=5, transaction_id="f0"))
    d.ok(Consume(at_ms=T + 1, project=P, customer_id="c1", transaction_id="f0", actual_amount=0))
    assert d.rejected(ref("r", "nope", cid=None)).code == "no_refundable_charge"
    assert d.rejected(ref("r", "f1")).code == "no_refundable_charge"  # frozen, not consumed
    assert d.rejected(ref("r", "f0")).code == "no_refundable_charge"  # consumed 0: nothing charged
    over = d.rejected(ref("r", "d1", 51))
    assert (over.code, over.details) == ("refund_exceeds_refundable", {"requested": 51, "refundable": 50})
    first = d.ok(ref("r1", "d1", 20, at=T + 2))
    # replays: same amount, or amount omitted; descriptive fields ignored
    again = d.ok(ref("r1", "d1", 20, at=T + 3, reason="other"))
    assert again.is_idempotent_replay and again.refunded_at == first.refunded_at and again.refundable_amount == 30
    assert d.ok(ref("r1", "d1", at=T + 3)).refund_details == first.refund_details
    # another amount: business rules first (31 > 30 left), then the conflict
    assert d.rejected(ref("r1", "d1", 31)).code == "refund_exceeds_refundable"
    c = d.rejected(ref("r1", "d1", 5))
    assert (c.code, c.details) == ("transaction_conflict", {"field": "amount"})
    c = d.rejected(ref("r1", "d2", 5))
    assert (c.code, c.details) == ("transaction_conflict", {"field": "transaction_id"})
    assert d.rejected(ref("r1", "nope", 5, cid=None)).code == "no_refundable_charge"
    # after the full refund, the original still replays
    d.ok(ref("r2", "d1", at=T + 4))
    assert d.ok(ref("r1", "d1", at=T + 5)).is_idempotent_replay
    assert d.rejected(ref("r3", "d1")).code == "no_refundable_charge"
    sound(d)


def test_10_1_refund_id_is_project_wide_across_customers():
    d = two_buckets()
    d.ok(dep(10, cid="c2"))
    d.ok(ded("d1", 5, at=T + 1))
    d.ok(ded("e1", 5, at=T + 1, cid="c2"))
    d.ok(ref("r1", "d1", at=T + 2))
    c = d.rejected(ref("r1", "e1", cid="c2"))
    assert (c.code, c.details) == ("transaction_conflict", {"field": "transaction_id"})
    sound(d)


def test_10_2_void_writes_off_available_keeps_frozen_consumable_and_writes_off_returns():
    d = two_buckets()
    d.ok(ded("d1", 40, at=T + 1))  # acc_1 30, acc_2 10
    d.ok(Freeze(at_ms=T + 1, project=P, customer_id="c1", amount=30, transaction_id="f1"))  # acc_2 30
    body = d.ok(void("v1", "acc_2", at=T + 2, reason="fraud"))
    assert (body.void_id, body.account_id, body.customer_id, body.voided_amount) == ("v1", "acc_2", "c1", 60)
    assert counters(d, 2) == (10, 30, 60, 0)
    assert entries(d, operation_type="VOID") == [("VOID", 60, "acc_2", "v1")]
    # the frozen part stays consumable: consume 20 charges it, the unused 10 is written off
    d.ok(Consume(at_ms=T + 3, project=P, customer_id="c1", transaction_id="f1", actual_amount=20))
    assert counters(d, 2) == (30, 0, 70, 0)
    assert entries(d)[:3] == [
        ("EXPIRE", 10, "acc_2", None), ("UNFREEZE", 10, "acc_2", "f1"), ("CONSUME", 20, "acc_2", "f1")
    ]  # fmt: skip
    # a refund into the voided bucket is written off; into acc_1 it is not
    body = d.ok(ref("r1", "d1", at=T + 4))
    assert [(x.account_id, x.amount) for x in body.refund_details] == [("acc_2", 10), ("acc_1", 30)]
    assert counters(d, 2) == (20, 0, 80, 0) and counters(d, 1) == (0, 0, 0, 30)
    view = customer_view(d.state, P, "c1", T + 4)
    assert [a.account_id for a in view.accounts] == ["acc_1"] and view.balance.available == 30
    sound(d)


def test_10_2_void_codes_replay_and_conflicts():
    d = two_buckets()
    d.ok(dep(10, cid="c2"))  # acc_3
    assert d.rejected(void("v1", "acc_9")).code == "account_not_found"
    assert d.rejected(void("v1", "acc_01")).code == "account_not_found"
    assert d.rejected(void("v1", "acc_3")).code == "account_not_found"  # c2's bucket, routed to c1
    first = d.ok(void("v1", "acc_1", at=T + 1))
    again = d.ok(void("v1", "acc_1", at=T + 2, reason="x"))
    assert again.is_idempotent_replay and again.voided_at == first.voided_at and again.voided_amount == 30
    c = d.rejected(void("v2", "acc_1"))
    assert (c.code, c.details) == ("account_already_voided", {"account_id": "acc_1"})
    c = d.rejected(void("v1", "acc_2"))
    assert (c.code, c.details) == ("transaction_conflict", {"field": "account_id"})
    c = d.rejected(void("v1", "acc_3", cid="c2"))
    assert (c.code, c.details) == ("transaction_conflict", {"field": "account_id"})
    assert d.rejected(void("v1", "acc_9")).code == "account_not_found"  # existence before conflict
    # a spent bucket can be voided: 0 written off, later refunds into it written off
    d.ok(ded("d1", 100, at=T + 3))
    assert d.ok(void("v3", "acc_2", at=T + 4)).voided_amount == 0
    assert d.ok(ref("r1", "d1", 7, at=T + 5)).refund_details[0].account_id == "acc_2"
    assert counters(d, 2) == (93, 0, 7, 0)
    sound(d)


# The digest is the released (d80f33e) form: 70cbf04 restored it after an interim main hashed the
# appended stamp_ms_last too; the snapshot bytes are unchanged by either.
GOLDEN = (
    "9f66c08fea6623cb53380d4a32cc1be2b3b3843db1e18dc49222c04127d0103a",
    "2190617baa6c3f15a36784c2efcef92d7bf0f3810a5a05c7473ea02e0c3ec93c",
)


def test_10_history_without_corrections_keeps_its_digest_and_snapshot_bytes():
    """Values computed on main before CONTRACT §10 was built (76f0c01)."""
    d = Driver()
    d.ok(Deposit(at_ms=T, project=P, customer_id="c1", amount=100, idempotency_key="k1"))
    d.ok(Deposit(at_ms=T + 1, project=P, customer_id="c1", amount=50, wallet="w", expires_at_ms=T + 1000))
    d.ok(Deduct(at_ms=T + 2, project=P, customer_id="c1", amount=30, transaction_id="d1", business_type="TASK"))
    d.ok(Freeze(at_ms=T + 3, project=P, customer_id="c1", amount=40, transaction_id="f1", unfreeze_after_s=5))
    d.ok(Consume(at_ms=T + 4, project=P, customer_id="c1", transaction_id="f1", actual_amount=60))
    d.ok(Freeze(at_ms=T + 5, project=P, customer_id="c1", amount=10, transaction_id="f2"))
    d.ok(Unfreeze(at_ms=T + 6, project=P, customer_id="c1", transaction_id="f2"))
    d.ok(Deposit(at_ms=T + 6, project=P, customer_id="c1", amount=20, wallet="w", expires_at_ms=T + 1000))
    d.ok(Freeze(at_ms=T + 7, project=P, customer_id="c1", amount=5, transaction_id="f3", wallet="w"))
    d.tick("c1", T + 2000)
    d.ok(Unfreeze(at_ms=T + 2001, project=P, customer_id="c1", transaction_id="f3"))
    for i in range(20):
        d.ok(Deduct(at_ms=T + 3000 + i, project=P, customer_id="c1", amount=1, transaction_id=f"x{i}"))
    d.ok(Deposit(at_ms=T + 4000, project=P, customer_id="c2", amount=7, name="n", metadata={"a": 1}))
    # The snapshot bytes pinned are layout 1's (encode_state_v1); layout 2 restores the same digest.
    assert (digest(d.state), hashlib.sha256(encode_state_v1(d.state)).hexdigest()) == GOLDEN
    assert digest(decode_state(encode_state(d.state))) == GOLDEN[0]


# -- ledger filters (CONTRACT §10.3) --------------------------------------------------------------


def _busy_customer(seed: int) -> Driver:
    """Many entries in several wallets and business types, with late (timer) entries."""
    rng = random.Random(seed)
    d = Driver()
    at = T
    for k in range(60):
        at += rng.choice((0, 1, 5))
        wallet = rng.choice(("a", "b"))
        expires = at + rng.choice((3, 50)) if rng.random() < 0.4 else None
        d.ok(dep(rng.randint(5, 20), at=at, wallet=wallet, expires_at_ms=expires))
        if rng.random() < 0.6:
            bt = rng.choice(("TASK", "ORDER", "UNDEFINED"))
            d.run(ded(f"d{k}", rng.randint(1, 8), at=at, wallet=wallet, business_type=bt))
        if k % 7 == 0:  # timers fired late: their EXPIRE entries carry an older created_at
            at += 60
            d.run(ExpireBuckets(at_ms=at - 55, project=P, customer_id="c1"))
    return d


@pytest.mark.parametrize("seed", range(4))
def test_10_3_filters_match_a_plain_scan_and_pages_never_skip_or_repeat(seed):
    d = _busy_customer(seed)
    customer = d.state.projects[P].customers["c1"]
    assert customer.time_index is not None and customer.time_index.late  # the case under test
    rng = random.Random(seed + 100)
    times = sorted({e.created_at_ms for e in customer.entries})
    for _ in range(40):
        f = LedgerFilters(
            operation_type=rng.choice((None, "GRANT", "CONSUME", "EXPIRE")),
            wallet=rng.choice((None, "a", "b")),
            business_type=rng.choice((None, "TASK", "UNDEFINED")),
            from_ms=rng.choice((None, *times)),
            to_ms=rng.choice((None, *times)),
        )
        expected = [
            (e.lsn, e.i) for e in reversed(customer.entries)
            if (f.operation_type in (None, e.op)) and (f.wallet in (None, e.wallet))
            and (f.business_type in (None, e.business_type))
            and (f.from_ms is None or e.created_at_ms >= f.from_ms) and (f.to_ms is None or e.created_at_ms < f.to_ms)
        ]  # fmt: skip
        got, cursor = [], None
        while True:
            page = ledger_page(d.state, P, "c1", limit=7, cursor=cursor, filters=f)
            assert not isinstance(page, Rejected), page
            assert page.total_count == len(expected)
            got.extend(tuple(int(x) for x in e.id[3:].split("_")) for e in page.items)
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert got == expected, f


def test_10_3_from_at_or_after_to_is_empty_and_cursors_are_bound_to_their_filters():
    d = _busy_customer(1)
    assert ledger_page(d.state, P, "c1", limit=5, cursor=None, filters=LedgerFilters(from_ms=T + 5, to_ms=T + 5)).total_count == 0
    page = ledger_page(d.state, P, "c1", limit=2, cursor=None, filters=LedgerFilters(wallet="a"))
    assert page.has_more
    other = ledger_page(d.state, P, "c1", limit=2, cursor=page.next_cursor, filters=LedgerFilters(wallet="b"))
    assert isinstance(other, Rejected) and other.code == "invalid_cursor"
    other = ledger_page(d.state, P, "c1", limit=2, cursor=page.next_cursor, filters=LedgerFilters(wallet="a", to_ms=T + 10**6))
    assert isinstance(other, Rejected) and other.code == "invalid_cursor"
    # a cursor made without the §10.3 filters keeps working (its binding did not change)
    plain = ledger_page(d.state, P, "c1", limit=2, cursor=None, operation_type="GRANT")
    assert not isinstance(ledger_page(d.state, P, "c1", limit=2, cursor=plain.next_cursor, operation_type="GRANT"), Rejected)


def test_10_derived_indexes_rebuild_from_the_snapshot():
    d = two_buckets()
    d.ok(ded("d1", 40, at=T + 1))
    d.ok(ref("r1", "d1", 15, at=T + 2))
    d.ok(void("v1", "acc_2", at=T + 3))
    copy = decode_state(encode_state(d.state))
    rebuild_derived(copy)
    c = copy.projects[P].customers["c1"]
    assert c.refunded == {"d1": 15} and c.voided == {2: "v1"}
    assert copy.projects[P].refund_owner == {"r1": "c1"} and copy.projects[P].void_owner == {"v1": "c1"}
    assert copy.projects[P].bucket_owner(2) == "c1" and copy.projects[P].bucket_owner(3) is None
    d2 = Driver()
    d2.state = copy
    assert d2.ok(ref("r1", "d1", at=T + 4)).is_idempotent_replay
    assert d2.rejected(void("v2", "acc_2", at=T + 4)).code == "account_already_voided"
