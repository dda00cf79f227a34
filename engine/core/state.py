"""The ledger's in-memory state: LedgerState > ProjectState > CustomerState > Bucket, records.

Pure data, no behaviour beyond small helpers: `engine.core.ledger.apply` is the only writer.

Two kinds of fields live here:

- **persistent** fields are the history's facts. `engine.core.codec` snapshots exactly these and
  `engine.core.digest` hashes exactly these (CONTRACT §5: same history, same digest).
- **derived** fields (marked `# derived`) are indexes and heaps rebuilt from the persistent ones
  by `rebuild_derived` (after a snapshot load). They are never encoded or hashed.

Memory (an idle customer with one bucket and one GRANT entry should stay near 1 KiB): every
Struct that can never be part of a reference cycle is `gc=False` (no GC header, never scanned);
containers a quiet customer does not need are None until first used; bucket `account_id` and entry
`id` are derived from LSNs instead of stored; entries reference the bucket's `wallet` / `source`
strings instead of copying them. Ledger position indexes only exist once a customer has more than
`INDEX_ENTRIES_MIN` entries (below that a scan is as fast as a bisect).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from typing import Any, Final

import msgspec

# Operation types of ledger entries (CONTRACT §3.12). Interned module constants: entries share them.
GRANT: Final = "GRANT"
FREEZE: Final = "FREEZE"
CONSUME: Final = "CONSUME"
UNFREEZE: Final = "UNFREEZE"
EXPIRE: Final = "EXPIRE"

# Freeze lifecycle (CONTRACT §3.8): FROZEN -> CONSUMED | UNFROZEN, both terminal.
FROZEN: Final = 0
CONSUMED: Final = 1
UNFROZEN: Final = 2

# Timer kinds in the due heaps. Expiry sorts before a settlement due at the same millisecond:
# any order gives the same money, this one is simply fixed (determinism).
DUE_EXPIRE: Final = 0
DUE_SETTLE: Final = 1
DUE_SLOT_RELEASE: Final = 2  # a claim's ttl_seconds (CONTRACT §8.3); due = (ms, kind, holding lsn, None)

# Slot event types (CONTRACT §8.4) and entitlement event types (§8.5).
GRANT_CAPACITY: Final = "GRANT_CAPACITY"
REVOKE_CAPACITY: Final = "REVOKE_CAPACITY"
CLAIM: Final = "CLAIM"
RELEASE: Final = "RELEASE"
SLOT_EVENT_TYPES: Final = (GRANT_CAPACITY, REVOKE_CAPACITY, CLAIM, RELEASE)
SET: Final = "SET"
REMOVE: Final = "REMOVE"
ENTITLEMENT_EVENT_TYPES: Final = (SET, REMOVE)

INDEX_ENTRIES_MIN: Final = 16  # below this many entries a filtered ledger page scans linearly
STATE_VERSION: Final = 1


def account_id(bucket_lsn: int) -> str:
    """The wire id of the bucket created by the deposit logged at `bucket_lsn` (CONTRACT §3.5)."""
    return f"acc_{bucket_lsn}"


def entry_id(lsn: int, i: int) -> str:
    """The wire id of the i-th ledger entry written by the command logged at `lsn` (§3.12)."""
    return f"le_{lsn}_{i}"


# (bucket_lsn, amount) pairs. Tuples, not lists: a record lives as long as the ledger, and the
# garbage collector untracks tuples of ints, so millions of records add nothing to its passes.
Parts = tuple[tuple[int, int], ...]


class Bucket(msgspec.Struct, array_like=True, gc=False):
    """One deposit's credit (CONTRACT §3.5). Money identity: total == used + frozen + expired +
    available, with available == 0 once `is_expired` (the write-off moves it to `expired`)."""

    lsn: int  # LSN of the deposit that created it: account_id and the allocation tie-break
    wallet: str
    source: str
    total: int
    starts_at_ms: int | None
    expires_at_ms: int | None
    used: int = 0
    frozen: int = 0
    expired: int = 0  # amount written off by EXPIRE entries
    is_expired: bool = False

    @property
    def account_id(self) -> str:
        return account_id(self.lsn)

    @property
    def available(self) -> int:
        return self.total - self.used - self.frozen - self.expired


class LedgerEntry(msgspec.Struct, array_like=True, gc=False):
    """One ledger line (CONTRACT §3.12); id = entry_id(lsn, i), account_id = account_id(bucket_lsn)."""

    lsn: int
    i: int
    op: str
    amount: int
    bucket_lsn: int
    wallet: str
    source: str
    transaction_id: str | None
    business_type: str
    description: str | None
    created_at_ms: int


class FreezeRecord(msgspec.Struct, tag="freeze", array_like=True, gc=False):
    """A freeze and how it ended. The original responses are rebuilt from these fields (they
    hold everything the responses show), which is cheaper than storing response objects."""

    transaction_id: str
    lsn: int
    at_ms: int
    amount: int
    credit_types: tuple[str, ...] | None  # normalized: sorted, unique (CONTRACT §3.9 identity)
    wallet: str | None
    business_type: str
    description: str | None
    unfreeze_after_ms: int | None
    consume_after_ms: int | None
    allocation: Parts  # (bucket_lsn, amount) in allocation order (§3.6)
    status: int = FROZEN
    auto: bool = False  # settled by its TTL (AutoSettle), CONTRACT §3.10 / §7.2
    settled_at_ms: int | None = None
    consumed_amount: int = 0
    overage_amount: int = 0
    settle_parts: Parts | None = None  # CONSUME or UNFREEZE parts, response order


class DeductRecord(msgspec.Struct, tag="deduct", array_like=True, gc=False):
    transaction_id: str
    lsn: int
    at_ms: int
    amount: int
    credit_types: tuple[str, ...] | None
    wallet: str | None
    parts: Parts  # (bucket_lsn, amount) charged, in order


class DepositRecord(msgspec.Struct, array_like=True, gc=False):
    """A deposit made with an idempotency key (CONTRACT §3.9, §7.8)."""

    idempotency_key: str
    lsn: int  # = the bucket's lsn; record_id = f"le_{lsn}_0"
    amount: int
    wallet: str
    source: str
    starts_at_ms: int | None
    expires_at_ms: int | None
    wallet_total: int  # `total_amount` of the original response


# -- slots and entitlements (CONTRACT §8). Wire ids derive from LSNs like account_id. ------------


def pool_id(pool_lsn: int) -> str:
    return f"pool_{pool_lsn}"


def holding_id(holding_lsn: int) -> str:
    return f"hold_{holding_lsn}"


def slot_event_id(lsn: int) -> str:
    return f"sev_{lsn}"


def entitlement_id(lsn: int) -> str:
    return f"ent_{lsn}"


def entitlement_event_id(lsn: int) -> str:
    return f"eev_{lsn}"


class Holding(msgspec.Struct, array_like=True, gc=False):
    """Capacity held by one resource (CONTRACT §8.3); holding_id = holding_id(lsn)."""

    lsn: int  # the claim's LSN
    resource_id: str
    amount: int
    at_ms: int
    due_ms: int | None = None  # ttl release time, if any


class SlotPool(msgspec.Struct, array_like=True, gc=False):
    """One pool (customer, wallet, source). Invariant: in_use == sum of holdings <= capacity."""

    lsn: int  # the grant that created it: pool_id
    wallet: str
    source: str
    capacity: int = 0
    in_use: int = 0
    holdings: dict[str, Holding] | None = None  # by resource_id, claim order


class SlotEvent(msgspec.Struct, array_like=True, gc=False):
    """One immutable slot event (CONTRACT §8.4): one per logged slot command, id = sev_{lsn}."""

    lsn: int
    type: str
    wallet: str
    source: str
    amount: int
    resource_id: str | None
    description: str | None
    idempotency_key: str | None
    at_ms: int


class SlotKeyRecord(msgspec.Struct, array_like=True, gc=False):
    """A grant/revoke made with an idempotency key: its identity and its original response."""

    idempotency_key: str
    type: str  # GRANT_CAPACITY | REVOKE_CAPACITY
    lsn: int
    wallet: str
    source: str
    amount: int
    pool_lsn: int
    capacity: int  # the pool right after it: the original response
    in_use: int


class Entitlement(msgspec.Struct, array_like=True, gc=False):
    """A set entitlement (CONTRACT §8.5); entitlement_id = ent_{lsn of the set that created it}."""

    lsn: int
    feature_key: str
    value: str
    valid_from_ms: int | None
    valid_until_ms: int | None
    source: str | None
    description: str | None
    metadata: dict[str, Any] | None


class EntitlementEvent(msgspec.Struct, array_like=True, gc=False):
    lsn: int
    feature_key: str
    type: str  # SET | REMOVE
    old_value: str | None
    new_value: str | None
    source: str | None
    description: str | None
    at_ms: int


class ApiKey(msgspec.Struct, array_like=True, gc=False):
    key_id: str
    key_hash: str
    project: str
    revoked: bool = False


def bucket_valid_at(bucket: Bucket, at_ms: int) -> bool:
    """CONTRACT §3.5 / §7.3 / §7.4: spendable and counted iff not written off, started
    (starts_at <= at) and not expired (expires_at > at: expiry is exclusive, to the ms)."""
    if bucket.is_expired:
        return False
    if bucket.starts_at_ms is not None and bucket.starts_at_ms > at_ms:
        return False
    return bucket.expires_at_ms is None or bucket.expires_at_ms > at_ms


def allocation_key(bucket: Bucket) -> tuple[int, int, int]:
    """CONTRACT §3.6: soonest expiry first, no expiry last, then oldest bucket (lsn = id)."""
    if bucket.expires_at_ms is None:
        return (1, 0, bucket.lsn)
    return (0, bucket.expires_at_ms, bucket.lsn)


class CustomerState(msgspec.Struct, gc=False):
    """One customer. gc=False: nothing inside points back to it (no cycle is possible)."""

    customer_id: str
    created_at_ms: int
    name: str | None = None
    email: str | None = None
    metadata: dict[str, Any] | None = None
    last_lsn: int = 0
    buckets: list[Bucket] = msgspec.field(default_factory=list)  # every bucket, lsn order
    entries: list[LedgerEntry] = msgspec.field(default_factory=list)  # (lsn, i) order
    txns: dict[str, FreezeRecord | DeductRecord] | None = None  # by transaction_id
    deposits: dict[str, DepositRecord] | None = None  # by idempotency key
    live: list[Bucket] = msgspec.field(default_factory=list)  # derived: not expired, §3.6 order
    due: list[tuple[int, int, int, str | None]] | None = None  # derived: (due_ms, kind, lsn, txn)
    op_positions: dict[str, list[int]] | None = None  # derived: op -> entry positions
    txn_positions: dict[str, list[int]] | None = None  # derived: transaction_id -> positions
    # Slots and entitlements (CONTRACT §8): None until first used, so an idle customer stays small.
    slot_pools: list[SlotPool] | None = None  # creation order; a customer has few pools
    slot_events: list[SlotEvent] | None = None  # lsn order
    slot_keys: dict[str, SlotKeyRecord] | None = None  # grant/revoke idempotency keys
    entitlements: dict[str, Entitlement] | None = None  # by feature_key, first-set order
    entitlement_events: list[EntitlementEvent] | None = None  # lsn order
    holding_index: dict[int, tuple[SlotPool, str]] | None = None  # derived: claim lsn -> (pool, resource)

    def bucket_by_lsn(self, lsn: int) -> Bucket:
        """O(log n): `buckets` is in lsn order (append-only, LSNs increase)."""
        index = bisect_left(self.buckets, lsn, key=_bucket_lsn)
        bucket = self.buckets[index]
        assert bucket.lsn == lsn, (bucket.lsn, lsn)
        return bucket

    def add_bucket(self, bucket: Bucket) -> None:
        assert not self.buckets or self.buckets[-1].lsn < bucket.lsn
        self.buckets.append(bucket)
        if not bucket.is_expired:
            insort(self.live, bucket, key=allocation_key)

    def add_entry(self, entry: LedgerEntry) -> None:
        """Append one entry and keep the position indexes (if built) in step."""
        assert entry.amount > 0, entry  # CONTRACT §3.12: zero-amount entries are never written
        position = len(self.entries)
        self.entries.append(entry)
        if self.op_positions is not None:
            _index_entry(self, entry, position)
        elif position + 1 > INDEX_ENTRIES_MIN:
            build_entry_indexes(self)

    def push_due(self, due: tuple[int, int, int, str | None]) -> None:
        if self.due is None:
            self.due = []
        heapq.heappush(self.due, due)


def _bucket_lsn(bucket: Bucket) -> int:
    return bucket.lsn


def _index_entry(customer: CustomerState, entry: LedgerEntry, position: int) -> None:
    assert customer.op_positions is not None and customer.txn_positions is not None
    customer.op_positions.setdefault(entry.op, []).append(position)
    if entry.transaction_id is not None:
        customer.txn_positions.setdefault(entry.transaction_id, []).append(position)


def index_holding(customer: CustomerState, pool: SlotPool, resource_id: str, lsn: int) -> None:
    if customer.holding_index is None:
        customer.holding_index = {}
    customer.holding_index[lsn] = (pool, resource_id)


def build_entry_indexes(customer: CustomerState) -> None:
    customer.op_positions = {}
    customer.txn_positions = {}
    for position, entry in enumerate(customer.entries):
        _index_entry(customer, entry, position)


class ProjectState(msgspec.Struct):
    name: str
    customers: dict[str, CustomerState] = msgspec.field(default_factory=dict)
    # Project-wide identity indexes (CONTRACT §3.9); derived from the customers' records.
    txn_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived
    deposit_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived
    slot_key_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived (CONTRACT §8.2)


class LedgerState(msgspec.Struct):
    last_lsn: int = 0
    # The newest stamp of a logged client command: apply() asserts stamps never go backwards in
    # LSN order, and the runtime's clock starts from it after a restart. Not in the digest.
    stamp_ms_last: int = 0
    projects: dict[str, ProjectState] = msgspec.field(default_factory=dict)
    api_keys: dict[str, ApiKey] = msgspec.field(default_factory=dict)  # by key_hash
    key_hash_by_id: dict[str, str] = msgspec.field(default_factory=dict)  # derived
    # derived: (due_ms, project, customer_id), one per timer pushed, lazily deleted (ledger.py)
    due_heap: list[tuple[int, str, str]] = msgspec.field(default_factory=list)


def rebuild_derived(state: LedgerState) -> None:
    """Rebuild every derived field from the persistent ones (after decode)."""
    state.key_hash_by_id = {key.key_id: key.key_hash for key in state.api_keys.values()}
    state.due_heap = []
    for project in state.projects.values():
        project.txn_owner = {}
        project.deposit_owner = {}
        project.slot_key_owner = {}
        for customer in project.customers.values():
            _rebuild_customer(customer)
            for transaction_id in customer.txns or ():
                project.txn_owner[transaction_id] = customer.customer_id
            for key in customer.deposits or ():
                project.deposit_owner[key] = customer.customer_id
            for key in customer.slot_keys or ():
                project.slot_key_owner[key] = customer.customer_id
            for due in customer.due or ():
                state.due_heap.append((due[0], project.name, customer.customer_id))
    heapq.heapify(state.due_heap)


def _rebuild_customer(customer: CustomerState) -> None:
    customer.live = sorted((b for b in customer.buckets if not b.is_expired), key=allocation_key)
    customer.due = None
    for bucket in customer.live:
        if bucket.expires_at_ms is not None:
            customer.push_due((bucket.expires_at_ms, DUE_EXPIRE, bucket.lsn, None))
    for record in (customer.txns or {}).values():
        if isinstance(record, FreezeRecord) and record.status == FROZEN:
            due_ms = record.unfreeze_after_ms if record.unfreeze_after_ms is not None else record.consume_after_ms
            if due_ms is not None:
                customer.push_due((due_ms, DUE_SETTLE, record.lsn, record.transaction_id))
    customer.holding_index = None
    for pool in customer.slot_pools or ():
        for resource_id, holding in (pool.holdings or {}).items():
            index_holding(customer, pool, resource_id, holding.lsn)
            if holding.due_ms is not None:
                customer.push_due((holding.due_ms, DUE_SLOT_RELEASE, holding.lsn, None))
    customer.op_positions = None
    customer.txn_positions = None
    if len(customer.entries) > INDEX_ENTRIES_MIN:
        build_entry_indexes(customer)
