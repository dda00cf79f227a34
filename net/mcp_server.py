"""`tally mcp`: a Model Context Protocol server over stdio for AI coding agents, a client of a
running Tally (built on the official `mcp` SDK's low-level `Server`).

    McpConfig     TALLY_URL, TALLY_API_KEY (kept out of repr), --allow-writes, HTTP timeouts;
                  built and checked by net/cli.py (the only reader of env and argv)
    TallyClient   one aiohttp ClientSession: request(method, path, ...) -> ApiReply
    TOOLS         name -> ToolSpec: the MCP Tool (JSON schema, annotations), read or write, runner
    call_tool     (client, config, name, arguments) -> CallToolResult; never raises for a tool's
                  own failure
    serve         stdio until the client closes stdin; returns the exit code

Tools (arguments are the API's own field names; results carry the API's JSON verbatim as text and
as structuredContent):

    sdk_download_and_usage {language?}   guidance text (net/mcp_guide.py), no HTTP
    get_customer {customer_id}           GET /v1/customers/{id}
    list_ledger {customer_id, limit?, cursor?, operation_type?, transaction_id?}
                                         GET /v1/customers/{id}/ledger
    list_freezes {customer_id, limit?, cursor?}   GET /v1/customers/{id}/freezes: open freezes, TTLs
    deposit, deduct, freeze, consume, unfreeze   POST, the body is the arguments; listed and run
                                         only with --allow-writes; each REQUIRES its identity
                                         (deposit: idempotency_key, the others: transaction_id) so
                                         an agent's retry is an idempotent replay, never a 2nd charge

The write schemas come from the request Structs of net/schemas.py (the API's one definition of
each body), so a tool and the endpoint it calls cannot drift. Customer ids go into paths
percent-encoded, `/` included (the server routes on the raw path, CONTRACT §3.2).

Error results (is_error=True, the content an error envelope {"error": {"code", "type", "message",
"details", "retryable"[, "request_id"]}}):

    the API answered 4xx/5xx with its envelope   that envelope, verbatim (code from the server)
    the API answered something else              invalid_response (details.status)
    no answer: refused, reset, timed out         network_error (retryable: same id, same result)
    refused here, nothing sent to Tally          writes_disabled (a write without --allow-writes),
                                                 transaction_id_required, idempotency_key_required,
                                                 customer_id_required, invalid_identifier,
                                                 invalid_limit, invalid_cursor,
                                                 invalid_operation_type, invalid_arguments
    sdk_download_and_usage with a bad language   text "language must be python, javascript, or all"
    a tool that does not exist                   text "Unknown tool: <name>" (as Velobase's helper)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from importlib.metadata import version
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import mcp_types as types
import msgspec
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from yarl import URL

from net import mcp_guide
from net.schemas import REQUEST_STRUCTS

logger = logging.getLogger("tally.mcp")

URL_DEFAULT: Final = "http://127.0.0.1:3002"  # the SDKs' local default (velobase-api §1A.0)
# A Tally answer takes milliseconds (fsync'd writes included); 30 s is the SDKs' own timeout, so a
# stuck server shows as network_error before the agent's client gives up on the tool call.
REQUEST_TIMEOUT_S_DEFAULT: Final = 30.0
CONNECT_TIMEOUT_S_DEFAULT: Final = 5.0
SERVER_NAME: Final = "tally"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class McpConfig:
    """What `tally mcp` runs with. `url` is the base URL of a running Tally (http or https, a host,
    optionally a path prefix, no query or fragment); `api_key` None sends no Authorization header
    (every API tool then answers the server's 401 missing_api_key). ValueError names the field."""

    url: str = URL_DEFAULT
    api_key: str | None = dataclasses.field(default=None, repr=False)  # a secret: never logged
    allow_writes: bool = False
    request_timeout_s: float = REQUEST_TIMEOUT_S_DEFAULT
    connect_timeout_s: float = CONNECT_TIMEOUT_S_DEFAULT

    def __post_init__(self) -> None:
        try:
            parsed = URL(self.url)
        except (ValueError, TypeError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"url must be an http:// or https:// URL with a host, not {self.url!r}")
        if parsed.query_string or parsed.fragment or parsed.user is not None:
            raise ValueError(f"url must not carry a query, fragment or credentials, not {self.url!r}")
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()
                                             and self.api_key == self.api_key.strip(" \t") and self.api_key):
            raise ValueError("api_key must be printable ASCII without leading or trailing blanks")
        if not 0 < self.connect_timeout_s <= self.request_timeout_s:
            raise ValueError("connect_timeout_s must be > 0 and <= request_timeout_s")

    @property
    def base(self) -> str:
        """The URL in its encoded form without a trailing slash: API paths are appended to it."""
        return str(URL(self.url)).rstrip("/")


# -- the HTTP side ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ApiReply:
    """One answer of Tally: HTTP `status`, the body `text`, and `body` when it is a JSON object."""

    status: int
    text: str
    body: dict[str, Any] | None


class TallyClient:
    """Tally's API over one aiohttp ClientSession (its connection pool lives as long as serve)."""

    def __init__(self, session: aiohttp.ClientSession, config: McpConfig) -> None:
        self._session = session
        self._base = config.base

    async def request(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                      params: dict[str, str] | None = None) -> ApiReply:
        """`path` is already percent-encoded. Raises aiohttp.ClientError or TimeoutError when no
        answer arrives (the caller turns that into network_error); any HTTP answer is returned."""
        url = URL(self._base + path, encoded=True)
        async with self._session.request(method, url, json=body, params=params) as response:
            raw = await response.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            decoded = None
        return ApiReply(response.status, text, decoded if isinstance(decoded, dict) else None)


@asynccontextmanager
async def tally_client(config: McpConfig) -> AsyncIterator[TallyClient]:
    """A TallyClient with the timeouts and Authorization header of `config`, closed on exit."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=config.connect_timeout_s)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, raise_for_status=False) as session:
        yield TallyClient(session, config)


# -- results ---------------------------------------------------------------------------------------


def _result(text: str, structured: dict[str, Any] | None, *, error: bool) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=structured, is_error=error
    )


def error_result(code: str, message: str, details: dict[str, Any] | None = None, *,
                 type_: str = "bad_request", retryable: bool = False) -> types.CallToolResult:
    """An error made here (nothing reached Tally, or its answer was unusable), in the API's
    envelope shape so an agent reads every error the same way."""
    envelope = {"error": {"code": code, "type": type_, "message": message, "details": details or {},
                          "retryable": retryable}}
    return _result(json.dumps(envelope, ensure_ascii=False), envelope, error=True)


async def _call_api(client: TallyClient, method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> types.CallToolResult:
    """One API call -> its result: 2xx -> the JSON (is_error False); an error envelope -> itself
    (is_error True); no answer -> network_error; any other answer -> invalid_response."""
    try:
        reply = await client.request(method, path, body=body, params=params)
    except (aiohttp.ClientError, TimeoutError) as exc:
        message = f"no answer from Tally ({type(exc).__name__}: {exc}); retrying with the same id is safe"
        return error_result("network_error", message, type_="upstream_error", retryable=True)
    if 200 <= reply.status < 300 and reply.body is not None:
        return _result(reply.text, reply.body, error=False)
    if reply.status >= 400 and reply.body is not None and isinstance(reply.body.get("error"), dict):
        return _result(reply.text, reply.body, error=True)
    return error_result("invalid_response", f"Tally answered HTTP {reply.status} without its JSON envelope",
                        {"status": reply.status, "body": reply.text[:500]}, type_="upstream_error")


# -- the tools -------------------------------------------------------------------------------------

Runner = Callable[[TallyClient, dict[str, Any]], Awaitable[types.CallToolResult]]


@dataclasses.dataclass(frozen=True, slots=True)
class ToolSpec:
    tool: types.Tool
    write: bool
    run: Runner


def _customer_path(customer_id: object, suffix: str = "") -> str | types.CallToolResult:
    """/v1/customers/<id percent-encoded, `/` too><suffix>, or the error result for a bad id."""
    if customer_id is None or customer_id == "":
        return error_result("customer_id_required", "customer_id is required", {"field": "customer_id"})
    if not isinstance(customer_id, str):
        return error_result("invalid_identifier", "customer_id must be a string", {"field": "customer_id"})
    try:
        return f"/v1/customers/{quote(customer_id, safe='')}{suffix}"
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") decoded from the JSON-RPC text
        return error_result("invalid_identifier", "customer_id is not valid Unicode", {"field": "customer_id"})


def _unknown_argument(arguments: dict[str, Any], known: set[str]) -> types.CallToolResult | None:
    """A read tool's argument the API has no field for: refused (the write tools leave that to the
    API, whose bodies refuse unknown fields with unknown_field)."""
    unknown = sorted(set(arguments) - known)
    if not unknown:
        return None
    return error_result("invalid_arguments", f"unknown argument {unknown[0]!r}", {"field": unknown[0]})


async def _get_customer(client: TallyClient, arguments: dict[str, Any]) -> types.CallToolResult:
    path = _customer_path(arguments.get("customer_id"))
    if isinstance(path, types.CallToolResult):
        return path
    refused = _unknown_argument(arguments, {"customer_id"})
    if refused is not None:
        return refused
    return await _call_api(client, "GET", path)


# list_ledger query fields -> the API's code for a value of the wrong JSON type.
_LEDGER_QUERY: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "operation_type": "invalid_operation_type",
    "transaction_id": "invalid_identifier",
}


# list_freezes query fields (GET /v1/customers/{id}/freezes, beyond the record: issue 13).
_FREEZES_QUERY: Final = {"limit": "invalid_limit", "cursor": "invalid_cursor"}


async def _list_ledger(client: TallyClient, arguments: dict[str, Any]) -> types.CallToolResult:
    return await _list_page(client, arguments, "/ledger", _LEDGER_QUERY)


async def _list_freezes(client: TallyClient, arguments: dict[str, Any]) -> types.CallToolResult:
    return await _list_page(client, arguments, "/freezes", _FREEZES_QUERY)


async def _list_page(client: TallyClient, arguments: dict[str, Any], suffix: str,
                     query: dict[str, str]) -> types.CallToolResult:
    """GET /v1/customers/{customer_id}<suffix> with `query`'s fields (field -> the API's code for
    a value of the wrong JSON type). Query values: strings pass as they are and integers as their
    digits (the server judges them and answers its own codes); null or absent is left out; any
    other JSON type is refused here with the code the server uses for that field."""
    path = _customer_path(arguments.get("customer_id"), suffix)
    if isinstance(path, types.CallToolResult):
        return path
    params: dict[str, str] = {}
    for field, code in query.items():
        value = arguments.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return error_result(code, f"{field} must be a {'integer' if field == 'limit' else 'string'}",
                                {"field": field})
        params[field] = str(value)
    refused = _unknown_argument(arguments, {"customer_id", *query})
    if refused is not None:
        return refused
    return await _call_api(client, "GET", path, params=params)


async def _write(path: str, identity: str, client: TallyClient, arguments: dict[str, Any]) -> types.CallToolResult:
    """POST the arguments as the body. The identity field is required here even where the API
    makes it optional (deposit's idempotency_key): without it an agent's retry would charge twice."""
    if arguments.get(identity) is None:
        return error_result(f"{identity}_required",
                            f"{identity} is required: make one id per operation and send the same one "
                            "on every retry, so a retry is a replay, never a second change",
                            {"field": identity})
    return await _call_api(client, "POST", path, body=arguments)


async def _sdk_download_and_usage(_client: TallyClient, arguments: dict[str, Any]) -> types.CallToolResult:
    language = mcp_guide.language_of(arguments.get("language"))
    if language is None:
        return _result(mcp_guide.INVALID_LANGUAGE, None, error=True)
    return _result(mcp_guide.guide(language), None, error=False)


def _request_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of each request Struct, self-contained (no $ref), without its title."""
    _, components = msgspec.json.schema_components(REQUEST_STRUCTS)
    schemas = {}
    for name, schema in components.items():
        assert "$ref" not in json.dumps(schema), f"{name}: a tool schema must be self-contained"
        schemas[name] = {key: value for key, value in schema.items() if key != "title"}
    return schemas


_IDENTIFIER_SCHEMA: Final = {"type": "string", "minLength": 1, "maxLength": 255}

_CUSTOMER_ID: Final = {**_IDENTIFIER_SCHEMA, "description": "The customer id (any characters; sent percent-encoded)."}
_LEDGER_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "customer_id": _CUSTOMER_ID,
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Page size, default 20."},
        "cursor": {"type": "string", "description": "next_cursor of the previous page (while has_more)."},
        "operation_type": {"enum": ["GRANT", "FREEZE", "CONSUME", "UNFREEZE", "EXPIRE"],
                           "description": "Only entries of this type (a deduct is CONSUME, a deposit GRANT)."},
        "transaction_id": {**_IDENTIFIER_SCHEMA, "description": "Only entries of this transaction id (or deposit idempotency_key)."},
    },
    "required": ["customer_id"],
    "additionalProperties": False,
}
_FREEZES_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "customer_id": _CUSTOMER_ID,
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Page size, default 20."},
        "cursor": {"type": "string", "description": "next_cursor of the previous page (while has_more)."},
    },
    "required": ["customer_id"],
    "additionalProperties": False,
}
_GUIDE_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "language": {"type": "string", "default": "all",
                     "description": "python | javascript | all (aliases: py, js, node, nodejs, ts, typescript, both)."},
    },
    "additionalProperties": False,
}

_READ: Final = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
# Writes are idempotent by their required id: the same call twice is one change and one answer.
_WRITE: Final = types.ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                      open_world_hint=False)

# (tool, API path, request Struct, identity field, description)
_WRITES: Final = (
    ("deposit", "/v1/customers/deposit", "DepositRequest", "idempotency_key",
     "Add credits to a customer (creates the customer on its first deposit). idempotency_key is "
     "required: the same key again returns the original answer with is_idempotent_replay true."),
    ("deduct", "/v1/billing/deduct", "DeductRequest", "transaction_id",
     "Charge a known price at once. Fails with insufficient_balance (nothing charged) when the "
     "selected wallets lack credit. The same transaction_id again is a replay."),
    ("freeze", "/v1/billing/freeze", "FreezeRequest", "transaction_id",
     "Reserve up to `amount` credits before work of unknown cost; settle with consume or release "
     "with unfreeze (same transaction_id). Set unfreeze_after_seconds or consume_after_seconds so "
     "an abandoned freeze settles itself."),
    ("consume", "/v1/billing/consume", "ConsumeRequest", "transaction_id",
     "Settle a freeze: charge actual_amount (absent: all of it; less: the rest is returned; more: "
     "overage from the same wallets)."),
    ("unfreeze", "/v1/billing/unfreeze", "UnfreezeRequest", "transaction_id",
     "Release a freeze without charging anything."),
)


def _tools() -> dict[str, ToolSpec]:
    """Every tool, in the order they are listed."""
    schemas = _request_schemas()
    tools = {
        "sdk_download_and_usage": ToolSpec(types.Tool(
            name="sdk_download_and_usage", input_schema=_GUIDE_SCHEMA, annotations=_READ,
            description="How to install and call the official Velobase SDKs (Python velobase-billing, "
                        "JavaScript @velobaseai/billing) against this Tally server: base URL, "
                        "idempotency, wallets, freeze TTLs, consume, error codes."), False, _sdk_download_and_usage),
        "get_customer": ToolSpec(types.Tool(
            name="get_customer", annotations=_READ,
            input_schema={"type": "object", "properties": {"customer_id": _CUSTOMER_ID},
                          "required": ["customer_id"], "additionalProperties": False},
            description="A customer's balance (total, used, frozen, available), per wallet and "
                        "source, and its credit buckets: the API's GET /v1/customers/{customer_id}."),
            False, _get_customer),
        "list_ledger": ToolSpec(types.Tool(
            name="list_ledger", annotations=_READ, input_schema=_LEDGER_SCHEMA,
            description="A customer's ledger, newest first, with filters and cursor paging: the "
                        "API's GET /v1/customers/{customer_id}/ledger."), False, _list_ledger),
        "list_freezes": ToolSpec(types.Tool(
            name="list_freezes", annotations=_READ, input_schema=_FREEZES_SCHEMA,
            description="A customer's open freezes (not yet consumed or unfrozen), newest first, "
                        "with amount, allocations and TTL (settle_action unfreeze|consume, settle_at), "
                        "cursor paging: the API's GET /v1/customers/{customer_id}/freezes."),
            False, _list_freezes),
    }
    for name, path, struct, identity, description in _WRITES:
        schema = dict(schemas[struct])
        schema["required"] = sorted({*schema.get("required", ()), identity})
        tools[name] = ToolSpec(
            types.Tool(name=name, input_schema=schema, annotations=_WRITE,
                       description=f"{description} Needs `tally mcp --allow-writes`. The API's POST {path}."),
            True, functools.partial(_write, path, identity))
    return tools


TOOLS: Final = _tools()


def listed_tools(config: McpConfig) -> list[types.Tool]:
    """What tools/list shows: the write tools only with --allow-writes."""
    return [spec.tool for spec in TOOLS.values() if config.allow_writes or not spec.write]


async def call_tool(client: TallyClient, config: McpConfig, name: str,
                    arguments: dict[str, Any] | None) -> types.CallToolResult:
    """One tools/call -> its result. A write without --allow-writes is refused before anything is
    sent (writes_disabled, type permission_denied): it can charge nothing."""
    spec = TOOLS.get(name)
    if spec is None:
        return _result(f"Unknown tool: {name}", None, error=True)
    if spec.write and not config.allow_writes:
        return error_result("writes_disabled",
                            f"{name} changes balances and this server runs read-only; start it as "
                            "`tally mcp --allow-writes` to enable the write tools",
                            {"tool": name}, type_="permission_denied")
    return await spec.run(client, arguments or {})


# -- the MCP server --------------------------------------------------------------------------------

_INSTRUCTIONS: Final = (
    "Tally is a credit ledger speaking the Velobase billing API. get_customer, list_ledger and "
    "list_freezes read balances, history and open freezes; sdk_download_and_usage explains how application code calls it. {writes} "
    "Results are the API's JSON; errors carry error.code."
)


def create_server(config: McpConfig) -> Server[TallyClient]:
    """The MCP server: tools/list and tools/call over a TallyClient opened for its lifetime."""

    @asynccontextmanager
    async def lifespan(_server: Server[TallyClient]) -> AsyncIterator[TallyClient]:
        async with tally_client(config) as client:
            yield client

    async def on_list_tools(_ctx: ServerRequestContext[TallyClient],
                            _params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed_tools(config))

    async def on_call_tool(ctx: ServerRequestContext[TallyClient],
                           params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await call_tool(ctx.lifespan_context, config, params.name, params.arguments)
        logger.info("tool %s -> %s", params.name, "error" if result.is_error else "ok")
        return result

    writes = ("deposit, deduct, freeze, consume and unfreeze change balances; each needs its "
              "transaction_id (deposit: idempotency_key), so repeating a call is safe."
              if config.allow_writes else "Write tools are off (start with --allow-writes to enable them).")
    return Server(SERVER_NAME, version=version("tally"), instructions=_INSTRUCTIONS.format(writes=writes),
                  lifespan=lifespan, on_list_tools=on_list_tools, on_call_tool=on_call_tool)


async def _serve(config: McpConfig) -> None:
    server = create_server(config)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(config: McpConfig) -> int:
    """Serve MCP on stdin/stdout until the client closes stdin (exit 0). Nothing else may write to
    stdout: it is the protocol's wire (logs go to stderr)."""
    logger.info("tally mcp: %s, writes %s", config.url, "allowed" if config.allow_writes else "off")
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    return 0
