"""Corrections (CONTRACT §10): refund a charge, void a grant. Pure, like every rule module.

Refund (§10.1, §10.4): credit charged by a deduct or a consumed freeze (overage included) goes
back to the buckets it came from, newest charge first: a consumed freeze's overage is newer than
its frozen part, and within one charge buckets come back in the reverse of their allocation
order. Since every refund of a transaction takes from the front of that same list, the refund
state of a charge is one number: how much of it was refunded so far (`customer.refunded`).
A refund lowers `used` (one REFUND entry per bucket, carrying the charge's `transaction_id`,
its business_type, and the reason as description); credit landing in a closed bucket (expired
or voided) is written off at once with an EXPIRE entry, as §3.11.

Void (§10.2): the bucket's available remainder is written off with one VOID entry (transaction_id
= void_id) and the bucket is closed (`is_expired`): its frozen credit stays consumable, and what
comes back to it later (unfreeze, a consume's unused tail, a refund) is written off at once.

Order (§3.3, §10.4): an exact replay first (same id, same target, amount equal or omitted: the
stored original, whatever changed since); then existence (404 account_not_found for a void),
business rules (400), and only then a conflict with an earlier use of the id (409
transaction_conflict, details.field = the first field that differs).
"""

from __future__ import annotations

from bisect import bisect_left

from engine.core.commands import Refund, Void
from engine.core import spent
from engine.core.common import commit, conflict, entry, find_customer
from engine.core.results import Applied, RefundDetail, RefundResponse, Rejected, VoidResponse
from engine.core.state import (
    CONSUMED,
    EXPIRE,
    REFUND,
    VOID,
    Bucket,
    CustomerState,
    DeductRecord,
    FreezeRecord,
    LedgerState,
    Parts,
    RefundRecord,
    VoidRecord,
    account_id,
    allocation_key,
    note_refund,
    note_void,
)
from engine.core.timefmt import format_ms

# -- refund (CONTRACT §10.1, §10.4) -----------------------------------------------------------------


def apply_refund(state: LedgerState, lsn: int, command: Refund) -> Applied | Rejected:
    """Refund -> Applied(RefundResponse) | Rejected(no_refundable_charge, refund_exceeds_refundable
    {requested, refundable}, transaction_conflict {field}). See the module docstring."""
    earlier = _earlier_refund(state, command)
    if type(earlier) is Applied:
        return earlier
    customer = find_customer(state, command.project, command.customer_id)
    charge = None if customer is None else _charge(customer, command.transaction_id)
    if customer is None or charge is None:
        return Rejected("no_refundable_charge", "no charge to refund for this transaction_id",
                        {"transaction_id": command.transaction_id})  # fmt: skip
    layers, charged = charge
    refunded = (customer.refunded or {}).get(command.transaction_id, 0)
    refundable = charged - refunded
    assert refundable >= 0
    if refundable == 0:
        return Rejected("no_refundable_charge", "nothing left to refund for this transaction_id",
                        {"transaction_id": command.transaction_id})  # fmt: skip
    amount = refundable if command.amount is None else command.amount
    if amount > refundable:
        return Rejected("refund_exceeds_refundable", "the refund is more than is still refundable",
                        {"requested": amount, "refundable": refundable})  # fmt: skip
    if type(earlier) is Rejected:
        return earlier  # §10.4: a conflict is decided after the business rules
    parts = _take(layers, refunded, amount)
    record = RefundRecord(
        command.refund_id, command.transaction_id, lsn, command.at_ms, amount, command.amount,
        refundable - amount, parts, command.reason,
    )  # fmt: skip
    _refund_write(state, lsn, command.project, customer, record, _business_type(customer, command.transaction_id))
    return Applied(refund_response(customer, record, False), True)


def _earlier_refund(state: LedgerState, command: Refund) -> Applied | Rejected | None:
    """An earlier use of `refund_id`: its replay, a pending 409, or None (a new id)."""
    project = state.projects.get(command.project)
    owner = None if project is None else project.refund_owner.get(command.refund_id)
    if owner is None:
        return None
    assert project is not None
    customer = project.customers[owner]
    assert customer.refunds is not None
    record = customer.refunds[command.refund_id]
    if record.transaction_id != command.transaction_id:
        return conflict("transaction_id", "refund_id already used for another transaction_id")
    if command.amount is not None and command.amount != record.amount:
        return conflict("amount", "refund_id already used with another amount")
    return Applied(refund_response(customer, record, True), False)


def _charge(customer: CustomerState, transaction_id: str) -> tuple[Parts, int] | None:
    """The charge of a deduct or consumed freeze as (bucket_lsn, amount) layers, newest first,
    and its total; None for an unknown id or a freeze not consumed."""
    record = None if customer.txns is None else customer.txns.get(transaction_id)
    if isinstance(record, DeductRecord):
        return tuple(reversed(record.parts)), record.amount
    if not isinstance(record, FreezeRecord) or record.status != CONSUMED:
        return None
    assert record.settle_parts is not None
    frozen_charge: list[tuple[int, int]] = []
    remaining = record.consumed_amount - record.overage_amount
    for bucket_lsn, part in record.allocation:  # consume charged the allocation in order
        take = min(part, remaining)
        remaining -= take
        if take > 0:
            frozen_charge.append((bucket_lsn, take))
    assert remaining == 0
    from_freeze = dict(frozen_charge)
    overage = [(lsn, amount - from_freeze.get(lsn, 0)) for lsn, amount in record.settle_parts]
    overage = [(lsn, amount) for lsn, amount in overage if amount > 0]
    # the overage was allocated by §3.6 order, a static key per bucket: sort to recover it
    overage.sort(key=lambda part: allocation_key(customer.bucket_by_lsn(part[0])))
    layers = tuple(reversed(overage)) + tuple(reversed(frozen_charge))
    assert sum(amount for _, amount in layers) == record.consumed_amount
    return layers, record.consumed_amount


def _take(layers: Parts, skip: int, amount: int) -> Parts:
    """`amount` from `layers` after the first `skip` credits, merged per bucket (one entry per
    bucket touched, §3.12), in first-touched order."""
    taken: dict[int, int] = {}
    for bucket_lsn, part in layers:  # bounded: the charge's buckets
        if skip >= part:
            skip -= part
            continue
        take = min(part - skip, amount)
        skip = 0
        taken[bucket_lsn] = taken.get(bucket_lsn, 0) + take
        amount -= take
        if amount == 0:
            break
    assert amount == 0
    return tuple(taken.items())


def _business_type(customer: CustomerState, transaction_id: str) -> str:
    """The charge's business_type (REFUND entries carry it, so a filter shows a charge's refunds
    beside it). A freeze keeps it; a deduct's is on its first CONSUME entry (found by bisect)."""
    assert customer.txns is not None
    record = customer.txns[transaction_id]
    if isinstance(record, FreezeRecord):
        return record.business_type
    position = bisect_left(customer.entries, (record.lsn, 0), key=lambda e: (e.lsn, e.i))
    first = customer.entries[position]
    assert first.lsn == record.lsn and first.transaction_id == transaction_id
    return first.business_type


def _refund_write(
    state: LedgerState, lsn: int, project: str, customer: CustomerState, record: RefundRecord, business_type: str
) -> None:
    """Every write of a refund; validation is done, none of this can fail."""
    at_ms = record.at_ms
    buckets: list[tuple[Bucket, int]] = []
    for i, (bucket_lsn, amount) in enumerate(record.parts):
        bucket = customer.bucket_by_lsn(bucket_lsn)
        bucket.used -= amount
        assert bucket.used >= 0, (bucket, amount)
        customer.add_entry(entry(lsn, i, REFUND, bucket, amount, record.transaction_id, business_type, record.reason, at_ms))
        buckets.append((bucket, amount))
        spent.reindex(customer, bucket)  # a spent bucket holding credit again goes back to `live`
    i = len(record.parts)
    for bucket, amount in buckets:
        if bucket.is_expired:  # expired or voided: written off at once (§3.11, §10.1)
            bucket.expired += amount
            customer.add_entry(entry(lsn, i, EXPIRE, bucket, amount, None, "UNDEFINED", None, at_ms))
            i += 1
    if customer.refunds is None:
        customer.refunds = {}
    customer.refunds[record.refund_id] = record
    note_refund(customer, record)
    state.projects[project].refund_owner[record.refund_id] = customer.customer_id
    commit(state, customer, lsn)


def refund_response(customer: CustomerState, record: RefundRecord, replay: bool) -> RefundResponse:
    details = []
    for bucket_lsn, amount in record.parts:
        bucket = customer.bucket_by_lsn(bucket_lsn)
        details.append(RefundDetail(account_id=bucket.account_id, wallet=bucket.wallet, source=bucket.source, amount=amount))
    return RefundResponse(
        refund_id=record.refund_id,
        transaction_id=record.transaction_id,
        customer_id=customer.customer_id,
        refunded_amount=record.amount,
        refundable_amount=record.refundable_after,
        refund_details=details,
        refunded_at=format_ms(record.at_ms),
        is_idempotent_replay=replay,
    )


# -- void (CONTRACT §10.2, §10.4) ---------------------------------------------------------------------


def parse_account_id(text: str) -> int | None:
    """`acc_<lsn>` (the one spelling account_id() writes) -> lsn, else None."""
    digits = text[4:]
    if not text.startswith("acc_") or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return None
    lsn = int(digits)
    return lsn if lsn > 0 and account_id(lsn) == text else None


def apply_void(state: LedgerState, lsn: int, command: Void) -> Applied | Rejected:
    """Void -> Applied(VoidResponse) | Rejected(account_not_found (404), account_already_voided,
    transaction_conflict {field: account_id})."""
    project = state.projects.get(command.project)
    owner = None if project is None else project.void_owner.get(command.void_id)
    earlier: Rejected | None = None
    if owner is not None:
        assert project is not None
        earlier_customer = project.customers[owner]
        assert earlier_customer.voids is not None
        record = earlier_customer.voids[command.void_id]
        if account_id(record.bucket_lsn) == command.account_id:
            return Applied(void_response(earlier_customer, record, True), False)
        earlier = conflict("account_id", "void_id already used for another account_id")
    bucket_lsn = parse_account_id(command.account_id)
    customer = find_customer(state, command.project, command.customer_id)
    if bucket_lsn is None or customer is None or project is None or project.bucket_owner(bucket_lsn) != customer.customer_id:
        return Rejected("account_not_found", f"account {command.account_id!r} not found",
                        {"account_id": command.account_id})  # fmt: skip
    if customer.voided is not None and bucket_lsn in customer.voided:
        return Rejected("account_already_voided", "this account was already voided by another void_id",
                        {"account_id": command.account_id})  # fmt: skip
    if earlier is not None:
        return earlier
    bucket = customer.bucket_by_lsn(bucket_lsn)
    amount = 0 if bucket.is_expired else bucket.available
    assert amount >= 0
    if amount > 0:
        bucket.expired += amount
        customer.add_entry(entry(lsn, 0, VOID, bucket, amount, command.void_id, "UNDEFINED", command.reason, command.at_ms))
    if not bucket.is_expired:
        bucket.is_expired = True
        spent.close(customer, bucket)  # out of `live` or the spent index: O(log n)
    record = VoidRecord(command.void_id, bucket_lsn, lsn, command.at_ms, amount, command.reason)
    if customer.voids is None:
        customer.voids = {}
    customer.voids[command.void_id] = record
    note_void(customer, record)
    project.void_owner[command.void_id] = customer.customer_id
    commit(state, customer, lsn)
    return Applied(void_response(customer, record, False), True)


def void_response(customer: CustomerState, record: VoidRecord, replay: bool) -> VoidResponse:
    return VoidResponse(
        void_id=record.void_id,
        account_id=account_id(record.bucket_lsn),
        customer_id=customer.customer_id,
        voided_amount=record.amount,
        voided_at=format_ms(record.at_ms),
        is_idempotent_replay=replay,
    )
