"""CONTRACT §7.11: the cost of an operation on a customer does not grow with its spent buckets.

Method: build 20,000 fully spent deposits on one customer through engine.core.ledger.apply (no
digest per command: that would be quadratic), then count the buckets a deduct and a GET examine
by wrapping `bucket_valid_at` in the modules that walk buckets (allocation and the view), and
check the view's numbers against a reference computed the old way, over every bucket. Also the
ways a bucket crosses the line: a refund brings a spent bucket back, expiry closes spent buckets
and buckets with frozen credit, a void closes a spent bucket, a snapshot round trip rebuilds all.
How it could fail: a debit or view that still walks every bucket counts ~20,000, not <= 2; an
index that forgets a transition shows up in check_invariants or in the reference comparison.
"""

from __future__ import annotations

import msgspec
import pytest

import engine.core.common as common
import engine.core.queries as queries
from engine.core.codec import decode_state, encode_state
from engine.core.commands import Deduct, Deposit, ExpireBuckets, Freeze, Refund, Void
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.queries import customer_view
from engine.core.results import Applied
from engine.core.state import LedgerState, account_id, bucket_valid_at
from engine.core.timefmt import format_ms
from tests.engine.helpers import T0_MS, P

T = T0_MS
SPENT = 20_000


def _run(state: LedgerState, command: object) -> Applied:
    result = apply(state, state.last_lsn + 1, command)  # type: ignore[arg-type]
    assert isinstance(result, Applied) and result.logged, result
    return result


def _topped_up(state: LedgerState, count: int, cid: str = "heavy") -> None:
    """`count` daily top-ups of 3, each spent at once (half of them expire far in the future)."""
    for n in range(count):
        expires = T + 10**9 + n if n % 2 else None
        _run(state, Deposit(at_ms=T, project=P, customer_id=cid, amount=3, expires_at_ms=expires))
        _run(state, Deduct(at_ms=T, project=P, customer_id=cid, amount=3, transaction_id=f"t{n}"))


def _reference_wallets(state: LedgerState, cid: str, now_ms: int) -> dict[str, tuple[int, int, int, int]]:
    """The view's per-wallet numbers as the old customer_view computed them: every valid bucket."""
    out: dict[str, list[int]] = {}
    for b in state.projects[P].customers[cid].buckets:
        if bucket_valid_at(b, now_ms):
            w = out.setdefault(b.wallet, [0, 0, 0, 0])
            for k, v in enumerate((b.total, b.used, b.frozen, b.available)):
                w[k] += v
    return {name: (w[0], w[1], w[2], w[3]) for name, w in out.items()}


@pytest.fixture(scope="module")
def heavy() -> LedgerState:
    state = LedgerState()
    _topped_up(state, SPENT)
    _run(state, Deposit(at_ms=T, project=P, customer_id="heavy", amount=100))
    return state


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]

    def counted(bucket, at_ms):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return bucket_valid_at(bucket, at_ms)

    monkeypatch.setattr(common, "bucket_valid_at", counted)
    monkeypatch.setattr(queries, "bucket_valid_at", counted)
    return calls


def test_deduct_and_view_touch_a_bounded_number_of_buckets(heavy: LedgerState, monkeypatch: pytest.MonkeyPatch) -> None:
    customer = heavy.projects[P].customers["heavy"]
    assert len(customer.buckets) == SPENT + 1 and len(customer.live) == 1
    calls = _counting(monkeypatch)
    _run(heavy, Deduct(at_ms=T + 1, project=P, customer_id="heavy", amount=5, transaction_id="hot"))
    assert calls[0] == 1  # one bucket examined, not 20,001
    calls[0] = 0
    view = customer_view(heavy, P, "heavy", T + 2)
    assert calls[0] == 1
    assert not isinstance(view, queries.Rejected)
    assert [a.account_id for a in view.accounts] == [account_id(customer.live[0].lsn)]
    # the totals still count every valid bucket, spent ones included (CONTRACT §3.13)
    assert (view.balance.total, view.balance.used, view.balance.available) == (3 * SPENT + 100, 3 * SPENT + 5, 95)
    assert {n: (w.total, w.used, w.frozen, w.available) for n, w in view.wallets.items()} == _reference_wallets(
        heavy, "heavy", T + 2
    )
    body = msgspec.json.encode(view)
    assert len(body) < 1500, len(body)  # was ~4 MB: every bucket ever made was listed
    assert check_invariants(heavy) == []


def test_refund_brings_a_spent_bucket_back_and_expiry_closes_spent_ones() -> None:
    state = LedgerState()
    _run(state, Deposit(at_ms=T, project=P, customer_id="c", amount=10, expires_at_ms=T + 100, source="a"))
    _run(state, Deposit(at_ms=T, project=P, customer_id="c", amount=10, source="b", starts_at_ms=T - 5))
    _run(state, Deduct(at_ms=T, project=P, customer_id="c", amount=15, transaction_id="x"))
    customer = state.projects[P].customers["c"]
    assert [b.source for b in customer.live] == ["b"] and customer.spent is not None
    _run(state, Refund(at_ms=T + 1, project=P, customer_id="c", refund_id="r", transaction_id="x", amount=7))
    # newest charge first, reverse allocation order: b gets 5 back, then a gets 2
    assert [(b.source, b.available) for b in customer.live] == [("a", 2), ("b", 10)] and customer.spent is None
    _run(state, Freeze(at_ms=T + 2, project=P, customer_id="c", amount=2, transaction_id="f", wallet="default"))
    _run(state, Deduct(at_ms=T + 3, project=P, customer_id="c", amount=10, transaction_id="y"))
    assert [b.source for b in customer.live] == ["a"]  # a holds frozen credit only; b is spent
    _run(state, ExpireBuckets(at_ms=T + 100, project=P, customer_id="c"))
    assert customer.live == [] and customer.bucket_by_lsn(1).is_expired  # frozen credit expired too
    view = customer_view(state, P, "c", T + 100)
    assert not isinstance(view, queries.Rejected)
    assert (view.balance.total, view.balance.used, view.accounts) == (10, 10, [])
    assert [(s.source, s.total, s.starts_at) for s in view.wallets["default"].sources] == [("b", 10, format_ms(T - 5))]
    _run(state, Void(at_ms=T + 101, project=P, customer_id="c", void_id="v", account_id=account_id(2)))
    assert customer.spent is None and customer.open_total == 0
    assert check_invariants(state) == []
    restored = decode_state(encode_state(state))
    assert digest(restored) == digest(state) and check_invariants(restored) == []


def test_snapshot_round_trip_rebuilds_the_indexes(heavy: LedgerState) -> None:
    restored = decode_state(encode_state(heavy))
    customer = restored.projects[P].customers["heavy"]
    assert len(customer.live) == 1 and customer.spent is not None and customer.spent.count == SPENT
    assert customer_view(restored, P, "heavy", T + 5) == customer_view(heavy, P, "heavy", T + 5)
    assert check_invariants(restored) == []
