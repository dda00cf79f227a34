"""Helpers for the operator tests (CONTRACT §9.4-§9.7): HTTP calls, a server process we start
ourselves (to watch it before it is healthy), and a big data dir written straight to the WAL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import wal
from engine.core.commands import CreateApiKey, Deposit, encode_command
from engine.core.keys import hash_api_key
from tests.system.server import REPO_ROOT

HTTP_TIMEOUT_S = 10.0


def call(url: str, *, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on loopback: (status, headers, body), errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def start_serve(data_dir: Path, port: int, log_path: Path, *, env: dict[str, str] | None = None,
                args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`tally serve` as our own child, stdout+stderr to log_path; not waited for."""
    command = [sys.executable, "-m", "net.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir), *args]
    environment = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO_ROOT)


def write_big_log(data_dir: Path, api_key: str, deposits: int) -> int:
    """A data dir with a project key and `deposits` deposits (one new customer each), written
    straight through the WAL writer without fsync: seconds to recover, far less to make.
    Returns the last LSN."""

    async def write() -> int:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        writer = wal.WalWriter.open(data_dir, next_lsn=1, fsync=False)
        await writer.start()
        key = CreateApiKey(at_ms=1, project="default", key_id="key_big", key_hash=hash_api_key(api_key))
        writer.append(1, encode_command(key))
        lsn = 1
        for i in range(deposits):
            if writer.room() < 1:
                await writer.wait_for_room()
            lsn += 1
            deposit = Deposit(at_ms=2, project="default", customer_id=f"c-{i}", amount=10, idempotency_key=f"d-{i}")
            writer.append(lsn, encode_command(deposit))
        await writer.close()
        return lsn

    return asyncio.run(write())
