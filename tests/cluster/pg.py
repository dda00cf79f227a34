"""A real PostgreSQL for the cluster tests and the cluster bench: Debian's binaries, initdb in a
temp dir, one postmaster on a free 127.0.0.1 port, stopped by its own PID.

- Binaries: `/usr/lib/postgresql/<major>/bin` (the highest major present), else `pg_config
  --bindir`. `find_bin_dir()` is None when there are none: the tests skip with that reason.
- PostgreSQL refuses to run as root: when we are root, the whole temp dir belongs to `postgres` and
  initdb/postgres run through `runuser -u postgres --`; otherwise they run directly.
- Settings: listen_addresses=127.0.0.1, the socket dir inside the temp dir, trust auth for
  127.0.0.1 and the socket, fsync=on, synchronous_commit=on, full_page_writes=on.
- `stop()` sends SIGINT (fast shutdown) to the postmaster's PID (from postmaster.pid), then
  `pg_ctl stop -m immediate` if it has not exited in time; `kill()` sends SIGKILL; `start()`
  starts it again on the same port and data (restart under load = stop()/kill() + start()).
- `create_database()` makes a fresh database (CREATE DATABASE via psql) and returns its DSN
  `postgresql://postgres@127.0.0.1:PORT/NAME`, the form `tally serve --log-store` takes.

Only the postmaster this object started is ever signalled, by its PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_USER = "postgres"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
PSQL_TIMEOUT_S = 30.0


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin dir with initdb and postgres in it, or None."""
    root = Path("/usr/lib/postgresql")
    majors: list[tuple[int, Path]] = []
    if root.is_dir():
        for entry in root.iterdir():
            if re.fullmatch(r"\d+", entry.name) and (entry / "bin" / "initdb").exists() and (entry / "bin" / "postgres").exists():
                majors.append((int(entry.name), entry / "bin"))
    if majors:
        return max(majors)[1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
        candidate = Path(done.stdout.strip())
        if done.returncode == 0 and (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here (None: they can)."""
    if find_bin_dir() is None:
        return "PostgreSQL binaries not found (/usr/lib/postgresql/<ver>/bin): apt-get install postgresql (.ci/run does)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started as root"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One postmaster on 127.0.0.1:`port` over its own temp dir; `close()` stops it and removes it."""

    def __init__(self, *, port: int | None = None, extra_conf: dict[str, str] | None = None) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(missing_reason() or "no PostgreSQL")
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        self.port = port or free_port()
        # Not under pytest's tmp dir: that is 0700 root, and the postgres user must traverse it.
        self.root = Path(tempfile.mkdtemp(prefix="tally-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.extra_conf = dict(extra_conf or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._init_cluster()

    # -- setup ---------------------------------------------------------------------------------

    def _as_pg(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *argv] if self.as_root else argv

    def _init_cluster(self) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            shutil.chown(self.root, PG_USER, PG_USER)
            shutil.chown(self.socket_dir, PG_USER, PG_USER)
        done = subprocess.run(
            self._as_pg([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", PG_USER,
                         "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"]),
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb exited {done.returncode}: {done.stderr[-2000:]}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "logging_collector": "off",
            **self.extra_conf,
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as out:
            out.write("\n# tests/cluster/pg.py\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nlocal replication all trust\n"
            "host replication all 127.0.0.1/32 trust\n", encoding="utf-8")

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> PostgresServer:
        """Start the postmaster and wait until it accepts connections (retries a start that finds
        a killed postmaster's backends still holding shared memory)."""
        assert self.proc is None, "already started"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self._as_pg([str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]),
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_ready(deadline):
                return self
            code = self.proc.wait(timeout=STOP_TIMEOUT_S) if self.proc.poll() is None else self.proc.returncode
            self.proc, self.pid = None, None
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start (exit {code}): {self.log_tail()}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        """True once pg_isready answers; False if the postmaster exited first."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            pid = self._postmaster_pid()
            if pid is not None:
                done = subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                                      capture_output=True, timeout=10)
                if done.returncode == 0:
                    self.pid = pid
                    return True
            time.sleep(0.05)
        self._signal(signal.SIGKILL)
        raise RuntimeError(f"postgres not ready after {START_TIMEOUT_S}s: {self.log_tail()}")

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def _signal(self, signum: int) -> None:
        """Signal our postmaster and the runuser wrapper we spawned (both PIDs are ours)."""
        pids = {self.pid or self._postmaster_pid(), self.proc.pid if self.proc else None}
        for pid in pids:
            if pid:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), `pg_ctl stop -m immediate` as a fallback."""
        if self.proc is None:
            return
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            subprocess.run(self._as_pg([str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate"]),
                           capture_output=True, timeout=STOP_TIMEOUT_S)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc, self.pid = None, None

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: its backends notice and exit; the next start recovers
        from PostgreSQL's own WAL)."""
        if self.proc is None:
            return
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc, self.pid = None, None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop (if running) and remove the temp dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- SQL -----------------------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, *, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `sql` with psql over TCP (unaligned, tuples only: one row a line, '|' between columns)."""
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", PG_USER, "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=PSQL_TIMEOUT_S,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"psql exited {done.returncode} on {sql!r}: {done.stderr[-2000:]}")
        return done

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)
