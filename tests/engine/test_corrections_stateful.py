"""Stateful property test of refunds and voids (CONTRACT §10) against a small reference model.

What: random histories of deposits (some expiring), deducts, freezes settled with and without
overage, unfreezes, refunds (partial, full, omitted amount, reused ids) and voids (reused ids,
spent and expired buckets), with time jumps and timers fired as the runtime fires them.
How: the model keeps, per charge, what it charged and what was refunded, and per id what each
refund / void was; it predicts every refund and void outcome code (replay, no_refundable_charge,
refund_exceeds_refundable, account_not_found, account_already_voided, transaction_conflict).
After every step, per bucket, from the ledger entries (independent of the bucket's counters):

    deposited (GRANT) == available + frozen + charged (CONSUME) + expired (EXPIRE) + voided (VOID)
                         - refunded (REFUND)

every counter >= 0, no charge refunded beyond what it charged, check_invariants is clean, a
replay or rejection changes nothing (Driver), and both the recorded history replayed into a
fresh state and a codec round trip give the same digest.
How it could fail: money created or lost by a refund or void, a refund beyond its charge, a
wrong code, a replay that writes, a non-determinism. TALLY_LONG=1 runs a larger campaign.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import msgspec
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core.codec import decode_state, encode_state
from engine.core.commands import Consume, Deduct, Deposit, Freeze, Refund, Unfreeze, Void
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.ledger import apply
from engine.core.results import Applied, Rejected
from engine.core.queries import customer_view
from engine.core.state import LedgerState, bucket_valid_at
from engine.core.timers import due_commands
from tests.engine.helpers import T0_MS, Driver, P
from tests.engine.test_ledger_stateful import _reference_wallets

LONG = os.environ.get("TALLY_LONG") == "1"
CUSTOMERS = ("c0", "c1")
TIDS = tuple(f"t{k}" for k in range(6))
RIDS = tuple(f"r{k}" for k in range(4))
VIDS = tuple(f"v{k}" for k in range(3))
AMOUNTS = st.sampled_from([1, 3, 10, 25, 60])


@dataclass
class Charge:
    customer_id: str
    kind: str  # "deduct" | "freeze"
    amount: int
    charged: int = 0  # deduct: amount; freeze: consumed amount once CONSUMED
    refunded: int = 0
    settled: bool = False


@dataclass
class Model:
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # rid -> (tid, amount)
    voids: dict[str, str] = field(default_factory=dict)  # vid -> account_id
    voided_accounts: set[str] = field(default_factory=set)
    accounts: dict[str, str] = field(default_factory=dict)  # account_id -> customer


class CorrectionsMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.d = Driver()
        self.now = T0_MS
        self.m = Model()
        for cid in CUSTOMERS:  # start with credit, so debits (and so refunds) mostly succeed
            self.deposit(cid, 60, None)

    def fire(self, customer_id: str | None) -> None:
        """The customer's due timers, as the runtime applies them before a command."""
        if customer_id is not None:
            for timer in due_commands(self.d.state, P, customer_id, self.now):
                result = self.d.run(timer)
                assert isinstance(result, Applied) and result.logged

    def run(self, command):  # type: ignore[no-untyped-def]
        self.fire(getattr(command, "customer_id", None))
        return self.d.run(msgspec.structs.replace(command, at_ms=self.now))

    @rule(delta_ms=st.sampled_from([0, 1, 500, 5000]))
    def advance_time(self, delta_ms: int) -> None:
        self.now += delta_ms

    @rule(cid=st.sampled_from(CUSTOMERS), amount=AMOUNTS, expires=st.sampled_from([None, 1000, 3000]))
    def deposit(self, cid, amount, expires) -> None:
        result = self.run(Deposit(at_ms=0, project=P, customer_id=cid, amount=amount,
                                  expires_at_ms=None if expires is None else self.now + expires))  # fmt: skip
        assert isinstance(result, Applied) and result.logged
        self.m.accounts[result.body.account_id] = cid

    @rule(cid=st.sampled_from(CUSTOMERS), tid=st.sampled_from(TIDS), amount=AMOUNTS, deduct=st.sampled_from([True, True, False]))
    def debit(self, cid, tid, amount, deduct) -> None:
        kind = Deduct if deduct else Freeze
        result = self.run(kind(at_ms=0, project=P, customer_id=cid, amount=amount, transaction_id=tid))
        if isinstance(result, Applied) and result.logged:
            assert tid not in self.m.charges
            self.m.charges[tid] = Charge(cid, "deduct" if deduct else "freeze", amount, amount if deduct else 0)

    @rule(tid=st.sampled_from(TIDS), actual=st.sampled_from([None, 0, 5, 40, 100]), unfreeze=st.booleans())
    def settle(self, tid, actual, unfreeze) -> None:
        charge = self.m.charges.get(tid)
        if charge is None or charge.kind != "freeze" or charge.settled:
            return
        command = (Unfreeze(at_ms=0, project=P, customer_id=charge.customer_id, transaction_id=tid) if unfreeze else
                   Consume(at_ms=0, project=P, customer_id=charge.customer_id, transaction_id=tid, actual_amount=actual))  # fmt: skip
        result = self.run(command)
        if isinstance(result, Applied) and result.logged:
            charge.settled = True
            charge.charged = 0 if unfreeze else charge.amount if actual is None else actual

    def _refund_rules(self, tid: str, amount: int | None) -> str | None:
        charge = self.m.charges.get(tid)
        refundable = 0 if charge is None else charge.charged - charge.refunded
        if refundable == 0:
            return "no_refundable_charge"
        if amount is not None and amount > refundable:
            return "refund_exceeds_refundable"
        return None

    @rule(rid=st.sampled_from(RIDS), index=st.integers(0, 20), amount=st.sampled_from([None, 1, 4, 30, 100]))
    def refund(self, rid, index, amount) -> None:
        tids = sorted(self.m.charges) + ["unknown"]
        tid = tids[index % len(tids)]
        charge = self.m.charges.get(tid)
        cid = None if charge is None else charge.customer_id
        result = self.run(Refund(at_ms=0, project=P, customer_id=cid, refund_id=rid, transaction_id=tid, amount=amount))
        earlier = self.m.refunds.get(rid)
        if earlier is not None and earlier[0] == tid and amount in (None, earlier[1]):
            assert isinstance(result, Applied) and not result.logged and result.body.is_idempotent_replay
            return
        expected = self._refund_rules(tid, amount) or ("transaction_conflict" if earlier is not None else None)
        if expected is not None:
            assert isinstance(result, Rejected) and result.code == expected, (result, expected)
            event(f"refund {expected}")
            return
        assert isinstance(result, Applied) and result.logged, result
        assert charge is not None
        refunded = charge.charged - charge.refunded if amount is None else amount
        assert result.body.refunded_amount == refunded == sum(x.amount for x in result.body.refund_details)
        charge.refunded += refunded
        assert result.body.refundable_amount == charge.charged - charge.refunded
        self.m.refunds[rid] = (tid, refunded)
        event("refund applied")

    @rule(vid=st.sampled_from(VIDS), index=st.integers(0, 20))
    def void(self, vid, index) -> None:
        accounts = sorted(self.m.accounts) + ["acc_99999"]
        account = accounts[index % len(accounts)]
        cid = self.m.accounts.get(account)
        bucket = None
        if cid is not None:
            self.fire(cid)
            bucket = self.d.state.projects[P].customers[cid].bucket_by_lsn(int(account[4:]))
        before = None if bucket is None else (0 if bucket.is_expired else bucket.available)
        result = self.run(Void(at_ms=0, project=P, customer_id=cid, void_id=vid, account_id=account))
        earlier = self.m.voids.get(vid)
        if earlier == account:
            assert isinstance(result, Applied) and not result.logged and result.body.is_idempotent_replay
            return
        if cid is None:
            expected: str | None = "account_not_found"
        elif account in self.m.voided_accounts:
            expected = "account_already_voided"
        else:
            expected = None if earlier is None else "transaction_conflict"
        if expected is not None:
            assert isinstance(result, Rejected) and result.code == expected, (result, expected)
            return
        assert isinstance(result, Applied) and result.logged, result
        assert bucket is not None and bucket.is_expired and bucket.available == 0
        assert result.body.voided_amount == before
        self.m.voids[vid] = account
        event("void applied")
        self.m.voided_accounts.add(account)

    @invariant()
    def money_is_conserved_per_bucket(self) -> None:
        project = self.d.state.projects.get(P)
        for customer in () if project is None else project.customers.values():
            sums: dict[tuple[str, int], int] = defaultdict(int)
            for entry in customer.entries:
                sums[(entry.op, entry.bucket_lsn)] += entry.amount
            for b in customer.buckets:
                s = lambda op: sums[(op, b.lsn)]  # noqa: E731
                assert min(b.used, b.frozen, b.expired, b.available) >= 0, b
                assert s("GRANT") == b.available + b.frozen + s("CONSUME") + s("EXPIRE") + s("VOID") - s("REFUND"), b
                assert s("REFUND") <= s("CONSUME"), b
        for tid, charge in self.m.charges.items():
            assert 0 <= charge.refunded <= charge.charged, (tid, charge)
        assert check_invariants(self.d.state) == []  # includes the bucket indexes (§7.11)

    @invariant()
    def view_counts_every_valid_bucket(self) -> None:
        """CONTRACT §7.11: refunds into spent buckets, voids and expiry keep the view's numbers
        those of a walk over every valid bucket; accounts list only buckets holding credit."""
        project = self.d.state.projects.get(P)
        for customer in () if project is None else project.customers.values():
            now = self.now
            view = customer_view(self.d.state, P, customer.customer_id, now)
            assert view.wallets == _reference_wallets(customer, now)
            holding = [b for b in customer.buckets if bucket_valid_at(b, now) and b.total - b.used > 0]
            assert [a.account_id for a in view.accounts] == [b.account_id for b in holding]

    @invariant()
    def history_and_snapshot_reproduce_the_digest(self) -> None:
        expected = digest(self.d.state)
        fresh = LedgerState()
        for lsn, command in self.d.history:
            apply(fresh, lsn, command)
        assert digest(fresh) == expected
        assert digest(decode_state(encode_state(self.d.state))) == expected


CorrectionsMachine.TestCase.settings = settings(
    max_examples=400 if LONG else 60,
    stateful_step_count=80 if LONG else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_corrections_model = CorrectionsMachine.TestCase
