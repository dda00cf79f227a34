"""Deposits (velobase-api §1A.1, CONTRACT §3.1, §3.5, §7.5, §7.8, §7.10): one bucket per deposit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.core.commands import (
    Deposit,
)
from engine.core import spent
from engine.core.common import commit, conflict, entry, find_customer, schedule
from engine.core.limits import AMOUNT_MAX, METADATA_SIZE_MAX
from engine.core.results import (
    Applied,
    DepositResponse,
    Rejected,
)
from engine.core.state import (
    DUE_EXPIRE,
    EXPIRE,
    GRANT,
    Bucket,
    CustomerState,
    DepositRecord,
    LedgerState,
    ProjectState,
    account_id,
    bucket_valid_at,
    entry_id,
)
from engine.core.timefmt import format_ms_or_none

# -- deposit (velobase-api §1A.1, CONTRACT §3.1, §3.5, §7.5, §7.8) ---------------------------------

_json = msgspec.json.Encoder()

_DEPOSIT_FIELDS = (
    ("amount", "amount"),
    ("wallet", "wallet"),
    ("source", "source"),
    ("starts_at", "starts_at_ms"),
    ("expires_at", "expires_at_ms"),
)


def _deposit_identity(state: LedgerState, command: Deposit) -> DepositRecord | Rejected | None:
    """CONTRACT §3.9, §7.8: None (new key or no key), the record (a replay), or 409."""
    if command.idempotency_key is None:
        return None  # never deduplicated
    project = state.projects.get(command.project)
    if project is None:
        return None
    record = project.deposit_records.get(command.idempotency_key)
    if record is None:
        return None
    if isinstance(record, str):  # its owner is still encoded (engine/core/cold.py): decoding it puts the record here
        project.customers[record]
        record = project.deposit_records[command.idempotency_key]
        assert isinstance(record, DepositRecord)
    if project.bucket_owner(record.lsn) != command.customer_id:  # record.lsn = its bucket's lsn
        return conflict("customer_id", "idempotency_key already belongs to another customer")
    for field, attribute in _DEPOSIT_FIELDS:
        if getattr(record, attribute) != getattr(command, attribute):
            return conflict(field, f"idempotency_key already used with another {field}")
    return record


def apply_deposit(state: LedgerState, lsn: int, command: Deposit) -> Applied | Rejected:
    """One bucket per deposit; creates the customer on first deposit. `name` and `email` are
    taken only when the deposit creates the customer; `metadata` on a later deposit is merged key
    by key, the later value winning (CONTRACT §7.10). A replay changes nothing."""
    assert 1 <= command.amount <= AMOUNT_MAX  # CONTRACT §3.1, checked by net/
    assert command.wallet and command.source
    if (
        command.starts_at_ms is not None
        and command.expires_at_ms is not None
        and command.expires_at_ms <= command.starts_at_ms
    ):
        return Rejected("invalid_datetime_range", "expires_at must be after starts_at")  # CONTRACT §3.5
    record = _deposit_identity(state, command)
    if record is not None:
        if type(record) is Rejected:
            return record
        assert isinstance(record, DepositRecord)
        return Applied(deposit_response(command.customer_id, record, True), False)
    customer = find_customer(state, command.project, command.customer_id)
    live_total = 0 if customer is None else customer.open_total  # a running sum (§7.11)
    if live_total + command.amount > AMOUNT_MAX:
        # CONTRACT §3.1: every sum (bucket, wallet, customer) is bounded by the live total.
        return Rejected("amount_too_large", "the customer's total would pass 2^53-1",
            {"requested": command.amount, "total": live_total, "max": AMOUNT_MAX},
        )  # fmt: skip
    metadata = _merged_metadata(customer, command.metadata)
    if type(metadata) is Rejected:
        return metadata
    project = state.projects.get(command.project)
    if project is None:
        project = state.projects[command.project] = ProjectState(name=command.project)
    if customer is not None:
        customer.metadata = metadata  # type: ignore[assignment]  # narrowed: not Rejected
    else:
        customer = CustomerState(
            customer_id=command.customer_id, created_at_ms=command.at_ms, name=command.name,
            email=command.email, metadata=command.metadata,
        )  # fmt: skip
        project.add_customer(customer)
    return _deposit_write(state, lsn, project, customer, command)


def _merged_metadata(customer: CustomerState | None, metadata: dict[str, Any] | None) -> dict[str, Any] | None | Rejected:
    """CONTRACT §7.10: the customer's metadata after this deposit. The merge is bounded like a
    request's metadata (METADATA_SIZE_MAX bytes of JSON), so many small deposits cannot grow it
    without limit: past the bound the deposit is refused and nothing changes."""
    if customer is None or metadata is None:
        return metadata if customer is None else customer.metadata
    merged = metadata if customer.metadata is None else {**customer.metadata, **metadata}
    size = len(_json.encode(merged))
    if size > METADATA_SIZE_MAX:
        return Rejected("invalid_metadata", "the customer's merged metadata would pass its size limit",
            {"field": "metadata", "size": size, "max": METADATA_SIZE_MAX},
        )  # fmt: skip
    return merged


def _deposit_write(
    state: LedgerState, lsn: int, project: ProjectState, customer: CustomerState, command: Deposit
) -> Applied:
    at_ms = command.at_ms
    # CONTRACT §7.5: an expires_at already past is accepted; GRANT + EXPIRE of the whole amount.
    expired_now = command.expires_at_ms is not None and command.expires_at_ms <= at_ms
    bucket = Bucket(lsn, command.wallet, command.source, command.amount, command.starts_at_ms, command.expires_at_ms)
    if expired_now:
        bucket.is_expired = True  # never enters `live`
        bucket.expired = command.amount
    customer.add_bucket(bucket)
    project.add_bucket_owner(lsn, customer.customer_id)
    key = command.idempotency_key
    customer.add_entry(entry(lsn, 0, GRANT, bucket, command.amount, key, "UNDEFINED", command.description, at_ms))
    if expired_now:
        # created_at = the deposit time: credit cannot be written off before it existed.
        customer.add_entry(entry(lsn, 1, EXPIRE, bucket, command.amount, None, "UNDEFINED", None, at_ms))
    elif command.expires_at_ms is not None:
        schedule(state, command.project, customer, (command.expires_at_ms, DUE_EXPIRE, lsn, None))
    wallet_total = sum(b.total for b in customer.live if b.wallet == command.wallet and bucket_valid_at(b, at_ms))
    wallet_total += sum(t.total for (w, _), t in spent.valid_totals(customer, at_ms).items() if w == command.wallet)
    if wallet_total == command.amount:  # a first deposit: share the equal int object (28 bytes)
        wallet_total = command.amount
    record = DepositRecord(
        key or "", lsn, command.amount, command.wallet, command.source, command.starts_at_ms,
        command.expires_at_ms, wallet_total,
    )  # fmt: skip
    if key is not None:
        customer.add_deposit(record)
        project.deposit_records[key] = record
    commit(state, customer, lsn)
    return Applied(deposit_response(customer.customer_id, record, False), True)


def deposit_response(customer_id: str, record: DepositRecord, replay: bool) -> DepositResponse:
    """`total_amount` = the wallet's total as the customer view showed it right after the deposit
    (buckets valid at that instant; velobase-api §1A.1 [REC])."""
    return DepositResponse(
        customer_id=customer_id,
        account_id=account_id(record.lsn),
        wallet=record.wallet,
        source=record.source,
        credit_type=record.wallet,
        total_amount=record.wallet_total,
        added_amount=record.amount,
        starts_at=format_ms_or_none(record.starts_at_ms),
        expires_at=format_ms_or_none(record.expires_at_ms),
        record_id=entry_id(record.lsn, 0),
        is_idempotent_replay=replay,
    )


