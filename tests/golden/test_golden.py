"""Today's code reads a data directory written by the released format (commit d80f33e).

What: `data-v1/` (one segment, one snapshot at LSN 19, a 10-record WAL tail) was written by the
old engine (`make_golden.py` says how); `expected-v1.json` holds what the old `tally replay`
printed for it, with the snapshot and from the WAL alone. Today's `tally replay` must print the
same records, last_lsn, customer count and digest, and the real Runtime must open it and take a
new write on top.

How: every test works on a tmp copy (recovery may create files; the committed ones never change).
The history holds client stamps that go back a few ms in LSN order (raced requests under the old
handlers), once before the snapshot and once after it; a test checks they are really there, so
the tolerance in engine/runtime/recovery.py is exercised on both paths.

How it could fail: a reordered, retyped or removed command field (old payloads no longer decode
or mean something else), a changed snapshot codec, a digest that now covers a new field, a
rule change that replays old commands differently, or recovery refusing a backward stamp.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import wal
from engine.core.commands import AutoSettle, Deposit, ExpireBuckets, decode_command
from engine.core.digest import digest
from engine.core.results import Applied, CustomerResponse
from engine.runtime import Runtime, RuntimeConfig
from tests.system.server import replay_json

HERE = Path(__file__).parent
DATA = HERE / "data-v1"
EXPECTED: dict[str, Any] = json.loads((HERE / "expected-v1.json").read_text())
SNAPSHOT_LSN = 19
COMPARED = ("records", "last_lsn", "snapshot_lsn", "customers", "digest", "torn_tail")


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    return copy


def test_the_golden_files_are_what_make_golden_wrote() -> None:
    assert sorted(path.name for path in DATA.iterdir()) == [
        "snapshot-00000000000000000019.snap",
        "wal-00000000000000000001.log",
    ]
    assert EXPECTED["with_snapshot"]["snapshot_lsn"] == SNAPSHOT_LSN
    assert EXPECTED["with_snapshot"]["digest"] == EXPECTED["wal_only"]["digest"]


def test_replay_with_the_snapshot_prints_what_the_old_code_printed(data_copy: Path) -> None:
    printed = replay_json(data_copy)
    assert {key: printed[key] for key in COMPARED} == {key: EXPECTED["with_snapshot"][key] for key in COMPARED}


def test_replay_of_the_whole_wal_prints_what_the_old_code_printed(data_copy: Path) -> None:
    for snapshot in data_copy.glob("snapshot-*.snap"):
        snapshot.unlink()
    printed = replay_json(data_copy)
    assert {key: printed[key] for key in COMPARED} == {key: EXPECTED["wal_only"][key] for key in COMPARED}


def test_the_history_has_backward_stamps_before_and_after_the_snapshot() -> None:
    backward = []
    stamp_last = 0
    for lsn, payload in wal.read_log(DATA):
        command = decode_command(payload)
        if isinstance(command, (ExpireBuckets, AutoSettle)):
            continue  # timers carry their due time; only client stamps are checked by apply
        if command.at_ms < stamp_last:
            backward.append(lsn)
        stamp_last = max(stamp_last, command.at_ms)
    assert [lsn <= SNAPSHOT_LSN for lsn in backward] == [True, False], backward


async def test_the_runtime_serves_the_old_directory_and_writes_on_top(data_copy: Path) -> None:
    config = RuntimeConfig(data_dir=data_copy, snapshot_interval_records=0, snapshot_interval_s=0)
    runtime = await Runtime.open(config, clock=lambda: 1_000)  # a clock far behind the log's stamps
    try:
        assert runtime.recovered.snapshot_lsn == SNAPSHOT_LSN and runtime.state.last_lsn == 29
        assert digest(runtime.state) == EXPECTED["with_snapshot"]["digest"]
        bob = await runtime.get_customer("proj-a", "bob")
        assert isinstance(bob, CustomerResponse), bob
        assert (bob.balance.total, bob.balance.used, bob.balance.available) == (25, 20, 5)  # 300 expired at +30 s
        result = await runtime.submit(Deposit(at_ms=0, project="proj-a", customer_id="bob", amount=3))
        assert isinstance(result, Applied) and result.body.total_amount == 28
    finally:
        await runtime.close()
    assert replay_json(data_copy)["last_lsn"] == 30
