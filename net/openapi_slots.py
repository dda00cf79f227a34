"""The slot and entitlement part of the OpenAPI document (velobase-api §1A.8-§1A.9, CONTRACT §8).

Data for net/openapi.py, which builds the document (this module cannot import it: it is
imported by it):

- `REQUEST_STRUCTS`, `RESPONSE_STRUCTS`: the typed Structs of net/slots_api.py,
  net/entitlements_api.py and engine.core.results; net/openapi.py generates their components the
  same way as the billing ones (requests as msgspec validates them, responses tightened).
- `OPERATION_CODES`: the codes each operation can answer (merged into net/openapi.py's table,
  where each is asserted registered in engine/core/codes.py; statuses come from there).
- `ROUTE_DOC_PATHS`: each route of the two modules -> the document paths it serves.
- `paths(write_op, read_op)`: the path items, built with net/openapi.py's operation builders.

Path ids (customer_id, feature_key) are spelled as the billing customer GET spells its
customer_id: net/schemas.py's identifier, percent-encoded, decoded exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from engine.core import results
from engine.core.limits import (
    CURSOR_LENGTH_MAX,
    EVENT_FILTER_COUNT_MAX,
    EVENT_PAGE_SIZE_DEFAULT,
    EVENT_PAGE_SIZE_MAX,
    FEATURE_KEYS_COUNT_MAX,
    ID_LENGTH_MAX,
)
from engine.core.state import ENTITLEMENT_EVENT_TYPES, SLOT_EVENT_TYPES
from net import entitlements_api, schemas, slots_api

REQUEST_STRUCTS: Final = (*slots_api.REQUEST_STRUCTS, *entitlements_api.REQUEST_STRUCTS)
RESPONSE_STRUCTS: Final = (
    results.SlotPoolResponse, results.SlotHoldingResponse, results.SlotPoolsResponse, results.SlotEventPage,
    results.EntitlementSetResponse, results.EntitlementGetResponse, results.EntitlementListResponse,
    results.EntitlementRemoveResponse, results.EntitlementEventPage,
)  # fmt: skip
# Response fields with a fixed set of values: (component, field) -> the JSON Schema to add.
CONSTANTS: Final = {
    ("SlotPoolSummary", "status"): {"const": "ACTIVE"},
    ("SlotPoolResponse", "status"): {"const": "ACTIVE"},
    ("SlotHoldingResponse", "status"): {"const": "ACTIVE"},
    ("SlotEventView", "type"): {"enum": list(SLOT_EVENT_TYPES)},
    ("EntitlementEventView", "type"): {"enum": list(ENTITLEMENT_EVENT_TYPES)},
}
TIME_FIELDS: Final = frozenset({"valid_from", "valid_until"})  # besides created_at
POSITIVE_FIELDS: Final = {"SlotEventView": {"amount"}}

# Each route of net/slots_api.py and net/entitlements_api.py -> the document paths it serves.
ROUTE_DOC_PATHS: Final = {
    "/v1/slot/grant": ("/v1/slot/grant",),
    "/v1/slot/revoke": ("/v1/slot/revoke",),
    "/v1/slot/claim": ("/v1/slot/claim",),
    "/v1/slot/release": ("/v1/slot/release",),
    "/v1/slot/customer/{tail}": ("/v1/slot/customer/{customer_id}",),
    "/v1/slot/events/{tail}": ("/v1/slot/events/{customer_id}",),
    "/v1/entitlement/set": ("/v1/entitlement/set",),
    "/v1/entitlement/remove": ("/v1/entitlement/remove",),
    "/v1/entitlement/{tail}": (
        "/v1/entitlement/{customer_id}",
        "/v1/entitlement/{customer_id}/events",
        "/v1/entitlement/{customer_id}/{feature_key}",
    ),
}

# -- error codes per operation --------------------------------------------------------------------

_AUTH: Final = ("missing_api_key", "invalid_api_key", "api_key_revoked")
_UNAVAILABLE: Final = ("overloaded", "storage_unavailable")
_BODY: Final = ("invalid_json", "unknown_field", "request_too_large", "invalid_identifier", "customer_id_required",
                *_AUTH, *_UNAVAILABLE)  # fmt: skip
_CAPACITY: Final = (*_BODY, "wallet_required", "amount_must_be_positive", "amount_too_large", "invalid_description",
                    "slot_capacity_below_in_use", "transaction_conflict")  # fmt: skip
_READ: Final = (*_AUTH, *_UNAVAILABLE, "invalid_identifier", "customer_id_required", "unknown_field", "not_found")
_PAGE: Final = (*_READ, "invalid_limit", "invalid_cursor", "invalid_event_type", "invalid_from_at", "invalid_to_at")
OPERATION_CODES: Final[dict[str, tuple[str, ...]]] = {
    "slot_grant": _CAPACITY,
    "slot_revoke": (*_CAPACITY, "slot_pool_not_found"),
    "slot_claim": (*_BODY, "wallet_required", "resource_id_required", "amount_must_be_positive", "amount_too_large",
                   "invalid_ttl_seconds", "invalid_description", "slot_insufficient_capacity", "slot_pool_not_found"),
    "slot_release": (*_BODY, "wallet_required", "resource_id_required", "slot_holding_not_found"),
    "slot_pools": _READ,
    "slot_events": _PAGE,
    "entitlement_set": (*_BODY, "feature_key_required", "value_required", "entitlement_validation_error",
                        "invalid_valid_from", "invalid_valid_until", "invalid_datetime_range", "invalid_description",
                        "invalid_metadata", "entitlement_customer_not_found"),
    "entitlement_remove": (*_BODY, "feature_key_required", "entitlement_customer_not_found"),
    "entitlement_list": (*_READ, "invalid_include_expired"),
    "entitlement_events": _PAGE,
    "entitlement_get": (*_READ, "feature_key_required"),
}  # fmt: skip

# -- query and path parameters --------------------------------------------------------------------


def _id(description: str) -> dict[str, Any]:
    return msgspec.json.schema(Annotated[str, schemas.ID, Meta(description=f"{description} {schemas.ID_TEXT}")])


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


# One item of a comma list: an identifier without a comma (the comma separates). Spelled so that
# a string matches in one way only: leading whitespace, the first character that is not blank, the
# rest. The older `[^,]*[not blank][^,]*` matched an item in as many ways as it had characters, so
# a failing match backtracked exponentially in the item count; hypothesis (schemathesis,
# tests/fuzz) generates `$` as an optional final newline and filters with the regex, and stalled
# for minutes on such a case. Same set: _WS and _NOT_BLANK split net/schemas.py's non-control class.
_WS: Final = r"[\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_NOT_BLANK: Final = r"[^\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000,]"
_ITEM: Final = f"{_WS}*{_NOT_BLANK}[^\\u0000-\\u001f\\u007f,]*"


def _list_pattern(item: str, count_max: int) -> str:
    """1 to `count_max` `item`s, comma-separated (no empty item)."""
    return f"^{item}(,{item}){{0,{count_max - 1}}}$(?!\\n)"


def _id_list(description: str, count_max: int) -> dict[str, Any]:
    """A comma list of 1 to `count_max` identifiers (the comma may arrive as %2C); no empty item."""
    text = f"{description} Comma-separated identifiers (each 1-{ID_LENGTH_MAX} characters, not blank, no control " \
        f"character or comma); the comma may be percent-encoded; no empty item; at most {count_max}."
    # An item's 255 is said by the text (and, for the whole list, maxLength) only: a bounded
    # repetition cannot bound the item's length and still match it in one way (see _ITEM).
    length_max = count_max * (ID_LENGTH_MAX + 1) - 1
    return {"type": "string", "maxLength": length_max, "pattern": _list_pattern(_ITEM, count_max), "description": text}


def _enum_list(values: tuple[str, ...]) -> dict[str, Any]:
    length_max = EVENT_FILTER_COUNT_MAX * (max(map(len, values)) + 1) - 1
    return {"type": "string", "maxLength": length_max, "pattern": _list_pattern("(" + "|".join(values) + ")", EVENT_FILTER_COUNT_MAX),
            "description": f"Comma-separated; no empty item; at most {EVENT_FILTER_COUNT_MAX}."}


_TIME: Final = msgspec.json.schema(schemas.TimeText)
_PAGE_PARAMS: Final = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": EVENT_PAGE_SIZE_MAX, "default": EVENT_PAGE_SIZE_DEFAULT}),
    _query("cursor", {"type": "string", "minLength": 1, "maxLength": CURSOR_LENGTH_MAX, "pattern": r"^[\u0020-\u007e]+$"},
           "Opaque: a next_cursor of the same listing (customer, filters, project)."),
    _query("from_at", _TIME, "created_at >= from_at"),
    _query("to_at", _TIME, "created_at <= to_at"),
]  # fmt: skip
FEATURE_KEY_PARAM: Final = {
    "name": "feature_key",
    "in": "path",
    "required": True,
    "description": "Percent-encoded (`/` as %2F); the raw path is decoded exactly once. A key spelled "
    "literally `events` is the events list (send it as %65vents).",
    "schema": _id("The feature."),
}

WriteOp = Callable[[str, str, type[msgspec.Struct], str], dict[str, Any]]
ReadOp = Callable[[str, str, str, list[dict[str, Any]]], dict[str, Any]]


def paths(write_op: WriteOp, read_op: ReadOp) -> dict[str, Any]:
    """The slot and entitlement path items; `write_op(op_id, summary, request Struct, response)`
    and `read_op(op_id, summary, response, extra parameters)` are net/openapi.py's builders."""
    s, e = slots_api, entitlements_api
    return {
        "/v1/slot/grant": {"post": write_op("slot_grant", "Add capacity to a slot pool (creates pool and customer)",
                                            s.SlotGrantRequest, "SlotPoolResponse")},
        "/v1/slot/revoke": {"post": write_op("slot_revoke", "Remove capacity (never below in_use)",
                                             s.SlotGrantRequest, "SlotPoolResponse")},
        "/v1/slot/claim": {"post": write_op("slot_claim", "Hold capacity for a resource (idempotent while held)",
                                            s.SlotClaimRequest, "SlotHoldingResponse")},
        "/v1/slot/release": {"post": write_op("slot_release", "Give a resource's capacity back",
                                              s.SlotReleaseRequest, "SlotHoldingResponse")},
        "/v1/slot/customer/{customer_id}": {"get": read_op("slot_pools", "The customer's pools", "SlotPoolsResponse",
                                                           [_query("wallet", _id("Only this wallet's pools."))])},
        "/v1/slot/events/{customer_id}": {"get": read_op("slot_events", "Slot events, newest first", "SlotEventPage", [
            *_PAGE_PARAMS, _query("wallet", _id("Exact match.")), _query("resource_id", _id("Exact match.")),
            _query("types", _enum_list(SLOT_EVENT_TYPES)), _query("sources", _id_list("Any of these sources.", EVENT_FILTER_COUNT_MAX))])},
        "/v1/entitlement/set": {"post": write_op("entitlement_set", "Upsert a feature entitlement",
                                                 e.EntitlementSetRequest, "EntitlementSetResponse")},
        "/v1/entitlement/remove": {"post": write_op("entitlement_remove", "Remove a feature entitlement",
                                                    e.EntitlementRemoveRequest, "EntitlementRemoveResponse")},
        "/v1/entitlement/{customer_id}": {"get": read_op(
            "entitlement_list", "Active entitlements (all with include_expired=true)", "EntitlementListResponse",
            [_query("feature_keys", _id_list("Only these features.", min(FEATURE_KEYS_COUNT_MAX, EVENT_FILTER_COUNT_MAX))),
             _query("include_expired", {"type": "string", "enum": ["true", "false"]})])},
        "/v1/entitlement/{customer_id}/events": {"get": read_op(
            "entitlement_events", "Entitlement events, newest first (wins over a feature named events)",
            "EntitlementEventPage", [*_PAGE_PARAMS, _query("feature_key", _id("Exact match.")),
                                     _query("types", _enum_list(ENTITLEMENT_EVENT_TYPES))])},
        "/v1/entitlement/{customer_id}/{feature_key}": {"get": read_op(
            "entitlement_get", "One entitlement, or null", "EntitlementGetResponse", [FEATURE_KEY_PARAM])},
    }  # fmt: skip
