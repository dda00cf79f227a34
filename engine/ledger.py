"""The ledger state machine: `apply(state, lsn, command) -> Applied | Rejected`, plus timers.

Pure and deterministic: no I/O, no clock, no randomness, no asyncio. Time comes in as `at_ms`
on each command (CONTRACT §3.16); ids are derived from the LSN (`acc_{lsn}`, `le_{lsn}_{i}`).

Outcomes:
- `Applied(body, logged=True)`: the state changed; `state.last_lsn == lsn` and the touched
  customer's `last_lsn == lsn`.
- `Applied(body, logged=False)`: an idempotent replay (or a timer with nothing left to do);
  nothing changed.
- `Rejected`: nothing changed at all (CONTRACT §7.1). Every handler validates fully before its
  first write; the writes that follow cannot fail.

Validation order inside the engine (shape was checked by net/, CONTRACT §3.3):
customer existence (404) -> idempotency identity (replay, or 409 `transaction_conflict`) ->
business rules (400). A known id decides before the business rules so a replay never fails on a
balance that changed since; an unknown id cannot conflict, so §3.3's "conflicts last" holds.

`insufficient_balance` details (CONTRACT §3.14): `{"wallet": <name, or null for "every wallet">,
"requested": n, "available": m}`; with `credit_types` the code is
`insufficient_balance_in_selected_credit_types`, `wallet` is null and `credit_types` lists the
selection. For a consume overage, `requested` is the excess over the frozen amount.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple, assert_never

from engine.commands import (
    AutoSettle,
    Command,
    Consume,
    CreateApiKey,
    Deduct,
    Deposit,
    ExpireBuckets,
    Freeze,
    RevokeApiKey,
    Unfreeze,
)
from engine.results import (
    Applied,
    ConsumeResponse,
    DeductResponse,
    DepositResponse,
    Detail,
    FreezeResponse,
    Rejected,
    UnfreezeResponse,
)
from engine.state import (
    CONSUME,
    CONSUMED,
    DUE_EXPIRE,
    DUE_SETTLE,
    EXPIRE,
    FREEZE,
    FROZEN,
    GRANT,
    UNFREEZE,
    UNFROZEN,
    ApiKey,
    bucket_valid_at,
    Bucket,
    CustomerState,
    DeductRecord,
    DepositRecord,
    FreezeRecord,
    LedgerEntry,
    LedgerState,
    Parts,
    ProjectState,
    account_id,
    entry_id,
)
from engine.timefmt import format_ms, format_ms_or_none
from engine.types import AMOUNT_MAX, CONSUME_AFTER_S_MAX, UNFREEZE_AFTER_S_MAX

NOT_LOGGED = Applied(None, False)
Takes = list[tuple[Bucket, int]]  # (bucket, amount) taken by one command, before it is stored

def apply(state: LedgerState, lsn: int, command: Command) -> Applied | Rejected:
    """Apply one command stamped for `lsn` (= state.last_lsn + 1). See the module docstring."""
    assert lsn == state.last_lsn + 1, (lsn, state.last_lsn)
    match command:
        case Deduct():
            result = _deduct(state, lsn, command)
        case Freeze():
            result = _freeze(state, lsn, command)
        case Consume():
            result = _consume(state, lsn, command)
        case Unfreeze():
            result = _unfreeze(state, lsn, command)
        case Deposit():
            result = _deposit(state, lsn, command)
        case ExpireBuckets():
            result = _expire_buckets(state, lsn, command)
        case AutoSettle():
            result = _auto_settle(state, lsn, command)
        case CreateApiKey():
            result = _create_api_key(state, lsn, command)
        case RevokeApiKey():
            result = _revoke_api_key(state, lsn, command)
        case _:
            assert_never(command)
    if type(result) is Applied and result.logged:
        assert state.last_lsn == lsn
    else:
        assert state.last_lsn == lsn - 1
    return result


# -- small shared helpers ----------------------------------------------------------------------


def _commit(state: LedgerState, customer: CustomerState | None, lsn: int) -> None:
    state.last_lsn = lsn
    if customer is not None:
        assert customer.last_lsn < lsn
        customer.last_lsn = lsn


def _customer(state: LedgerState, project: str, customer_id: str | None) -> CustomerState | None:
    if customer_id is None:
        return None
    project_state = state.projects.get(project)
    if project_state is None:
        return None
    return project_state.customers.get(customer_id)


def _not_found(customer_id: str) -> Rejected:
    return Rejected(404, "customer_not_found", f"customer {customer_id!r} not found", {"customer_id": customer_id})


def _conflict(field: str, message: str) -> Rejected:
    return Rejected(409, "transaction_conflict", message, {"field": field})


def _normalize_credit_types(credit_types: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """CONTRACT §3.4 / §3.9: a selection is a set of wallets; order and repeats don't matter."""
    if credit_types is None:
        return None
    assert len(credit_types) > 0, "net/ rejects an empty credit_types"
    return tuple(sorted(set(credit_types)))


def _allocate(
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


def _insufficient(amount: int, available: int, credit_types: tuple[str, ...] | None, wallet: str | None) -> Rejected:
    details = {"wallet": wallet, "requested": amount, "available": available}
    if credit_types is not None:
        details["credit_types"] = list(credit_types)
        return Rejected(
            400,
            "insufficient_balance_in_selected_credit_types",
            "the selected credit types do not hold enough credit",
            details,
        )
    return Rejected(400, "insufficient_balance", "insufficient balance", details)


def _detail(bucket: Bucket, amount: int) -> Detail:
    return Detail(account_id=bucket.account_id, wallet=bucket.wallet, source=bucket.source, credit_type=bucket.wallet, amount=amount)


def _details(customer: CustomerState, parts: Parts) -> list[Detail]:
    return [_detail(customer.bucket_by_lsn(bucket_lsn), amount) for bucket_lsn, amount in parts]


def _entry(
    lsn: int, i: int, op: str, bucket: Bucket, amount: int, transaction_id: str | None,
    business_type: str, description: str | None, at_ms: int,
) -> LedgerEntry:  # fmt: skip
    return LedgerEntry(
        lsn, i, op, amount, bucket.lsn, bucket.wallet, bucket.source, transaction_id, business_type, description, at_ms
    )


def _schedule(state: LedgerState, project: str, customer: CustomerState, due: tuple[int, int, int, str | None]) -> None:
    """Add a timer to the customer's due heap and a pointer to the global one."""
    customer.push_due(due)
    heapq.heappush(state.due_heap, (due[0], project, customer.customer_id))


def _identity(
    project: ProjectState, customer: CustomerState, transaction_id: str, kind: type, amount: int,
    credit_types: tuple[str, ...] | None, wallet: str | None,
) -> FreezeRecord | DeductRecord | Rejected | None:  # fmt: skip
    """CONTRACT §3.9: None (new id), the record (a replay), or 409 transaction_conflict."""
    owner = project.txn_owner.get(transaction_id)
    if owner is None:
        return None
    if owner != customer.customer_id:
        return _conflict("customer_id", "transactionId already belongs to another customer")
    assert customer.txns is not None
    record = customer.txns[transaction_id]
    if not isinstance(record, kind):
        # CONTRACT §3.9: a deduct id reused for a freeze, or the reverse.
        return _conflict("transaction_id", "transactionId already used by another operation type")
    if record.amount != amount:
        return _conflict("amount", "transactionId already used with another amount")
    if record.wallet != wallet:
        return _conflict("wallet", "transactionId already used with another wallet")
    if record.credit_types != credit_types:
        return _conflict("credit_types", "transactionId already used with other credit_types")
    return record


def _add_txn(project: ProjectState, customer: CustomerState, record: FreezeRecord | DeductRecord) -> None:
    if customer.txns is None:
        customer.txns = {}
    assert record.transaction_id not in project.txn_owner
    customer.txns[record.transaction_id] = record
    project.txn_owner[record.transaction_id] = customer.customer_id


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
    customer = _customer(state, command.project, command.customer_id)
    if customer is None:
        return _not_found(command.customer_id)
    project = state.projects[command.project]
    credit_types = _normalize_credit_types(command.credit_types)
    record = _identity(
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


def _deduct(state: LedgerState, lsn: int, command: Deduct) -> Applied | Rejected:
    debit = _new_debit(state, command, DeductRecord)
    if type(debit) is not _NewDebit:
        return debit  # type: ignore[return-value]
    customer, project, credit_types = debit
    parts = _allocate(customer, command.at_ms, command.amount, credit_types, command.wallet)
    if type(parts) is int:
        return _insufficient(command.amount, parts, credit_types, command.wallet)
    assert isinstance(parts, list)
    at_ms = command.at_ms
    transaction_id = command.transaction_id
    details = []
    for i, (bucket, take) in enumerate(parts):
        bucket.used += take
        customer.add_entry(
            _entry(lsn, i, CONSUME, bucket, take, transaction_id, command.business_type, command.description, at_ms)
        )
        details.append(_detail(bucket, take))
    stored = tuple([(bucket.lsn, take) for bucket, take in parts])
    _add_txn(project, customer, DeductRecord(transaction_id, lsn, at_ms, command.amount, credit_types, command.wallet, stored))
    _commit(state, customer, lsn)
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
        deduct_details=_details(customer, record.parts),
        deducted_at=format_ms(record.at_ms),
        is_idempotent_replay=replay,
    )


# -- freeze (velobase-api §1A.4, CONTRACT §3.6, §3.10) ------------------------------------------


def _freeze(state: LedgerState, lsn: int, command: Freeze) -> Applied | Rejected:
    debit = _new_debit(state, command, FreezeRecord)
    if type(debit) is not _NewDebit:
        return debit  # type: ignore[return-value]
    customer, project, credit_types = debit
    ttl_guard = _check_ttls(command)
    if ttl_guard is not None:
        return ttl_guard
    parts = _allocate(customer, command.at_ms, command.amount, credit_types, command.wallet)
    if type(parts) is int:
        return _insufficient(command.amount, parts, credit_types, command.wallet)
    assert isinstance(parts, list)
    at_ms = command.at_ms
    for i, (bucket, take) in enumerate(parts):
        bucket.frozen += take
        customer.add_entry(
            _entry(lsn, i, FREEZE, bucket, take, command.transaction_id, command.business_type, command.description, at_ms)
        )
    unfreeze_after_ms = None if command.unfreeze_after_s is None else at_ms + command.unfreeze_after_s * 1000
    consume_after_ms = None if command.consume_after_s is None else at_ms + command.consume_after_s * 1000
    record = FreezeRecord(
        command.transaction_id, lsn, at_ms, command.amount, credit_types, command.wallet, command.business_type,
        command.description, unfreeze_after_ms, consume_after_ms, tuple([(bucket.lsn, take) for bucket, take in parts]),
    )  # fmt: skip
    _add_txn(project, customer, record)
    due_ms = unfreeze_after_ms if unfreeze_after_ms is not None else consume_after_ms
    if due_ms is not None:
        _schedule(state, command.project, customer, (due_ms, DUE_SETTLE, lsn, command.transaction_id))
    _commit(state, customer, lsn)
    return Applied(freeze_response(customer, record, False), True)


def _check_ttls(command: Freeze) -> Rejected | None:
    """CONTRACT §3.10, checked by net/ first; the engine guards its own invariants."""
    if command.unfreeze_after_s is not None and command.consume_after_s is not None:
        return Rejected(400, "invalid_auto_settlement", "give at most one of unfreeze_after / consume_after")
    if command.unfreeze_after_s is not None and not 1 <= command.unfreeze_after_s <= UNFREEZE_AFTER_S_MAX:
        return Rejected(400, "invalid_auto_settlement_ttl", "unfreeze_after_seconds out of range")
    if command.consume_after_s is not None and not 1 <= command.consume_after_s <= CONSUME_AFTER_S_MAX:
        return Rejected(400, "invalid_auto_settlement_ttl", "consume_after_seconds out of range")
    return None


def freeze_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> FreezeResponse:
    return FreezeResponse(
        transaction_id=record.transaction_id,
        frozen_amount=record.amount,
        freeze_details=_details(customer, record.allocation),
        unfreeze_after=format_ms_or_none(record.unfreeze_after_ms),
        consume_after=format_ms_or_none(record.consume_after_ms),
        is_idempotent_replay=replay,
    )


# -- consume / unfreeze (velobase-api §1A.5-1A.6, CONTRACT §3.7, §3.8, §7.2) ----------------------


def _settle_target(state: LedgerState, command: Consume | Unfreeze) -> tuple[CustomerState, FreezeRecord] | None:
    """The freeze a consume/unfreeze names, or None: unknown id, no customer, or a deduct's id
    (CONTRACT §3.8, §7.2 answer those with the same 400 as an unknown id, never 404)."""
    customer = _customer(state, command.project, command.customer_id)
    if customer is None or customer.txns is None:
        return None
    record = customer.txns.get(command.transaction_id)
    if not isinstance(record, FreezeRecord):
        return None
    return customer, record


def _consume(state: LedgerState, lsn: int, command: Consume) -> Applied | Rejected:
    target = _settle_target(state, command)
    if target is None:
        return Rejected(400, "no_consumable_freeze_records", "no consumable freeze for this transaction_id")
    customer, record = target
    if record.status == CONSUMED:
        # CONTRACT §3.8 / §7.2 (also after an automatic consume): same or omitted amount -> replay.
        if command.actual_amount is None or command.actual_amount == record.consumed_amount:
            return Applied(consume_response(customer, record, True), False)
        return Rejected(400, "freeze_records_already_consumed", "this freeze was already consumed")
    if record.status == UNFROZEN:
        if record.auto:
            return Rejected(400, "freeze_auto_unfrozen", "this freeze was unfrozen automatically by its TTL")
        return Rejected(400, "no_consumable_freeze_records", "this freeze was unfrozen")
    assert record.status == FROZEN
    actual = record.amount if command.actual_amount is None else command.actual_amount
    assert 0 <= actual <= AMOUNT_MAX
    return _settle_consume(state, lsn, command.project, customer, record, command.at_ms, actual, False)


def _settle_consume(
    state: LedgerState, lsn: int, project: str, customer: CustomerState, record: FreezeRecord, at_ms: int,
    actual: int, auto: bool,
) -> Applied | Rejected:  # fmt: skip
    """CONTRACT §3.7: charge `actual` along the recorded allocation, return the tail; an excess
    (overage) is drawn from the freeze's wallet selection in the same step, or nothing happens."""
    overage = actual - record.amount if actual > record.amount else 0
    overage_parts: Takes = []
    if overage > 0:
        found = _allocate(customer, at_ms, overage, record.credit_types, record.wallet)
        if type(found) is int:
            return _insufficient(overage, found, record.credit_types, record.wallet)
        assert isinstance(found, list)
        overage_parts = found
    # Validation done; every write below succeeds.
    charged: dict[int, list] = {}  # bucket lsn -> [bucket, amount]; insertion = response order
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
    i = 0
    for bucket, take in charged.values():
        customer.add_entry(
            _entry(lsn, i, CONSUME, bucket, take, record.transaction_id, record.business_type, record.description, at_ms)
        )
        i += 1
    _return_credit(customer, lsn, i, returned, record, at_ms)
    record.status = CONSUMED
    record.auto = auto
    record.settled_at_ms = at_ms
    record.consumed_amount = actual
    record.overage_amount = overage
    record.settle_parts = tuple([(bucket.lsn, take) for bucket, take in charged.values()])
    _commit(state, customer, lsn)
    return Applied(None if auto else consume_response(customer, record, False), True)


def _return_credit(customer: CustomerState, lsn: int, i: int, returned: Takes, record: FreezeRecord, at_ms: int) -> None:
    """UNFREEZE entries for credit going back, then (CONTRACT §3.11) an EXPIRE entry for what
    went back into an already expired bucket: it is written off at once."""
    for bucket, amount in returned:
        customer.add_entry(
            _entry(lsn, i, UNFREEZE, bucket, amount, record.transaction_id, record.business_type, record.description, at_ms)
        )
        i += 1
    for bucket, amount in returned:
        if bucket.is_expired:
            bucket.expired += amount
            customer.add_entry(_entry(lsn, i, EXPIRE, bucket, amount, None, "UNDEFINED", None, at_ms))
            i += 1


def consume_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> ConsumeResponse:
    assert record.status == CONSUMED and record.settled_at_ms is not None and record.settle_parts is not None
    returned = record.amount - min(record.consumed_amount, record.amount)
    return ConsumeResponse(
        transaction_id=record.transaction_id,
        consumed_amount=record.consumed_amount,
        returned_amount=returned if returned > 0 else None,  # CONTRACT §3.7: omitted when 0
        overage_amount=record.overage_amount if record.overage_amount > 0 else None,
        consume_details=_details(customer, record.settle_parts),
        consumed_at=format_ms(record.settled_at_ms),
        is_idempotent_replay=replay,
    )


def _unfreeze(state: LedgerState, lsn: int, command: Unfreeze) -> Applied | Rejected:
    target = _settle_target(state, command)
    if target is None:
        return Rejected(400, "no_unfreezable_records", "no unfreezable freeze for this transaction_id")
    customer, record = target
    if record.status == UNFROZEN:
        return Applied(unfreeze_response(customer, record, True), False)  # CONTRACT §3.8
    if record.status == CONSUMED:
        return Rejected(400, "no_unfreezable_records", "this freeze was already consumed")
    assert record.status == FROZEN
    return _settle_unfreeze(state, lsn, customer, record, command.at_ms, False)


def _settle_unfreeze(
    state: LedgerState, lsn: int, customer: CustomerState, record: FreezeRecord, at_ms: int, auto: bool
) -> Applied:
    returned: Takes = []
    for bucket_lsn, part in record.allocation:
        bucket = customer.bucket_by_lsn(bucket_lsn)
        bucket.frozen -= part
        assert bucket.frozen >= 0
        returned.append((bucket, part))
    _return_credit(customer, lsn, 0, returned, record, at_ms)
    record.status = UNFROZEN
    record.auto = auto
    record.settled_at_ms = at_ms
    record.settle_parts = record.allocation
    _commit(state, customer, lsn)
    return Applied(None if auto else unfreeze_response(customer, record, False), True)


def unfreeze_response(customer: CustomerState, record: FreezeRecord, replay: bool) -> UnfreezeResponse:
    assert record.status == UNFROZEN and record.settled_at_ms is not None
    return UnfreezeResponse(
        transaction_id=record.transaction_id,
        unfrozen_amount=record.amount,
        unfreeze_details=_details(customer, record.allocation),
        unfrozen_at=format_ms(record.settled_at_ms),
        is_idempotent_replay=replay,
    )


# -- deposit (velobase-api §1A.1, CONTRACT §3.1, §3.5, §7.5, §7.8) ---------------------------------

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
    owner = None if project is None else project.deposit_owner.get(command.idempotency_key)
    if owner is None:
        return None
    if owner != command.customer_id:
        return _conflict("customer_id", "idempotency_key already belongs to another customer")
    customer = _customer(state, command.project, owner)
    assert customer is not None and customer.deposits is not None
    record = customer.deposits[command.idempotency_key]
    for field, attribute in _DEPOSIT_FIELDS:
        if getattr(record, attribute) != getattr(command, attribute):
            return _conflict(field, f"idempotency_key already used with another {field}")
    return record


def _deposit(state: LedgerState, lsn: int, command: Deposit) -> Applied | Rejected:
    """One bucket per deposit; creates the customer on first deposit. `name`, `email` and
    `metadata` are taken only when the customer is created (velobase-api §1A.1), later deposits
    leave them as they are."""
    assert 1 <= command.amount <= AMOUNT_MAX  # CONTRACT §3.1, checked by net/
    assert command.wallet and command.source
    if (
        command.starts_at_ms is not None
        and command.expires_at_ms is not None
        and command.expires_at_ms <= command.starts_at_ms
    ):
        return Rejected(400, "invalid_datetime_range", "expires_at must be after starts_at")  # CONTRACT §3.5
    record = _deposit_identity(state, command)
    if record is not None:
        if type(record) is Rejected:
            return record
        assert isinstance(record, DepositRecord)
        return Applied(deposit_response(command.customer_id, record, True), False)
    customer = _customer(state, command.project, command.customer_id)
    live_total = 0 if customer is None else sum(bucket.total for bucket in customer.live)
    if live_total + command.amount > AMOUNT_MAX:
        # CONTRACT §3.1: every sum (bucket, wallet, customer) is bounded by the live total.
        return Rejected(
            400, "amount_too_large", "the customer's total would pass 2^53-1",
            {"requested": command.amount, "total": live_total, "max": AMOUNT_MAX},
        )  # fmt: skip
    project = state.projects.get(command.project)
    if project is None:
        project = state.projects[command.project] = ProjectState(name=command.project)
    if customer is None:
        customer = CustomerState(
            customer_id=command.customer_id, created_at_ms=command.at_ms, name=command.name,
            email=command.email, metadata=command.metadata,
        )  # fmt: skip
        project.customers[command.customer_id] = customer
    return _deposit_write(state, lsn, project, customer, command)


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
    key = command.idempotency_key
    customer.add_entry(_entry(lsn, 0, GRANT, bucket, command.amount, key, "UNDEFINED", command.description, at_ms))
    if expired_now:
        # created_at = the deposit time: credit cannot be written off before it existed.
        customer.add_entry(_entry(lsn, 1, EXPIRE, bucket, command.amount, None, "UNDEFINED", None, at_ms))
    elif command.expires_at_ms is not None:
        _schedule(state, command.project, customer, (command.expires_at_ms, DUE_EXPIRE, lsn, None))
    wallet_total = sum(b.total for b in customer.live if b.wallet == command.wallet and bucket_valid_at(b, at_ms))
    record = DepositRecord(
        key or "", lsn, command.amount, command.wallet, command.source, command.starts_at_ms,
        command.expires_at_ms, wallet_total,
    )  # fmt: skip
    if key is not None:
        if customer.deposits is None:
            customer.deposits = {}
        customer.deposits[key] = record
        project.deposit_owner[key] = customer.customer_id
    _commit(state, customer, lsn)
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


# -- timers (CONTRACT §3.10, §3.11, §6) -----------------------------------------------------------


def _expire_buckets(state: LedgerState, lsn: int, command: ExpireBuckets) -> Applied:
    """Write off every live bucket with expires_at <= at_ms: one EXPIRE entry for its unspent,
    unfrozen remainder, created at its expires_at; exactly once (the bucket leaves `live`)."""
    customer = _customer(state, command.project, command.customer_id)
    if customer is None:
        return NOT_LOGGED
    live = customer.live
    count = 0
    while count < len(live):  # `live` is in §3.6 order: every expiring bucket is in front
        expires_at_ms = live[count].expires_at_ms
        if expires_at_ms is None or expires_at_ms > command.at_ms:
            break
        count += 1
    if count == 0:
        return NOT_LOGGED
    i = 0
    for bucket in live[:count]:
        assert bucket.expires_at_ms is not None and not bucket.is_expired
        remainder = bucket.total - bucket.used - bucket.frozen - bucket.expired
        assert remainder >= 0
        bucket.is_expired = True
        if remainder > 0:
            bucket.expired += remainder
            customer.add_entry(_entry(lsn, i, EXPIRE, bucket, remainder, None, "UNDEFINED", None, bucket.expires_at_ms))
            i += 1
    del live[:count]
    _commit(state, customer, lsn)
    return Applied(None, True)


def _auto_settle(state: LedgerState, lsn: int, command: AutoSettle) -> Applied | Rejected:
    """CONTRACT §3.10: at its due time a still-FROZEN freeze is unfrozen or fully consumed,
    exactly once. Anything else (settled meanwhile, not due) is a no-op: Applied(None, False)."""
    customer = _customer(state, command.project, command.customer_id)
    record = None if customer is None or customer.txns is None else customer.txns.get(command.transaction_id)
    if not isinstance(record, FreezeRecord) or record.status != FROZEN:
        return NOT_LOGGED
    assert customer is not None
    if record.unfreeze_after_ms is not None:
        if command.at_ms < record.unfreeze_after_ms:
            return NOT_LOGGED
        return _settle_unfreeze(state, lsn, customer, record, command.at_ms, True)
    if record.consume_after_ms is None or command.at_ms < record.consume_after_ms:
        return NOT_LOGGED
    result = _settle_consume(state, lsn, command.project, customer, record, command.at_ms, record.amount, True)
    assert type(result) is Applied  # no overage: the full frozen amount is always there
    return result


def _due_is_live(customer: CustomerState, due: tuple[int, int, int, str | None]) -> bool:
    if due[1] == DUE_EXPIRE:
        return not customer.bucket_by_lsn(due[2]).is_expired
    assert customer.txns is not None and due[3] is not None
    record = customer.txns[due[3]]
    assert isinstance(record, FreezeRecord)
    return record.status == FROZEN


def _customer_next_due_ms(customer: CustomerState) -> int | None:
    """Drop dead timers off the top of the customer's heap (lazy deletion); the first live one."""
    due = customer.due
    while due:
        if _due_is_live(customer, due[0]):
            return due[0][0]
        heapq.heappop(due)
    customer.due = None
    return None


def due_commands(state: LedgerState, project: str, customer_id: str, now_ms: int) -> list[Command]:
    """The customer's timers due at or before `now_ms`, in due order, each stamped with its due
    time (CONTRACT §6, §7.3). Each one, applied in order, changes state (logged=True)."""
    customer = _customer(state, project, customer_id)
    if customer is None:
        return []
    next_ms = _customer_next_due_ms(customer)
    if next_ms is None or next_ms > now_ms:
        return []
    assert customer.due is not None
    commands: list[Command] = []
    expire_ms_last = None
    for due in sorted(d for d in customer.due if d[0] <= now_ms):  # bounded by the heap size
        if not _due_is_live(customer, due):
            continue
        due_ms, kind, _, transaction_id = due
        if kind == DUE_EXPIRE:
            if due_ms != expire_ms_last:  # one ExpireBuckets per due instant covers them all
                commands.append(ExpireBuckets(at_ms=due_ms, project=project, customer_id=customer_id))
                expire_ms_last = due_ms
        else:
            assert transaction_id is not None
            commands.append(
                AutoSettle(at_ms=due_ms, project=project, customer_id=customer_id, transaction_id=transaction_id)
            )
    return commands


def next_due_ms(state: LedgerState) -> int | None:
    """The earliest live timer over all customers, or None. Drops dead pointers as it goes."""
    heap = state.due_heap
    while heap:
        due_ms, project, customer_id = heap[0]
        customer = _customer(state, project, customer_id)
        customer_ms = None if customer is None else _customer_next_due_ms(customer)
        if customer_ms is not None and customer_ms <= due_ms:
            return customer_ms
        heapq.heappop(heap)  # this pointer's timer is gone; a later one has its own pointer
    return None


def pop_due_customers(state: LedgerState, now_ms: int) -> list[tuple[str, str]]:
    """Customers with a timer due at or before `now_ms`, in due order, each once.

    The caller fires `due_commands` for each. A pointer to each returned customer's earliest
    timer stays in the heap, so a customer whose timers could not be fired this time (busy
    shard) is offered again; once fired, the pointer is dead and `next_due_ms` drops it.
    """
    heap = state.due_heap
    found: dict[tuple[str, str], int] = {}  # insertion-ordered: due order, no set iteration
    while heap and heap[0][0] <= now_ms:
        _, project, customer_id = heapq.heappop(heap)
        customer = _customer(state, project, customer_id)
        customer_ms = None if customer is None else _customer_next_due_ms(customer)
        if customer_ms is not None and customer_ms <= now_ms:
            found.setdefault((project, customer_id), customer_ms)
    for (project, customer_id), customer_ms in found.items():
        heapq.heappush(heap, (customer_ms, project, customer_id))
    return list(found)


# -- projects and API keys (CONTRACT §3.15) ------------------------------------------------------


def _create_api_key(state: LedgerState, lsn: int, command: CreateApiKey) -> Applied | Rejected:
    if command.key_hash in state.api_keys or command.key_id in state.key_hash_by_id:
        return Rejected(409, "api_key_exists", "an API key with this id or hash already exists")
    if command.project not in state.projects:
        state.projects[command.project] = ProjectState(name=command.project)
    state.api_keys[command.key_hash] = ApiKey(command.key_id, command.key_hash, command.project)
    state.key_hash_by_id[command.key_id] = command.key_hash
    _commit(state, None, lsn)
    return Applied(None, True)


def _revoke_api_key(state: LedgerState, lsn: int, command: RevokeApiKey) -> Applied | Rejected:
    key_hash = state.key_hash_by_id.get(command.key_id)
    if key_hash is None:
        return Rejected(404, "api_key_not_found", f"no API key {command.key_id!r}")
    key = state.api_keys[key_hash]
    if key.revoked:
        return NOT_LOGGED
    key.revoked = True
    _commit(state, None, lsn)
    return Applied(None, True)
