"""Read view of a customer's open freezes (GET /v1/customers/{id}/freezes; beyond the record,
issue 13: the dashboard's "live freezes with their TTLs"). Pure; nothing here writes.

Open = FROZEN (CONTRACT §3.8): not yet consumed or unfrozen, by request or by its TTL. The
runtime applies the customer's due timers before any read (CONTRACT §6), so a freeze whose TTL
has passed is settled, not listed. Newest first by the freeze's LSN; the cursor is the LSN of
the last freeze shown, bound to project, customer and this listing (engine/core/pages.py), so a
settle between two pages never makes one skip or repeat a freeze. The freezes come from the
project's derived index of open freezes (ProjectState.open_freezes: only customers with an open
freeze have an entry, so idle customers pay nothing): work per page O(open freezes of the
customer), independent of how many freezes, deducts or ledger entries the customer ever had.
"""

from __future__ import annotations

from engine.core.common import details_of, not_found
from engine.core.pages import binding, page
from engine.core.results import FreezePage, FreezeView, Rejected
from engine.core.state import CustomerState, FreezeRecord, LedgerState
from engine.core.timefmt import format_ms, format_ms_or_none

LISTING = "freezes"


def open_freezes(
    state: LedgerState, project: str, customer_id: str, *, limit: int, cursor: str | None
) -> FreezePage | Rejected:
    """FreezePage{items newest first, total_count (open freezes), has_more, next_cursor} or
    Rejected: customer_not_found (404), invalid_limit (limit outside 1..100), invalid_cursor."""
    project_state = state.projects.get(project)
    customer = None if project_state is None else project_state.customers.get(customer_id)
    if project_state is None or customer is None:
        return not_found(customer_id)
    records = list(project_state.open_freezes.get(customer_id, {}).values())  # freeze LSN order
    result = page(records, _keep, limit=limit, cursor=cursor, bound=binding(project, customer_id, LISTING, ()))
    if type(result) is Rejected:
        return result
    items, total, has_more, next_cursor = result  # type: ignore[misc]
    return FreezePage(items=[_view(customer, r) for r in items], total_count=total, has_more=has_more,
                      next_cursor=next_cursor)  # fmt: skip


def _keep(record: FreezeRecord) -> bool:
    return True


def _view(customer: CustomerState, record: FreezeRecord) -> FreezeView:
    if record.unfreeze_after_ms is not None:
        action: str | None = "unfreeze"
        due_ms: int | None = record.unfreeze_after_ms
    elif record.consume_after_ms is not None:
        action, due_ms = "consume", record.consume_after_ms
    else:
        action, due_ms = None, None
    return FreezeView(
        transaction_id=record.transaction_id, amount=record.amount, frozen_at=format_ms(record.at_ms),
        settle_action=action, settle_at=format_ms_or_none(due_ms), allocations=details_of(customer, record.allocation),
        credit_types=None if record.credit_types is None else list(record.credit_types), wallet=record.wallet,
        business_type=record.business_type, description=record.description,
    )  # fmt: skip
