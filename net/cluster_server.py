"""serve_cluster(): `tally serve --log-store postgresql://...` (CONTRACT §12).

Listens at once; the gate (net/observe.py, `Observer.cluster`) answers by role: a standby's
/health is 503 {"status": "standby", ...} and every other route 503 `not_leader`; the leader's
/health is 200 {"status": "ok", "role": "leader", "node_id"}. The ClusterNode
(engine/runtime/cluster.py) moves between the roles; each time this node becomes the leader it
bootstraps the keys (once per cluster: they are in the shared log, so only the first leader
makes them) and binds the handlers to its new Runtime, before the role flips.
SIGTERM / SIGINT: stop listening, let in-flight requests finish, flush, give the lease back.
"""

from __future__ import annotations

import asyncio
import logging
import signal


from engine.runtime import Runtime, RuntimeConfig
from engine.runtime.cluster import ClusterNode
from net.app import create_server_app, open_app
from net.bootstrap import bootstrap_keys
from net.config import ServerConfig
from net.logs import RequestLog
from net.transport import listen
from wal.pg import PgLog

log = logging.getLogger("tally.server")



async def serve_cluster(config: ServerConfig, runtime_config: RuntimeConfig, log_store: PgLog,
                        bootstrap_key: str | None, admin_key: str | None, request_log: RequestLog | None) -> int:  # fmt: skip
    """Run one cluster node until a signal; the exit code (1 when the node stopped on an error)."""
    observer, app = create_server_app(config, request_log)

    async def on_leader(runtime: Runtime) -> None:
        await bootstrap_keys(runtime, runtime_config.data_dir, bootstrap_key, admin_key)
        open_app(app, runtime)
        print(f"tally: leader node-id={log_store.node_id} lsn={runtime.durable_lsn}", flush=True)

    def on_standby() -> None:
        print(f"tally: standby node-id={log_store.node_id}", flush=True)

    node = ClusterNode(runtime_config, log_store, on_leader=on_leader, on_standby=on_standby,
                       on_wal_batch=observer.on_wal_batch)  # fmt: skip
    observer.cluster = node
    runner = await listen(app, observer, config.host, config.port)
    print(f"tally: listening on http://{config.host}:{config.port} node-id={log_store.node_id} (standby)", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node_task = loop.create_task(node.run(), name="tally-cluster-node")
    stop_task = loop.create_task(stop.wait(), name="tally-stop")
    await asyncio.wait((node_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
    print("tally: stopping", flush=True)
    await runner.cleanup()
    exit_code = 0
    if node_task.done():
        stop_task.cancel()
        error = node_task.exception()
        if error is not None:
            log.critical("the cluster node stopped: %r", error, exc_info=error)
            exit_code = 1
    else:
        await node.close()
        await asyncio.gather(node_task, return_exceptions=True)
    if request_log is not None:
        request_log.flush()
    print("tally: stopped", flush=True)
    return exit_code
