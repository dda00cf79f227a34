"""Balance alerts and webhooks (CONTRACT §11): rules, events derived from the log, the outbox.

    CreateWebhook  -> Applied(CreatedWebhook) | Rejected project_not_found, too_many_webhooks
    DeleteWebhook  -> Applied(DeletedWebhook) | Rejected webhook_not_found
    SetAlerts      -> Applied(AlertsView)     | Rejected customer_not_found, too_many_alert_rules
    WebhookAttempt -> Applied(AttemptView)    | Applied(None, False) when it no longer applies

Events are derived here, in the pure core, as a side effect of applying a logged customer command
(`derive_events`, called by ledger.apply): the same log gives the same events with the same ids
(`evt_{lsn}_{i}`, i counting the events of that command), so a crash cannot lose one (the command
is replayed) and replay cannot invent one. Each event is queued at once in the outbox of every
webhook of the project that wants it (subscribed, registered before it); the outbox lives in the
state (snapshot, digest) and shrinks only by logged WebhookAttempt commands, so delivery progress
survives restarts exactly as far as the log does.

Threshold state: every rule keeps which of its thresholds `available` is under (`below`), as of
the customer's last logged change. A logged change that flips one emits `balance.below_threshold`
or `balance.recovered`; setting a rule takes the current side without an event. `available` is
counted as in the balance view (buckets valid at the command's stamp, CONTRACT §3.13), so credit
whose `starts_at` arrives is seen at the customer's next logged change.

Hot path: `state.hooks is None` (no webhook or rule ever) costs one check per command; with hooks,
a customer without rules costs one more (`customer.alerts is None`) unless the command can write
EXPIRE entries or auto-settle.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Final

import msgspec

from engine.core.commands import (
    AutoSettle,
    CreateWebhook,
    Deduct,
    DeleteWebhook,
    Freeze,
    SetAlerts,
    WebhookAttempt,
)
from engine.core.backoff import backoff
from engine.core.common import commit, find_customer, not_found
from engine.core.limits import (
    ALERT_RULES_PER_CUSTOMER_MAX,
    EVENT_TYPES,
    WEBHOOK_PENDING_EVENTS_MAX,
    WEBHOOK_RETRY_CAP_MS,
    WEBHOOK_RETRY_FIRST_MS,
    WEBHOOK_RETRY_WINDOW_MS,
    WEBHOOKS_PER_PROJECT_MAX,
)
from engine.core.results import (
    AlertRuleView,
    AlertsView,
    Applied,
    AttemptPage,
    AttemptView,
    CreatedWebhook,
    DeletedWebhook,
    Rejected,
    WebhookView,
)
from engine.core.hooks_state import (
    AlertRule,
    Attempt,
    Event,
    HooksState,
    Queue,
    Webhook,
    WebhookState,
    webhook_id,
)
from engine.core.state import (
    CONSUMED,
    EXPIRE,
    CustomerState,
    FreezeRecord,
    LedgerState,
    account_id,
    bucket_valid_at,
)
from engine.core.timefmt import format_ms

BELOW: Final = "balance.below_threshold"
RECOVERED: Final = "balance.recovered"
AUTO_SETTLED: Final = "freeze.auto_settled"
EXPIRED: Final = "credits.expired"
assert (BELOW, RECOVERED, AUTO_SETTLED, EXPIRED) == EVENT_TYPES

NOT_LOGGED: Final = Applied(None, False)
DELIVERED: Final = "delivered"
RETRY: Final = "retry"
FAILED: Final = "failed"


def backoff_ms(failures: int) -> int:
    """Delay before the next attempt after `failures` (>= 1) failed ones: 1 s, 2 s, 4 s, ...
    capped at 1 h (CONTRACT §11.3)."""
    return backoff(failures, WEBHOOK_RETRY_FIRST_MS, WEBHOOK_RETRY_CAP_MS)


def _hooks(state: LedgerState) -> HooksState:
    if state.hooks is None:
        state.hooks = HooksState()
    return state.hooks


# -- admin commands --------------------------------------------------------------------------------


def apply_create_webhook(state: LedgerState, lsn: int, command: CreateWebhook) -> Applied | Rejected:
    """Register a webhook for an existing project (CONTRACT §11.1), at most
    WEBHOOKS_PER_PROJECT_MAX per project."""
    if command.project not in state.projects:
        return Rejected("project_not_found", f"no project {command.project!r}", {"project": command.project})
    hooks = state.hooks
    count = 0 if hooks is None else len(hooks.by_project.get(command.project, ()))
    if count >= WEBHOOKS_PER_PROJECT_MAX:
        return Rejected("too_many_webhooks", f"a project has at most {WEBHOOKS_PER_PROJECT_MAX} webhooks",
                        {"limit": WEBHOOKS_PER_PROJECT_MAX})  # fmt: skip
    assert all(kind in EVENT_TYPES for kind in command.events), command.events
    webhook = Webhook(lsn, command.project, command.url, command.events, command.secret, command.at_ms)
    add_webhook(_hooks(state), WebhookState(webhook))
    commit(state, None, lsn)
    return Applied(
        CreatedWebhook(webhook_id=webhook_id(lsn), project=webhook.project, url=webhook.url,
                       events=list(webhook.events), created_at=format_ms(webhook.created_at_ms),
                       secret=webhook.secret),
        True,
    )  # fmt: skip


def add_webhook(hooks: HooksState, entry: WebhookState) -> None:
    """Index a webhook (apply and snapshot load); its queues' heads become due."""
    wid = webhook_id(entry.webhook.lsn)
    hooks.webhooks[wid] = entry
    hooks.by_project.setdefault(entry.webhook.project, []).append(wid)
    for customer_id, queue in entry.queues.items():
        heapq.heappush(hooks.due, (queue.next_at_ms, wid, customer_id))


def apply_delete_webhook(state: LedgerState, lsn: int, command: DeleteWebhook) -> Applied | Rejected:
    """Remove a webhook and its undelivered events (CONTRACT §11.1). Unknown id: webhook_not_found."""
    hooks = state.hooks
    entry = None if hooks is None else hooks.webhooks.get(command.webhook_id)
    if entry is None:
        return Rejected("webhook_not_found", f"no webhook {command.webhook_id!r}", {"webhook_id": command.webhook_id})
    assert hooks is not None
    del hooks.webhooks[command.webhook_id]
    ids = hooks.by_project[entry.webhook.project]
    ids.remove(command.webhook_id)
    if not ids:
        del hooks.by_project[entry.webhook.project]
    commit(state, None, lsn)
    body = DeletedWebhook(webhook_id=command.webhook_id, deleted_at=format_ms(command.at_ms), discarded=entry.webhook.pending)
    return Applied(body, True)


def webhook_view(wid: str, entry: WebhookState) -> WebhookView:
    hook = entry.webhook
    return WebhookView(webhook_id=wid, project=hook.project, url=hook.url, events=list(hook.events),
                       created_at=format_ms(hook.created_at_ms), pending=hook.pending, dropped=hook.dropped)  # fmt: skip


# -- alert rules -------------------------------------------------------------------------------------


def apply_set_alerts(state: LedgerState, lsn: int, command: SetAlerts) -> Applied | Rejected:
    """Set (or, with no thresholds, remove) one rule of an existing customer (CONTRACT §11.1).
    The rule starts on the side `available` is on now: no event for being under already."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return not_found(command.customer_id)
    rules = customer.alerts or []
    others = [rule for rule in rules if rule.wallet != command.wallet]
    if command.thresholds and len(others) >= ALERT_RULES_PER_CUSTOMER_MAX:
        return Rejected("too_many_alert_rules", f"a customer has at most {ALERT_RULES_PER_CUSTOMER_MAX} alert rules",
                        {"limit": ALERT_RULES_PER_CUSTOMER_MAX})  # fmt: skip
    assert list(command.thresholds) == sorted(set(command.thresholds), reverse=True), command.thresholds
    if command.thresholds:
        available = available_of(customer, command.wallet, command.at_ms)
        below = tuple(threshold for threshold in command.thresholds if available < threshold)
        others.append(AlertRule(command.wallet, command.thresholds, below, command.at_ms))
        others.sort(key=_rule_order)
    customer.alerts = others or None
    _hooks(state)  # rules live in the hooks section of snapshots and the digest
    commit(state, customer, lsn)
    return Applied(alerts_view(customer), True)


def _rule_order(rule: AlertRule) -> tuple[bool, str]:
    return (rule.wallet is not None, rule.wallet or "")  # customer level first, then by wallet


def alerts_view(customer: CustomerState) -> AlertsView:
    rules = [
        AlertRuleView(wallet=rule.wallet, thresholds=list(rule.thresholds), below=list(rule.below),
                      updated_at=format_ms(rule.updated_at_ms))
        for rule in customer.alerts or ()
    ]  # fmt: skip
    return AlertsView(customer_id=customer.customer_id, rules=rules)


def available_of(customer: CustomerState, wallet: str | None, at_ms: int) -> int:
    """`available` of the customer (wallet None) or one wallet at `at_ms` (CONTRACT §3.13):
    over the live buckets valid then. O(live buckets)."""
    return sum(
        bucket.available
        for bucket in customer.live
        if (wallet is None or bucket.wallet == wallet) and bucket_valid_at(bucket, at_ms)
    )


# -- event derivation (called by ledger.apply after a logged customer command) ----------------------

# Commands that can write EXPIRE entries or settle by TTL; a Deduct or Freeze of a customer
# without rules derives nothing, which is the hot path.
_QUIET: Final = (Deduct, Freeze)


def derive_events(state: LedgerState, hooks: HooksState, lsn: int, command: Any) -> None:
    """Events of the logged customer command `command` (applied at `lsn`), queued for every
    webhook that wants them. Order: credits.expired (entry order), freeze.auto_settled, then the
    threshold crossings, customer level first."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return
    extras = customer.extras  # read once: `customer.alerts` is a descriptor (CustomerExtras)
    alerts = None if extras is None else extras.alerts
    if alerts is None and (type(command) in _QUIET or command.project not in hooks.by_project):
        return
    events: list[Event] = []
    _expiry_events(customer, lsn, command, events)
    if type(command) is AutoSettle:
        _settle_event(customer, lsn, command, events)
    if alerts is not None:
        _threshold_events(customer, lsn, command, events)
    if events:
        _enqueue(hooks, events)


def _new_event(lsn: int, events: list[Event], kind: str, command: Any, data: dict[str, Any]) -> None:
    events.append(Event(lsn, len(events), kind, command.at_ms, command.project, command.customer_id, data))


def _expiry_events(customer: CustomerState, lsn: int, command: Any, events: list[Event]) -> None:
    """One credits.expired per EXPIRE entry this command wrote (CONTRACT §11.4), except
    write-offs into a voided bucket (those are voided credit, not expired credit)."""
    entries = customer.entries
    start = len(entries)
    while start > 0 and entries[start - 1].lsn == lsn:
        start -= 1
    voided = customer.voided or {}
    for entry in entries[start:]:
        if entry.op is EXPIRE or entry.op == EXPIRE:
            if entry.bucket_lsn in voided:
                continue
            _new_event(lsn, events, EXPIRED, command, {
                "customer_id": command.customer_id, "account_id": account_id(entry.bucket_lsn),
                "wallet": entry.wallet, "source": entry.source, "amount": entry.amount,
            })  # fmt: skip


def _settle_event(customer: CustomerState, lsn: int, command: AutoSettle, events: list[Event]) -> None:
    record = (customer.txns or {}).get(command.transaction_id)
    assert isinstance(record, FreezeRecord) and record.auto, record
    consumed = record.status == CONSUMED
    _new_event(lsn, events, AUTO_SETTLED, command, {
        "customer_id": command.customer_id, "transaction_id": command.transaction_id,
        "action": "consume" if consumed else "unfreeze",
        "amount": record.consumed_amount if consumed else record.amount,
    })  # fmt: skip


def _threshold_events(customer: CustomerState, lsn: int, command: Any, events: list[Event]) -> None:
    """Flip each rule's `below` where `available` crossed a threshold: going down, thresholds
    from the highest; going up, from the lowest (the order the balance passed them)."""
    assert customer.alerts is not None
    for index, rule in enumerate(customer.alerts):
        available = available_of(customer, rule.wallet, command.at_ms)
        below = tuple(threshold for threshold in rule.thresholds if available < threshold)
        if below == rule.below:
            continue
        was = set(rule.below)
        now = set(below)
        crossed = [(BELOW, t) for t in rule.thresholds if t in now and t not in was]  # descending
        crossed += [(RECOVERED, t) for t in reversed(rule.thresholds) if t in was and t not in now]
        for kind, threshold in crossed:
            _new_event(lsn, events, kind, command, {
                "customer_id": command.customer_id, "wallet": rule.wallet, "threshold": threshold,
                "available": available,
            })  # fmt: skip
        customer.alerts[index] = msgspec.structs.replace(rule, below=below)


def _enqueue(hooks: HooksState, events: list[Event]) -> None:
    """Queue each event in the outbox of every webhook of its project that wants it."""
    project = events[0].project
    for wid in hooks.by_project.get(project, ()):
        entry = hooks.webhooks[wid]
        hook = entry.webhook
        for event in events:
            if event.type not in hook.events:
                continue
            if hook.pending >= WEBHOOK_PENDING_EVENTS_MAX:
                hook.dropped += 1
                continue
            queue = entry.queues.get(event.customer_id)
            if queue is None:
                queue = entry.queues[event.customer_id] = Queue(deque(), 0, event.at_ms)
                heapq.heappush(hooks.due, (queue.next_at_ms, wid, event.customer_id))
            queue.events.append(event)
            hook.pending += 1


# -- delivery outcomes -----------------------------------------------------------------------------


def head_event(state: LedgerState, wid: str, customer_id: str) -> tuple[Webhook, Event] | None:
    """The webhook and the event to try next for (webhook, customer), or None."""
    entry = None if state.hooks is None else state.hooks.webhooks.get(wid)
    queue = None if entry is None else entry.queues.get(customer_id)
    if entry is None or queue is None:
        return None
    return entry.webhook, queue.events[0]


def pop_due_deliveries(hooks: HooksState, now_ms: int, busy: set[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (webhook_id, customer_id) whose head is due at `now_ms` and not in `busy`
    (in flight: the caller pushes them back with `push_due` when their attempt is not logged).
    Stale heap entries (delivered, deleted, rescheduled) are dropped here."""
    found: list[tuple[str, str]] = []
    held: list[tuple[int, str, str]] = []  # due but in flight: kept (its outcome may reschedule it)
    due = hooks.due
    while due and due[0][0] <= now_ms and len(found) < limit:
        item = heapq.heappop(due)
        at_ms, wid, customer_id = item
        entry = hooks.webhooks.get(wid)
        queue = None if entry is None else entry.queues.get(customer_id)
        if queue is None or queue.next_at_ms != at_ms:
            continue
        if (wid, customer_id) in busy:
            held.append(item)
            continue
        found.append((wid, customer_id))
    for item in held:
        heapq.heappush(due, item)
    return found


def push_due(hooks: HooksState, wid: str, customer_id: str) -> None:
    """Offer (webhook, customer) again at its scheduled time (an attempt that was not logged)."""
    entry = hooks.webhooks.get(wid)
    queue = None if entry is None else entry.queues.get(customer_id)
    if queue is not None:
        heapq.heappush(hooks.due, (queue.next_at_ms, wid, customer_id))


def next_due_ms(hooks: HooksState | None) -> int | None:
    return None if hooks is None or not hooks.due else hooks.due[0][0]


def apply_webhook_attempt(state: LedgerState, lsn: int, command: WebhookAttempt) -> Applied:
    """Record an attempt at the head event of (webhook, customer) (CONTRACT §11.3): a 2xx delivers
    it; a failure schedules the next try after backoff_ms(failures), or gives the event up once
    WEBHOOK_RETRY_WINDOW_MS have passed since it happened. Not the head any more (deleted
    webhook, a duplicate report): a no-op, not logged."""
    entry = None if state.hooks is None else state.hooks.webhooks.get(command.webhook_id)
    queue = None if entry is None else entry.queues.get(command.customer_id)
    if entry is None or queue is None or queue.events[0].id != command.event_id:
        return NOT_LOGGED
    assert state.hooks is not None
    event = queue.events[0]
    failures = queue.failures + 1
    next_at_ms: int | None = None
    if 200 <= command.status < 300:
        outcome = DELIVERED
    elif command.at_ms - event.at_ms >= WEBHOOK_RETRY_WINDOW_MS:
        outcome = FAILED
    else:
        outcome = RETRY
        next_at_ms = command.at_ms + backoff_ms(failures)
    attempt = Attempt(lsn, command.at_ms, event.id, event.type, command.customer_id, failures, command.status,
                      outcome, command.error, command.duration_ms, next_at_ms)  # fmt: skip
    entry.attempts.append(attempt)
    if next_at_ms is not None:
        queue.failures = failures
        queue.next_at_ms = next_at_ms
        heapq.heappush(state.hooks.due, (next_at_ms, command.webhook_id, command.customer_id))
    else:
        _pop_head(state.hooks, entry, queue, command, command.at_ms)
    commit(state, None, lsn)
    return Applied(attempt_view(attempt), True)


def _pop_head(hooks: HooksState, entry: WebhookState, queue: Queue, command: WebhookAttempt, now_ms: int) -> None:
    queue.events.popleft()
    entry.webhook.pending -= 1
    queue.failures = 0
    if not queue.events:
        del entry.queues[command.customer_id]
        return
    queue.next_at_ms = max(queue.events[0].at_ms, now_ms)
    heapq.heappush(hooks.due, (queue.next_at_ms, command.webhook_id, command.customer_id))


def attempt_view(attempt: Attempt) -> AttemptView:
    return AttemptView(
        attempt_id=f"att_{attempt.lsn}", event_id=attempt.event_id, event_type=attempt.event_type,
        customer_id=attempt.customer_id, attempt=attempt.attempt, status=attempt.status, outcome=attempt.outcome,
        error=attempt.error, duration_ms=attempt.duration_ms, attempted_at=format_ms(attempt.at_ms),
        next_attempt_at=None if attempt.next_at_ms is None else format_ms(attempt.next_at_ms),
    )  # fmt: skip


# -- reads (the admin API and GET /v1/alerts) --------------------------------------------------------


def list_webhooks(state: LedgerState, project: str | None) -> list[WebhookView]:
    """Webhooks in registration order, of `project` if given (never a secret)."""
    hooks = state.hooks
    if hooks is None:
        return []
    entries = sorted(hooks.webhooks.items(), key=lambda item: item[1].webhook.lsn)
    return [webhook_view(wid, e) for wid, e in entries if project is None or e.webhook.project == project]


def get_alerts(state: LedgerState, project: str, customer_id: str) -> AlertsView | Rejected:
    customer = find_customer(state, project, customer_id)
    return not_found(customer_id) if customer is None else alerts_view(customer)


def deliveries_page(state: LedgerState, wid: str, *, limit: int, cursor: str | None) -> AttemptPage | Rejected:
    """GET /admin/v1/webhooks/{id}/deliveries (CONTRACT §11.3-§11.4): attempts newest first, the
    last WEBHOOK_ATTEMPTS_KEPT_MAX kept. `cursor` is the `attempt_id` the previous page ended
    with; Rejected webhook_not_found, invalid_cursor."""
    entry = None if state.hooks is None else state.hooks.webhooks.get(wid)
    if entry is None:
        return Rejected("webhook_not_found", f"no webhook {wid!r}", {"webhook_id": wid})
    before = None
    if cursor is not None:
        text = cursor.removeprefix("att_")
        if not (cursor.startswith("att_") and text.isascii() and text.isdigit() and len(text) < 20):
            return Rejected("invalid_cursor", "cursor is malformed", {"field": "cursor"})
        before = int(text)
    items: list[AttemptView] = []
    has_more = False
    for attempt in reversed(entry.attempts):
        if before is not None and attempt.lsn >= before:
            continue
        if len(items) == limit:
            has_more = True
            break
        items.append(attempt_view(attempt))
    return AttemptPage(items=items, has_more=has_more, next_cursor=items[-1].attempt_id if has_more else None)
