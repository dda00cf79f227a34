"""Every named limit of the ledger and its API, in one place (units and qualifiers last).

The log's own byte limits (frame payload, LSN range) live in wal/frame.py, which imports nothing
of ours; the HTTP server's request size bounds in net/config.py. Everything a request, a command
or the runtime is bounded by is here, so that a limit has one definition and one reason.
"""

from typing import Final

# -- money and identifiers (CONTRACT §3.1, §3.2) ----------------------------------------------------
AMOUNT_MAX: Final = 2**53 - 1  # CONTRACT §3.1: every amount and every sum stays <= this
ID_LENGTH_MAX: Final = 255  # CONTRACT §3.2
DESCRIPTION_LENGTH_MAX: Final = 2000  # velobase-api §5 [REC]
NAME_LENGTH_MAX: Final = 255
EMAIL_LENGTH_MAX: Final = 320  # RFC 5321: 64 local + @ + 255 domain
METADATA_SIZE_MAX: Final = 16 * 1024  # bytes of JSON text; "keep it small" (velobase-api §5)
METADATA_DEPTH_MAX: Final = 32  # the WAL and the response encoder recurse over it
CREDIT_TYPES_COUNT_MAX: Final = 100
CURSOR_LENGTH_MAX: Final = 512
API_KEY_LENGTH_MAX: Final = 512  # a bearer token longer than this is not one of ours

# -- timers (CONTRACT §3.10) ---------------------------------------------------------------------
UNFREEZE_AFTER_S_MAX: Final = 2_592_000  # 30 days
CONSUME_AFTER_S_MAX: Final = 604_800  # 7 days

# -- slots and entitlements (CONTRACT §8) ----------------------------------------------------------
SLOT_TTL_S_MAX: Final = 86_400  # CONTRACT §8.3: a claim's ttl_seconds is 1..1 day
ENTITLEMENT_VALUE_LENGTH_MAX: Final = 4096  # CONTRACT §8.1
FEATURE_KEYS_COUNT_MAX: Final = 100  # feature_keys filter of the entitlement list
EVENT_FILTER_COUNT_MAX: Final = 100  # `types` / `sources` lists of the event pages

# -- pages (CONTRACT §2) ---------------------------------------------------------------------------
LEDGER_PAGE_SIZE_MAX: Final = 100
LEDGER_PAGE_SIZE_DEFAULT: Final = 20
CUSTOMER_PAGE_SIZE_MAX: Final = 100  # CONTRACT §9.3
CUSTOMER_PAGE_SIZE_DEFAULT: Final = 20
PREFIX_LENGTH_MAX: Final = ID_LENGTH_MAX  # a longer prefix could match no customer id
# A customer-list cursor holds a customer id: msgpack (version, id <= 255 chars = <= 1020 UTF-8
# bytes, 8-byte binding) is <= 1036 bytes, base64 without padding <= 1382 characters.
CUSTOMER_CURSOR_LENGTH_MAX: Final = 1400

# -- projects and keys (CONTRACT §9.1, §9.2) --------------------------------------------------------
LABEL_LENGTH_MAX: Final = 255
EVENT_PAGE_SIZE_MAX: Final = 100  # slot and entitlement event pages (CONTRACT §8.4)
EVENT_PAGE_SIZE_DEFAULT: Final = 20

# -- the runtime ---------------------------------------------------------------------------------
SHARD_COUNT_MAX: Final = 256
assert CUSTOMER_CURSOR_LENGTH_MAX >= 4 * -(-(1 + 3 + 4 * ID_LENGTH_MAX + 2 + 8 + 1) // 3)
# The log must keep this much room before a shard applies one more item: an item logs its command
# plus the customer's due timers, which are few; a breach is a broken bound (fail-stop).
LOG_ROOM_PER_ITEM_MIN: Final = 64

BUSINESS_TYPES: Final = frozenset(
    {
        "UNDEFINED",
        "TASK",
        "ORDER",
        "MEMBERSHIP",
        "SUBSCRIPTION",
        "FREE_TRIAL",
        "ADMIN_GRANT",
        "TOKEN_USAGE",
        "ADMIN_DEDUCT",
    }
)
OPERATION_TYPES: Final = frozenset({"GRANT", "FREEZE", "CONSUME", "UNFREEZE", "EXPIRE", "REFUND", "VOID"})
REASON_LENGTH_MAX: Final = 2000  # refund / void `reason` (CONTRACT §10), like a description

# -- webhooks and alerts (CONTRACT §11) -------------------------------------------------------------
WEBHOOK_URL_LENGTH_MAX: Final = 2048  # a URL longer than this is not a receiver we want to sign for
WEBHOOKS_PER_PROJECT_MAX: Final = 10
ALERT_THRESHOLDS_COUNT_MAX: Final = 20  # per rule (customer level, or one wallet)
ALERT_RULES_PER_CUSTOMER_MAX: Final = 20  # the customer level + 19 wallets
# Undelivered events one webhook may hold (across its customers). Past it, new events for that
# webhook are counted in `dropped` instead of queued: a receiver dead for days cannot grow the
# ledger's memory without bound (~300 bytes an event: 100k events ~ 30 MB per webhook).
WEBHOOK_PENDING_EVENTS_MAX: Final = 100_000
WEBHOOK_ATTEMPTS_KEPT_MAX: Final = 1000  # attempts listed per webhook (newest kept)
WEBHOOK_RETRY_FIRST_MS: Final = 1000  # CONTRACT §11.3: from 1 s ...
WEBHOOK_RETRY_CAP_MS: Final = 3_600_000  # ... capped at 1 h ...
WEBHOOK_RETRY_WINDOW_MS: Final = 3 * 86_400_000  # ... for 3 days after the event
WEBHOOK_TIMEOUT_S: Final = 10.0  # CONTRACT §11.3
WEBHOOK_ERROR_LENGTH_MAX: Final = 200  # an attempt's error text, as logged
DELIVERY_PAGE_SIZE_MAX: Final = 100
DELIVERY_PAGE_SIZE_DEFAULT: Final = 20
EVENT_TYPES: Final = ("balance.below_threshold", "balance.recovered", "freeze.auto_settled", "credits.expired")
assert WEBHOOK_RETRY_FIRST_MS <= WEBHOOK_RETRY_CAP_MS <= WEBHOOK_RETRY_WINDOW_MS
