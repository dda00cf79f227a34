"""The text of the `sdk_download_and_usage` MCP tool: how to call Tally from the official SDKs.

Compatible with Velobase's own helper (velobase-api.md §9.3): `language` is `python`,
`javascript` or `all` (default `all`), with the aliases py, js, node, nodejs, ts, typescript and
both; anything else is refused with exactly `INVALID_LANGUAGE`. Unlike that helper, the text is
about this server: `base_url` is TALLY_URL, and every rule it states is Tally's (CONTRACT §3).

Pure: `language_of(value) -> "python" | "javascript" | "all" | None`, `guide(language) -> str`.
The Python snippet runs unchanged against a real `tally serve` (tests/net/test_mcp_server.py runs
it with the pinned SDK); the JavaScript one mirrors it with `@velobaseai/billing` 1.1.2's names
(camelCase parameters, `wallet` instead of `credit_types`, `err.code` on errors).
"""

from typing import Final, Literal

from engine.core.limits import CONSUME_AFTER_S_MAX, UNFREEZE_AFTER_S_MAX

Language = Literal["python", "javascript", "all"]

INVALID_LANGUAGE: Final = "language must be python, javascript, or all"
LANGUAGE_DEFAULT: Final[Language] = "all"
ALIASES: Final[dict[str, Language]] = {
    "python": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "nodejs": "javascript",
    "ts": "javascript",
    "typescript": "javascript",
    "all": "all",
    "both": "all",
}

PYTHON_SDK: Final = "velobase-billing==0.2.2"
JAVASCRIPT_SDK: Final = "@velobaseai/billing@1.1.2"


def language_of(value: object) -> Language | None:
    """The tool's `language` argument -> its language; absent (None) -> the default; None for
    anything that is not one of the names or aliases (case and surrounding blanks ignored, as
    Velobase's helper does)."""
    if value is None:
        return LANGUAGE_DEFAULT
    if not isinstance(value, str):
        return None
    return ALIASES.get(value.strip().lower())


_INTRO: Final = """\
# Tally: the Velobase billing API, self-hosted

Tally serves the hosted Velobase billing API, so the official SDKs work unchanged: point their
base URL at Tally (this MCP server uses TALLY_URL, default http://127.0.0.1:3002) and pass a Tally
API key (printed once by the first `tally serve` and kept in `tally-data/bootstrap-key`; more with
`tally keys create --project NAME` while the server is stopped). A key belongs to one project;
every id lives inside its project. Amounts are integer credits (1 .. 2^53-1). A 2xx answer means
the change is on disk.
"""

_RULES: Final = f"""\
## Rules that make retries safe

- Every write has an identity. freeze / consume / unfreeze / deduct: `transaction_id` (required;
  one namespace per project shared by freeze and deduct). deposit: `idempotency_key` (optional in
  the API, but a deposit without one is never deduplicated: always send one). Make the id once,
  store it with your job or order (e.g. f"{{customer_id}}_{{uuid4().hex}}"), and send the same id on
  every retry; never generate it at the call site.
- A repeat returns the original answer with `"is_idempotent_replay": true` and changes nothing.
  The same id with another customer_id, amount or wallet selection is 409 `transaction_conflict`
  (`details.field` names the difference). A request that failed (any 4xx) left no trace: the
  same id may succeed later.
- deposit creates the customer; freeze and deduct need an existing one (404 `customer_not_found`).

## Wallets and sources

- A deposit lands in `wallet` (default `default`) under a `source` label (default `default`),
  optionally inside a window `starts_at` / `expires_at` (RFC 3339 with Z or an offset). Credits
  count only inside their window; what is left at `expires_at` is written off (EXPIRE entry).
  `credit_type` is the deprecated alias of `wallet`. Use lower-case snake_case wallet names (the
  Python SDK rewrites camelCase keys of the answers).
- freeze and deduct draw from every wallet by default; `credit_types: [...]` limits them to
  those wallets, `wallet: "..."` to one (not both). Order: soonest expiry first, then oldest.

## Freeze, then consume or unfreeze

- freeze reserves `amount` (the most the work may cost) under a `transaction_id`. Give it a TTL so
  a crashed worker never strands credits: `unfreeze_after_seconds` (1..{UNFREEZE_AFTER_S_MAX}, releases it)
  or `consume_after_seconds` (1..{CONSUME_AFTER_S_MAX}, charges all of it), never both
  (`invalid_auto_settlement`; out of range: `invalid_auto_settlement_ttl`).
- consume settles it: `actual_amount` below the frozen amount returns the rest
  (`returned_amount`); omitted charges all of it; 0 returns all; above it charges the excess from
  the same wallets (`overage_amount`) or fails with `insufficient_balance` and changes nothing.
- unfreeze releases all of it. Each freeze ends once: consume after unfreeze is
  `no_consumable_freeze_records`, after the TTL's auto-unfreeze `freeze_auto_unfrozen`; unfreeze
  after consume is `no_unfreezable_records`; a second consume with another amount is
  `freeze_records_already_consumed`.
- deduct is a one-step charge of a known price.

## Reading

- GET /v1/customers/{{customer_id}} (percent-encode the id, `/` included): `balance` {{total, used,
  frozen, available}} (available = total - used - frozen), `wallets` {{name: {{..., sources}}}},
  `accounts` (one per credit bucket that still holds available or frozen credit).
- GET /v1/customers/{{customer_id}}/ledger: newest first; `limit` 1..100 (default 20), `cursor`
  (from `next_cursor` while `has_more`), `operation_type` (GRANT, FREEZE, CONSUME, UNFREEZE,
  EXPIRE), `transaction_id`. A deduct is recorded as CONSUME, a deposit as GRANT.

## Errors

Every error is `{{"error": {{"code", "type", "message", "details", "retryable", "request_id"}}}}`;
branch on `code`:
- 400: `insufficient_balance` (details: wallet, requested, available),
  `insufficient_balance_in_selected_credit_types`, `amount_must_be_positive`,
  `actual_amount_must_be_non_negative`, `customer_id_required`, `transaction_id_required`,
  `invalid_credit_types`, `invalid_wallet_selection`, `invalid_business_type`, the freeze
  lifecycle codes above, `unknown_field`, `invalid_json`.
- 401 `missing_api_key` / `invalid_api_key` / `api_key_revoked`; 404 `customer_not_found`;
  409 `transaction_conflict`; 503 `overloaded`, `storage_unavailable`, `not_ready`,
  `shutting_down`, `not_leader` (a cluster standby: `details.leader`) (`retryable` true: retry
  with the same id).
"""

_PYTHON: Final = f"""\
## Python: `{PYTHON_SDK}`

Install: `pip install {PYTHON_SDK}` (Python 3.9+). Reference: the package's README on PyPI.

```python
import os

from velobase_billing import NotFoundError, ValidationError, Velobase

vb = Velobase(api_key=os.environ["TALLY_API_KEY"],
              base_url=os.environ.get("TALLY_URL", "http://127.0.0.1:3002"))

# Deposit: creates the customer; the idempotency_key makes a retry safe.
vb.customers.deposit(customer_id="user_1", amount=1000, idempotency_key="order_77",
                     wallet="default", source="stripe_checkout")
vb.customers.deposit(customer_id="user_1", amount=200, idempotency_key="promo_2099_user_1",
                     wallet="promo", expires_at="2099-12-31T23:59:59Z")

# Known price: one step. No credit_types: every wallet, soonest expiry first (here: promo).
vb.billing.deduct(customer_id="user_1", amount=5, transaction_id="img_001",
                  business_type="TASK", description="image generation")

# Unknown price: freeze a budget, do the work, settle the actual cost.
vb.billing.freeze(customer_id="user_1", amount=100, transaction_id="chat_42",
                  credit_types=["default"], unfreeze_after_seconds=600)
settled = vb.billing.consume(transaction_id="chat_42", actual_amount=73)
print(settled.consumed_amount, settled.returned_amount)      # 73.0 27.0
# (if the work failed instead: vb.billing.unfreeze(transaction_id="chat_42"))

customer = vb.customers.get("user_1")
print(customer.balance.available, customer.wallets["promo"].available)   # 1122.0 195.0
page = vb.customers.ledger("user_1", limit=20, transaction_id="chat_42")
for entry in page.items:                                     # newest first
    print(entry.operation_type, entry.amount, entry.transaction_id)

try:
    vb.billing.deduct(customer_id="user_1", amount=10**9, transaction_id="too_big_1")
except ValidationError as error:                             # every 400, insufficient_balance too
    print(error.status, error.message)
try:
    vb.customers.get("nobody")
except NotFoundError as error:                               # 404 customer_not_found
    print(error.status, error.message)
```

Notes: the SDK models amounts as floats (73 comes back as 73.0); its exceptions carry `status`,
`type` and `message` only (raise on status: ValidationError 400, AuthenticationError 401,
NotFoundError 404, ConflictError 409, InternalError 500); to branch on the error `code`, read the
JSON envelope over plain HTTP. freeze/deduct take `credit_types` (no `wallet`); `business_type`
must be one of UNDEFINED, TASK, ORDER, MEMBERSHIP, SUBSCRIPTION, FREE_TRIAL, ADMIN_GRANT. A freeze
without a TTL warns once (DeprecationWarning). It retries 429, 5xx and network errors itself
(twice by default), which is safe because every write carries its id. `AsyncVelobase` has the
same methods as coroutines.
"""

_JAVASCRIPT: Final = f"""\
## JavaScript / TypeScript: `{JAVASCRIPT_SDK}`

Install: `npm install {JAVASCRIPT_SDK}` (Node 18+, ESM or CommonJS, types included).
Reference: the package's README on npm.

```javascript
import {{ Velobase, VelobaseError }} from "@velobaseai/billing";

const vb = new Velobase({{
  apiKey: process.env.TALLY_API_KEY,
  baseUrl: process.env.TALLY_URL ?? "http://127.0.0.1:3002",
}});

// Deposit: creates the customer; the idempotencyKey makes a retry safe.
await vb.customers.deposit({{ customerId: "user_1", amount: 1000, idempotencyKey: "order_77",
  wallet: "default", source: "stripe_checkout" }});

// Known price: one step.
await vb.billing.deduct({{ customerId: "user_1", amount: 5, transactionId: "img_001",
  businessType: "TASK", description: "image generation" }});

// Unknown price: freeze a budget, do the work, settle the actual cost.
await vb.billing.freeze({{ customerId: "user_1", amount: 100, transactionId: "chat_42",
  wallet: "default", unfreezeAfterSeconds: 600 }});
const settled = await vb.billing.consume({{ transactionId: "chat_42", actualAmount: 73 }});
console.log(settled.consumedAmount, settled.returnedAmount);  // 73 27
// (if the work failed instead: await vb.billing.unfreeze({{ transactionId: "chat_42" }}))

const customer = await vb.customers.get("user_1");
console.log(customer.wallets.default.available);
const page = await vb.customers.ledger("user_1", {{ limit: 20, transactionId: "chat_42" }});
for (const entry of page.items) console.log(entry.operationType, entry.amount);

try {{
  await vb.billing.deduct({{ customerId: "user_1", amount: 1e9, transactionId: "too_big_1" }});
}} catch (err) {{
  if (err instanceof VelobaseError && err.code === "insufficient_balance") {{
    console.log(err.status, err.details.requested, err.details.available, err.requestId);
  }} else {{
    throw err;
  }}
}}
```

Notes: parameters and answers are camelCase (the SDK converts; `metadata` and wallet names pass
verbatim); freeze/deduct take `wallet` (one wallet); errors are `VelobaseError` with `code`,
`type`, `status`, `details`, `retryable`, `requestId`. It retries 429, 5xx and network errors
itself (twice by default), which is safe because every write carries its id.
"""


def guide(language: Language) -> str:
    """The whole answer for one language (Markdown): Tally's rules, then the SDK section(s)."""
    sections = {"python": [_PYTHON], "javascript": [_JAVASCRIPT], "all": [_PYTHON, _JAVASCRIPT]}[language]
    return "\n".join([_INTRO, *sections, _RULES])
