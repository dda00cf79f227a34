"""Engine micro-benchmarks: `apply` alone, no I/O (issue 3).

Run: .venv/bin/pytest -n 0 bench/test_engine_bench.py --benchmark-enable (-n 0: pytest-benchmark
disables itself under xdist, which addopts turns on)
Target (reported, not asserted): >= 200,000 applies/s for the 1-bucket deduct on one core.
Without --benchmark-enable (the default config) each body runs once as a plain test.
"""

from __future__ import annotations

import itertools

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from engine.core.commands import Consume, Deduct, Deposit, Freeze
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.state import LedgerState

T_MS = 1_775_563_200_000


def _customer_with_buckets(buckets: int) -> LedgerState:
    state = LedgerState()
    for k in range(buckets):
        # Distinct expiries so the allocation order is non-trivial; enough credit for any run.
        cmd = Deposit(at_ms=T_MS, project="p", customer_id="c", amount=2**40, expires_at_ms=T_MS + 10**9 + k)
        result = apply(state, state.last_lsn + 1, cmd)
        assert type(result) is Applied and result.logged
    return state


@pytest.mark.parametrize("buckets", [1, 100])
def test_bench_deduct(benchmark: BenchmarkFixture, buckets: int) -> None:
    state = _customer_with_buckets(buckets)
    ids = (f"tx{k}" for k in itertools.count())

    def one() -> None:
        cmd = Deduct(at_ms=T_MS, project="p", customer_id="c", amount=3, transaction_id=next(ids))
        result = apply(state, state.last_lsn + 1, cmd)
        assert type(result) is Applied

    benchmark.pedantic(one, rounds=2000, iterations=10, warmup_rounds=1)  # disabled: runs once


def test_bench_freeze_consume_pair(benchmark: BenchmarkFixture) -> None:
    state = _customer_with_buckets(1)
    ids = (f"tx{k}" for k in itertools.count())

    def pair() -> None:
        tid = next(ids)
        freeze = Freeze(at_ms=T_MS, project="p", customer_id="c", amount=10, transaction_id=tid)
        assert type(apply(state, state.last_lsn + 1, freeze)) is Applied
        consume = Consume(at_ms=T_MS, project="p", customer_id="c", transaction_id=tid, actual_amount=7)
        assert type(apply(state, state.last_lsn + 1, consume)) is Applied

    benchmark.pedantic(pair, rounds=2000, iterations=5, warmup_rounds=1)
