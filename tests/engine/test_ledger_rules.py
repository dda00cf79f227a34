"""Example tests for every money rule of CONTRACT §3 and §7, named after the rule.

Method: drive engine.core.ledger.apply through tests.engine.helpers.Driver (which also checks that a
rejection or a replay leaves the digest unchanged) and assert exact bodies, balances and ledger
entries. Each test fails if its rule is broken: the numbers are chosen so a wrong order, a wrong
bucket or a missing entry shows.
"""

from __future__ import annotations

import msgspec
import pytest

from engine.core.codes import status_of
from engine.core.commands import (
    AutoSettle,
    Consume,
    Deduct,
    Deposit,
    ExpireBuckets,
    Freeze,
    Unfreeze,
)
from engine.core.limits import AMOUNT_MAX
from engine.core.queries import customer_view, ledger_page
from engine.core.results import Applied, ConsumeResponse, Detail, Rejected
from engine.core.timefmt import format_ms
from engine.core.timers import due_commands, next_due_ms, pop_due_customers
from tests.engine.helpers import T0_MS, Driver, P

T = T0_MS


def dep(cid="c1", amount=100, at=T, **kw) -> Deposit:
    return Deposit(at_ms=at, project=P, customer_id=cid, amount=amount, **kw)


def frz(tid, amount, cid="c1", at=T, **kw) -> Freeze:
    return Freeze(at_ms=at, project=P, customer_id=cid, amount=amount, transaction_id=tid, **kw)


def ded(tid, amount, cid="c1", at=T, **kw) -> Deduct:
    return Deduct(at_ms=at, project=P, customer_id=cid, amount=amount, transaction_id=tid, **kw)


def con(tid, actual=None, cid="c1", at=T) -> Consume:
    return Consume(at_ms=at, project=P, customer_id=cid, transaction_id=tid, actual_amount=actual)


def unf(tid, cid="c1", at=T) -> Unfreeze:
    return Unfreeze(at_ms=at, project=P, customer_id=cid, transaction_id=tid)


def det(lsn, amount, wallet="default", source="default") -> Detail:
    return Detail(account_id=f"acc_{lsn}", wallet=wallet, source=source, credit_type=wallet, amount=amount)


def balance(d: Driver, cid="c1", now=T) -> tuple[int, int, int, int]:
    view = customer_view(d.state, P, cid, now)
    assert not isinstance(view, Rejected), view
    b = view.balance
    return (b.total, b.used, b.frozen, b.available)


def entries(d: Driver, cid="c1", **filters) -> list[tuple[str, int, str, str | None]]:
    """All entries oldest first as (op, amount, account_id, transaction_id)."""
    page = ledger_page(
        d.state, P, cid, limit=100, cursor=None,
        operation_type=filters.get("operation_type"), transaction_id=filters.get("transaction_id"),
    )  # fmt: skip
    assert not isinstance(page, Rejected)
    return [(e.operation_type, e.amount, e.account_id, e.transaction_id) for e in reversed(page.items)]


# -- §3.1 amounts ------------------------------------------------------------------------------


def test_3_1_deposit_pushing_customer_total_past_max_is_amount_too_large():
    d = Driver()
    d.ok(dep(amount=AMOUNT_MAX - 5))
    r = d.rejected(dep(amount=6, wallet="other"))
    assert (status_of(r.code), r.code) == (400, "amount_too_large")
    d.ok(dep(amount=5))  # exactly the max is fine
    assert balance(d) == (AMOUNT_MAX, 0, 0, AMOUNT_MAX)


# -- §3.3 / validation order ------------------------------------------------------------------


def test_3_3_unknown_customer_is_404_before_anything_else():
    d = Driver()
    d.ok(dep(cid="c2"))
    d.ok(frz("t", 10, cid="c2"))
    for cmd in (frz("t", 10), ded("t", 10), frz("new", 10)):
        r = d.rejected(cmd)
        assert (status_of(r.code), r.code) == (404, "customer_not_found")
    assert isinstance(customer_view(d.state, P, "c1", T), Rejected)
    assert customer_view(d.state, P, "c1", T).code == "customer_not_found"


def test_3_3_replay_is_answered_even_when_balance_no_longer_covers_it():
    d = Driver()
    d.ok(dep(amount=10))
    first = d.ok(ded("t", 10))
    r = d.run(ded("t", 10))
    assert r == Applied(msgspec.structs.replace(first, is_idempotent_replay=True), False)


# -- §3.4 wallet selection --------------------------------------------------------------------


def test_3_4_no_selection_draws_across_every_wallet():
    d = Driver()
    d.ok(dep(amount=30, wallet="a"))
    d.ok(dep(amount=30, wallet="b"))
    body = d.ok(ded("t", 50))
    assert body.deduct_details == [det(1, 30, "a"), det(2, 20, "b")]


def test_3_4_credit_types_shortfall_is_insufficient_balance_in_selected_credit_types():
    d = Driver()
    d.ok(dep(amount=30, wallet="a"))
    d.ok(dep(amount=30, wallet="b"))
    d.ok(dep(amount=30, wallet="c"))
    r = d.rejected(ded("t", 70, credit_types=("b", "a")))
    assert r == Rejected("insufficient_balance_in_selected_credit_types", r.message,
        {"wallet": None, "requested": 70, "available": 60, "credit_types": ["a", "b"]},
    )  # fmt: skip
    body = d.ok(ded("t", 60, credit_types=("b", "a")))
    assert body.deduct_details == [det(1, 30, "a"), det(2, 30, "b")]


def test_3_4_wallet_selection_and_insufficient_balance_details():
    d = Driver()
    d.ok(dep(amount=30, wallet="a"))
    d.ok(dep(amount=50, wallet="b"))
    r = d.rejected(frz("t", 40, wallet="a"))
    assert (status_of(r.code), r.code, r.details) == (400, "insufficient_balance", {"wallet": "a", "requested": 40, "available": 30})
    r = d.rejected(frz("t", 81))
    assert r.details == {"wallet": None, "requested": 81, "available": 80}
    assert d.ok(frz("t", 40, wallet="b")).freeze_details == [det(2, 40, "b")]


# -- §3.5 windows ---------------------------------------------------------------------------


def test_3_5_bucket_spendable_only_inside_its_window_expiry_exclusive():
    d = Driver()
    d.ok(dep(amount=10, starts_at_ms=T + 1000, expires_at_ms=T + 2000))
    assert d.rejected(ded("t", 1, at=T + 999)).details["available"] == 0
    assert balance(d, now=T + 999) == (0, 0, 0, 0)
    assert balance(d, now=T + 1000) == (10, 0, 0, 10)
    assert balance(d, now=T + 1999) == (10, 0, 0, 10)
    assert balance(d, now=T + 2000) == (0, 0, 0, 0)  # §7.3: never valid at expires_at
    assert d.rejected(ded("t", 1, at=T + 2000)).code == "insufficient_balance"
    d.ok(ded("t", 1, at=T + 1999))


def test_3_5_expires_not_after_starts_is_rejected():
    d = Driver()
    r = d.rejected(dep(starts_at_ms=T + 10, expires_at_ms=T + 10))
    assert (status_of(r.code), r.code) == (400, "invalid_datetime_range")


# -- §3.6 allocation order ------------------------------------------------------------------


def test_3_6_allocation_soonest_expiry_first_no_expiry_last_then_oldest():
    d = Driver()
    d.ok(dep(amount=10))  # acc_1: no expiry
    d.ok(dep(amount=10, expires_at_ms=T + 9000))  # acc_2
    d.ok(dep(amount=10, expires_at_ms=T + 5000))  # acc_3: soonest
    d.ok(dep(amount=10))  # acc_4: no expiry, newer than acc_1
    d.ok(dep(amount=10, expires_at_ms=T + 5000))  # acc_5: ties acc_3, newer
    body = d.ok(frz("t", 45))
    assert body.freeze_details == [det(3, 10), det(5, 10), det(2, 10), det(1, 10), det(4, 5)]


# -- §3.7 consume ---------------------------------------------------------------------------


def test_3_7_consume_partial_charges_allocation_order_and_returns_tail():
    d = Driver()
    d.ok(dep(amount=30, expires_at_ms=T + 10_000))  # acc_1 first
    d.ok(dep(amount=100))  # acc_2
    d.ok(frz("t", 80))  # 30 from acc_1, 50 from acc_2
    body = d.ok(con("t", 40, at=T + 5))
    assert body == ConsumeResponse(
        transaction_id="t", consumed_amount=40, returned_amount=40, overage_amount=None,
        consume_details=[det(1, 30), det(2, 10)], consumed_at=format_ms(T + 5), is_idempotent_replay=False,
    )  # fmt: skip
    assert balance(d) == (130, 40, 0, 90)
    assert entries(d, transaction_id="t") == [
        ("FREEZE", 30, "acc_1", "t"), ("FREEZE", 50, "acc_2", "t"),
        ("CONSUME", 30, "acc_1", "t"), ("CONSUME", 10, "acc_2", "t"), ("UNFREEZE", 40, "acc_2", "t"),
    ]  # fmt: skip
    assert b'"returned_amount":40' in msgspec.json.encode(body)


def test_3_7_full_consume_omits_returned_amount():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60))
    body = d.ok(con("t"))
    assert (body.consumed_amount, body.returned_amount, body.overage_amount) == (60, None, None)
    encoded = msgspec.json.encode(body)
    assert b"returned_amount" not in encoded and b"overage_amount" not in encoded


def test_3_7_consume_overage_is_drawn_from_the_selection_in_one_step():
    d = Driver()
    d.ok(dep(amount=100, wallet="a"))  # acc_1
    d.ok(dep(amount=100, wallet="b"))  # acc_2: outside the selection
    d.ok(dep(amount=20, wallet="a", expires_at_ms=T + 10_000))  # acc_3: first in order
    d.ok(frz("t", 50, wallet="a"))  # 20 from acc_3, 30 from acc_1
    body = d.ok(con("t", 110))
    assert (body.consumed_amount, body.overage_amount, body.returned_amount) == (110, 60, None)
    assert body.consume_details == [det(3, 20, "a"), det(1, 90, "a")]  # overage merged into acc_1
    assert balance(d) == (220, 110, 0, 110)
    assert entries(d, operation_type="CONSUME") == [("CONSUME", 20, "acc_3", "t"), ("CONSUME", 90, "acc_1", "t")]


def test_3_7_overage_not_coverable_is_insufficient_balance_and_changes_nothing():
    d = Driver()
    d.ok(dep(amount=100, wallet="a"))
    d.ok(dep(amount=100, wallet="b"))
    d.ok(frz("t", 50, wallet="a"))
    r = d.rejected(con("t", 151))
    assert (r.code, r.details) == ("insufficient_balance", {"wallet": "a", "requested": 101, "available": 50})
    assert d.ok(con("t", 100)).overage_amount == 50  # the failed try left no trace (§7.1)


def test_3_7_consume_zero_returns_everything_and_ends_consumed():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60))
    body = d.ok(con("t", 0))
    assert (body.consumed_amount, body.returned_amount, body.consume_details) == (0, 60, [])
    assert balance(d) == (100, 0, 0, 100)
    assert d.run(con("t", 0)).body.is_idempotent_replay is True
    assert d.rejected(unf("t")).code == "no_unfreezable_records"  # CONSUMED, not UNFROZEN
    assert d.rejected(con("t", 5)).code == "freeze_records_already_consumed"


# -- §3.8 lifecycle and replays ----------------------------------------------------------------


def test_3_8_freeze_replay_returns_original_response_in_any_later_state():
    d = Driver()
    d.ok(dep(amount=100))
    first = d.ok(frz("t", 60, description="x", unfreeze_after_s=100))
    replay = msgspec.structs.replace(first, is_idempotent_replay=True)
    assert d.run(frz("t", 60, at=T + 5)) == Applied(replay, False)  # TTL/description ignored
    d.ok(con("t", 10))
    assert d.run(frz("t", 60, at=T + 50, business_type="TASK")) == Applied(replay, False)


def test_3_8_consume_again_same_or_omitted_amount_replays_original():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60))
    first = d.ok(con("t", 40, at=T + 1))
    replay = Applied(msgspec.structs.replace(first, is_idempotent_replay=True), False)
    assert d.run(con("t", 40, at=T + 99)) == replay
    assert d.run(con("t", None, at=T + 99)) == replay
    r = d.rejected(con("t", 60, at=T + 99))
    assert (status_of(r.code), r.code) == (400, "freeze_records_already_consumed")


def test_3_8_consume_after_unfreeze_is_rejected():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60))
    d.ok(unf("t"))
    r = d.rejected(con("t"))
    assert (status_of(r.code), r.code) == (400, "no_consumable_freeze_records")


def test_3_8_consume_after_auto_unfreeze_is_freeze_auto_unfrozen():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60, unfreeze_after_s=10))
    assert d.tick("c1", T + 10_000) == [AutoSettle(at_ms=T + 10_000, project=P, customer_id="c1", transaction_id="t")]
    r = d.rejected(con("t", at=T + 20_000))
    assert (status_of(r.code), r.code) == (400, "freeze_auto_unfrozen")
    replay = d.run(unf("t", at=T + 30_000))  # unfreeze again -> replay of the automatic unfreeze
    assert replay.logged is False and replay.body.unfrozen_at == format_ms(T + 10_000)


def test_3_8_unfreeze_again_replays_and_unfreeze_after_consume_is_rejected():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("a", 10))
    d.ok(frz("b", 10))
    first = d.ok(unf("a", at=T + 3))
    assert first.unfrozen_amount == 10 and first.unfreeze_details == [det(1, 10)]
    assert d.run(unf("a", at=T + 9)) == Applied(msgspec.structs.replace(first, is_idempotent_replay=True), False)
    d.ok(con("b", at=T + 9))
    r = d.rejected(unf("b", at=T + 9))
    assert (status_of(r.code), r.code) == (400, "no_unfreezable_records")


def test_3_8_consume_or_unfreeze_of_unknown_id_is_400_never_404():
    d = Driver()
    d.ok(dep(amount=100))
    assert d.rejected(con("nope")).code == "no_consumable_freeze_records"
    assert d.rejected(unf("nope")).code == "no_unfreezable_records"
    assert status_of(d.rejected(con("nope", cid=None)).code) == 400
    assert status_of(d.rejected(unf("nope", cid=None)).code) == 400
    assert d.rejected(con("nope", cid="ghost")).code == "no_consumable_freeze_records"


# -- §3.9 idempotency ---------------------------------------------------------------------------


def test_3_9_same_transaction_id_for_another_customer_is_409():
    d = Driver()
    d.ok(dep(cid="c1"))
    d.ok(dep(cid="c2"))
    d.ok(frz("t", 10, cid="c1"))
    for cmd in (frz("t", 10, cid="c2"), ded("t", 10, cid="c2")):
        r = d.rejected(cmd)
        assert (status_of(r.code), r.code, r.details) == (409, "transaction_conflict", {"field": "customer_id"})


def test_3_9_same_id_with_other_amount_or_selection_is_409_naming_the_field():
    d = Driver()
    d.ok(dep(amount=100, wallet="a"))
    d.ok(frz("f", 10, credit_types=("a",)))
    d.ok(ded("d", 10, wallet="a"))
    cases = [
        (frz("f", 11, credit_types=("a",)), "amount"),
        (frz("f", 10), "credit_types"),
        (frz("f", 10, credit_types=("a", "b")), "credit_types"),
        (frz("f", 10, wallet="a"), "wallet"),
        (ded("d", 10), "wallet"),
        (ded("d", 12, wallet="a"), "amount"),
    ]
    for cmd, field in cases:
        r = d.rejected(cmd)
        assert (status_of(r.code), r.code, r.details) == (409, "transaction_conflict", {"field": field}), cmd
    assert d.run(frz("f", 10, credit_types=("a", "a"))).logged is False  # same set: replay


def test_3_9_deduct_id_reused_for_freeze_and_reverse_is_409():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(ded("d", 10))
    d.ok(frz("f", 10))
    assert d.rejected(frz("d", 10)).code == "transaction_conflict"
    assert d.rejected(ded("f", 10)).code == "transaction_conflict"


def test_3_9_deduct_replay_ignores_descriptive_fields():
    d = Driver()
    d.ok(dep(amount=100))
    first = d.ok(ded("d", 10, business_type="TASK", description="x"))
    r = d.run(ded("d", 10, at=T + 77))
    assert r == Applied(msgspec.structs.replace(first, is_idempotent_replay=True), False)


def test_3_9_failed_request_leaves_no_record_so_the_id_may_succeed_later():
    d = Driver()
    d.ok(dep(amount=5))
    d.rejected(ded("d", 10))
    d.ok(dep(amount=5))
    assert d.ok(ded("d", 10)).is_idempotent_replay is False


def test_7_8_deposit_replay_ignores_descriptive_fields_and_conflicts_on_economic_ones():
    d = Driver()
    first = d.ok(dep(amount=100, idempotency_key="k", name="A", description="x", metadata={"a": 1}))
    replay = d.run(dep(amount=100, idempotency_key="k", name="B", description="y", at=T + 5))
    assert replay == Applied(msgspec.structs.replace(first, is_idempotent_replay=True), False)
    cases = [
        (dep(amount=101, idempotency_key="k"), "amount"),
        (dep(amount=100, idempotency_key="k", wallet="w"), "wallet"),
        (dep(amount=100, idempotency_key="k", source="s"), "source"),
        (dep(amount=100, idempotency_key="k", starts_at_ms=T), "starts_at"),
        (dep(amount=100, idempotency_key="k", expires_at_ms=T + 9), "expires_at"),
        (dep(cid="c2", amount=100, idempotency_key="k"), "customer_id"),
    ]
    for cmd, field in cases:
        r = d.rejected(cmd)
        assert (status_of(r.code), r.code, r.details) == (409, "transaction_conflict", {"field": field}), cmd
    assert customer_view(d.state, P, "c2", T).code == "customer_not_found"  # §7.1: no customer made


def test_3_9_deposit_without_key_is_never_deduplicated():
    d = Driver()
    a = d.ok(dep(amount=100))
    b = d.ok(dep(amount=100))
    assert (a.account_id, b.account_id, b.total_amount) == ("acc_1", "acc_2", 200)
    assert balance(d) == (200, 0, 0, 200)


# -- §3.10 TTLs ---------------------------------------------------------------------------------


def test_3_10_auto_consume_fires_once_at_due_time():
    d = Driver()
    d.ok(dep(amount=100))
    body = d.ok(frz("t", 60, consume_after_s=5))
    assert (body.consume_after, body.unfreeze_after) == (format_ms(T + 5000), None)
    assert d.tick("c1", T + 4999) == []
    assert next_due_ms(d.state) == T + 5000
    assert d.tick("c1", T + 5000) == [AutoSettle(at_ms=T + 5000, project=P, customer_id="c1", transaction_id="t")]
    assert d.tick("c1", T + 99_000) == []
    assert next_due_ms(d.state) is None
    assert balance(d) == (100, 60, 0, 40)
    # §7.2: consume after an automatic consume replays it; another amount is rejected.
    r = d.run(con("t", at=T + 6000))
    assert r.logged is False and r.body.consumed_amount == 60 and r.body.consumed_at == format_ms(T + 5000)
    assert d.rejected(con("t", 59)).code == "freeze_records_already_consumed"


def test_3_10_auto_settle_after_manual_settle_is_a_no_op_and_not_due():
    d = Driver()
    d.ok(dep(amount=100))
    d.ok(frz("t", 60, unfreeze_after_s=5))
    d.ok(con("t", 10))
    assert due_commands(d.state, P, "c1", T + 10_000) == []
    assert d.run(AutoSettle(at_ms=T + 5000, project=P, customer_id="c1", transaction_id="t")) == Applied(None, False)


def test_3_10_pop_due_customers_uses_the_global_heap_in_due_order():
    d = Driver()
    for cid in ("c1", "c2", "c3"):
        d.ok(dep(cid=cid, amount=100))
    d.ok(frz("a", 1, cid="c2", unfreeze_after_s=2))
    d.ok(frz("b", 1, cid="c1", unfreeze_after_s=3))
    d.ok(frz("c", 1, cid="c3", unfreeze_after_s=9))
    assert next_due_ms(d.state) == T + 2000
    assert pop_due_customers(d.state, T + 1999) == []
    assert pop_due_customers(d.state, T + 5000) == [(P, "c2"), (P, "c1")]
    d.tick("c2", T + 5000)
    d.tick("c1", T + 5000)
    assert next_due_ms(d.state) == T + 9000


# -- §3.11 / §7.4 / §7.5 expiry ------------------------------------------------------------------


def test_3_11_expiry_writes_off_unspent_unfrozen_remainder_once():
    d = Driver()
    d.ok(dep(amount=100, expires_at_ms=T + 1000))
    d.ok(ded("d", 10))
    d.ok(frz("f", 30))
    assert d.tick("c1", T + 1000) == [ExpireBuckets(at_ms=T + 1000, project=P, customer_id="c1")]
    assert d.tick("c1", T + 5000) == []
    assert d.run(ExpireBuckets(at_ms=T + 5000, project=P, customer_id="c1")) == Applied(None, False)
    assert entries(d, operation_type="EXPIRE") == [("EXPIRE", 60, "acc_1", None)]
    page = ledger_page(d.state, P, "c1", limit=1, cursor=None, operation_type="EXPIRE", transaction_id=None)
    assert page.items[0].created_at == format_ms(T + 1000)
    assert balance(d, now=T + 1000) == (0, 0, 0, 0)  # §7.4: gone from the view, frozen included


def test_3_11_frozen_credit_in_expired_bucket_stays_consumable_and_returns_are_written_off():
    d = Driver()
    d.ok(dep(amount=100, expires_at_ms=T + 1000))
    d.ok(dep(amount=100, wallet="w"))
    d.ok(frz("f", 50, credit_types=("default",)))
    d.tick("c1", T + 2000)
    body = d.ok(con("f", 20, at=T + 3000))
    assert (body.consumed_amount, body.returned_amount) == (20, 30)
    assert entries(d)[-3:] == [
        ("CONSUME", 20, "acc_1", "f"), ("UNFREEZE", 30, "acc_1", "f"), ("EXPIRE", 30, "acc_1", None),
    ]  # fmt: skip
    bucket = d.state.projects[P].customers["c1"].buckets[0]
    assert (bucket.total, bucket.used, bucket.frozen, bucket.expired) == (100, 20, 0, 80)
    assert balance(d, now=T + 3000) == (100, 0, 0, 100)


def test_7_5_deposit_already_expired_writes_grant_and_expire_in_one_command():
    d = Driver()
    body = d.ok(dep(amount=70, expires_at_ms=T - 1))
    assert (body.total_amount, body.expires_at) == (0, format_ms(T - 1))
    assert entries(d) == [("GRANT", 70, "acc_1", None), ("EXPIRE", 70, "acc_1", None)]
    assert d.state.last_lsn == 1
    assert balance(d) == (0, 0, 0, 0)
    assert due_commands(d.state, P, "c1", T + 10**9) == []


# -- §3.12 ledger --------------------------------------------------------------------------------


def test_3_12_every_entry_field_and_grant_carries_the_idempotency_key():
    d = Driver()
    d.ok(dep(amount=100, idempotency_key="k", description="first", source="promo"))
    d.ok(ded("d", 5, business_type="TASK", description="img"))
    page = ledger_page(d.state, P, "c1", limit=20, cursor=None, operation_type=None, transaction_id=None)
    assert msgspec.to_builtins(page) == {
        "items": [
            {"id": "le_2_0", "operation_type": "CONSUME", "amount": 5, "wallet": "default", "source": "promo",
             "credit_type": "default", "transaction_id": "d", "business_type": "TASK", "description": "img",
             "account_id": "acc_1", "status": "COMPLETED", "created_at": format_ms(T)},
            {"id": "le_1_0", "operation_type": "GRANT", "amount": 100, "wallet": "default", "source": "promo",
             "credit_type": "default", "transaction_id": "k", "business_type": "UNDEFINED",
             "description": "first", "account_id": "acc_1", "status": "COMPLETED", "created_at": format_ms(T)},
        ],
        "total_count": 2, "has_more": False, "next_cursor": None,
    }  # fmt: skip


@pytest.mark.parametrize("deducts", [3, 40])  # below and above INDEX_ENTRIES_MIN
@pytest.mark.parametrize("op", [None, "CONSUME", "GRANT"])
def test_3_12_cursor_pages_never_skip_or_repeat(deducts, op):
    d = Driver()
    d.ok(dep(amount=10_000))
    for k in range(deducts):
        d.ok(ded(f"d{k}", 1))  # every entry has the same timestamp
    seen, cursor = [], None
    expected = entries(d, operation_type=op) if deducts < 90 else None
    while True:
        page = ledger_page(d.state, P, "c1", limit=7, cursor=cursor, operation_type=op, transaction_id=None)
        assert page.total_count == len(expected)
        seen.extend(item.id for item in page.items)
        assert (page.next_cursor is not None) == page.has_more
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == len(expected)
    assert seen == sorted(seen, key=lambda i: tuple(int(x) for x in i.split("_")[1:]), reverse=True)


def test_7_9_cursor_for_another_customer_filter_or_project_or_malformed_is_invalid_cursor():
    d = Driver()
    for cid in ("c1", "c2"):
        d.ok(dep(cid=cid, amount=100))
        for k in range(3):
            d.ok(ded(f"{cid}-{k}", 1, cid=cid))
    page = ledger_page(d.state, P, "c1", limit=1, cursor=None, operation_type=None, transaction_id=None)
    cursor = page.next_cursor
    bad = [
        (P, "c2", cursor, None, None),
        (P, "c1", cursor, "CONSUME", None),
        (P, "c1", cursor, None, "c1-0"),
        (P, "c1", cursor[:-2], None, None),
        (P, "c1", "!!", None, None),
        (P, "c1", cursor + "A", None, None),
    ]
    for project, cid, cur, op, tid in bad:
        r = ledger_page(d.state, project, cid, limit=1, cursor=cur, operation_type=op, transaction_id=tid)
        assert isinstance(r, Rejected) and (status_of(r.code), r.code) == (400, "invalid_cursor"), (cid, cur, op, tid)
    ok = ledger_page(d.state, P, "c1", limit=1, cursor=cursor, operation_type=None, transaction_id=None)
    assert ok.items[0].id == "le_3_0"


def test_3_12_transaction_filter_matches_both_namespaces():
    d = Driver()
    d.ok(dep(amount=100, idempotency_key="x"))
    d.ok(frz("x", 10))
    assert entries(d, transaction_id="x") == [("GRANT", 100, "acc_1", "x"), ("FREEZE", 10, "acc_1", "x")]
    assert entries(d, transaction_id="x", operation_type="FREEZE") == [("FREEZE", 10, "acc_1", "x")]


# -- §3.13 balances ------------------------------------------------------------------------------


def test_3_13_customer_view_superset_shape():
    d = Driver()
    d.ok(dep(amount=100, source="admin", name="Al", email="a@x", metadata={"k": [1]}))
    d.ok(dep(amount=50, source="trial", expires_at_ms=T + 10_000, at=T + 1))
    d.ok(dep(amount=40, source="trial", starts_at_ms=T - 5, expires_at_ms=T + 20_000, at=T + 1))
    d.ok(dep(amount=7, wallet="video", starts_at_ms=T + 50_000, at=T + 1))  # not started: not counted
    d.ok(frz("f", 70, at=T + 1))  # 50 acc_2, 20 acc_3
    d.ok(ded("d", 30, wallet="default", at=T + 1))  # 20 acc_3, 10 acc_1
    view = msgspec.to_builtins(customer_view(d.state, P, "c1", T + 5))
    assert view["balance"] == {"total": 190, "used": 30, "frozen": 70, "available": 90}
    assert [(a["account_id"], a["used"], a["frozen"], a["available"]) for a in view["accounts"]] == [
        ("acc_1", 10, 0, 90), ("acc_2", 0, 50, 0), ("acc_3", 20, 20, 0),
    ]  # fmt: skip
    assert view["accounts"][0]["account_type"] == "CREDIT" and view["accounts"][0]["credit_type"] == "default"
    assert view["wallets"] == {
        "default": {
            "total": 190, "used": 30, "frozen": 70, "available": 90,
            "sources": [
                {"source": "admin", "total": 100, "used": 10, "frozen": 0, "available": 90,
                 "starts_at": None, "expires_at": None},
                {"source": "trial", "total": 90, "used": 20, "frozen": 70, "available": 0,
                 "starts_at": None, "expires_at": format_ms(T + 10_000)},  # acc_2 has no start
            ],
        }
    }  # fmt: skip
    assert (view["id"], view["name"], view["email"], view["metadata"]) == ("c1", "Al", "a@x", {"k": [1]})
    assert view["created_at"] == format_ms(T)


def test_7_10_later_metadata_merges_key_by_key_and_a_replay_changes_nothing():
    d = Driver()
    d.ok(dep(amount=10, name="A", email="a@x", metadata={"plan": "free", "seats": 1}))
    d.ok(dep(amount=10, name="B", email="b@x", metadata={"plan": "pro", "team": "t"}, idempotency_key="k", at=T + 1))
    view = customer_view(d.state, P, "c1", T + 1)
    assert (view.name, view.email) == ("A", "a@x")  # taken only when the customer was created
    assert view.metadata == {"plan": "pro", "seats": 1, "team": "t"}  # the later value wins
    replay = d.run(dep(amount=10, metadata={"plan": "enterprise"}, idempotency_key="k", at=T + 2))
    assert isinstance(replay, Applied) and not replay.logged
    assert customer_view(d.state, P, "c1", T + 2).metadata == {"plan": "pro", "seats": 1, "team": "t"}
    d.ok(dep(amount=10, at=T + 3))  # no metadata: nothing to merge
    assert customer_view(d.state, P, "c1", T + 3).metadata == {"plan": "pro", "seats": 1, "team": "t"}


def test_7_10_merged_metadata_stays_bounded():
    d = Driver()
    d.ok(dep(amount=10, metadata={"a": "x" * 9000}))
    r = d.rejected(dep(amount=10, metadata={"b": "y" * 9000}, at=T + 1))
    assert r.code == "invalid_metadata" and r.details is not None and r.details["field"] == "metadata"
    assert customer_view(d.state, P, "c1", T + 1).balance.total == 10  # the refused deposit wrote nothing
