"""The PostgreSQL log protocol (wal/pg/store.py) under a deterministic simulation (tests/wal/pg_sim.py):
2-3 nodes, injected delays, lost requests and replies, slow operations, paused nodes, lease
expiry, SIGKILL and restart, takeovers. Hundreds of seeds in a few seconds; TALLY_LONG=1 runs thousands.

Checked on every seed: positions contiguous; epochs never go back along the log nor in commit
time (at most one epoch appends at a time); every row committed under the lease of its epoch;
records' LSNs exactly 1..N (no LSN twice, no gap); every acknowledged record present exactly once
at its LSN; no acknowledgement by a node that did not hold the lease at that moment.
"""

from __future__ import annotations

import os


from tests.wal.pg_sim import Outcome, simulate
from wal.pg import decode_batch

SEEDS = range(3000) if os.environ.get("TALLY_LONG") == "1" else range(200)


def check(outcome: Outcome) -> list[tuple[int, bytes]]:
    rows = outcome.rows
    assert sorted(rows) == list(range(1, len(rows) + 1)), "positions are not contiguous"
    epochs = [rows[p].epoch for p in sorted(rows)]
    assert epochs == sorted(epochs), "an older epoch appended after a newer one"
    commit_epochs = [c.row.epoch for c in outcome.commits]
    assert commit_epochs == sorted(commit_epochs), "two epochs appended at the same time"
    records = [record for p in sorted(rows) for record in decode_batch(rows[p])]
    assert [lsn for lsn, _ in records] == list(range(1, len(records) + 1)), "an LSN twice or a gap"
    payloads = [payload for _, payload in records]
    assert len(set(payloads)) == len(payloads), "a command logged twice"
    by_lsn = dict(records)
    for ack in outcome.acks:
        assert by_lsn.get(ack.lsn) == ack.payload, f"acknowledged lsn {ack.lsn} is not in the log"
    assert outcome.violations == []
    return records


def check_no_late_acks(outcome: Outcome) -> int:
    """Once a newer epoch committed its first row, nothing of an older epoch is acknowledged
    (e.g. a leader paused past its lease, whose commit replies arrive after SIGCONT)."""
    epochs = sorted({c.row.epoch for c in outcome.commits})
    for old, new in zip(epochs, epochs[1:]):
        first_new = min(c.at for c in outcome.commits if c.row.epoch == new)
        late = [a for a in outcome.acks if a.epoch == old and a.at > first_new]
        assert late == [], late
    return max(0, len(epochs) - 1)


def test_simulated_interleavings_keep_the_log_safe() -> None:
    acked = refused = handovers = kills = 0
    nodes_seen = set()
    for seed in SEEDS:
        nodes = 2 + seed % 2
        nodes_seen.add(nodes)
        outcome = simulate(seed, nodes=nodes, duration_s=3.0)
        check(outcome)
        handovers += check_no_late_acks(outcome)
        acked += len(outcome.acks)
        refused += outcome.refused
        kills += outcome.kills
    # The faults must actually bite (handovers, refused requests), and the cluster must still
    # make progress.
    assert nodes_seen == {2, 3}
    assert acked > 100 * len(SEEDS), acked
    assert handovers > len(SEEDS) // 2, handovers
    assert refused > len(SEEDS), refused
    assert kills > len(SEEDS) // 4, kills


def test_simulation_is_deterministic() -> None:
    first = simulate(7, nodes=3, duration_s=3.0)
    second = simulate(7, nodes=3, duration_s=3.0)
    assert first.rows == second.rows
    assert [(a.node, a.lsn, a.at) for a in first.acks] == [(a.node, a.lsn, a.at) for a in second.acks]
