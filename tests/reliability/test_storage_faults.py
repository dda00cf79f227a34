"""Storage faults: damage a stopped server's data directory, then start `tally serve` on it.

What: a real run (small 16 KiB segments) makes the data; every case works on its own copy and
injects one fault: a torn tail (the newest segment cut at random points, inside the header too),
a bit flip in the last record (a torn tail: cut off) or in an earlier record (refuse), a zero-filled
tail, a missing middle segment, a duplicated / overlapping segment, a damaged newest snapshot
(fall back to the older one, also with --prune-segments), every snapshot damaged (refuse).

Each case must end one of two ways: `tally serve` recovers exactly the durable prefix -- the
replay digest equals that of a reference directory cut cleanly at the same frame, every op in
that prefix is present (harness.check_server) and every op after it is absent (resending it
applies it fresh) -- or `serve` exits non-zero naming the file and the offset, changing no file;
`tally verify` agrees either way (exit 0 / non-zero with the same file and offset).

CI: a few random points per kind. TALLY_LONG=1: many more (counts below).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

import wal
from tests.reliability.harness import (
    ACKED,
    API_KEY,
    LONG,
    UNKNOWN,
    History,
    Workload,
    assert_verify_ok,
    check_server,
    replay,
    seed_from_env,
    verify,
)
from tests.system.server import TallyProcess, free_port
from wal.frame import FRAME_HEADER, FRAME_OVERHEAD, SEGMENT_HEADER, encode_segment_header, list_segments, segment_name

SEGMENT_SIZE = 16 * 1024
BASE_OPS = 1500
TORN_CUTS = 40 if LONG else 6
LAST_FLIPS = 20 if LONG else 3
EARLY_FLIPS = 30 if LONG else 4
REFUSE_TIMEOUT_S = 30.0

SEED = seed_from_env()
FAULTS: dict[str, int] = {}


def count(kind: str) -> None:
    FAULTS[kind] = FAULTS.get(kind, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report():
    print(f"\nstorage faults seed={SEED}")
    yield
    print(f"storage faults injected (seed={SEED}): {FAULTS}")


# -- the base data directories (one real run each) ----------------------------------------------


@dataclass
class Base:
    data_dir: Path
    history: History
    lsn_of: dict[tuple[str, str], int]  # (kind, key) -> lsn
    digest: dict
    serve_args: tuple[str, ...]


def _drive(server: TallyProcess, history: History, rng: random.Random, ops: int, snapshots: int) -> None:
    async def run() -> None:
        workload = Workload(history, rng)
        stop = asyncio.Event()

        async def watch() -> None:
            for _ in range(600):
                have = len(list(server.data_dir.glob("snapshot-*.snap")))
                if len(history.ops) >= ops and have >= snapshots:
                    break
                await asyncio.sleep(0.1)
            stop.set()

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(workload.run(session, server.base_url, stop, 8), watch())

    asyncio.run(run())
    assert not history.violations and not history.server_errors, (history.violations, history.server_errors)
    assert all(op.outcome != UNKNOWN for op in history.ops), "an op without an answer on a healthy server"


def _lsn_map(data_dir: Path, prefix: str) -> dict[tuple[str, str], int]:
    import msgspec

    from engine.core.commands import decode_command

    lsn_of: dict[tuple[str, str], int] = {}
    for frame in wal.iter_frames(data_dir):
        command = msgspec.to_builtins(decode_command(frame.payload))
        values = command.values() if isinstance(command, dict) else command
        kind = type(decode_command(frame.payload)).__name__.lower()
        keys = [v for v in values if isinstance(v, str) and re.fullmatch(rf"{prefix}_(dep|frz|ded)\d+", v)]
        if keys:
            assert len(keys) == 1, command
            lsn_of[(kind, keys[0])] = frame.lsn
    return lsn_of


def _build(root: Path, name: str, serve_args: tuple[str, ...], snapshots: int) -> Base:
    data_dir = root / name
    history = History(prefix=f"sf{name}{SEED % 10_000}")
    server = TallyProcess(data_dir, api_key=API_KEY, extra_args=serve_args).start()
    try:
        _drive(server, history, random.Random(f"{SEED}-{name}"), BASE_OPS, snapshots)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    lsn_of = _lsn_map(data_dir, history.prefix)
    acked = [op for op in history.ops if op.outcome == ACKED]
    assert set(lsn_of) <= {(op.kind, op.key) for op in acked}, "the log holds an op that was not acked"
    if list_segments(data_dir)[0][0] == 1:  # nothing pruned: every acked op is in the log
        assert len(lsn_of) == len(acked), (len(lsn_of), len(acked))
    return Base(data_dir, history, lsn_of, assert_verify_ok(data_dir), serve_args)


@pytest.fixture(scope="module")
def wal_base(tmp_path_factory) -> Base:
    base = _build(tmp_path_factory.mktemp("faults"), "walbase",
                  ("--wal-segment-size-max", str(SEGMENT_SIZE), "--snapshot-interval-records", "0"), 0)
    assert len(list_segments(base.data_dir)) >= 5, "too few segments for the segment faults"
    return base


@pytest.fixture(scope="module")
def snap_base(tmp_path_factory) -> Base:
    return _build(tmp_path_factory.mktemp("faults"), "snapbase",
                  ("--wal-segment-size-max", str(SEGMENT_SIZE), "--snapshot-interval-records", "200"), 2)


@pytest.fixture(scope="module")
def pruned_base(tmp_path_factory) -> Base:
    return _build(tmp_path_factory.mktemp("faults"), "prunedbase",
                  ("--wal-segment-size-max", str(SEGMENT_SIZE), "--snapshot-interval-records", "200",
                   "--prune-segments"), 2)


# -- helpers ---------------------------------------------------------------------------------------


def case_dir(base: Base, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(base.data_dir, target, ignore=shutil.ignore_patterns("LOCK"))
    return target


def frames(data_dir: Path) -> list[wal.FrameInfo]:
    return list(wal.iter_frames(data_dir))


def fingerprint(data_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data_dir.iterdir()) if p.name != "LOCK"}


def reference(base: Base, tmp_path: Path, surviving_lsn: int) -> Path:
    """A copy of the base cut cleanly after frame `surviving_lsn` (what recovery must equal)."""
    if (tmp_path / f"ref-{surviving_lsn}").exists():
        return tmp_path / f"ref-{surviving_lsn}"
    ref = case_dir(base, tmp_path, f"ref-{surviving_lsn}")
    for frame in frames(ref):
        if frame.lsn == surviving_lsn + 1:
            if frame.offset == SEGMENT_HEADER.size:
                frame.path.unlink()
            else:
                os.truncate(frame.path, frame.offset)
            for first_lsn, path in list_segments(ref):
                if first_lsn > surviving_lsn + 1:
                    path.unlink()
            break
    return ref


def serve_refuses(data_dir: Path, serve_args: tuple[str, ...]) -> str:
    """Run `tally serve`; it must exit non-zero by itself. Returns its output."""
    command = [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port()),
               "--data-dir", str(data_dir), *serve_args]
    env = dict(os.environ, TALLY_BOOTSTRAP_KEY=API_KEY)
    proc = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=REFUSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"tally serve started on a damaged data dir: {out[-2000:]}")
    assert proc.returncode not in (0, None), (proc.returncode, out[-2000:])
    return out


def assert_refused(base: Base, data_dir: Path, file_name: str, offset: int | None) -> None:
    """serve and verify both refuse, name the file (and offset), and change nothing."""
    before = fingerprint(data_dir)
    out = serve_refuses(data_dir, base.serve_args)
    checked = verify(data_dir)
    assert checked.returncode != 0, checked
    for text in (out, checked.stderr):
        assert file_name in text, (file_name, text[-2000:])
        pattern = rf"offset[= ]{offset}\b" if offset is not None else r"offset[= ]\d+"
        assert re.search(pattern, text), (pattern, text[-2000:])
    assert fingerprint(data_dir) == before, "a refused start changed files"


def assert_recovers(base: Base, data_dir: Path, tmp_path: Path, surviving_lsn: int) -> None:
    """verify ok; replay == the clean reference; serve recovers; every op <= surviving present,
    every op after it absent (resending applies it fresh); then a consistent end state."""
    assert_verify_ok(data_dir)
    got = replay(data_dir)
    want = replay(reference(base, tmp_path, surviving_lsn))
    assert (got["last_lsn"], got["digest"]) == (want["last_lsn"], want["digest"]), (surviving_lsn, got, want)
    assert got["last_lsn"] == surviving_lsn
    history = copy.deepcopy(base.history)
    lost = 0
    for op in history.ops:
        if op.outcome == ACKED and base.lsn_of.get((op.kind, op.key), 0) > surviving_lsn:
            op.outcome, op.status, op.response, op.replays_verified = UNKNOWN, None, None, 0
            lost += 1
    server = TallyProcess(data_dir, api_key=API_KEY, extra_args=base.serve_args).start()
    try:
        stats = asyncio.run(_check(server, history, surviving_lsn))
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert stats.unknown_resolved_applied == 0, f"{stats}: an op after lsn {surviving_lsn} survived the cut"
    assert stats.unknown_resolved_fresh + stats.unknown_resolved_rejected == lost
    assert_verify_ok(data_dir)


async def _check(server: TallyProcess, history: History, surviving_lsn: int):
    async with aiohttp.ClientSession() as session:
        return await check_server(session, server.base_url, history, random.Random(surviving_lsn), replay_sample=30)


def last_lsn_before(data_dir: Path, segment: Path, cut: int) -> int:
    """The last lsn that survives cutting `segment` at byte `cut`."""
    lsn = 0
    for frame in frames(data_dir):
        if frame.path == segment and frame.offset + len(frame.payload) + 20 > cut:
            break
        lsn = frame.lsn
    return lsn


# -- the cases -------------------------------------------------------------------------------------


def test_torn_tail_at_random_offsets(wal_base: Base, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-torn")
    newest = list_segments(wal_base.data_dir)[-1][1]
    tail_frames = [f for f in frames(wal_base.data_dir) if f.path.name == newest.name]
    last = tail_frames[-1]
    size = last.offset + FRAME_OVERHEAD + len(last.payload)  # the preallocated zeros follow
    cuts = {rng.randrange(0, SEGMENT_HEADER.size)}  # a crash while rotating
    cuts.add(last.offset + rng.randrange(1, len(last.payload) + 20))  # inside the last frame
    cuts.add(last.offset)  # exactly on a frame boundary
    while len(cuts) < TORN_CUTS:
        cuts.add(rng.randrange(SEGMENT_HEADER.size, size))
    for cut in sorted(cuts):
        data_dir = case_dir(wal_base, tmp_path, f"torn-{cut}")
        segment = data_dir / newest.name
        surviving = last_lsn_before(data_dir, segment, cut)
        os.truncate(segment, cut)
        count("torn_tail")
        assert_recovers(wal_base, data_dir, tmp_path, surviving)
        at_boundary = cut == SEGMENT_HEADER.size or any(f.offset == cut for f in tail_frames)
        if cut >= SEGMENT_HEADER.size and not at_boundary:
            assert list(data_dir.glob(f"{newest.name}.torn-*")), "the cut bytes were not kept"


def test_bit_flip_in_last_record_is_a_torn_tail(wal_base: Base, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-lastflip")
    last = frames(wal_base.data_dir)[-1]
    for n in range(LAST_FLIPS):
        data_dir = case_dir(wal_base, tmp_path, f"lastflip-{n}")
        segment = data_dir / last.path.name
        at = last.offset + rng.randrange(len(last.payload) + 20)
        flip(segment, at, rng.randrange(8))
        count("bit_flip_last_record")
        assert_recovers(wal_base, data_dir, tmp_path, last.lsn - 1)


def test_bit_flip_in_earlier_record_refuses(wal_base: Base, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-earlyflip")
    every = frames(wal_base.data_dir)
    newest = every[-1].path.name
    in_newest = [f for f in every[:-1] if f.path.name == newest and f.lsn > 1]
    older = [f for f in every if f.path.name != newest]
    picks = [rng.choice(in_newest)] if in_newest else []
    while len(picks) < EARLY_FLIPS:
        picks.append(rng.choice(older))
    for n, frame in enumerate(picks):
        data_dir = case_dir(wal_base, tmp_path, f"earlyflip-{n}")
        flip(data_dir / frame.path.name, frame.offset + rng.randrange(len(frame.payload) + 20), rng.randrange(8))
        count("bit_flip_earlier_record")
        assert_refused(wal_base, data_dir, frame.path.name, frame.offset)
    # A flipped bit in an older segment's header.
    first_lsn, path = list_segments(wal_base.data_dir)[1]
    data_dir = case_dir(wal_base, tmp_path, "headerflip")
    flip(data_dir / path.name, rng.randrange(SEGMENT_HEADER.size), rng.randrange(8))
    count("bit_flip_segment_header")
    assert_refused(wal_base, data_dir, path.name, None)


def test_zero_filled_tail_ends_the_log_and_zeros_over_the_last_frame_are_cut(wal_base: Base, tmp_path: Path) -> None:
    """Zeros after the last frame are the preallocated tail (wal/FORMAT.md): every record, nothing
    cut. Zeros over the last frame's payload (a write that did not reach the disk) are a torn tail."""
    last = frames(wal_base.data_dir)[-1]
    for n, zeros in enumerate((1, 19, 100, 4096)):
        data_dir = case_dir(wal_base, tmp_path, f"zeros-{n}")
        with open(data_dir / last.path.name, "ab") as handle:
            handle.write(bytes(zeros))
        count("zero_filled_tail")
        assert_recovers(wal_base, data_dir, tmp_path, last.lsn)
        assert not list(data_dir.glob(f"{last.path.name}.torn-*"))
        data_dir = case_dir(wal_base, tmp_path, f"zeroed-frame-{n}")
        start = next(i for i, byte in enumerate(last.payload) if byte)  # zeros that change it
        with open(data_dir / last.path.name, "r+b") as handle:
            handle.seek(last.offset + FRAME_HEADER.size + start)
            handle.write(bytes(min(zeros, len(last.payload) - start)))
        count("zero_filled_tail")
        assert_recovers(wal_base, data_dir, tmp_path, last.lsn - 1)
        assert list(data_dir.glob(f"{last.path.name}.torn-*"))


def test_missing_middle_segment_refuses(wal_base: Base, tmp_path: Path) -> None:
    segments = list_segments(wal_base.data_dir)
    rng = random.Random(f"{SEED}-missing")
    index = rng.randrange(1, len(segments) - 1)
    data_dir = case_dir(wal_base, tmp_path, "missing")
    (data_dir / segments[index][1].name).unlink()
    count("missing_middle_segment")
    assert_refused(wal_base, data_dir, segments[index + 1][1].name, 0)


def test_duplicated_segment_refuses(wal_base: Base, tmp_path: Path) -> None:
    segments = list_segments(wal_base.data_dir)
    every = frames(wal_base.data_dir)
    last_lsn = every[-1].lsn
    # 1. A byte copy of an older segment under the next segment's name (header disagrees).
    data_dir = case_dir(wal_base, tmp_path, "dup-copy")
    copied = data_dir / segment_name(last_lsn + 1)
    shutil.copyfile(data_dir / segments[1][1].name, copied)
    count("duplicated_segment")
    assert_refused(wal_base, data_dir, copied.name, 12)  # the header's first_lsn field
    # 2. A well-formed segment overlapping the newest one: its frames re-framed from lsn first+1.
    first_lsn, newest = segments[-1]
    tail = [f for f in every if f.path.name == newest.name]
    assert len(tail) >= 2
    data_dir = case_dir(wal_base, tmp_path, "dup-overlap")
    raw = (data_dir / newest.name).read_bytes()
    overlap = data_dir / copied.name.replace(f"{last_lsn + 1:020d}", f"{first_lsn + 1:020d}")
    overlap.write_bytes(encode_segment_header(first_lsn + 1) + raw[tail[1].offset:])
    count("duplicated_segment")
    assert_refused(wal_base, data_dir, overlap.name, 0)
    # 3. An older segment duplicated in the middle (overlapping the one after it).
    first_lsn, middle = segments[2]
    mid_frames = [f for f in every if f.path.name == middle.name]
    data_dir = case_dir(wal_base, tmp_path, "dup-middle")
    raw = (data_dir / middle.name).read_bytes()
    overlap = data_dir / middle.name.replace(f"{first_lsn:020d}", f"{mid_frames[1].lsn:020d}")
    overlap.write_bytes(encode_segment_header(mid_frames[1].lsn) + raw[mid_frames[1].offset:])
    count("duplicated_segment")
    assert_refused(wal_base, data_dir, overlap.name, 0)


@pytest.mark.parametrize("which", ["snap", "pruned"])
def test_damaged_newest_snapshot_falls_back(which: str, snap_base: Base, pruned_base: Base, tmp_path: Path) -> None:
    base = snap_base if which == "snap" else pruned_base
    rng = random.Random(f"{SEED}-snap-{which}")
    snapshots = sorted(base.data_dir.glob("snapshot-*.snap"))
    assert len(snapshots) >= 2, snapshots
    last_lsn = base.digest["last_lsn"]
    damages = {
        "flip": lambda p: flip(p, rng.randrange(p.stat().st_size), rng.randrange(8)),
        "truncate": lambda p: os.truncate(p, rng.randrange(p.stat().st_size)),
        "zeros": lambda p: p.write_bytes(bytes(p.stat().st_size)),
    }
    for name, damage in damages.items():
        data_dir = case_dir(base, tmp_path, f"{which}-{name}")
        damage(data_dir / snapshots[-1].name)
        # A stray half-written newer snapshot (a crash mid-snapshot) must be ignored too.
        (data_dir / f"snapshot-{last_lsn + 5:020d}.snap.tmp").write_bytes(b"TALLYSNP" + bytes(30))
        count("damaged_newest_snapshot")
        assert_recovers(base, data_dir, tmp_path, last_lsn)
    # Every snapshot damaged: refuse, naming the newest.
    data_dir = case_dir(base, tmp_path, f"{which}-all")
    for path in snapshots:
        flip(data_dir / path.name, 40 + rng.randrange(path.stat().st_size - 40), 0)
    count("all_snapshots_damaged")
    assert_refused(base, data_dir, snapshots[-1].name, None)


def flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))
