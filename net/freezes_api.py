"""GET /v1/customers/{customer_id}/freezes?limit=&cursor= -> FreezePage: a customer's open
freezes, newest first (beyond the record, issue 13; engine/core/freeze_queries.py decides).

Routed by net/handlers.py's GET /v1/customers/{tail} catch-all on the raw path (the id is
percent-decoded once, CONTRACT §3.2). Query: `limit` 1..100 (default 20), `cursor` the opaque
`next_cursor` of the previous page. Errors: 401; 400 unknown_field, invalid_limit,
invalid_cursor (details.field); 404 customer_not_found. Read through Runtime.read: the
customer's due timers first, answered once what it shows is durable (CONTRACT §4, §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from engine.core.reads import OpenFreezes
from engine.core.limits import EVENT_PAGE_SIZE_DEFAULT, EVENT_PAGE_SIZE_MAX
from engine.core.results import FreezePage, Rejected
from engine.core.state import LedgerState
from net.schemas import check_cursor, page_limit, query_values

SUFFIX: Final = "/freezes"
PARAMS: Final = {"limit": "invalid_limit", "cursor": "invalid_cursor"}


class Reader(Protocol):
    """The one runtime method this route needs (net.handlers.Runtime has it)."""

    async def read(self, project: str, customer_id: str, view: Callable[[LedgerState, int], Any]) -> Any: ...


class FreezesQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int
    cursor: str | None


def parse_freezes_query(raw_query: str) -> FreezesQuery:
    """The raw query string. Raises ClientError (unknown_field, invalid_limit, invalid_cursor)."""
    values = query_values(raw_query, PARAMS)
    return FreezesQuery(
        limit=page_limit(values.get("limit"), EVENT_PAGE_SIZE_DEFAULT, EVENT_PAGE_SIZE_MAX),
        cursor=check_cursor(values.get("cursor")),
    )


async def get_freezes(runtime: Reader, project: str, customer_id: str, raw_query: str) -> FreezePage | Rejected:
    """The page, or the engine's refusal. Raises ClientError (400) for a bad query."""
    query = parse_freezes_query(raw_query)
    view = OpenFreezes(project, customer_id, limit=query.limit, cursor=query.cursor)  # named: crosses to the ledger process
    result: FreezePage | Rejected = await runtime.read(project, customer_id, view)
    return result
