"""OpenAPI paths and schemas of the slot and entitlement routes (velobase-api §1A.8-§1A.9, CONTRACT §8).

`extend(document)` adds them to net/openapi.py's document (its one call site). Request and
response schemas are generated from the Structs with msgspec.json.schema_components; what the
Structs type loosely for parsing (`amount`, `ttl_seconds`: Any so `2.0` counts as 2) is shown as
the integer it must be, and the fields a route requires are listed as required.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec

from engine.core import results
from engine.core.codes import CODES
from engine.core.limits import (
    AMOUNT_MAX,
    EVENT_PAGE_SIZE_MAX,
    ID_LENGTH_MAX,
    SLOT_TTL_S_MAX,
)
from engine.core.state import ENTITLEMENT_EVENT_TYPES, SLOT_EVENT_TYPES
from net.entitlements_api import EntitlementRemoveRequest, EntitlementSetRequest
from net.slots_api import SlotClaimRequest, SlotGrantRequest, SlotReleaseRequest

_REF: Final = "#/components/schemas/{name}"


def _without_raw(struct: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The same Struct with its `msgspec.Raw` fields (decoded later, e.g. metadata) shown as the
    object they must hold: a Raw default cannot be written into a schema."""
    fields = [
        (f.name, dict[str, Any] | None if f.type is msgspec.Raw else f.type, None)
        for f in msgspec.structs.fields(struct)
    ]
    return msgspec.defstruct(struct.__name__, fields, forbid_unknown_fields=True)  # type: ignore[arg-type]


_REQUESTS: Final = (SlotGrantRequest, SlotClaimRequest, SlotReleaseRequest, _without_raw(EntitlementSetRequest),
                    EntitlementRemoveRequest)  # fmt: skip
_RESPONSES: Final = (
    results.SlotPoolResponse, results.SlotHoldingResponse, results.SlotPoolsResponse, results.SlotEventPage,
    results.EntitlementSetResponse, results.EntitlementGetResponse, results.EntitlementListResponse,
    results.EntitlementRemoveResponse, results.EntitlementEventPage,
)  # fmt: skip
_REQUIRED: Final = {
    "SlotGrantRequest": ["customer_id", "wallet", "amount"],
    "SlotClaimRequest": ["customer_id", "wallet", "resource_id"],
    "SlotReleaseRequest": ["customer_id", "wallet", "resource_id"],
    "EntitlementSetRequest": ["customer_id", "feature_key", "value"],
    "EntitlementRemoveRequest": ["customer_id", "feature_key"],
}
_INTEGERS: Final = {"amount": AMOUNT_MAX, "ttl_seconds": SLOT_TTL_S_MAX}
_IDS: Final = ("customer_id", "wallet", "source", "resource_id", "idempotency_key", "feature_key")
_TIMES: Final = ("valid_from", "valid_until")
_AUTH: Final = ["missing_api_key", "invalid_api_key", "api_key_revoked"]
_UNAVAILABLE: Final = ["overloaded", "storage_unavailable"]

# Each route of net/slots_api.py and net/entitlements_api.py -> the document paths it serves
# (net/openapi.py merges this into its ROUTE_DOC_PATHS).
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
_SHAPE: Final = ["invalid_json", "unknown_field", "invalid_identifier", "customer_id_required", "invalid_description",
                  "amount_too_large"]  # fmt: skip


@cache
def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_REQUESTS + _RESPONSES, ref_template=_REF)
    for name, required in _REQUIRED.items():
        component = components[name]
        component["required"] = required
        _tighten(component["properties"], required)
    return components


def _tighten(properties: dict[str, Any], required: list[str]) -> None:
    """Ids as net/openapi.py spells them (pattern: not blank, no control characters), integers
    as integers, times with an offset; required fields are not nullable, optional ones may be null
    (null counts as absent)."""
    from net.openapi import (
        ID_PATTERN,  # net/openapi.py imports this module: import at call time
    )

    for field in list(properties):
        schema = properties[field]
        if field in _IDS:
            schema = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH_MAX, "pattern": ID_PATTERN}
        elif field in _INTEGERS:
            schema = {"type": "integer", "minimum": 1, "maximum": _INTEGERS[field]}
        elif field in _TIMES:
            schema = {"type": "string", "format": "date-time", "pattern": _TIME_PATTERN}
        elif "anyOf" in schema:
            schema = schema["anyOf"][0]
        schema = {k: v for k, v in schema.items() if k != "default"}
        properties[field] = schema if field in required else {"anyOf": [schema, {"type": "null"}]}


def _error(codes: list[str]) -> dict[str, Any]:
    status = CODES[codes[0]].status
    assert all(CODES[c].status == status for c in codes), codes
    return {
        "description": f"{status}: one of {', '.join(codes)}",
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "type", "message", "details", "retryable", "request_id"],
                "properties": {"code": {"type": "string", "enum": sorted(codes)}},
            }},
        }}},
    }  # fmt: skip


def _responses(ok: str, errors: list[list[str]], post: bool) -> dict[str, Any]:
    out = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": _REF.format(name=ok)}}}}}
    for codes in [_AUTH, *errors, _UNAVAILABLE, *([["request_too_large"]] if post else [])]:
        out[str(CODES[codes[0]].status)] = _error(codes)
    return out


def _post(op_id: str, summary: str, request: str, ok: str, errors: list[list[str]]) -> dict[str, Any]:
    schema = {k: v for k, v in _schemas()[request].items() if k != "title"}  # inline, as the other POSTs
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {"post": {"operationId": op_id, "summary": summary, "requestBody": body,
                     "responses": _responses(ok, errors, True)}}  # fmt: skip


def _param(name: str, where: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema, "description": description}


_TIME_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
# net/openapi.py's ID_PATTERN, spelled again: that module imports this one before it defines it.
_ID_PATTERN: Final = (
    r"^[^\u0000-\u001f\u007f]*[^\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    r"[^\u0000-\u001f\u007f]*$"
)
_ID: Final = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH_MAX, "pattern": _ID_PATTERN}
_TIME: Final = {"type": "string", "format": "date-time"}
_CUSTOMER: Final = _param("customer_id", "path", _ID, "Percent-encoded (`/` as %2F), decoded once.")
_PAGE: Final = [
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": EVENT_PAGE_SIZE_MAX, "default": 20}),
    _param("cursor", "query", {"type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^[\u0020-\u007e]+$"},
           "next_cursor of the previous page, same filters"),
    _param("from_at", "query", {**_TIME, "pattern": _TIME_PATTERN}, "created_at >= from_at"),
    _param("to_at", "query", {**_TIME, "pattern": _TIME_PATTERN}, "created_at <= to_at"),
]
_PAGE_ERRORS: Final = ["invalid_limit", "invalid_cursor", "invalid_from_at", "invalid_to_at", "invalid_event_type",
                       "invalid_identifier", "unknown_field"]  # fmt: skip


def _enum_list(values: tuple[str, ...]) -> dict[str, Any]:
    one = "(" + "|".join(values) + ")"
    return {"type": "string", "pattern": f"^{one}(,{one})*$"}


def _get(op_id: str, summary: str, ok: str, params: list[dict[str, Any]], errors: list[list[str]]) -> dict[str, Any]:
    return {"get": {"operationId": op_id, "summary": summary, "parameters": [_CUSTOMER, *params],
                    "responses": _responses(ok, errors, False)}}  # fmt: skip


def _paths() -> dict[str, Any]:
    capacity_errors = [[*_SHAPE, "wallet_required", "amount_must_be_positive", "amount_too_large",
                        "slot_capacity_below_in_use"], ["transaction_conflict"]]  # fmt: skip
    return {
        "/v1/slot/grant": _post("slot_grant", "Add capacity to a slot pool (creates pool and customer)",
                                "SlotGrantRequest", "SlotPoolResponse", capacity_errors),
        "/v1/slot/revoke": _post("slot_revoke", "Remove capacity (never below in_use)", "SlotGrantRequest",
                                 "SlotPoolResponse", [*capacity_errors, ["slot_pool_not_found"]]),
        "/v1/slot/claim": _post("slot_claim", "Hold capacity for a resource (idempotent while held)",
                                "SlotClaimRequest", "SlotHoldingResponse",
                                [[*_SHAPE, "wallet_required", "resource_id_required", "amount_must_be_positive",
                                  "invalid_ttl_seconds", "slot_insufficient_capacity"], ["slot_pool_not_found"]]),
        "/v1/slot/release": _post("slot_release", "Give a resource's capacity back", "SlotReleaseRequest",
                                  "SlotHoldingResponse", [[*_SHAPE, "wallet_required", "resource_id_required"],
                                                          ["slot_holding_not_found"]]),
        "/v1/slot/customer/{customer_id}": _get("slot_pools", "The customer's pools", "SlotPoolsResponse",
                                                [_param("wallet", "query", _ID)], [["invalid_identifier", "unknown_field"]]),
        "/v1/slot/events/{customer_id}": _get(
            "slot_events", "Slot events, newest first", "SlotEventPage",
            [*_PAGE, _param("wallet", "query", _ID), _param("resource_id", "query", _ID),
             _param("types", "query", _enum_list(SLOT_EVENT_TYPES), "comma list"),
             _param("sources", "query", _ID, "one source (a comma separates several)")], [_PAGE_ERRORS]),
        "/v1/entitlement/set": _post("entitlement_set", "Upsert a feature entitlement", "EntitlementSetRequest",
                                     "EntitlementSetResponse",
                                     [[*_SHAPE, "feature_key_required", "value_required", "entitlement_validation_error",
                                       "invalid_valid_from", "invalid_valid_until", "invalid_datetime_range",
                                       "invalid_metadata", "invalid_description"], ["entitlement_customer_not_found"]]),
        "/v1/entitlement/remove": _post("entitlement_remove", "Remove a feature entitlement",
                                        "EntitlementRemoveRequest", "EntitlementRemoveResponse",
                                        [[*_SHAPE, "feature_key_required"], ["entitlement_customer_not_found"]]),
        "/v1/entitlement/{customer_id}": _get(
            "entitlement_list", "Active entitlements (all with include_expired=true)", "EntitlementListResponse",
            [_param("feature_keys", "query", _ID, "one key (a comma, also as %2C, separates several)"),
             _param("include_expired", "query", {"type": "string", "enum": ["true", "false"]})],
            [["invalid_identifier", "invalid_include_expired", "unknown_field"]]),
        "/v1/entitlement/{customer_id}/events": _get(
            "entitlement_events", "Entitlement events, newest first (wins over a feature named events)",
            "EntitlementEventPage",
            [*_PAGE, _param("feature_key", "query", _ID),
             _param("types", "query", _enum_list(ENTITLEMENT_EVENT_TYPES), "comma list")],
            [_PAGE_ERRORS]),
        "/v1/entitlement/{customer_id}/{feature_key}": _get(
            "entitlement_get", "One entitlement, or null", "EntitlementGetResponse",
            [_param("feature_key", "path", _ID)], [["invalid_identifier", "feature_key_required", "unknown_field"]]),
    }  # fmt: skip


def extend(document: dict[str, Any]) -> dict[str, Any]:
    """Add the slot and entitlement paths and schemas to the OpenAPI document; returns it."""
    document["paths"].update(_paths())
    schemas = _schemas()
    document["components"]["schemas"].update((name, schemas[name]) for name in schemas if name not in _REQUIRED)
    return document
