"""Schemathesis (PyPI) against a real `tally serve` on 127.0.0.1, driven by GET /openapi.json.

What: cases generated from the served OpenAPI document, valid (positive) and schema-violating
(negative), for every operation. Checked on every response: never a 5xx; status code, content
type, headers and body conform to the document (schemathesis' own checks); negative data is
rejected with a 4xx; positive data with a good key is accepted, or refused only by a business rule
(customer_not_found, insufficient_balance, ...) or by one of the few cross-field rules JSON Schema
cannot say (listed in POSITIVE_REFUSALS), never by a shape error. A second run sends only
requests that must be refused (negative cases, and positive cases with a missing or unknown key)
and compares every seeded customer (GET + full ledger) and the `tally replay` digest before and
after: a refused request must change nothing.

How: schemathesis' Python API (`operation.as_strategy`) under a plain Hypothesis `@given`, so it
never meets pytest-asyncio; a share of positive cases is pointed at seeded customers and
transactions so that they reach real state. CI mode runs a bounded number of cases (about
CI_CASES); TALLY_LONG=1 runs at least LONG_CASES. The case count and the 5xx count are printed.
How it could fail: a 500 on odd input, a response the document does not describe (an extra field,
an undocumented status or code, a malformed timestamp), a schema-invalid request that the server
accepts, a schema-valid one it refuses for its shape, or a refused request that left a trace.
"""

from __future__ import annotations

import collections
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import HypothesisException  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.harness import ADMIN_KEY, API_KEY, Server, deposit, replay, request, state_of  # noqa: E402

LONG = os.environ.get("TALLY_LONG") == "1"
CI_CASES = 1500
LONG_CASES = 10_000
CASES = LONG_CASES if LONG else CI_CASES
# CI runs one fixed seed (a red CI must be reproducible and not depend on luck: some operations
# only reach 200 for generated cases that hit seeded state); TALLY_LONG=1 draws a fresh one.
RUN_SEED = int(os.environ.get("TALLY_FUZZ_SEED", random.randrange(2**32) if LONG else 2))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
SEEDED_CUSTOMERS = ["fuzz_a", "fuzz/b %2F ü", "fuzz_c"]
SEEDED_FREEZES = 60
# Open freezes of 1 on SEEDED_CUSTOMERS[i % 3]; renewed before each operation (_reseed), since
# fuzzed consumes and unfreezes settle them.
SEEDED_TRANSACTIONS: list[str] = []
# Buckets deposited by the last _reseed (void targets) and deducts of 1 (refund targets), CONTRACT §10.
SEEDED_ACCOUNTS: list[str] = []
SEEDED_CHARGES: list[str] = []
# Project keys made through the admin API in _seed: positive revoke cases are pointed at them, so
# POST /admin/v1/keys/{key_id}/revoke also answers 200 (a random key id is always 404).
SEEDED_KEY_IDS: list[str] = []
# Webhooks (CONTRACT §11) made by each _reseed on loopback: positive delete and deliveries cases are
# pointed at them, so those answer 200 too (a random webhook id is always 404).
SEEDED_WEBHOOK_IDS: list[str] = []
# A slot pool per seeded customer (CONTRACT §8) and, renewed by each _reseed, one holding in it:
# positive claims and releases are pointed at them, so those reach 200 whatever the seed draws (a
# random wallet names no pool: 404 slot_pool_not_found).
SEEDED_POOL_WALLET = "fuzz_slots"
SEEDED_HOLDINGS: list[str] = []
# Codes a schema-valid request may get: business rules, existence, conflicts, and the cross-field
# rules the document can only state in prose (net/openapi.py module doc).
POSITIVE_REFUSALS = frozenset(
    {
        "customer_not_found",
        "insufficient_balance",
        "insufficient_balance_in_selected_credit_types",
        "no_consumable_freeze_records",
        "freeze_records_already_consumed",
        "freeze_auto_unfrozen",
        "no_unfreezable_records",
        "transaction_conflict",
        "invalid_cursor",  # a well-formed cursor that no listing made
        "amount_too_large",  # a sum past 2^53-1
        "invalid_datetime_range",  # expires_at <= starts_at
        "invalid_wallet_selection",  # deposit wallet != credit_type
        "idempotency_key_mismatch",  # header != body key
        "invalid_metadata",  # size, depth, integer range
        "invalid_starts_at",  # date-time of year 0000/10000 after offset, leap second
        "invalid_expires_at",
        "no_refundable_charge",  # CONTRACT §10: business rules and existence of refund / void
        "refund_exceeds_refundable",
        "account_not_found",
        "account_already_voided",
        "invalid_from",  # date-time of year 0000/10000 after offset, leap second (as starts_at)
        "invalid_to",
        "key_not_found",  # revoke of a well-formed key id that no key has
        "project_not_found",  # GET /admin/v1/keys?project= naming no project
        "webhook_not_found",  # CONTRACT §11: a well-formed webhook id that no webhook has
        "too_many_webhooks",  # per-project bound (engine/core/limits.py)
        "too_many_alert_rules",  # per-customer bound: fuzzed wallets each add a rule
        "invalid_url",  # a port above 65535 (the pattern cannot say it)
        # slots and entitlements (CONTRACT §8): business rules, existence, cross-field rules
        "slot_pool_not_found",
        "slot_holding_not_found",
        "slot_insufficient_capacity",
        "slot_capacity_below_in_use",
        "entitlement_customer_not_found",
        "invalid_valid_from",  # date-time of year 0000/10000 after offset, leap second
        "invalid_valid_until",
        "invalid_from_at",
        "invalid_to_at",
    }
)


@dataclass
class Tally:
    cases: int = 0
    parser_refusals: int = 0
    statuses: collections.Counter[tuple[str, str, int, str | None]] = field(default_factory=collections.Counter)
    failures: dict[str, str] = field(default_factory=dict)  # first report per distinct problem

    @property
    def server_errors(self) -> int:
        return sum(n for (_, _, status, _), n in self.statuses.items() if status >= 500)

    def fail(self, key: str, report: str) -> None:
        self.failures.setdefault(key, report)


def _code(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _operations(served: dict[str, Any], key: str = API_KEY, admin_key: str = ADMIN_KEY) -> list[Any]:
    """The document's operations, with `key` (and `admin_key` on /admin) as the bearer token of
    positive cases (schemathesis then also generates negative cases with a missing or garbled
    Authorization header)."""
    schemes = {"bearerAuth": {"bearer": key}, "adminAuth": {"bearer": admin_key}}
    config = schemathesis.Config.from_dict({"auth": {"openapi": schemes}})
    schema = schemathesis.openapi.from_dict(served, config=config)
    return [result.ok() for result in schema.get_all_operations()]


def _point_at_seeded(case: Any, pick: int) -> None:
    """Swap valid ids for seeded ones (positive cases only: the case stays schema-valid). Path ids
    are percent-encoded here, as the SDKs do: schemathesis has already encoded the generated ones
    (schemathesis.transport.serialization.quote_all), so the seeded ones, which replace them after
    generation, must be encoded too (`/`, `%`, ` ` and `ü` in SEEDED_CUSTOMERS)."""
    if isinstance(case.body, dict) and "url" in case.body:  # loopback only: a fuzzed webhook never sends elsewhere
        case.body = {**case.body, "url": "http://127.0.0.1:9/fuzz"}
    if pick == 0:
        return
    customer = SEEDED_CUSTOMERS[pick % len(SEEDED_CUSTOMERS)]
    transaction = SEEDED_TRANSACTIONS[pick]
    if case.path_parameters and "customer_id" in case.path_parameters:
        case.path_parameters = {**case.path_parameters, "customer_id": quote(customer, safe="")}
    if case.path_parameters and "key_id" in case.path_parameters and pick % 2 == 0:
        case.path_parameters = {**case.path_parameters, "key_id": quote(SEEDED_KEY_IDS[pick % len(SEEDED_KEY_IDS)], safe="")}
    if case.path_parameters and "webhook_id" in case.path_parameters and pick % 2 == 0 and SEEDED_WEBHOOK_IDS:
        webhook_id = SEEDED_WEBHOOK_IDS[pick % len(SEEDED_WEBHOOK_IDS)]
        case.path_parameters = {**case.path_parameters, "webhook_id": quote(webhook_id, safe="")}
    if isinstance(case.body, dict):
        body = dict(case.body)  # never edit a dict another case may share
        if "customer_id" in body:
            body["customer_id"] = customer
        if "transaction_id" in body and pick % 4 != 1:
            body["transaction_id"] = SEEDED_CHARGES[pick % len(SEEDED_CHARGES)] if "refund_id" in body else transaction
        if "account_id" in body and pick % 4 != 1:
            body["account_id"] = SEEDED_ACCOUNTS[pick % len(SEEDED_ACCOUNTS)]
        if "resource_id" in body and pick % 4 != 1:  # a slot claim or release
            body["wallet"] = SEEDED_POOL_WALLET
            body.pop("source", None)
            if "amount" not in body or pick % 2 == 0:  # a release, or a claim of what the pool holds
                body["resource_id"] = SEEDED_HOLDINGS[pick % len(SEEDED_HOLDINGS)]
                if "amount" in body:
                    body["amount"] = 1
        case.body = body


def _run(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    tally: Tally,
    on_response: Any,
    *,
    headers: dict[str, str] | None,
    session: requests.Session,
    base_url: str,
    seeding: bool = False,
) -> None:
    @seed(RUN_SEED)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, SEEDED_FREEZES - 1))
    def one(case: Any, pick: int) -> None:
        if seeding and mode is GenerationMode.POSITIVE:
            _point_at_seeded(case, pick)
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
        tally.cases += 1
        code = _code(response)
        tally.statuses[(operation.label, mode.value, response.status_code, code)] += 1
        content_type = (response.headers.get("content-type") or [""])[0]  # lower-case keys, list values
        if response.status_code == 400 and content_type.startswith("text/plain"):
            # aiohttp's HTTP parser refused the request before the app saw it (request line or a
            # header over 8190 bytes): no envelope is possible there. Only accepted when so.
            tally.parser_refusals += 1
            too_long = len(response.request.url) > 8000 or any(len(str(v)) > 8000 for v in response.request.headers.values())
            if not too_long:
                tally.fail(f"{operation.label} parser 400", f"{response.text[:300]} url={response.request.url[:300]}")
            return
        on_response(case, response, code)
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=headers,
                transport_kwargs={"base_url": base_url, "session": session, "headers": headers},
            )
        except BaseException as exc:  # FailureGroup is a BaseExceptionGroup; keep going, report all
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            title = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            tally.fail(f"{operation.label} {mode.value} {response.status_code} {code} {title}", str(exc)[:3000])

    try:
        one()
    except HypothesisException as exc:  # e.g. no negative case exists for an operation without inputs
        if mode is GenerationMode.POSITIVE:
            raise
        tally.fail(f"{operation.label} {mode.value} generation", repr(exc)) if "Unsatisfiable" not in repr(exc) else None


def _seed(server: Server) -> None:
    port = server.port
    deposit(port, "fuzz_a", 1_000_000)
    deposit(port, "fuzz_a", 5_000, wallet="promo", source="campaign")
    deposit(port, "fuzz/b %2F ü", 300, expires_at="2999-01-01T00:00:00Z")
    deposit(port, "fuzz_c", 100)
    SEEDED_KEY_IDS[:] = []
    for i in range(3):
        reply = request(port, "POST", "/admin/v1/keys", key=ADMIN_KEY, body={"project": f"fuzz_project_{i}", "label": "fuzz"})
        assert reply.status == 200, reply.body
        SEEDED_KEY_IDS.append(reply.json()["key_id"])
    for customer in SEEDED_CUSTOMERS:
        body = {"customer_id": customer, "wallet": SEEDED_POOL_WALLET, "amount": 1_000_000}
        reply = request(port, "POST", "/v1/slot/grant", body=body)
        assert reply.status == 200, reply.body
    _reseed(server, 0)


def _reseed(server: Server, round_: int) -> None:
    port = server.port
    reply = request(port, "POST", "/admin/v1/webhooks", key=ADMIN_KEY,
                    body={"project": f"fuzz_project_{round_ % 3}", "url": "http://127.0.0.1:9/fuzz"})  # fmt: skip
    if reply.status == 200:  # 400 too_many_webhooks once a project holds its maximum
        SEEDED_WEBHOOK_IDS[:] = [*SEEDED_WEBHOOK_IDS[-5:], reply.json()["webhook_id"]]
    SEEDED_ACCOUNTS[:] = [deposit(port, customer, SEEDED_FREEZES)["account_id"] for customer in SEEDED_CUSTOMERS]
    SEEDED_CHARGES[:] = [f"fuzz_r{round_}_d{i}" for i in range(len(SEEDED_CUSTOMERS))]
    for customer, charge in zip(SEEDED_CUSTOMERS, SEEDED_CHARGES):
        reply = request(port, "POST", "/v1/billing/deduct", body={"customer_id": customer, "amount": 1, "transaction_id": charge})
        assert reply.status == 200, reply.body
    SEEDED_HOLDINGS[:] = [f"fuzz_r{round_}_h{i}" for i in range(len(SEEDED_CUSTOMERS))]
    for customer, holding in zip(SEEDED_CUSTOMERS, SEEDED_HOLDINGS):
        body = {"customer_id": customer, "wallet": SEEDED_POOL_WALLET, "resource_id": holding, "amount": 1}
        reply = request(port, "POST", "/v1/slot/claim", body=body)
        assert reply.status == 200, reply.body
    SEEDED_TRANSACTIONS[:] = [f"fuzz_r{round_}_t{i}" for i in range(SEEDED_FREEZES)]
    for i, transaction in enumerate(SEEDED_TRANSACTIONS):
        customer = SEEDED_CUSTOMERS[i % len(SEEDED_CUSTOMERS)]
        reply = request(port, "POST", "/v1/billing/freeze", body={"customer_id": customer, "amount": 1, "transaction_id": transaction})
        assert reply.status == 200, reply.body


def _report(tally: Tally, capsys: Any, title: str, started: float) -> None:
    with capsys.disabled():
        print(
            f"\n[fuzz] {title}: {tally.cases} cases, {tally.server_errors} responses >= 500, "
            f"{tally.parser_refusals} refused by the HTTP parser, {len(tally.failures)} distinct failures, seed {RUN_SEED}, {time.monotonic() - started:.1f}s"
        )


def _budget(operations: list[Any], total: int) -> dict[tuple[str, GenerationMode], int]:
    """Cases per (operation, mode): the trivial public operations get few."""
    heavy = [op for op in operations if op.path not in ("/health", "/openapi.json", "/metrics")]
    per = max(5, total // (2 * len(heavy)) + 10)
    out = {}
    for op in operations:
        trivial = op not in heavy
        out[(op.label, GenerationMode.POSITIVE)] = 3 if trivial else per
        out[(op.label, GenerationMode.NEGATIVE)] = 0 if trivial else per
    return out


@pytest.fixture
def server(tmp_path: Path):
    process = Server(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.kill()


def _served(server: Server) -> dict[str, Any]:
    reply = request(server.port, "GET", "/openapi.json", key=None)
    assert reply.status == 200
    return reply.json()


def test_fuzz_every_operation(server, capsys):
    started = time.monotonic()
    _seed(server)
    operations = _operations(_served(server))
    budget = _budget(operations, CASES)
    tally = Tally()

    def on_response(case: Any, response: Any, code: str | None) -> None:
        mode = case.meta.generation.mode if case.meta is not None else None
        if mode is GenerationMode.POSITIVE and response.status_code >= 400 and code not in POSITIVE_REFUSALS:
            tally.fail(
                f"{case.operation.label} positive refused {response.status_code} {code}",
                f"schema-valid request refused: {response.status_code} {response.text[:500]}\n"
                f"body={case.body!r} path={case.path_parameters!r} query={case.query!r} headers={case.headers!r}",
            )

    with requests.Session() as session:
        for round_, op in enumerate(operations, start=1):
            _reseed(server, round_)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                examples = budget[(op.label, mode)]
                if examples:
                    _run(op, mode, examples, tally, on_response, headers=None, session=session, base_url=server.base_url, seeding=True)
    _report(tally, capsys, "all operations", started)
    assert tally.server_errors == 0, {k: n for k, n in tally.statuses.items() if k[2] >= 500}
    assert not tally.failures, "\n\n".join(f"== {key}\n{text}" for key, text in list(tally.failures.items())[:15])
    assert tally.cases >= (LONG_CASES if LONG else CI_CASES // 2), tally.cases
    # every operation answered at least one 200 and one 4xx
    for op in operations:
        statuses = {status for (label, _, status, _) in tally.statuses if label == op.label}
        assert 200 in statuses, (op.label, statuses)
        if op.path not in ("/health", "/openapi.json", "/metrics"):
            assert any(400 <= status < 500 for status in statuses), (op.label, statuses)


def test_refused_requests_change_nothing(server, capsys):
    started = time.monotonic()
    _seed(server)
    customers = [*SEEDED_CUSTOMERS, "fuzz_never"]
    before = state_of(server.port, customers)
    digest_before = replay(server.data_dir)
    served = _served(server)
    public = ("/health", "/openapi.json", "/metrics")
    operations = [op for op in _operations(served) if op.path not in public]
    unknown_key = [op for op in _operations(served, "vb_live_unknown_key", "tly_unknown_admin_key") if op.path not in public]
    per = max(5, (CASES // 3) // (3 * len(operations)))
    tally = Tally()

    def must_refuse(case: Any, response: Any, code: str | None) -> None:
        if not 400 <= response.status_code < 500:
            tally.fail(
                f"{case.operation.label} not refused {response.status_code} {code}",
                f"{response.status_code} {response.text[:500]}\nbody={case.body!r} path={case.path_parameters!r} query={case.query!r}",
            )

    with requests.Session() as session:
        for op, op_unknown_key in zip(operations, unknown_key, strict=True):
            _run(op, GenerationMode.NEGATIVE, per, tally, must_refuse, headers=None, session=session, base_url=server.base_url)
            _run(op_unknown_key, GenerationMode.POSITIVE, per, tally, must_refuse, headers=None, session=session, base_url=server.base_url)
            basic = {"Authorization": "Basic dXNlcjpwYXNz"}
            _run(op, GenerationMode.POSITIVE, per, tally, must_refuse, headers=basic, session=session, base_url=server.base_url)
    after = state_of(server.port, customers)
    digest_after = replay(server.data_dir)
    _report(tally, capsys, "refused requests", started)
    assert tally.server_errors == 0
    assert not tally.failures, "\n\n".join(f"== {key}\n{text}" for key, text in list(tally.failures.items())[:15])
    assert after == before
    assert digest_after == digest_before
    assert before["fuzz_never"]["status"] == 404
