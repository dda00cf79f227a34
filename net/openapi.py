"""The OpenAPI 3.1 document of the HTTP API, served at GET /openapi.json (no auth).

It describes what the server really does (CONTRACT §2, §3, §3.14, §7.9), generated where it can be:

- request bodies: `msgspec.json.schema_components` of net/schemas.py's request Structs (the same
  types msgspec validates with: required fields, types, bounds, enums, `additionalProperties:
  false`), plus the cross-field rules JSON Schema can say (`_NOT_BOTH`);
- 200 bodies: the engine.core.results Structs, tightened here (no extra fields, amounts bounded,
  times in the one wire format), since those Structs carry no constraints of their own;
- errors: the §3.14 envelope with, per (operation, status), the codes that operation can answer.
  Which codes an operation can give is listed by hand (`OPERATION_CODES`, each asserted registered
  at import); status, type and retryable come from engine/core/codes.py.

What JSON Schema cannot say is in the descriptions: a deposit's `wallet` and `credit_type` may
both be given only when equal; `expires_at` must be after `starts_at`; the `Idempotency-Key`
header and the body key must agree; metadata is at most 16 KiB of JSON, 32 levels deep, integers
within [-2^63, 2^64-1]; dates are years 0001-9999 (also in UTC) without leap seconds.

`document()` builds the dict; `openapi_json` is the aiohttp handler (bytes encoded once).
`ROUTE_DOC_PATHS` maps each route of net.app's table to the document paths it serves, so a test
can check that the table and the document agree both ways.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web
from msgspec import Meta

from engine.core.codes import CODES, TYPE_BY_STATUS
from engine.core.limits import (
    AMOUNT_MAX,
    BUSINESS_TYPES,
    CURSOR_LENGTH_MAX,
    LEDGER_PAGE_SIZE_DEFAULT,
    LEDGER_PAGE_SIZE_MAX,
    OPERATION_TYPES,
)
from engine.core.results import (
    ConsumeResponse,
    CustomerResponse,
    DeductResponse,
    DepositResponse,
    FreezeResponse,
    LedgerPage,
    UnfreezeResponse,
)
from net import schemas
from net import openapi_slots
from net.config import REQUEST_SIZE_MAX_DEFAULT

OPENAPI_PATH: Final = "/openapi.json"

# Each route of net.app.routes() (path as aiohttp shows it) -> the document paths it serves.
# The GET catch-all serves both customer paths (routed on the raw path, see net/handlers.py).
ROUTE_DOC_PATHS: Final = {
    "/v1/customers/deposit": ("/v1/customers/deposit",),
    "/v1/billing/deposit": ("/v1/billing/deposit",),
    "/v1/customers/{tail}": ("/v1/customers/{customer_id}", "/v1/customers/{customer_id}/ledger"),
    "/v1/billing/freeze": ("/v1/billing/freeze",),
    "/v1/billing/consume": ("/v1/billing/consume",),
    "/v1/billing/unfreeze": ("/v1/billing/unfreeze",),
    "/v1/billing/deduct": ("/v1/billing/deduct",),
    "/health": ("/health",),
    OPENAPI_PATH: (OPENAPI_PATH,),
    **openapi_slots.ROUTE_DOC_PATHS,
}

# -- shared pieces --------------------------------------------------------------------------------

WIRE_TIME_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
_REF_TEMPLATE: Final = "#/components/schemas/{name}"


def _id(description: str) -> dict[str, Any]:
    """An identifier outside a body (path, query, header): net/schemas.py's ID, as JSON Schema."""
    return msgspec.json.schema(Annotated[str, schemas.ID, Meta(description=f"{description} {schemas.ID_TEXT}")])


# -- request bodies: net/schemas.py's Structs, plus what JSON Schema can say across fields ----------


def _both_given(first: str, second: str) -> dict[str, Any]:
    """A schema matching bodies where both fields are present and not null."""
    return {
        "required": [first, second],
        "properties": {first: {"not": {"type": "null"}}, second: {"not": {"type": "null"}}},
    }


_NOT_BOTH: Final = {
    "FreezeRequest": [("credit_types", "wallet"), ("unfreeze_after_seconds", "consume_after_seconds")],
    "DeductRequest": [("credit_types", "wallet")],
}

# -- error codes: which codes each operation can answer; statuses come from the registry ----------

_AUTH_CODES: Final = ("missing_api_key", "invalid_api_key", "api_key_revoked")
_UNAVAILABLE_CODES: Final = ("overloaded", "storage_unavailable")
_BODY_CODES: Final = ("invalid_json", "unknown_field", "request_too_large", *_AUTH_CODES, *_UNAVAILABLE_CODES)
_DEBIT_CODES: Final = (
    *_BODY_CODES,
    "customer_id_required",
    "transaction_id_required",
    "invalid_identifier",
    "amount_must_be_positive",
    "amount_too_large",
    "invalid_credit_types",
    "invalid_wallet_selection",
    "invalid_business_type",
    "invalid_description",
    "insufficient_balance",
    "insufficient_balance_in_selected_credit_types",
    "customer_not_found",
    "transaction_conflict",
)
_READ_CODES: Final = (
    *_AUTH_CODES, *_UNAVAILABLE_CODES, "customer_id_required", "invalid_identifier", "customer_not_found", "not_found"
)
OPERATION_CODES: Final[dict[str, tuple[str, ...]]] = {
    "deposit": (
        *_BODY_CODES,
        "customer_id_required",
        "invalid_identifier",
        "amount_must_be_positive",
        "amount_too_large",
        "invalid_wallet_selection",
        "idempotency_key_mismatch",
        "invalid_starts_at",
        "invalid_expires_at",
        "invalid_datetime_range",
        "invalid_name",
        "invalid_email",
        "invalid_description",
        "invalid_metadata",
        "transaction_conflict",
    ),
    "freeze": (*_DEBIT_CODES, "invalid_auto_settlement", "invalid_auto_settlement_ttl"),
    "deduct": _DEBIT_CODES,
    "consume": (
        *_BODY_CODES,
        "transaction_id_required",
        "invalid_identifier",
        "actual_amount_must_be_non_negative",
        "amount_too_large",
        "no_consumable_freeze_records",
        "freeze_records_already_consumed",
        "freeze_auto_unfrozen",
        "insufficient_balance",
        "insufficient_balance_in_selected_credit_types",
    ),
    "unfreeze": (*_BODY_CODES, "transaction_id_required", "invalid_identifier", "no_unfreezable_records"),
    "get_customer": _READ_CODES,
    "get_ledger": (*_READ_CODES, "unknown_field", "invalid_limit", "invalid_cursor", "invalid_operation_type"),
    "health": ("not_ready",),
    **openapi_slots.OPERATION_CODES,  # slots and entitlements (CONTRACT §8)
}
for _codes in OPERATION_CODES.values():
    for _code in _codes:
        assert _code in CODES, f"{_code} is not in engine/core/codes.py"
    assert len(set(_codes)) == len(_codes), _codes


def _error_schema(codes: list[str], status: int) -> dict[str, Any]:
    """The §3.14 envelope for `codes`, all of one `status` (type and retryable from the registry)."""
    assert {CODES[code].status for code in codes} == {status}, (status, codes)
    retryable = {CODES[code].retryable for code in codes}
    assert len(retryable) == 1, codes
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "type", "message", "details", "retryable", "request_id"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": sorted(codes)},
                    "type": {"type": "string", "const": TYPE_BY_STATUS[status]},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                    "retryable": {"type": "boolean", "const": retryable.pop()},
                    "request_id": {"type": "string", "minLength": 1},
                },
            }
        },
    }


_REQUEST_ID_HEADER: Final = {
    "X-Request-Id": {"description": "Unique id of this request; errors repeat it.", "schema": {"type": "string"}}
}

_STATUS_TEXT: Final = {
    400: "Bad request: shape, values or a business rule",
    401: "Missing, invalid or revoked API key",
    404: "Not found",
    409: "Conflict with an earlier operation of the same id",
    413: "Body over the size limit",
    503: "Overloaded or storage failed (retryable)",
}


def _errors(op_id: str) -> dict[str, Any]:
    """The error responses of an operation: its codes grouped by their registered status."""
    by_status: dict[int, list[str]] = {}
    for code in OPERATION_CODES[op_id]:
        by_status.setdefault(CODES[code].status, []).append(code)
    return {
        str(status): {
            "description": _STATUS_TEXT[status],
            "headers": _REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": _error_schema(codes, status)}},
        }
        for status, codes in by_status.items()
    }


def _ok(ref: str) -> dict[str, Any]:
    return {
        "description": "OK",
        "headers": _REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": {"$ref": _REF_TEMPLATE.format(name=ref)}}},
    }


def _write_op(op_id: str, summary: str, request: type[msgspec.Struct], response: str) -> dict[str, Any]:
    responses = {"200": _ok(response), **_errors(op_id)}
    return {
        "operationId": op_id,
        "summary": summary,
        "requestBody": {
            "required": True,
            "description": f"A JSON object; at most {REQUEST_SIZE_MAX_DEFAULT} bytes (413 request_too_large). "
            "Any Content-Type is read as JSON; optional fields sent as null count as absent "
            "(not `actual_amount`: only an absent one means the whole frozen amount).",
            "content": {"application/json": {"schema": {"$ref": _REF_TEMPLATE.format(name=request.__name__)}}},
        },
        "responses": dict(sorted(responses.items())),
    }


_CUSTOMER_ID_PARAM: Final = {
    "name": "customer_id",
    "in": "path",
    "required": True,
    "description": "Percent-encoded (`/` as %2F); the raw path is decoded exactly once. "
    "A literal `/` in the id segment is no route (404 not_found).",
    "schema": _id("The customer."),
}


def _read_op(op_id: str, summary: str, response: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "parameters": [_CUSTOMER_ID_PARAM, *parameters],
        "responses": dict(sorted({"200": _ok(response), **_errors(op_id)}.items())),
    }


_LEDGER_PARAMS: Final = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": LEDGER_PAGE_SIZE_MAX, "default": LEDGER_PAGE_SIZE_DEFAULT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "Opaque: a `next_cursor` of the same listing (customer, filters, project).",
        "schema": {"type": "string", "minLength": 1, "maxLength": CURSOR_LENGTH_MAX, "pattern": r"^[\u0020-\u007e]+$"},
    },
    {
        "name": "operation_type",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": sorted(OPERATION_TYPES)},
    },
    {"name": "transaction_id", "in": "query", "required": False, "schema": _id("Exact match.")},
]

# -- response components from the engine.core.results Structs -----------------------------------------

_RESPONSE_STRUCTS: Final = (
    DepositResponse,
    FreezeResponse,
    ConsumeResponse,
    UnfreezeResponse,
    DeductResponse,
    CustomerResponse,
    LedgerPage,
    *openapi_slots.RESPONSE_STRUCTS,
)
_TIME_FIELDS: Final = frozenset(
    {"starts_at", "expires_at", "unfreeze_after", "consume_after", "consumed_at", "unfrozen_at", "deducted_at", "created_at"}
) | openapi_slots.TIME_FIELDS
# Integer fields that are always > 0 on the wire; every other integer is >= 0.
_POSITIVE_FIELDS: Final = {
    "Detail": {"amount"},
    "LedgerEntryView": {"amount"},
    "DepositResponse": {"added_amount"},  # total_amount counts only live buckets: may be 0
    "FreezeResponse": {"frozen_amount"},
    "DeductResponse": {"deducted_amount"},
    "UnfreezeResponse": {"unfrozen_amount"},
    **openapi_slots.POSITIVE_FIELDS,
}
_CONSTANTS: Final = {
    ("Account", "account_type"): {"const": "CREDIT"},
    ("LedgerEntryView", "status"): {"const": "COMPLETED"},
    ("LedgerEntryView", "operation_type"): {"enum": sorted(OPERATION_TYPES)},
    ("LedgerEntryView", "business_type"): {"enum": sorted(BUSINESS_TYPES)},
    **openapi_slots.CONSTANTS,
}


def _tighten(name: str, component: dict[str, Any]) -> None:
    """No extra fields; amounts in [0 or 1, 2^53-1]; times in the wire format; constants."""
    if component.get("type") != "object" or "properties" not in component:
        return
    component["additionalProperties"] = False
    for field, schema in component["properties"].items():
        kinds = [schema] + schema.get("anyOf", [])
        for kind in kinds:
            if kind.get("type") == "integer":
                kind["minimum"] = 1 if field in _POSITIVE_FIELDS.get(name, ()) else 0
                kind["maximum"] = AMOUNT_MAX
            if kind.get("type") == "string" and field in _TIME_FIELDS:
                kind["format"] = "date-time"
                kind["pattern"] = WIRE_TIME_PATTERN
        constant = _CONSTANTS.get((name, field))
        if constant is not None:
            schema.update(constant)
    if name == "ConsumeResponse":  # omitted when zero/None, never null (omit_defaults)
        for field in ("returned_amount", "overage_amount"):
            component["properties"][field] = {"type": "integer", "minimum": 1, "maximum": AMOUNT_MAX}


def _components() -> dict[str, Any]:
    """Request bodies as net/schemas.py declares them (+ cross-field rules), responses tightened."""
    _, components = msgspec.json.schema_components(_RESPONSE_STRUCTS, ref_template=_REF_TEMPLATE)
    for name, component in components.items():
        _tighten(name, component)
    request_structs = (*schemas.REQUEST_STRUCTS, *openapi_slots.REQUEST_STRUCTS)
    _, requests = msgspec.json.schema_components(request_structs, ref_template=_REF_TEMPLATE)
    assert not set(requests) & set(components), "a request and a response Struct share a name"
    for name, pairs in _NOT_BOTH.items():
        requests[name]["allOf"] = [{"not": _both_given(first, second)} for first, second in pairs]
    components.update(requests)
    components["Health"] = {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"type": "string", "const": "ok"}},
    }
    return dict(sorted(components.items()))


# -- the document ---------------------------------------------------------------------------------


def _public_paths() -> dict[str, Any]:
    """The two operations without auth: liveness and this document."""
    no_auth: list[dict[str, list[str]]] = []
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: 200 once recovery is done and writes are accepted",
                "security": no_auth,
                "responses": {
                    "200": {
                        "description": "OK",
                        "headers": _REQUEST_ID_HEADER,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
                    },
                    "503": {
                        "description": "Recovering, shutting down or storage failed",
                        "headers": _REQUEST_ID_HEADER,
                        "content": {"application/json": {"schema": _error_schema(list(OPERATION_CODES["health"]), 503)}},
                    },
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": no_auth,
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document",
                        "headers": _REQUEST_ID_HEADER,
                        "content": {"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
                    }
                },
            }
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh build is cached; callers must not mutate it)."""
    deposit = "Add credits (creates the customer on its first deposit)"
    deposit_op = _write_op("deposit", deposit, schemas.DepositRequest, "DepositResponse")
    deposit_op["parameters"] = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Same as the body's idempotency_key; both given and different -> 400.",
            "schema": _id("Deposit identity."),
        }
    ]
    billing_deposit = copy.deepcopy(deposit_op)
    billing_deposit["operationId"] = "deposit_billing"
    paths: dict[str, Any] = {
        "/v1/customers/deposit": {"post": deposit_op},
        "/v1/billing/deposit": {"post": billing_deposit},
        "/v1/customers/{customer_id}": {
            "get": _read_op("get_customer", "Balance and breakdown (balance + accounts + wallets)", "CustomerResponse", [])
        },
        "/v1/customers/{customer_id}/ledger": {
            "get": _read_op("get_ledger", "Ledger entries, newest first, keyset cursor", "LedgerPage", _LEDGER_PARAMS)
        },
        "/v1/billing/freeze": {
            "post": _write_op("freeze", "Reserve credits", schemas.FreezeRequest, "FreezeResponse")
        },
        "/v1/billing/consume": {
            "post": _write_op("consume", "Settle a freeze at its actual cost", schemas.ConsumeRequest, "ConsumeResponse")
        },
        "/v1/billing/unfreeze": {
            "post": _write_op("unfreeze", "Release a freeze without charging", schemas.UnfreezeRequest, "UnfreezeResponse")
        },
        "/v1/billing/deduct": {
            "post": _write_op("deduct", "Charge immediately", schemas.DeductRequest, "DeductResponse")
        },
        **_public_paths(),
        **openapi_slots.paths(_write_op, _read_op),  # slots and entitlements (CONTRACT §8)
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Tally",
            "version": "0.1.0",
            "description": "A durable credit ledger speaking the hosted Velobase billing API. "
            "Every error is {\"error\": {code, type, message, details, retryable, request_id}}; "
            "a wrong method on a known path is 405 method_not_allowed, an unknown path 404 not_found.",
        },
        "servers": [{"url": "http://127.0.0.1:3002"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "A project's API key."}},
            "schemas": _components(),
        },
    }


@cache
def document_bytes() -> bytes:
    return msgspec.json.encode(document())


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: no auth."""
    return web.Response(body=document_bytes(), content_type="application/json")
