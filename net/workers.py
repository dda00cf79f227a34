"""`tally serve --workers N` (N >= 2): this process is the ledger, N front processes serve HTTP.

    tally serve (this process, the one an operator starts and signals)
      |- the Runtime: recovery, shards, the WAL (group commit + fsync), timers, snapshots, webhooks
      |- LedgerServer (net/ledger_server.py): answers the fronts' batched calls over Unix sockets
      `- Fronts: N children `python -m net.front` (subprocess: fork+exec, never a bare fork), each
         listening on host:port with SO_REUSEPORT, each on its own socketpair made before exec

Start (CONTRACT §9.5): the port is reserved (a bound, non-listening SO_REUSEPORT socket; port 0
becomes a real one), the fronts start and answer 503 recovering/not_ready while the ledger
recovers and bootstraps its keys; the gate opens once every front said hello.
A front that exits is restarted (a lifecycle line; more than RESTARTS_QUICK_MAX quick deaths in a
row stop the server, exit 1). The fronts die with this process: PR_SET_PDEATHSIG(SIGKILL) plus
exiting on EOF of their socket, so a SIGKILL here leaves nothing behind and a restart on the
same port and data directory works at once (the kernel drops the data-dir lock).
SIGTERM / SIGINT: /health turns 503, each front stops listening and finishes its in-flight
requests (their calls are answered here), exits; then the shards drain, last fsync, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any, Final

import msgspec
import uvloop
from prometheus_client import CollectorRegistry

from engine.runtime import RuntimeConfig
from net.bootstrap import bootstrap_keys
from net.config import WORKERS_MAX, ServerConfig
from net.front import FrontSpec
from net.ledger_server import LedgerServer
from net.observe import Observer
from net.server import _exit_while_recovering, _keep_old_objects_frozen, _open_runtime
from net.transport import SHUTDOWN_TIMEOUT_S

log = logging.getLogger("tally.server")

FRONT_STOP_TIMEOUT_S: Final = SHUTDOWN_TIMEOUT_S + 5.0  # its drain, then SIGKILL
FRONT_POLL_S: Final = 0.05
QUICK_DEATH_S: Final = 2.0  # a front that dies sooner than this after its start died "quickly"
RESTARTS_QUICK_MAX: Final = 10


class Fronts:
    """Starts, watches, restarts and stops the front processes, by PID only."""

    def __init__(self, spec: FrontSpec, count: int, ledger: LedgerServer, on_fatal: asyncio.Event) -> None:
        self._spec = spec
        self._count = count
        self._ledger = ledger
        self._on_fatal = on_fatal
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._quick_deaths = 0

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs.values()]

    async def start(self) -> None:
        for index in range(self._count):
            await self._spawn(index)

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            spec = msgspec.structs.replace(self._spec, index=index, fd=theirs.fileno())
            proc = subprocess.Popen([sys.executable, "-m", "net.front", msgspec.json.encode(spec).decode()],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)  # fmt: skip
        finally:
            theirs.close()
        self._procs[index] = proc
        connection = await self._ledger.attach(index, ours)
        log.info("front started index=%d pid=%d", index, proc.pid)
        loop = asyncio.get_running_loop()
        self._watchers.append(loop.create_task(self._watch(index, proc, connection, time.monotonic())))

    async def _watch(self, index: int, proc: subprocess.Popen[bytes], connection: asyncio.Task[None], started: float) -> None:
        """Wait for the front's connection to end, then for its exit; restart it unless stopping."""
        await asyncio.wait([connection])
        code = await self._reap(proc, FRONT_STOP_TIMEOUT_S if self._stopping else 1.0)
        if self._stopping:
            return
        log.warning("front exited index=%d pid=%d code=%s; restarting", index, proc.pid, code)
        self._quick_deaths = self._quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
        if self._quick_deaths > RESTARTS_QUICK_MAX:
            log.critical("fronts keep dying at start (%d in a row); stopping", self._quick_deaths)
            self._on_fatal.set()
            return
        await self._spawn(index)

    async def _reap(self, proc: subprocess.Popen[bytes], wait_s: float) -> int:
        """Its exit code; SIGKILL (by its PID) if it has not exited after `wait_s`."""
        deadline = time.monotonic() + wait_s
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                proc.kill()
                return await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            await asyncio.sleep(FRONT_POLL_S)
        return proc.returncode

    def kill(self, index: int) -> None:
        """End an unresponsive front at once (its watcher restarts it)."""
        proc = self._procs.get(index)
        if proc is not None and proc.poll() is None:
            proc.kill()

    async def stop(self) -> None:
        """SIGTERM every front; wait for each (SIGKILL after FRONT_STOP_TIMEOUT_S)."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for index, proc in self._procs.items():
            code = await self._reap(proc, FRONT_STOP_TIMEOUT_S)
            log.info("front stopped index=%d pid=%d code=%d", index, proc.pid, code)
        await asyncio.gather(*self._watchers, return_exceptions=True)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket on host:port (port 0: the kernel picks one). It
    receives no connections; it holds the port so every front binds the same one."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def serve_workers(config: ServerConfig, runtime_config: RuntimeConfig, workers: int, *, bootstrap_key: str | None,
                  admin_key: str | None, log_format: str, log_level: str) -> int:  # fmt: skip
    """Run the ledger and `workers` fronts until SIGTERM/SIGINT; the exit code."""
    assert 2 <= workers <= WORKERS_MAX, workers
    return uvloop.run(_serve(config, runtime_config, workers, bootstrap_key, admin_key, log_format, log_level))


async def _serve(config: ServerConfig, runtime_config: RuntimeConfig, workers: int, bootstrap_key: str | None,
                 admin_key: str | None, log_format: str, log_level: str) -> int:  # fmt: skip
    reserved = reserve_port(config.host, config.port)
    port = reserved.getsockname()[1]
    observer = Observer(CollectorRegistry(), None)  # the WAL and recovery counters; fronts count HTTP
    fatal = asyncio.Event()
    fronts: Fronts | None = None
    ledger = LedgerServer(workers, observer, lambda index: fronts.kill(index) if fronts is not None else None)
    ledger.start()
    spec = FrontSpec(index=0, fd=-1, parent_pid=os.getpid(), host=config.host, port=port,
                     request_size_max=config.request_size_max, log_format=log_format, log_level=log_level,
                     log_requests=log_level in ("debug", "info"))  # fmt: skip
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _exit_while_recovering)
    fronts = Fronts(spec, workers, ledger, fatal)
    await fronts.start()
    print(f"tally: listening on http://{config.host}:{port} workers={workers} (recovering {runtime_config.data_dir})", flush=True)
    runtime = await _open_runtime(runtime_config, observer)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gc_task = loop.create_task(_keep_old_objects_frozen(), name="tally-gc")
    try:
        await bootstrap_keys(runtime, runtime_config.data_dir, bootstrap_key, admin_key)
        await _first(ledger.open(runtime), stop, fatal)
        log.info("ready lsn=%d workers=%d front_pids=%s", runtime.durable_lsn, workers, fronts.pids)
        print(f"tally: serving http://{config.host}:{port} data-dir={runtime_config.data_dir} workers={workers}", flush=True)
        await _first(stop.wait(), fatal)
        print("tally: stopping", flush=True)
        log.info("stopping")
        runtime.stop_accepting()
        ledger.push_status()
        await fronts.stop()
    finally:
        gc_task.cancel()
        ledger.close()
        await runtime.close()
        reserved.close()
    print("tally: stopped", flush=True)
    return 1 if fatal.is_set() else 0


async def _first(work: Coroutine[Any, Any, Any], *events: asyncio.Event) -> None:
    """Await `work` or any of `events`, whichever comes first; cancel the rest."""
    tasks = [asyncio.ensure_future(work)] + [asyncio.ensure_future(event.wait()) for event in events]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
