"""Slots (velobase-api §1A.8, CONTRACT §8.2-§8.4): capacity pools a customer claims and releases.

A pool is keyed by (project, customer, wallet, source). Its one invariant, asserted on every
change and checked by the model test: `0 <= in_use == sum(holding amounts) <= capacity`.
Every logged slot command appends exactly one immutable SlotEvent (id `sev_{lsn}`).

Decisions (CONTRACT §8 where it is silent):
- grant creates the customer (as a deposit does) and the pool; claim, revoke and release never
  create anything: on a missing pool (unknown customer included) claim and revoke answer 404
  `slot_pool_not_found`, release 404 `slot_holding_not_found`.
- grant/revoke with an `idempotency_key`: one namespace per project for both; a replay returns
  the original body (pool figures as they were then) with `is_idempotent_replay: true`; the same
  key with another customer, operation, wallet, source or amount -> 409 `transaction_conflict`
  with `details.field`. `description` is ignored on replay (CONTRACT §3.9).
- claim while the resource holds the pool: a replay (same holding_id, current pool figures,
  `is_idempotent_replay: true`), whatever `amount`, `description` or `ttl_s` say: nothing changes.
- the ttl release is a timer command (SlotAutoRelease) stamped with its due time; it releases
  only the holding it was scheduled for (a resource released and claimed again gets a new
  holding and its own timer), so it fires at most once.
"""

from __future__ import annotations

from engine.core.commands import (
    SlotAutoRelease,
    SlotClaim,
    SlotGrant,
    SlotRelease,
    SlotRevoke,
)
from engine.core.common import NOT_LOGGED, commit, conflict, find_customer, schedule
from engine.core.limits import AMOUNT_MAX, SLOT_TTL_S_MAX
from engine.core.results import (
    Applied,
    Rejected,
    SlotHoldingResponse,
    SlotPoolResponse,
    SlotPoolSummary,
)
from engine.core.state import (
    CLAIM,
    DUE_SLOT_RELEASE,
    GRANT_CAPACITY,
    RELEASE,
    REVOKE_CAPACITY,
    CustomerState,
    Holding,
    LedgerState,
    ProjectState,
    SlotEvent,
    SlotKeyRecord,
    SlotPool,
    holding_id,
    index_holding,
    pool_id,
)

ACTIVE = "ACTIVE"
AUTO_RELEASE_DESCRIPTION = "released automatically: ttl_seconds elapsed"


def find_pool(customer: CustomerState | None, wallet: str, source: str) -> SlotPool | None:
    """The pool (wallet, source) of the customer, or None. A customer has few pools: a scan."""
    if customer is None or customer.slot_pools is None:
        return None
    for pool in customer.slot_pools:
        if pool.wallet == wallet and pool.source == source:
            return pool
    return None


def pool_summary(pool: SlotPool) -> SlotPoolSummary:
    return SlotPoolSummary(
        pool_id=pool_id(pool.lsn), wallet=pool.wallet, source=pool.source, capacity=pool.capacity,
        in_use=pool.in_use, available=pool.capacity - pool.in_use, status=ACTIVE,
    )  # fmt: skip


def _pool_response(pool_lsn: int, wallet: str, source: str, capacity: int, in_use: int, replay: bool) -> SlotPoolResponse:
    return SlotPoolResponse(
        pool_id=pool_id(pool_lsn), wallet=wallet, source=source, capacity=capacity, in_use=in_use,
        available=capacity - in_use, status=ACTIVE, is_idempotent_replay=replay,
    )  # fmt: skip


def _holding_response(pool: SlotPool, holding_lsn: int, replay: bool) -> SlotHoldingResponse:
    return SlotHoldingResponse(
        pool_id=pool_id(pool.lsn), wallet=pool.wallet, source=pool.source, capacity=pool.capacity,
        in_use=pool.in_use, available=pool.capacity - pool.in_use, status=ACTIVE,
        holding_id=holding_id(holding_lsn), is_idempotent_replay=replay,
    )  # fmt: skip


def _pool_not_found(command: SlotClaim | SlotRevoke) -> Rejected:
    return Rejected("slot_pool_not_found", f"no slot pool for wallet {command.wallet!r}, source {command.source!r}",
        {"customer_id": command.customer_id, "wallet": command.wallet, "source": command.source},
    )  # fmt: skip


def _check_pool(pool: SlotPool) -> None:
    """The pool invariant (CONTRACT §8.2, §8.3): only a bug can break it. The O(1) half; the
    sum over holdings is checked by engine/core/invariants.py (`tally verify`) and the tests."""
    assert 0 <= pool.in_use <= pool.capacity <= AMOUNT_MAX, (pool.in_use, pool.capacity)


def _add_event(customer: CustomerState, event: SlotEvent) -> None:
    if customer.slot_events is None:
        customer.slot_events = []
    assert not customer.slot_events or customer.slot_events[-1].lsn < event.lsn
    customer.slot_events.append(event)


# -- grant and revoke (CONTRACT §8.2) -------------------------------------------------------------

_KEY_FIELDS = ("wallet", "source", "amount")


def _key_identity(state: LedgerState, command: SlotGrant | SlotRevoke, kind: str) -> SlotKeyRecord | Rejected | None:
    """None (no key or a new one), the record (a replay), or 409 transaction_conflict."""
    key = command.idempotency_key
    project = state.projects.get(command.project)
    owner = None if key is None or project is None else project.slot_key_owner.get(key)
    if owner is None:
        return None
    if owner != command.customer_id:
        return conflict("customer_id", "idempotency_key already belongs to another customer")
    customer = find_customer(state, command.project, owner)
    assert customer is not None and customer.slot_keys is not None and key is not None
    record = customer.slot_keys[key]
    if record.type != kind:
        return conflict("idempotency_key", f"idempotency_key already used for {record.type}")
    for field in _KEY_FIELDS:
        if getattr(record, field) != getattr(command, field):
            return conflict(field, f"idempotency_key already used with another {field}")
    return record


def _replay(record: SlotKeyRecord) -> Applied:
    body = _pool_response(record.pool_lsn, record.wallet, record.source, record.capacity, record.in_use, True)
    return Applied(body, False)


def _capacity_change(
    state: LedgerState, lsn: int, project: ProjectState, customer: CustomerState, pool: SlotPool,
    command: SlotGrant | SlotRevoke, kind: str,
) -> Applied:  # fmt: skip
    """The write shared by grant and revoke: capacity, event, key record, commit."""
    pool.capacity += command.amount if kind == GRANT_CAPACITY else -command.amount
    _check_pool(pool)
    key = command.idempotency_key
    _add_event(customer, SlotEvent(
        lsn, kind, pool.wallet, pool.source, command.amount, None, command.description, key, command.at_ms
    ))  # fmt: skip
    if key is not None:
        if customer.slot_keys is None:
            customer.slot_keys = {}
        customer.slot_keys[key] = SlotKeyRecord(
            key, kind, lsn, pool.wallet, pool.source, command.amount, pool.lsn, pool.capacity, pool.in_use
        )  # fmt: skip
        project.slot_key_owner[key] = customer.customer_id
    commit(state, customer, lsn)
    return Applied(_pool_response(pool.lsn, pool.wallet, pool.source, pool.capacity, pool.in_use, False), True)


def apply_slot_grant(state: LedgerState, lsn: int, command: SlotGrant) -> Applied | Rejected:
    """Add capacity; creates project, customer and pool on first use. Body: SlotPoolResponse."""
    assert 1 <= command.amount <= AMOUNT_MAX  # CONTRACT §3.1, checked by net/
    record = _key_identity(state, command, GRANT_CAPACITY)
    if type(record) is Rejected:
        return record
    if record is not None:
        return _replay(record)  # type: ignore[arg-type]
    customer = find_customer(state, command.project, command.customer_id)
    pool = find_pool(customer, command.wallet, command.source)
    if pool is not None and pool.capacity + command.amount > AMOUNT_MAX:
        return Rejected("amount_too_large", "the pool's capacity would pass 2^53-1",
            {"requested": command.amount, "capacity": pool.capacity, "max": AMOUNT_MAX},
        )  # fmt: skip
    project = state.projects.get(command.project)
    if project is None:
        project = state.projects[command.project] = ProjectState(name=command.project)
    if customer is None:
        customer = CustomerState(customer_id=command.customer_id, created_at_ms=command.at_ms)
        project.add_customer(customer)
    if pool is None:
        pool = SlotPool(lsn, command.wallet, command.source)
        if customer.slot_pools is None:
            customer.slot_pools = []
        customer.slot_pools.append(pool)
    return _capacity_change(state, lsn, project, customer, pool, command, GRANT_CAPACITY)


def apply_slot_revoke(state: LedgerState, lsn: int, command: SlotRevoke) -> Applied | Rejected:
    """Remove capacity; 404 slot_pool_not_found, 400 slot_capacity_below_in_use. Body: SlotPoolResponse."""
    assert 1 <= command.amount <= AMOUNT_MAX
    customer = find_customer(state, command.project, command.customer_id)
    pool = find_pool(customer, command.wallet, command.source)
    if pool is None:
        return _pool_not_found(command)
    record = _key_identity(state, command, REVOKE_CAPACITY)
    if type(record) is Rejected:
        return record
    if record is not None:
        return _replay(record)  # type: ignore[arg-type]
    if pool.capacity - command.amount < pool.in_use:
        return Rejected("slot_capacity_below_in_use", "revoking this much would leave capacity below in_use",
            {"requested": command.amount, "capacity": pool.capacity, "in_use": pool.in_use},
        )  # fmt: skip
    assert customer is not None
    project = state.projects[command.project]
    return _capacity_change(state, lsn, project, customer, pool, command, REVOKE_CAPACITY)


# -- claim and release (CONTRACT §8.3) --------------------------------------------------------------


def apply_slot_claim(state: LedgerState, lsn: int, command: SlotClaim) -> Applied | Rejected:
    """Hold capacity for a resource. 404 slot_pool_not_found, 400 slot_insufficient_capacity
    `{requested, available}`. Body: SlotHoldingResponse. A ttl schedules a SlotAutoRelease."""
    assert 1 <= command.amount <= AMOUNT_MAX
    assert command.ttl_s is None or 1 <= command.ttl_s <= SLOT_TTL_S_MAX
    customer = find_customer(state, command.project, command.customer_id)
    pool = find_pool(customer, command.wallet, command.source)
    if pool is None:
        return _pool_not_found(command)
    assert customer is not None
    held = None if pool.holdings is None else pool.holdings.get(command.resource_id)
    if held is not None:
        return Applied(_holding_response(pool, held.lsn, True), False)
    available = pool.capacity - pool.in_use
    if command.amount > available:
        return Rejected("slot_insufficient_capacity", "not enough free capacity in the slot pool",
            {"requested": command.amount, "available": available},
        )  # fmt: skip
    due_ms = None if command.ttl_s is None else command.at_ms + command.ttl_s * 1000
    holding = Holding(lsn, command.resource_id, command.amount, command.at_ms, due_ms)
    if pool.holdings is None:
        pool.holdings = {}
    pool.holdings[command.resource_id] = holding
    pool.in_use += command.amount
    _check_pool(pool)
    index_holding(customer, pool, command.resource_id, lsn)
    if due_ms is not None:
        schedule(state, command.project, customer, (due_ms, DUE_SLOT_RELEASE, lsn, None))
    _add_event(customer, SlotEvent(
        lsn, CLAIM, pool.wallet, pool.source, command.amount, command.resource_id, command.description, None,
        command.at_ms,
    ))  # fmt: skip
    commit(state, customer, lsn)
    return Applied(_holding_response(pool, lsn, False), True)


def apply_slot_release(state: LedgerState, lsn: int, command: SlotRelease) -> Applied | Rejected:
    """Give the resource's capacity back. 404 slot_holding_not_found. Body: SlotHoldingResponse."""
    customer = find_customer(state, command.project, command.customer_id)
    pool = find_pool(customer, command.wallet, command.source)
    holding = None if pool is None or pool.holdings is None else pool.holdings.get(command.resource_id)
    if holding is None:
        return Rejected("slot_holding_not_found", f"resource {command.resource_id!r} holds no slot in this pool",
            {"resource_id": command.resource_id, "wallet": command.wallet, "source": command.source},
        )  # fmt: skip
    assert customer is not None and pool is not None
    _release(state, lsn, customer, pool, holding, command.at_ms, None)
    return Applied(_holding_response(pool, holding.lsn, False), True)


def apply_slot_auto_release(state: LedgerState, lsn: int, command: SlotAutoRelease) -> Applied:
    """Timer (CONTRACT §8.3): release the holding claimed at `holding_lsn` if it is still held and
    due at `at_ms`; otherwise a no-op (Applied(None, False)). Exactly once: a released holding
    leaves the index."""
    customer = find_customer(state, command.project, command.customer_id)
    found = None if customer is None or customer.holding_index is None else customer.holding_index.get(command.holding_lsn)
    if found is None:
        return NOT_LOGGED
    assert customer is not None
    pool, resource_id = found
    assert pool.holdings is not None
    holding = pool.holdings[resource_id]
    if holding.due_ms is None or command.at_ms < holding.due_ms:
        return NOT_LOGGED
    _release(state, lsn, customer, pool, holding, command.at_ms, AUTO_RELEASE_DESCRIPTION)
    return Applied(None, True)


def _release(
    state: LedgerState, lsn: int, customer: CustomerState, pool: SlotPool, holding: Holding, at_ms: int,
    description: str | None,
) -> None:  # fmt: skip
    assert pool.holdings is not None and customer.holding_index is not None
    del pool.holdings[holding.resource_id]
    if not pool.holdings:
        pool.holdings = None
    del customer.holding_index[holding.lsn]
    if not customer.holding_index:
        customer.holding_index = None
    pool.in_use -= holding.amount
    _check_pool(pool)
    _add_event(customer, SlotEvent(
        lsn, RELEASE, pool.wallet, pool.source, holding.amount, holding.resource_id, description, None, at_ms
    ))  # fmt: skip
    commit(state, customer, lsn)


def holding_is_live(customer: CustomerState, holding_lsn: int) -> bool:
    """For the due index: is the holding claimed at `holding_lsn` still held?"""
    return customer.holding_index is not None and holding_lsn in customer.holding_index
