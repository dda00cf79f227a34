"""What `engine.core.ledger.apply` and the engine's queries return: a response body or a rejection.

Response Structs are the exact wire bodies of velobase-api §1A (superset shapes, CONTRACT §3.13),
encoded by net/ with msgspec.json. Amounts are ints; times are RFC 3339 UTC strings with
milliseconds and `Z` (CONTRACT §3.16), made by `engine.core.timefmt.format_ms`.
"""

from typing import Any

import msgspec

from engine.core.codes import CODES


class Detail(msgspec.Struct, kw_only=True):
    """One bucket touched by a freeze, consume, unfreeze or deduct (velobase-api §11.2)."""

    account_id: str
    wallet: str
    source: str
    credit_type: str  # = wallet (CONTRACT §3.12)
    amount: int


class DepositResponse(msgspec.Struct, kw_only=True):
    customer_id: str
    account_id: str
    wallet: str
    source: str
    credit_type: str
    total_amount: int  # the wallet's total after the deposit (velobase-api §1A.1 [REC])
    added_amount: int
    starts_at: str | None
    expires_at: str | None
    record_id: str  # id of the GRANT ledger entry
    is_idempotent_replay: bool


class FreezeResponse(msgspec.Struct, kw_only=True):
    transaction_id: str
    frozen_amount: int
    freeze_details: list[Detail]
    unfreeze_after: str | None
    consume_after: str | None
    is_idempotent_replay: bool


class ConsumeResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`returned_amount` and `overage_amount` are omitted when None (CONTRACT §3.7)."""

    transaction_id: str
    consumed_amount: int
    returned_amount: int | None = None
    overage_amount: int | None = None
    consume_details: list[Detail]
    consumed_at: str
    is_idempotent_replay: bool


class UnfreezeResponse(msgspec.Struct, kw_only=True):
    transaction_id: str
    unfrozen_amount: int
    unfreeze_details: list[Detail]
    unfrozen_at: str
    is_idempotent_replay: bool


class DeductResponse(msgspec.Struct, kw_only=True):
    transaction_id: str
    deducted_amount: int
    deduct_details: list[Detail]
    deducted_at: str
    is_idempotent_replay: bool


class RefundDetail(msgspec.Struct, kw_only=True):
    """One bucket a refund gave credit back to (CONTRACT §10.1)."""

    account_id: str
    wallet: str
    source: str
    amount: int


class RefundResponse(msgspec.Struct, kw_only=True):
    """POST /v1/billing/refund (CONTRACT §10.1). `refundable_amount`: what is left after it."""

    refund_id: str
    transaction_id: str
    customer_id: str
    refunded_amount: int
    refundable_amount: int
    refund_details: list[RefundDetail]
    refunded_at: str
    is_idempotent_replay: bool


class VoidResponse(msgspec.Struct, kw_only=True):
    """POST /v1/billing/void (CONTRACT §10.2). `voided_amount` may be 0 (nothing was available)."""

    void_id: str
    account_id: str
    customer_id: str
    voided_amount: int
    voided_at: str
    is_idempotent_replay: bool


class Balance(msgspec.Struct, kw_only=True):
    total: int
    used: int
    frozen: int
    available: int  # = total - used - frozen (CONTRACT §3.13)


class Account(msgspec.Struct, kw_only=True):
    """One bucket (one deposit) in the customer view."""

    account_id: str
    account_type: str  # always "CREDIT"
    credit_type: str
    wallet: str
    source: str
    total: int
    used: int
    frozen: int
    available: int
    starts_at: str | None
    expires_at: str | None


class WalletSource(msgspec.Struct, kw_only=True):
    source: str
    total: int
    used: int
    frozen: int
    available: int
    starts_at: str | None
    expires_at: str | None


class Wallet(msgspec.Struct, kw_only=True):
    total: int
    used: int
    frozen: int
    available: int
    sources: list[WalletSource]


class CustomerResponse(msgspec.Struct, kw_only=True):
    """GET /v1/customers/{id}: the v1 + v2 superset (velobase-api §1A.2, CONTRACT §3.13)."""

    id: str
    name: str | None
    email: str | None
    metadata: dict[str, Any] | None
    balance: Balance
    accounts: list[Account]
    wallets: dict[str, Wallet]
    created_at: str


class LedgerEntryView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ledger entry on the wire (CONTRACT §3.12). `refund_id` only on REFUND entries
    (CONTRACT §10.4); every other field is always present (null included)."""

    id: str
    operation_type: str
    amount: int
    wallet: str
    source: str
    credit_type: str
    transaction_id: str | None
    business_type: str
    description: str | None
    account_id: str
    status: str
    created_at: str
    refund_id: str | None = None


class LedgerPage(msgspec.Struct, kw_only=True):
    items: list[LedgerEntryView]
    total_count: int
    has_more: bool
    next_cursor: str | None


# -- open freezes (GET /v1/customers/{id}/freezes, beyond the record: issue 13) -------------------


class FreezeView(msgspec.Struct, kw_only=True):
    """One open (FROZEN) freeze. `amount`: credits frozen; `settle_action`: what its TTL does at
    `settle_at` ("unfreeze" | "consume"; both null without a TTL); `allocations`: the buckets
    it holds, allocation order (CONTRACT §3.6); `credit_types`/`wallet`: as the freeze named them."""

    transaction_id: str
    amount: int
    frozen_at: str
    settle_action: str | None
    settle_at: str | None
    allocations: list[Detail]
    credit_types: list[str] | None
    wallet: str | None
    business_type: str
    description: str | None


class FreezePage(msgspec.Struct, kw_only=True):
    items: list[FreezeView]
    total_count: int
    has_more: bool
    next_cursor: str | None


# -- the admin API and the customer list (CONTRACT §9.2, §9.3) ----------------------------------


class KeyView(msgspec.Struct, kw_only=True):
    """A project key as GET /admin/v1/keys lists it: never the key or its hash. A time is null
    only for a key restored from a snapshot written before Tally kept key times."""

    key_id: str
    project: str
    label: str | None
    created_at: str | None
    revoked_at: str | None


class KeyList(msgspec.Struct, kw_only=True):
    items: list[KeyView]


class CreatedKey(msgspec.Struct, kw_only=True):
    """POST /admin/v1/keys: the only time `key` is shown."""

    key_id: str
    project: str
    label: str | None
    created_at: str
    key: str


class RevokedKey(msgspec.Struct, kw_only=True):
    """POST /admin/v1/keys/{key_id}/revoke (a replay repeats the first revocation's time)."""

    key_id: str
    revoked_at: str | None


class ProjectView(msgspec.Struct, kw_only=True):
    """`customers`: how many; `keys_active`: its keys not revoked; `created_at`: its first key's."""

    name: str
    created_at: str | None
    customers: int
    keys_active: int


class ProjectList(msgspec.Struct, kw_only=True):
    items: list[ProjectView]


class CustomerSummary(msgspec.Struct, kw_only=True):
    """One customer in GET /v1/customers; `balance` as GET /v1/customers/{id} reports it."""

    customer_id: str
    name: str | None
    email: str | None
    created_at: str
    balance: Balance


class CustomerPage(msgspec.Struct, kw_only=True):
    items: list[CustomerSummary]
    has_more: bool
    next_cursor: str | None
    total_count: int
# -- slots (velobase-api §1A.8, CONTRACT §8.2-§8.4) ------------------------------------------------


class SlotPoolSummary(msgspec.Struct, kw_only=True):
    """The pool view: `available` = capacity - in_use; `status` is always "ACTIVE" (§8.2)."""

    pool_id: str
    wallet: str
    source: str
    capacity: int
    in_use: int
    available: int
    status: str


class SlotPoolResponse(SlotPoolSummary, kw_only=True):
    """POST /v1/slot/grant and /revoke."""

    is_idempotent_replay: bool


class SlotHoldingResponse(SlotPoolSummary, kw_only=True):
    """POST /v1/slot/claim and /release: the pool view after the change + the holding."""

    holding_id: str
    is_idempotent_replay: bool


class SlotPoolsResponse(msgspec.Struct, kw_only=True):
    """GET /v1/slot/customer/{customer_id}: pools in creation order."""

    pools: list[SlotPoolSummary]


class SlotEventView(msgspec.Struct, kw_only=True):
    id: str
    type: str  # GRANT_CAPACITY | REVOKE_CAPACITY | CLAIM | RELEASE
    wallet: str
    source: str
    amount: int
    resource_id: str | None
    description: str | None
    idempotency_key: str | None
    created_at: str


class SlotEventPage(msgspec.Struct, kw_only=True):
    items: list[SlotEventView]
    total_count: int
    has_more: bool
    next_cursor: str | None


# -- entitlements (velobase-api §1A.9, CONTRACT §8.5) ----------------------------------------------


class EntitlementView(msgspec.Struct, kw_only=True):
    entitlement_id: str
    feature_key: str
    value: str
    valid_from: str | None
    valid_until: str | None
    source: str | None
    description: str | None
    metadata: dict[str, Any] | None


class EntitlementSetResponse(EntitlementView, kw_only=True):
    """`old_value` is an explicit null on first set (is_created true) or when there was none."""

    is_created: bool
    old_value: str | None


class EntitlementItem(EntitlementView, kw_only=True):
    is_active: bool


class EntitlementGetResponse(msgspec.Struct, kw_only=True):
    entitlement: EntitlementView | None


class EntitlementListResponse(msgspec.Struct, kw_only=True):
    items: list[EntitlementItem]


class EntitlementRemoveResponse(msgspec.Struct, kw_only=True):
    removed: bool
    old_value: str | None


class EntitlementEventView(msgspec.Struct, kw_only=True):
    id: str
    feature_key: str
    type: str  # SET | REMOVE
    old_value: str | None
    new_value: str | None
    source: str | None
    description: str | None
    created_at: str


class EntitlementEventPage(msgspec.Struct, kw_only=True):
    items: list[EntitlementEventView]
    total_count: int
    has_more: bool
    next_cursor: str | None


class Applied(msgspec.Struct, frozen=True):
    """Success. `body` is the response (None for timer commands and key commands).

    `logged` is True when the state changed, so the command must be written to the WAL and the
    response held until it is durable; False for an idempotent replay (state untouched).
    """

    body: Any
    logged: bool


class Rejected(msgspec.Struct, frozen=True):
    """A refusal: a registered contract code (engine/core/codes.py), a message for people and
    `details` for programs (CONTRACT §3.14, §7.9). A rejection changes nothing. The HTTP status
    is net's business: `codes.status_of(code)`."""

    code: str
    message: str
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        assert self.code in CODES, self.code


Result = Applied | Rejected


# -- webhooks and alerts (CONTRACT §11) -------------------------------------------------------------


class WebhookView(msgspec.Struct, kw_only=True):
    """A webhook as listed (never its secret), CONTRACT §11.1. `pending`: events queued, not yet
    delivered or given up; `dropped`: events not queued because the outbox was full."""

    webhook_id: str
    project: str
    url: str
    events: list[str]
    created_at: str
    pending: int
    dropped: int


class CreatedWebhook(msgspec.Struct, kw_only=True):
    """POST /admin/v1/webhooks: the only time the secret is shown (CONTRACT §11.1)."""

    webhook_id: str
    project: str
    url: str
    events: list[str]
    created_at: str
    secret: str


class WebhookList(msgspec.Struct, kw_only=True):
    items: list[WebhookView]


class DeletedWebhook(msgspec.Struct, kw_only=True):
    webhook_id: str
    deleted_at: str
    discarded: int  # undelivered events dropped with it


class AlertRuleView(msgspec.Struct, kw_only=True):
    """One rule: `wallet` None = customer level; `thresholds` descending; `below` lists those the
    customer is under now (as of its last logged change)."""

    wallet: str | None
    thresholds: list[int]
    below: list[int]
    updated_at: str


class AlertsView(msgspec.Struct, kw_only=True):
    customer_id: str
    rules: list[AlertRuleView]


class AttemptView(msgspec.Struct, kw_only=True):
    """One delivery attempt (GET /admin/v1/webhooks/{id}/deliveries). `outcome`: "delivered",
    "retry" (another attempt at `next_attempt_at`) or "failed" (3-day window over, given up);
    `status` 0: no HTTP answer (timeout, refused; see `error`)."""

    attempt_id: str
    event_id: str
    event_type: str
    customer_id: str
    attempt: int
    status: int
    outcome: str
    error: str | None
    duration_ms: int
    attempted_at: str
    next_attempt_at: str | None


class AttemptPage(msgspec.Struct, kw_only=True):
    items: list[AttemptView]
    has_more: bool
    next_cursor: str | None
