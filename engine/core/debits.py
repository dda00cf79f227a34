"""Deduct (velobase-api §1A.7) and freeze (§1A.4, CONTRACT §3.6, §3.10): new debits on a customer.
"""

from __future__ import annotations

from engine.core.commands import (
    Deduct,
    Freeze,
)
from engine.core import spent
from engine.core.common import (
    add_txn,
    allocate,
    commit,
    detail,
    details_of,
    entry,
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
    LedgerEntry,
    LedgerState,
    ProjectState,
)
from engine.core.timefmt import format_ms, format_ms_or_none

# -- deduct (velobase-api §1A.7) -------------------------------------------------------------


# A deduct or freeze that passed existence and identity (a new transaction id): the customer,
# its project and the normalized credit types. A plain tuple: a NamedTuple's __new__ is one more
# Python call per debit on the hot path (issue 14).
_NewDebit = tuple[CustomerState, ProjectState, "tuple[str, ...] | None"]


def _new_debit(state: LedgerState, command: Deduct | Freeze, kind: type) -> _NewDebit | Applied | Rejected:
    """CONTRACT §3.3 order for deduct and freeze: customer existence (404), then identity: a
    known id is a replay of the stored original (in any later state; descriptive fields and TTLs
    ignored, §3.8, §3.9) or 409. Only a new id goes on to the business rules."""
    project = state.projects.get(command.project)
    customer = None if project is None else project.customers.get(command.customer_id)
    if customer is None:
        return not_found(command.customer_id)
    assert project is not None
    credit_types = command.credit_types
    if credit_types is not None:
        credit_types = normalize_credit_types(credit_types)
    if command.transaction_id not in project.txn_owner:  # a new id: the hot path
        return customer, project, credit_types
    record = identity(
        project, customer, command.transaction_id, kind, command.amount, credit_types, command.wallet
    )
    assert record is not None
    if type(record) is Rejected:
        return record
    if isinstance(record, DeductRecord):
        return Applied(deduct_response(customer, record, True), False)
    assert isinstance(record, FreezeRecord)
    return Applied(freeze_response(customer, record, True), False)


def apply_deduct(state: LedgerState, lsn: int, command: Deduct) -> Applied | Rejected:
    debit = _new_debit(state, command, DeductRecord)
    if not isinstance(debit, tuple):
        return debit  # Applied (a replay) or Rejected
    customer, project, credit_types = debit
    at_ms = command.at_ms
    parts = allocate(customer, at_ms, command.amount, credit_types, command.wallet)
    if type(parts) is int:
        return insufficient(command.amount, parts, credit_types, command.wallet)
    assert isinstance(parts, list)
    transaction_id = command.transaction_id
    business_type = command.business_type
    description = command.description
    details = []
    stored = []
    for i, (bucket, take) in enumerate(parts):
        bucket.used += take
        customer.add_entry(
            LedgerEntry(lsn, i, CONSUME, take, bucket.lsn, bucket.wallet, bucket.source, transaction_id,
                        business_type, description, at_ms)
        )  # fmt: skip
        details.append(detail(bucket, take))
        stored.append((bucket.lsn, take))
        if bucket.used == bucket.total:
            spent.reindex(customer, bucket)  # fully spent: leaves the hot path (§7.11)
    add_txn(project, customer, DeductRecord(transaction_id, lsn, at_ms, command.amount, credit_types, command.wallet, tuple(stored)))
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
    if not isinstance(debit, tuple):
        return debit  # Applied (a replay) or Rejected
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


