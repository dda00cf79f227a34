"""Issue 14's ratios measured in pairs: each durable hot-deduct row right beside its bare baseline.

    run(work_dir, api_key, rounds, duration_s, connections) -> {row: {conns: [(row, bare), ...]}}
    report(results) -> markdown lines; medians(results) -> {(row, conns): median ratio}

Why pairs: this machine's speed drifts by 20-40 % over minutes (other tenants of the host). The
main table measures each bare row once, at the start, and each Tally row minutes later, so a ratio
there carries whatever the host did in between. Here both servers of a pair stay up side by side
(idle when not driven) and wrk drives them one after the other, seconds apart, `rounds` times,
the order swapped every round; the ratio reported is the median of the rounds' ratios, so one
round the host disturbed does not decide it. Same load as the main table's rows (load.lua
`deduct`, one hot customer), same warm-up.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Final

from bench.run import HOT_FUNDS, ISSUE14_RATIO, ISSUE14_ROWS, SCENARIOS, Scenario, Server, fund, run_wrk

# (row, its bare baseline): the one-process server against the bare handler, and --workers 2
# against the bare handler run as 2 SO_REUSEPORT processes (issue 14's targets: bench/run.py
# ISSUE14_ROWS). The third pair is no target: the split's durable floor (the 2-process bare
# handler, each POST crossing to a hub process that writes it durably before answering; no
# ledger) against the same baseline, measured beside it so the two --workers 2 ratios read together.
PAIRS: Final = (("deduct_hot", "baseline_post"), ("deduct_hot_w2", "baseline_post_2p"),
                ("baseline_post_2p_floor", "baseline_post_2p"))  # fmt: skip
FLOOR_ROW: Final = "baseline_post_2p_floor"
WARMUP_S: Final = 2

Results = dict[str, dict[int, list[tuple[float, float]]]]  # row -> conns -> [(row, bare) req/s]


def _scenario(name: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name == name)


def _start(scenario: Scenario, work_dir: Path, api_key: str) -> Server:
    server = Server(scenario.server, work_dir, api_key, extra_args=scenario.serve_args)
    server.start()
    if scenario.server == "tally":
        _, ok, bad = fund(server, "hot-", 0, 1, HOT_FUNDS)
        if ok != 1 or bad:
            raise RuntimeError(f"funding hot-0 failed: ok={ok} bad={bad}\n{server.log_tail()}")
    if WARMUP_S:
        run_wrk(server, scenario.mode, 1, 64, WARMUP_S)
    return server


def run(work_dir: Path, api_key: str, rounds: int, duration_s: int, connections: tuple[int, ...]) -> Results:
    """Start every server of PAIRS, then `rounds` rounds of (row, bare) wrk runs per pair and
    connection count, alternating which goes first. Stops every server it started."""
    assert rounds >= 1 and duration_s >= 1
    results: Results = {row: {c: [] for c in connections} for row, _ in PAIRS}
    servers: dict[str, Server] = {}
    try:
        for row, bare in PAIRS:
            for name in (bare, row):
                if name not in servers:  # a baseline two pairs share runs once
                    servers[name] = _start(_scenario(name), work_dir, api_key)
        for round_index in range(rounds):
            for row, bare in PAIRS:
                for connections_now in connections:
                    order = (row, bare) if round_index % 2 == 0 else (bare, row)
                    rps = {name: run_wrk(servers[name], "deduct", 1, connections_now, duration_s)["rps"]
                           for name in order}  # fmt: skip
                    results[row][connections_now].append((rps[row], rps[bare]))
                    print(f"  paired r{round_index} {row:14s} c={connections_now:3d} {rps[row]:9,.0f} / "
                          f"{rps[bare]:9,.0f} = {rps[row] / rps[bare]:.2f}x", flush=True)
    finally:
        for server in servers.values():
            server.stop()
            if server.kind == "tally":
                shutil.rmtree(server.data_dir, ignore_errors=True)
    return results


def medians(results: Results) -> dict[tuple[str, int], float]:
    """(row, connections) -> the median over rounds of the row's req/s / its bare baseline's."""
    return {(row, c): statistics.median(t / b for t, b in pairs)
            for row, by_conns in results.items() for c, pairs in by_conns.items() if pairs}  # fmt: skip


def report(results: Results) -> list[str]:
    ratio_of = medians(results)
    rounds = max((len(p) for by_conns in results.values() for p in by_conns.values()), default=0)
    out = [f"## Issue 14 ratios, paired ({rounds} round{'s' if rounds != 1 else ''}, each Tally run beside its bare "
           "baseline)", "",
           "| row | conns | Tally req/s (median) | bare req/s (median) | ratio (median of rounds) | "
           f"lowest – highest | ≥ {ISSUE14_RATIO:.2f}× |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row, by_conns in results.items():
        bare = dict(PAIRS)[row]
        for c, pairs in by_conns.items():
            if not pairs:
                continue
            ratios = [t / b for t, b in pairs]
            ratio = ratio_of[(row, c)]
            out.append(f"| {row} vs {bare} | {c} | {statistics.median(t for t, _ in pairs):,.0f} | "
                       f"{statistics.median(b for _, b in pairs):,.0f} | {ratio:.3f}× | "
                       f"{min(ratios):.3f}× – {max(ratios):.3f}× | {_met(row, ratio)} |")
    out += ["", "- Servers of a pair stay up side by side; per round, wrk drives the Tally server and then its "
            "bare baseline (the order swapped every other round), the same load.lua `deduct` load on one hot "
            "customer as the main table; bench/paired.py says why the ratio is a median of rounds.",
            f"- `{FLOOR_ROW}` is no target: the bare handler's 2 processes, each POST's balance update crossing "
            "to a hub process (batched per loop turn, as a front's calls are) that writes it with O_DSYNC before "
            "answering (one write per read: group commit). No ledger, no Tally code: about the most a "
            "`--workers 2` that waits for the disk before it answers can reach on this machine."]
    return out


def _met(row: str, ratio: float) -> str:
    if row not in ISSUE14_ROWS:  # the floor
        return "(floor, no target)"
    return "yes" if ratio >= ISSUE14_RATIO else "NO"
