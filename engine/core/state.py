"""The ledger's in-memory state: LedgerState > ProjectState > CustomerState > Bucket, records.

Pure data, no behaviour beyond small helpers: `engine.core.ledger.apply` is the only writer.

Two kinds of fields live here:

- **persistent** fields are the history's facts. `engine.core.codec` snapshots exactly these and
  `engine.core.digest` hashes exactly these (CONTRACT §5: same history, same digest).
- **derived** fields (marked `# derived`) are indexes and heaps rebuilt from the persistent ones
  by `rebuild_derived` (after a snapshot load). They are never encoded or hashed.

Memory (an idle customer with one bucket and one GRANT entry should stay under 1 KiB, issue 14;
`python -m bench.memory_probe` measures it in seconds): every Struct that can never be part of a
reference cycle is `gc=False` (no GC header, never scanned); containers a quiet customer does not
need are None until first used, and what most customers never use (refunds, voids, alert rules,
slots, entitlements) sits behind one pointer (`CustomerExtras`); a customer's only bucket, entry
and live bucket are held in tuples of one (48 bytes, a list of one is 72) and its only keyed
deposit as the record itself; bucket `account_id` and entry `id` are derived from LSNs instead of
stored; entries reference the bucket's `wallet` / `source` strings instead of copying them. Ledger
position indexes only exist once a customer has more than `INDEX_ENTRIES_MIN` entries (below that
a scan is as fast as a bisect).
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Any, Final, Generic, TypeVar, overload

import msgspec
from sortedcontainers import SortedList

from engine.core import spent
from engine.core.cold import CustomerMap
from engine.core.spent import SpentIndex
from engine.core.hooks_state import AlertRule, HooksState

# Operation types of ledger entries (CONTRACT §3.12). Interned module constants: entries share them.
GRANT: Final = "GRANT"
FREEZE: Final = "FREEZE"
CONSUME: Final = "CONSUME"
UNFREEZE: Final = "UNFREEZE"
EXPIRE: Final = "EXPIRE"
REFUND: Final = "REFUND"  # CONTRACT §10.1: credit of a charge given back
VOID: Final = "VOID"  # CONTRACT §10.2: a grant's available remainder written off

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
    """One deposit's credit (CONTRACT §3.5). Money identity, per bucket, always:

        total == used + frozen + expired + available,   available == 0 once `is_expired`

    where `used` is what is charged net of refunds (CONSUME − REFUND entries: a refund lowers
    `used`, CONTRACT §10.4) and `expired` is everything written off (EXPIRE + VOID entries).
    `is_expired` means *closed*: expired by time, or voided (CONTRACT §10.2; the customer's
    `voided` index tells which). Credit coming back to a closed bucket is written off at once.
    In the issue's terms: deposited = available + frozen + charged + expired + voided − refunded.

    The layout is fixed (snapshot bytes and digests of old histories must not change): refunds
    and voids add no field here; their records live beside the freeze and deduct records."""

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


class RefundRecord(msgspec.Struct, tag="refund", array_like=True, gc=False):
    """A refund (CONTRACT §10.1). Its own namespace per project (refund_id); `requested` is the
    amount the request named (None: "all that is refundable"), `amount` what was refunded."""

    refund_id: str
    transaction_id: str
    lsn: int
    at_ms: int
    amount: int
    requested: int | None
    refundable_after: int  # `refundable_amount` of the original response
    parts: Parts  # (bucket_lsn, amount) given back, response order (newest charge first)
    reason: str | None = None


class VoidRecord(msgspec.Struct, tag="void", array_like=True, gc=False):
    """A void of one bucket (CONTRACT §10.2). Its own namespace per project (void_id)."""

    void_id: str
    bucket_lsn: int
    lsn: int
    at_ms: int
    amount: int  # the available remainder written off (may be 0: a spent or expired grant)
    reason: str | None = None
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
    """A project key, or an admin key (`admin`, `project` ""), CONTRACT §3.15, §9.1.

    Fields after `revoked` were appended for §9.2 (older snapshots decode with the defaults).
    The times are the stamps of the CreateApiKey / RevokeApiKey commands; they are None only for
    keys restored from a snapshot written before Tally kept them. The digest leaves the times out
    (see engine/core/digest.py)."""

    key_id: str
    key_hash: str
    project: str
    revoked: bool = False
    label: str | None = None
    admin: bool = False
    created_at_ms: int | None = None
    revoked_at_ms: int | None = None


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


class CustomerExtras(msgspec.Struct, gc=False):
    """The parts of a customer most customers never use (refunds and voids, alert rules, slots,
    entitlements): one object, None on `CustomerState.extras` until the first of them is set, so
    an idle customer carries one pointer for all twelve (8 bytes each, issue 14). Read and written
    through the same-named attributes of CustomerState (`_Extra`); nothing here points back."""

    refunds: dict[str, RefundRecord] | None = None  # by refund_id (CONTRACT §10.1)
    voids: dict[str, VoidRecord] | None = None  # by void_id (CONTRACT §10.2)
    refunded: dict[str, int] | None = None  # derived: transaction_id -> refunded so far
    voided: dict[int, str] | None = None  # derived: bucket_lsn -> void_id
    refund_lsns: dict[int, str] | None = None  # derived: lsn of a refund -> refund_id
    # CONTRACT §11 alert rules, customer level first; persisted in the snapshot's hooks section
    alerts: list[AlertRule] | None = None
    # Slots and entitlements (CONTRACT §8)
    slot_pools: list[SlotPool] | None = None  # creation order; a customer has few pools
    slot_events: list[SlotEvent] | None = None  # lsn order
    slot_keys: dict[str, SlotKeyRecord] | None = None  # grant/revoke idempotency keys
    entitlements: dict[str, Entitlement] | None = None  # by feature_key, first-set order
    entitlement_events: list[EntitlementEvent] | None = None  # lsn order
    holding_index: dict[int, tuple[SlotPool, str]] | None = None  # derived: claim lsn -> (pool, resource)


_T = TypeVar("_T")


class _Extra(Generic[_T]):
    """`customer.<name>` reads `customer.extras.<name>` (None while `extras` is None); setting a
    value other than None creates `extras` on first use. Setting None never creates it."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        assert name in CustomerExtras.__struct_fields__, name
        self.name = name

    @overload
    def __get__(self, customer: None, owner: type) -> _Extra[_T]: ...
    @overload
    def __get__(self, customer: CustomerState, owner: type) -> _T | None: ...
    def __get__(self, customer: CustomerState | None, owner: type) -> _Extra[_T] | _T | None:
        if customer is None:
            return self
        extras = customer.extras
        return None if extras is None else getattr(extras, self.name)

    def __set__(self, customer: CustomerState, value: _T | None) -> None:
        extras = customer.extras
        if extras is None:
            if value is None:
                return
            extras = customer.extras = CustomerExtras()
        setattr(extras, self.name, value)


class CustomerState(msgspec.Struct, gc=False):
    """One customer. gc=False: nothing inside points back to it (no cycle is possible).

    Issue 14 (an idle customer with one bucket near 1 KiB): 16 fields (144 bytes); what most
    customers never use lives in `extras`, one keyed deposit is held without a list."""

    customer_id: str
    created_at_ms: int
    name: str | None = None
    email: str | None = None
    metadata: dict[str, Any] | None = None
    last_lsn: int = 0
    # Every bucket in lsn order and every entry in (lsn, i) order: a tuple while there is exactly
    # one (48 bytes, a list of one 72: issue 14), else a list. Appended only by add_bucket and
    # add_entry.
    buckets: list[Bucket] | tuple[Bucket] = msgspec.field(default_factory=list)
    entries: list[LedgerEntry] | tuple[LedgerEntry] = msgspec.field(default_factory=list)
    txns: dict[str, FreezeRecord | DeductRecord] | None = None  # by transaction_id
    # The deposits made with an idempotency key, first-use order: None, the one record itself, or
    # a list of two or more (a list of one costs 72 bytes and most customers have one keyed
    # deposit, issue 14). Read through `deposits`; found by key via ProjectState.deposit_records.
    keyed_deposits: DepositRecord | list[DepositRecord] | None = None
    # derived: open buckets still holding available or frozen credit, §3.6 order. Open buckets
    # holding none (spent) are in `spent` instead (engine/core/spent.py, CONTRACT §7.11). A tuple
    # of one when add_bucket put the first bucket in (as `buckets`); changed via live_list().
    live: list[Bucket] | tuple[Bucket] = msgspec.field(default_factory=list)
    due: list[tuple[int, int, int, str | None]] | None = None  # derived: (due_ms, kind, lsn, txn)
    # derived: the ledger position indexes (op, transaction_id, wallet / business type, time),
    # one object built past INDEX_ENTRIES_MIN entries: one field here, not four (8 bytes each on
    # every customer, issue 14). Read through the properties below.
    entry_index: EntryIndex | None = None
    spent: SpentIndex | None = None  # derived: open buckets holding no credit (§7.11)
    open_total: int = 0  # derived: sum of the totals of open buckets (the §3.1 customer bound)
    extras: CustomerExtras | None = None  # refunds, voids, alerts, slots, entitlements (above)

    # The fields of CustomerExtras, read and written as if they were this struct's own.
    refunds = _Extra[dict[str, RefundRecord]]()
    voids = _Extra[dict[str, VoidRecord]]()
    refunded = _Extra[dict[str, int]]()
    voided = _Extra[dict[int, str]]()
    refund_lsns = _Extra[dict[int, str]]()
    alerts = _Extra[list[AlertRule]]()
    slot_pools = _Extra[list[SlotPool]]()
    slot_events = _Extra[list[SlotEvent]]()
    slot_keys = _Extra[dict[str, SlotKeyRecord]]()
    entitlements = _Extra[dict[str, Entitlement]]()
    entitlement_events = _Extra[list[EntitlementEvent]]()
    holding_index = _Extra[dict[int, tuple[SlotPool, str]]]()

    @property
    def deposits(self) -> Sequence[DepositRecord]:
        """The keyed deposits, first-use order (empty when none)."""
        keyed = self.keyed_deposits
        if keyed is None:
            return ()
        if isinstance(keyed, DepositRecord):
            return (keyed,)
        return keyed

    def add_deposit(self, record: DepositRecord) -> None:
        keyed = self.keyed_deposits
        if keyed is None:
            self.keyed_deposits = record
        elif isinstance(keyed, DepositRecord):
            self.keyed_deposits = [keyed, record]
        else:
            keyed.append(record)

    @property
    def op_positions(self) -> dict[str, list[int]] | None:
        """op -> entry positions (None below INDEX_ENTRIES_MIN entries)."""
        return None if self.entry_index is None else self.entry_index.ops

    @property
    def txn_positions(self) -> dict[str, list[int]] | None:
        """transaction_id -> entry positions."""
        return None if self.entry_index is None else self.entry_index.txns

    @property
    def filter_positions(self) -> dict[tuple[int, str], list[int]] | None:
        """(BY_WALLET | BY_BUSINESS_TYPE, value) -> entry positions."""
        return None if self.entry_index is None else self.entry_index.filters

    @property
    def time_index(self) -> TimeIndex | None:
        """created_at positions (ledger `from`/`to`)."""
        return None if self.entry_index is None else self.entry_index.times

    def bucket_by_lsn(self, lsn: int) -> Bucket:
        """O(log n): `buckets` is in lsn order (append-only, LSNs increase)."""
        index = bisect_left(self.buckets, lsn, key=_bucket_lsn)
        bucket = self.buckets[index]
        assert bucket.lsn == lsn, (bucket.lsn, lsn)
        return bucket

    def add_bucket(self, bucket: Bucket) -> None:
        # A first bucket is held in a tuple of one (48 bytes; a list of one costs 72, and append()
        # on an empty list reserves four slots: 88). The second makes it a list (issue 14).
        buckets = self.buckets
        assert not buckets or buckets[-1].lsn < bucket.lsn
        if not isinstance(buckets, list):
            self.buckets = [*buckets, bucket]
        elif buckets:
            buckets.append(bucket)
        else:
            self.buckets = (bucket,)
        if not bucket.is_expired:
            assert bucket.total > 0  # a new bucket holds credit: it starts in `live`
            if self.live:
                insort(self.live_list(), bucket, key=allocation_key)
            else:
                self.live = (bucket,)
            # 0 + total would be a new int object (28 bytes) equal to the bucket's: share it.
            self.open_total = self.open_total + bucket.total if self.open_total else bucket.total

    def live_list(self) -> list[Bucket]:
        """`live`, to be changed in place: a tuple of one becomes a list first."""
        live = self.live
        if isinstance(live, list):
            return live
        self.live = changeable = list(live)
        return changeable

    def add_entry(self, entry: LedgerEntry) -> None:
        """Append one entry and keep the position indexes (if built) in step."""
        assert entry.amount > 0, entry  # CONTRACT §3.12: zero-amount entries are never written
        entries = self.entries
        position = len(entries)
        if not isinstance(entries, list):  # one entry so far, held as in add_bucket
            self.entries = [*entries, entry]
        elif position:
            entries.append(entry)
        else:
            self.entries = (entry,)
        if self.entry_index is not None:
            _index_entry(self, entry, position)
        elif position + 1 > INDEX_ENTRIES_MIN:
            build_entry_indexes(self)

    def push_due(self, due: tuple[int, int, int, str | None]) -> None:
        if self.due is None:
            self.due = []
        heapq.heappush(self.due, due)


def _bucket_lsn(bucket: Bucket) -> int:
    return bucket.lsn


# Kinds of `filter_positions` keys (ledger filters, CONTRACT §10.3).
BY_WALLET: Final = 0
BY_BUSINESS_TYPE: Final = 1


class TimeIndex(msgspec.Struct, gc=False):
    """Positions by `created_at` (CONTRACT §10.3 `from`/`to`). Entries are almost in time order
    (client stamps never go backwards) but a timer's entries carry their due time and a deposit
    already expired writes its EXPIRE at `expires_at`, so a few lie before an earlier entry.

    `high[p]` = max created_at of entries[0..p] (non-decreasing: bisectable). An entry is *late*
    when its created_at < high[p - 1]; `late` lists those positions (ascending). Every entry that
    is not late has created_at == high[p], so the in-order matches of [from, to) are exactly the
    non-late positions in [bisect(high, from), bisect(high, to)); late ones are checked one by one
    (their number bounds the extra work of a time-filtered page)."""

    high: array[int] = msgspec.field(default_factory=lambda: array("q"))
    late: list[int] = msgspec.field(default_factory=list)


class EntryIndex(msgspec.Struct, gc=False):
    """A customer's ledger position indexes (derived; nothing in them points back)."""

    ops: dict[str, list[int]] = msgspec.field(default_factory=dict)  # op -> positions
    txns: dict[str, list[int]] = msgspec.field(default_factory=dict)  # transaction_id -> positions
    filters: dict[tuple[int, str], list[int]] = msgspec.field(default_factory=dict)  # (kind, value)
    times: TimeIndex = msgspec.field(default_factory=TimeIndex)


def _index_entry(customer: CustomerState, entry: LedgerEntry, position: int) -> None:
    # On every write of a customer past INDEX_ENTRIES_MIN entries (the hot path): get-then-append,
    # not setdefault(key, []), which built and dropped an empty list per index per entry; a new
    # key gets a one-slot list (most transaction ids have one or two entries). The position
    # appends are written out here: four calls per entry were a measurable share of a deduct (issue 14).
    index = customer.entry_index
    assert index is not None
    ops = index.ops
    positions = ops.get(entry.op)
    if positions is None:
        ops[entry.op] = [position]
    else:
        positions.append(position)
    if entry.transaction_id is not None:
        txns = index.txns
        positions = txns.get(entry.transaction_id)
        if positions is None:
            txns[entry.transaction_id] = [position]
        else:
            positions.append(position)
    filters = index.filters
    for key in ((BY_WALLET, entry.wallet), (BY_BUSINESS_TYPE, entry.business_type)):
        positions = filters.get(key)
        if positions is None:
            filters[key] = [position]
        else:
            positions.append(position)
    time_index = index.times
    high = time_index.high
    if high and entry.created_at_ms < high[-1]:
        time_index.late.append(position)
        high.append(high[-1])
    else:
        high.append(entry.created_at_ms)


def index_holding(customer: CustomerState, pool: SlotPool, resource_id: str, lsn: int) -> None:
    if customer.holding_index is None:
        customer.holding_index = {}
    customer.holding_index[lsn] = (pool, resource_id)


def build_entry_indexes(customer: CustomerState) -> None:
    customer.entry_index = EntryIndex()
    for position, entry in enumerate(customer.entries):
        _index_entry(customer, entry, position)


class ProjectState(msgspec.Struct):
    name: str
    # Some may still be encoded until first looked up (engine/core/cold.py, snapshot layout 3).
    customers: CustomerMap = msgspec.field(default_factory=CustomerMap)
    # derived: every customer id, sorted (the customer list, CONTRACT §9.3). A SortedList, not a
    # list + insort: inserting into a list of 10^6 ids moves ~4 MB (~60 us, measured); a
    # SortedList insert is ~3 us and a page is O(log n + limit).
    customer_ids: SortedList[str] = msgspec.field(default_factory=SortedList)
    # Project-wide identity indexes (CONTRACT §3.9); derived from the customers' records.
    txn_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived
    # derived: idempotency key -> its deposit; the owner is bucket_owner(record.lsn). While the
    # owner is cold (engine/core/cold.py) the value is the owner's customer_id instead: looking
    # the owner up decodes it and puts its records here.
    deposit_records: dict[str, DepositRecord | str] = msgspec.field(default_factory=dict)
    refund_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived: refund_id
    void_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived: void_id
    # derived: bucket lsn -> owning customer, as two parallel arrays in lsn order (16 bytes a
    # bucket; a void names only an account_id, CONTRACT §10.2). Appended as deposits apply.
    bucket_lsns: array[int] = msgspec.field(default_factory=lambda: array("q"))
    bucket_customers: list[str] = msgspec.field(default_factory=list)

    def add_bucket_owner(self, bucket_lsn: int, customer_id: str) -> None:
        assert not self.bucket_lsns or self.bucket_lsns[-1] < bucket_lsn
        self.bucket_lsns.append(bucket_lsn)
        self.bucket_customers.append(customer_id)

    def bucket_owner(self, bucket_lsn: int) -> str | None:
        """The customer owning bucket `bucket_lsn` in this project, or None. O(log n)."""
        index = bisect_left(self.bucket_lsns, bucket_lsn)
        if index < len(self.bucket_lsns) and self.bucket_lsns[index] == bucket_lsn:
            return self.bucket_customers[index]
        return None

    def add_customer(self, customer: CustomerState) -> None:
        """A new customer (a first deposit or slot grant): in the map and the sorted id index."""
        assert customer.customer_id not in self.customers
        self.customers[customer.customer_id] = customer
        self.customer_ids.add(customer.customer_id)
    slot_key_owner: dict[str, str] = msgspec.field(default_factory=dict)  # derived (CONTRACT §8.2)
    # derived: customer_id -> its open (FROZEN) freezes by transaction_id, freeze LSN order; only
    # customers with an open freeze have a key (GET .../freezes, engine/core/freeze_queries.py).
    open_freezes: dict[str, dict[str, FreezeRecord]] = msgspec.field(default_factory=dict)

    def open_freeze(self, customer_id: str, record: FreezeRecord) -> None:
        """A new freeze (LSNs only grow: appending keeps the LSN order)."""
        assert record.status == FROZEN
        self.open_freezes.setdefault(customer_id, {})[record.transaction_id] = record

    def close_freeze(self, customer_id: str, record: FreezeRecord) -> None:
        """A freeze consumed or unfrozen (by request or by its TTL)."""
        records = self.open_freezes[customer_id]
        del records[record.transaction_id]
        if not records:
            del self.open_freezes[customer_id]


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
    # Webhooks, outboxes, attempts (CONTRACT §11); None until the first webhook or alert rule, so
    # a history without them snapshots and digests as before (engine/core/hooks_state.py).
    hooks: HooksState | None = None


def rebuild_derived(state: LedgerState, *, owner_indexes: bool = True) -> None:
    """Rebuild every derived field from the persistent ones (after decode). `owner_indexes`
    False leaves each project's `deposit_records`, `bucket_lsns` and `bucket_customers` as they
    are (a layout-2 or -3 snapshot holds them, engine/core/codec_v2.py). Cold customers
    (engine/core/cold.py) have no derived fields but those owner indexes and `customer_ids`: the
    layout-3 decoder fills their share of the indexes itself."""
    state.key_hash_by_id = {key.key_id: key.key_hash for key in state.api_keys.values()}
    state.due_heap = []
    for project in state.projects.values():
        project.txn_owner = {}
        project.refund_owner = {}
        project.void_owner = {}
        project.customer_ids = SortedList(project.customers)
        project.slot_key_owner = {}
        project.open_freezes = {}
        # Gathered in customer order, turned into indexes in bulk below: one C-level pass each
        # instead of a dict store or a list per customer (issue 14, restart time at 10^7 entries).
        deposits: list[DepositRecord] = []
        buckets: list[Bucket] = []
        owners: list[str] = []  # owner of buckets[i]
        assert not (owner_indexes and project.customers.cold_count)
        for customer in project.customers.warm_values():
            rebuild_customer(customer)
            if customer.txns:
                _rebuild_txn_owners(project, customer)
            if customer.extras is not None:  # refunds, voids, slots (CustomerExtras)
                _rebuild_extra_owners(project, customer, customer.extras)
            for due in customer.due or ():
                state.due_heap.append((due[0], project.name, customer.customer_id))
            if owner_indexes:
                keyed = customer.keyed_deposits  # None, one record, or a list (no tuple built here)
                if isinstance(keyed, DepositRecord):
                    deposits.append(keyed)
                elif keyed is not None:
                    deposits += keyed
                buckets += customer.buckets
                owners += [customer.customer_id] * len(customer.buckets)
        if owner_indexes:
            project.deposit_records = dict(zip(map(_DEPOSIT_KEY, deposits), deposits))
            project.bucket_lsns, project.bucket_customers = _sorted_owners(list(map(_LSN, buckets)), owners)
    heapq.heapify(state.due_heap)


def _rebuild_txn_owners(project: ProjectState, customer: CustomerState) -> None:
    frozen: list[FreezeRecord] = []
    for transaction_id, txn in (customer.txns or {}).items():
        project.txn_owner[transaction_id] = customer.customer_id
        if type(txn) is FreezeRecord and txn.status == FROZEN:
            frozen.append(txn)
    for freeze in sorted(frozen, key=_record_lsn):
        project.open_freeze(customer.customer_id, freeze)


def _rebuild_extra_owners(project: ProjectState, customer: CustomerState, extras: CustomerExtras) -> None:
    for refund_id in extras.refunds or ():
        project.refund_owner[refund_id] = customer.customer_id
    for void_id in extras.voids or ():
        project.void_owner[void_id] = customer.customer_id
    for key in extras.slot_keys or ():
        project.slot_key_owner[key] = customer.customer_id


def _record_lsn(record: FreezeRecord) -> int:
    return record.lsn


_DEPOSIT_KEY: Final = attrgetter("idempotency_key")  # C-level getters for the bulk passes above
_LSN: Final = attrgetter("lsn")


def _sorted_owners(lsns: list[int], owners: list[str]) -> tuple[array[int], list[str]]:
    """The bucket-owner index in lsn order (issue 14, restart time at 10^7 buckets). In order
    already (customers created in lsn order, one bucket each): as is. Dense (buckets are at
    least a quarter of the lsns, as when most records are deposits): each owner is stored at
    its lsn in a table and the table read back in order, C-level passes only (a third faster
    than the sort at 10^6). Else: sort positions by lsn."""
    ordered = array("q")
    if all(a < b for a, b in zip(lsns, lsns[1:])):
        ordered.fromlist(lsns)
        return ordered, owners
    size = max(lsns) + 1
    if size <= 4 * len(lsns):
        table: list[str | None] = [None] * size
        deque(map(table.__setitem__, lsns, owners), maxlen=0)
        present = list(map(is_not, table, repeat(None)))
        ordered.fromlist(list(compress(range(size), present)))
        return ordered, list(compress(table, present))  # type: ignore[arg-type]  # no None left
    order = sorted(range(len(lsns)), key=lsns.__getitem__)
    lsns.sort()
    ordered.fromlist(lsns)
    return ordered, list(map(owners.__getitem__, order))


def rebuild_customer(customer: CustomerState) -> None:
    """A customer's own derived fields from its persistent ones (after decode)."""
    # One pass over the buckets (restart time at 10^7 entries, issue 14). `buckets` is in lsn
    # order, which is already the §3.6 order of buckets without expiry: sort only if one expires.
    live: list[Bucket] = []
    expiring = False
    open_total = 0
    customer.spent = None
    customer.due = None
    for bucket in customer.buckets:
        if bucket.is_expired:
            continue
        open_total += bucket.total
        if bucket.total - bucket.used - bucket.expired > 0:
            live.append(bucket)
        else:
            spent.add(customer, bucket)
        if bucket.expires_at_ms is not None:  # spent ones too: their expiry closes them
            expiring = True
            customer.push_due((bucket.expires_at_ms, DUE_EXPIRE, bucket.lsn, None))
    if expiring:
        live.sort(key=allocation_key)
    customer.live = (live[0],) if len(live) == 1 else live  # a tuple of one, as add_bucket holds it
    customer.open_total = open_total
    for record in (customer.txns or {}).values():
        if isinstance(record, FreezeRecord) and record.status == FROZEN:
            due_ms = record.unfreeze_after_ms if record.unfreeze_after_ms is not None else record.consume_after_ms
            if due_ms is not None:
                customer.push_due((due_ms, DUE_SETTLE, record.lsn, record.transaction_id))
    if customer.extras is not None:  # slots, refunds, voids (CustomerExtras)
        customer.holding_index = None
        for pool in customer.slot_pools or ():
            for resource_id, holding in (pool.holdings or {}).items():
                index_holding(customer, pool, resource_id, holding.lsn)
                if holding.due_ms is not None:
                    customer.push_due((holding.due_ms, DUE_SLOT_RELEASE, holding.lsn, None))
        rebuild_corrections(customer)
    customer.entry_index = None
    if len(customer.entries) > INDEX_ENTRIES_MIN:
        build_entry_indexes(customer)


def rebuild_corrections(customer: CustomerState) -> None:
    """The derived refund / void indexes from the records (CONTRACT §10)."""
    customer.refunded = None
    customer.refund_lsns = None
    customer.voided = None
    for refund in (customer.refunds or {}).values():
        note_refund(customer, refund)
    for void in (customer.voids or {}).values():
        note_void(customer, void)


def note_refund(customer: CustomerState, refund: RefundRecord) -> None:
    if customer.refunded is None or customer.refund_lsns is None:
        customer.refunded = {}
        customer.refund_lsns = {}
    customer.refunded[refund.transaction_id] = customer.refunded.get(refund.transaction_id, 0) + refund.amount
    customer.refund_lsns[refund.lsn] = refund.refund_id


def note_void(customer: CustomerState, void: VoidRecord) -> None:
    if customer.voided is None:
        customer.voided = {}
    customer.voided[void.bucket_lsn] = void.void_id
