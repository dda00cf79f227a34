"""`tally`: the operator's entry point (CONTRACT §5). The only module that reads argv and env.

    tally serve   [--host 127.0.0.1] [--port 3002] [--data-dir ./tally-data] [tuning flags]
    tally keys    create --project NAME | list | revoke KEY_ID      [--data-dir D]
    tally replay  [--data-dir D]   one JSON object: records, last_lsn, customers, digest, ...
    tally verify  [--data-dir D]   exit 0 when every checksum and invariant holds, 1 otherwise
    tally inspect [--data-dir D]   WAL records as JSON lines
    tally mcp     [--allow-writes] MCP server on stdio for AI agents, a client of a running Tally
                                   (env TALLY_URL, default http://127.0.0.1:3002, and TALLY_API_KEY)

Exit codes: 0 ok; 1 damaged data / verification failed / refused command; 2 usage error or the
data directory is held by a running server.

Operator input (every flag, TALLY_BOOTSTRAP_KEY, the data directory, the listening address) is
checked before anything is opened or written: a bad value is one line on stderr,
`tally: error: --port must be 0..65535, not 99999`, and exit 2, never a traceback. The config
values raise ValueError naming their field; this module names the flag instead.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import json
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import msgspec
from tqdm import tqdm

import wal
from engine.core import queries
from engine.core.commands import RevokeApiKey, decode_command
from engine.core.digest import digest
from engine.core.invariants import check_invariants
from engine.core.limits import API_KEY_LENGTH_MAX, ID_LENGTH_MAX
from engine.core.results import Rejected
from engine.runtime import Runtime, RuntimeConfig
from engine.runtime.recovery import RecoveryError, recover
from net import cluster_cli
from net.config import WORKERS_MAX, ServerConfig
from net.logs import LOG_FORMATS, LOG_LEVELS, configure_logging

if TYPE_CHECKING:  # imported where used: mcp and its dependencies load only for `tally mcp`
    from net.mcp_server import McpConfig

DEFAULT_DATA_DIR = "./tally-data"
EXIT_OK, EXIT_BAD, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Operator input the CLI refuses: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tally: error: {message} (see: {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The `tally` command. `environ` (default os.environ) supplies TALLY_<FLAG> values (§9.6)."""
    try:
        parser = _parser(os.environ if environ is None else environ)
    except UsageError as error:
        print(f"tally: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    if args.log_level is None:  # serve: lifecycle and request lines; the offline commands: problems only
        args.log_level = "info" if args.run is _cmd_serve else "warning"
    configure_logging(getattr(args, "log_format", "text"), args.log_level)
    try:
        return int(args.run(args))
    except UsageError as error:
        print(f"tally: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except wal.DataDirLocked:
        print(f"tally: data directory {args.data_dir} is held by a running server; stop it first", file=sys.stderr)
        return EXIT_USAGE
    except (wal.WalCorrupt, RecoveryError) as error:
        print(f"tally: damaged data, refusing to load it: {error}", file=sys.stderr)
        return EXIT_BAD
    except ValueError as error:  # e.g. `keys create` colliding with an existing key id
        print(f"tally: {error}", file=sys.stderr)
        return EXIT_BAD
    except OSError as error:  # e.g. the disk fails under us (bad input was refused up front)
        print(f"tally: {error}", file=sys.stderr)
        return EXIT_BAD


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; every serve flag's default comes from TALLY_<FLAG> when set (and
    TALLY_DATA_DIR is every command's --data-dir default). Raises UsageError for a bad variable."""
    parser = _Parser(prog="tally", description="Tally credit ledger server")
    parser.add_argument("--version", action="version", version=f"tally {_version()}")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS,
                        help="default: info for serve, warning for the other commands")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    _data_dir(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3002)
    serve.add_argument("--log-format", default="json", choices=LOG_FORMATS,
                       help="stderr lines: json (one object per line) or text (for people)")
    serve.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                       help="info (default): lifecycle + one line per request; warning: problems only")
    serve.add_argument("--shard-count", type=int, default=RuntimeConfig.shard_count)
    serve.add_argument("--shard-queue-depth-max", type=int, default=RuntimeConfig.shard_queue_depth_max)
    serve.add_argument("--snapshot-interval-records", type=int, default=RuntimeConfig.snapshot_interval_records,
                       help="take a snapshot after this many WAL records (0: never by count)")
    serve.add_argument("--snapshot-interval-s", type=_seconds, default=RuntimeConfig.snapshot_interval_s,
                       help="take a snapshot after this many seconds with new records (0: never by time)")
    serve.add_argument("--wal-segment-size-max", type=int, default=RuntimeConfig.wal_segment_size_max,
                       help="start a new WAL segment past this many bytes")
    serve.add_argument("--prune-segments", action=argparse.BooleanOptionalAction, default=False,
                       help="delete WAL segments a durable snapshot covers (default: keep them)")
    serve.add_argument("--workers", type=int, default=None,
                       help="HTTP front processes (default: the number of cores; 1 with --log-store); "
                            "1: one process, no IPC")
    serve.add_argument("--unsafe-skip-fsync", action=argparse.BooleanOptionalAction, default=False,
                       help="BENCHMARKS ONLY: never fsync; acknowledged writes can be lost on a crash")
    cluster_cli.add_serve_flags(serve)  # CONTRACT §12
    serve.set_defaults(run=_cmd_serve)
    _environment_defaults(serve, environ)

    keys = commands.add_parser("keys", help="manage API keys (server must be stopped)")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="print a new key for a project (created if new)")
    _data_dir(create)
    create.add_argument("--project", required=True)
    create.set_defaults(run=_cmd_keys_create)
    listing = key_commands.add_parser("list", help="list keys: id, project, revoked, label, times")
    _data_dir(listing)
    listing.add_argument("--admin", action="store_true", help="list the admin keys instead (CONTRACT §9.1)")
    listing.set_defaults(run=_cmd_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    _data_dir(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(run=_cmd_keys_revoke)

    for name, run, text in (
        ("replay", _cmd_replay, "rebuild state from snapshot + WAL and print its digest"),
        ("verify", _cmd_verify, "check every checksum and invariant"),
        ("inspect", _cmd_inspect, "print WAL records as JSON lines"),
    ):
        sub = commands.add_parser(name, help=text)
        _data_dir(sub)
        cluster_cli.add_read_flags(sub)
        sub.set_defaults(run=run)

    backup = commands.add_parser("backup", help="copy a data directory, even while a server runs")
    _data_dir(backup)
    backup.add_argument("--to", type=Path, required=True, help="a new or empty directory")
    backup.set_defaults(run=_cmd_backup)
    for sub in (create, listing, revoke, backup, *(commands.choices[n] for n in ("replay", "verify", "inspect"))):
        _environment_defaults(sub, environ, only=("data_dir", "log_store"))
    mcp = commands.add_parser("mcp", help="MCP server on stdio for AI agents (env TALLY_URL, TALLY_API_KEY)")
    mcp.add_argument("--allow-writes", action="store_true",
                     help="also offer deposit, deduct, freeze, consume, unfreeze (default: read-only)")
    mcp.set_defaults(run=_cmd_mcp)
    return parser


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR),
                        help=f"default {DEFAULT_DATA_DIR} (environment: TALLY_DATA_DIR)")


def _version() -> str:
    try:
        return importlib.metadata.version("tally")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off", "")


def env_name(dest: str) -> str:
    """The environment variable of a flag's destination: data_dir -> TALLY_DATA_DIR (§9.6)."""
    return "TALLY_" + dest.upper()


def _environment_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str],
                          only: tuple[str, ...] | None = None) -> None:  # fmt: skip
    """CONTRACT §9.6: each flag of `parser` (or only those dests) takes TALLY_<FLAG> as its
    default, converted and checked like the flag itself; a flag on the command line wins.
    Raises UsageError (one line, naming the variable) for a value the flag would refuse."""
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "log_level") or (only and action.dest not in only):
            continue
        name = env_name(action.dest)
        text = environ.get(name)
        if text is None:
            continue
        defaults[action.dest] = _environment_value(action, name, text)
    level = environ.get("TALLY_LOG_LEVEL")
    if only is None and level is not None:  # serve's --log-level (also a top-level option)
        if level.lower() not in LOG_LEVELS:
            raise UsageError(f"TALLY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        defaults["log_level"] = level.lower()
    parser.set_defaults(**defaults, environment_values=dict(defaults))


def _environment_value(action: argparse.Action, name: str, text: str) -> Any:
    if isinstance(action, argparse.BooleanOptionalAction):
        if text.lower() not in _TRUE + _FALSE:
            raise UsageError(f"{name} must be one of 1, true, yes, on, 0, false, no, off; not {text!r}")
        return text.lower() in _TRUE
    convert: Any = action.type or str
    try:
        value = convert(text)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
        kind = getattr(convert, "__name__", "value")
        detail = str(error) if isinstance(error, argparse.ArgumentTypeError) else f"invalid {kind} value"
        raise UsageError(f"{name}: {detail}: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, action.choices))}, not {text!r}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a finite number (float() also takes 'nan' and 'inf')."""
    value = float(text)  # ValueError: argparse says "invalid _seconds value"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, not {text!r}")
    return value


# -- operator input: every check raises UsageError (one line, exit 2) before anything is opened ----

# Config field -> the flag that sets it: the configs raise ValueError naming their field.
FLAG_BY_FIELD = {
    "host": "--host",
    "port": "--port",
    "shard_count": "--shard-count",
    "shard_queue_depth_max": "--shard-queue-depth-max",
    "snapshot_interval_records": "--snapshot-interval-records",
    "snapshot_interval_s": "--snapshot-interval-s",
    "wal_segment_size_max": "--wal-segment-size-max",
}


def _flag_message(error: ValueError, args: argparse.Namespace) -> str:
    """A config's one-line ValueError, spoken in flags: `--port must be 0..65535, not 99999`."""
    message = (str(error).splitlines() or ["invalid value"])[0]
    field, _, rest = message.partition(" ")
    for knob in ("shard_batch_size_max", "wal_batch_records_max", "wal_queue_records_max"):  # no flag: say the value
        rest = rest.replace(knob, f"{knob} ({getattr(RuntimeConfig, knob)})")
        field = f"{knob} ({getattr(RuntimeConfig, knob)})" if field == knob else field
    message = f"{field} {rest}"
    if field in FLAG_BY_FIELD:
        flag = FLAG_BY_FIELD[field]
        message = f"{flag} {rest}"
        given = getattr(args, field)
        shown = repr(given) if isinstance(given, str) else str(given)
        message = message if f"not {shown}" in message else f"{message}, not {shown}"
        from_environment = getattr(args, "environment_values", {})
        if field in from_environment and from_environment[field] == given:
            message += f" (from {env_name(field)})"
        return message
    # A relation between knobs the flags do not set one by one: the WAL queue must hold one batch
    # per shard, so it bounds --shard-count.
    return f"--shard-count {args.shard_count} does not fit the runtime: {message}"


def _serve_configs(args: argparse.Namespace) -> tuple[ServerConfig, RuntimeConfig]:
    try:
        return ServerConfig(host=args.host, port=args.port), _serve_runtime_config(args)
    except ValueError as error:
        raise UsageError(_flag_message(error, args)) from None


def _bootstrap_key(environ: Mapping[str, str], variable: str = "TALLY_BOOTSTRAP_KEY") -> str | None:
    """TALLY_BOOTSTRAP_KEY (or TALLY_ADMIN_KEY, CONTRACT §9.1), checked for the shape net/auth.py
    accepts in a bearer token (printable ASCII, at most API_KEY_LENGTH_MAX, no surrounding blanks,
    which the header parser strips): a key that could never authenticate is refused at start, not
    discovered at the first request. Unset or empty: the server makes a key (CONTRACT §5). The
    value is never echoed (a secret)."""
    key = environ.get(variable) or None
    if key is None:
        return None
    if len(key) > API_KEY_LENGTH_MAX or not (key.isascii() and key.isprintable()) or key != key.strip(" \t"):
        raise UsageError(
            f"{variable} must be 1..{API_KEY_LENGTH_MAX} printable ASCII characters "
            f"without leading or trailing blanks (got {len(key)} characters)"
        )
    return key


def _check_listen(host: str, port: int) -> None:
    """The address resolves and can be bound now (nothing else listens there): found before the
    data dir is opened or a bootstrap key is made. serve binds again; a race is caught there."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise UsageError(f"--host {host!r} does not resolve: {error}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's create_server
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                raise UsageError(f"cannot listen on --host {host} --port {port}: {error.strerror}") from None


def _writable_data_dir(path: Path) -> None:
    """serve and keys: the directory exists (made here if missing, mode 0700: CONTRACT §9.6) and
    we may read and write it."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir {str(path)!r} is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--data-dir {str(path)!r} cannot be created: {error.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(f"--data-dir {str(path)!r} is not readable and writable by this user")


def _readable_data_dir(path: Path) -> None:
    """replay, verify, inspect change nothing: the directory must already exist and be readable."""
    if not path.exists():
        raise UsageError(f"--data-dir {str(path)!r} does not exist")
    if not path.is_dir():
        raise UsageError(f"--data-dir {str(path)!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"--data-dir {str(path)!r} is not readable by this user")


def _name(flag: str, value: str) -> str:
    """A project name or key id: 1..ID_LENGTH_MAX characters, no control characters (§7.7)."""
    if not 1 <= len(value) <= ID_LENGTH_MAX or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"{flag} must be 1..{ID_LENGTH_MAX} characters without control characters")
    return value


def _serve_runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    """The serve flags, mapped one to one; every other knob keeps RuntimeConfig's default, except
    the WAL flusher: a process (RuntimeConfig's default, a thread, suits in-process embedders)."""
    return RuntimeConfig(
        data_dir=args.data_dir,
        shard_count=args.shard_count,
        shard_queue_depth_max=args.shard_queue_depth_max,
        snapshot_interval_records=args.snapshot_interval_records,
        snapshot_interval_s=args.snapshot_interval_s,
        wal_segment_size_max=args.wal_segment_size_max,
        keep_segments=not args.prune_segments,
        fsync=not args.unsafe_skip_fsync,
        wal_flusher_process=True,  # a served data directory syncs in its own process (wal/flusher.py)
    )


# -- serve -------------------------------------------------------------------------------------


def _workers_of(args: argparse.Namespace, *, cluster: bool) -> int:
    """--workers / TALLY_WORKERS, checked: 1..WORKERS_MAX, default the number of cores. A cluster
    node (--log-store, CONTRACT §12) runs as one process: its role changes (leader, standby) live
    in that process's observer, which front processes do not share, so it takes 1 by default and
    refuses more (UsageError)."""
    source = " (from TALLY_WORKERS)" if "workers" in getattr(args, "environment_values", {}) else ""
    if args.workers is None:
        return 1 if cluster else os.cpu_count() or 1
    if not 1 <= args.workers <= WORKERS_MAX:
        raise UsageError(f"--workers must be 1..{WORKERS_MAX}, not {args.workers}{source}")
    if cluster and args.workers != 1:
        raise UsageError(f"--workers must be 1 with --log-store (a cluster node is one process), not {args.workers}{source}")
    return int(args.workers)


def _cmd_serve(args: argparse.Namespace) -> int:
    config, runtime_config = _serve_configs(args)
    bootstrap_key = _bootstrap_key(os.environ)
    admin_key = _bootstrap_key(os.environ, "TALLY_ADMIN_KEY")
    if admin_key is not None and admin_key == bootstrap_key:
        raise UsageError("TALLY_ADMIN_KEY must differ from TALLY_BOOTSTRAP_KEY")
    try:
        log_store = cluster_cli.log_store_of(args)
    except cluster_cli.UsageError as error:
        raise UsageError(str(error)) from None
    workers = _workers_of(args, cluster=log_store is not None)
    _check_listen(config.host, config.port)
    _writable_data_dir(args.data_dir)
    # The server listens before it takes the lock (CONTRACT §9.5): refuse a held data dir first
    # (exit 2, nothing listened). A server starting between this and Runtime.open is refused there.
    probe = wal.DataDirLock(args.data_dir)
    probe.acquire()
    probe.release()
    # Imported here: uvloop/aiohttp are only needed to serve, and only once the input is sound.
    from net.server import serve

    try:
        exit_code = serve(config, runtime_config, bootstrap_key=bootstrap_key, admin_key=admin_key,
                          log_format=args.log_format, log_requests=args.log_level in ("debug", "info"),
                          workers=workers, log_level=args.log_level, log_store=log_store)  # fmt: skip
    except OSError as error:
        if error.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        # Taken between _check_listen and the bind (the runtime was opened and closed cleanly).
        raise UsageError(f"cannot listen on --host {config.host} --port {config.port}: {error.strerror}") from None
    # Everything is fsync'd and the lock released: skip tearing down millions of objects one by
    # one (seconds with a big ledger) and exit now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


# -- keys (offline: they take the data-dir lock, so they refuse while a server runs) ----------------


def _offline(args: argparse.Namespace, work: Callable[[Runtime], Awaitable[Any]]) -> Any:
    _writable_data_dir(args.data_dir)

    async def run() -> Any:
        runtime = await Runtime.open(RuntimeConfig(data_dir=args.data_dir))
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(run())


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from net.bootstrap import new_api_key

    project = _name("--project", args.project)
    key, key_id = new_api_key()
    _offline(args, lambda runtime: runtime.create_api_key(project, key, key_id))
    print(f"created key {key_id} for project {project!r}", file=sys.stderr)
    print(key)
    return EXIT_OK


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from engine.core.apikeys import key_view

    async def listing(runtime: Runtime) -> list[Any]:
        return queries.list_api_keys(runtime.state)

    for record in _offline(args, listing):
        if record.admin != args.admin:
            continue
        view = key_view(record)  # never the key or its hash
        print(json.dumps({"key_id": record.key_id, "project": record.project, "revoked": record.revoked,
                          "admin": record.admin, "label": view.label, "created_at": view.created_at,
                          "revoked_at": view.revoked_at}))  # fmt: skip
    return EXIT_OK


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    key_id = _name("KEY_ID", args.key_id)

    async def revoke(runtime: Runtime) -> Any:
        return await runtime.submit(RevokeApiKey(at_ms=runtime.clock_ms(), key_id=key_id))

    result = _offline(args, revoke)
    if isinstance(result, Rejected):
        print(f"tally: {result.message}", file=sys.stderr)
        return EXIT_BAD
    print(f"revoked {key_id}", file=sys.stderr)
    return EXIT_OK


# -- replay / verify / inspect (read-only: no lock, no file is changed) ----------------------------


def _recover_with_progress(data_dir: Path) -> Any:
    with tqdm(desc="replaying", unit="rec", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:

        def on_record(_lsn: int) -> None:
            bar.update()

        return recover(data_dir, truncate_torn_tail=False, on_record=on_record)


def _cmd_replay(args: argparse.Namespace) -> int:
    if args.log_store is not None:  # CONTRACT §12.5
        return cluster_cli.replay(args)
    _readable_data_dir(args.data_dir)
    recovered = _recover_with_progress(args.data_dir)
    print(json.dumps({**recovered.summary(), "torn_tail": _torn_json(recovered.torn)}))
    return EXIT_OK


def _torn_json(torn: wal.TornTail | None) -> dict[str, Any] | None:
    """A torn tail as JSON: the normal trace of a crash mid-write (never acknowledged)."""
    if torn is None:
        return None
    return {"path": str(torn.path), "offset": torn.offset, "length": torn.length, "reason": torn.reason}


def _cmd_verify(args: argparse.Namespace) -> int:
    """Checksums and LSN continuity of every segment, then a replay and the money invariants.
    Prints one JSON object either way; exit 1 names the first bad file and offset."""
    if args.log_store is not None:  # CONTRACT §12.5
        return cluster_cli.verify(args)
    _readable_data_dir(args.data_dir)
    report = wal.verify_log(args.data_dir)
    if not report.ok:
        error = report.error
        print(f"tally verify: {error}", file=sys.stderr)
        print(json.dumps({"ok": False, "path": str(report.path), "offset": report.offset,
                          "reason": getattr(error, "reason", str(error)), "records_before": report.records}))
        return EXIT_BAD
    recovered = _recover_with_progress(args.data_dir)
    problems = check_invariants(recovered.state)
    if problems:
        for problem in problems[:20]:
            print(f"tally verify: invariant broken: {problem}", file=sys.stderr)
        print(json.dumps({"ok": False, "invariants_broken": len(problems), "first": problems[0]}))
        return EXIT_BAD
    if report.torn is not None:
        print(f"tally verify: torn tail (unacknowledged; serve truncates it): {report.torn.path} "
              f"offset {report.torn.offset}", file=sys.stderr)
    print(json.dumps({
        "ok": True,
        "records": report.records,
        "last_lsn": recovered.state.last_lsn,
        "digest": digest(recovered.state),
        "torn_tail": _torn_json(report.torn),
    }))
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.log_store is not None:  # CONTRACT §12.5
        return cluster_cli.inspect(args)
    _readable_data_dir(args.data_dir)
    out = sys.stdout
    for frame in wal.iter_frames(args.data_dir):
        try:
            decoded = decode_command(frame.payload)
            # The log stores commands as arrays (array_like); show operators named fields.
            command: Any = {"op": type(decoded).__struct_config__.tag, **msgspec.structs.asdict(decoded)}
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            command = {"undecodable": str(error)}
        line = msgspec.json.encode({"lsn": frame.lsn, "segment": frame.path.name, "offset": frame.offset, "command": command})
        try:
            out.write(line.decode() + "\n")
        except BrokenPipeError:  # `tally inspect | head`: the reader has what it wanted
            sys.stderr.close()
            return EXIT_OK
    return EXIT_OK


# -- mcp (a client of a running server: no data dir, no lock) --------------------------------------

# McpConfig field -> the environment variable that sets it.
ENV_BY_FIELD = {"url": "TALLY_URL", "api_key": "TALLY_API_KEY"}


def _mcp_config(args: argparse.Namespace, environ: Mapping[str, str]) -> McpConfig:
    """TALLY_URL (unset or empty: the default) and TALLY_API_KEY (unset or empty: none, and the
    API tools answer the server's 401), checked before stdio is served. The key is never echoed."""
    from net.mcp_server import URL_DEFAULT, McpConfig

    url = environ.get("TALLY_URL") or URL_DEFAULT
    try:
        return McpConfig(url=url, api_key=environ.get("TALLY_API_KEY") or None, allow_writes=args.allow_writes)
    except ValueError as error:
        field, _, rest = str(error).partition(" ")
        raise UsageError(f"{ENV_BY_FIELD.get(field, field)} {rest}") from None


def _cmd_mcp(args: argparse.Namespace) -> int:
    config = _mcp_config(args, os.environ)
    from net.mcp_server import serve

    if config.api_key is None:
        print("tally mcp: TALLY_API_KEY is not set; the API tools will answer 401 missing_api_key",
              file=sys.stderr)
    return serve(config)


# -- backup (no lock: works beside a running server) ---------------------------------------------


def _cmd_backup(args: argparse.Namespace) -> int:
    """CONTRACT §9.7: copy snapshot + WAL (+ side files) to --to, which must be new or empty."""
    _readable_data_dir(args.data_dir)
    target: Path = args.to
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"--to {str(target)!r} exists and is not an empty directory")
    if target.resolve() == args.data_dir.resolve():
        raise UsageError("--to must differ from --data-dir")
    report = wal.backup(args.data_dir, target)
    print(json.dumps({"ok": True, "to": str(target), "snapshot_lsn": report.snapshot_lsn,
                      "last_lsn": report.last_lsn, "files": report.files, "bytes": report.bytes}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
