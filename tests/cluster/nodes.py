"""Tally nodes of one cluster (CONTRACT §12) as real `tally serve` processes on 127.0.0.1.

Every node runs `--log-store DSN --node-id nX --lease-ms L` over its own data dir (snapshots are
local per node). A node is *up* once GET /health answers 200 (leader) or 503 with role standby.
Only processes started here are signalled, by their own PID; `Cluster.close()` (in a `finally`)
kills every node still running, so no server outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any

from tests.system.server import REPO_ROOT, STARTUP_TIMEOUT_S, TallyProcess, tally_cli

LEASE_MS = 1000
LEADER_TIMEOUT_S = 30.0


@lru_cache(maxsize=1)
def cluster_missing_reason() -> str | None:
    """None when this build's `tally serve` has --log-store (CONTRACT §12), else why not."""
    done = subprocess.run([sys.executable, "-m", "net.cli", "serve", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    if "--log-store" not in done.stdout:
        return "this build's `tally serve` has no --log-store (CONTRACT §12 not built in this branch)"
    return None


def get_health(base_url: str, timeout: float = 1.0) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of GET /health, or None (no answer: down, paused, timed out)."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return None


class ClusterNode(TallyProcess):
    """One `tally serve --log-store ...` process; `node_id` is its --node-id."""

    def __init__(self, data_dir: Path, *, dsn: str, node_id: str, api_key: str, lease_ms: int = LEASE_MS,
                 extra_args: tuple[str, ...] = ()) -> None:
        args = ("--log-store", dsn, "--node-id", node_id, "--lease-ms", str(lease_ms), *extra_args)
        super().__init__(data_dir, api_key=api_key, extra_args=args)
        self.node_id = node_id
        self.paused = False

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.node_id}: tally serve exited with {self.proc.returncode}: {self.log()}")
            answer = get_health(self.base_url)
            if answer is not None and (answer[0] == 200 or answer[1].get("role") == "standby"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.node_id}: not up (leader or standby) after {STARTUP_TIMEOUT_S}s: {self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def step_downs(self) -> int:
        """How often this node's log says it became a standby again (net/cluster_server.py)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return text.count(f"tally: standby node-id={self.node_id}")

    def role(self) -> str | None:
        answer = get_health(self.base_url)
        return None if answer is None else answer[1].get("role")

    def pause(self) -> None:
        """SIGSTOP: the process stops dead (its sockets stay open, nothing answers)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> int:
        if self.paused and self.proc is not None:
            self.resume()
        return super().kill()


class Cluster:
    """N nodes n1..nN over one log store; each node has `root/nX` as its data dir."""

    def __init__(self, root: Path, dsn: str, size: int, *, api_key: str, lease_ms: int = LEASE_MS,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.dsn = dsn
        self.nodes = [ClusterNode(root / f"n{i}", dsn=dsn, node_id=f"n{i}", api_key=api_key, lease_ms=lease_ms,
                                  extra_args=extra_args) for i in range(1, size + 1)]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        return self

    def node(self, node_id: str) -> ClusterNode:
        return next(node for node in self.nodes if node.node_id == node_id)

    def leader(self, timeout: float = LEADER_TIMEOUT_S, *, exclude: ClusterNode | None = None) -> ClusterNode:
        """The one running node whose /health is 200 role leader (waits up to `timeout`). Asserts
        that no two nodes say leader at the same time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = []
            for node in self.nodes:
                if node is exclude or not node.running or node.paused:
                    continue
                answer = get_health(node.base_url)
                if answer is not None and answer[0] == 200:
                    assert answer[1].get("role") == "leader" and answer[1].get("node_id") == node.node_id, answer
                    leaders.append(node)
            assert len(leaders) <= 1, f"two leaders at once: {[n.node_id for n in leaders]}"
            if leaders:
                return leaders[0]
            time.sleep(0.02)
        raise AssertionError(f"no leader after {timeout}s: " + "; ".join(
            f"{n.node_id} running={n.running} health={get_health(n.base_url)}" for n in self.nodes))

    def standbys(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running and not node.paused and node.role() == "standby"]

    def describe(self, lines: int = 12) -> str:
        """Each node's exit status and last non-request log lines (for failure messages)."""
        out = []
        for node in self.nodes:
            try:
                text = node.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            kept = [line for line in text.splitlines() if '"tally.request"' not in line][-lines:]
            state = "running" if node.running else f"exited {node.proc.returncode}" if node.proc else "not running"
            out.append(f"--- {node.node_id} ({state}, {node.log_path}):\n" + "\n".join(kept))
        return "\n".join(out)

    def close(self) -> None:
        for node in self.nodes:
            if node.running or node.paused:
                node.kill()


def cluster_cli(command: str, dsn: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tally <command> --log-store DSN --data-dir DIR ...` (replay, verify, inspect)."""
    return tally_cli(command, "--log-store", dsn, "--data-dir", str(data_dir), *args)


def replay_log_store(dsn: str, data_dir: Path) -> dict[str, Any]:
    """`tally replay --log-store`'s JSON (records, last_lsn, digest, ...); asserts exit 0."""
    done = cluster_cli("replay", dsn, data_dir)
    assert done.returncode == 0, f"tally replay --log-store exited {done.returncode}: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result
