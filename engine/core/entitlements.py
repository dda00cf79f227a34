"""Entitlements (velobase-api §1A.9, CONTRACT §8.5): per-customer feature values with windows.

Keyed by (project, customer, feature_key). Every logged set or remove appends one immutable
EntitlementEvent (id `eev_{lsn}`), so the history of a key is its events: the value after the
last event is the current value (the model test checks exactly that).

Decisions (CONTRACT §8 where it is silent):
- set and remove need an existing customer (a deposit or a slot grant creates one); on an
  unknown customer they answer 404 `entitlement_customer_not_found` (velobase-api §1A.0).
- set always writes (an upsert with the same value is still an event: the audit trail shows
  every call); `entitlement_id` is `ent_{lsn}` of the set that created the entitlement and stays
  the same across later sets; after a remove, a new set creates a new id.
- remove of a key that is not set: 200 `{"removed": false, "old_value": null}`, nothing written.
"""

from __future__ import annotations

from engine.core.commands import EntitlementRemove, EntitlementSet
from engine.core.common import commit, find_customer
from engine.core.results import (
    Applied,
    EntitlementRemoveResponse,
    EntitlementSetResponse,
    EntitlementView,
    Rejected,
)
from engine.core.state import (
    REMOVE,
    SET,
    CustomerState,
    Entitlement,
    EntitlementEvent,
    LedgerState,
    entitlement_id,
)
from engine.core.timefmt import format_ms_or_none


def is_active(entitlement: Entitlement, now_ms: int) -> bool:
    """CONTRACT §8.5: valid_from null or <= now, and valid_until null or > now."""
    if entitlement.valid_from_ms is not None and entitlement.valid_from_ms > now_ms:
        return False
    return entitlement.valid_until_ms is None or entitlement.valid_until_ms > now_ms


def view_fields(entitlement: Entitlement) -> dict[str, object]:
    """The §1A.9 view's fields, for EntitlementView and the Structs that extend it."""
    return {
        "entitlement_id": entitlement_id(entitlement.lsn),
        "feature_key": entitlement.feature_key,
        "value": entitlement.value,
        "valid_from": format_ms_or_none(entitlement.valid_from_ms),
        "valid_until": format_ms_or_none(entitlement.valid_until_ms),
        "source": entitlement.source,
        "description": entitlement.description,
        "metadata": entitlement.metadata,
    }


def entitlement_view(entitlement: Entitlement) -> EntitlementView:
    return EntitlementView(**view_fields(entitlement))  # type: ignore[arg-type]


def _not_found(customer_id: str) -> Rejected:
    return Rejected("entitlement_customer_not_found", f"customer {customer_id!r} not found",
        {"customer_id": customer_id},
    )  # fmt: skip


def _add_event(customer: CustomerState, event: EntitlementEvent) -> None:
    if customer.entitlement_events is None:
        customer.entitlement_events = []
    assert not customer.entitlement_events or customer.entitlement_events[-1].lsn < event.lsn
    customer.entitlement_events.append(event)


def apply_entitlement_set(state: LedgerState, lsn: int, command: EntitlementSet) -> Applied | Rejected:
    """Upsert. Body: EntitlementSetResponse (`is_created`, `old_value` null when created).
    404 entitlement_customer_not_found; 400 invalid_datetime_range (net/ checks it first)."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return _not_found(command.customer_id)
    start, until = command.valid_from_ms, command.valid_until_ms
    if start is not None and until is not None and until <= start:
        return Rejected("invalid_datetime_range", "valid_until must be after valid_from", {"field": "valid_until"})
    old = None if customer.entitlements is None else customer.entitlements.get(command.feature_key)
    entitlement = Entitlement(
        lsn if old is None else old.lsn, command.feature_key, command.value, start, until, command.source,
        command.description, command.metadata,
    )  # fmt: skip
    if customer.entitlements is None:
        customer.entitlements = {}
    customer.entitlements[command.feature_key] = entitlement
    old_value = None if old is None else old.value
    _add_event(customer, EntitlementEvent(
        lsn, command.feature_key, SET, old_value, command.value, command.source, command.description, command.at_ms
    ))  # fmt: skip
    commit(state, customer, lsn)
    body = EntitlementSetResponse(**view_fields(entitlement), is_created=old is None, old_value=old_value)  # type: ignore[arg-type]
    return Applied(body, True)


def apply_entitlement_remove(state: LedgerState, lsn: int, command: EntitlementRemove) -> Applied | Rejected:
    """Body: EntitlementRemoveResponse. Not set -> removed false, nothing written."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return _not_found(command.customer_id)
    old = None if customer.entitlements is None else customer.entitlements.pop(command.feature_key, None)
    if old is None:
        return Applied(EntitlementRemoveResponse(removed=False, old_value=None), False)
    if not customer.entitlements:
        customer.entitlements = None
    _add_event(customer, EntitlementEvent(
        lsn, command.feature_key, REMOVE, old.value, None, old.source, None, command.at_ms
    ))  # fmt: skip
    commit(state, customer, lsn)
    return Applied(EntitlementRemoveResponse(removed=True, old_value=old.value), True)
