"""Read-only views of the ledger state: customer balances, ledger pages, id lookups.

Pure: no I/O, no clock (`now_ms` is passed in), and nothing here writes to the state.

Customer view decisions (CONTRACT §3.13, §7.4):
- only buckets valid at `now_ms` count (started, not expired, not written off);
- `accounts` lists them oldest deposit first (lsn order);
- `wallets` are keyed in order of their oldest valid bucket; `sources` likewise;
- a source made of several buckets reports `starts_at` = the earliest start (null if any bucket
  has none: some of its credit was always active) and `expires_at` = the soonest expiry among its
  buckets (null if none expires): "some of this credit expires at X".
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Final

import msgspec

from engine.core import cursors, spent
from engine.core.corrections import parse_account_id
from engine.core.limits import LEDGER_PAGE_SIZE_MAX, OPERATION_TYPES
from engine.core.results import (
    Account,
    Balance,
    CustomerResponse,
    LedgerEntryView,
    LedgerPage,
    Rejected,
    Wallet,
    WalletSource,
)
from engine.core.state import (
    BY_BUSINESS_TYPE,
    BY_WALLET,
    INDEX_ENTRIES_MIN,
    REFUND,
    ApiKey,
    Bucket,
    CustomerState,
    LedgerEntry,
    LedgerState,
    account_id,
    bucket_valid_at,
    entry_id,
)
from engine.core.timefmt import format_ms, format_ms_or_none

def _customer(state: LedgerState, project: str, customer_id: str) -> CustomerState | None:
    project_state = state.projects.get(project)
    return None if project_state is None else project_state.customers.get(customer_id)


def _not_found(customer_id: str) -> Rejected:
    return Rejected("customer_not_found", f"customer {customer_id!r} not found", {"customer_id": customer_id})


# -- customer view (velobase-api §1A.2) ----------------------------------------------------------


def customer_view(state: LedgerState, project: str, customer_id: str, now_ms: int) -> CustomerResponse | Rejected:
    """CONTRACT §3.13, §7.4, §7.11. `accounts` lists the buckets valid now that hold credit (from
    `live`); the totals also count the spent buckets valid now, from the spent index's running
    sums, so the numbers are those of every valid bucket. Work: O(live + (wallet, source) pairs),
    independent of how many spent or expired buckets the customer once had."""
    customer = _customer(state, project, customer_id)
    if customer is None:
        return _not_found(customer_id)
    valid = sorted((b for b in customer.live if bucket_valid_at(b, now_ms)), key=_lsn)
    accounts = []
    groups: dict[tuple[str, str], _SourceSum] = {}  # (wallet, source) -> sums, any order
    for bucket in valid:
        accounts.append(
            Account(
                account_id=bucket.account_id, account_type="CREDIT", credit_type=bucket.wallet,
                wallet=bucket.wallet, source=bucket.source, total=bucket.total, used=bucket.used,
                frozen=bucket.frozen, available=bucket.available,
                starts_at=format_ms_or_none(bucket.starts_at_ms), expires_at=format_ms_or_none(bucket.expires_at_ms),
            )
        )  # fmt: skip
        key = (bucket.wallet, bucket.source)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _SourceSum(bucket.lsn)
        group.add(bucket.total, bucket.used, bucket.frozen, bucket.available, bucket.starts_at_ms, bucket.expires_at_ms)
    for key, totals in spent.valid_totals(customer, now_ms).items():
        group = groups.get(key)
        if group is None:
            group = groups[key] = _SourceSum(totals.lsn_min)
        group.add_spent(totals)
    wallets = _wallets(groups)
    balance = Balance(
        total=sum(w.total for w in wallets.values()),
        used=sum(w.used for w in wallets.values()),
        frozen=sum(w.frozen for w in wallets.values()),
        available=sum(w.available for w in wallets.values()),
    )
    assert balance.available == balance.total - balance.used - balance.frozen
    return CustomerResponse(
        id=customer.customer_id,
        name=customer.name,
        email=customer.email,
        metadata=customer.metadata,
        balance=balance,
        accounts=accounts,
        wallets=wallets,
        created_at=format_ms(customer.created_at_ms),
    )


def _lsn(bucket: Bucket) -> int:
    return bucket.lsn


class _SourceSum:
    """One (wallet, source) of the view: sums over its valid buckets, held or spent."""

    __slots__ = ("lsn_min", "total", "used", "frozen", "available", "starts_none", "starts_min", "expires_min")

    def __init__(self, lsn_min: int) -> None:
        self.lsn_min = lsn_min  # its oldest valid bucket: orders wallets and sources
        self.total = self.used = self.frozen = self.available = 0
        self.starts_none = False
        self.starts_min: int | None = None
        self.expires_min: int | None = None

    def add(self, total: int, used: int, frozen: int, available: int, starts: int | None, expires: int | None) -> None:
        self.total += total
        self.used += used
        self.frozen += frozen
        self.available += available
        if starts is None:
            self.starts_none = True
        elif self.starts_min is None or starts < self.starts_min:
            self.starts_min = starts
        if expires is not None and (self.expires_min is None or expires < self.expires_min):
            self.expires_min = expires

    def add_spent(self, totals: spent.SpentTotals) -> None:
        self.lsn_min = min(self.lsn_min, totals.lsn_min)
        self.add(totals.total, totals.total, 0, 0, totals.starts_min, totals.expires_min)
        self.starts_none = self.starts_none or totals.starts_none

    def view(self, name: str) -> WalletSource:
        """A source of several buckets reports starts_at = the earliest start (null if any has
        none: some of its credit was always active) and expires_at = the soonest expiry."""
        return WalletSource(
            source=name, total=self.total, used=self.used, frozen=self.frozen, available=self.available,
            starts_at=format_ms_or_none(None if self.starts_none else self.starts_min),
            expires_at=format_ms_or_none(self.expires_min),
        )  # fmt: skip


def _wallets(groups: dict[tuple[str, str], _SourceSum]) -> dict[str, Wallet]:
    """Wallets keyed in order of their oldest valid bucket, sources likewise (as a walk of the
    valid buckets in lsn order would meet them)."""
    by_wallet: dict[str, list[tuple[int, str, _SourceSum]]] = {}
    for (wallet, source), group in sorted(groups.items(), key=lambda item: item[1].lsn_min):
        by_wallet.setdefault(wallet, []).append((group.lsn_min, source, group))
    wallets = {}
    for name, sources in by_wallet.items():
        views = [group.view(source) for _, source, group in sources]
        wallets[name] = Wallet(
            total=sum(s.total for s in views),
            used=sum(s.used for s in views),
            frozen=sum(s.frozen for s in views),
            available=sum(s.available for s in views),
            sources=views,
        )
    return wallets


# -- ledger pages (velobase-api §1A.3, CONTRACT §3.12) ---------------------------------------------


class LedgerFilters(msgspec.Struct, frozen=True, gc=False):
    """The ledger query's filters (CONTRACT §2, §10.3), all exact matches but the time range
    `from_ms` <= created_at < `to_ms`. None: not filtered."""

    operation_type: str | None = None
    transaction_id: str | None = None
    wallet: str | None = None
    business_type: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None


NO_FILTERS: Final = LedgerFilters()
Descending = Callable[[int], Iterator[int]]  # end position -> matching positions < end, newest first


def ledger_page(
    state: LedgerState,
    project: str,
    customer_id: str,
    *,
    limit: int,
    cursor: str | None,
    operation_type: str | None = None,
    transaction_id: str | None = None,
    filters: LedgerFilters | None = None,
) -> LedgerPage | Rejected:
    """Newest first -> LedgerPage{items, total_count, has_more, next_cursor} | Rejected
    (customer_not_found 404, invalid_limit, invalid_operation_type, invalid_cursor).

    The cursor is the (lsn, i) key of the last entry shown, bound to project, customer and every
    filter (CONTRACT §7.9, §10.3); the next page holds the matches strictly older than it, so
    entries are never skipped or repeated, even with equal timestamps. `from_ms >= to_ms` is an
    empty page. Work per page, once the customer's indexes exist (above INDEX_ENTRIES_MIN
    entries): O(log n + limit) for no filter or one exact filter; + O(late entries) with a time
    range (see state.TimeIndex); two or more exact filters scan the smallest index's list."""
    if filters is None:
        filters = LedgerFilters(operation_type=operation_type, transaction_id=transaction_id)
    customer = _customer(state, project, customer_id)
    if customer is None:
        return _not_found(customer_id)
    # net/ checks these first; answering here too keeps any caller from reaching a 500.
    if not 1 <= limit <= LEDGER_PAGE_SIZE_MAX:
        return Rejected("invalid_limit", f"limit must be 1..{LEDGER_PAGE_SIZE_MAX}")
    if filters.operation_type is not None and filters.operation_type not in OPERATION_TYPES:
        return Rejected("invalid_operation_type", "unknown operation_type")
    binding = _ledger_binding(project, customer_id, filters)
    entries = customer.entries
    end = len(entries)
    if cursor is not None:
        key = cursors.decode(cursor, binding)
        if key is None:
            return Rejected("invalid_cursor", "malformed cursor, or made for another listing")
        end = bisect_left(entries, key, key=_entry_key)
    total, descending = _matches(customer, filters)
    found = list(islice(descending(end), limit + 1))
    has_more = len(found) > limit
    shown = found[:limit]
    items = [_entry_view(customer, entries[p]) for p in shown]
    next_cursor = None
    if has_more:
        last = entries[shown[-1]]
        next_cursor = cursors.encode(last.lsn, last.i, binding)
    return LedgerPage(items=items, total_count=total, has_more=has_more, next_cursor=next_cursor)


def _entry_key(entry: LedgerEntry) -> tuple[int, int]:
    return (entry.lsn, entry.i)


def _exact(filters: LedgerFilters) -> list[tuple[str, str]]:
    """The exact-match filters given, as (entry attribute, value)."""
    named = (
        ("op", filters.operation_type), ("transaction_id", filters.transaction_id),
        ("wallet", filters.wallet), ("business_type", filters.business_type),
    )  # fmt: skip
    return [(name, value) for name, value in named if value is not None]


def _predicate(exact: list[tuple[str, str]], filters: LedgerFilters) -> Callable[[LedgerEntry], bool]:
    low = filters.from_ms
    high = filters.to_ms

    def matches(entry: LedgerEntry) -> bool:
        for name, value in exact:
            if getattr(entry, name) != value:
                return False
        if low is not None and entry.created_at_ms < low:
            return False
        return high is None or entry.created_at_ms < high

    return matches


def _over(positions: Sequence[int]) -> tuple[int, Descending]:
    def descending(end: int) -> Iterator[int]:
        for k in range(bisect_left(positions, end) - 1, -1, -1):
            yield positions[k]

    return len(positions), descending


def _matches(customer: CustomerState, filters: LedgerFilters) -> tuple[int, Descending]:
    """(total_count, newest-first positions below an end) of the entries matching `filters`."""
    entries = customer.entries
    exact = _exact(filters)
    timed = filters.from_ms is not None or filters.to_ms is not None
    if timed and filters.from_ms is not None and filters.to_ms is not None and filters.from_ms >= filters.to_ms:
        return _over(())
    if not exact and not timed:
        return _over(range(len(entries)))
    matches = _predicate(exact, filters)
    if customer.op_positions is None:
        assert len(entries) <= INDEX_ENTRIES_MIN  # small: a scan is as cheap as an index
        return _over([p for p, e in enumerate(entries) if matches(e)])
    lists = [_index_list(customer, name, value) for name, value in exact]
    base: Sequence[int] = min(lists, key=len) if lists else range(len(entries))
    if len(lists) > 1:  # bounded by the smallest list
        base = [p for p in base if matches(entries[p])]
    if not timed:
        return _over(base)
    return _timed(customer, base, matches, filters)


def _index_list(customer: CustomerState, name: str, value: str) -> Sequence[int]:
    assert customer.op_positions is not None and customer.txn_positions is not None
    assert customer.filter_positions is not None
    if name == "op":
        return customer.op_positions.get(value, ())
    if name == "transaction_id":
        return customer.txn_positions.get(value, ())
    kind = BY_WALLET if name == "wallet" else BY_BUSINESS_TYPE
    return customer.filter_positions.get((kind, value), ())


def _timed(
    customer: CustomerState, base: Sequence[int], matches: Callable[[LedgerEntry], bool], filters: LedgerFilters
) -> tuple[int, Descending]:
    """The time range over `base` (ascending positions that match every exact filter), with
    the customer's TimeIndex: a window by bisect, corrected by the late entries only."""
    entries = customer.entries
    index = customer.time_index
    assert index is not None
    low = 0 if filters.from_ms is None else bisect_left(index.high, filters.from_ms)
    high = len(entries) if filters.to_ms is None else bisect_left(index.high, filters.to_ms)
    a, b = bisect_left(base, low), bisect_left(base, high)
    in_base = type(base) is range
    skipped: set[int] = set()  # late entries inside the window that fall outside the range
    extra: list[int] = []  # late entries past the window that fall inside it (ascending)
    for p in index.late:  # bounded by the number of late entries
        if not in_base:
            k = bisect_left(base, p)
            if k == len(base) or base[k] != p:
                continue
        if low <= p < high:
            if not matches(entries[p]):
                skipped.add(p)
        elif p >= high and matches(entries[p]):
            extra.append(p)
    total = (b - a) - len(skipped) + len(extra)

    def descending(end: int) -> Iterator[int]:
        k = min(b, bisect_left(base, end)) - 1
        j = bisect_left(extra, end) - 1
        while k >= a or j >= 0:
            if j >= 0 and (k < a or extra[j] > base[k]):
                yield extra[j]
                j -= 1
                continue
            p = base[k]
            k -= 1
            if p not in skipped:
                yield p

    return total, descending


def _entry_view(customer: CustomerState, entry: LedgerEntry) -> LedgerEntryView:
    refund_id = None
    if entry.op == REFUND and customer.refund_lsns is not None:
        refund_id = customer.refund_lsns.get(entry.lsn)
    return LedgerEntryView(
        id=entry_id(entry.lsn, entry.i),
        operation_type=entry.op,
        amount=entry.amount,
        wallet=entry.wallet,
        source=entry.source,
        credit_type=entry.wallet,
        transaction_id=entry.transaction_id,
        business_type=entry.business_type,
        description=entry.description,
        account_id=account_id(entry.bucket_lsn),
        status="COMPLETED",
        created_at=format_ms(entry.created_at_ms),
        refund_id=refund_id,
    )


def _ledger_binding(project: str, customer_id: str, filters: LedgerFilters) -> bytes:
    """The ledger page's cursor binding (engine/core/cursors.py): its filters, those added by
    §10.3 as `later` parts, so cursors made before them stay valid."""
    later = (filters.wallet, filters.business_type, filters.from_ms, filters.to_ms)
    return cursors.binding(project, customer_id, (filters.operation_type, filters.transaction_id), later)


# -- lookups ----------------------------------------------------------------------------------


def customer_last_lsn(state: LedgerState, project: str, customer_id: str) -> int:
    """The LSN of the last change to the customer (0 if unknown): what a read must wait for."""
    customer = _customer(state, project, customer_id)
    return 0 if customer is None else customer.last_lsn


def bucket_owner(state: LedgerState, project: str, account: str) -> str | None:
    """The customer owning the bucket `account` (an `acc_<lsn>` id) in the project, or None."""
    project_state = state.projects.get(project)
    bucket_lsn = parse_account_id(account)
    return None if project_state is None or bucket_lsn is None else project_state.bucket_owner(bucket_lsn)


def transaction_owner(state: LedgerState, project: str, transaction_id: str) -> str | None:
    """The customer owning a freeze/deduct `transaction_id` in the project (CONTRACT §3.9)."""
    project_state = state.projects.get(project)
    return None if project_state is None else project_state.txn_owner.get(transaction_id)


def find_api_key(state: LedgerState, key_hash: str) -> ApiKey | None:
    """The key record (key_id, key_hash, project, revoked) for a SHA-256 hex, or None."""
    return state.api_keys.get(key_hash)


def list_api_keys(state: LedgerState) -> list[ApiKey]:
    """Every key, in creation order."""
    return list(state.api_keys.values())


def customer_count(state: LedgerState) -> int:
    return sum(len(project.customers) for project in state.projects.values())
