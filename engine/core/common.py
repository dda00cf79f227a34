"""Building blocks every rule module shares: lookups, the commit step, ledger entries,
allocation (CONTRACT §3.4, §3.6), timers' scheduling, transaction identity (§3.9).
"""

from __future__ import annotations

import heapq
from typing import Any

from engine.core.results import (
    Applied,
    Detail,
    Rejected,
)
from engine.core.state import (
    Bucket,
    CustomerState,
    DeductRecord,
    FreezeRecord,
    LedgerEntry,
    LedgerState,
    Parts,
    ProjectState,
    account_id,
    bucket_valid_at,
)

NOT_LOGGED = Applied(None, False)
Takes = list[tuple[Bucket, int]]  # (bucket, amount) taken by one command, before it is stored

# -- small shared helpers ----------------------------------------------------------------------


def commit(state: LedgerState, customer: CustomerState | None, lsn: int) -> None:
    state.last_lsn = lsn
    if customer is not None:
        assert customer.last_lsn < lsn
        customer.last_lsn = lsn


def find_customer(state: LedgerState, project: str, customer_id: str | None) -> CustomerState | None:
    if customer_id is None:
        return None
    project_state = state.projects.get(project)
    if project_state is None:
        return None
    return project_state.customers.get(customer_id)


def not_found(customer_id: str) -> Rejected:
    return Rejected("customer_not_found", f"customer {customer_id!r} not found", {"customer_id": customer_id})


def conflict(field: str, message: str) -> Rejected:
    return Rejected("transaction_conflict", message, {"field": field})


def normalize_credit_types(credit_types: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """CONTRACT §3.4 / §3.9: a selection is a set of wallets; order and repeats don't matter."""
    if credit_types is None:
        return None
    assert len(credit_types) > 0, "net/ rejects an empty credit_types"
    return tuple(sorted(set(credit_types)))


def allocate(
    customer: CustomerState, at_ms: int, amount: int, credit_types: tuple[str, ...] | None, wallet: str | None
) -> Takes | int:
    """CONTRACT §3.4 + §3.6: take `amount` from the selected wallets in allocation order.

    Returns the parts, or (not enough) the int total available in the selection. Reads only.
    """
    assert amount > 0
    assert credit_types is None or wallet is None  # CONTRACT §3.4: never both (net/ rejects)
    parts: Takes = []
    remaining = amount
    for bucket in customer.live:  # bounded: one pass over the customer's live buckets
        if wallet is not None and bucket.wallet != wallet:
            continue
        if credit_types is not None and bucket.wallet not in credit_types:
            continue
        if not bucket_valid_at(bucket, at_ms):
            continue
        available = bucket.total - bucket.used - bucket.frozen
        assert available >= 0
        if available == 0:
            continue
        take = available if available < remaining else remaining
        parts.append((bucket, take))
        remaining -= take
        if remaining == 0:
            return parts
    return amount - remaining


def insufficient(amount: int, available: int, credit_types: tuple[str, ...] | None, wallet: str | None) -> Rejected:
    details: dict[str, Any] = {"wallet": wallet, "requested": amount, "available": available}
    if credit_types is not None:
        details["credit_types"] = list(credit_types)
        return Rejected("insufficient_balance_in_selected_credit_types",
            "the selected credit types do not hold enough credit",
            details,
        )
    return Rejected("insufficient_balance", "insufficient balance", details)


def detail(bucket: Bucket, amount: int) -> Detail:
    return Detail(account_id=account_id(bucket.lsn), wallet=bucket.wallet, source=bucket.source, credit_type=bucket.wallet, amount=amount)


def details_of(customer: CustomerState, parts: Parts) -> list[Detail]:
    return [detail(customer.bucket_by_lsn(bucket_lsn), amount) for bucket_lsn, amount in parts]


def entry(
    lsn: int, i: int, op: str, bucket: Bucket, amount: int, transaction_id: str | None,
    business_type: str, description: str | None, at_ms: int,
) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(
        lsn, i, op, amount, bucket.lsn, bucket.wallet, bucket.source, transaction_id, business_type, description, at_ms
    )


def schedule(state: LedgerState, project: str, customer: CustomerState, due: tuple[int, int, int, str | None]) -> None:
    """Add a timer to the customer's due heap and a pointer to the global one."""
    customer.push_due(due)
    heapq.heappush(state.due_heap, (due[0], project, customer.customer_id))


def identity(
    project: ProjectState, customer: CustomerState, transaction_id: str, kind: type, amount: int,
    credit_types: tuple[str, ...] | None, wallet: str | None,
) -> FreezeRecord | DeductRecord | Rejected | None:  # fmt: skip
    """CONTRACT §3.9: None (new id), the record (a replay), or 409 transaction_conflict."""
    owner = project.txn_owner.get(transaction_id)
    if owner is None:
        return None
    if owner != customer.customer_id:
        return conflict("customer_id", "transactionId already belongs to another customer")
    assert customer.txns is not None
    record = customer.txns[transaction_id]
    if not isinstance(record, kind):
        # CONTRACT §3.9: a deduct id reused for a freeze, or the reverse.
        return conflict("transaction_id", "transactionId already used by another operation type")
    if record.amount != amount:
        return conflict("amount", "transactionId already used with another amount")
    if record.wallet != wallet:
        return conflict("wallet", "transactionId already used with another wallet")
    if record.credit_types != credit_types:
        return conflict("credit_types", "transactionId already used with other credit_types")
    return record


def add_txn(project: ProjectState, customer: CustomerState, record: FreezeRecord | DeductRecord) -> None:
    if customer.txns is None:
        customer.txns = {}
    assert record.transaction_id not in project.txn_owner
    customer.txns[record.transaction_id] = record
    project.txn_owner[record.transaction_id] = customer.customer_id
    if type(record) is FreezeRecord:
        project.open_freeze(customer.customer_id, record)


