"""`tally mcp` (net/mcp_server.py, net/mcp_guide.py) through the official MCP SDK's own client.

What: the tool list read-only and with --allow-writes; sdk_download_and_usage for every language,
alias and a bad one; its Python snippet run against the server; deposit -> deduct -> freeze ->
consume -> unfreeze through the tools with exact balances and ledger; list_freezes (open freezes with their TTLs, paged, gone once
settled); API errors as error results carrying the server's code; a write without --allow-writes refused with nothing charged; a repeated
write call answered as an idempotent replay; a missing identity, a dead server, a missing key.
How: one real `tally serve` per module on a free 127.0.0.1 port (tests/system/server.py), and for
each test `tally mcp` spawned by `mcp.client.stdio.stdio_client` + `ClientSession`; every test is
bounded by SESSION_TIMEOUT_S; the SDK stops the child it spawned, the fixture kills its server by
PID. How it could fail: a tool that lost a field name, a write that runs without the flag or
without its id, an API error turned into a crash or a success, an id that breaks the path.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from net import mcp_guide
from net.mcp_server import TOOLS, McpConfig
from tests.system.server import REPO_ROOT, TallyProcess, free_port

API_KEY = "vb_live_mcp_tests_key_0123456789abcdef"
SESSION_TIMEOUT_S = 90  # a whole test's MCP session: spawn, handshake, every call (normally ~2 s)
SNIPPET_TIMEOUT_S = 120
READ_TOOLS = ["sdk_download_and_usage", "get_customer", "list_ledger", "list_freezes"]
WRITE_TOOLS = ["deposit", "deduct", "freeze", "consume", "unfreeze"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TallyProcess]:
    process = TallyProcess(tmp_path_factory.mktemp("mcp") / "data", api_key=API_KEY).start()
    try:
        yield process
    finally:
        process.kill()


def _tally_command() -> tuple[str, list[str]]:
    """`tally mcp` as installed (the console script beside this interpreter), else the module."""
    script = Path(sys.executable).with_name("tally")
    return (str(script), ["mcp"]) if script.exists() else (sys.executable, ["-m", "net.cli", "mcp"])


@asynccontextmanager
async def mcp_session(url: str, *, allow_writes: bool = False, api_key: str | None = API_KEY) -> AsyncIterator[ClientSession]:
    command, args = _tally_command()
    env = {"TALLY_URL": url}
    if api_key is not None:
        env["TALLY_API_KEY"] = api_key
    params = StdioServerParameters(command=command, args=[*args, *(["--allow-writes"] if allow_writes else [])],
                                   env=env, cwd=REPO_ROOT)
    async with asyncio.timeout(SESSION_TIMEOUT_S):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=SESSION_TIMEOUT_S) as session:
                await session.initialize()
                yield session


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its result is the API's JSON (text and structured alike)."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {text_of(result)}"
    body = json.loads(text_of(result))
    assert result.structured_content == body
    return body


async def failed(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must fail; returns the envelope's `error` object."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {text_of(result)}"
    error = json.loads(text_of(result))["error"]
    assert result.structured_content == {"error": error}
    return error


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1 and result.content[0].type == "text"
    return result.content[0].text


async def balance(session: ClientSession, customer_id: str) -> dict[str, int]:
    return (await ok(session, "get_customer", customer_id=customer_id))["balance"]


# -- listing ---------------------------------------------------------------------------------------


async def test_tools_read_only_by_default_and_writes_with_the_flag(server: TallyProcess) -> None:
    async with mcp_session(server.base_url) as session:
        assert [tool.name for tool in (await session.list_tools()).tools] == READ_TOOLS
    async with mcp_session(server.base_url, allow_writes=True) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert list(tools) == READ_TOOLS + WRITE_TOOLS
    identity = {"deposit": "idempotency_key"} | {name: "transaction_id" for name in WRITE_TOOLS[1:]}
    for name in WRITE_TOOLS:
        schema = tools[name].input_schema
        assert identity[name] in schema["required"], name
        assert schema["additionalProperties"] is False
        assert tools[name].annotations is not None and tools[name].annotations.idempotent_hint is True
    for name in READ_TOOLS:
        assert tools[name].annotations is not None and tools[name].annotations.read_only_hint is True
    assert set(tools["freeze"].input_schema["properties"]) >= {
        "customer_id", "amount", "transaction_id", "wallet", "credit_types", "business_type",
        "description", "unfreeze_after_seconds", "consume_after_seconds"}
    assert set(tools["consume"].input_schema["properties"]) == {"transaction_id", "actual_amount"}
    assert tools["get_customer"].input_schema["required"] == ["customer_id"]
    assert set(tools["list_ledger"].input_schema["properties"]) == {
        "customer_id", "limit", "cursor", "operation_type", "transaction_id"}
    assert set(tools["list_freezes"].input_schema["properties"]) == {"customer_id", "limit", "cursor"}
    assert tools["list_freezes"].input_schema["required"] == ["customer_id"]


# -- sdk_download_and_usage ------------------------------------------------------------------------


async def test_sdk_guide_every_language_alias_and_a_bad_one(server: TallyProcess) -> None:
    expected = {"python": "python", "py": "python", "javascript": "javascript", "js": "javascript",
                "node": "javascript", "nodejs": "javascript", "ts": "javascript", "typescript": "javascript",
                "all": "all", "both": "all", "PY": "python", " Node ": "javascript"}
    async with mcp_session(server.base_url) as session:
        texts = {}
        for language in expected:
            result = await session.call_tool("sdk_download_and_usage", {"language": language})
            assert not result.is_error, language
            texts[language] = text_of(result)
        texts["(none)"] = text_of(await session.call_tool("sdk_download_and_usage", {}))
        for bad in ("ruby", "", "python3", 3, ["py"]):
            result = await session.call_tool("sdk_download_and_usage", {"language": bad})
            assert result.is_error and text_of(result) == "language must be python, javascript, or all", bad
        unknown = await session.call_tool("no_such_tool", {})
        assert unknown.is_error and text_of(unknown) == "Unknown tool: no_such_tool"
    expected["(none)"] = "all"
    for language, kind in expected.items():
        text = texts[language]
        assert text == mcp_guide.guide(kind), language
        assert ("pip install velobase-billing==0.2.2" in text) == (kind != "javascript"), language
        assert ("npm install @velobaseai/billing@1.1.2" in text) == (kind != "python"), language
        for rule in ("transaction_id", "idempotency_key", "unfreeze_after_seconds", "consume_after_seconds",
                     "credit_types", "insufficient_balance", "is_idempotent_replay", "TALLY_URL"):
            assert rule in text, (language, rule)


def test_python_snippet_runs_against_tally_and_twice_changes_nothing(server: TallyProcess) -> None:
    """The guide's Python code, unchanged, with the pinned SDK against the real server; a second
    run replays every write (the idempotency the text promises)."""
    snippet = re.search(r"```python\n(.*?)```", mcp_guide.guide("python"), re.DOTALL)
    assert snippet is not None
    env = {"TALLY_URL": server.base_url, "TALLY_API_KEY": API_KEY, "PATH": "/usr/bin:/bin"}
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", snippet.group(1)],
                              env=env, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout.splitlines())
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == "73.0 27.0"
    assert outputs[0][1] == "1122.0 195.0"  # 1000 + 200 - 5 - 73; the deduct drew on promo (expires first)
    assert outputs[0][2:5] == ["UNFREEZE 27.0 chat_42", "CONSUME 73.0 chat_42", "FREEZE 100.0 chat_42"]
    assert outputs[0][5].startswith("400 ") and outputs[0][6].startswith("404 ")


# -- the write flow --------------------------------------------------------------------------------


async def test_deposit_deduct_freeze_consume_unfreeze_with_exact_balances(server: TallyProcess) -> None:
    customer = "mcp/flow %2F ü+@?#"  # every character must survive the path (sent percent-encoded)
    async with mcp_session(server.base_url, allow_writes=True) as session:
        deposit = await ok(session, "deposit", customer_id=customer, amount=1000, idempotency_key="flow-dep",
                           wallet="default", source="stripe", description="top-up")
        assert (deposit["customer_id"], deposit["added_amount"], deposit["is_idempotent_replay"]) == (customer, 1000, False)
        deduct = await ok(session, "deduct", customer_id=customer, amount=100, transaction_id="flow-t1",
                          business_type="TASK")
        assert deduct["deducted_amount"] == 100
        freeze = await ok(session, "freeze", customer_id=customer, amount=300, transaction_id="flow-t2",
                          credit_types=["default"], unfreeze_after_seconds=600)
        assert freeze["frozen_amount"] == 300 and freeze["unfreeze_after"] is not None
        assert await balance(session, customer) == {"total": 1000, "used": 100, "frozen": 300, "available": 600}
        consume = await ok(session, "consume", transaction_id="flow-t2", actual_amount=200)
        assert (consume["consumed_amount"], consume["returned_amount"]) == (200, 100)
        assert await balance(session, customer) == {"total": 1000, "used": 300, "frozen": 0, "available": 700}
        await ok(session, "freeze", customer_id=customer, amount=50, transaction_id="flow-t3", consume_after_seconds=600)
        assert (await balance(session, customer))["available"] == 650
        unfreeze = await ok(session, "unfreeze", transaction_id="flow-t3")
        assert unfreeze["unfrozen_amount"] == 50
        assert await balance(session, customer) == {"total": 1000, "used": 300, "frozen": 0, "available": 700}

        ledger = await ok(session, "list_ledger", customer_id=customer)
        assert [(e["operation_type"], e["amount"], e["transaction_id"]) for e in ledger["items"]] == [
            ("UNFREEZE", 50, "flow-t3"), ("FREEZE", 50, "flow-t3"), ("UNFREEZE", 100, "flow-t2"),
            ("CONSUME", 200, "flow-t2"), ("FREEZE", 300, "flow-t2"), ("CONSUME", 100, "flow-t1"),
            ("GRANT", 1000, "flow-dep")]
        assert ledger["total_count"] == 7 and ledger["has_more"] is False
        grants = await ok(session, "list_ledger", customer_id=customer, operation_type="GRANT")
        assert [e["amount"] for e in grants["items"]] == [1000]
        only_t2 = await ok(session, "list_ledger", customer_id=customer, transaction_id="flow-t2")
        assert [e["operation_type"] for e in only_t2["items"]] == ["UNFREEZE", "CONSUME", "FREEZE"]
        first = await ok(session, "list_ledger", customer_id=customer, limit=4)
        second = await ok(session, "list_ledger", customer_id=customer, limit=4, cursor=first["next_cursor"])
        assert first["has_more"] is True and second["has_more"] is False
        assert [e["id"] for e in first["items"] + second["items"]] == [e["id"] for e in ledger["items"]]


async def test_list_freezes_shows_open_freezes_with_their_ttls(server: TallyProcess) -> None:
    customer = "mcp-freezes/é"  # `/` in an id goes out percent-encoded
    async with mcp_session(server.base_url, allow_writes=True) as session:
        await ok(session, "deposit", customer_id=customer, amount=100, idempotency_key="frz-dep")
        ttl = await ok(session, "freeze", customer_id=customer, amount=30, transaction_id="frz-ttl",
                       unfreeze_after_seconds=600)
        await ok(session, "freeze", customer_id=customer, amount=5, transaction_id="frz-auto", consume_after_seconds=60)
        await ok(session, "freeze", customer_id=customer, amount=7, transaction_id="frz-plain")
        listed = await ok(session, "list_freezes", customer_id=customer)
        assert [item["transaction_id"] for item in listed["items"]] == ["frz-plain", "frz-auto", "frz-ttl"]
        assert (listed["total_count"], listed["has_more"], listed["next_cursor"]) == (3, False, None)
        oldest = listed["items"][2]
        assert (oldest["amount"], oldest["settle_action"], oldest["settle_at"]) == (30, "unfreeze", ttl["unfreeze_after"])
        assert oldest["allocations"] == ttl["freeze_details"]
        assert listed["items"][1]["settle_action"] == "consume"
        assert (listed["items"][0]["settle_action"], listed["items"][0]["settle_at"]) == (None, None)
        first = await ok(session, "list_freezes", customer_id=customer, limit=2)
        rest = await ok(session, "list_freezes", customer_id=customer, limit=2, cursor=first["next_cursor"])
        assert [i["transaction_id"] for i in first["items"] + rest["items"]] == ["frz-plain", "frz-auto", "frz-ttl"]
        assert (first["has_more"], rest["has_more"]) == (True, False)
        await ok(session, "consume", transaction_id="frz-ttl", actual_amount=10)
        await ok(session, "unfreeze", transaction_id="frz-plain")
        after = await ok(session, "list_freezes", customer_id=customer)
        assert [item["transaction_id"] for item in after["items"]] == ["frz-auto"]
        assert await balance(session, customer) == {"total": 100, "used": 10, "frozen": 5, "available": 85}


async def test_a_repeated_write_call_is_an_idempotent_replay(server: TallyProcess) -> None:
    customer = "mcp-retry"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("deposit", {"customer_id": customer, "amount": 500, "idempotency_key": "retry-dep"}),
        ("deduct", {"customer_id": customer, "amount": 10, "transaction_id": "retry-t1"}),
        ("freeze", {"customer_id": customer, "amount": 40, "transaction_id": "retry-t2"}),
        ("consume", {"transaction_id": "retry-t2", "actual_amount": 30}),
        ("freeze", {"customer_id": customer, "amount": 5, "transaction_id": "retry-t3"}),
        ("unfreeze", {"transaction_id": "retry-t3"}),
    ]
    async with mcp_session(server.base_url, allow_writes=True) as session:
        for tool, arguments in calls:
            first = await ok(session, tool, **arguments)
            again = await ok(session, tool, **arguments)  # the agent retries the very same call
            assert first["is_idempotent_replay"] is False and again["is_idempotent_replay"] is True, tool
            assert {**again, "is_idempotent_replay": False} == first, tool
        assert await balance(session, customer) == {"total": 500, "used": 40, "frozen": 0, "available": 460}
        assert (await ok(session, "list_ledger", customer_id=customer))["total_count"] == 7


# -- refusals and errors ---------------------------------------------------------------------------


async def test_writes_without_the_flag_are_refused_and_charge_nothing(server: TallyProcess) -> None:
    customer = "mcp-readonly"
    async with mcp_session(server.base_url, allow_writes=True) as session:
        await ok(session, "deposit", customer_id=customer, amount=100, idempotency_key="ro-dep")
        await ok(session, "freeze", customer_id=customer, amount=10, transaction_id="ro-frozen")
    async with mcp_session(server.base_url) as session:
        before = await ok(session, "get_customer", customer_id=customer)
        writes = {
            "deposit": {"customer_id": customer, "amount": 5, "idempotency_key": "ro-dep-2"},
            "deduct": {"customer_id": customer, "amount": 5, "transaction_id": "ro-t1"},
            "freeze": {"customer_id": customer, "amount": 5, "transaction_id": "ro-t2"},
            "consume": {"transaction_id": "ro-frozen"},
            "unfreeze": {"transaction_id": "ro-frozen"},
        }
        for tool, arguments in writes.items():
            error = await failed(session, tool, **arguments)
            assert (error["code"], error["type"], error["details"]) == ("writes_disabled", "permission_denied", {"tool": tool})
            assert "--allow-writes" in error["message"]
        assert await ok(session, "get_customer", customer_id=customer) == before
        assert before["balance"] == {"total": 100, "used": 0, "frozen": 10, "available": 90}
        assert (await ok(session, "list_ledger", customer_id=customer))["total_count"] == 2


async def test_api_errors_come_back_as_error_results_with_the_code(server: TallyProcess) -> None:
    customer = "mcp-errors"
    async with mcp_session(server.base_url, allow_writes=True) as session:
        await ok(session, "deposit", customer_id=customer, amount=100, idempotency_key="err-dep")
        error = await failed(session, "deduct", customer_id=customer, amount=101, transaction_id="err-t1")
        assert (error["code"], error["type"]) == ("insufficient_balance", "bad_request")
        assert (error["details"]["requested"], error["details"]["available"]) == (101, 100)
        assert error["request_id"]
        for tool, arguments in (("get_customer", {"customer_id": "mcp-nobody"}),
                                ("list_ledger", {"customer_id": "mcp-nobody"}),
                                ("list_freezes", {"customer_id": "mcp-nobody"}),
                                ("freeze", {"customer_id": "mcp-nobody", "amount": 1, "transaction_id": "err-t2"})):
            assert (await failed(session, tool, **arguments))["code"] == "customer_not_found", tool
        assert (await failed(session, "consume", transaction_id="err-never"))["code"] == "no_consumable_freeze_records"
        assert (await failed(session, "unfreeze", transaction_id="err-never"))["code"] == "no_unfreezable_records"
        await ok(session, "deduct", customer_id=customer, amount=1, transaction_id="err-t3")
        conflict = await failed(session, "deduct", customer_id=customer, amount=2, transaction_id="err-t3")
        assert conflict["code"] == "transaction_conflict"
        both = await failed(session, "freeze", customer_id=customer, amount=1, transaction_id="err-t4",
                            unfreeze_after_seconds=5, consume_after_seconds=5)
        assert both["code"] == "invalid_auto_settlement"
        assert (await failed(session, "deduct", customer_id=customer, amount=0, transaction_id="err-t5"))["code"] == "amount_must_be_positive"
        assert (await failed(session, "deduct", customer_id=customer, amount=1, transaction_id="err-t6", bogus=1))["code"] == "unknown_field"
        assert (await failed(session, "list_ledger", customer_id=customer, limit=0))["code"] == "invalid_limit"
        assert (await failed(session, "list_ledger", customer_id=customer, limit=True))["code"] == "invalid_limit"
        assert (await failed(session, "list_ledger", customer_id=customer, operation_type="NOPE"))["code"] == "invalid_operation_type"
        assert (await failed(session, "list_freezes", customer_id=customer, limit=101))["code"] == "invalid_limit"
        assert (await failed(session, "list_freezes", customer_id=customer, limit=2.5))["code"] == "invalid_limit"
        assert (await failed(session, "list_freezes", customer_id=customer, cursor="nope"))["code"] == "invalid_cursor"
        assert (await failed(session, "list_freezes", customer_id=customer, cursor=7))["code"] == "invalid_cursor"
        assert (await failed(session, "list_freezes", customer_id=""))["code"] == "customer_id_required"
        assert (await failed(session, "get_customer", customer_id=""))["code"] == "customer_id_required"
        assert (await failed(session, "get_customer"))["code"] == "customer_id_required"
        for tool in ("get_customer", "list_ledger", "list_freezes"):
            unknown = await failed(session, tool, customer_id=customer, wallet="default")
            assert (unknown["code"], unknown["details"]) == ("invalid_arguments", {"field": "wallet"}), tool
        # nothing above charged anything: 100 deposited, 1 deducted
        assert await balance(session, customer) == {"total": 100, "used": 1, "frozen": 0, "available": 99}


async def test_a_write_without_its_identity_is_refused_before_tally(server: TallyProcess) -> None:
    customer = "mcp-no-id"
    async with mcp_session(server.base_url, allow_writes=True) as session:
        await ok(session, "deposit", customer_id=customer, amount=100, idempotency_key="noid-dep")
        missing = await failed(session, "deposit", customer_id=customer, amount=100)
        assert (missing["code"], missing["details"]) == ("idempotency_key_required", {"field": "idempotency_key"})
        for tool, arguments in (("deduct", {"customer_id": customer, "amount": 5}),
                                ("freeze", {"customer_id": customer, "amount": 5, "transaction_id": None}),
                                ("consume", {}), ("unfreeze", {})):
            assert (await failed(session, tool, **arguments))["code"] == "transaction_id_required", tool
        assert await balance(session, customer) == {"total": 100, "used": 0, "frozen": 0, "available": 100}


async def test_no_server_and_no_key_are_error_results_not_crashes(server: TallyProcess) -> None:
    async with mcp_session(f"http://127.0.0.1:{free_port()}") as session:  # nothing listens there
        error = await failed(session, "get_customer", customer_id="anyone")
        assert (error["code"], error["retryable"]) == ("network_error", True)
        assert not (await session.call_tool("sdk_download_and_usage", {"language": "py"})).is_error
    async with mcp_session(server.base_url, api_key=None) as session:
        assert (await failed(session, "get_customer", customer_id="anyone"))["code"] == "missing_api_key"
    async with mcp_session(server.base_url, api_key="vb_live_wrong") as session:
        assert (await failed(session, "list_ledger", customer_id="anyone"))["code"] == "invalid_api_key"


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "message"), [
    ({"TALLY_URL": "ftp://127.0.0.1:1"}, "tally: error: TALLY_URL must be an http:// or https:// URL with a host"),
    ({"TALLY_URL": "http://127.0.0.1:1/?x=1"}, "tally: error: TALLY_URL must not carry a query"),
    ({"TALLY_API_KEY": "key with\ttab"}, "tally: error: TALLY_API_KEY must be printable ASCII"),
])
def test_bad_environment_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "net.cli", "mcp"], cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


def test_config_keeps_the_key_out_of_repr_and_the_tool_table_is_complete() -> None:
    config = McpConfig(url="http://127.0.0.1:3002/", api_key="secret-key-value")
    assert "secret-key-value" not in repr(config) and config.base == "http://127.0.0.1:3002"
    assert list(TOOLS) == READ_TOOLS + WRITE_TOOLS
    assert [name for name, spec in TOOLS.items() if spec.write] == WRITE_TOOLS
