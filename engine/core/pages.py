"""Keyset pages over an immutable, lsn-ordered event list (CONTRACT §3.12 cursor rules, §8.4).

Shared by the slot and entitlement event pages. Newest first; the cursor is the LSN of the last
(oldest) event shown, bound to project, customer, listing and filters (`invalid_cursor` when it
is malformed or made for another listing), so events are never skipped or repeated. The filter
is a scan over the customer's events of that kind: O(events) per page (event lists of one
customer are small next to its ledger; an index like the ledger's can come when one is not).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from engine.core import cursors
from engine.core.limits import EVENT_PAGE_SIZE_MAX
from engine.core.results import Rejected


class Event(Protocol):
    lsn: int
    at_ms: int


E = TypeVar("E", bound=Event)
_filter_encoder = msgspec.json.Encoder()


def binding(project: str, customer_id: str, listing: str, filters: Sequence[Any]) -> bytes:
    """8 bytes naming one listing: project, customer, listing name and its canonical filters."""
    # The ledger's parts with the listing in the operation_type slot and the canonical filters in
    # the transaction_id slot: the same bytes a ledger cursor would need, so never confused.
    canonical = _filter_encoder.encode(list(filters)).decode()
    return cursors.binding(project, customer_id, (listing, canonical))


def page(
    events: Sequence[E], keep: Callable[[E], bool], *, limit: int, cursor: str | None, bound: bytes
) -> tuple[list[E], int, bool, str | None] | Rejected:
    """(items newest first, total_count, has_more, next_cursor) or 400 invalid_cursor/invalid_limit."""
    if not 1 <= limit <= EVENT_PAGE_SIZE_MAX:
        return Rejected("invalid_limit", f"limit must be 1..{EVENT_PAGE_SIZE_MAX}")
    matches = [event for event in events if keep(event)]
    end = len(matches)
    if cursor is not None:
        key = cursors.decode(cursor, bound)
        if key is None or key[1] != 0:
            return Rejected("invalid_cursor", "malformed cursor, or made for another listing", {"field": "cursor"})
        end = bisect_left(matches, key[0], key=_lsn)
    start = end - limit if end > limit else 0
    items = matches[start:end]
    items.reverse()
    has_more = start > 0
    next_cursor = cursors.encode(matches[start].lsn, 0, bound) if has_more else None
    return items, len(matches), has_more, next_cursor


def in_window(at_ms: int, from_ms: int | None, to_ms: int | None) -> bool:
    """`from_at` <= created_at <= `to_at`, both inclusive, either open."""
    return (from_ms is None or at_ms >= from_ms) and (to_ms is None or at_ms <= to_ms)


def _lsn(event: Event) -> int:
    return event.lsn
