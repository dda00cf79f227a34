"""A FakeRuntime and an HTTP client on 127.0.0.1 for the net/ tests.

The fake answers from canned results and records every command and read it receives, so tests can
assert exactly which Command a request built, and that a rejected request reached nothing.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine.core.commands import Command, Consume, Deduct, Deposit, Freeze, Unfreeze
from engine.core.queries import LedgerFilters
from engine.core.results import (
    Applied,
    Balance,
    ConsumeResponse,
    CustomerResponse,
    DeductResponse,
    DepositResponse,
    Detail,
    FreezeResponse,
    CustomerPage,
    KeyList,
    KeyView,
    LedgerPage,
    ProjectList,
    Rejected,
    UnfreezeResponse,
)
from engine.runtime import ADMIN, Admin
from net.app import create_app
from net.config import ServerConfig
from tests.app_server import TallyTestServer

GOOD_KEY = "vb_test_good_key"
OTHER_KEY = "vb_test_other_key"
REVOKED_KEY = "vb_test_revoked_key"
ADMIN_KEY = "vb_test_admin_key"
PROJECT = "proj_a"
AUTH = {"Authorization": f"Bearer {GOOD_KEY}"}

_DETAIL = Detail(account_id="acc_1", wallet="default", source="default", credit_type="default", amount=1)


def canned_body(command: Command) -> Any:
    """A plausible response body for a command (the fake does no accounting)."""
    match command:
        case Deposit():
            return DepositResponse(
                customer_id=command.customer_id,
                account_id="acc_1",
                wallet=command.wallet,
                source=command.source,
                credit_type=command.wallet,
                total_amount=command.amount,
                added_amount=command.amount,
                starts_at=None,
                expires_at=None,
                record_id="le_1_0",
                is_idempotent_replay=False,
            )
        case Freeze():
            return FreezeResponse(
                transaction_id=command.transaction_id,
                frozen_amount=command.amount,
                freeze_details=[_DETAIL],
                unfreeze_after=None,
                consume_after=None,
                is_idempotent_replay=False,
            )
        case Consume():
            return ConsumeResponse(
                transaction_id=command.transaction_id,
                consumed_amount=1,
                consume_details=[_DETAIL],
                consumed_at="2026-04-07T12:00:00.000Z",
                is_idempotent_replay=False,
            )
        case Unfreeze():
            return UnfreezeResponse(
                transaction_id=command.transaction_id,
                unfrozen_amount=1,
                unfreeze_details=[_DETAIL],
                unfrozen_at="2026-04-07T12:00:00.000Z",
                is_idempotent_replay=False,
            )
        case Deduct():
            return DeductResponse(
                transaction_id=command.transaction_id,
                deducted_amount=command.amount,
                deduct_details=[_DETAIL],
                deducted_at="2026-04-07T12:00:00.000Z",
                is_idempotent_replay=False,
            )
    raise AssertionError(command)


class FakeRuntime:
    """Implements net.handlers.Runtime. Set `next_result` / `raise_next` to steer one answer."""

    def __init__(self) -> None:
        self.ready = True
        self.commands: list[Command] = []
        self.reads: list[tuple[Any, ...]] = []
        self.auth_calls: list[str] = []
        self.next_result: Applied | Rejected | CustomerResponse | LedgerPage | None = None
        self.raise_next: BaseException | None = None

    def authenticate(self, api_key: str) -> str | Admin | Rejected:
        self.auth_calls.append(api_key)
        if api_key == ADMIN_KEY:
            return ADMIN
        if api_key == GOOD_KEY:
            return PROJECT
        if api_key == OTHER_KEY:
            return "proj_b"
        if api_key == REVOKED_KEY:
            return Rejected("api_key_revoked", "API key revoked")
        return Rejected("invalid_api_key", "invalid API key")

    def _steer(self) -> Any:
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        result, self.next_result = self.next_result, None
        return result

    async def submit(self, command: Command) -> Applied | Rejected:
        self.commands.append(command)
        result = self._steer()
        return result if result is not None else Applied(canned_body(command), logged=True)

    async def get_customer(self, project: str, customer_id: str) -> CustomerResponse | Rejected:
        self.reads.append(("customer", project, customer_id))
        result = self._steer()
        if result is not None:
            return result
        return CustomerResponse(
            id=customer_id,
            name=None,
            email=None,
            metadata=None,
            balance=Balance(total=0, used=0, frozen=0, available=0),
            accounts=[],
            wallets={},
            created_at="2026-04-07T12:00:00.000Z",
        )

    async def get_ledger(
        self,
        project: str,
        customer_id: str,
        *,
        limit: int,
        cursor: str | None,
        filters: LedgerFilters,
    ) -> LedgerPage | Rejected:
        self.last_filters = filters
        self.reads.append(("ledger", project, customer_id, limit, cursor, filters.operation_type, filters.transaction_id))
        result = self._steer()
        if result is not None:
            return result
        return LedgerPage(items=[], total_count=0, has_more=False, next_cursor=None)

    def has_project(self, project: str) -> bool:
        return project in (PROJECT, "proj_b")

    def find_key(self, key_id: str) -> KeyView | None:
        return None

    async def list_projects(self) -> ProjectList:
        self.reads.append(("projects",))
        return ProjectList(items=[])

    async def list_keys(self, project: str | None) -> KeyList | Rejected:
        self.reads.append(("keys", project))
        return KeyList(items=[])

    async def list_customers(
        self, project: str, *, limit: int, cursor: str | None, prefix: str | None
    ) -> CustomerPage | Rejected:
        self.reads.append(("customers", project, limit, cursor, prefix))
        result = self._steer()
        if result is not None:
            return result
        return CustomerPage(items=[], has_more=False, next_cursor=None, total_count=0)

    def touched(self) -> bool:
        return bool(self.commands or self.reads)


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def client(fake: FakeRuntime) -> AsyncIterator[TestClient]:
    app = create_app(ServerConfig(port=0), fake)
    async with TestClient(TallyTestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def expect_error(response: Any, status: int, code: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assert the exact status, code and (when given) details of an error envelope."""
    body = await response.json()
    assert response.status == status, body
    error = body["error"]
    assert error["code"] == code, body
    assert set(error) == {"code", "type", "message", "details", "retryable", "request_id"}
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["retryable"] is (status in (429, 503))
    if details is not None:
        assert error["details"] == details, body
    return error
