"""The bare baseline: aiohttp + uvloop + msgspec with no ledger, no WAL, no fsync.

It does what machine-limits.md §2 measured, so every Tally row can be read as a fraction of
"the HTTP stack alone" on this machine:

- POST (any path): `await request.read()`, decode the JSON body into a 5-field `msgspec.Struct`,
  update a balance in a dict, encode a 9-field response Struct (about 200 bytes).
- GET (any path): a pre-encoded body of about 200 bytes.
- GET /health: 200, so bench/run.py can wait for it like it waits for Tally.

    python -m bench.baseline_server --host 127.0.0.1 --port 8080 [--processes 2]

`--processes N` (issue 14): N identical processes on the same port with SO_REUSEPORT (this one and
N-1 children it starts with subprocess and stops on SIGTERM), the bare counterpart of
`tally serve --workers N`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys

import msgspec
import uvloop
from aiohttp import web


class BaselineRequest(msgspec.Struct):
    customer_id: str
    amount: int
    transaction_id: str = ""
    wallet: str = "default"
    description: str | None = None


class BaselineResponse(msgspec.Struct):
    transaction_id: str
    customer_id: str
    deducted_amount: int
    balance: int
    wallet: str
    source: str
    credit_type: str
    deducted_at: str
    is_idempotent_replay: bool


_DECODER = msgspec.json.Decoder(BaselineRequest)
_ENCODER = msgspec.json.Encoder()
_JSON = "application/json"
_GET_BODY = _ENCODER.encode({
    "customer_id": "c-1234", "balance": {"total": 1000000000000, "available": 999999999990,
    "frozen": 10, "used": 0}, "accounts": [], "wallets": {"default": 999999999990},
    "name": None, "email": None, "metadata": {}, "created_at": "2026-05-15T10:00:00.000Z",
})
_HEALTH_BODY = b'{"status":"ok"}'


def create_app() -> web.Application:
    balances: dict[str, int] = {}

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        req = _DECODER.decode(body)
        balance = balances.get(req.customer_id, 10**12) - req.amount
        balances[req.customer_id] = balance
        reply = BaselineResponse(
            transaction_id=req.transaction_id, customer_id=req.customer_id,
            deducted_amount=req.amount, balance=balance, wallet=req.wallet, source="default",
            credit_type=req.wallet, deducted_at="2026-05-15T10:00:00.000Z",
            is_idempotent_replay=False,
        )
        return web.Response(body=_ENCODER.encode(reply), content_type=_JSON)

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=_GET_BODY, content_type=_JSON)

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=_HEALTH_BODY, content_type=_JSON)

    app = web.Application()
    app.add_routes([
        web.get("/health", health),
        web.post("/{tail:.*}", post),
        web.get("/{tail:.*}", get),
    ])
    return app


async def _serve(host: str, port: int, reuse_port: bool) -> None:
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1, help="N processes with SO_REUSEPORT (this one included)")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (set for --processes > 1)")
    args = parser.parse_args()
    reuse_port = args.reuse_port or args.processes > 1
    children = [
        subprocess.Popen([sys.executable, "-m", "bench.baseline_server", "--host", args.host, "--port", str(args.port),
                          "--reuse-port"])  # fmt: skip
        for _ in range(args.processes - 1)
    ]
    try:
        uvloop.run(_serve(args.host, args.port, reuse_port))
    finally:
        for child in children:  # our own children, by PID
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
