"""Consume and unfreeze of a freeze (velobase-api §1A.5-1A.6, CONTRACT §3.7, §3.8, §7.2),
by request or by its TTL (engine/core/timers.py calls settle_consume / settle_unfreeze).
"""

from __future__ import annotations

from typing import Any

from engine.core.commands import (
    Consume,
    Unfreeze,
)
from engine.core import spent
from engine.core.common import (
    Takes,
    allocate,
    commit,
    details_of,
    entry,
    find_customer,
    insufficient,
)
from engine.core.limits import AMOUNT_MAX
from engine.core.results import (
    Applied,
    ConsumeResponse,
    Rejected,
    UnfreezeResponse,
)
from engine.core.state import (
    CONSUME,
    CONSUMED,
    EXPIRE,
    FROZEN,
    UNFREEZE,
    UNFROZEN,
    CustomerState,
    FreezeRecord,
    LedgerState,
)
from engine.core.timefmt import format_ms

# -- consume / unfreeze (velobase-api §1A.5-1A.6, CONTRACT §3.7, §3.8, §7.2) ----------------------


def _settle_target(state: LedgerState, command: Consume | Unfreeze) -> tuple[CustomerState, FreezeRecord] | None:
    """The freeze a consume/unfreeze names, or None: unknown id, no customer, or a deduct's id
    (CONTRACT §3.8, §7.2 answer those with the same 400 as an unknown id, never 404)."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None or customer.txns is None:
        return None
    record = customer.txns.get(command.transaction_id)
    if not isinstance(record, FreezeRecord):
        return None
    return customer, record


def apply_consume(state: LedgerState, lsn: int, command: Consume) -> Applied | Rejected:
    target = _settle_target(state, command)
    if target is None:
        return Rejected("no_consumable_freeze_records", "no consumable freeze for this transaction_id")
    customer, record = target
    if record.status == CONSUMED:
        # CONTRACT §3.8 / §7.2 (also after an automatic consume): same or omitted amount -> replay.
        if command.actual_amount is None or command.actual_amount == record.consumed_amount:
            return Applied(consume_response(customer, record, True), False)
        return Rejected("freeze_records_already_consumed", "this freeze was already consumed")
    if record.status == UNFROZEN:
        if record.auto:
            return Rejected("freeze_auto_unfrozen", "this freeze was unfrozen automatically by its TTL")
        return Rejected("no_consumable_freeze_records", "this freeze was unfrozen")
    assert record.status == FROZEN
    actual = record.amount if command.actual_amount is None else command.actual_amount
    assert 0 <= actual <= AMOUNT_MAX
    return settle_consume(state, lsn, command.project, customer, record, command.at_ms, actual, False)


def settle_consume(
    state: LedgerState, lsn: int, project: str, customer: CustomerState, record: FreezeRecord, at_ms: int,
    actual: int, auto: bool,
) -> Applied | Rejected:  # fmt: skip
    """CONTRACT §3.7: charge `actual` along the recorded allocation, return the tail; an excess
    (overage) is drawn from the freeze's wallet selection in the same step, or nothing happens."""
    overage = actual - record.amount if actual > record.amount else 0
    overage_parts: Takes = []
    if overage > 0:
        found = allocate(customer, at_ms, overage, record.credit_types, record.wallet)
        if type(found) is int:
            return insufficient(overage, found, record.credit_types, record.wallet)
        assert isinstance(found, list)
        overage_parts = found
    # Validation done; every write below succeeds.
    charged: dict[int, list[Any]] = {}  # bucket lsn -> [bucket, amount]; insertion = response order
    returned: Takes = []
    remaining = actual - overage
    for bucket_lsn, part in record.allocation:
        bucket = customer.bucket_by_lsn(bucket_lsn)
        take = part if part < remaining else remaining
        remaining -= take
        bucket.frozen -= part
        bucket.used += take
        assert bucket.frozen >= 0
        if take > 0:
            charged[bucket_lsn] = [bucket, take]
        if part - take > 0:
            returned.append((bucket, part - take))
    assert remaining == 0
    assert overage == 0 or not returned  # an overage means every frozen credit was charged
    for bucket, take in overage_parts:
        bucket.used += take
        if bucket.lsn in charged:
            charged[bucket.lsn][1] += take  # one CONSUME entry per bucket touched (§3.12)
        else:
            charged[bucket.lsn] = [bucket, take]
    for bucket, _ in charged.values():
        spent.reindex(customer, bucket)  # charged to zero: leaves `live` (§7.11)
    i = 0
    for bucket, take in charged.values():
        customer.add_entry(
            entry(lsn, i, CONSUME, bucket, take, record.transaction_id, record.business_type, record.description, at_ms)
        )
        i += 1
    _return_credit(customer, lsn, i, returned, record, at_ms)
    record.status = CONSUMED
    state.projects[project].close_freeze(customer.customer_id, record)
    record.auto = auto
    record.settled_at_ms = at_ms
    record.consumed_amount = actual
    record.overage_amount = overage
    record.settle_parts = tuple([(bucket.lsn, take) for bucket, take in charged.values()])
    commit(state, customer, lsn)
    return Applied(None if auto else consume_response(customer, record, False), True)


def _return_credit(customer: CustomerState, lsn: int, i: int, returned: Takes, record: FreezeRecord, at_ms: int) -> None:
    """UNFREEZE entries for credit going back, then (CONTRACT §3.11) an EXPIRE entry for what
    went back into an already expired bucket: it is written off at once."""
    for bucket, amount in returned:
        customer.add_entry(
            entry(lsn, i, UNFREEZE, bucket, amount, record.transaction_id, record.business_type, record.description, at_ms)
        )
        i += 1
    for bucket, amount in returned:
        if bucket.is_expired:
            bucket.expired += amount
            customer.add_entry(entry(lsn, i, EXPIRE, bucket, amount, None, "UNDEFINED", None, at_ms))
            i += 1


def consume_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> ConsumeResponse:
    assert record.status == CONSUMED and record.settled_at_ms is not None and record.settle_parts is not None
    returned = record.amount - min(record.consumed_amount, record.amount)
    return ConsumeResponse(
        transaction_id=record.transaction_id,
        consumed_amount=record.consumed_amount,
        returned_amount=returned if returned > 0 else None,  # CONTRACT §3.7: omitted when 0
        overage_amount=record.overage_amount if record.overage_amount > 0 else None,
        consume_details=details_of(customer, record.settle_parts),
        consumed_at=format_ms(record.settled_at_ms),
        is_idempotent_replay=replay,
    )


def apply_unfreeze(state: LedgerState, lsn: int, command: Unfreeze) -> Applied | Rejected:
    target = _settle_target(state, command)
    if target is None:
        return Rejected("no_unfreezable_records", "no unfreezable freeze for this transaction_id")
    customer, record = target
    if record.status == UNFROZEN:
        return Applied(unfreeze_response(customer, record, True), False)  # CONTRACT §3.8
    if record.status == CONSUMED:
        return Rejected("no_unfreezable_records", "this freeze was already consumed")
    assert record.status == FROZEN
    return settle_unfreeze(state, lsn, command.project, customer, record, command.at_ms, False)


def settle_unfreeze(
    state: LedgerState, lsn: int, project: str, customer: CustomerState, record: FreezeRecord, at_ms: int, auto: bool
) -> Applied:
    returned: Takes = []
    for bucket_lsn, part in record.allocation:
        bucket = customer.bucket_by_lsn(bucket_lsn)
        bucket.frozen -= part
        assert bucket.frozen >= 0
        returned.append((bucket, part))
    _return_credit(customer, lsn, 0, returned, record, at_ms)
    record.status = UNFROZEN
    state.projects[project].close_freeze(customer.customer_id, record)
    record.auto = auto
    record.settled_at_ms = at_ms
    record.settle_parts = record.allocation
    commit(state, customer, lsn)
    return Applied(None if auto else unfreeze_response(customer, record, False), True)


def unfreeze_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> UnfreezeResponse:
    assert record.status == UNFROZEN and record.settled_at_ms is not None
    return UnfreezeResponse(
        transaction_id=record.transaction_id,
        unfrozen_amount=record.amount,
        unfreeze_details=details_of(customer, record.allocation),
        unfrozen_at=format_ms(record.settled_at_ms),
        is_idempotent_replay=replay,
    )


