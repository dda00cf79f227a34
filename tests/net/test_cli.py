"""The operator interface of CONTRACT §5, through the real `tally` command in subprocesses.

What: keys create/list/revoke offline and refused (exit 2) while a server holds the data dir;
replay/verify/inspect output; verify naming the first bad file and offset; bootstrap key file;
bad operator input (flags, TALLY_BOOTSTRAP_KEY, data dir, address) refused with one line, exit 2.
How it could fail: a changed output field or exit code breaks the outside checks that rely on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime import Runtime, RuntimeConfig
from tests.system.server import TallyProcess
from tests.system.server import tally_cli as tally

TIMEOUT_S = 60  # the shell pipeline in the inspect test; a refused command (a serve that started by mistake)


def test_keys_offline_and_refused_while_serving(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = tally("keys", "create", "--data-dir", str(data), "--project", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("tly_") and len(key) == 52
    listed = [json.loads(line) for line in tally("keys", "list", "--data-dir", str(data)).stdout.splitlines()]
    assert [(k["project"], k["revoked"]) for k in listed] == [("acme", False)]
    server = TallyProcess(data, api_key="unused-bootstrap").start()  # a key exists: no bootstrap
    try:
        for action in (("list",), ("create", "--project", "x"), ("revoke", listed[0]["key_id"])):
            held = tally("keys", *action, "--data-dir", str(data))
            assert held.returncode == 2 and "held by a running server" in held.stderr
    finally:
        assert server.stop() == 0
    assert tally("keys", "revoke", listed[0]["key_id"], "--data-dir", str(data)).returncode == 0
    again = [json.loads(line) for line in tally("keys", "list", "--data-dir", str(data)).stdout.splitlines()]
    assert [(k["key_id"], k["revoked"]) for k in again] == [(listed[0]["key_id"], True)]
    assert tally("keys", "revoke", "key_unknown", "--data-dir", str(data)).returncode == 1


def test_bootstrap_key_file_is_private_and_printed_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = TallyProcess(data, api_key="")  # empty TALLY_BOOTSTRAP_KEY: the server makes a key
    server.start()
    try:
        key_file = data / "bootstrap-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key in server.log()
    finally:
        assert server.stop() == 0
    keys = tally("keys", "list", "--data-dir", str(data)).stdout.splitlines()
    assert [json.loads(line)["project"] for line in keys] == ["default"]


def test_replay_verify_inspect_and_a_damaged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert tally("keys", "create", "--data-dir", str(data), "--project", "p").returncode == 0
    assert tally("keys", "create", "--data-dir", str(data), "--project", "q").returncode == 0
    replay = json.loads(tally("replay", "--data-dir", str(data)).stdout)
    assert (replay["records"], replay["last_lsn"], replay["customers"]) == (2, 2, 0)
    assert len(replay["digest"]) == 64 and replay["torn_tail"] is None
    verified = tally("verify", "--data-dir", str(data))
    assert verified.returncode == 0 and json.loads(verified.stdout)["digest"] == replay["digest"]
    lines = [json.loads(line) for line in tally("inspect", "--data-dir", str(data)).stdout.splitlines()]
    assert [(r["lsn"], r["command"]["op"], r["command"]["project"]) for r in lines] == [
        (1, "create_api_key", "p"), (2, "create_api_key", "q")]
    segment = data / lines[0]["segment"]
    raw = bytearray(segment.read_bytes())
    raw[lines[0]["offset"] + 12] ^= 0x01  # inside the first frame; a sound frame follows it
    segment.write_bytes(bytes(raw))
    broken = tally("verify", "--data-dir", str(data))
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["ok"] is False
    assert (Path(report["path"]).name, report["offset"]) == (segment.name, lines[0]["offset"])
    refused = tally("replay", "--data-dir", str(data))
    assert refused.returncode == 1 and segment.name in refused.stderr


def test_inspect_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """More output than a pipe buffer holds, read by `head -n 1`: inspect meets a closed pipe."""
    data = tmp_path / "data"

    async def many_records() -> None:
        runtime = await Runtime.open(RuntimeConfig(data_dir=data))
        try:
            await asyncio.gather(*(runtime.create_api_key("p", f"key-{i}", f"key_{i}") for i in range(2000)))
        finally:
            await runtime.close()

    asyncio.run(many_records())
    command = f"{sys.executable} -m net.cli inspect --data-dir {data} | head -n 1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], check=False, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0 and json.loads(done.stdout)["lsn"] == 1
    assert "Traceback" not in done.stderr


# -- operator input: one line on stderr, exit 2, nothing opened ---------------------------------------
# What: every flag of every subcommand, TALLY_BOOTSTRAP_KEY, the data directory and the listening
# address, given a bad value. How: the real `tally` command; each case names the text its one line
# must hold. How it could fail: a traceback, a usage block, exit 1, or a data dir made before the
# refusal (a bootstrap key written for a server that never starts).

BAD_SERVE_FLAGS = [
    (["--port", "99999"], "--port must be 0..65535"),
    (["--port", "-1"], "--port must be 0..65535"),
    (["--port", "abc"], "--port"),
    (["--port", "3.5"], "--port"),
    (["--shard-count", "0"], "--shard-count must be 1..256"),
    (["--shard-count", "257"], "--shard-count must be 1..256"),
    (["--shard-count", "256"], "--shard-count 256 does not fit"),  # the WAL queue bounds it first
    (["--shard-count", "four"], "--shard-count"),
    (["--shard-queue-depth-max", "10"], "--shard-queue-depth-max must be at least"),
    (["--shard-queue-depth-max", "-5"], "--shard-queue-depth-max must be at least"),
    (["--snapshot-interval-records", "-1"], "--snapshot-interval-records must be 0 or more"),
    (["--snapshot-interval-s", "-1"], "--snapshot-interval-s must be 0 or more"),
    (["--snapshot-interval-s", "nan"], "--snapshot-interval-s"),
    (["--snapshot-interval-s", "inf"], "--snapshot-interval-s"),
    (["--wal-segment-size-max", "0"], "--wal-segment-size-max must be at least 4096"),
    (["--host", ""], "--host must be"),
    (["--host", "bad..host"], "--host must be"),
    (["--host", "-leading-hyphen"], "--host"),
    (["--host", "two words"], "--host must be"),
    (["--host", "192.0.2.1"], "cannot listen on --host 192.0.2.1"),  # TEST-NET-1: never ours
    (["--no-such-flag"], "unrecognized arguments"),
]


def _refused(args: list[str], *, env: dict[str, str] | None = None) -> str:
    """Run `tally ARGS`; assert exit 2, nothing on stdout and exactly one stderr line; return it."""
    command = [sys.executable, "-m", "net.cli", *args]
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=TIMEOUT_S, env=environment)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stdout) == (2, ""), (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tally: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(("flags", "says"), BAD_SERVE_FLAGS, ids=[" ".join(f) for f, _ in BAD_SERVE_FLAGS])
def test_serve_refuses_a_bad_flag_before_touching_the_data_dir(tmp_path: Path, flags: list[str], says: str) -> None:
    data = tmp_path / "data"
    line = _refused(["serve", "--port", "0", "--data-dir", str(data), *flags])
    assert says in line
    assert not data.exists()


@pytest.mark.parametrize(
    ("top", "says"),
    [
        (["--log-level", "loud", "serve"], "--log-level"),
        ([], "required: COMMAND"),
        (["keys"], "required: ACTION"),
        (["launch"], "invalid choice: 'launch'"),
        (["keys", "create"], "--project"),
        (["keys", "revoke"], "KEY_ID"),
    ],
)
def test_usage_errors_are_one_line(top: list[str], says: str) -> None:
    assert says in _refused(top)


@pytest.mark.parametrize(
    "key",
    ["k" * 513, "naïve-key", "line\nbreak", "tab\tinside", " leading-blank", "trailing-blank "],
    ids=["too-long", "non-ascii", "newline", "tab", "leading-blank", "trailing-blank"],
)
def test_serve_refuses_a_bootstrap_key_no_client_could_send(tmp_path: Path, key: str) -> None:
    data = tmp_path / "data"
    line = _refused(["serve", "--port", "0", "--data-dir", str(data)], env={"TALLY_BOOTSTRAP_KEY": key})
    assert "TALLY_BOOTSTRAP_KEY must be 1..512 printable ASCII characters" in line
    assert key.strip() not in line  # a secret is never echoed
    assert not data.exists()


OFFLINE_COMMANDS = [["keys", "list"], ["keys", "create", "--project", "p"], ["keys", "revoke", "key_x"]]
READ_ONLY_COMMANDS = [["replay"], ["verify"], ["inspect"]]
EVERY_COMMAND = [["serve", "--port", "0"], *OFFLINE_COMMANDS, *READ_ONLY_COMMANDS]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path, command: list[str]) -> None:
    file = tmp_path / "not-a-dir"
    file.write_bytes(b"x")
    assert "is not a directory" in _refused([*command, "--data-dir", str(file)])
    assert file.read_bytes() == b"x"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], *OFFLINE_COMMANDS], ids=" ".join)
def test_a_data_dir_that_cannot_be_created_is_refused(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "file").write_bytes(b"x")
    line = _refused([*command, "--data-dir", str(tmp_path / "file" / "data")])
    assert "cannot be created: Not a directory" in line


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_read_only_commands_refuse_a_missing_data_dir(tmp_path: Path, command: list[str]) -> None:
    assert "does not exist" in _refused([*command, "--data-dir", str(tmp_path / "typo")])
    assert not (tmp_path / "typo").exists()  # replay/verify/inspect never create it


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes a mode-000 directory anyway")
@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_an_unreadable_data_dir_is_refused(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o000)
    try:
        assert "--data-dir" in _refused([*command, "--data-dir", str(data)])
    finally:
        data.chmod(0o700)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "create", "--project", ""], "--project must be 1..255"),
        (["keys", "create", "--project", "p" * 256], "--project must be 1..255"),
        (["keys", "create", "--project", "bell\x07"], "--project must be 1..255"),
        (["keys", "revoke", ""], "KEY_ID must be 1..255"),
    ],
    ids=["project-empty", "project-long", "project-control", "key-id-empty"],
)
def test_keys_refuse_a_bad_name_and_write_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    data = tmp_path / "data"
    assert says in _refused([*args, "--data-dir", str(data)])
    assert not data.exists()


def test_serve_on_an_address_in_use_is_one_line(tmp_path: Path) -> None:
    """Another socket listens on the port: refused before the data dir is opened (no bootstrap key)."""
    data = tmp_path / "data"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _refused(["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)])
    assert line == f"tally: error: cannot listen on --host 127.0.0.1 --port {port}: Address already in use"
    assert not data.exists()
