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
    DELIVERY_PAGE_SIZE_DEFAULT,
    DELIVERY_PAGE_SIZE_MAX,
    BUSINESS_TYPES,
    CURSOR_LENGTH_MAX,
    CUSTOMER_CURSOR_LENGTH_MAX,
    CUSTOMER_PAGE_SIZE_DEFAULT,
    CUSTOMER_PAGE_SIZE_MAX,
    EVENT_PAGE_SIZE_DEFAULT,
    EVENT_PAGE_SIZE_MAX,
    LEDGER_PAGE_SIZE_DEFAULT,
    LEDGER_PAGE_SIZE_MAX,
    OPERATION_TYPES,
    PREFIX_LENGTH_MAX,
)
from engine.core.results import (
    AlertsView,
    AttemptPage,
    CreatedWebhook,
    DeletedWebhook,
    WebhookList,
    ConsumeResponse,
    CreatedKey,
    CustomerPage,
    CustomerResponse,
    DeductResponse,
    DepositResponse,
    FreezePage,
    FreezeResponse,
    KeyList,
    LedgerPage,
    RefundResponse,
    ProjectList,
    RevokedKey,
    UnfreezeResponse,
    VoidResponse,
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
    "/v1/customers/{tail}": (
        "/v1/customers/{customer_id}", "/v1/customers/{customer_id}/ledger", "/v1/customers/{customer_id}/freezes"
    ),
    "/v1/billing/freeze": ("/v1/billing/freeze",),
    "/v1/billing/consume": ("/v1/billing/consume",),
    "/v1/billing/unfreeze": ("/v1/billing/unfreeze",),
    "/v1/billing/deduct": ("/v1/billing/deduct",),
    "/v1/billing/refund": ("/v1/billing/refund",),
    "/v1/billing/void": ("/v1/billing/void",),
    "/health": ("/health",),
    OPENAPI_PATH: (OPENAPI_PATH,),
    "/metrics": ("/metrics",),
    "/v1/customers": ("/v1/customers",),
    "/admin/v1/projects": ("/admin/v1/projects",),
    "/admin/v1/keys": ("/admin/v1/keys",),
    "/admin/v1/keys/{tail}": ("/admin/v1/keys/{key_id}/revoke",),  # raw path, net/admin.py
    "/v1/alerts/{tail}": ("/v1/alerts/{customer_id}",),  # CONTRACT §11, raw path
    "/admin/v1/webhooks": ("/admin/v1/webhooks",),
    "/admin/v1/webhooks/{tail}/delete": ("/admin/v1/webhooks/{webhook_id}/delete",),
    "/admin/v1/webhooks/{tail}/deliveries": ("/admin/v1/webhooks/{webhook_id}/deliveries",),
    **openapi_slots.ROUTE_DOC_PATHS,
}

# Routes of net.app's table that are not part of the billing API and so not documented: the
# dashboard's static page, assets and icon, and its session probe (net/dashboard.py, issue 13).
# Fuzzers and SDK generators work from the document; a web page is not an API operation.
EXCLUDED_ROUTES: Final = frozenset(
    {"/dashboard", "/dashboard/app.js", "/dashboard/app.css", "/favicon.ico", "/dashboard/session"}
)

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

_KEY_CODES: Final = ("missing_api_key", "invalid_api_key", "api_key_revoked")
# /v1 with an admin key: X-Tally-Project missing, or naming no project (CONTRACT §9.1)
_AUTH_CODES: Final = (*_KEY_CODES, "project_required", "project_not_found")
_ADMIN_CODES: Final = (*_KEY_CODES, "admin_required")  # /admin with a project key: 403
_UNAVAILABLE_CODES: Final = ("overloaded", "storage_unavailable")
_TRANSPORT_CODES: Final = ("invalid_request",)  # net/transport.py: parser refusals (CONTRACT §7.12)
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
    "refund": (
        *_BODY_CODES,
        "refund_id_required",
        "transaction_id_required",
        "invalid_identifier",
        "amount_must_be_positive",
        "amount_too_large",
        "invalid_reason",
        "no_refundable_charge",
        "refund_exceeds_refundable",
        "transaction_conflict",
    ),
    "void": (
        *_BODY_CODES,
        "void_id_required",
        "account_id_required",
        "invalid_identifier",
        "invalid_reason",
        "account_not_found",
        "account_already_voided",
        "transaction_conflict",
    ),
    "get_ledger": (
        *_READ_CODES, "unknown_field", "invalid_limit", "invalid_cursor", "invalid_operation_type",
        "invalid_business_type", "invalid_from", "invalid_to",
    ),  # fmt: skip
    "list_freezes": (*_READ_CODES, "unknown_field", "invalid_limit", "invalid_cursor"),  # issue 13
    "health": ("not_ready",),
    "list_customers": (
        *_AUTH_CODES, *_UNAVAILABLE_CODES, "unknown_field", "invalid_limit", "invalid_cursor", "invalid_prefix"
    ),
    "list_projects": (*_ADMIN_CODES, *_UNAVAILABLE_CODES, "unknown_field"),
    "create_key": (
        *_ADMIN_CODES, *_UNAVAILABLE_CODES, "invalid_json", "unknown_field", "request_too_large",
        "project_required", "invalid_identifier", "invalid_label", "api_key_exists",
    ),  # fmt: skip
    "list_keys": (*_ADMIN_CODES, *_UNAVAILABLE_CODES, "unknown_field", "invalid_identifier", "project_not_found"),
    "revoke_key": (*_ADMIN_CODES, *_UNAVAILABLE_CODES, "key_not_found", "not_found"),
    # CONTRACT §11
    "set_alerts": (*_BODY_CODES, "customer_id_required", "invalid_identifier", "invalid_thresholds",
                   "customer_not_found", "too_many_alert_rules", "not_found"),  # fmt: skip
    "get_alerts": (*_READ_CODES, "unknown_field"),
    "create_webhook": (
        *_ADMIN_CODES, *_UNAVAILABLE_CODES, "invalid_json", "unknown_field", "request_too_large",
        "project_required", "invalid_identifier", "invalid_url", "invalid_events", "project_not_found",
        "too_many_webhooks",
    ),  # fmt: skip
    "list_webhooks": (*_ADMIN_CODES, *_UNAVAILABLE_CODES, "unknown_field", "invalid_identifier", "project_not_found"),
    "delete_webhook": (*_ADMIN_CODES, *_UNAVAILABLE_CODES, "webhook_not_found", "not_found"),
    "list_deliveries": (
        *_ADMIN_CODES, *_UNAVAILABLE_CODES, "webhook_not_found", "not_found", "unknown_field", "invalid_limit",
        "invalid_cursor",
    ),  # fmt: skip
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
    403: "A project key on an admin route",
    404: "Not found",
    409: "Conflict with an earlier operation of the same id",
    413: "Body over the size limit",
    503: "Overloaded or storage failed (retryable)",
}


def _errors(op_id: str) -> dict[str, Any]:
    """The error responses of an operation: its codes grouped by their registered status."""
    by_status: dict[int, list[str]] = {}
    # Any request may be refused by the HTTP parser before it reaches its route (§7.12).
    for code in (*OPERATION_CODES[op_id], *_TRANSPORT_CODES):
        if code not in by_status.get(CODES[code].status, ()):
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


def _responses(op_id: str, response: str) -> dict[str, Any]:
    """200 with the component `response`, then the operation's error responses, by status."""
    return dict(sorted({"200": _ok(response), **_errors(op_id)}.items()))


_ADMIN_SECURITY: Final[list[dict[str, list[str]]]] = [{"adminAuth": []}]


def _write_op(
    op_id: str, summary: str, request: type[msgspec.Struct], response: str,
    *, parameters: list[dict[str, Any]] | None = None, admin: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """An operation with a JSON body (the Struct `request`); `parameters` besides the body (path,
    header); `admin`: an admin key only (CONTRACT §9.1)."""
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "requestBody": {
            "required": True,
            "description": f"A JSON object; at most {REQUEST_SIZE_MAX_DEFAULT} bytes (413 request_too_large). "
            "Any Content-Type is read as JSON; optional fields sent as null count as absent "
            "(not `actual_amount`: only an absent one means the whole frozen amount).",
            "content": {"application/json": {"schema": {"$ref": _REF_TEMPLATE.format(name=request.__name__)}}},
        },
        "responses": _responses(op_id, response),
    }
    if parameters is not None:
        op["parameters"] = parameters
    if admin:
        op["security"] = _ADMIN_SECURITY
    return op


def _get_op(
    op_id: str, summary: str, response: str, parameters: list[dict[str, Any]], *, admin: bool = False
) -> dict[str, Any]:
    """An operation without a body (its inputs: `parameters`); `admin`: an admin key only."""
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "parameters": parameters,
        "responses": _responses(op_id, response),
    }
    if admin:
        op["security"] = _ADMIN_SECURITY
    return op


_CUSTOMER_ID_PARAM: Final = {
    "name": "customer_id",
    "in": "path",
    "required": True,
    "description": "Percent-encoded (`/` as %2F); the raw path is decoded exactly once. "
    "A literal `/` in the id segment is no route (404 not_found).",
    "schema": _id("The customer."),
}


def _read_op(op_id: str, summary: str, response: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A GET of one customer (its id in the path), with more `parameters`."""
    return _get_op(op_id, summary, response, [_CUSTOMER_ID_PARAM, *parameters])


def _query(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """An optional query parameter."""
    param: dict[str, Any] = {"name": name, "in": "query", "required": False}
    if description is not None:
        param["description"] = description
    param["schema"] = schema
    return param


def _page_params(limit_max: int, limit_default: int, cursor_length_max: int, listing: str) -> list[dict[str, Any]]:
    """`limit` and the opaque `cursor` of a keyset listing (CONTRACT §3.12); `listing`: what the
    cursor is bound to."""
    limit = {"type": "integer", "minimum": 1, "maximum": limit_max, "default": limit_default}
    cursor = {"type": "string", "minLength": 1, "maxLength": cursor_length_max, "pattern": r"^[\u0020-\u007e]+$"}
    return [_query("limit", limit), _query("cursor", cursor, f"Opaque: a `next_cursor` of the same {listing}.")]


_LEDGER_PARAMS: Final = [
    *_page_params(LEDGER_PAGE_SIZE_MAX, LEDGER_PAGE_SIZE_DEFAULT, CURSOR_LENGTH_MAX, "listing (customer, filters, project)"),
    _query("operation_type", {"type": "string", "enum": sorted(OPERATION_TYPES)}),
    _query("transaction_id", _id("Exact match.")),
    _query("wallet", _id("Exact match (CONTRACT §10.3).")),
    _query("business_type", {"type": "string", "enum": sorted(BUSINESS_TYPES)}),
    _query("from", {"type": "string", "format": "date-time"},
           "created_at >= from. RFC 3339 with an offset (400 invalid_from without one)."),
    _query("to", {"type": "string", "format": "date-time"},
           "created_at < to; from >= to is an empty page. RFC 3339 with an offset (400 invalid_to)."),
]  # fmt: skip

_FREEZES_PARAMS: Final = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": EVENT_PAGE_SIZE_MAX, "default": EVENT_PAGE_SIZE_DEFAULT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "Opaque: a `next_cursor` of the same listing (customer, project).",
        "schema": {"type": "string", "minLength": 1, "maxLength": CURSOR_LENGTH_MAX, "pattern": r"^[\u0020-\u007e]+$"},
    },
]

# -- the customer list and the admin API (CONTRACT §9.2, §9.3) -------------------------------------

_CUSTOMERS_PARAMS: Final = [
    *_page_params(CUSTOMER_PAGE_SIZE_MAX, CUSTOMER_PAGE_SIZE_DEFAULT, CUSTOMER_CURSOR_LENGTH_MAX, "listing (project and prefix)"),
    _query("prefix", {"type": "string", "maxLength": PREFIX_LENGTH_MAX, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"},
           "Only customers whose id starts with this text (empty: all)."),
]  # fmt: skip
_KEY_ID_PARAM: Final = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "description": "A key id as listed; an admin key's id is not found here.",
    "schema": {"type": "string", "pattern": "^key_[0-9a-f]{16}$"},
}


def _admin_paths() -> dict[str, Any]:
    """GET /v1/customers (any key) and the /admin/v1 operations (an admin key)."""
    create = _write_op("create_key", "Create a key for a project (the project too if new)", schemas.CreateKeyRequest,
                       "CreatedKey", admin=True)  # fmt: skip
    revoke = _get_op("revoke_key", "Revoke a key (idempotent); refused from the next request on", "RevokedKey",
                     [_KEY_ID_PARAM], admin=True)  # fmt: skip
    project_filter = _query("project", _id("Only this project's keys."))
    return {
        "/v1/customers": {
            "get": _get_op("list_customers", "Customers by customer_id, prefix search, keyset cursor", "CustomerPage",
                           _CUSTOMERS_PARAMS)  # fmt: skip
        },
        "/admin/v1/projects": {"get": _get_op("list_projects", "Every project", "ProjectList", [], admin=True)},
        "/admin/v1/keys": {
            "post": create,
            "get": _get_op("list_keys", "Project keys (never the key or its hash)", "KeyList", [project_filter], admin=True),
        },
        "/admin/v1/keys/{key_id}/revoke": {"post": revoke},
        **_hooks_paths(),
    }


_WEBHOOK_ID_PARAM: Final = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "description": "A webhook id as listed.",
    "schema": {"type": "string", "pattern": "^wh_[0-9]{1,19}$"},
}
_DELIVERIES_PARAMS: Final = _page_params(DELIVERY_PAGE_SIZE_MAX, DELIVERY_PAGE_SIZE_DEFAULT, CURSOR_LENGTH_MAX, "webhook's listing")


def _hooks_paths() -> dict[str, Any]:
    """CONTRACT §11: alert rules (any key) and webhooks (an admin key)."""
    set_alerts = _write_op("set_alerts", "Set a customer's (or one wallet's) thresholds on available; [] removes",
                           schemas.SetAlertsRequest, "AlertsView", parameters=[_CUSTOMER_ID_PARAM])  # fmt: skip
    create = _write_op("create_webhook", "Register a webhook (the secret is shown only here)",
                       schemas.CreateWebhookRequest, "CreatedWebhook", admin=True)  # fmt: skip
    project_filter = _query("project", _id("Only this project's webhooks."))
    return {
        "/v1/alerts/{customer_id}": {
            "put": set_alerts,
            "get": _read_op("get_alerts", "A customer's alert rules", "AlertsView", []),
        },
        "/admin/v1/webhooks": {
            "post": create,
            "get": _get_op("list_webhooks", "Webhooks (never a secret)", "WebhookList", [project_filter], admin=True),
        },
        "/admin/v1/webhooks/{webhook_id}/delete": {
            "post": _get_op("delete_webhook", "Delete a webhook and its undelivered events", "DeletedWebhook",
                            [_WEBHOOK_ID_PARAM], admin=True),  # fmt: skip
        },
        "/admin/v1/webhooks/{webhook_id}/deliveries": {
            "get": _get_op("list_deliveries", "Delivery attempts, newest first", "AttemptPage",
                           [_WEBHOOK_ID_PARAM, *_DELIVERIES_PARAMS], admin=True),  # fmt: skip
        },
    }


# -- response components from the engine.core.results Structs -----------------------------------------

_RESPONSE_STRUCTS: Final = (
    DepositResponse,
    FreezeResponse,
    ConsumeResponse,
    UnfreezeResponse,
    DeductResponse,
    CustomerResponse,
    LedgerPage,
    FreezePage,
    RefundResponse,
    VoidResponse,
    CustomerPage,
    ProjectList,
    KeyList,
    CreatedKey,
    RevokedKey,
    AlertsView,
    WebhookList,
    CreatedWebhook,
    DeletedWebhook,
    AttemptPage,
    *openapi_slots.RESPONSE_STRUCTS,
)
_TIME_FIELDS: Final = frozenset(
    {"starts_at", "expires_at", "unfreeze_after", "consume_after", "consumed_at", "unfrozen_at", "deducted_at", "created_at",
     "refunded_at", "voided_at", "revoked_at", "updated_at", "deleted_at", "attempted_at", "next_attempt_at",
     "frozen_at", "settle_at"}
) | openapi_slots.TIME_FIELDS  # fmt: skip
# Integer fields that are always > 0 on the wire; every other integer is >= 0.
_POSITIVE_FIELDS: Final = {
    "Detail": {"amount"},
    "LedgerEntryView": {"amount"},
    "DepositResponse": {"added_amount"},  # total_amount counts only live buckets: may be 0
    "FreezeResponse": {"frozen_amount"},
    "FreezeView": {"amount"},
    "DeductResponse": {"deducted_amount"},
    "UnfreezeResponse": {"unfrozen_amount"},
    "RefundDetail": {"amount"},
    "RefundResponse": {"refunded_amount"},
    **openapi_slots.POSITIVE_FIELDS,
}
_CONSTANTS: Final = {
    ("Account", "account_type"): {"const": "CREDIT"},
    ("LedgerEntryView", "status"): {"const": "COMPLETED"},
    ("LedgerEntryView", "operation_type"): {"enum": sorted(OPERATION_TYPES)},
    ("LedgerEntryView", "business_type"): {"enum": sorted(BUSINESS_TYPES)},
    ("FreezeView", "business_type"): {"enum": sorted(BUSINESS_TYPES)},
    ("FreezeView", "settle_action"): {"enum": ["consume", "unfreeze", None]},
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
    if name == "LedgerEntryView":  # only on REFUND entries (omit_defaults), never null
        component["properties"]["refund_id"] = {"type": "string", "minLength": 1}
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
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (CONTRACT §9.4)",
                "security": no_auth,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "headers": _REQUEST_ID_HEADER,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh build is cached; callers must not mutate it)."""
    deposit = "Add credits (creates the customer on its first deposit)"
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Same as the body's idempotency_key; both given and different -> 400.",
        "schema": _id("Deposit identity."),
    }
    deposit_op = _write_op("deposit", deposit, schemas.DepositRequest, "DepositResponse", parameters=[idempotency_key])
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
        "/v1/customers/{customer_id}/freezes": {  # beyond the record (issue 13)
            "get": _read_op("list_freezes", "Open freezes with their TTLs (settle_action, settle_at), newest first, "
                            "keyset cursor; beyond the Velobase record", "FreezePage", _FREEZES_PARAMS)  # fmt: skip
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
        "/v1/billing/refund": {
            "post": _write_op("refund", "Give back credit of a charge (CONTRACT §10.1)", schemas.RefundRequest, "RefundResponse")
        },
        "/v1/billing/void": {
            "post": _write_op("void", "Write off a grant's available remainder (CONTRACT §10.2)", schemas.VoidRequest, "VoidResponse")
        },
        **_public_paths(),
        **_admin_paths(),
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
            "a wrong method on a known path is 405 method_not_allowed, an unknown path 404 not_found. "
            "An admin key may call the /v1 operations for any project named in the X-Tally-Project "
            "header (absent: 400 project_required; unknown: 404 project_not_found); a project key's "
            "X-Tally-Project is ignored.",
        },
        "servers": [{"url": "http://127.0.0.1:3002"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A project's API key, or an admin key with X-Tally-Project."},
                "adminAuth": {"type": "http", "scheme": "bearer",
                              "description": "An admin key (CONTRACT §9.1); a project key gets 403 admin_required."},
            },  # fmt: skip
            "schemas": _components(),
        },
    }


@cache
def document_bytes() -> bytes:
    return msgspec.json.encode(document())


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: no auth."""
    return web.Response(body=document_bytes(), content_type="application/json")
