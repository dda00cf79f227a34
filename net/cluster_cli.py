"""The cluster flags of `tally` (CONTRACT §12): --log-store, --node-id, --lease-ms, and the
PostgreSQL side of `tally replay|verify|inspect --log-store URL`.

    add_serve_flags(parser) / add_read_flags(parser)   the flags (TALLY_LOG_STORE, TALLY_NODE_ID,
                                                       TALLY_LEASE_MS through net/cli.py's env defaults)
    log_store_of(args) -> PgLog | None                 UsageError: --node-id missing
    replay(args) / verify(args) / inspect(args)        exit codes, JSON on stdout like the local ones

A bad value is refused by the flag's type (argparse: one line, exit 2). The URL is only checked
for its shape here; a server that cannot be reached is waited for (serve) or reported (replay).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from engine.core.commands import decode_command
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.runtime.recovery import Recovered, recover
from wal.pg import PgLog
from wal.pg.backend import LEASE_MS_DEFAULT, PgRecords

LEASE_MS_MIN: Final = 100
LEASE_MS_MAX: Final = 600_000
NODE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SCHEMES: Final = ("postgresql", "postgres")


class UsageError(Exception):
    """Operator input refused (net/cli.py prints it as one line, exit 2)."""


def log_store_url(text: str) -> str:
    """An argparse type: postgresql://USER@HOST:PORT/DB (a password, if any, stays in the URL)."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # ValueError for a bad port
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be postgresql://USER@HOST:PORT/DB ({error})") from None
    if parts.scheme not in SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise argparse.ArgumentTypeError("must be postgresql://USER@HOST:PORT/DB")
    return text


def node_id(text: str) -> str:
    """An argparse type: 1..64 of letters, digits, '_', '.', '-' (a letter or digit first)."""
    if not NODE_ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError("must be 1..64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return text


def lease_ms(text: str) -> int:
    """An argparse type: the lease in milliseconds, LEASE_MS_MIN..LEASE_MS_MAX."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer number of milliseconds, not {text!r}") from None
    if not LEASE_MS_MIN <= value <= LEASE_MS_MAX:
        raise argparse.ArgumentTypeError(f"must be {LEASE_MS_MIN}..{LEASE_MS_MAX} milliseconds, not {value}")
    return value


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-store", type=log_store_url, default=None, metavar="URL",
                        help="keep the log in PostgreSQL (cluster mode, CONTRACT §12): postgresql://USER@HOST:PORT/DB")
    parser.add_argument("--node-id", type=node_id, default=None, help="this node's name in the cluster (required with --log-store)")
    parser.add_argument("--lease-ms", type=lease_ms, default=LEASE_MS_DEFAULT,
                        help=f"the leader's lease in milliseconds (default {LEASE_MS_DEFAULT})")  # fmt: skip


def add_read_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-store", type=log_store_url, default=None, metavar="URL",
                        help="read the log from PostgreSQL instead of the data dir's segments")


def log_store_of(args: argparse.Namespace) -> PgLog | None:
    """serve: the PgLog of --log-store, None without it. UsageError when --node-id is missing."""
    if args.log_store is None:
        if args.node_id is not None:
            raise UsageError("--node-id is only meaningful with --log-store")
        return None
    if args.node_id is None:
        raise UsageError("--log-store needs --node-id (this node's name in the cluster)")
    return PgLog(args.log_store, args.node_id, lease_ms=args.lease_ms)


def _reader(args: argparse.Namespace) -> PgLog:
    return PgLog(args.log_store, node_id="reader")


def _recover(args: argparse.Namespace) -> Recovered:
    """Snapshots from --data-dir when it exists (else none), then the PostgreSQL log."""
    data_dir: Path = args.data_dir
    if data_dir.is_dir():
        return recover(data_dir, truncate_torn_tail=False, log=_reader(args))
    with tempfile.TemporaryDirectory(prefix="tally-replay-") as empty:
        return recover(Path(empty), truncate_torn_tail=False, log=_reader(args))


def replay(args: argparse.Namespace) -> int:
    recovered = _recover(args)
    print(json.dumps({**recovered.summary(), "torn_tail": None}))
    return 0


def verify(args: argparse.Namespace) -> int:
    """Every row's frames (crc32c, LSN runs), a replay, the money invariants. Exit 1 when bad."""
    recovered = _recover(args)
    problems = check_invariants(recovered.state)
    if problems:
        for problem in problems[:20]:
            print(f"tally verify: invariant broken: {problem}", file=sys.stderr)
        print(json.dumps({"ok": False, "invariants_broken": len(problems), "first": problems[0]}))
        return 1
    print(json.dumps({"ok": True, "records": recovered.records_replayed, "last_lsn": recovered.state.last_lsn,
                      "digest": digest(recovered.state), "torn_tail": None}))  # fmt: skip
    return 0


def inspect(args: argparse.Namespace) -> int:
    """One JSON line per record: lsn, the row's position and epoch, the command."""
    records = PgRecords(_reader(args), 0)
    for lsn, payload in records:
        try:
            decoded = decode_command(payload)
            command: Any = {"op": type(decoded).__struct_config__.tag, **msgspec.structs.asdict(decoded)}
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            command = {"undecodable": str(error)}
        line = msgspec.json.encode({"lsn": lsn, "position": records.position, "epoch": records.epoch, "command": command})
        try:
            sys.stdout.write(line.decode() + "\n")
        except BrokenPipeError:
            sys.stderr.close()
            return 0
    return 0
