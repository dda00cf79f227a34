"""The pure half of CONTRACT §11: events derived from logged changes, the outbox, attempt outcomes,
the backoff schedule, signatures, and the hooks section of snapshots and digests.

Method: drive engine.core.ledger.apply through tests/engine/helpers.Driver (which checks that a
rejection or no-op changes nothing), then read the outbox. How it could fail: an event with the
wrong id, type, data or order; an event for a webhook registered later; a replay (fresh state,
same commands) that derives different events; a snapshot that loses or reorders the outbox.
"""

from __future__ import annotations

import msgspec
import pytest

from engine.core.codec import decode_state, encode_state, encode_state_v1
from engine.core.commands import (
    AutoSettle,
    CreateApiKey,
    CreateWebhook,
    Deduct,
    DeleteWebhook,
    Deposit,
    ExpireBuckets,
    Freeze,
    SetAlerts,
    WebhookAttempt,
)
from engine.core.digest import digest
from engine.core.hooks import backoff_ms, deliveries_page, pop_due_deliveries
from engine.core.ledger import apply
from engine.core.limits import WEBHOOK_RETRY_WINDOW_MS
from engine.core.results import Rejected
from engine.core.signing import event_body, sign, verify
from engine.core.state import LedgerState
from tests.engine.helpers import P, T0_MS, Driver

ALL = ("balance.below_threshold", "balance.recovered", "freeze.auto_settled", "credits.expired")


def setup(d: Driver, events: tuple[str, ...] = ALL) -> str:
    d.ok(CreateApiKey(at_ms=T0_MS, project=P, key_id="k1", key_hash="h1"))
    created = d.ok(CreateWebhook(at_ms=T0_MS, project=P, url="http://127.0.0.1:9/h", events=events, secret="s3cret"))
    return created.webhook_id


def outbox(d: Driver, wid: str, customer_id: str = "c1") -> list[tuple[str, str, dict]]:
    assert d.state.hooks is not None
    queue = d.state.hooks.webhooks[wid].queues.get(customer_id)
    return [] if queue is None else [(e.id, e.type, e.data) for e in queue.events]


def deduct(d: Driver, amount: int, txn: str, at_ms: int) -> None:
    d.ok(Deduct(at_ms=at_ms, project=P, customer_id="c1", amount=amount, transaction_id=txn))


def test_thresholds_crossed_down_and_up_give_events_in_order_with_log_ids() -> None:
    d = Driver()
    wid = setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=1000))  # lsn 3
    d.ok(SetAlerts(at_ms=T0_MS + 2, project=P, customer_id="c1", wallet=None, thresholds=(500, 100)))  # lsn 4
    deduct(d, 450, "t1", T0_MS + 3)  # lsn 5: 550, above both
    deduct(d, 500, "t2", T0_MS + 4)  # lsn 6: 50, below 500 then 100
    d.ok(Deposit(at_ms=T0_MS + 5, project=P, customer_id="c1", amount=1000))  # lsn 7: 1050
    base = {"customer_id": "c1", "wallet": None}
    assert outbox(d, wid) == [
        ("evt_6_0", "balance.below_threshold", {**base, "threshold": 500, "available": 50}),
        ("evt_6_1", "balance.below_threshold", {**base, "threshold": 100, "available": 50}),
        ("evt_7_0", "balance.recovered", {**base, "threshold": 100, "available": 1050}),
        ("evt_7_1", "balance.recovered", {**base, "threshold": 500, "available": 1050}),
    ]
    # Replay: the same commands on a fresh state derive the same events and the same digest.
    replayed = LedgerState()
    for lsn, command in d.history:
        apply(replayed, lsn, command)  # type: ignore[arg-type]  # history holds AnyCommand members
    assert digest(replayed) == digest(d.state)
    again = Driver()
    again.state = replayed
    assert outbox(again, wid) == outbox(d, wid)


def test_a_rule_set_while_below_starts_below_without_an_event_and_wallet_rules_are_separate() -> None:
    d = Driver()
    wid = setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=50, wallet="a"))
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=500, wallet="b"))
    view = d.ok(SetAlerts(at_ms=T0_MS + 2, project=P, customer_id="c1", wallet="a", thresholds=(100,)))
    assert [(r.wallet, r.thresholds, r.below) for r in view.rules] == [("a", [100], [100])]
    assert outbox(d, wid) == []
    d.ok(Deposit(at_ms=T0_MS + 3, project=P, customer_id="c1", amount=60, wallet="a"))  # a: 110
    deduct(d, 400, "t1", T0_MS + 4)  # oldest bucket first: a's 50, then 350 of b; a keeps 60
    assert [(e[0], e[1], e[2]["wallet"], e[2]["available"]) for e in outbox(d, wid)] == [
        ("evt_6_0", "balance.recovered", "a", 110),
        ("evt_7_0", "balance.below_threshold", "a", 60),
    ]


def test_expiry_and_auto_settle_events_and_subscriptions() -> None:
    d = Driver()
    wid_all = setup(d)
    wid_exp = d.ok(CreateWebhook(at_ms=T0_MS, project=P, url="http://x/", events=("credits.expired",), secret="s")).webhook_id
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=70, expires_at_ms=T0_MS + 1000))  # lsn 4
    d.ok(Freeze(at_ms=T0_MS + 2, project=P, customer_id="c1", amount=30, transaction_id="f1", consume_after_s=1))
    fired = d.tick("c1", T0_MS + 5000)
    assert [type(c) for c in fired] == [ExpireBuckets, AutoSettle]
    assert outbox(d, wid_all) == [
        ("evt_6_0", "credits.expired", {"customer_id": "c1", "account_id": "acc_4", "wallet": "default",
                                        "source": "default", "amount": 40}),
        ("evt_7_0", "freeze.auto_settled", {"customer_id": "c1", "transaction_id": "f1", "action": "consume", "amount": 30}),
    ]  # fmt: skip
    assert [e[0] for e in outbox(d, wid_exp)] == ["evt_6_0"]


def test_a_webhook_gets_only_later_events_and_limits_refuse() -> None:
    d = Driver()
    d.ok(CreateApiKey(at_ms=T0_MS, project=P, key_id="k1", key_hash="h1"))
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=100, expires_at_ms=T0_MS + 10))
    d.tick("c1", T0_MS + 20)  # expired before any webhook existed
    wid = d.ok(CreateWebhook(at_ms=T0_MS + 30, project=P, url="http://x/", events=ALL, secret="s")).webhook_id
    assert outbox(d, wid) == []
    assert d.rejected(CreateWebhook(at_ms=T0_MS + 30, project="nope", url="http://x/", events=ALL, secret="s")).code == "project_not_found"
    assert d.rejected(SetAlerts(at_ms=T0_MS + 30, project=P, customer_id="c9", wallet=None, thresholds=(1,))).code == "customer_not_found"
    assert d.rejected(DeleteWebhook(at_ms=T0_MS + 30, webhook_id="wh_999")).code == "webhook_not_found"
    for _ in range(9):
        d.ok(CreateWebhook(at_ms=T0_MS + 30, project=P, url="http://x/", events=ALL, secret="s"))
    assert d.rejected(CreateWebhook(at_ms=T0_MS + 30, project=P, url="http://x/", events=ALL, secret="s")).code == "too_many_webhooks"


def test_backoff_schedule_doubles_from_1s_to_a_1h_cap() -> None:
    assert [backoff_ms(n) for n in range(1, 15)] == [
        1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000, 1024000, 2048000, 3600000, 3600000,
    ]  # fmt: skip
    assert backoff_ms(10_000) == 3_600_000


def _attempt(d: Driver, wid: str, event_id: str, status: int, at_ms: int):  # type: ignore[no-untyped-def]
    return d.run(WebhookAttempt(at_ms=at_ms, project=P, customer_id="c1", webhook_id=wid, event_id=event_id, status=status))


def test_attempts_retry_with_backoff_deliver_in_order_and_give_up_after_3_days() -> None:
    d = Driver()
    wid = setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=1000))
    d.ok(SetAlerts(at_ms=T0_MS + 2, project=P, customer_id="c1", wallet=None, thresholds=(500,)))
    deduct(d, 600, "t1", T0_MS + 3)  # evt_5_0 below
    d.ok(Deposit(at_ms=T0_MS + 4, project=P, customer_id="c1", amount=600))  # evt_6_0 recovered
    hooks = d.state.hooks
    assert hooks is not None
    assert pop_due_deliveries(hooks, T0_MS + 10, set(), 10) == [(wid, "c1")]
    assert pop_due_deliveries(hooks, T0_MS + 10, set(), 10) == []  # popped: in flight now
    assert _attempt(d, wid, "evt_6_0", 200, T0_MS + 20).logged is False  # not the head: no-op
    view = _attempt(d, wid, "evt_5_0", 500, T0_MS + 20).body
    assert (view.outcome, view.attempt, view.next_attempt_at) == ("retry", 1, "2026-04-07T12:00:01.020Z")
    assert pop_due_deliveries(hooks, T0_MS + 1019, set(), 10) == []
    assert pop_due_deliveries(hooks, T0_MS + 1020, set(), 10) == [(wid, "c1")]
    view = _attempt(d, wid, "evt_5_0", 0, T0_MS + 1100).body
    assert (view.outcome, view.attempt, view.next_attempt_at) == ("retry", 2, "2026-04-07T12:00:03.100Z")
    view = _attempt(d, wid, "evt_5_0", 204, T0_MS + 3200).body
    assert view.outcome == "delivered"
    assert [e[0] for e in outbox(d, wid)] == ["evt_6_0"]
    view = _attempt(d, wid, "evt_6_0", 503, T0_MS + 4 + WEBHOOK_RETRY_WINDOW_MS).body
    assert (view.outcome, view.next_attempt_at) == ("failed", None)
    assert outbox(d, wid) == []
    page = deliveries_page(d.state, wid, limit=2, cursor=None)
    assert not isinstance(page, Rejected)
    assert [(i.event_id, i.outcome) for i in page.items] == [("evt_6_0", "failed"), ("evt_5_0", "delivered")]
    assert page.has_more and page.next_cursor is not None
    rest = deliveries_page(d.state, wid, limit=2, cursor=page.next_cursor)
    assert not isinstance(rest, Rejected)
    assert [(i.attempt, i.status) for i in rest.items] == [(2, 0), (1, 500)] and not rest.has_more
    assert isinstance(deliveries_page(d.state, wid, limit=2, cursor="zz"), Rejected)


def test_snapshot_keeps_the_outbox_and_the_digest_and_deletion_discards() -> None:
    d = Driver()
    wid = setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=1000))
    d.ok(SetAlerts(at_ms=T0_MS + 2, project=P, customer_id="c1", wallet=None, thresholds=(500, 10)))
    deduct(d, 995, "t1", T0_MS + 3)
    _attempt(d, wid, "evt_5_0", 500, T0_MS + 4)
    restored = decode_state(encode_state(d.state))
    assert digest(restored) == digest(d.state)
    again = Driver()
    again.state = restored
    assert outbox(again, wid) == outbox(d, wid) and len(outbox(d, wid)) == 2
    assert restored.hooks is not None and restored.hooks.due  # the head is due again after a restart
    assert restored.projects[P].customers["c1"].alerts == d.state.projects[P].customers["c1"].alerts
    deleted = d.ok(DeleteWebhook(at_ms=T0_MS + 5, webhook_id=wid))
    assert deleted.discarded == 2


def test_a_history_without_hooks_snapshots_as_before() -> None:
    d = Driver()
    d.ok(CreateApiKey(at_ms=T0_MS, project=P, key_id="k1", key_hash="h1"))
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=10))
    data = encode_state_v1(d.state)  # layout 1; layout 2 always has its hooks element (nil here)
    assert msgspec.msgpack.decode(data)[0:1] == [1] and len(msgspec.msgpack.decode(data)) == 5
    assert msgspec.msgpack.decode(encode_state(d.state))[5] is None


def test_signature_round_trip_and_refusals() -> None:
    d = Driver()
    wid = setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=100, expires_at_ms=T0_MS + 2))
    d.tick("c1", T0_MS + 3)
    assert d.state.hooks is not None
    event = d.state.hooks.webhooks[wid].queues["c1"].events[0]
    body = event_body(event)
    assert msgspec.json.decode(body) == {
        "id": "evt_4_0", "type": "credits.expired", "created_at": "2026-04-07T12:00:00.002Z", "project": P,
        "data": {"customer_id": "c1", "account_id": "acc_3", "wallet": "default", "source": "default", "amount": 100},
    }  # fmt: skip
    header = sign("s3cret", 1_775_563_200, body)
    assert header == "t=1775563200,v1=" + __import__("hmac").new(b"s3cret", b"1775563200." + body, "sha256").hexdigest()
    assert verify("s3cret", header, body, now_s=1_775_563_200 + 299)
    assert not verify("s3cret", header, body, now_s=1_775_563_200 + 301)  # too old
    assert not verify("other", header, body, now_s=1_775_563_200)
    assert not verify("s3cret", header, body + b" ", now_s=1_775_563_200)
    for bad in ("", "t=,v1=", "v1=abc", "t=x,v1=00", "t=1775563200"):
        assert not verify("s3cret", bad, body, now_s=1_775_563_200)


@pytest.mark.parametrize("thresholds", [(100, 100), (1, 5)])
def test_thresholds_must_arrive_normalized(thresholds: tuple[int, ...]) -> None:
    d = Driver()
    setup(d)
    d.ok(Deposit(at_ms=T0_MS + 1, project=P, customer_id="c1", amount=10))
    with pytest.raises(AssertionError):
        d.run(SetAlerts(at_ms=T0_MS + 2, project=P, customer_id="c1", wallet=None, thresholds=thresholds))
