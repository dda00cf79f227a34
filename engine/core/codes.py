"""The one registry of error codes: code -> HTTP status, envelope type, retryable (CONTRACT §3.14).

The core returns a code (`Rejected(code, message, details)`) and never an HTTP status; `net/`
answers with `CODES[code].status`, the OpenAPI document lists codes from here, and the tests read
it too. A code that is not in this table cannot be raised: `Rejected` and net's `ClientError`
assert membership when they are made, so a typo fails in the first test that reaches it.

Types by status are CONTRACT §3.14's; 405 has no contract type and is the client's mistake.
"""

from typing import Final

import msgspec

TYPE_BY_STATUS: Final = {
    400: "bad_request",
    401: "auth_error",
    403: "permission_denied",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    413: "bad_request",
    422: "unprocessable",
    429: "rate_limited",
    500: "server_error",
    503: "server_error",
}


class Code(msgspec.Struct, frozen=True):
    """How one code is answered: `status` (HTTP), `type` (envelope), `retryable` (envelope)."""

    status: int
    type: str
    retryable: bool


def _code(status: int) -> Code:
    assert status in TYPE_BY_STATUS, status
    return Code(status, TYPE_BY_STATUS[status], status in (429, 503))


_BY_STATUS: Final[dict[int, tuple[str, ...]]] = {
    400: (
        # request shape and values (net/schemas.py; CONTRACT §3.1-§3.5, §7.5-§7.9)
        "invalid_json",
        "unknown_field",
        "invalid_request",
        "customer_id_required",
        "transaction_id_required",
        "invalid_identifier",
        "invalid_credit_types",
        "invalid_wallet_selection",
        "idempotency_key_mismatch",
        "amount_must_be_positive",
        "actual_amount_must_be_non_negative",
        "amount_too_large",
        "invalid_auto_settlement",
        "invalid_auto_settlement_ttl",
        "invalid_starts_at",
        "invalid_expires_at",
        "invalid_datetime_range",
        "invalid_description",
        "invalid_name",
        "invalid_email",
        "invalid_metadata",
        "invalid_business_type",
        "invalid_limit",
        "invalid_cursor",
        "invalid_operation_type",
        "refund_id_required",  # CONTRACT §10
        "void_id_required",
        "account_id_required",
        "invalid_reason",
        "invalid_from",
        "invalid_to",
        "invalid_prefix",
        "invalid_label",
        "invalid_url",  # CONTRACT §11 (webhooks and alerts)
        "invalid_events",
        "invalid_thresholds",
        "too_many_webhooks",
        "too_many_alert_rules",
        "project_required",  # an admin key on /v1 without X-Tally-Project; a key without project
        # business rules (engine/core; CONTRACT §3.4-§3.8, §7.2)
        "insufficient_balance",
        "insufficient_balance_in_selected_credit_types",
        "no_consumable_freeze_records",
        "no_unfreezable_records",
        "freeze_records_already_consumed",
        "freeze_auto_unfrozen",
        "no_refundable_charge",  # CONTRACT §10
        "refund_exceeds_refundable",
        "account_already_voided",
        # slots and entitlements: shape (net/slots_api.py, net/entitlements_api.py; CONTRACT §8)
        "wallet_required",
        "resource_id_required",
        "feature_key_required",
        "value_required",
        "entitlement_validation_error",
        "invalid_ttl_seconds",
        "invalid_valid_from",
        "invalid_valid_until",
        "invalid_from_at",
        "invalid_to_at",
        "invalid_event_type",
        "invalid_include_expired",
        # slots: business rules (engine/core/slots.py; CONTRACT §8.2, §8.3)
        "slot_insufficient_capacity",
        "slot_capacity_below_in_use",
    ),
    401: ("missing_api_key", "invalid_api_key", "api_key_revoked"),
    403: ("admin_required",),  # a project key on /admin (CONTRACT §9.2)
    404: (
        "not_found",
        "customer_not_found",
        "key_not_found",
        "project_not_found",
        "account_not_found",
        "webhook_not_found",
        "slot_pool_not_found",
        "slot_holding_not_found",
        "entitlement_customer_not_found",
    ),
    405: ("method_not_allowed",),
    409: ("transaction_conflict", "api_key_exists"),
    413: ("request_too_large",),
    500: ("server_error",),
    # not_leader: a cluster standby (CONTRACT §12.3); details.leader names the leader or is null
    503: ("overloaded", "storage_unavailable", "not_ready", "shutting_down", "not_leader"),
}

CODES: Final[dict[str, Code]] = {
    code: _code(status) for status, codes in _BY_STATUS.items() for code in codes
}
assert len(CODES) == sum(len(codes) for codes in _BY_STATUS.values()), "a code is listed twice"


def status_of(code: str) -> int:
    """The HTTP status of a registered code. KeyError for an unregistered one (a bug)."""
    return CODES[code].status
