"""serve(): the process around the runtime (CONTRACT §5, §9.4, §9.5).

uvloop runs one event loop; the AppRunner has access logging off (our request lines come from
net/observe.py). Start order (§9.5): listen at once with the gate closed (GET /health 503
`recovering` with progress, other routes 503 `not_ready`, /metrics served), then lock + recover
+ WAL (Runtime.open; recovery runs in a worker thread while the loop serves), bootstrap keys
(net/bootstrap.py), and only then open the gate: /health is ok after all of it.
SIGTERM / SIGINT: stop listening, let in-flight requests finish (their group commit included),
drain the shards, last fsync, release the lock, exit 0. During recovery nothing has been
acknowledged yet, so a signal then ends the process at once (exit 0).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Final

import uvloop

from engine.runtime import Runtime, RuntimeConfig
from net.app import create_server_app, open_app
from net.bootstrap import bootstrap_keys
from net.config import ServerConfig
from net.logs import RequestLog
from net.observe import Observer
from net.transport import listen

if TYPE_CHECKING:
    from wal.pg import PgLog

log = logging.getLogger("tally.server")

GC_FREEZE_INTERVAL_S = 1.0
GC_FULL_INTERVAL_S = 600.0
# CPython collects generation 0 after 700 net allocations of container objects: every few requests
# here, each time walking the objects of every request in flight. The per-second collect(1) of
# `_keep_old_objects_frozen` does that work anyway, so generation 0 only has to catch a burst of
# garbage cycles between two of them (bounded: this many objects). Measured on hot deducts (loop
# thread CPU, issue 14): 5 % of it in the collector at 700, 1 % at 20,000.
GC_GEN0_THRESHOLD = 50_000
RECOVERY_PROGRESS_INTERVAL_S: Final = 2.0  # a lifecycle log line this often while recovering


def serve(config: ServerConfig, runtime_config: RuntimeConfig, *, bootstrap_key: str | None,
          admin_key: str | None = None, log_format: str = "json", log_requests: bool = True,
          workers: int = 1, log_level: str = "info", log_store: PgLog | None = None) -> int:  # fmt: skip
    """Run until SIGTERM/SIGINT. Returns the process exit code. `log_format` "json" | "text" for
    the request lines on stderr; `log_requests` False: none (e.g. --log-level warning).
    `workers` >= 2: this process is the ledger and that many front processes serve HTTP
    (net/workers.py; `log_level` is theirs); 1: this one process does everything.
    `log_store`: cluster mode, the log in PostgreSQL (CONTRACT §12; net/cluster_server.py; one
    process: the CLI refuses `workers` > 1 with it)."""
    assert log_store is None or workers == 1, "cluster mode runs one process"
    if workers > 1:
        from net.workers import serve_workers

        return serve_workers(config, runtime_config, workers, bootstrap_key=bootstrap_key, admin_key=admin_key,
                             log_format=log_format, log_level=log_level)  # fmt: skip
    request_log = RequestLog(log_format) if log_requests else None
    if log_store is not None:
        from net.cluster_server import serve_cluster

        return uvloop.run(serve_cluster(config, runtime_config, log_store, bootstrap_key, admin_key, request_log))
    return uvloop.run(_serve(config, runtime_config, bootstrap_key, admin_key, request_log))


async def _serve(config: ServerConfig, runtime_config: RuntimeConfig, bootstrap_key: str | None,
                 admin_key: str | None, request_log: RequestLog | None) -> int:  # fmt: skip
    observer, app = create_server_app(config, request_log)
    runner = await listen(app, observer, config.host, config.port)
    print(f"tally: listening on http://{config.host}:{config.port} (recovering {runtime_config.data_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _exit_while_recovering)
    runtime = await _open_runtime(runtime_config, observer)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gc_task = loop.create_task(_keep_old_objects_frozen(), name="tally-gc")
    try:
        await bootstrap_keys(runtime, runtime_config.data_dir, bootstrap_key, admin_key)
        open_app(app, runtime)
        log.info("ready lsn=%d", runtime.durable_lsn)
        print(f"tally: serving http://{config.host}:{config.port} data-dir={runtime_config.data_dir}", flush=True)
        await stop.wait()
        print("tally: stopping", flush=True)
        log.info("stopping")
        runtime.stop_accepting()
        await runner.cleanup()
    finally:
        gc_task.cancel()
        await runtime.close()
        if request_log is not None:
            request_log.flush()
    print("tally: stopped", flush=True)
    return 0


async def _open_runtime(runtime_config: RuntimeConfig, observer: Observer) -> Runtime:
    """Runtime.open with progress lines every RECOVERY_PROGRESS_INTERVAL_S, then the GC freeze."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    async def progress() -> None:
        while True:
            await asyncio.sleep(RECOVERY_PROGRESS_INTERVAL_S)
            log.info("recovering records=%d seconds=%.0f", observer.records, time.monotonic() - started)

    reporter = loop.create_task(progress(), name="tally-recovery-progress")
    try:
        runtime = await Runtime.open(runtime_config, on_record=observer.on_record, on_wal_batch=observer.on_wal_batch)
    finally:
        reporter.cancel()
    recovered = runtime.recovered
    log.info("recovered records=%d snapshot_lsn=%d last_lsn=%d seconds=%.2f", recovered.records_replayed,
             recovered.snapshot_lsn, recovered.state.last_lsn, time.monotonic() - started)  # fmt: skip
    # The recovered ledger is long-lived: move it out of the collector's generations so that
    # collections triggered by request garbage never walk it (p99 latency).
    gc.collect()
    gc.freeze()
    return runtime


def _exit_while_recovering() -> None:
    """SIGTERM/SIGINT before the runtime is open: nothing was acknowledged yet (recovery only
    cuts a torn tail, which is crash-safe by design), and the recovery thread cannot be
    interrupted, so end the process now; the kernel drops the data-dir lock with it."""
    print("tally: stopped during recovery", flush=True)
    log.info("stopped during recovery")
    sys.stderr.flush()
    os._exit(0)


def raise_gc_gen0_threshold() -> None:
    """Collect generation 0 every GC_GEN0_THRESHOLD net container allocations, not 700 (see
    there); the older generations keep CPython's thresholds."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def _keep_old_objects_frozen() -> None:
    """Every second: collect the young generations (request garbage, cheap), then freeze the
    survivors. New ledger state (customers, entries, records) is long-lived, so without this a
    full collection would walk the whole ledger now and then: a pause that grows with it.
    With it, a full collection only ever sees what survived since the last second (measured on
    hot deducts: p99 8 ms with it, 18 ms without). Cyclic garbage frozen by mistake (objects that
    die after reaching the old generation) is reclaimed by one full collection every
    GC_FULL_INTERVAL_S: one bounded pause, instead of a slow leak."""
    raise_gc_gen0_threshold()
    loop = asyncio.get_running_loop()
    full_at_s = loop.time() + GC_FULL_INTERVAL_S
    while True:
        await asyncio.sleep(GC_FREEZE_INTERVAL_S)
        if loop.time() >= full_at_s:
            gc.unfreeze()
            gc.collect()
            full_at_s = loop.time() + GC_FULL_INTERVAL_S
        else:
            gc.collect(1)
        gc.freeze()


