"""Stateful property test of engine.core.ledger against a small reference model (issue 3).

What: random histories over several customers, wallets, validity windows, TTLs, replays,
conflicting ids and time jumps; timers are fired the way the runtime fires them
(`pop_due_customers` + `due_commands`, and the customer's due timers before each command).
How: a model keeps what each transaction id is (kind, owner, amount, selection, status) and the
money each customer deposited / spent / holds frozen; it predicts every outcome code, and the
customer view (a separate code path from allocation) decides whether a debit must fit.
After every step: money is conserved per bucket and per customer (deposited = available + frozen
+ used + expired), nothing is negative, a replay or a rejection leaves the digest unchanged
(Driver), replaying the recorded (lsn, command) history into a fresh state and a codec round trip
both give the same digest, and no timer at or before now is left unfired.
How it could fail: any money leak, a wrong outcome code, a replay that writes, a non-determinism.
TALLY_LONG=1 runs a much larger campaign.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core.codec import decode_state, encode_state
from engine.core.codes import status_of
from engine.core.commands import (
    AutoSettle,
    Consume,
    Deduct,
    Deposit,
    ExpireBuckets,
    Freeze,
    Unfreeze,
)
from engine.core.digest import digest
from engine.core.ledger import apply
from engine.core.invariants import check_bucket_index
from engine.core.limits import AMOUNT_MAX
from engine.core.queries import customer_view, ledger_page
from engine.core.freeze_queries import open_freezes
from engine.core.results import Applied, FreezePage, FreezeView, Rejected, Wallet, WalletSource
from engine.core.state import FreezeRecord, LedgerState, bucket_valid_at
from engine.core.timefmt import format_ms_or_none
from engine.core.timers import due_commands, next_due_ms, pop_due_customers
from tests.engine.helpers import T0_MS, Driver, P

LONG = os.environ.get("TALLY_LONG") == "1"
CUSTOMERS = ("c0", "c1", "c2")
WALLETS = ("default", "w1", "w2")
TIDS = tuple(f"t{k}" for k in range(5))
KEYS = ("k0", "k1", "k2")
AMOUNTS = st.sampled_from([1, 2, 7, 30, 50, 120, AMOUNT_MAX // 2])
SELECTIONS = st.sampled_from([(None, None), (("default",), None), (("w1", "w2"), None), (None, "w1"), (None, "default")])


@dataclass
class Txn:
    kind: str  # "freeze" | "deduct"
    customer_id: str
    amount: int
    credit_types: tuple[str, ...] | None
    wallet: str | None
    status: str = "FROZEN"  # deducts: "DONE"
    auto: bool = False
    consumed: int = 0
    ttl_kind: str | None = None


@dataclass
class Money:
    deposited: int = 0
    used: int = 0
    frozen: int = 0


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.d = Driver()
        self.now = T0_MS
        self.txns: dict[str, Txn] = {}
        self.keys: dict[str, tuple[str, Deposit, object]] = {}  # key -> (owner, command, body)
        self.money: dict[str, Money] = {}
        self.successes: list[tuple[object, object]] = []  # (command, body) to replay
        for cid in CUSTOMERS[:2]:  # most histories should start with customers that can spend
            self.deposit(cid, 100, "default", "default", None, None, 3000)
            self.deposit(cid, 100, "w1", "s1", None, None, None)

    # -- helpers ---------------------------------------------------------------------------

    def fire(self, customer_id: str) -> None:
        for timer in self.d.tick(customer_id, self.now):
            if isinstance(timer, AutoSettle):
                txn = self.txns[timer.transaction_id]
                assert txn.status == "FROZEN"
                money = self.money[customer_id]
                money.frozen -= txn.amount
                txn.auto = True
                if txn.ttl_kind == "unfreeze":
                    txn.status = "UNFROZEN"
                else:
                    txn.status, txn.consumed = "CONSUMED", txn.amount
                    money.used += txn.amount

    def available(self, customer_id: str, credit_types, wallet) -> int:
        view = customer_view(self.d.state, P, customer_id, self.now)
        assert not isinstance(view, Rejected)
        return sum(
            w.available for name, w in view.wallets.items()
            if (wallet is None or name == wallet) and (credit_types is None or name in credit_types)
        )  # fmt: skip

    def known(self, customer_id: str) -> bool:
        return customer_id in self.money

    # -- rules -----------------------------------------------------------------------------

    @rule(delta_ms=st.sampled_from([0, 1, 999, 1000, 2500, 5000, 60_000]), globally=st.booleans())
    def advance_time(self, delta_ms: int, globally: bool) -> None:
        self.now += delta_ms
        if globally:  # the runtime's timer task; otherwise the next command/read of each customer
            for project, customer_id in pop_due_customers(self.d.state, self.now):
                assert project == P
                self.fire(customer_id)

    @rule(
        cid=st.sampled_from(CUSTOMERS), amount=AMOUNTS, wallet=st.sampled_from(WALLETS),
        source=st.sampled_from(["default", "s1"]), key=st.sampled_from((None,) + KEYS),
        starts=st.sampled_from([None, -1000, 2000]), expires=st.sampled_from([None, -1, 1000, 3000]),
    )  # fmt: skip
    def deposit(self, cid, amount, wallet, source, key, starts, expires) -> None:
        if self.known(cid):
            self.fire(cid)
        starts_ms = None if starts is None else self.now + starts
        expires_ms = None if expires is None else self.now + expires
        cmd = Deposit(
            at_ms=self.now, project=P, customer_id=cid, amount=amount, wallet=wallet, source=source,
            starts_at_ms=starts_ms, expires_at_ms=expires_ms, idempotency_key=key, description="d",
        )  # fmt: skip
        result = self.d.run(cmd)
        if starts_ms is not None and expires_ms is not None and expires_ms <= starts_ms:
            assert isinstance(result, Rejected) and result.code == "invalid_datetime_range"
            return
        if key in self.keys:
            owner, original, body = self.keys[key]
            same = (original.customer_id, original.amount, original.wallet, original.source,
                    original.starts_at_ms, original.expires_at_ms) == (cid, amount, wallet, source, starts_ms, expires_ms)  # fmt: skip
            if same:
                assert result == Applied(msgspec.structs.replace(body, is_idempotent_replay=True), False)
            else:
                assert isinstance(result, Rejected) and result.code == "transaction_conflict", result
            return
        if isinstance(result, Rejected):
            assert result.code == "amount_too_large", result
            customer = self.d.state.projects[P].customers[cid]
            assert customer.open_total + amount > AMOUNT_MAX
            return
        assert result.logged and result.body.added_amount == amount
        self.money.setdefault(cid, Money()).deposited += amount
        if key is not None:
            self.keys[key] = (cid, cmd, result.body)
        self.successes.append((cmd, result.body))

    @rule(cid=st.sampled_from(CUSTOMERS), tid=st.sampled_from(TIDS), amount=AMOUNTS, sel=SELECTIONS,
          ttl=st.sampled_from([None, ("unfreeze", 1), ("unfreeze", 5), ("consume", 1), ("consume", 5)]),
          deduct=st.booleans())  # fmt: skip
    def debit(self, cid, tid, amount, sel, ttl, deduct) -> None:
        credit_types, wallet = sel
        if deduct:
            cmd = Deduct(at_ms=self.now, project=P, customer_id=cid, amount=amount, transaction_id=tid,
                         credit_types=credit_types, wallet=wallet)  # fmt: skip
        else:
            cmd = Freeze(
                at_ms=self.now, project=P, customer_id=cid, amount=amount, transaction_id=tid,
                credit_types=credit_types, wallet=wallet,
                unfreeze_after_s=ttl[1] if ttl and ttl[0] == "unfreeze" else None,
                consume_after_s=ttl[1] if ttl and ttl[0] == "consume" else None,
            )  # fmt: skip
        if not self.known(cid):
            assert self.d.rejected(cmd).code == "customer_not_found"
            return
        self.fire(cid)
        expected_kind = "deduct" if deduct else "freeze"
        available = self.available(cid, credit_types, wallet)
        result = self.d.run(cmd)
        event(f"{type(cmd).__name__} -> {getattr(result, 'code', None) or ('logged' if result.logged else 'replay')}")
        txn = self.txns.get(tid)
        if txn is not None:
            norm = None if credit_types is None else tuple(sorted(set(credit_types)))
            same = (txn.customer_id, txn.kind, txn.amount, txn.credit_types, txn.wallet) == (
                cid, expected_kind, amount, norm, wallet)  # fmt: skip
            if same:
                assert isinstance(result, Applied) and not result.logged and result.body.is_idempotent_replay
            else:
                assert isinstance(result, Rejected) and (status_of(result.code), result.code) == (409, "transaction_conflict")
            return
        if available < amount:
            assert isinstance(result, Rejected) and result.code.startswith("insufficient_balance"), result
            return
        assert isinstance(result, Applied) and result.logged, result
        norm = None if credit_types is None else tuple(sorted(set(credit_types)))
        txn = self.txns[tid] = Txn(expected_kind, cid, amount, norm, wallet, ttl_kind=ttl[0] if ttl else None)
        money = self.money[cid]
        if deduct:
            txn.status = "DONE"
            money.used += amount
        else:
            money.frozen += amount
        details = result.body.deduct_details if deduct else result.body.freeze_details
        assert sum(x.amount for x in details) == amount and all(x.amount > 0 for x in details)
        self.successes.append((cmd, result.body))

    @rule(index=st.integers(0, 50), unknown=st.integers(0, 9), actual=st.sampled_from([None, 0, 1, 30, 60, 200]),
          unfreeze=st.booleans())  # fmt: skip
    def settle(self, index, unknown, actual, unfreeze) -> None:
        """Mostly ids in use (any state), sometimes an unknown one."""
        used = list(self.txns)
        tid = "zz" if unknown == 0 or not used else used[index % len(used)]
        txn = self.txns.get(tid)
        owner = None if txn is None else txn.customer_id
        if owner is not None:
            self.fire(owner)
        if unfreeze:
            cmd = Unfreeze(at_ms=self.now, project=P, customer_id=owner, transaction_id=tid)
        else:
            cmd = Consume(at_ms=self.now, project=P, customer_id=owner, transaction_id=tid, actual_amount=actual)
        available = 0 if txn is None else self.available(txn.customer_id, txn.credit_types, txn.wallet)
        result = self.d.run(cmd)
        event(f"{type(cmd).__name__} -> {getattr(result, 'code', None) or ('logged' if result.logged else 'replay')}")
        code = result.code if isinstance(result, Rejected) else None
        if txn is None or txn.kind == "deduct":
            assert code == ("no_unfreezable_records" if unfreeze else "no_consumable_freeze_records")
        elif unfreeze:
            self._check_unfreeze(txn, result)
        else:
            self._check_consume(txn, actual, available, result)

    def _check_unfreeze(self, txn: Txn, result) -> None:
        if txn.status == "CONSUMED":
            assert isinstance(result, Rejected) and result.code == "no_unfreezable_records"
        elif txn.status == "UNFROZEN":
            assert isinstance(result, Applied) and not result.logged and result.body.is_idempotent_replay
        else:
            assert isinstance(result, Applied) and result.logged and result.body.unfrozen_amount == txn.amount
            txn.status = "UNFROZEN"
            self.money[txn.customer_id].frozen -= txn.amount

    def _check_consume(self, txn: Txn, actual, available: int, result) -> None:
        if txn.status == "CONSUMED":
            if actual is None or actual == txn.consumed:
                assert isinstance(result, Applied) and not result.logged and result.body.consumed_amount == txn.consumed
            else:
                assert isinstance(result, Rejected) and result.code == "freeze_records_already_consumed"
        elif txn.status == "UNFROZEN":
            expected = "freeze_auto_unfrozen" if txn.auto else "no_consumable_freeze_records"
            assert isinstance(result, Rejected) and result.code == expected
        else:
            charge = txn.amount if actual is None else actual
            if charge - txn.amount > available:
                assert isinstance(result, Rejected) and result.code.startswith("insufficient_balance"), result
                return
            assert isinstance(result, Applied) and result.logged, result
            body = result.body
            assert body.consumed_amount == charge
            assert body.returned_amount == (txn.amount - charge if charge < txn.amount else None)
            assert body.overage_amount == (charge - txn.amount if charge > txn.amount else None)
            assert sum(x.amount for x in body.consume_details) == charge
            txn.status, txn.consumed = "CONSUMED", charge
            money = self.money[txn.customer_id]
            money.frozen -= txn.amount
            money.used += charge

    @rule(index=st.integers(min_value=0, max_value=10**6))
    def replay_success(self, index: int) -> None:
        """Send an earlier successful deposit/freeze/deduct again, later: always a pure replay."""
        if not self.successes:
            return
        cmd, body = self.successes[index % len(self.successes)]
        if isinstance(cmd, Deposit) and cmd.idempotency_key is None:
            return  # never deduplicated (CONTRACT §3.9)
        self.fire(cmd.customer_id)
        result = self.d.run(msgspec.structs.replace(cmd, at_ms=self.now))
        assert result == Applied(msgspec.structs.replace(body, is_idempotent_replay=True), False)

    @rule(cid=st.sampled_from(CUSTOMERS), tid=st.sampled_from(TIDS))
    def stale_timers(self, cid, tid) -> None:
        """Timers that are not (or no longer) due are no-ops."""
        if self.known(cid):
            self.fire(cid)
        for cmd in (ExpireBuckets(at_ms=self.now, project=P, customer_id=cid),
                    AutoSettle(at_ms=self.now, project=P, customer_id=cid, transaction_id=tid)):  # fmt: skip
            assert self.d.run(cmd) == Applied(None, False)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def money_is_conserved(self) -> None:
        project = self.d.state.projects.get(P)
        customers = {} if project is None else project.customers
        assert set(customers) == set(self.money)
        for cid, customer in customers.items():
            money = self.money[cid]
            totals = [0, 0, 0, 0, 0]  # total, used, frozen, expired, available
            for b in customer.buckets:
                available = b.total - b.used - b.frozen - b.expired
                assert min(b.total, b.used, b.frozen, b.expired, available) >= 0, b
                assert not b.is_expired or available == 0, b
                for k, v in enumerate((b.total, b.used, b.frozen, b.expired, available)):
                    totals[k] += v
            assert totals[0] == money.deposited == totals[1] + totals[2] + totals[3] + totals[4]
            assert (totals[1], totals[2]) == (money.used, money.frozen)
            view = customer_view(self.d.state, P, cid, self.now)
            assert view.wallets == _reference_wallets(customer, self.now)  # §7.11: same numbers
            holding = [b for b in customer.buckets if bucket_valid_at(b, self.now) and b.total - b.used > 0]
            assert [a.account_id for a in view.accounts] == [b.account_id for b in holding]
            assert check_bucket_index(customer) == []
            b = view.balance
            assert b.available == b.total - b.used - b.frozen and min(b.total, b.used, b.frozen, b.available) >= 0
            page = ledger_page(self.d.state, P, cid, limit=100, cursor=None, operation_type="EXPIRE", transaction_id=None)
            if page.total_count <= 100:
                assert sum(e.amount for e in page.items) == totals[3]

    @invariant()
    def history_and_snapshot_reproduce_the_digest(self) -> None:
        expected = digest(self.d.state)
        fresh = LedgerState()
        for lsn, cmd in self.d.history:
            result = apply(fresh, lsn, cmd)
            assert isinstance(result, Applied) and result.logged
        assert digest(fresh) == expected
        restored = decode_state(encode_state(self.d.state))
        assert digest(restored) == expected
        assert restored.last_lsn == self.d.state.last_lsn

    @invariant()
    def freezes_match_model(self) -> None:
        for tid, txn in self.txns.items():
            record = self.d.state.projects[P].customers[txn.customer_id].txns[tid]
            if txn.kind == "freeze":
                assert isinstance(record, FreezeRecord)
                assert ("FROZEN", "CONSUMED", "UNFROZEN")[record.status] == txn.status
                assert record.auto == txn.auto

    @invariant()
    def open_freezes_list_the_frozen_ones(self) -> None:
        """GET .../freezes (engine/core/freeze_queries.py): paged by 2, exactly the model's FROZEN
        freezes, newest first, their amounts summing to the frozen money, TTL action as given;
        the same pages from a codec round trip (a snapshot keeps the order)."""
        restored = decode_state(encode_state(self.d.state))
        for cid, money in self.money.items():
            pages = [_all_open_freezes(state, cid) for state in (self.d.state, restored)]
            assert pages[0] == pages[1]
            listed = pages[0]
            frozen = [tid for tid, txn in self.txns.items() if txn.kind == "freeze" and txn.customer_id == cid
                      and txn.status == "FROZEN"]  # fmt: skip
            assert [item.transaction_id for item in listed] == frozen[::-1]  # ids made in LSN order
            assert sum(item.amount for item in listed) == money.frozen
            for item in listed:
                assert item.settle_action == self.txns[item.transaction_id].ttl_kind
                assert (item.settle_at is None) == (item.settle_action is None)

    @invariant()
    def timer_heap_points_at_the_next_timer(self) -> None:
        due = next_due_ms(self.d.state)
        for cid in self.money:
            pending = due_commands(self.d.state, P, cid, 2**62)
            if pending:
                assert due is not None and due <= pending[0].at_ms


LedgerMachine.TestCase.settings = settings(
    max_examples=3000 if LONG else 400,
    stateful_step_count=100 if LONG else 50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerStateful = LedgerMachine.TestCase


def _all_open_freezes(state: LedgerState, cid: str) -> list[FreezeView]:
    items: list[FreezeView] = []
    cursor = None
    for _ in range(100):  # bounded
        page = open_freezes(state, P, cid, limit=2, cursor=cursor)
        assert isinstance(page, FreezePage), page
        items += page.items
        if not page.has_more:
            assert page.total_count == len(items)
            return items
        cursor = page.next_cursor
    raise AssertionError("freeze paging did not end")


def _reference_wallets(customer, now_ms):  # type: ignore[no-untyped-def]
    """The wallets as customer_view built them before the spent index (CONTRACT §7.11): a walk
    of every valid bucket in lsn order, spent ones included."""
    grouped: dict = {}
    for bucket in customer.buckets:
        if bucket_valid_at(bucket, now_ms):
            grouped.setdefault(bucket.wallet, {}).setdefault(bucket.source, []).append(bucket)
    wallets = {}
    for name, sources in grouped.items():
        views = []
        for source, buckets in sources.items():
            starts = [b.starts_at_ms for b in buckets]
            expiries = [b.expires_at_ms for b in buckets if b.expires_at_ms is not None]
            views.append(WalletSource(
                source=source, total=sum(b.total for b in buckets), used=sum(b.used for b in buckets),
                frozen=sum(b.frozen for b in buckets), available=sum(b.available for b in buckets),
                starts_at=format_ms_or_none(None if None in starts else min(starts)),
                expires_at=format_ms_or_none(min(expiries) if expiries else None),
            ))  # fmt: skip
        wallets[name] = Wallet(
            total=sum(v.total for v in views), used=sum(v.used for v in views), frozen=sum(v.frozen for v in views),
            available=sum(v.available for v in views), sources=views,
        )  # fmt: skip
    return wallets
