"""Bootstrap keys at first start (CONTRACT §5): with no key in the data dir, project `default` and
its first API key (from TALLY_BOOTSTRAP_KEY, or generated, printed once and written 0600)."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from engine.core import queries
from engine.runtime import Runtime

BOOTSTRAP_PROJECT = "default"


def new_api_key() -> tuple[str, str]:
    """(key, key_id): a 192-bit random secret and a public id to list or revoke it by."""
    return "tly_" + secrets.token_hex(24), "key_" + secrets.token_hex(8)



async def bootstrap_keys(runtime: Runtime, data_dir: Path, bootstrap_key: str | None) -> None:
    """CONTRACT §5: with no key in the data dir, create project `default` with a first key."""
    if queries.list_api_keys(runtime.state):
        return
    key_path = data_dir / "bootstrap-key"
    if bootstrap_key:
        _, key_id = new_api_key()
        await runtime.create_api_key(BOOTSTRAP_PROJECT, bootstrap_key, key_id)
        print(f"tally: created project {BOOTSTRAP_PROJECT!r} with the key from TALLY_BOOTSTRAP_KEY", flush=True)
        return
    key, key_id = new_api_key()
    # Write the file before the key is logged: a crash in between leaves a file with an unused
    # key (and the next start makes a new one), never a logged key nobody can read.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    await runtime.create_api_key(BOOTSTRAP_PROJECT, key, key_id)
    print(f"tally: created project {BOOTSTRAP_PROJECT!r}; API key (shown once, also in {key_path}):", flush=True)
    print(key, flush=True)
    sys.stdout.flush()
