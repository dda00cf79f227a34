"""Helpers for the API tests against a real `tally serve` on 127.0.0.1 (tests/system/server.py).

- `Server`: a TallyProcess that can also start with a file-size rlimit (RLIMIT_FSIZE), the only way
  to make the real server's WAL writes fail (EFBIG; CPython ignores SIGXFSZ) from outside.
- `tally(...)`, `replay(...)`: the CLI as a subprocess (tests/system/server.py).
- `request(...)`: one HTTP/1.1 exchange over a raw socket, so a test can send any bytes as the
  path, headers or body (http.client refuses non-ASCII targets) and read the exact status and body.
- `state_of(...)`: what a test compares before and after a rejected request: every given
  customer's GET body and full ledger, plus the `tally replay` digest when the server is stopped.
"""

from __future__ import annotations

import json
import resource
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.system.server import TallyProcess
from tests.system.server import replay_json as replay  # noqa: F401  (re-exported for the API tests)
from tests.system.server import tally_cli as tally

API_KEY = "vb_live_api_tests_key_0123456789abcdef"
ADMIN_KEY = "tly_admin_api_tests_key_0123456789abcdef"
HTTP_TIMEOUT_S = 15


class Server(TallyProcess):
    """A TallyProcess; `fsize_limit` (bytes) caps every file the server writes."""

    def __init__(
        self, data_dir: Path, *, api_key: str = API_KEY, admin_key: str | None = ADMIN_KEY,
        fsize_limit: int | None = None, extra_args: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        preexec = None if fsize_limit is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit)))
        super().__init__(data_dir, api_key=api_key, admin_key=admin_key, extra_args=extra_args, preexec_fn=preexec)

    def restart(self) -> Server:
        assert self.stop() == 0
        self.start()
        return self


def create_key(data_dir: Path, project: str) -> tuple[str, str]:
    """(key, key_id) of a new key for `project`; the server must be stopped."""
    done = tally("keys", "create", "--data-dir", str(data_dir), "--project", project)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    key_id = done.stderr.split("created key ", 1)[1].split()[0]
    return key, key_id


def revoke_key(data_dir: Path, key_id: str) -> None:
    done = tally("keys", "revoke", "--data-dir", str(data_dir), key_id)
    assert done.returncode == 0, done.stderr


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


def request(
    port: int,
    method: str,
    target: str | bytes,
    *,
    key: str | None = API_KEY,
    body: bytes | str | Any = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    content_type: str | None = "application/json",
) -> Reply:
    """One request on a fresh connection. A dict/list `body` is JSON-encoded; bytes go as they are."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    target_bytes = target if isinstance(target, bytes) else target.encode()
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    if key is not None:
        lines.append(b"Authorization: Bearer " + key.encode())
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
        if content_type is not None:
            lines.append(b"Content-Type: " + content_type.encode())
    for name, value in (headers.items() if isinstance(headers, dict) else headers or []):
        lines.append(name.encode() + b": " + value.encode("utf-8"))
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # the server may close early on an oversized body
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    reply_headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    length = reply_headers.get("content-length")
    return Reply(status, reply_headers, rest[: int(length)] if length is not None else rest)


def customer_path(customer_id: str, ledger: bool = False) -> str:
    return "/v1/customers/" + quote(customer_id, safe="") + ("/ledger" if ledger else "")


def full_ledger(port: int, customer_id: str, key: str = API_KEY) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):  # bounded
        target = customer_path(customer_id, ledger=True) + "?limit=100" + (f"&cursor={quote(cursor)}" if cursor else "")
        reply = request(port, "GET", target, key=key)
        assert reply.status == 200, (reply.status, reply.body)
        page = reply.json()
        items.extend(page["items"])
        if not page["has_more"]:
            return items
        cursor = page["next_cursor"]
    raise AssertionError("ledger paging did not end")


def state_of(port: int, customers: list[str], key: str = API_KEY) -> dict[str, Any]:
    """Every customer's GET body (status too: 404 stays 404) and full ledger."""
    out: dict[str, Any] = {}
    for customer_id in customers:
        reply = request(port, "GET", customer_path(customer_id), key=key)
        if reply.status == 200:
            out[customer_id] = {"status": 200, "body": reply.json(), "ledger": full_ledger(port, customer_id, key)}
        else:  # an error body carries a fresh request_id: compare the status and code only
            out[customer_id] = {"status": reply.status, "code": reply.code}
    return out


def deposit(port: int, customer_id: str, amount: int, key: str = API_KEY, **fields: Any) -> dict[str, Any]:
    reply = request(port, "POST", "/v1/customers/deposit", key=key, body={"customer_id": customer_id, "amount": amount, **fields})
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()
