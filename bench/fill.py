"""Build a large data directory in-process, fast: the recovery rows' ledger without HTTP.

    python -m bench.fill --data-dir D --customers 1000000 --rounds 10 [--api-key KEY]

Opens the engine (engine.runtime.Runtime.open, fsync off: a benchmark fixture, not a ledger
anyone was promised) and submits through Runtime.submit exactly the commands that bench/run.py's
HTTP funding makes (bench/lua/fund.lua parsed by net/schemas.parse_deposit): round 0 deposits
1000 into each of `m-0 .. m-<customers-1>` with idempotency key `fund-0-m-<n>`, round r ≥ 1
deposits 1 with key `fund-x<r>-m-<n>` (run.py's `tag=f"x{round}"`). Every command goes through
shards, stamping, apply and the WAL as a request's would, so the segments, the state and the
snapshot are the ones the HTTP path builds (only the timestamps differ). Then it takes one
snapshot (Runtime.take_snapshot) and closes. Keys: project `default` gets `--api-key` (as
TALLY_BOOTSTRAP_KEY would on the server's first start) and an admin key, through the server's
own bootstrap (net/bootstrap.py).

Measured on this 2-core machine on 2026-12-07 (other work kept the load at 2-8): 6,000-10,000
deposits/s; the HTTP funding of the same day's bench run made 3,100/s (16,000/s on an idle 2026-11-30).

`--direct` (`fill_direct`, what `bench.run --recovery-10m` uses) skips the Runtime: it applies the
same commands with the pure engine core (engine.core.ledger.apply, one fixed stamp for all of
them, as a Runtime whose clock stands still would stamp them), encodes the state and writes one
snapshot: no WAL segments, no fsync until the snapshot. tests/bench/test_fill.py checks that its
state has the digest of the same commands submitted through a Runtime. A server starts over
that snapshot with an empty log. Measured 2026-12-07 (load 4-7 on the 2 cores): 1 M x 10
deposits applied in 497 s, the 1.4 GB snapshot written in 48 s (~20,000 deposits/s; about 14 GB
of RAM at the end). Most of it is apply_deposit itself (engine/core/deposits.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

import wal
from engine.core.codec import ENCODE_LAYOUT, encode_state
from engine.core.commands import CreateApiKey, Deposit
from engine.core.keys import hash_api_key
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.state import LedgerState
from engine.runtime import Runtime
from engine.runtime.config import RuntimeConfig
from net.bootstrap import BOOTSTRAP_PROJECT, bootstrap_keys, new_api_key

PREFIX = "m-"  # bench/run.py's memory and recovery customers
FIRST_AMOUNT = 1000  # run.py funds the memory customers with 1000 ...
MORE_AMOUNT = 1  # ... and adds 1 per extra recovery round
IN_FLIGHT_MAX = 8192  # submissions awaited together (bounded: a window, not 10^7 tasks)
CUSTOMERS_MAX = 100_000_000
ROUNDS_MAX = 100


@dataclass(frozen=True)
class Filled:
    deposits: int  # commands applied and logged
    last_lsn: int
    snapshot_lsn: int
    fill_s: float  # submitting every deposit
    snapshot_s: float  # Runtime.take_snapshot


def deposit(customer: int, round_index: int, at_ms: int = 0) -> Deposit:
    """The command POST /v1/customers/deposit makes of fund.lua's body for this customer and round."""
    customer_id = f"{PREFIX}{customer}"
    tag = "0" if round_index == 0 else f"x{round_index}"
    return Deposit(
        at_ms=at_ms, project=BOOTSTRAP_PROJECT, customer_id=customer_id,
        amount=FIRST_AMOUNT if round_index == 0 else MORE_AMOUNT,
        idempotency_key=f"fund-{tag}-{customer_id}",
    )  # fmt: skip


async def fill(data_dir: Path, *, customers: int, rounds: int, api_key: str,
               progress: bool = False) -> Filled:  # fmt: skip
    """Fill an empty (or partly filled: replays are answered, not logged again) data directory.
    Raises RuntimeError if a deposit is refused."""
    assert 1 <= customers <= CUSTOMERS_MAX and 1 <= rounds <= ROUNDS_MAX
    config = RuntimeConfig(data_dir=data_dir, fsync=False, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config)
    try:
        await bootstrap_keys(runtime, data_dir, api_key)
        started = time.monotonic()
        applied = 0
        for round_index in range(rounds):
            for first in range(0, customers, IN_FLIGHT_MAX):
                batch = range(first, min(first + IN_FLIGHT_MAX, customers))
                results = await asyncio.gather(*(runtime.submit(deposit(n, round_index)) for n in batch))
                for result in results:
                    if not isinstance(result, Applied):
                        raise RuntimeError(f"deposit refused: {result!r}")
                    applied += result.logged
                # as net/server.py does every second: the ledger is long-lived, so keep full
                # collections from walking it again and again (they made filling 1 M 2x slower)
                gc.collect(1)
                gc.freeze()
            if progress:
                print(f"fill: round {round_index + 1}/{rounds} done, {applied:,} deposits, "
                      f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        fill_s = time.monotonic() - started
        started = time.monotonic()
        snapshot_lsn = await runtime.take_snapshot()
        snapshot_s = time.monotonic() - started
        return Filled(applied, runtime.state.last_lsn, snapshot_lsn, fill_s, snapshot_s)
    finally:
        await runtime.close()


def key_commands(api_key: str, admin_key: str, at_ms: int) -> list[CreateApiKey]:
    """The two keys `tally serve` makes on a first start (net/bootstrap.py): project `default`'s
    key, then an admin key. Their key ids are fixed (a benchmark fixture: tests compare digests)."""
    return [
        CreateApiKey(at_ms=at_ms, project=BOOTSTRAP_PROJECT, key_id="key_fill_project", key_hash=hash_api_key(api_key)),
        CreateApiKey(at_ms=at_ms, project="", key_id="key_fill_admin", key_hash=hash_api_key(admin_key), admin=True),
    ]


def build_state(customers: int, rounds: int, api_key: str, admin_key: str, at_ms: int) -> LedgerState:
    """The state `fill` makes, applied by the engine core alone: the key commands, then the
    deposits round by round, LSNs 1, 2, ... in that order, every command stamped `at_ms`.
    Raises RuntimeError if a command is refused."""
    assert 1 <= customers <= CUSTOMERS_MAX and 1 <= rounds <= ROUNDS_MAX
    state = LedgerState()
    commands = [*key_commands(api_key, admin_key, at_ms)]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # only long-lived objects are made: a collection could free nothing
    try:
        for command in commands:
            _apply_logged(state, command)
        for round_index in range(rounds):
            for n in range(customers):
                _apply_logged(state, deposit(n, round_index, at_ms))
    finally:
        gc.freeze()
        if gc_was_enabled:
            gc.enable()
    return state


def _apply_logged(state: LedgerState, command: CreateApiKey | Deposit) -> None:
    result = apply(state, state.last_lsn + 1, command)
    if not (isinstance(result, Applied) and result.logged):
        raise RuntimeError(f"command refused: {result!r}")


def fill_direct(data_dir: Path, *, customers: int, rounds: int, api_key: str, admin_key: str,
                at_ms: int) -> Filled:  # fmt: skip
    """`build_state`, then its snapshot written into `data_dir` (created; must be empty), and the
    admin key in `<data_dir>/admin-key`. Raises RuntimeError for a data dir that is not empty."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} is not empty")
    started = time.monotonic()
    state = build_state(customers, rounds, api_key, admin_key, at_ms)
    fill_s = time.monotonic() - started
    started = time.monotonic()
    wal.write_snapshot(data_dir, state.last_lsn, encode_state(state), ENCODE_LAYOUT)
    snapshot_s = time.monotonic() - started
    _write_key_file(data_dir / "admin-key", admin_key)
    return Filled(customers * rounds, state.last_lsn, state.last_lsn, fill_s, snapshot_s)


def _write_key_file(path: Path, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fill", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10, help="deposits per customer")
    parser.add_argument("--api-key", help="project default's key (default: a new one, printed)")
    parser.add_argument("--direct", action="store_true",
                        help="engine core only: no Runtime, no WAL, one snapshot (minutes for 10 M)")
    args = parser.parse_args(argv)
    if not 1 <= args.customers <= CUSTOMERS_MAX or not 1 <= args.rounds <= ROUNDS_MAX:
        print(f"bench.fill: --customers 1..{CUSTOMERS_MAX:,}, --rounds 1..{ROUNDS_MAX}", file=sys.stderr)
        return 2
    api_key = args.api_key or "tly_" + secrets.token_hex(24)
    if args.direct:
        try:
            filled = fill_direct(args.data_dir, customers=args.customers, rounds=args.rounds, api_key=api_key,
                                 admin_key=new_api_key()[0], at_ms=int(time.time() * 1000))  # fmt: skip
        except RuntimeError as error:
            print(f"bench.fill: {error}", file=sys.stderr)
            return 2
    else:
        filled = uvloop.run(fill(args.data_dir, customers=args.customers, rounds=args.rounds,
                                  api_key=api_key, progress=True))  # fmt: skip
    print(f"fill: {filled.deposits:,} deposits in {filled.fill_s:.1f} s, last_lsn {filled.last_lsn}, "
          f"snapshot at lsn {filled.snapshot_lsn} in {filled.snapshot_s:.1f} s"
          + ("" if args.api_key else f", api key {api_key}"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
