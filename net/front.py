"""`python -m net.front SPEC`: one HTTP front process of `tally serve --workers N` (issue 14).

Started by the ledger process (net/workers.py), never by an operator. SPEC is a JSON FrontSpec.
The front dies with its parent: PR_SET_PDEATHSIG(SIGKILL) first thing, then a check that the
parent is still the one that started it (it may have died before the prctl). It serves the same
aiohttp app as a single-process server (net/app.py) on host:port with SO_REUSEPORT, its Runtime
being a net/ledger_client.py LedgerClient over the Unix socket inherited as file descriptor
`fd`. Until the ledger opens the gate it answers as a recovering server does (CONTRACT §9.5).

Ends: SIGTERM (from the ledger process) -> stop listening, finish in-flight requests, exit 0.
SIGINT is ignored (a terminal's Ctrl-C reaches the whole group; the ledger process stops us). The
ledger closing the connection (it stopped or died: fail-stop) -> exit at once, code 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Final

import msgspec
import uvloop

from net import ipc
from net.app import create_server_app, open_app
from net.config import ServerConfig
from net.ledger_client import LedgerClient
from net.logs import RequestLog, configure_logging
from net.observe import METRICS_SOURCE, Observer
from net.server import raise_gc_gen0_threshold
from net.transport import listen
from wal.process import die_with_parent

log = logging.getLogger("tally.front")

EXIT_LEDGER_GONE: Final = 1


class FrontSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger process tells a front: its index (0..N-1), the inherited socket's fd, the
    parent's pid, where to listen, the request body limit (bytes) and logging."""

    index: int
    fd: int
    parent_pid: int
    host: str
    port: int
    request_size_max: int
    log_format: str
    log_level: str
    log_requests: bool


def counters_of(observer: Observer) -> ipc.FrontCounters:
    """This front's HTTP counters as they cross to the ledger for GET /metrics."""
    requests = [(route, method, status, count) for (route, method, status), count in observer.requests.items()]
    durations = [(route, list(h.counts), h.total) for route, h in observer.durations.items()]
    return ipc.FrontCounters(requests, durations)


async def run_front(spec: FrontSpec) -> int:
    """Serve until SIGTERM (returns 0) or the ledger goes away (exits EXIT_LEDGER_GONE)."""
    loop = asyncio.get_running_loop()
    raise_gc_gen0_threshold()  # a front holds no ledger: request garbage only
    request_log = RequestLog(spec.log_format) if spec.log_requests else None
    config = ServerConfig(host=spec.host, port=spec.port, request_size_max=spec.request_size_max)
    observer, app = create_server_app(config, request_log)

    def on_records(records: int) -> None:
        observer.records = records

    client = LedgerClient(spec.index, on_open=lambda: open_app(app, client), on_records=on_records,
                          counters=lambda: counters_of(observer))  # fmt: skip
    await client.connect(socket.socket(fileno=spec.fd))
    app[METRICS_SOURCE] = client.metrics_text
    runner = await listen(app, observer, spec.host, spec.port, reuse_port=True)
    connection = loop.create_task(client.run(), name="tally-ledger-connection")
    stop: asyncio.Future[None] = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: None if stop.done() else stop.set_result(None))
    await asyncio.wait([connection, stop], return_when=asyncio.FIRST_COMPLETED)
    if connection.done():  # fail-stop: no ledger, nothing to serve
        log.error("front %d: the ledger process is gone; exiting", spec.index)
        if request_log is not None:
            request_log.flush()
        sys.stderr.flush()
        os._exit(EXIT_LEDGER_GONE)
    await runner.cleanup()  # stop listening, let in-flight requests finish (their replies included)
    client.close()
    if request_log is not None:
        request_log.flush()
    return 0


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[1], type=FrontSpec)
    die_with_parent(spec.parent_pid, EXIT_LEDGER_GONE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.log_format, spec.log_level)
    code = uvloop.run(run_front(spec))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
