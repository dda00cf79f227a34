"""Request bodies -> Commands: typed request Structs, decoding, contract codes (CONTRACT §3.1-§3.4,
§3.9, §3.10, §7.5-§7.9).

Pure functions, no I/O: `parse_<op>(body, project[, idempotency_header]) -> Command`, raising
`net.errors.ClientError(code, message, details)` (400; status from engine/core/codes.py) for a
refused body. Commands are built with `at_ms=0`: the runtime stamps each one on its shard, where it
gets its LSN. net checks shape and values; existence (404), business rules (400) and conflicts
(409) are the engine's.

The request Structs (`DepositRequest`, `FreezeRequest`, `DeductRequest`, `ConsumeRequest`,
`UnfreezeRequest`) are the one definition of each body: msgspec validates them while decoding
(types, `Annotated[..., Meta(...)]` bounds, `Literal` enums, unknown fields) and net/openapi.py
generates the document's request schemas from them, so the two cannot drift. Shapes (units:
amounts in credits, TTLs in seconds, lengths in characters, metadata size in bytes of JSON):

    customer_id, transaction_id, wallet, credit_type, source, idempotency_key:
        Identifier = 1-ID_LENGTH_MAX characters matching ID_PATTERN (no C0 control or DEL, not
        all whitespace, not trimmed)                                  CONTRACT §3.2, §7.7
    amount: int 1..AMOUNT_MAX;  actual_amount: int 0..AMOUNT_MAX       CONTRACT §3.1
    credit_types: list of 1..CREDIT_TYPES_COUNT_MAX Identifiers        CONTRACT §3.4
    business_type: one of the nine (engine/core/limits.BUSINESS_TYPES), default UNDEFINED
    unfreeze_after_seconds 1..UNFREEZE_AFTER_S_MAX, consume_after_seconds 1..CONSUME_AFTER_S_MAX
    starts_at, expires_at: RFC 3339 text (parsed here: parse_rfc3339_ms)  CONTRACT §7.5
    description <= DESCRIPTION_LENGTH_MAX, name <= NAME_LENGTH_MAX, email <= EMAIL_LENGTH_MAX
    metadata: a JSON object (or null), <= METADATA_SIZE_MAX bytes, <= METADATA_DEPTH_MAX deep

Hand-written code remains only for what the contract makes lenient or cross-field:

- Amount text (CONTRACT §7.6): `600`, `600.0`, `6e2` are 600, judged on the literal's decimal text
  (float_hook=Decimal), never on a rounded double. A body msgspec refuses is re-read field by field
  (`_retry_lenient`): an integral number literal for an amount or TTL is rewritten as an integer
  and the body decoded once more; the fast path (integers) decodes once.
- Optional fields sent as null count as absent (their type is `T | None`), except `actual_amount`:
  only an absent one means "consume everything"; `"actual_amount": null` -> 400
  `actual_amount_must_be_non_negative` (CONTRACT §3.1).
- `credit_type` is the deposit's alias of `wallet` (both given and different -> 400
  `invalid_wallet_selection`, details.fields); freeze/deduct `credit_types` and `wallet` both
  given -> `invalid_wallet_selection`; both TTLs -> `invalid_auto_settlement`.
- The Idempotency-Key header is the deposit key; header and body differ ->
  `idempotency_key_mismatch`; a bad header value -> `invalid_identifier` (field `Idempotency-Key`).
- Times, `expires_at` after `starts_at` (`invalid_datetime_range`), metadata depth and integer
  range (what the WAL's msgpack can hold: -2^63 .. 2^64-1).

Shared with the slot and entitlement routes (net/slots_api.py, net/entitlements_api.py, CONTRACT
§8): `decode_request` with their own `FieldCodes` table, `decode_path_id` (any path id),
`query_values`, `page_limit`, `check_cursor`, `parse_time_ms`, `decode_metadata`, `invalid_id`.

Errors (CONTRACT §3.14, §7.9), each with details.field unless noted. msgspec's error path
(`$.field`) picks the code from `_FIELD_CODES`:

    not UTF-8, malformed JSON, not an object, nested too deep   invalid_json (no details)
    unknown field                                                unknown_field
    customer_id / transaction_id missing, null, empty, blank     customer_id_required / ..._required
    any other bad identifier (type, length, control character)   invalid_identifier
    amount: fraction, string, bool, null, absent, < minimum      amount_must_be_positive
    actual_amount: the same, null included                       actual_amount_must_be_non_negative
    amount or actual_amount integral and > 2^53-1 (9007199254740992, 1e308, 4300+ digits)
                                                                 amount_too_large
    credit_types                                                 invalid_credit_types (+ index)
    TTLs                                                         invalid_auto_settlement_ttl
    business_type, description, name, email, metadata, starts_at, expires_at
                                                                 invalid_<field>
"""

import datetime as _dt
import re
from decimal import Decimal
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Final, Literal, NamedTuple, Union, get_args, get_origin
from urllib.parse import unquote, unquote_plus, urlsplit

import msgspec
from msgspec import UNSET, Meta, UnsetType

from engine.core.commands import Consume, CreateWebhook, Deduct, Deposit, Freeze, Refund, SetAlerts, Unfreeze, Void
from engine.core.limits import (
    ALERT_THRESHOLDS_COUNT_MAX,
    DELIVERY_PAGE_SIZE_DEFAULT,
    DELIVERY_PAGE_SIZE_MAX,
    EVENT_TYPES,
    WEBHOOK_URL_LENGTH_MAX,
    AMOUNT_MAX,
    BUSINESS_TYPES,
    CONSUME_AFTER_S_MAX,
    CREDIT_TYPES_COUNT_MAX,
    CURSOR_LENGTH_MAX,
    CUSTOMER_CURSOR_LENGTH_MAX,
    CUSTOMER_PAGE_SIZE_DEFAULT,
    CUSTOMER_PAGE_SIZE_MAX,
    DESCRIPTION_LENGTH_MAX,
    EMAIL_LENGTH_MAX,
    ID_LENGTH_MAX,
    LABEL_LENGTH_MAX,
    LEDGER_PAGE_SIZE_DEFAULT,
    LEDGER_PAGE_SIZE_MAX,
    METADATA_DEPTH_MAX,
    METADATA_SIZE_MAX,
    NAME_LENGTH_MAX,
    OPERATION_TYPES,
    REASON_LENGTH_MAX,
    PREFIX_LENGTH_MAX,
    UNFREEZE_AFTER_S_MAX,
)
from net.errors import ClientError

_INT_MIN: Final = -(2**63)  # msgpack can encode every integer in [_INT_MIN, _UINT_MAX]
_UINT_MAX: Final = 2**64 - 1

# -- field types: the constraints msgspec checks and the document shows ----------------------------

_NO_CONTROL = r"[^\u0000-\u001f\u007f]"
# ... and not whitespace either: Python's str.isspace() set spelled out (`\s` differs by engine).
_NOT_BLANK = r"[^\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# No C0 control or DEL, not all whitespace (CONTRACT §3.2, §7.7); the same text is a Python regex
# (msgspec: re.search) and an ECMA-262 one (JSON Schema). `$(?!\n)`: Python's `$` also matches
# before a final newline; the lookahead refuses that, and is a no-op in ECMA-262.
ID_PATTERN: Final = f"^{_NO_CONTROL}*{_NOT_BLANK}{_NO_CONTROL}*$(?!\\n)"
ID_TEXT: Final = f"1-{ID_LENGTH_MAX} characters, not blank, no control characters; not trimmed."


# Every identifier field: `Annotated[str, ID, Meta(description=...)]` (msgspec merges the two).
ID: Final = Meta(min_length=1, max_length=ID_LENGTH_MAX, pattern=ID_PATTERN)


def _about(description: str) -> Meta:
    return Meta(description=f"{description} {ID_TEXT}")


_NUMBER_TEXT: Final = " An integral JSON number (600, 600.0 and 6e2 are all 600)."
Amount = Annotated[int, Meta(ge=1, le=AMOUNT_MAX, description="Credits, an integer." + _NUMBER_TEXT)]
ActualAmount = Annotated[
    int,
    Meta(
        ge=0,
        le=AMOUNT_MAX,
        description="Credits to charge; absent: the whole frozen amount; above it: overage. Not null."
        + _NUMBER_TEXT,
    ),
]
BusinessType = Literal[
    "UNDEFINED", "TASK", "ORDER", "MEMBERSHIP", "SUBSCRIPTION", "FREE_TRIAL", "ADMIN_GRANT", "TOKEN_USAGE", "ADMIN_DEDUCT"
]
assert frozenset(get_args(BusinessType)) == BUSINESS_TYPES, "BusinessType must list engine/core/limits.BUSINESS_TYPES"
CreditTypes = Annotated[
    list[Annotated[str, ID, _about("A wallet name.")]],
    Meta(
        min_length=1,
        max_length=CREDIT_TYPES_COUNT_MAX,
        description="Draw only from these wallets. Not together with `wallet`.",
    ),
]
Description = Annotated[str, Meta(max_length=DESCRIPTION_LENGTH_MAX)]
_TIME_TEXT: Final = (
    "RFC 3339 date-time with an offset (Z or ±hh:mm); years 0001-9999, no leap second; "
    "sub-millisecond digits are truncated."
)
TimeText = Annotated[str, Meta(description=_TIME_TEXT, extra_json_schema={"format": "date-time"})]
_TTL_TEXT: Final = " Seconds; not together with the other TTL." + _NUMBER_TEXT
UnfreezeAfter = Annotated[int, Meta(ge=1, le=UNFREEZE_AFTER_S_MAX, description="Auto-unfreeze after this long." + _TTL_TEXT)]
ConsumeAfter = Annotated[int, Meta(ge=1, le=CONSUME_AFTER_S_MAX, description="Auto-consume after this long." + _TTL_TEXT)]
Metadata = Annotated[
    msgspec.Raw,  # decoded by _metadata after its size is checked on the raw text
    Meta(
        description=f"A JSON object of at most {METADATA_SIZE_MAX} bytes of JSON, {METADATA_DEPTH_MAX} levels "
        "deep, integers within [-2^63, 2^64-1]; null counts as absent.",
        extra_json_schema={"type": ["object", "null"]},
    ),
]

# -- the request Structs (one per body; the document's request schemas) ----------------------------


class _Request(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    pass


class DepositRequest(_Request):
    customer_id: Annotated[str, ID, _about("The customer; created by its first deposit.")]
    amount: Amount
    wallet: Annotated[str, ID, _about("Wallet name, default `default`.")] | None = None
    credit_type: Annotated[str, ID, _about("Deprecated alias of `wallet`; if both are given they must be equal.")] | None = None
    source: Annotated[str, ID, _about("Source label inside the wallet, default `default`.")] | None = None
    starts_at: TimeText | None = None
    expires_at: Annotated[str, Meta(description=_TIME_TEXT + " Must be after starts_at.",
                                    extra_json_schema={"format": "date-time"})] | None = None  # fmt: skip
    idempotency_key: Annotated[str, ID, _about("Deposit identity; the Idempotency-Key header is the same (they must agree).")] | None = None
    name: Annotated[str, Meta(max_length=NAME_LENGTH_MAX)] | None = None
    email: Annotated[str, Meta(max_length=EMAIL_LENGTH_MAX)] | None = None
    metadata: Metadata | UnsetType = UNSET
    description: Description | None = None


class _DebitRequest(_Request):
    """What freeze and deduct share (not a document component: no operation names it)."""

    customer_id: Annotated[str, ID, _about("The customer (must exist).")]
    amount: Amount
    transaction_id: Annotated[str, ID, _about("Identity of the operation, one namespace per project shared by freeze and deduct.")]
    credit_types: CreditTypes | None = None
    wallet: Annotated[str, ID, _about("Draw only from this wallet. Not together with `credit_types`.")] | None = None
    business_type: BusinessType | None = None
    description: Description | None = None


class DeductRequest(_DebitRequest):
    pass


class FreezeRequest(_DebitRequest):
    unfreeze_after_seconds: UnfreezeAfter | None = None
    consume_after_seconds: ConsumeAfter | None = None


class ConsumeRequest(_Request):
    transaction_id: Annotated[str, ID, _about("The freeze to settle.")]
    actual_amount: ActualAmount | UnsetType = UNSET


class UnfreezeRequest(_Request):
    transaction_id: Annotated[str, ID, _about("The freeze to release.")]


Reason = Annotated[str, Meta(max_length=REASON_LENGTH_MAX, description="Why; shown as the entries' description.")]


class RefundRequest(_Request):
    """CONTRACT §10.1."""

    refund_id: Annotated[str, ID, _about("Identity of the refund, its own namespace per project.")]
    transaction_id: Annotated[str, ID, _about("The deduct or consumed freeze to refund.")]
    amount: (
        Annotated[int, Meta(ge=1, le=AMOUNT_MAX, description="Credits to give back; absent: all that is still "
                            "refundable. Not null." + _NUMBER_TEXT)]
        | UnsetType
    ) = UNSET  # fmt: skip
    reason: Reason | None = None


class VoidRequest(_Request):
    """CONTRACT §10.2."""

    void_id: Annotated[str, ID, _about("Identity of the void, its own namespace per project.")]
    account_id: Annotated[str, ID, _about("The bucket (a deposit's account_id) to void.")]
    reason: Reason | None = None



class CreateKeyRequest(_Request):
    """POST /admin/v1/keys (CONTRACT §9.2)."""

    project: Annotated[str, ID, _about("The project the key acts on; created if new.")]
    label: Annotated[str, Meta(max_length=LABEL_LENGTH_MAX, pattern=f"^{_NO_CONTROL}*$(?!\\n)",
                               description="A name for people (which app holds the key).")] | None = None  # fmt: skip


# scheme, then a host of letters, digits, `.`, `-` (or a bracketed IPv6 literal), an optional port,
# then a path/query of printable ASCII: what urlsplit accepts and _check_url does not refuse, except
# a port number above 65535 (prose).
URL_PATTERN: Final = r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?][\x21-\x7e]*)?$"
EventType = Literal["balance.below_threshold", "balance.recovered", "freeze.auto_settled", "credits.expired"]
assert get_args(EventType) == EVENT_TYPES, "EventType must list engine/core/limits.EVENT_TYPES"


class CreateWebhookRequest(_Request):
    """POST /admin/v1/webhooks (CONTRACT §11.1)."""

    project: Annotated[str, ID, _about("The project whose events it receives (must exist).")]
    url: Annotated[str, Meta(min_length=1, max_length=WEBHOOK_URL_LENGTH_MAX, pattern=URL_PATTERN,
                             description="An absolute http:// or https:// URL with a host, no user:password@, "
                             "port 0-65535.")]  # fmt: skip
    events: Annotated[list[EventType], Meta(min_length=1, max_length=len(EVENT_TYPES), extra_json_schema={"uniqueItems": True},
                                            description="Event types to receive, no repeats; absent: all.")] | None = None  # fmt: skip


Threshold = Annotated[int, Meta(ge=1, le=AMOUNT_MAX, description="Credits of `available`, an integer.")]


class SetAlertsRequest(_Request):
    """PUT /v1/alerts/{customer_id} (CONTRACT §11.1)."""

    thresholds: Annotated[list[Threshold], Meta(max_length=ALERT_THRESHOLDS_COUNT_MAX, extra_json_schema={"uniqueItems": True},
                                                description="Thresholds on `available`, no repeats; [] removes the rule.")]  # fmt: skip
    wallet: Annotated[str, ID, _about("One wallet's `available`; absent: the customer's.")] | None = None


REQUEST_STRUCTS: Final = (
    DepositRequest, FreezeRequest, DeductRequest, ConsumeRequest, UnfreezeRequest, RefundRequest, VoidRequest,
    CreateKeyRequest, CreateWebhookRequest, SetAlertsRequest,
)  # fmt: skip

# -- decoding: the typed fast path, the lenient retry, msgspec's error -> the contract code --------

_create_key_decoder = msgspec.json.Decoder(CreateKeyRequest)
_create_webhook_decoder = msgspec.json.Decoder(CreateWebhookRequest)
_set_alerts_decoder = msgspec.json.Decoder(SetAlertsRequest)
_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])  # one field at a time, text kept
_any_decoder = msgspec.json.Decoder(float_hook=Decimal)  # numbers other than ints: exact Decimal
_metadata_decoder = msgspec.json.Decoder(dict[str, Any] | None)
_key_encoder = msgspec.json.Encoder()

# Numbers judged on their text (CONTRACT §7.6): an integral literal is rewritten as an integer.
_LENIENT_NUMBERS: Final = frozenset(
    {"amount", "actual_amount", "unfreeze_after_seconds", "consume_after_seconds"}
)
# The code for a field msgspec refused ("... - at `$.field`"); amounts and required ids are judged
# on the value as well (_field_error).
_FIELD_CODES: Final = {
    "customer_id": "invalid_identifier",
    "transaction_id": "invalid_identifier",
    "wallet": "invalid_identifier",
    "credit_type": "invalid_identifier",
    "source": "invalid_identifier",
    "idempotency_key": "invalid_identifier",
    "amount": "amount_must_be_positive",
    "actual_amount": "actual_amount_must_be_non_negative",
    "credit_types": "invalid_credit_types",
    "business_type": "invalid_business_type",
    "description": "invalid_description",
    "starts_at": "invalid_starts_at",
    "expires_at": "invalid_expires_at",
    "name": "invalid_name",
    "email": "invalid_email",
    "metadata": "invalid_metadata",
    "unfreeze_after_seconds": "invalid_auto_settlement_ttl",
    "consume_after_seconds": "invalid_auto_settlement_ttl",
    "refund_id": "invalid_identifier",
    "void_id": "invalid_identifier",
    "account_id": "invalid_identifier",
    "reason": "invalid_reason",
    "project": "invalid_identifier",
    "label": "invalid_label",
    "url": "invalid_url",
    "events": "invalid_events",
    "thresholds": "invalid_thresholds",
}
_REQUIRED_CODES: Final = {
    "customer_id": "customer_id_required",
    "transaction_id": "transaction_id_required",
    "refund_id": "refund_id_required",
    "void_id": "void_id_required",
    "account_id": "account_id_required",
    "project": "project_required",
}


class FieldCodes(NamedTuple):
    """How a refused body field becomes a contract code: `fields` (field -> code of a bad value),
    `required` (field -> code when missing, null or blank), `lenient` (number fields judged on
    their literal text, CONTRACT §7.6). Other request modules (net/slots_api.py,
    net/entitlements_api.py) pass their own to `decode_request`."""

    fields: Mapping[str, str]
    required: Mapping[str, str]
    lenient: frozenset[str]


BILLING_CODES: Final = FieldCodes(_FIELD_CODES, _REQUIRED_CODES, _LENIENT_NUMBERS)
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*)`", re.DOTALL)
_MISSING_FIELD = re.compile(r"Object missing required field `([A-Za-z_]+)`")
_ERROR_PATH = re.compile(r" - at `\$\.([A-Za-z_]+)(?:\[([0-9]+)\])?")


def decode_request(decoder: msgspec.json.Decoder[Any], body: bytes, codes: FieldCodes = BILLING_CODES) -> Any:
    """body -> the request Struct, or raise ClientError (codes per field from `codes`). No other
    exception for any input."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        return _retry_lenient(decoder, body, str(exc), codes)
    except msgspec.DecodeError as exc:
        raise ClientError("invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ClientError("invalid_json", "body is nested too deeply") from None


def _retry_lenient(decoder: msgspec.json.Decoder[Any], body: bytes, text: str, codes: FieldCodes) -> Any:
    """The error path: the body msgspec refused, read again field by field.

    msgspec validates while it parses, so malformed text later in the body must still win
    (invalid_json): a full untyped parse first. Then each amount/TTL literal is judged on its text;
    if one was integral (600.0, 6e2) the body is rebuilt with integers and decoded once more."""
    try:
        _any_decoder.decode(body)
    except msgspec.ValidationError:
        pass  # well-formed; an integer literal too long for Python's int (4300+ digits)
    except (msgspec.DecodeError, RecursionError) as malformed:
        raise ClientError("invalid_json", f"body is not valid JSON: {malformed}") from None
    try:
        fields = _fields_decoder.decode(body)
    except msgspec.ValidationError:  # "Expected `object`, got `array`": the body's own shape
        raise ClientError("invalid_json", "body must be a JSON object") from None
    rewritten = False
    for name in codes.lenient.intersection(fields):
        integer = _integral_text(fields[name])
        if integer is not None:
            fields[name], rewritten = msgspec.Raw(integer), True
    for name in _LENIENT_NUMBER_LISTS.intersection(fields):  # [600.0, 6e2] -> [600, 600]
        items = _raw_list(fields[name])
        integers = [_integral_text(item) for item in items] if items is not None else []
        if integers and any(i is not None for i in integers):
            texts = [i if i is not None else bytes(item) for i, item in zip(integers, items or [])]
            fields[name], rewritten = msgspec.Raw(b"[" + b",".join(texts) + b"]"), True
    if rewritten:
        rebuilt = b"{" + b",".join(_key_encoder.encode(k) + b":" + bytes(v) for k, v in fields.items()) + b"}"
        try:
            return decoder.decode(rebuilt)
        except msgspec.ValidationError as exc:
            text = str(exc)
    raise _validation_error(text, fields, codes)


_LENIENT_NUMBER_LISTS: Final = frozenset({"thresholds"})  # lists of amounts (CONTRACT §11.1)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def _raw_list(raw: msgspec.Raw) -> list[msgspec.Raw] | None:
    try:
        return _raw_list_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _integral_text(raw: msgspec.Raw) -> bytes | None:
    """`600.0`, `6e2`, `-0.0` -> b"600", b"600", b"0"; None for anything else (ints need nothing).
    The range is checked before int() so `1e999999999` never builds a huge integer."""
    try:
        value = _any_decoder.decode(raw)
    except msgspec.ValidationError:  # an integer literal of 4300+ digits
        return None
    # comparisons only: abs() or arithmetic would round (and overflow) in the default context
    if type(value) is not Decimal or not -AMOUNT_MAX <= value <= AMOUNT_MAX or value != value.to_integral_value():
        return None
    return str(int(value)).encode()


def _validation_error(text: str, fields: dict[str, msgspec.Raw], codes: FieldCodes) -> ClientError:
    """msgspec's message (and the refused field's text) -> the contract's code and details."""
    unknown = _UNKNOWN_FIELD.fullmatch(text)
    if unknown is not None:
        field = unknown.group(1)
        return ClientError("unknown_field", f"unknown field {field!r}", {"field": field})
    missing = _MISSING_FIELD.fullmatch(text)
    if missing is not None:
        field = missing.group(1)
        code = codes.required.get(field) or codes.fields[field]
        return ClientError(code, f"{field} is required", {"field": field})
    path = _ERROR_PATH.search(text)
    if path is None or path.group(1) not in codes.fields:
        return ClientError("invalid_json", f"body does not have the expected shape: {text}")
    field, index = path.group(1), path.group(2)
    return _field_error(field, index, fields[field], text, codes)


def _field_error(field: str, index: str | None, raw: msgspec.Raw, text: str, codes: FieldCodes) -> ClientError:
    try:
        value = _any_decoder.decode(raw)
    except msgspec.ValidationError:  # an integer literal of 4300+ digits
        value = None if field not in codes.lenient else AMOUNT_MAX + 1
    code = codes.fields[field]
    details: dict[str, Any] = {"field": field}
    if field in ("amount", "actual_amount") and type(value) in (int, Decimal) and value > AMOUNT_MAX:
        code = "amount_too_large"
    elif field in codes.required and (value is None or (type(value) is str and _is_blank(value))):
        code = codes.required[field]
    elif field == "credit_types" and index is not None and type(value[int(index)]) is str:
        details["index"] = int(index)  # a wallet name that is not an identifier (a type error: none)
    return ClientError(code, f"{field}: {text}", details)


# -- identifiers checked by hand on the hot path (issue 14) ---------------------------------------


class IdCheckedDecoder:
    """A request Struct's decoder whose identifiers skip msgspec's per-field `re` call (~3k
    instructions per identifier field): same accepted set, same codes, messages and precedence.

    `decode(body)` first decodes into a twin Struct (`unpatterned`: every ID constraint without
    its pattern, the lengths kept) and checks the identifiers itself (`_plain_id`: sound, so
    True only where ID_PATTERN matches). Any refusal, of msgspec or of the check, decodes again
    with the request Struct's own decoder (`strict`) through `decode_request`, so an error is
    the one the strict decoder finds first and a value the check cannot vouch for (e.g. a lone
    surrogate) is judged by ID_PATTERN. Returns the twin (same attributes) or the Struct; raises
    ClientError as decode_request."""

    __slots__ = ("strict", "_twin", "_ids", "_id_lists")

    def __init__(self, request_type: type[msgspec.Struct]) -> None:
        self.strict = msgspec.json.Decoder(request_type)
        twin, self._ids, self._id_lists = unpatterned(request_type)
        self._twin = msgspec.json.Decoder(twin)

    def decode(self, body: bytes) -> Any:
        try:
            request = self._twin.decode(body)
        except (msgspec.MsgspecError, RecursionError):
            return decode_request(self.strict, body)
        for name in self._ids:
            value = getattr(request, name)
            # _plain_id's ASCII case inline (a call less per identifier on the hot path)
            if value is not None and not (value.isascii() and value.isprintable() and not value.isspace()):
                if not _plain_id(value):
                    return decode_request(self.strict, body)
        for name in self._id_lists:
            values = getattr(request, name)
            if values is not None and not all(map(_plain_id, values)):
                return decode_request(self.strict, body)
        return request


def unpatterned(request_type: type[msgspec.Struct]) -> tuple[type[msgspec.Struct], tuple[str, ...], tuple[str, ...]]:
    """(twin Struct, its identifier fields, its identifier-list fields): `request_type` with every
    ID constraint replaced by its length bounds alone, same fields, defaults and options."""
    config = request_type.__struct_config__
    assert config.forbid_unknown_fields and not config.array_like, request_type
    fields: list[tuple[str, Any, Any]] = []
    ids: list[str] = []
    id_lists: list[str] = []
    for field in msgspec.structs.fields(request_type):
        assert field.default_factory is msgspec.NODEFAULT and field.name == field.encode_name, field
        kind, annotation = _without_id_pattern(field.type)
        if kind == "id":
            ids.append(field.name)
        elif kind == "id_list":
            id_lists.append(field.name)
        fields.append((field.name, annotation, field.default))
    twin = msgspec.defstruct(request_type.__name__ + "Unpatterned", fields, forbid_unknown_fields=True, gc=False)
    return twin, tuple(ids), tuple(id_lists)


_ID_LENGTHS: Final = Meta(min_length=1, max_length=ID_LENGTH_MAX)


def _without_id_pattern(annotation: Any) -> tuple[str | None, Any]:
    """("id" | "id_list" | None, `annotation` with ID's pattern dropped). Only the shapes the
    request Structs use: Annotated, `X | None`, `X | UnsetType`, list[X]."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metas = get_args(annotation)
        kind, base = _without_id_pattern(base)
        is_id = any(isinstance(meta, Meta) and meta.pattern == ID_PATTERN for meta in metas)
        metas = [_ID_LENGTHS if isinstance(meta, Meta) and meta.pattern == ID_PATTERN else meta for meta in metas]
        return ("id" if is_id else kind), Annotated[(base, *metas)]
    if origin is Union or origin is UnionType:
        parts = [_without_id_pattern(part) for part in get_args(annotation)]
        kinds = {kind for kind, _ in parts if kind is not None}
        assert len(kinds) <= 1, annotation
        return (kinds.pop() if kinds else None), Union[tuple(part for _, part in parts)]
    if origin is list:
        kind, item = _without_id_pattern(get_args(annotation)[0])
        assert kind in (None, "id"), annotation
        return ("id_list" if kind == "id" else None), list[item]  # type: ignore[valid-type]
    return None, annotation


def _plain_id(value: str) -> bool:
    """True only if `value` matches ID_PATTERN, lengths aside (checked by msgspec): no C0 control,
    DEL or surrogate, and not all whitespace (tests/net/test_schemas.py: every code point)."""
    if value.isascii():
        return value.isprintable() and not value.isspace()  # ASCII printable: 0x20..0x7e
    return not value.isspace() and _FORBIDDEN_CHARS.search(value) is None


_deposit_decoder = IdCheckedDecoder(DepositRequest)
_freeze_decoder = IdCheckedDecoder(FreezeRequest)
_deduct_decoder = IdCheckedDecoder(DeductRequest)
_consume_decoder = IdCheckedDecoder(ConsumeRequest)
_unfreeze_decoder = IdCheckedDecoder(UnfreezeRequest)
_refund_decoder = IdCheckedDecoder(RefundRequest)
_void_decoder = IdCheckedDecoder(VoidRequest)


# -- identifiers (outside JSON bodies: paths, queries, headers) ------------------------------------

# C0 controls and DEL are refused (CONTRACT §7.7); surrogates only appear from an HTTP header
# decoded with surrogateescape (JSON bodies cannot produce them) and could not be logged as UTF-8.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def is_identifier(value: str) -> bool:
    """1-255 characters, not all whitespace, no control character (CONTRACT §3.2, §7.7); the
    same set as ID (tests/net/test_schemas.py checks every code point)."""
    if not 0 < len(value) <= ID_LENGTH_MAX or value.isspace():
        return False
    if value.isascii():
        return value.isprintable()  # ASCII printable = 0x20..0x7e: no C0, no DEL
    return _FORBIDDEN_CHARS.search(value) is None


def _is_blank(value: str) -> bool:
    """Empty, or whitespace only without a control character: what `*_required` means."""
    return value == "" or (value.isspace() and _FORBIDDEN_CHARS.search(value) is None)


def invalid_id(field: str) -> ClientError:
    return ClientError("invalid_identifier", f"{field} must be {ID_TEXT}", {"field": field})


def _check_required_id(value: str, field: str, required_code: str) -> str:
    """A path id: valid -> itself; blank -> `required_code`; else invalid_identifier."""
    if is_identifier(value):
        return value
    if _is_blank(value):
        raise ClientError(required_code, f"{field} is required", {"field": field})
    raise invalid_id(field)


# -- times ----------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_DAYS: Final = _dt.date(1970, 1, 1).toordinal()
_MS_PER_DAY: Final = 86_400_000
TIME_MS_MIN: Final = (_dt.date(1, 1, 1).toordinal() - _EPOCH_DAYS) * _MS_PER_DAY
TIME_MS_MAX: Final = (_dt.date(9999, 12, 31).toordinal() - _EPOCH_DAYS + 1) * _MS_PER_DAY - 1


def parse_rfc3339_ms(text: str) -> int | None:
    """RFC 3339 date-time with offset -> UTC ms (sub-ms digits truncated); None if invalid."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, offset_h, offset_m = match.groups()
    try:
        days = _dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAYS
    except ValueError:
        return None
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        return None
    ms = days * _MS_PER_DAY + (h * 3600 + m * 60 + s) * 1000
    if fraction:
        ms += int(fraction[:3].ljust(3, "0"))
    if sign is not None:
        oh, om = int(offset_h), int(offset_m)
        if oh > 23 or om > 59:
            return None
        offset_ms = (oh * 60 + om) * 60_000
        ms = ms - offset_ms if sign == "+" else ms + offset_ms
    if not TIME_MS_MIN <= ms <= TIME_MS_MAX:  # engine.core.timefmt must be able to format it
        return None
    return ms


def parse_time_ms(text: str | None, field: str) -> int | None:
    """RFC 3339 text (or None) -> UTC ms (or None); raises ClientError `invalid_<field>` (400,
    details.field), so the field's code must be registered."""
    if text is None:
        return None
    ms = parse_rfc3339_ms(text)
    if ms is None:
        raise ClientError(f"invalid_{field}", f"{field} must be {_TIME_TEXT}", {"field": field})
    return ms


# -- metadata -------------------------------------------------------------------------------------


def _invalid_metadata(reason: str) -> ClientError:
    return ClientError("invalid_metadata", f"metadata {reason}", {"field": "metadata"})


def decode_metadata(raw: msgspec.Raw | UnsetType) -> dict[str, Any] | None:
    """A `Metadata` field -> its object (None when absent or null); raises ClientError
    invalid_metadata (size, depth, integer range) or invalid_json (CONTRACT §3.3)."""
    if raw is UNSET:
        return None
    if len(raw) > METADATA_SIZE_MAX:
        raise _invalid_metadata(f"must be at most {METADATA_SIZE_MAX} bytes of JSON")
    try:
        value = _metadata_decoder.decode(raw)
    except msgspec.ValidationError as exc:  # not an object, or a float out of range
        raise _invalid_metadata(f"must be a JSON object: {exc}") from None
    except msgspec.DecodeError as exc:  # a string that is not UTF-8
        raise ClientError("invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid_metadata(f"must be at most {METADATA_DEPTH_MAX} levels deep") from None
    if value is None:
        return None
    problem = _metadata_problem(value)
    if problem is not None:
        raise _invalid_metadata(problem)
    return value


def _metadata_problem(root: dict[str, Any]) -> str | None:
    """Walk without recursion: depth and integer range (what the WAL's msgpack can hold)."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > METADATA_DEPTH_MAX:
            return f"must be at most {METADATA_DEPTH_MAX} levels deep"
        if type(value) is dict:
            stack.extend((item, depth + 1) for item in value.values())
        elif type(value) is list:
            stack.extend((item, depth + 1) for item in value)
        elif type(value) is int and not _INT_MIN <= value <= _UINT_MAX:
            return f"integers must be within [{_INT_MIN}, {_UINT_MAX}]"
    return None


# -- the parsers ----------------------------------------------------------------------------------


def parse_deposit(body: bytes, project: str, idempotency_header: str | None) -> Deposit:
    """POST /v1/customers/deposit (velobase-api §1A.1). Raises ClientError."""
    req: DepositRequest = _deposit_decoder.decode(body)
    wallet = _deposit_wallet(req.wallet, req.credit_type)
    key = _deposit_key(req.idempotency_key, idempotency_header)
    starts_at_ms = parse_time_ms(req.starts_at, "starts_at")
    expires_at_ms = parse_time_ms(req.expires_at, "expires_at")
    if starts_at_ms is not None and expires_at_ms is not None and expires_at_ms <= starts_at_ms:
        raise ClientError("invalid_datetime_range", "expires_at must be after starts_at", {"field": "expires_at"})
    return Deposit(
        at_ms=0,  # stamped by the runtime on the command's shard
        project=project,
        customer_id=req.customer_id,
        amount=req.amount,
        wallet=wallet,
        source="default" if req.source is None else req.source,
        starts_at_ms=starts_at_ms,
        expires_at_ms=expires_at_ms,
        idempotency_key=key,
        name=req.name,
        email=req.email,
        metadata=decode_metadata(req.metadata),
        description=req.description,
    )


def _deposit_wallet(wallet: str | None, credit_type: str | None) -> str:
    """CONTRACT §3.4: `wallet`, or `credit_type` as its alias (both and different -> 400).
    Default "default"."""
    if wallet is not None and credit_type is not None and wallet != credit_type:
        raise ClientError("invalid_wallet_selection",
            "wallet and its alias credit_type differ; give one",
            {"fields": ["wallet", "credit_type"]},
        )  # fmt: skip
    chosen = credit_type if wallet is None else wallet
    return "default" if chosen is None else chosen


def _deposit_key(key: str | None, header: str | None) -> str | None:
    """CONTRACT §3.9: the body's idempotency_key and the Idempotency-Key header are one key."""
    if header is None:
        return key
    if not is_identifier(header):
        raise ClientError("invalid_identifier",
            f"Idempotency-Key header must be 1-{ID_LENGTH_MAX} characters, not blank",
            {"field": "Idempotency-Key"},
        )  # fmt: skip
    if key is not None and key != header:
        raise ClientError("idempotency_key_mismatch",
            "Idempotency-Key header and body idempotency_key differ",
            {"field": "idempotency_key"},
        )  # fmt: skip
    return header


def _check_debit(req: FreezeRequest | DeductRequest) -> None:
    """What freeze and deduct check by hand: one wallet selection (CONTRACT §3.4)."""
    if req.credit_types is not None and req.wallet is not None:
        raise ClientError("invalid_wallet_selection",
            "give at most one of credit_types and wallet",
            {"fields": ["credit_types", "wallet"]},
        )  # fmt: skip


def parse_freeze(body: bytes, project: str) -> Freeze:
    """POST /v1/billing/freeze (velobase-api §1A.4, CONTRACT §3.10). Raises ClientError."""
    req: FreezeRequest = _freeze_decoder.decode(body)
    _check_debit(req)
    if req.unfreeze_after_seconds is not None and req.consume_after_seconds is not None:
        raise ClientError("invalid_auto_settlement",
            "give at most one of unfreeze_after_seconds and consume_after_seconds",
            {"fields": ["unfreeze_after_seconds", "consume_after_seconds"]},
        )  # fmt: skip
    return Freeze(
        at_ms=0,  # stamped by the runtime on the command's shard
        project=project,
        customer_id=req.customer_id,
        amount=req.amount,
        transaction_id=req.transaction_id,
        credit_types=None if req.credit_types is None else tuple(req.credit_types),
        wallet=req.wallet,
        business_type=req.business_type or "UNDEFINED",
        description=req.description,
        unfreeze_after_s=req.unfreeze_after_seconds,
        consume_after_s=req.consume_after_seconds,
    )


def parse_deduct(body: bytes, project: str) -> Deduct:
    """POST /v1/billing/deduct (velobase-api §1A.7). Raises ClientError."""
    req: DeductRequest = _deduct_decoder.decode(body)
    _check_debit(req)
    return Deduct(
        at_ms=0,  # stamped by the runtime on the command's shard
        project=project,
        customer_id=req.customer_id,
        amount=req.amount,
        transaction_id=req.transaction_id,
        credit_types=None if req.credit_types is None else tuple(req.credit_types),
        wallet=req.wallet,
        business_type=req.business_type or "UNDEFINED",
        description=req.description,
    )


def parse_consume(body: bytes, project: str) -> Consume:
    """POST /v1/billing/consume (velobase-api §1A.5). `customer_id` is left to the runtime;
    an absent `actual_amount` (never a null one) means the whole frozen amount."""
    req: ConsumeRequest = _consume_decoder.decode(body)
    return Consume(
        at_ms=0,  # stamped by the runtime on the command's shard
        project=project,
        customer_id=None,
        transaction_id=req.transaction_id,
        actual_amount=None if req.actual_amount is UNSET else req.actual_amount,
    )


def parse_unfreeze(body: bytes, project: str) -> Unfreeze:
    """POST /v1/billing/unfreeze (velobase-api §1A.6). `customer_id` is left to the runtime."""
    req: UnfreezeRequest = _unfreeze_decoder.decode(body)
    return Unfreeze(at_ms=0, project=project, customer_id=None, transaction_id=req.transaction_id)


def parse_refund(body: bytes, project: str) -> Refund:
    """POST /v1/billing/refund (CONTRACT §10.1) -> Refund (customer_id left to the runtime).
    An absent `amount` means all that is refundable; a null one is 400 amount_must_be_positive.
    Raises ClientError (refund_id_required, transaction_id_required, invalid_identifier,
    amount_must_be_positive, amount_too_large, invalid_reason, invalid_json, unknown_field)."""
    req: RefundRequest = _refund_decoder.decode(body)
    return Refund(
        at_ms=0,  # stamped by the runtime on the command's shard
        project=project,
        customer_id=None,
        refund_id=req.refund_id,
        transaction_id=req.transaction_id,
        amount=None if req.amount is UNSET else req.amount,
        reason=req.reason,
    )


def parse_void(body: bytes, project: str) -> Void:
    """POST /v1/billing/void (CONTRACT §10.2) -> Void (customer_id left to the runtime).
    Raises ClientError (void_id_required, account_id_required, invalid_identifier, invalid_reason)."""
    req: VoidRequest = _void_decoder.decode(body)
    return Void(at_ms=0, project=project, customer_id=None, void_id=req.void_id, account_id=req.account_id, reason=req.reason)


# -- GET paths and queries ------------------------------------------------------------------------


def decode_path_id(raw: str, field: str = "customer_id", required_code: str = "customer_id_required") -> str:
    """A raw (still percent-encoded) path segment -> the id, decoded exactly once.
    Raises ClientError (`required_code`, invalid_identifier; details.field = `field`)."""
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise invalid_id(field) from None
    return _check_required_id(value, field, required_code)


class LedgerQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int = LEDGER_PAGE_SIZE_DEFAULT
    cursor: str | None = None
    operation_type: str | None = None
    transaction_id: str | None = None
    wallet: str | None = None  # CONTRACT §10.3
    business_type: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None


_LEDGER_PARAM_CODES: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "operation_type": "invalid_operation_type",
    "transaction_id": "invalid_identifier",
    "wallet": "invalid_identifier",
    "business_type": "invalid_business_type",
    "from": "invalid_from",
    "to": "invalid_to",
}
_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")


def query_values(raw_query: str, codes: Mapping[str, str] = _LEDGER_PARAM_CODES) -> dict[str, str]:
    """Form-decoded parameters (`+` is a space, as the SDK's urlencode writes it), each decoded
    once; `codes`: allowed name -> its 400 code. Unknown (unknown_field) or repeated (its code)
    ones refused: a typo never silently widens a filter. Raises ClientError (details.field)."""
    values: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
        except UnicodeDecodeError:
            name = raw_name
        code = codes.get(name)
        if code is None:
            raise ClientError("unknown_field", f"unknown query parameter {name!r}", {"field": name})
        if name in values:
            raise ClientError(code, f"{name} given more than once", {"field": name})
        try:
            values[name] = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise ClientError(code, f"{name} is not valid UTF-8", {"field": name}) from None
    return values


def page_limit(text: str | None, default: int, maximum: int) -> int:
    """A page's `limit` parameter: absent -> `default`; else an integer 1..`maximum` written in
    1-3 digits. Raises ClientError invalid_limit (details.field)."""
    if text is None:
        return default
    limit = int(text) if _LIMIT_TEXT.fullmatch(text) else 0
    if not 1 <= limit <= maximum:
        raise ClientError("invalid_limit", f"limit must be an integer from 1 to {maximum}", {"field": "limit"})
    return limit


def check_cursor(text: str | None) -> str | None:
    """A page's opaque `cursor`: 1-CURSOR_LENGTH_MAX printable ASCII characters (its meaning is
    the engine's). Raises ClientError invalid_cursor (details.field)."""
    if text is not None and not (0 < len(text) <= CURSOR_LENGTH_MAX and text.isascii() and text.isprintable()):
        raise ClientError("invalid_cursor", "cursor is malformed", {"field": "cursor"})
    return text


def parse_ledger_query(raw_query: str) -> LedgerQuery:
    """The raw query string of GET .../ledger. Raises ClientError (unknown_field, invalid_limit,
    invalid_cursor, invalid_operation_type, invalid_identifier, invalid_business_type,
    invalid_from, invalid_to; details.field). `from`/`to`: RFC 3339 with an offset (§10.3)."""
    values = query_values(raw_query)
    limit = page_limit(values.get("limit"), LEDGER_PAGE_SIZE_DEFAULT, LEDGER_PAGE_SIZE_MAX)
    cursor = check_cursor(values.get("cursor"))
    operation_type = values.get("operation_type")
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        raise ClientError("invalid_operation_type",
            f"operation_type must be one of {', '.join(sorted(OPERATION_TYPES))}",
            {"field": "operation_type"},
        )  # fmt: skip
    transaction_id = values.get("transaction_id")
    if transaction_id is not None and not is_identifier(transaction_id):
        raise invalid_id("transaction_id")
    wallet = values.get("wallet")
    if wallet is not None and not is_identifier(wallet):
        raise invalid_id("wallet")
    business_type = values.get("business_type")
    if business_type is not None and business_type not in BUSINESS_TYPES:
        raise ClientError("invalid_business_type",
            f"business_type must be one of {', '.join(sorted(BUSINESS_TYPES))}", {"field": "business_type"}
        )  # fmt: skip
    return LedgerQuery(
        limit=limit, cursor=cursor, operation_type=operation_type, transaction_id=transaction_id, wallet=wallet,
        business_type=business_type, from_ms=parse_time_ms(values.get("from"), "from"), to_ms=parse_time_ms(values.get("to"), "to"),
    )  # fmt: skip


# -- the admin API and the customer list (CONTRACT §9.2, §9.3) -------------------------------------


def parse_create_key(body: bytes) -> CreateKeyRequest:
    """POST /admin/v1/keys. Raises ClientError (invalid_json, unknown_field, project_required,
    invalid_identifier, invalid_label; details.field)."""
    request: CreateKeyRequest = decode_request(_create_key_decoder, body)
    _check_required_id(request.project, "project", "project_required")
    return request


class CustomersQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int = CUSTOMER_PAGE_SIZE_DEFAULT
    cursor: str | None = None
    prefix: str | None = None  # None or "": every customer


_CUSTOMERS_PARAM_CODES: Final = {"limit": "invalid_limit", "cursor": "invalid_cursor", "prefix": "invalid_prefix"}


def parse_customers_query(raw_query: str) -> CustomersQuery:
    """The raw query of GET /v1/customers. Raises ClientError (unknown_field, invalid_limit,
    invalid_cursor, invalid_prefix; details.field). A prefix is 0..PREFIX_LENGTH_MAX characters
    without control characters (it need not be a whole identifier: " " and "a" are prefixes)."""
    values = query_values(raw_query, _CUSTOMERS_PARAM_CODES)
    limit = page_limit(values.get("limit"), CUSTOMER_PAGE_SIZE_DEFAULT, CUSTOMER_PAGE_SIZE_MAX)
    cursor = values.get("cursor")
    if cursor is not None and not (
        0 < len(cursor) <= CUSTOMER_CURSOR_LENGTH_MAX and cursor.isascii() and cursor.isprintable()
    ):
        raise ClientError("invalid_cursor", "cursor is malformed", {"field": "cursor"})
    prefix = values.get("prefix")
    if prefix is not None and (len(prefix) > PREFIX_LENGTH_MAX or _FORBIDDEN_CHARS.search(prefix) is not None):
        raise ClientError("invalid_prefix",
            f"prefix must be at most {PREFIX_LENGTH_MAX} characters without control characters", {"field": "prefix"}
        )  # fmt: skip
    return CustomersQuery(limit=limit, cursor=cursor, prefix=prefix or None)


def parse_keys_query(raw_query: str) -> str | None:
    """The raw query of GET /admin/v1/keys: the `project` filter, or None. Raises ClientError
    (unknown_field, invalid_identifier)."""
    project = query_values(raw_query, {"project": "invalid_identifier"}).get("project")
    if project is not None and not is_identifier(project):
        raise invalid_id("project")
    return project


# -- webhooks and alerts (CONTRACT §11) ------------------------------------------------------------


def _check_url(url: str) -> None:
    """An absolute http(s) URL with a host, no credentials, no whitespace or control characters."""
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not 0-65535
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.username is None
    except ValueError:
        ok = False
    if not ok or _FORBIDDEN_CHARS.search(url) is not None or any(c.isspace() for c in url):
        raise ClientError("invalid_url", "url must be an absolute http:// or https:// URL with a host", {"field": "url"})


def parse_create_webhook(body: bytes, secret: str) -> CreateWebhook:
    """POST /admin/v1/webhooks -> CreateWebhook with the shell's fresh `secret`. Raises ClientError
    (invalid_json, unknown_field, project_required, invalid_identifier, invalid_url,
    invalid_events; details.field)."""
    request: CreateWebhookRequest = decode_request(_create_webhook_decoder, body)
    _check_required_id(request.project, "project", "project_required")
    _check_url(request.url)
    events = EVENT_TYPES if request.events is None else tuple(request.events)
    if len(set(events)) != len(events):
        raise ClientError("invalid_events", "events must not repeat", {"field": "events"})
    return CreateWebhook(at_ms=0, project=request.project, url=request.url, events=events, secret=secret)


def parse_set_alerts(body: bytes, project: str, customer_id: str) -> SetAlerts:
    """PUT /v1/alerts/{customer_id} -> SetAlerts, thresholds descending. Raises ClientError
    (invalid_json, unknown_field, invalid_thresholds, invalid_identifier; details.field)."""
    request: SetAlertsRequest = decode_request(_set_alerts_decoder, body)
    thresholds = sorted(request.thresholds, reverse=True)
    if len(set(thresholds)) != len(thresholds):
        raise ClientError("invalid_thresholds", "thresholds must not repeat", {"field": "thresholds"})
    return SetAlerts(at_ms=0, project=project, customer_id=customer_id, wallet=request.wallet, thresholds=tuple(thresholds))


class DeliveriesQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int = DELIVERY_PAGE_SIZE_DEFAULT
    cursor: str | None = None


def parse_deliveries_query(raw_query: str) -> DeliveriesQuery:
    """The raw query of GET /admin/v1/webhooks/{id}/deliveries. Raises ClientError (unknown_field,
    invalid_limit, invalid_cursor)."""
    values = query_values(raw_query, {"limit": "invalid_limit", "cursor": "invalid_cursor"})
    limit = page_limit(values.get("limit"), DELIVERY_PAGE_SIZE_DEFAULT, DELIVERY_PAGE_SIZE_MAX)
    cursor = values.get("cursor")
    if cursor is not None and not (0 < len(cursor) <= CURSOR_LENGTH_MAX and cursor.isascii() and cursor.isprintable()):
        raise ClientError("invalid_cursor", "cursor is malformed", {"field": "cursor"})
    return DeliveriesQuery(limit=limit, cursor=cursor)


def parse_project_query(raw_query: str) -> str | None:
    """A `project` filter query (GET /admin/v1/keys, /admin/v1/webhooks), or None."""
    return parse_keys_query(raw_query)
