"""The operator interface of CONTRACT §5, through the real `tally` command in subprocesses.

What: keys create/list/revoke offline and refused (exit 2) while a server holds the data dir;
replay/verify/inspect output; verify naming the first bad file and offset; bootstrap key file.
How it could fail: a changed output field or exit code breaks the outside checks that rely on it.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

from engine.runtime import Runtime, RuntimeConfig
from tests.system.server import TallyProcess
from tests.system.server import tally_cli as tally

TIMEOUT_S = 60  # the shell pipeline in the inspect test


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
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0 and json.loads(done.stdout)["lsn"] == 1
    assert "Traceback" not in done.stderr
