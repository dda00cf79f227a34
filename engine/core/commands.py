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
from typing import Any

import msgspec


class Command(msgspec.Struct, tag_field="op", array_like=True, frozen=True, forbid_unknown_fields=True):
    """Base of every command. `at_ms` is when the runtime stamped it (or, for timers, the due time)."""


# -- projects and API keys (CONTRACT §3.15, §5) ------------------------------------------------


class CreateApiKey(Command, tag="create_api_key", frozen=True):
    """Create `project` if new and add a key to it. Only the SHA-256 hex of the key is stored."""

    at_ms: int
    project: str
    key_id: str
    key_hash: str


class RevokeApiKey(Command, tag="revoke_api_key", frozen=True):
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


def encode_command(command: Command) -> bytes:
    """Command -> WAL payload bytes (msgpack, array_like)."""
    return _encoder.encode(command)


def decode_command(payload: bytes) -> AnyCommand:
    """WAL payload bytes -> command. Raises msgspec.DecodeError / ValidationError on bad bytes."""
    return _decoder.decode(payload)
