"""Deduct (velobase-api §1A.7) and freeze (§1A.4, CONTRACT §3.6, §3.10): new debits on a customer.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.core.commands import (
    Deduct,
    Freeze,
)
from engine.core.common import (
    add_txn,
    allocate,
    commit,
    detail,
    details_of,
    entry,
    find_customer,
    identity,
    insufficient,
    normalize_credit_types,
    not_found,
    schedule,
)
from engine.core.limits import CONSUME_AFTER_S_MAX, UNFREEZE_AFTER_S_MAX
from engine.core.results import (
    Applied,
    DeductResponse,
    FreezeResponse,
    Rejected,
)
from engine.core.state import (
    CONSUME,
    DUE_SETTLE,
    FREEZE,
    CustomerState,
    DeductRecord,
    FreezeRecord,
    LedgerState,
    ProjectState,
)
from engine.core.timefmt import format_ms, format_ms_or_none

# -- deduct (velobase-api §1A.7) -------------------------------------------------------------


class _NewDebit(NamedTuple):
    """A deduct or freeze that passed existence and identity: a new transaction id."""

    customer: CustomerState
    project: ProjectState
    credit_types: tuple[str, ...] | None


def _new_debit(state: LedgerState, command: Deduct | Freeze, kind: type) -> _NewDebit | Applied | Rejected:
    """CONTRACT §3.3 order for deduct and freeze: customer existence (404), then identity: a
    known id is a replay of the stored original (in any later state; descriptive fields and TTLs
    ignored, §3.8, §3.9) or 409. Only a new id goes on to the business rules."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return not_found(command.customer_id)
    project = state.projects[command.project]
    credit_types = normalize_credit_types(command.credit_types)
    record = identity(
        project, customer, command.transaction_id, kind, command.amount, credit_types, command.wallet
    )
    if record is None:
        return _NewDebit(customer, project, credit_types)
    if type(record) is Rejected:
        return record
    if isinstance(record, DeductRecord):
        return Applied(deduct_response(customer, record, True), False)
    assert isinstance(record, FreezeRecord)
    return Applied(freeze_response(customer, record, True), False)


def apply_deduct(state: LedgerState, lsn: int, command: Deduct) -> Applied | Rejected:
    debit = _new_debit(state, command, DeductRecord)
    if type(debit) is not _NewDebit:
        return debit  # type: ignore[return-value]
    customer, project, credit_types = debit
    parts = allocate(customer, command.at_ms, command.amount, credit_types, command.wallet)
    if type(parts) is int:
        return insufficient(command.amount, parts, credit_types, command.wallet)
    assert isinstance(parts, list)
    at_ms = command.at_ms
    transaction_id = command.transaction_id
    details = []
    for i, (bucket, take) in enumerate(parts):
        bucket.used += take
        customer.add_entry(
            entry(lsn, i, CONSUME, bucket, take, transaction_id, command.business_type, command.description, at_ms)
        )
        details.append(detail(bucket, take))
    stored = tuple([(bucket.lsn, take) for bucket, take in parts])
    add_txn(project, customer, DeductRecord(transaction_id, lsn, at_ms, command.amount, credit_types, command.wallet, stored))
    commit(state, customer, lsn)
    # Built here from the buckets in hand (the hot path; deduct_response would look each bucket up
    # again); tests/engine/test_ledger_stateful.py checks a replay equals it but for the flag.
    body = DeductResponse(
        transaction_id=transaction_id,
        deducted_amount=command.amount,
        deduct_details=details,
        deducted_at=format_ms(at_ms),
        is_idempotent_replay=False,
    )
    return Applied(body, True)


def deduct_response(customer: CustomerState, record: DeductRecord, replay: bool) -> DeductResponse:
    return DeductResponse(
        transaction_id=record.transaction_id,
        deducted_amount=record.amount,
        deduct_details=details_of(customer, record.parts),
        deducted_at=format_ms(record.at_ms),
        is_idempotent_replay=replay,
    )


# -- freeze (velobase-api §1A.4, CONTRACT §3.6, §3.10) ------------------------------------------


def apply_freeze(state: LedgerState, lsn: int, command: Freeze) -> Applied | Rejected:
    debit = _new_debit(state, command, FreezeRecord)
    if type(debit) is not _NewDebit:
        return debit  # type: ignore[return-value]
    customer, project, credit_types = debit
    ttl_guard = _check_ttls(command)
    if ttl_guard is not None:
        return ttl_guard
    parts = allocate(customer, command.at_ms, command.amount, credit_types, command.wallet)
    if type(parts) is int:
        return insufficient(command.amount, parts, credit_types, command.wallet)
    assert isinstance(parts, list)
    at_ms = command.at_ms
    for i, (bucket, take) in enumerate(parts):
        bucket.frozen += take
        customer.add_entry(
            entry(lsn, i, FREEZE, bucket, take, command.transaction_id, command.business_type, command.description, at_ms)
        )
    unfreeze_after_ms = None if command.unfreeze_after_s is None else at_ms + command.unfreeze_after_s * 1000
    consume_after_ms = None if command.consume_after_s is None else at_ms + command.consume_after_s * 1000
    record = FreezeRecord(
        command.transaction_id, lsn, at_ms, command.amount, credit_types, command.wallet, command.business_type,
        command.description, unfreeze_after_ms, consume_after_ms, tuple([(bucket.lsn, take) for bucket, take in parts]),
    )  # fmt: skip
    add_txn(project, customer, record)
    due_ms = unfreeze_after_ms if unfreeze_after_ms is not None else consume_after_ms
    if due_ms is not None:
        schedule(state, command.project, customer, (due_ms, DUE_SETTLE, lsn, command.transaction_id))
    commit(state, customer, lsn)
    return Applied(freeze_response(customer, record, False), True)


def _check_ttls(command: Freeze) -> Rejected | None:
    """CONTRACT §3.10, checked by net/ first; the engine guards its own invariants."""
    if command.unfreeze_after_s is not None and command.consume_after_s is not None:
        return Rejected("invalid_auto_settlement", "give at most one of unfreeze_after / consume_after")
    if command.unfreeze_after_s is not None and not 1 <= command.unfreeze_after_s <= UNFREEZE_AFTER_S_MAX:
        return Rejected("invalid_auto_settlement_ttl", "unfreeze_after_seconds out of range")
    if command.consume_after_s is not None and not 1 <= command.consume_after_s <= CONSUME_AFTER_S_MAX:
        return Rejected("invalid_auto_settlement_ttl", "consume_after_seconds out of range")
    return None


def freeze_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> FreezeResponse:
    return FreezeResponse(
        transaction_id=record.transaction_id,
        frozen_amount=record.amount,
        freeze_details=details_of(customer, record.allocation),
        unfreeze_after=format_ms_or_none(record.unfreeze_after_ms),
        consume_after=format_ms_or_none(record.consume_after_ms),
        is_idempotent_replay=replay,
    )


