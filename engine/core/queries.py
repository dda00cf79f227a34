"""Read-only views of the ledger state: customer balances, ledger pages, id lookups.

Pure: no I/O, no clock (`now_ms` is passed in), and nothing here writes to the state.

Customer view decisions (CONTRACT §3.13, §7.4):
- only buckets valid at `now_ms` count (started, not expired, not written off);
- `accounts` lists them oldest deposit first (lsn order);
- `wallets` are keyed in order of their oldest valid bucket; `sources` likewise;
- a source made of several buckets reports `starts_at` = the earliest start (null if any bucket
  has none: some of its credit was always active) and `expires_at` = the soonest expiry among its
  buckets (null if none expires): "some of this credit expires at X".
"""

from __future__ import annotations

import base64
import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

import msgspec

from engine.core.limits import LEDGER_PAGE_SIZE_MAX, OPERATION_TYPES
from engine.core.results import (
    Account,
    Balance,
    CustomerResponse,
    LedgerEntryView,
    LedgerPage,
    Rejected,
    Wallet,
    WalletSource,
)
from engine.core.state import (
    INDEX_ENTRIES_MIN,
    ApiKey,
    Bucket,
    CustomerState,
    LedgerEntry,
    LedgerState,
    account_id,
    bucket_valid_at,
    entry_id,
)
from engine.core.timefmt import format_ms, format_ms_or_none

CURSOR_VERSION: Final = 1
_cursor_encoder = msgspec.msgpack.Encoder()
_cursor_decoder = msgspec.msgpack.Decoder(tuple[int, int, int, bytes])


def _customer(state: LedgerState, project: str, customer_id: str) -> CustomerState | None:
    project_state = state.projects.get(project)
    return None if project_state is None else project_state.customers.get(customer_id)


def _not_found(customer_id: str) -> Rejected:
    return Rejected("customer_not_found", f"customer {customer_id!r} not found", {"customer_id": customer_id})


# -- customer view (velobase-api §1A.2) ----------------------------------------------------------


def customer_view(state: LedgerState, project: str, customer_id: str, now_ms: int) -> CustomerResponse | Rejected:
    customer = _customer(state, project, customer_id)
    if customer is None:
        return _not_found(customer_id)
    valid = sorted((b for b in customer.live if bucket_valid_at(b, now_ms)), key=_lsn)
    accounts = []
    wallet_buckets: dict[str, dict[str, list[Bucket]]] = {}  # wallet -> source -> buckets
    for bucket in valid:
        accounts.append(
            Account(
                account_id=bucket.account_id, account_type="CREDIT", credit_type=bucket.wallet,
                wallet=bucket.wallet, source=bucket.source, total=bucket.total, used=bucket.used,
                frozen=bucket.frozen, available=bucket.available,
                starts_at=format_ms_or_none(bucket.starts_at_ms), expires_at=format_ms_or_none(bucket.expires_at_ms),
            )
        )  # fmt: skip
        wallet_buckets.setdefault(bucket.wallet, {}).setdefault(bucket.source, []).append(bucket)
    wallets = {name: _wallet(sources) for name, sources in wallet_buckets.items()}
    balance = Balance(
        total=sum(w.total for w in wallets.values()),
        used=sum(w.used for w in wallets.values()),
        frozen=sum(w.frozen for w in wallets.values()),
        available=sum(w.available for w in wallets.values()),
    )
    assert balance.available == balance.total - balance.used - balance.frozen
    return CustomerResponse(
        id=customer.customer_id,
        name=customer.name,
        email=customer.email,
        metadata=customer.metadata,
        balance=balance,
        accounts=accounts,
        wallets=wallets,
        created_at=format_ms(customer.created_at_ms),
    )


def _lsn(bucket: Bucket) -> int:
    return bucket.lsn


def _wallet(sources: dict[str, list[Bucket]]) -> Wallet:
    views = [_source(name, buckets) for name, buckets in sources.items()]
    return Wallet(
        total=sum(s.total for s in views),
        used=sum(s.used for s in views),
        frozen=sum(s.frozen for s in views),
        available=sum(s.available for s in views),
        sources=views,
    )


def _source(name: str, buckets: list[Bucket]) -> WalletSource:
    starts = [b.starts_at_ms for b in buckets]
    expiries = [b.expires_at_ms for b in buckets if b.expires_at_ms is not None]
    starts_at_ms = None if None in starts else min(s for s in starts if s is not None)
    return WalletSource(
        source=name,
        total=sum(b.total for b in buckets),
        used=sum(b.used for b in buckets),
        frozen=sum(b.frozen for b in buckets),
        available=sum(b.available for b in buckets),
        starts_at=format_ms_or_none(starts_at_ms),
        expires_at=format_ms_or_none(min(expiries) if expiries else None),
    )


# -- ledger pages (velobase-api §1A.3, CONTRACT §3.12) ---------------------------------------------


def ledger_page(
    state: LedgerState,
    project: str,
    customer_id: str,
    *,
    limit: int,
    cursor: str | None,
    operation_type: str | None,
    transaction_id: str | None,
) -> LedgerPage | Rejected:
    """Newest first. The cursor is the (lsn, i) key of the last entry shown, bound to project,
    customer and filters; the next page holds the matches strictly older than it, so entries are
    never skipped or repeated, even with equal timestamps. O(log n + limit) for every filter
    once the customer's position indexes exist (they do above INDEX_ENTRIES_MIN entries)."""
    customer = _customer(state, project, customer_id)
    if customer is None:
        return _not_found(customer_id)
    # net/ checks these first; answering here too keeps any caller from reaching a 500.
    if not 1 <= limit <= LEDGER_PAGE_SIZE_MAX:
        return Rejected("invalid_limit", f"limit must be 1..{LEDGER_PAGE_SIZE_MAX}")
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        return Rejected("invalid_operation_type", "unknown operation_type")
    binding = _cursor_binding(project, customer_id, operation_type, transaction_id)
    positions = _positions(customer, operation_type, transaction_id)
    entries = customer.entries
    end = len(positions)
    if cursor is not None:
        key = _decode_cursor(cursor, binding)
        if key is None:
            return Rejected("invalid_cursor", "malformed cursor, or made for another listing")
        end = bisect_left(positions, bisect_left(entries, key, key=_entry_key))
    start = end - limit if end > limit else 0
    items = [_entry_view(entries[positions[k]]) for k in range(end - 1, start - 1, -1)]
    has_more = start > 0
    next_cursor = None
    if has_more:
        last = entries[positions[start]]
        next_cursor = _encode_cursor(last.lsn, last.i, binding)
    return LedgerPage(items=items, total_count=len(positions), has_more=has_more, next_cursor=next_cursor)


def _entry_key(entry: LedgerEntry) -> tuple[int, int]:
    return (entry.lsn, entry.i)


def _positions(customer: CustomerState, operation_type: str | None, transaction_id: str | None) -> Sequence[int]:
    """Ascending positions in `customer.entries` of the matching entries."""
    entries = customer.entries
    if operation_type is None and transaction_id is None:
        return range(len(entries))
    if customer.op_positions is None:
        assert len(entries) <= INDEX_ENTRIES_MIN  # small: a scan is as cheap as an index
        return [
            p
            for p, e in enumerate(entries)
            if (operation_type is None or e.op == operation_type)
            and (transaction_id is None or e.transaction_id == transaction_id)
        ]
    assert customer.txn_positions is not None
    if transaction_id is None:
        return customer.op_positions.get(operation_type, ())  # type: ignore[arg-type]
    by_transaction = customer.txn_positions.get(transaction_id, ())
    if operation_type is None:
        return by_transaction
    return [p for p in by_transaction if entries[p].op == operation_type]  # one transaction: few


def _entry_view(entry: LedgerEntry) -> LedgerEntryView:
    return LedgerEntryView(
        id=entry_id(entry.lsn, entry.i),
        operation_type=entry.op,
        amount=entry.amount,
        wallet=entry.wallet,
        source=entry.source,
        credit_type=entry.wallet,
        transaction_id=entry.transaction_id,
        business_type=entry.business_type,
        description=entry.description,
        account_id=account_id(entry.bucket_lsn),
        status="COMPLETED",
        created_at=format_ms(entry.created_at_ms),
    )


def _cursor_binding(project: str, customer_id: str, operation_type: str | None, transaction_id: str | None) -> bytes:
    """8 bytes naming the listing a cursor belongs to (CONTRACT §7.9 invalid_cursor). Parts are
    length-prefixed so no two listings share a binding by concatenation."""
    digest = hashlib.sha256(b"tally-cursor-v1")
    for part in (project, customer_id, operation_type, transaction_id):
        if part is None:
            digest.update(b"\x00")
        else:
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(b"\x01" + len(raw).to_bytes(4, "big") + raw)
    return digest.digest()[:8]


def _encode_cursor(lsn: int, i: int, binding: bytes) -> str:
    raw = _cursor_encoder.encode((CURSOR_VERSION, lsn, i, binding))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_cursor(cursor: str, binding: bytes) -> tuple[int, int] | None:
    """(lsn, i) or None when the cursor is malformed or bound to another listing."""
    if not cursor or len(cursor) > 64 or not cursor.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, lsn, i, cursor_binding = _cursor_decoder.decode(raw)
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        return None
    if version != CURSOR_VERSION or cursor_binding != binding or lsn < 1 or i < 0:
        return None
    if _encode_cursor(lsn, i, binding) != cursor:
        return None  # one spelling per cursor: no alternative encodings accepted
    return (lsn, i)


# -- lookups ----------------------------------------------------------------------------------


def customer_last_lsn(state: LedgerState, project: str, customer_id: str) -> int:
    """The LSN of the last change to the customer (0 if unknown): what a read must wait for."""
    customer = _customer(state, project, customer_id)
    return 0 if customer is None else customer.last_lsn


def transaction_owner(state: LedgerState, project: str, transaction_id: str) -> str | None:
    """The customer owning a freeze/deduct `transaction_id` in the project (CONTRACT §3.9)."""
    project_state = state.projects.get(project)
    return None if project_state is None else project_state.txn_owner.get(transaction_id)


def find_api_key(state: LedgerState, key_hash: str) -> ApiKey | None:
    """The key record (key_id, key_hash, project, revoked) for a SHA-256 hex, or None."""
    return state.api_keys.get(key_hash)


def list_api_keys(state: LedgerState) -> list[ApiKey]:
    """Every key, in creation order."""
    return list(state.api_keys.values())


def customer_count(state: LedgerState) -> int:
    return sum(len(project.customers) for project in state.projects.values())
