"""Commands: every input that can change the ledger, as one tagged union of msgspec Structs.

A command carries everything `engine.core.ledger.apply` needs: the time stamp the runtime chose
(`at_ms`) and every id. Ids the engine creates (bucket `account_id`, ledger entry ids) are derived
from the LSN the command is logged under, passed to `apply` beside the command.

The same Structs are the WAL payload (msgpack, `array_like`), so the rules of schema evolution
apply: each tag is fixed forever, fields are only appended, with defaults, never reordered or
retyped. Requests are validated in `net/` before a command is built (shape, CONTRACT §3.3); the
engine re-checks what it must to keep its invariants and decides existence, business rules and
conflicts.
"""

import typing
from typing import Any, Callable, Final

import msgspec


class Command(msgspec.Struct, tag_field="op", array_like=True, frozen=True, forbid_unknown_fields=True):
    """Base of every command. `at_ms` is when the runtime stamped it (or, for timers, the due time)."""


# -- projects and API keys (CONTRACT §3.15, §5) ------------------------------------------------


class CreateApiKey(Command, tag="create_api_key", frozen=True):
    """Create `project` if new and add a key to it. Only the SHA-256 hex of the key is stored.

    Appended for CONTRACT §9.1-§9.2 (older records decode with the defaults): `label`, a name
    for people; `admin`: an admin key (`project` is then "" and no project is created)."""

    at_ms: int
    project: str
    key_id: str
    key_hash: str
    label: str | None = None
    admin: bool = False


class RevokeApiKey(Command, tag="revoke_api_key", frozen=True):
    """Revoke a key by id (idempotent); `at_ms` becomes its `revoked_at` (CONTRACT §9.2)."""

    at_ms: int
    key_id: str


# -- money (CONTRACT §3) -------------------------------------------------------------------------


class Deposit(Command, tag="deposit", frozen=True):
    """velobase-api §1A.1. `wallet`/`source` already defaulted to "default" by net/."""

    at_ms: int
    project: str
    customer_id: str
    amount: int
    wallet: str = "default"
    source: str = "default"
    starts_at_ms: int | None = None
    expires_at_ms: int | None = None
    idempotency_key: str | None = None
    name: str | None = None
    email: str | None = None
    metadata: dict[str, Any] | None = None
    description: str | None = None


class Deduct(Command, tag="deduct", frozen=True):
    """velobase-api §1A.7. Wallet selection (CONTRACT §3.4): at most one of `credit_types`, `wallet`."""

    at_ms: int
    project: str
    customer_id: str
    amount: int
    transaction_id: str
    credit_types: tuple[str, ...] | None = None
    wallet: str | None = None
    business_type: str = "UNDEFINED"
    description: str | None = None


class Freeze(Command, tag="freeze", frozen=True):
    """velobase-api §1A.4. At most one of the TTLs (CONTRACT §3.10)."""

    at_ms: int
    project: str
    customer_id: str
    amount: int
    transaction_id: str
    credit_types: tuple[str, ...] | None = None
    wallet: str | None = None
    business_type: str = "UNDEFINED"
    description: str | None = None
    unfreeze_after_s: int | None = None
    consume_after_s: int | None = None


class Consume(Command, tag="consume", frozen=True):
    """velobase-api §1A.5. `customer_id` is filled by the runtime from the project's transaction
    index (None when the transaction id is unknown: the engine then rejects it, CONTRACT §3.8)."""

    at_ms: int
    project: str
    customer_id: str | None
    transaction_id: str
    actual_amount: int | None = None


class Unfreeze(Command, tag="unfreeze", frozen=True):
    """velobase-api §1A.6. `customer_id` as for Consume."""

    at_ms: int
    project: str
    customer_id: str | None
    transaction_id: str


# -- timers (CONTRACT §3.10, §3.11, §6): stamped with their due time -------------------------------


class ExpireBuckets(Command, tag="expire_buckets", frozen=True):
    """Write off every bucket of the customer whose `expires_at_ms <= at_ms` (CONTRACT §3.11)."""

    at_ms: int
    project: str
    customer_id: str


class AutoSettle(Command, tag="auto_settle", frozen=True):
    """Auto-unfreeze or auto-consume one freeze whose TTL is due at `at_ms` (CONTRACT §3.10)."""

    at_ms: int
    project: str
    customer_id: str
    transaction_id: str


# -- corrections (CONTRACT §10) ---------------------------------------------------------------------


class Refund(Command, tag="refund", frozen=True):
    """CONTRACT §10.1. `customer_id` is filled by the runtime from the project's transaction index
    (None when `transaction_id` is unknown: the engine answers no_refundable_charge). `amount`
    None: all that is still refundable."""

    at_ms: int
    project: str
    customer_id: str | None
    refund_id: str
    transaction_id: str
    amount: int | None = None
    reason: str | None = None


class Void(Command, tag="void", frozen=True):
    """CONTRACT §10.2. `customer_id` is filled by the runtime from the project's bucket index
    (None when `account_id` names no bucket of the project: 404 account_not_found)."""

    at_ms: int
    project: str
    customer_id: str | None
    void_id: str
    account_id: str
    reason: str | None = None


# -- webhooks and alerts (CONTRACT §11) -------------------------------------------------------------


class CreateWebhook(Command, tag="create_webhook", frozen=True):
    """CONTRACT §11.1. The id is derived from the LSN (`wh_{lsn}`); the secret comes from the shell
    (randomness stays out of the core) and is kept in the log: signing needs its text."""

    at_ms: int
    project: str
    url: str
    events: tuple[str, ...]
    secret: str


class DeleteWebhook(Command, tag="delete_webhook", frozen=True):
    """CONTRACT §11.1: the webhook and its undelivered events go."""

    at_ms: int
    webhook_id: str


class SetAlerts(Command, tag="set_alerts", frozen=True):
    """CONTRACT §11.1: the thresholds on `available` of one customer (wallet None) or one of its
    wallets; an empty tuple removes the rule. net/ has sorted and de-duplicated them."""

    at_ms: int
    project: str
    customer_id: str
    wallet: str | None
    thresholds: tuple[int, ...]


class WebhookAttempt(Command, tag="webhook_attempt", frozen=True):
    """The outcome of one delivery attempt of the head event of (webhook, customer), CONTRACT §11.3.
    `status` is the HTTP status, 0 when none came (timeout, refused); `at_ms` is when it is logged.
    The core decides from it: delivered (2xx), retry later (backoff) or given up (window over)."""

    at_ms: int
    project: str
    customer_id: str
    webhook_id: str
    event_id: str
    status: int
    error: str | None = None
    duration_ms: int = 0


# -- slots (velobase-api §1A.8, CONTRACT §8.2-§8.4) ------------------------------------------------


class SlotGrant(Command, tag="slot_grant", frozen=True):
    """Add `amount` capacity to the pool (customer, wallet, source); creates pool and customer."""

    at_ms: int
    project: str
    customer_id: str
    wallet: str
    source: str
    amount: int
    idempotency_key: str | None = None
    description: str | None = None


class SlotRevoke(Command, tag="slot_revoke", frozen=True):
    """Remove `amount` capacity; refused below `in_use` (CONTRACT §8.2)."""

    at_ms: int
    project: str
    customer_id: str
    wallet: str
    source: str
    amount: int
    idempotency_key: str | None = None
    description: str | None = None


class SlotClaim(Command, tag="slot_claim", frozen=True):
    """Hold `amount` of the pool for `resource_id`; `ttl_s` releases it automatically (§8.3)."""

    at_ms: int
    project: str
    customer_id: str
    wallet: str
    source: str
    resource_id: str
    amount: int = 1
    description: str | None = None
    ttl_s: int | None = None


class SlotRelease(Command, tag="slot_release", frozen=True):
    """Give back the holding of `resource_id` (CONTRACT §8.3)."""

    at_ms: int
    project: str
    customer_id: str
    wallet: str
    source: str
    resource_id: str


class SlotAutoRelease(Command, tag="slot_auto_release", frozen=True):
    """Timer: release the holding claimed at `holding_lsn` whose TTL is due at `at_ms` (§8.3)."""

    at_ms: int
    project: str
    customer_id: str
    holding_lsn: int


# -- entitlements (velobase-api §1A.9, CONTRACT §8.5) ----------------------------------------------


class EntitlementSet(Command, tag="entitlement_set", frozen=True):
    """Upsert the entitlement (customer, feature_key). Times are UTC ms."""

    at_ms: int
    project: str
    customer_id: str
    feature_key: str
    value: str
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    source: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class EntitlementRemove(Command, tag="entitlement_remove", frozen=True):
    at_ms: int
    project: str
    customer_id: str
    feature_key: str


AnyCommand = (
    CreateApiKey
    | RevokeApiKey
    | Deposit
    | Deduct
    | Freeze
    | Consume
    | Unfreeze
    | ExpireBuckets
    | AutoSettle
    | Refund
    | Void
    | CreateWebhook
    | DeleteWebhook
    | SetAlerts
    | WebhookAttempt
    | SlotGrant
    | SlotRevoke
    | SlotClaim
    | SlotRelease
    | SlotAutoRelease
    | EntitlementSet
    | EntitlementRemove
)

# Every command class is in the union (the WAL decoder and apply's `match` both rely on it).
assert set(Command.__subclasses__()) == set(typing.get_args(AnyCommand))

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyCommand)


# Command -> WAL payload bytes (msgpack, array_like). The encoder's bound method itself, not a
# function around it: once per logged command, one Python call fewer (issue 14).
encode_command: Final[Callable[[Command], bytes]] = _encoder.encode


def decode_command(payload: bytes) -> AnyCommand:
    """WAL payload bytes -> command. Raises msgspec.DecodeError / ValidationError on bad bytes."""
    return _decoder.decode(payload)
