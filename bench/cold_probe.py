"""The cost of the first touch of a cold customer (snapshot layout 3, engine/core/cold.py): restore
a data directory's newest snapshot in-process, then time a deduct on customers still encoded
(the first touch decodes them) and a second deduct on the same customers (warm by then).

    python -m bench.cold_probe DATA_DIR [--customers 1000] [--prefix m-]

Customers `<prefix>0 .. <prefix><n-1>` spread over the project `default` (bench.fill's ids: the
data directories of bench.fill and bench.run). The deducts are applied with the engine core
(engine.core.ledger.apply), not logged: the figures are the engine's share of a request, without
HTTP, WAL or fsync. Prints medians in µs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import wal
from engine.core.codec import decode_state
from engine.core.commands import Deduct
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.state import LedgerState
from net.bootstrap import BOOTSTRAP_PROJECT

CUSTOMERS_MAX = 100_000


def _deduct_us(state: LedgerState, customer_id: str, transaction_id: str) -> float:
    at_ms = max(state.stamp_ms_last, 1)
    command = Deduct(at_ms=at_ms, project=BOOTSTRAP_PROJECT, customer_id=customer_id, amount=1,
                     transaction_id=transaction_id)  # fmt: skip
    started = time.perf_counter_ns()
    result = apply(state, state.last_lsn + 1, command)
    elapsed = time.perf_counter_ns() - started
    if not isinstance(result, Applied):
        raise RuntimeError(f"deduct on {customer_id} refused: {result!r}")
    state.stamp_ms_last = at_ms
    return elapsed / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_probe", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--customers", type=int, default=1000, help="how many customers to touch")
    parser.add_argument("--prefix", default="m-")
    args = parser.parse_args(argv)
    snapshot = wal.load_newest_snapshot(args.data_dir) if args.data_dir.is_dir() else None
    if snapshot is None or not 1 <= args.customers <= CUSTOMERS_MAX:
        print(f"bench.cold_probe: a data directory with a snapshot, --customers 1..{CUSTOMERS_MAX:,}", file=sys.stderr)
        return 2
    started = time.monotonic()
    state = decode_state(snapshot.payload)
    del snapshot
    project = state.projects[BOOTSTRAP_PROJECT]
    print(f"restored in {time.monotonic() - started:.1f} s: {len(project.customers):,} customers, "
          f"{project.customers.cold_count:,} cold", flush=True)  # fmt: skip
    step = max(1, len(project.customers) // args.customers)
    ids = [f"{args.prefix}{n * step}" for n in range(args.customers)]
    was_cold = sum(project.customers.is_cold(customer_id) for customer_id in ids)
    first = [_deduct_us(state, customer_id, f"cold-probe-1-{customer_id}") for customer_id in ids]
    second = [_deduct_us(state, customer_id, f"cold-probe-2-{customer_id}") for customer_id in ids]
    print(f"{len(ids):,} customers ({was_cold:,} cold before): deduct median {statistics.median(first):,.1f} µs "
          f"on the first touch, {statistics.median(second):,.1f} µs on the second", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
