"""What the slot and entitlement parsers share (velobase-api §1A.8-§1A.9, CONTRACT §8).

Everything the billing routes already decide is net/schemas.py's and imported from there
(`decode_request` with a `FieldCodes` table, `ID`, `Amount`, `TimeText`, `Metadata`,
`decode_path_id`, `query_values`, `page_limit`, `check_cursor`, `parse_time_ms`). What is
new here:

- `Request`, the base of the slot and entitlement request Structs (unknown fields refused);
- `optional_id`: a query id that may be absent;
- `comma_list`: a comma-separated query list (CONTRACT §8.4, §8.5), decoded before it is split, so
  a `%2C` comma separates too; an empty item (`a,,b`, `a,`, `,`) -> 400 with the list's code;
- `event_page`: the limit, cursor and `from_at`/`to_at` filters both event pages share.

Every function raises `net.errors.ClientError(code, message, details)` (400; details.field) and
nothing else, for any input.
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine.core.limits import EVENT_FILTER_COUNT_MAX, EVENT_PAGE_SIZE_DEFAULT, EVENT_PAGE_SIZE_MAX
from net.errors import ClientError
from net.schemas import ID_TEXT, check_cursor, invalid_id, is_identifier, page_limit, parse_time_ms

# The parameters of both event pages -> their 400 code (each page adds its own filters).
EVENT_PAGE_CODES: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "types": "invalid_event_type",
    "from_at": "invalid_from_at",
    "to_at": "invalid_to_at",
}


class Request(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Base of the slot and entitlement request bodies: unknown fields are refused (CONTRACT §7.9)."""


def about(description: str) -> msgspec.Meta:
    """The description of an identifier field (with net/schemas.py's identifier rule)."""
    return msgspec.Meta(description=f"{description} {ID_TEXT}")


class EventPage(msgspec.Struct, frozen=True, gc=False):
    """limit 1..EVENT_PAGE_SIZE_MAX (default EVENT_PAGE_SIZE_DEFAULT); cursor opaque; times UTC ms."""

    limit: int
    cursor: str | None
    from_ms: int | None
    to_ms: int | None


def event_page(values: dict[str, str]) -> EventPage:
    """The shared parameters of GET /v1/slot/events/... and /v1/entitlement/.../events."""
    return EventPage(
        limit=page_limit(values.get("limit"), EVENT_PAGE_SIZE_DEFAULT, EVENT_PAGE_SIZE_MAX),
        cursor=check_cursor(values.get("cursor")),
        from_ms=parse_time_ms(values.get("from_at"), "from_at"),
        to_ms=parse_time_ms(values.get("to_at"), "to_at"),
    )


def optional_id(value: str | None, field: str) -> str | None:
    """An id query parameter: absent -> None; else it must be an identifier (invalid_identifier)."""
    if value is not None and not is_identifier(value):
        raise invalid_id(field)
    return value


def comma_list(text: str | None, field: str, code: str, allowed: tuple[str, ...] | None = None) -> frozenset[str] | None:
    """A comma-separated list (already percent-decoded, so `%2C` separates too) of 1 to
    EVENT_FILTER_COUNT_MAX identifiers, or of `allowed` values; absent -> None. An empty item
    (`a,,b`, a trailing comma, an empty value) or more items -> 400 `code` (details.field)."""
    if text is None:
        return None
    items = text.split(",")
    if len(items) > EVENT_FILTER_COUNT_MAX:
        raise ClientError(code, f"{field} lists at most {EVENT_FILTER_COUNT_MAX} values", {"field": field})
    for item in items:
        if (allowed is not None and item not in allowed) or (allowed is None and not is_identifier(item)):
            hint = f"one of {', '.join(allowed)}" if allowed is not None else "identifiers"
            raise ClientError(code, f"{field} must be a comma-separated list of {hint}", {"field": field})
    return frozenset(items)
