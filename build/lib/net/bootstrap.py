"""Keys made at start (CONTRACT §5, §9.1), before the server listens.

- Project `default` and its first API key, when the data dir holds no project key: the key from
  TALLY_BOOTSTRAP_KEY, or generated, printed once and written to `<data-dir>/bootstrap-key`.
- An admin key, when the data dir holds none that is not revoked (a first start, the first start
  of a data dir made before admin keys existed, or after `tally keys revoke` of the admin key: the
  way to replace a leaked one): from TALLY_ADMIN_KEY, or generated, printed once and written to
  `<data-dir>/admin-key`. Later starts ignore both variables.

Key files are mode 0600 and written (and fsync'd) before the key is logged: a crash in between
leaves a file with an unused key (the next start makes a new one), never a logged key nobody can
read.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from engine.runtime import Runtime

BOOTSTRAP_PROJECT = "default"


def new_api_key() -> tuple[str, str]:
    """(key, key_id): a 192-bit random secret and a public id to list or revoke it by."""
    return "tly_" + secrets.token_hex(24), "key_" + secrets.token_hex(8)


def _write_key_file(path: Path, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of the same name keeps its mode through O_CREAT
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def bootstrap_keys(
    runtime: Runtime, data_dir: Path, bootstrap_key: str | None, admin_key: str | None = None
) -> None:
    """CONTRACT §5 and §9.1: the first project key and the admin key, each only if none exists.
    Raises ValueError when a given key is already a key of this data dir (e.g. TALLY_ADMIN_KEY set
    to a project key)."""
    if not runtime.has_project_key():
        await _make_key(runtime, data_dir / "bootstrap-key", bootstrap_key, "TALLY_BOOTSTRAP_KEY", admin=False)
    if not runtime.has_admin_key():
        await _make_key(runtime, data_dir / "admin-key", admin_key, "TALLY_ADMIN_KEY", admin=True)


async def _make_key(runtime: Runtime, path: Path, given: str | None, variable: str, *, admin: bool) -> None:
    project = "" if admin else BOOTSTRAP_PROJECT
    what = "an admin key" if admin else f"project {BOOTSTRAP_PROJECT!r}"
    _, key_id = new_api_key()
    if given:
        try:
            await runtime.create_api_key(project, given, key_id, admin=admin)
        except ValueError:  # the same key is already here (e.g. the other variable's value)
            raise ValueError(f"{variable} is already a key of this data directory; choose another") from None
        print(f"tally: created {what} ({key_id}) with the key from {variable}", flush=True)
        return
    key, key_id = new_api_key()
    _write_key_file(path, key)
    await runtime.create_api_key(project, key, key_id, admin=admin)
    print(f"tally: created {what} ({key_id}); {'admin' if admin else 'API'} key (shown once, also in {path}):", flush=True)
    print(key, flush=True)
    sys.stdout.flush()
