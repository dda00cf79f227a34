"""The state of webhooks and alert rules (CONTRACT §11): plain data, written by engine/core/hooks.py.

Persistent: webhooks (with their secret: signing needs its text), each webhook's outbox (queues of
undelivered events per customer) and its last attempts, and the customers' alert rules (on
CustomerState.alerts). Derived: `HooksState.by_project`, `HooksState.due`. A history that never
registered a webhook or set a rule has `LedgerState.hooks` None, and its snapshot bytes and digest
are those it had before webhooks existed (engine/core/codec.py, digest.py).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from engine.core.limits import WEBHOOK_ATTEMPTS_KEPT_MAX


def webhook_id(lsn: int) -> str:
    """The id of the webhook registered by the command logged at `lsn`."""
    return f"wh_{lsn}"


def event_id(lsn: int, i: int) -> str:
    """The id of the i-th event derived from the command logged at `lsn` (CONTRACT §11.2)."""
    return f"evt_{lsn}_{i}"


class AlertRule(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """Thresholds on `available` of the customer (wallet None) or one wallet, descending; `below`:
    those `available` was under after the customer's last logged change."""

    wallet: str | None
    thresholds: tuple[int, ...]
    below: tuple[int, ...]
    updated_at_ms: int


class Event(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One event (CONTRACT §11.2, §11.4): id evt_{lsn}_{i}, created at the command's stamp."""

    lsn: int
    i: int
    type: str
    at_ms: int
    project: str
    customer_id: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return event_id(self.lsn, self.i)


class Webhook(msgspec.Struct, array_like=True, gc=False):
    lsn: int  # of its CreateWebhook: id wh_{lsn}; it receives events of later LSNs
    project: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at_ms: int
    dropped: int = 0  # events not queued: outbox full (limits.WEBHOOK_PENDING_EVENTS_MAX)
    pending: int = 0  # events queued, summed over its customers


class Attempt(msgspec.Struct, array_like=True, gc=False):
    """One logged attempt (the deliveries list). `lsn` of its WebhookAttempt: the attempt's id."""

    lsn: int
    at_ms: int
    event_id: str
    event_type: str
    customer_id: str
    attempt: int
    status: int
    outcome: str
    error: str | None
    duration_ms: int
    next_at_ms: int | None


class Queue(msgspec.Struct, gc=False):
    """The undelivered events of one (webhook, customer), oldest first; only the head is tried
    (strict order per customer, CONTRACT §11.4). `failures`: failed attempts of the head."""

    events: deque[Event]
    failures: int = 0
    next_at_ms: int = 0


class WebhookState(msgspec.Struct, gc=False):
    webhook: Webhook
    queues: dict[str, Queue] = msgspec.field(default_factory=dict)  # by customer_id
    attempts: deque[Attempt] = msgspec.field(default_factory=lambda: deque(maxlen=WEBHOOK_ATTEMPTS_KEPT_MAX))


class HooksState(msgspec.Struct, gc=False):
    webhooks: dict[str, WebhookState] = msgspec.field(default_factory=dict)  # by webhook_id
    by_project: dict[str, list[str]] = msgspec.field(default_factory=dict)  # derived: ids, lsn order
    # derived: (next_at_ms, webhook_id, customer_id), lazily deleted (see pop_due_deliveries)
    due: list[tuple[int, str, str]] = msgspec.field(default_factory=list)
