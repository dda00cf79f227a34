"""bench/bench_wal.py still runs (its --smoke mode), so the bench cannot rot unnoticed.

What: the smoke run finishes and prints every row. No timing is asserted (that is bench/'s job).
"""

from bench import bench_wal


def test_smoke_run_prints_every_row(tmp_path, capsys):
    output = tmp_path / "wal.md"
    bench_wal.main(["--smoke", "--dir", str(tmp_path), "--output", str(output)])
    table = output.read_text()
    assert table == capsys.readouterr().out
    for case in ("raw write+fdatasync", "batch_records_max=1,", "batch_records_max=16,", "batch_records_max=256,", "replay"):
        assert case in table
