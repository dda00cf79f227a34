"""Read views of slots (velobase-api §1A.8, CONTRACT §8.4). Pure; nothing here writes.

An unknown customer has no pools and no events: the reads answer `{"pools": []}` and an empty
page rather than 404 (as GET entitlement answers null for one, CONTRACT §8.5).
"""

from __future__ import annotations

from engine.core.common import find_customer
from engine.core.pages import binding, in_window, page
from engine.core.results import (
    Rejected,
    SlotEventPage,
    SlotEventView,
    SlotPoolsResponse,
)
from engine.core.slots import pool_summary
from engine.core.state import LedgerState, SlotEvent, slot_event_id
from engine.core.timefmt import format_ms


def slot_pools(state: LedgerState, project: str, customer_id: str, wallet: str | None) -> SlotPoolsResponse:
    """GET /v1/slot/customer/{customer_id}[?wallet=]: the customer's pools, creation order."""
    customer = find_customer(state, project, customer_id)
    pools = () if customer is None or customer.slot_pools is None else customer.slot_pools
    return SlotPoolsResponse(pools=[pool_summary(p) for p in pools if wallet is None or p.wallet == wallet])


def slot_events(
    state: LedgerState, project: str, customer_id: str, *, limit: int, cursor: str | None,
    wallet: str | None, resource_id: str | None, types: frozenset[str] | None,
    sources: frozenset[str] | None, from_ms: int | None, to_ms: int | None,
) -> SlotEventPage | Rejected:  # fmt: skip
    """GET /v1/slot/events/{customer_id}: newest first, every filter ANDed; `types` and
    `sources` match any listed value. 400 invalid_cursor / invalid_limit."""
    customer = find_customer(state, project, customer_id)
    events = () if customer is None or customer.slot_events is None else customer.slot_events
    filters = (wallet, resource_id, sorted(types or ()), types is None, sorted(sources or ()), sources is None,
               from_ms, to_ms)  # fmt: skip
    bound = binding(project, customer_id, "slot-events", filters)

    def keep(event: SlotEvent) -> bool:
        return (
            (wallet is None or event.wallet == wallet)
            and (resource_id is None or event.resource_id == resource_id)
            and (types is None or event.type in types)
            and (sources is None or event.source in sources)
            and in_window(event.at_ms, from_ms, to_ms)
        )

    result = page(events, keep, limit=limit, cursor=cursor, bound=bound)
    if type(result) is Rejected:
        return result
    items, total, has_more, next_cursor = result  # type: ignore[misc]
    return SlotEventPage(items=[_view(e) for e in items], total_count=total, has_more=has_more, next_cursor=next_cursor)


def _view(event: SlotEvent) -> SlotEventView:
    return SlotEventView(
        id=slot_event_id(event.lsn), type=event.type, wallet=event.wallet, source=event.source, amount=event.amount,
        resource_id=event.resource_id, description=event.description, idempotency_key=event.idempotency_key,
        created_at=format_ms(event.at_ms),
    )  # fmt: skip
