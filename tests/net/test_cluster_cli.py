"""The cluster flags of `tally serve` and `tally replay|verify|inspect` (CONTRACT §12): a bad value,
from a flag or from TALLY_LOG_STORE / TALLY_NODE_ID / TALLY_LEASE_MS, is one stderr line and exit 2,
before the data dir is touched or PostgreSQL is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.net.test_cli import _refused

DSN = "postgresql://tally@127.0.0.1:5432/tally"

BAD = [
    (["--log-store", DSN], {}, "--log-store needs --node-id"),
    (["--node-id", "n1"], {}, "--node-id is only meaningful with --log-store"),
    (["--log-store", "mysql://x@h/db", "--node-id", "n1"], {}, "--log-store: must be postgresql://"),
    (["--log-store", "postgresql://h:99999/db", "--node-id", "n1"], {}, "--log-store: must be postgresql://"),
    (["--log-store", "postgresql://h:5432/", "--node-id", "n1"], {}, "--log-store: must be postgresql://"),
    (["--log-store", DSN, "--node-id", "has space"], {}, "--node-id: must be 1..64"),
    (["--log-store", DSN, "--node-id", "x" * 65], {}, "--node-id: must be 1..64"),
    (["--log-store", DSN, "--node-id", "n1", "--lease-ms", "50"], {}, "--lease-ms: must be 100..600000"),
    (["--log-store", DSN, "--node-id", "n1", "--lease-ms", "soon"], {}, "--lease-ms: must be an integer"),
    (["--node-id", "n1"], {"TALLY_LOG_STORE": "nope"}, "TALLY_LOG_STORE: must be postgresql://"),
    (["--log-store", DSN], {"TALLY_NODE_ID": "-bad"}, "TALLY_NODE_ID: must be 1..64"),
    (["--log-store", DSN, "--node-id", "n1"], {"TALLY_LEASE_MS": "0"}, "TALLY_LEASE_MS: must be 100..600000"),
    ([], {"TALLY_LOG_STORE": DSN}, "--log-store needs --node-id"),
    (["--log-store", DSN, "--node-id", "n1", "--workers", "2"], {}, "--workers must be 1 with --log-store"),
    (["--log-store", DSN, "--node-id", "n1"], {"TALLY_WORKERS": "2"}, "not 2 (from TALLY_WORKERS)"),
]


@pytest.mark.parametrize(("flags", "env", "says"), BAD, ids=[says for _, _, says in BAD])
def test_serve_refuses_bad_cluster_flags(tmp_path: Path, flags: list[str], env: dict[str, str], says: str) -> None:
    data = tmp_path / "data"
    line = _refused(["serve", "--port", "0", "--data-dir", str(data), *flags], env=env)
    assert says in line, line
    assert not data.exists()


@pytest.mark.parametrize("command", ["replay", "verify", "inspect"])
def test_read_commands_refuse_a_bad_log_store(tmp_path: Path, command: str) -> None:
    line = _refused([command, "--data-dir", str(tmp_path), "--log-store", "http://example/db"])
    assert "--log-store: must be postgresql://" in line, line
