"""A real `tally serve` process on 127.0.0.1 for system tests: start, wait for /health, stop by PID.

Only processes this module started are ever signalled, and only by their own PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

# A bound, not a timing assertion; with TALLY_TEST_WORKERS=N (tests/conftest.py) N+1 processes
# start at once, each importing aiohttp: a loaded 2-core machine needs longer.
STARTUP_TIMEOUT_S = 30.0 if os.environ.get("TALLY_TEST_WORKERS", "1") == "1" else 90.0
STOP_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 120.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TallyProcess:
    """One server process. `base_url` is ready to hand to the SDK as `base_url=`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        api_key: str,
        admin_key: str | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`preexec_fn` runs in the child before exec (e.g. a file-size rlimit for disk-full tests)."""
        self.data_dir = data_dir
        self.preexec_fn = preexec_fn
        self.api_key = api_key
        self.admin_key = admin_key  # TALLY_ADMIN_KEY; None: the server makes one (<data-dir>/admin-key)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"

    def start(self) -> TallyProcess:
        assert self.proc is None
        env = dict(os.environ, TALLY_BOOTSTRAP_KEY=self.api_key)
        env.pop("TALLY_ADMIN_KEY", None)
        if self.admin_key is not None:
            env["TALLY_ADMIN_KEY"] = self.admin_key
        command = [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec_fn
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tally serve exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.kill()  # ours: never leave a half-started server behind
        raise RuntimeError(f"tally serve not healthy after {STARTUP_TIMEOUT_S}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM and wait: a graceful stop that must exit 0."""
        return self._signal_and_wait(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL: the crash every acknowledged write must survive."""
        return self._signal_and_wait(signal.SIGKILL)

    def _signal_and_wait(self, signum: int) -> int:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(signum)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=STOP_TIMEOUT_S)


def tally_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `tally` operator command as a subprocess, bounded by a timeout."""
    command = [sys.executable, "-m", "net.cli", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def replay_json(data_dir: Path) -> dict[str, Any]:
    """`tally replay`'s JSON object (records, last_lsn, customers, digest, ...); asserts exit 0."""
    done = tally_cli("replay", "--data-dir", str(data_dir))
    assert done.returncode == 0, f"tally replay exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)
