"""Shared machinery of the reliability campaigns: a recorded history of HTTP operations, a
concurrent workload that produces it, and the checker that holds a (re)started server to it.

The history records every request and every response. An operation is
    acked     a 200 was received (CONTRACT §4: it is on disk and must survive anything),
    rejected  a 4xx was received (CONTRACT §7.1: it left no trace),
    unknown   no response, a dropped connection or a 503 (it may or may not have happened).

`check_server` (after every restart) verifies, from the server's own ledger and balances:
every acked op is there with its recorded amounts and ids; every ledger entry belongs to an op
we sent for that customer; per customer total/used/frozen/available equal the sums of the
ledger entries (so nothing is half-applied), money is conserved, nothing is negative; rejected
ops left no entry; acked ops replay with their original body and `is_idempotent_replay: true`.
Then it resolves every unknown op by resending it (always safe, CONTRACT §4) and checks the
exact balances a model of the acked ops implies.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.system.server import replay_json as replay  # noqa: F401  (re-exported for the campaigns)
from tests.system.server import tally_cli as shared_tally_cli

API_KEY = "vb_live_reliability_key_0123456789abcdef"
LONG = os.environ.get("TALLY_LONG") == "1"
REQUEST_TIMEOUT_S = 15.0
FLAG = "is_idempotent_replay"

ACKED, REJECTED, UNKNOWN = "acked", "rejected", "unknown"


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def seed_from_env(default: int | None = None) -> int:
    raw = os.environ.get("TALLY_SEED")
    if raw:
        return int(raw)
    return default if default is not None else random.SystemRandom().randrange(2**32)


# -- the operator CLI --------------------------------------------------------------------------


def tally_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return shared_tally_cli(*args, "--data-dir", str(data_dir))


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return tally_cli("verify", data_dir=data_dir)


def assert_verify_ok(data_dir: Path) -> dict[str, Any]:
    done = verify(data_dir)
    assert done.returncode == 0, f"tally verify exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


# -- the history -------------------------------------------------------------------------------


@dataclass
class Op:
    seq: int
    kind: str  # deposit | freeze | consume | unfreeze | deduct
    path: str
    body: dict[str, Any]
    customer: str  # for consume/unfreeze: the customer of the freeze
    key: str  # idempotency_key (deposit) or transaction_id
    outcome: str = UNKNOWN
    status: int | None = None
    response: dict[str, Any] | None = None  # the original body (flag as first received)
    sends: int = 0
    replays_verified: int = 0
    first_sent: float | None = None  # time.monotonic() of the first send

    def describe(self) -> str:
        return f"op#{self.seq} {self.kind} {self.path} {json.dumps(self.body)} -> {self.status} {self.response}"


def strip_flag(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != FLAG}


@dataclass
class History:
    prefix: str
    ops: list[Op] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # any 5xx other than 503 storage/overload
    counter: int = 0
    sends: list[tuple[float, float, int | None, str | None]] = field(default_factory=list)  # (sent, answered, status, code)

    def new(self, kind: str, path: str, body: dict[str, Any], customer: str, key: str) -> Op:
        op = Op(len(self.ops), kind, path, body, customer, key)
        self.ops.append(op)
        return op

    def next_id(self, tag: str) -> str:
        self.counter += 1
        return f"{self.prefix}_{tag}{self.counter}"

    def by_customer(self) -> dict[str, list[Op]]:
        grouped: dict[str, list[Op]] = defaultdict(list)
        for op in self.ops:
            grouped[op.customer].append(op)
        return grouped

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for op in self.ops:
            out[op.outcome] += 1
        return dict(out)


async def send(session: aiohttp.ClientSession, base_url: str, op: Op, history: History) -> tuple[int | None, Any]:
    """One POST of the op's request; returns (status, json body) or (None, exception)."""
    op.sends += 1
    sent_at = time.monotonic()
    if op.first_sent is None:
        op.first_sent = sent_at
    try:
        async with session.post(
            base_url + op.path,
            json=op.body,
            headers=headers(),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        ) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError) as error:
        history.sends.append((sent_at, time.monotonic(), None, None))
        return None, error
    try:
        body = json.loads(raw)
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        history.sends.append((sent_at, time.monotonic(), status, code))
    except ValueError:
        history.violations.append(f"{op.describe()}: status {status} with a non-JSON body {raw[:200]!r}")
        return status, None
    if status >= 500:
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        # not_leader: §12.3; shutting_down: with --workers N a front still holding a request when the
        # ledger process is SIGKILLed answers it so (retryable, outcome unknown) before it dies too.
        if status != 503 or code not in ("storage_unavailable", "overloaded", "not_leader", "shutting_down"):
            history.server_errors.append(f"{op.describe()}: {status} {body}")
        elif body["error"].get("retryable") is not True:
            history.violations.append(f"{op.describe()}: 503 not retryable: {body}")
    return status, body


def settle(op: Op, status: int | None, body: Any, history: History) -> None:
    """Record the first answer that decides the op; a later 200 after unknown acks it."""
    if status == 200:
        if op.outcome == ACKED:
            check_replay_body(op, body, history, where="duplicate answer")
            return
        if op.outcome == REJECTED:
            history.violations.append(f"{op.describe()}: was rejected, now 200 {body}")
            return
        op.outcome, op.status, op.response = ACKED, 200, body
    elif status is not None and 400 <= status < 500:
        if status == 409 or status in (401, 413):  # the workload never reuses an id differently
            history.violations.append(f"{op.describe()}: unexpected {status} {body}")
        if op.outcome == ACKED:
            history.violations.append(f"{op.describe()}: acked, now {status} {body}")
        elif op.outcome == UNKNOWN:
            op.outcome, op.status, op.response = REJECTED, status, body


def check_replay_body(op: Op, body: Any, history: History, *, where: str, must_be_replay: bool = False) -> None:
    assert op.response is not None
    if not isinstance(body, dict) or strip_flag(body) != strip_flag(op.response):
        history.violations.append(f"{where}: {op.describe()}: replay body differs: {body}")
    elif must_be_replay and body.get(FLAG) is not True:
        history.violations.append(f"{where}: {op.describe()}: replay without {FLAG} true: {body}")
    else:
        op.replays_verified += 1


# -- the workload ------------------------------------------------------------------------------


class Workload:
    """Concurrent writers: deposits (idempotency keys, some sent twice at once), freezes, their
    consumes/unfreezes (with and without overage), deducts, and deliberate replays, over one hot
    customer and a spread of others."""

    def __init__(self, history: History, rng: random.Random, *, spread: int = 12, hot_share: float = 0.4) -> None:
        self.history = history
        self.rng = rng
        self.hot = f"{history.prefix}_hot"
        self.spread = [f"{history.prefix}_c{i}" for i in range(spread)]
        self.hot_share = hot_share
        self.open_freezes: list[Op] = []  # acked freezes without a follow-up yet
        self.acked: list[Op] = []  # acked ops, for deliberate replays

    def customer(self) -> str:
        return self.hot if self.rng.random() < self.hot_share else self.rng.choice(self.spread)

    async def run(self, session: aiohttp.ClientSession, base_url: str, stop: asyncio.Event, workers: int) -> None:
        tasks = [asyncio.create_task(self._worker(session, base_url, stop)) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self, session: aiohttp.ClientSession, base_url: str, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set() and failures < 3:
            status = await self.step(session, base_url)
            failures = failures + 1 if status is None else 0
            if status is None:
                await asyncio.sleep(0.01)

    async def step(self, session: aiohttp.ClientSession, base_url: str) -> int | None:
        history, rng = self.history, self.rng
        r = rng.random()
        if self.open_freezes and r < 0.22:
            freeze = self.open_freezes.pop(rng.randrange(len(self.open_freezes)))
            key = freeze.key
            if rng.random() < 0.65:
                body: dict[str, Any] = {"transaction_id": key}
                frozen = freeze.response["frozen_amount"]  # type: ignore[index]  # a 200 freeze always has a body
                pick = rng.random()
                if pick < 0.6:
                    body["actual_amount"] = rng.randint(1, frozen)
                elif pick < 0.7:
                    body["actual_amount"] = 0
                elif pick < 0.85:
                    body["actual_amount"] = frozen + rng.randint(1, 50)  # overage
                op = history.new("consume", "/v1/billing/consume", body, freeze.customer, key)
            else:
                op = history.new("unfreeze", "/v1/billing/unfreeze", {"transaction_id": key}, freeze.customer, key)
            return await self._send(session, base_url, op)
        if r < 0.45:
            customer = self.customer()
            key = history.next_id("dep")
            body = {"customer_id": customer, "amount": rng.randint(100, 1000), "idempotency_key": key}
            if rng.random() < 0.2:
                body["description"] = "top-up " + key
            op = history.new("deposit", rng.choice(["/v1/customers/deposit", "/v1/billing/deposit"]), body, customer, key)
            if rng.random() < 0.1:  # the same deposit twice at once: one applies, one replays
                return await self._send_twice(session, base_url, op)
            return await self._send(session, base_url, op)
        if r < 0.65:
            customer = self.customer()
            key = history.next_id("frz")
            body = {"customer_id": customer, "amount": rng.randint(1, 300), "transaction_id": key}
            return await self._send(session, base_url, history.new("freeze", "/v1/billing/freeze", body, customer, key))
        if r < 0.85 or not self.acked:
            customer = self.customer()
            key = history.next_id("ded")
            body = {"customer_id": customer, "amount": rng.randint(1, 120), "transaction_id": key}
            return await self._send(session, base_url, history.new("deduct", "/v1/billing/deduct", body, customer, key))
        original = rng.choice(self.acked)  # a deliberate replay of an acknowledged op
        status, body = await send(session, base_url, original, history)
        if status == 200:
            check_replay_body(original, body, history, where="deliberate replay", must_be_replay=True)
        elif status is not None and status != 503:
            history.violations.append(f"deliberate replay of {original.describe()}: {status} {body}")
        return status

    async def _send(self, session: aiohttp.ClientSession, base_url: str, op: Op) -> int | None:
        status, body = await send(session, base_url, op, self.history)
        settle(op, status, body, self.history)
        self._after(op, status)
        return status

    async def _send_twice(self, session: aiohttp.ClientSession, base_url: str, op: Op) -> int | None:
        answers = await asyncio.gather(send(session, base_url, op, self.history), send(session, base_url, op, self.history))
        oks = [body for status, body in answers if status == 200]
        for status, body in answers:
            settle(op, status, body, self.history)
        if len(oks) == 2 and sorted(b.get(FLAG) for b in oks) != [False, True]:
            self.history.violations.append(f"{op.describe()}: sent twice at once, flags {[b.get(FLAG) for b in oks]}")
        if oks and op.response is not None:
            op.response = dict(op.response, **{FLAG: False})
        self._after(op, 200 if oks else answers[0][0])
        return 200 if oks else answers[0][0]

    def _after(self, op: Op, status: int | None) -> None:
        if status == 200 and op.outcome == ACKED:
            if op.response.get(FLAG) is not False and op.sends == 1:  # type: ignore[union-attr]  # acked ops have a body
                self.history.violations.append(f"{op.describe()}: first send answered as a replay")
            self.acked.append(op)
            if op.kind == "freeze":
                self.open_freezes.append(op)


# -- the checker -------------------------------------------------------------------------------


@dataclass
class CheckStats:
    customers: int = 0
    entries: int = 0
    acked_verified: int = 0
    replays_sent: int = 0
    unknown_resolved_applied: int = 0
    unknown_resolved_fresh: int = 0
    unknown_resolved_rejected: int = 0


async def bounded(work: Any, items: list[Any], limit: int = 16) -> None:
    """Run `work(item)` for every item, at most `limit` at a time."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: Any) -> None:
        async with semaphore:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


async def fetch_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, headers=headers(), timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
        return response.status, await response.json(content_type=None)


def quote_id(customer_id: str) -> str:
    from urllib.parse import quote

    return quote(customer_id, safe="")


async def fetch_ledger(session: aiohttp.ClientSession, base_url: str, customer: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100_000):
        url = f"{base_url}/v1/customers/{quote_id(customer)}/ledger?limit=100"
        if cursor:
            url += f"&cursor={quote_id(cursor)}"
        status, page = await fetch_json(session, url)
        assert status == 200, (customer, status, page)
        items.extend(page["items"])
        if not page["has_more"]:
            assert page["total_count"] == len(items), (customer, page["total_count"], len(items))
            break
        cursor = page["next_cursor"]
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), f"{customer}: ledger repeats an entry"
    return items


async def check_server(
    session: aiohttp.ClientSession,
    base_url: str,
    history: History,
    rng: random.Random,
    *,
    replay_sample: int = 60,
    resolve: bool = True,
) -> CheckStats:
    """Everything §4 promises, against a server that just (re)started on the history's data."""
    stats = CheckStats()
    problems: list[str] = []
    async def check_one(item: tuple[str, list[Op]]) -> None:
        stats.customers += 1
        problems.extend(await _check_customer(session, base_url, item[0], item[1], stats))

    await bounded(check_one, sorted(history.by_customer().items()))
    assert not problems, "\n".join(problems[:30])

    # Acked ops replay with their original body: every op never replayed yet, plus a sample.
    acked = [op for op in history.ops if op.outcome == ACKED]
    fresh = [op for op in acked if op.replays_verified == 0]
    older = [op for op in acked if op.replays_verified > 0]
    chosen = fresh + rng.sample(older, min(replay_sample, len(older)))
    async def replay_one(op: Op) -> None:
        status, body = await send(session, base_url, op, history)
        stats.replays_sent += 1
        if status != 200:
            problems.append(f"replay after restart of {op.describe()}: {status} {body}")
        else:
            check_replay_body(op, body, history, where="replay after restart", must_be_replay=True)

    await bounded(replay_one, chosen)
    assert not problems, "\n".join(problems[:30])

    if resolve:
        for op in [op for op in history.ops if op.outcome == UNKNOWN]:
            status, body = await send(session, base_url, op, history)
            if status == 200:
                if body.get(FLAG):
                    stats.unknown_resolved_applied += 1
                else:
                    stats.unknown_resolved_fresh += 1
                op.replays_verified += 1  # this answer is itself the reference now
            elif status is not None and 400 <= status < 500:
                stats.unknown_resolved_rejected += 1
            else:
                problems.append(f"resolving {op.describe()}: {status} {body}")
            settle(op, status, body, history)
        assert not problems, "\n".join(problems[:30])
        for customer, ops in sorted(history.by_customer().items()):
            problems.extend(await _check_model(session, base_url, customer, ops))
        assert not problems, "\n".join(problems[:30])
    assert not history.violations, "\n".join(history.violations[:30])
    assert not history.server_errors, "\n".join(history.server_errors[:30])
    stats.acked_verified = len(acked)
    return stats


async def _check_customer(session, base_url, customer, ops, stats) -> list[str]:  # type: ignore[no-untyped-def]  # aiohttp session and model dicts, typed at the call site
    problems: list[str] = []
    acked = [op for op in ops if op.outcome == ACKED]
    status, view = await fetch_json(session, f"{base_url}/v1/customers/{quote_id(customer)}")
    if status == 404:
        if acked:
            problems.append(f"{customer}: 404 but {len(acked)} acked ops, e.g. {acked[0].describe()}")
        return problems
    if status != 200:
        return [f"{customer}: GET -> {status} {view}"]
    entries = await fetch_ledger(session, base_url, customer)
    stats.entries += len(entries)
    deposit_keys = {op.key for op in ops if op.kind == "deposit"}
    freeze_keys = {op.key for op in ops if op.kind == "freeze"}
    deduct_keys = {op.key for op in ops if op.kind == "deduct"}
    by_txn: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    sums: dict[str, int] = defaultdict(int)
    for entry in entries:
        op_type, txn, amount = entry["operation_type"], entry["transaction_id"], entry["amount"]
        by_txn[(op_type, txn)].append(entry)
        sums[op_type] += amount
        allowed = {
            "GRANT": deposit_keys,
            "FREEZE": freeze_keys,
            "CONSUME": freeze_keys | deduct_keys,
            "UNFREEZE": freeze_keys,
        }.get(op_type, set())
        if txn not in allowed:
            problems.append(f"{customer}: ledger entry {entry} belongs to no {op_type}-able op we sent")
        if not (isinstance(amount, int) and amount > 0):
            problems.append(f"{customer}: entry amount {amount}")
    # Frozen from the ledger: freezes with no CONSUME/UNFREEZE entry yet.
    frozen = 0
    for key in freeze_keys:
        if by_txn.get(("FREEZE", key)) and not by_txn.get(("CONSUME", key)) and not by_txn.get(("UNFREEZE", key)):
            frozen += sum(e["amount"] for e in by_txn[("FREEZE", key)])
    balance = view["balance"]
    total, used = sums["GRANT"], sums["CONSUME"]
    expected = {"total": total, "used": used, "frozen": frozen, "available": total - used - frozen}
    if balance != expected:
        problems.append(f"{customer}: balance {balance} but the ledger implies {expected}")
    if any(v < 0 for v in balance.values()):
        problems.append(f"{customer}: negative balance {balance}")
    if sums["EXPIRE"]:
        problems.append(f"{customer}: EXPIRE entries but nothing expires in this workload")
    # Conservation: deposited == available + frozen + used + expired.
    if total != balance["available"] + balance["frozen"] + balance["used"] + sums["EXPIRE"]:
        problems.append(f"{customer}: money not conserved: {balance} vs deposited {total}")
    for op in acked:
        problems.extend(_check_acked_present(op, by_txn))
    for op in ops:
        if op.outcome == REJECTED and op.kind in ("deposit", "freeze", "deduct"):
            kinds = {"deposit": ["GRANT"], "freeze": ["FREEZE"], "deduct": ["CONSUME"]}[op.kind]
            if any(by_txn.get((k, op.key)) for k in kinds):
                problems.append(f"{customer}: rejected {op.describe()} left ledger entries")
    return problems


def _check_acked_present(op: Op, by_txn: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    r = op.response
    assert r is not None

    def total(op_type: str) -> int:
        return sum(e["amount"] for e in by_txn.get((op_type, op.key), []))

    if op.kind == "deposit":
        grants = by_txn.get(("GRANT", op.key), [])
        ok = (
            len(grants) == 1
            and grants[0]["amount"] == op.body["amount"] == r["added_amount"]
            and grants[0]["id"] == r["record_id"]
            and grants[0]["account_id"] == r["account_id"]
        )
    elif op.kind == "freeze":
        ok = total("FREEZE") == r["frozen_amount"] == op.body["amount"]
    elif op.kind == "deduct":
        ok = total("CONSUME") == r["deducted_amount"] == op.body["amount"]
    elif op.kind == "consume":
        ok = total("CONSUME") == r["consumed_amount"] and total("UNFREEZE") == (r.get("returned_amount") or 0)
    else:
        ok = total("UNFREEZE") == r["unfrozen_amount"] and not by_txn.get(("CONSUME", op.key))
    return [] if ok else [f"acked {op.describe()} is not (exactly) in the ledger: {dict(by_txn)}"[:1500]]


async def _check_model(session, base_url, customer, ops) -> list[str]:  # type: ignore[no-untyped-def]  # aiohttp session and model dicts, typed at the call site
    """After every op is resolved: the exact balance the acked ops imply."""
    total = used = 0
    frozen_by_txn: dict[str, int] = {}
    for op in ops:
        if op.outcome != ACKED:
            continue
        r = op.response
        if op.kind == "deposit":
            total += r["added_amount"]
        elif op.kind == "deduct":
            used += r["deducted_amount"]
        elif op.kind == "freeze":
            frozen_by_txn.setdefault(op.key, r["frozen_amount"])
    for op in ops:
        if op.outcome == ACKED and op.kind in ("consume", "unfreeze"):
            frozen_by_txn.pop(op.key, None)
            if op.kind == "consume":
                used += op.response["consumed_amount"]
    frozen = sum(frozen_by_txn.values())
    expected = {"total": total, "used": used, "frozen": frozen, "available": total - used - frozen}
    status, view = await fetch_json(session, f"{base_url}/v1/customers/{quote_id(customer)}")
    if status == 404 and total == 0:
        return []
    if status != 200 or view["balance"] != expected:
        return [f"{customer}: after resolving every op: {status} {view.get('balance', view)} but the acked ops imply {expected}"]
    return []
