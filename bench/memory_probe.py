"""In-process memory probe: bytes per idle customer with one deposit (issue 14), in seconds.

    python -m bench.memory_probe [--customers 200000] [--breakdown]

Builds a LedgerState the way bench/run.py's memory row fills a server (bench/lua/fund.lua): one
deposit of 1000 per customer `m-<n>` with the idempotency key `fund-0-m-<n>`, each request body
parsed by net/schemas.py (fresh strings and ints, as decoded off the wire), stamped, then applied
through `engine.core.ledger.apply`. It prints the RSS growth per customer (this process, before
and after; the HTTP server's figure adds what the runtime keeps), with `--restored` the growth of
the same state decoded from its snapshot, and with `--breakdown` the `sys.getsizeof` of each
object one customer owns. No server, no disk: a quick loop for layout
changes; `python -m bench.run` stays the measurement of record.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

import msgspec

from engine.core.codec import decode_state, encode_state
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.state import LedgerState
from net.schemas import parse_deposit

_AT_MS_FIRST = 1_796_000_000_000


def rss_bytes() -> int:
    """VmRSS of this process (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fund(state: LedgerState, first: int, count: int, project: str = "default") -> None:
    """Apply `count` deposits shaped like bench/lua/fund.lua's to `state` (customers m-<first>...)."""
    for n in range(first, first + count):
        body = b'{"customer_id":"m-%d","amount":1000,"idempotency_key":"fund-0-m-%d"}' % (n, n)
        command = parse_deposit(body, project, None)
        command = msgspec.structs.replace(command, at_ms=_AT_MS_FIRST + state.last_lsn)
        result = apply(state, state.last_lsn + 1, command)
        assert type(result) is Applied and result.logged, result


def owned_sizes(value: Any, seen: set[int] | None = None) -> dict[str, int]:
    """sys.getsizeof of every object reachable from `value` once, summed by type name. Interned
    and shared objects (module strings, small ints) are counted too: read it as an upper bound."""
    seen = set() if seen is None else seen
    sizes: dict[str, int] = {}
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None or type(item) is bool:
            continue
        seen.add(id(item))
        name = type(item).__name__
        sizes[name] = sizes.get(name, 0) + sys.getsizeof(item)
        if isinstance(item, msgspec.Struct):
            stack.extend(getattr(item, field) for field in item.__struct_fields__)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--breakdown", action="store_true", help="sizes of one customer's objects")
    parser.add_argument("--restored", action="store_true",
                        help="also the RSS growth of decode_state(encode_state(state)): a restart from a snapshot")
    args = parser.parse_args(argv)
    if args.customers < 1000:
        print("--customers must be at least 1000", file=sys.stderr)
        return 2
    state = LedgerState()
    fund(state, 0, 1000)  # the project, the first allocations of every dict
    gc.collect()
    before = rss_bytes()
    fund(state, 1000, args.customers - 1000)
    gc.collect()
    grown = rss_bytes() - before
    print(f"{args.customers - 1000:,} customers: RSS +{grown / 2**20:,.1f} MiB, "
          f"{grown / (args.customers - 1000):,.0f} B/customer")
    if args.restored:
        data = encode_state(state)
        del state
        gc.collect()
        before = rss_bytes()
        state = decode_state(data)
        gc.collect()
        grown = rss_bytes() - before
        print(f"restored from a {len(data) / 2**20:,.1f} MiB snapshot: RSS +{grown / 2**20:,.1f} MiB, "
              f"{grown / args.customers:,.0f} B/customer (what the decode freed and the allocator kept included)")
    if args.breakdown:
        project = state.projects["default"]
        customer = project.customers["m-500"]
        for name, size in sorted(owned_sizes(customer).items(), key=lambda kv: -kv[1]):
            print(f"  {name:<16} {size:>5} B")
        record = project.deposit_records["fund-0-m-500"]
        print(f"  deposit_records key + record shared with the customer: {record is customer.deposits[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
