"""Read views of entitlements (velobase-api §1A.9, CONTRACT §8.5). Pure; nothing here writes.

An unknown customer has nothing set: GET one answers `{"entitlement": null}` (CONTRACT §8.5),
the list `{"items": []}` and the events an empty page.
"""

from __future__ import annotations

from engine.core.common import find_customer
from engine.core.entitlements import entitlement_view, is_active, view_fields
from engine.core.pages import binding, in_window, page
from engine.core.results import (
    EntitlementEventPage,
    EntitlementEventView,
    EntitlementGetResponse,
    EntitlementItem,
    EntitlementListResponse,
    Rejected,
)
from engine.core.state import EntitlementEvent, LedgerState, entitlement_event_id
from engine.core.timefmt import format_ms


def entitlement_get(state: LedgerState, project: str, customer_id: str, feature_key: str) -> EntitlementGetResponse:
    """GET /v1/entitlement/{customer_id}/{feature_key}: the view, active or not, or null."""
    customer = find_customer(state, project, customer_id)
    found = None if customer is None or customer.entitlements is None else customer.entitlements.get(feature_key)
    return EntitlementGetResponse(entitlement=None if found is None else entitlement_view(found))


def entitlement_list(
    state: LedgerState, project: str, customer_id: str, now_ms: int, *, feature_keys: frozenset[str] | None,
    include_expired: bool,
) -> EntitlementListResponse:  # fmt: skip
    """GET /v1/entitlement/{customer_id}: sorted by feature_key; inactive ones only with
    `include_expired`; each item carries `is_active` at `now_ms`."""
    customer = find_customer(state, project, customer_id)
    entitlements = {} if customer is None or customer.entitlements is None else customer.entitlements
    items = []
    for key in sorted(entitlements):
        if feature_keys is not None and key not in feature_keys:
            continue
        entitlement = entitlements[key]
        active = is_active(entitlement, now_ms)
        if active or include_expired:
            items.append(EntitlementItem(**view_fields(entitlement), is_active=active))  # type: ignore[arg-type]
    return EntitlementListResponse(items=items)


def entitlement_events(
    state: LedgerState, project: str, customer_id: str, *, limit: int, cursor: str | None,
    feature_key: str | None, types: frozenset[str] | None, from_ms: int | None, to_ms: int | None,
) -> EntitlementEventPage | Rejected:  # fmt: skip
    """GET /v1/entitlement/{customer_id}/events: newest first. 400 invalid_cursor / invalid_limit."""
    customer = find_customer(state, project, customer_id)
    events = () if customer is None or customer.entitlement_events is None else customer.entitlement_events
    bound = binding(project, customer_id, "entitlement-events",
                    (feature_key, sorted(types or ()), types is None, from_ms, to_ms))  # fmt: skip

    def keep(event: EntitlementEvent) -> bool:
        return (
            (feature_key is None or event.feature_key == feature_key)
            and (types is None or event.type in types)
            and in_window(event.at_ms, from_ms, to_ms)
        )

    result = page(events, keep, limit=limit, cursor=cursor, bound=bound)
    if type(result) is Rejected:
        return result
    items, total, has_more, next_cursor = result  # type: ignore[misc]
    return EntitlementEventPage(
        items=[_view(e) for e in items], total_count=total, has_more=has_more, next_cursor=next_cursor
    )


def _view(event: EntitlementEvent) -> EntitlementEventView:
    return EntitlementEventView(
        id=entitlement_event_id(event.lsn), feature_key=event.feature_key, type=event.type,
        old_value=event.old_value, new_value=event.new_value, source=event.source,
        description=event.description, created_at=format_ms(event.at_ms),
    )  # fmt: skip
