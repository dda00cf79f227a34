"""Recovery: newest valid snapshot, then every WAL record after it (CONTRACT §4, §6).

Shared by `tally serve` (which truncates a torn tail before it appends) and by the read-only
`tally replay` / `tally verify` (which never change a file). A record that does not decode, or
that the engine does not accept exactly as it accepted it the first time (logged=True), means
the log and the engine disagree: recovery stops with `RecoveryError` naming the LSN instead of
loading a state it cannot vouch for.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import msgspec

import wal
from engine.core.codec import decode_state
from engine.core.commands import AutoSettle, ExpireBuckets, decode_command
from engine.core.ledger import apply
from engine.core.results import Applied
from engine.core.digest import digest
from engine.core.queries import customer_count
from engine.core.state import LedgerState


class RecoveryError(Exception):
    """The log holds a record the engine cannot replay (undecodable, or not applied as logged)."""

    def __init__(self, lsn: int, reason: str) -> None:
        super().__init__(f"record lsn={lsn}: {reason}")
        self.lsn = lsn
        self.reason = reason


@dataclass(frozen=True)
class Recovered:
    state: LedgerState
    snapshot_lsn: int  # 0 when no snapshot was used
    records_replayed: int  # WAL records applied after the snapshot
    torn: object | None  # a torn final record that was found (and cut, when asked): wal.TornTail locally
    snapshots_skipped: tuple[wal.WalCorrupt, ...]  # damaged snapshots passed over (an older one was used)

    def summary(self) -> dict[str, int | str]:
        """What `tally replay` prints of it (with the torn tail, which each log store words its
        own way): records replayed, last and snapshot LSN, customers, the state's digest."""
        return {"records": self.records_replayed, "last_lsn": self.state.last_lsn, "snapshot_lsn": self.snapshot_lsn,
                "customers": customer_count(self.state), "digest": digest(self.state)}  # fmt: skip


def recover(
    data_dir: Path,
    *,
    truncate_torn_tail: bool,
    log: wal.LogBackend | None = None,
    on_record: Callable[[int], None] | None = None,
) -> Recovered:
    """Rebuild the ledger state: the newest sound snapshot in `data_dir` (snapshots are local to
    each node), then the records after it from `log` (default: the segments in `data_dir`).

    Raises wal.WalCorrupt (damaged log or snapshot; names file and offset) or RecoveryError.
    `on_record(lsn)` is called after each replayed record (progress bars).
    """
    # Recovery only builds long-lived objects: a collection pass could free nothing, yet passes
    # triggered by millions of new containers make decoding a snapshot several times slower.
    # Before collections resume, the survivors are frozen (moved out of the generations): else
    # the first allocation after gc.enable() walks every container recovery made, as a young
    # collection, and later ones walk them again (seconds at 10^7 ledger entries, issue 14). The
    # server freezes the recovered state after start anyway (net/server.py); frozen objects are
    # still freed by reference counting.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        backend: wal.LogBackend = wal.LocalLog(data_dir) if log is None else log
        return _recover(data_dir, backend, truncate_torn_tail=truncate_torn_tail, on_record=on_record)
    finally:
        gc.freeze()
        if gc_was_enabled:
            gc.enable()


def _recover(
    data_dir: Path, log: wal.LogBackend, *, truncate_torn_tail: bool, on_record: Callable[[int], None] | None
) -> Recovered:
    snapshot = wal.load_newest_snapshot(data_dir)
    if snapshot is None:
        state = LedgerState()
        snapshot_lsn = 0
        skipped: tuple[wal.WalCorrupt, ...] = ()
    else:
        state = decode_state(snapshot.payload)
        snapshot_lsn = snapshot.lsn
        skipped = snapshot.skipped
        assert state.last_lsn == snapshot.lsn, (state.last_lsn, snapshot.lsn)
    reader = log.read(snapshot_lsn, truncate_torn_tail=truncate_torn_tail)
    replayed = 0
    for lsn, payload in reader:
        replay_one(state, lsn, payload)
        replayed += 1
        if on_record is not None:
            on_record(lsn)
    return Recovered(
        state=state,
        snapshot_lsn=snapshot_lsn,
        records_replayed=replayed,
        torn=reader.torn,
        snapshots_skipped=skipped,
    )


def replay_one(state: LedgerState, lsn: int, payload: bytes) -> None:
    """Apply one logged record exactly as recovery does (a standby tailing the log, too).
    RecoveryError when it does not follow the state or the engine does not re-apply it."""
    if lsn != state.last_lsn + 1:
        raise RecoveryError(lsn, f"expected lsn {state.last_lsn + 1}")
    try:
        command = decode_command(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise RecoveryError(lsn, f"payload does not decode: {error}") from None
    stamp_ms = getattr(command, "at_ms", 0)
    if stamp_ms < state.stamp_ms_last and not isinstance(command, (ExpireBuckets, AutoSettle)):
        # Logs written before stamps were taken at the ordering point (the handlers stamped
        # before the shard queue) may go back by a few milliseconds. The history stays as it was
        # logged; only apply's monotonic-stamp check starts again from this record.
        state.stamp_ms_last = stamp_ms
    result = apply(state, lsn, command)
    if not (isinstance(result, Applied) and result.logged):
        raise RecoveryError(lsn, f"engine did not re-apply the logged command: {result!r}")
