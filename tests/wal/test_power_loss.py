"""Power loss under the WAL writer: what was reported durable survives, the rest is a clean cut.

What: the writer reports records durable, then a batch is written but its fdatasync is held;
the power goes (`PowerLoss.crash`: un-synced bytes dropped, or a seeded-random prefix kept).
Recovery (`read_log(truncate_torn_tail=True)`) must return every durable record, then exactly the
whole frames the torn prefix kept, and report (and cut) a partial last frame. Then the model is
checked against itself: a writer with `fsync=False` reports records durable that a power loss
takes away, and `durable_records_survive` says so.

How: `tests/wal/faults.py` PowerLoss / PowerLossLogFile through the writer's `log_file_factory`.

How it could fail: the writer reporting a record durable before its fdatasync returned, a
header not synced before frames, recovery keeping a partial frame or losing a whole one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import wal
from tests.wal.faults import CRASH_MODES, PowerLoss
from wal import WalWriter
from wal.frame import encode_frame

DURABLE = 20
IN_FLIGHT = 12
WAIT_S = 10.0


def payload(lsn: int) -> bytes:
    return b"record-%d-" % lsn + b"x" * (lsn % 7)


def recovered(directory: Path) -> tuple[list[tuple[int, bytes]], wal.TornTail | None]:
    reader = wal.read_log(directory, truncate_torn_tail=True)
    records = list(reader)
    return records, reader.torn


def durable_records_survive(directory: Path, durable_lsn: int) -> None:
    """Raise AssertionError unless records 1..durable_lsn all come back, intact."""
    try:
        records, _ = recovered(directory)
    except wal.WalCorrupt as error:
        raise AssertionError(f"recovery refused the log: {error}") from None
    assert records[:durable_lsn] == [(lsn, payload(lsn)) for lsn in range(1, durable_lsn + 1)]


async def _durable_then_crash_in_flight(directory: Path, plan: PowerLoss) -> WalWriter:
    writer = WalWriter.open(directory, next_lsn=1, log_file_factory=plan.factory)
    await writer.start()
    for lsn in range(1, DURABLE + 1):
        writer.append(lsn, payload(lsn))
        if lsn % 5 == 0:  # a few batches
            await writer.wait_durable(lsn)
    assert writer.durable_lsn == DURABLE
    plan.hold()
    for lsn in range(DURABLE + 1, DURABLE + IN_FLIGHT + 1):
        writer.append(lsn, payload(lsn))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, plan.held.wait, WAIT_S), "the batch never reached fdatasync"
    waiter = loop.create_task(writer.wait_durable(DURABLE + IN_FLIGHT))
    plan.crash()
    plan.release()
    with pytest.raises(wal.WalFailed):
        await waiter
    assert writer.durable_lsn == DURABLE
    await writer.close()
    plan.apply()
    return writer


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", CRASH_MODES)
async def test_power_loss_keeps_every_durable_record_and_cuts_the_rest_cleanly(
    tmp_path: Path, mode: str, seed: int
) -> None:
    plan = PowerLoss(mode, seed)
    await _durable_then_crash_in_flight(tmp_path, plan)
    (kept,) = plan.kept.values()  # one segment had un-synced bytes: the in-flight batch
    (lost,) = plan.lost.values()
    assert len(kept) + len(lost) == sum(len(encode_frame(lsn, payload(lsn))) for lsn in range(DURABLE + 1, DURABLE + IN_FLIGHT + 1))
    frames = b"".join(encode_frame(lsn, payload(lsn)) for lsn in range(DURABLE + 1, DURABLE + IN_FLIGHT + 1))
    on_disk = kept + bytes(len(frames) - len(kept))  # the torn prefix over the preallocated zeros
    frame_ends, end = [], 0
    for lsn in range(DURABLE + 1, DURABLE + IN_FLIGHT + 1):
        end += len(encode_frame(lsn, payload(lsn)))
        frame_ends.append(end)
    # A frame whose missing bytes happen to be zeros (a length copy's high bytes) is whole.
    whole = sum(1 for frame_end in frame_ends if on_disk[:frame_end] == frames[:frame_end])

    records, torn = recovered(tmp_path)
    assert records == [(lsn, payload(lsn)) for lsn in range(1, DURABLE + whole + 1)]
    partial = any(on_disk[([0, *frame_ends][whole]):])  # non-zero bytes after the whole frames
    assert (torn is not None) == partial, (len(kept), frame_ends, torn)
    if mode == "drop":
        assert (kept, whole, torn) == (b"", 0, None)
    durable_records_survive(tmp_path, DURABLE)
    # Recovery cut the tail: the writer reopens at the next lsn and appends.
    writer = WalWriter.open(tmp_path, next_lsn=DURABLE + whole + 1)
    await writer.close()


async def test_the_model_catches_a_missing_fsync(tmp_path: Path) -> None:
    """fsync=False: the writer reports every record durable, a power loss takes them all."""
    plan = PowerLoss("drop")
    writer = WalWriter.open(tmp_path, next_lsn=1, fsync=False, log_file_factory=plan.factory)
    await writer.start()
    for lsn in range(1, DURABLE + 1):
        writer.append(lsn, payload(lsn))
    await writer.wait_durable(DURABLE)
    assert writer.durable_lsn == DURABLE  # acknowledged...
    await writer.close()
    plan.crash()
    plan.apply()
    with pytest.raises(AssertionError):  # ...and lost
        durable_records_survive(tmp_path, DURABLE)
    assert sum(map(len, plan.lost.values())) > DURABLE * 20


async def test_with_fsync_nothing_is_left_for_a_power_loss_to_take(tmp_path: Path) -> None:
    """The same run with fsync=True: every byte was synced before it was reported durable."""
    plan = PowerLoss("drop")
    writer = WalWriter.open(tmp_path, next_lsn=1, fsync=True, log_file_factory=plan.factory)
    await writer.start()
    for lsn in range(1, DURABLE + 1):
        writer.append(lsn, payload(lsn))
    await writer.wait_durable(DURABLE)
    await writer.close()
    plan.crash()
    plan.apply()
    assert plan.lost == {}
    durable_records_survive(tmp_path, DURABLE)
