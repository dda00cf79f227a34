"""bench/partition_sim.py: the multi-partition throughput simulation is deterministic and names
the bound it hits (node CPU, PostgreSQL CPU, one append in flight per partition); its figures
are measured and reported by the bench, not asserted here."""

from __future__ import annotations

from dataclasses import replace

from bench.partition_sim import SimConfig, calibrate, render, simulate, table

BASE = SimConfig(partitions=1, nodes=1, seconds=4.0)


def test_same_config_same_result() -> None:
    one, two = simulate(replace(BASE, partitions=4, nodes=2)), simulate(replace(BASE, partitions=4, nodes=2))
    assert one == two
    other_seed = simulate(replace(BASE, partitions=4, nodes=2, seed=2))
    assert other_seed.commit_p99_ms != one.commit_p99_ms  # the seed really drives the jitter


def test_node_cpu_bounds_one_node_and_partitions_spread_it() -> None:
    single = simulate(BASE)
    assert single.bound == "node CPU"
    # Throughput figures are reported by `python -m bench.partition_sim` (docs/CLUSTER.md), not asserted.
    assert simulate(replace(BASE, partitions=4, nodes=4)).bound == "node CPU"


def test_one_append_in_flight_bounds_a_slow_partition() -> None:
    slow = replace(BASE, batch_records_max=8, row_cpu_ms=9.0, flush_ms=1.0, jitter_p99=1.0001)
    result = simulate(slow)
    assert result.bound == "one append in flight"
    assert result.mean_row_records == 8


def test_postgres_cpu_caps_many_partitions() -> None:
    starved = replace(BASE, pg_cores=1, batch_records_max=4, row_cpu_ms=2.0, flush_ms=0.5, jitter_p99=1.0001)
    many = simulate(replace(starved, partitions=8, nodes=8))
    assert many.bound == "PostgreSQL CPU"


def test_calibrate_and_render() -> None:
    commit = {"1": {"p50_ms": 8.0, "row_bytes": 84.0}, "128": {"p50_ms": 11.0, "row_bytes": 10_884.0}}
    tuned = calibrate(BASE, commit, flush_ms=3.0)
    assert tuned.flush_ms == 3.0 and tuned.record_bytes == 84
    assert abs(tuned.row_byte_ms - 3.0 / 10_800) < 1e-12  # two points: the line through them
    assert abs(tuned.row_cpu_ms + tuned.flush_ms + 2 * tuned.rtt_ms + tuned.row_byte_ms * 84 - 8.0) < 1e-9
    noisy = calibrate(BASE, {"1": {"p50_ms": 9.0, "row_bytes": 84.0}, "128": {"p50_ms": 7.0, "row_bytes": 10_884.0}}, 3.0)
    assert noisy.row_byte_ms == 0.0  # a negative slope (noise) is floored
    text = render(table(tuned, (1, 2), (1, 2)))
    assert text.count("\n| ") == 2 + 4  # header, rule, one row per cell
