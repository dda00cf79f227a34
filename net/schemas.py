"""Request bodies -> Commands: decoding and shape validation (CONTRACT §3.1-§3.4, §3.10, §7.5-§7.9).

Pure functions, no I/O: `parse_<op>(body, project, at_ms, ...) -> Command | ClientError`. The
request Structs and their decoders are built once, here. What net/ decides (400) and what it leaves
to the engine: net checks shape and values (types, ranges, identifiers, formats); existence (404),
business rules (400) and conflicts (409) are the engine's.

Decisions (where the contract leaves a choice):

- Any Content-Type is accepted and the body is parsed as JSON (the SDKs always send
  application/json; refusing others would only make curl users guess).
- Body not UTF-8, malformed JSON, not an object, or nested deeper than the decoder allows
  -> 400 `invalid_json`. Unknown field -> 400 `unknown_field`, details.field. A field sent as
  null is treated as absent (the SDKs omit None; lenient clients send null).
- Amounts are judged on the literal's decimal text (the decoder's float_hook gets the text as a
  Decimal): `600`, `600.0`, `6e2` are 600. Fractions, strings, booleans, null/absent, arrays,
  objects, and values below the minimum -> `amount_must_be_positive` (consume:
  `actual_amount_must_be_non_negative`). An integral value above 2^53-1 (e.g. `9007199254740992`,
  `1e308`) -> 400 `amount_too_large` (the contract's code for any sum past that bound). A bare
  `NaN`/`Infinity` is not JSON at all -> `invalid_json`.
- Identifiers: 1-255 characters, not trimmed, not all-whitespace, no C0 control or DEL.
  `customer_id` / `transaction_id` missing, empty or all-whitespace -> `customer_id_required` /
  `transaction_id_required`; any other bad id (wrong type, too long, control characters, empty
  wallet/source/idempotency_key) -> `invalid_identifier`; every one with details.field.
- `credit_types`: a non-empty list (at most CREDIT_TYPES_COUNT_MAX) of valid identifiers, else
  `invalid_credit_types` (details.field, and details.index for a bad entry).
- Wallet selection: `credit_types` and `wallet` both given (freeze, deduct), or deposit `wallet`
  and `credit_type` both given and different -> 400 `invalid_wallet_selection` (details.fields).
- Idempotency-Key header alone counts as the deposit key; header and body both present and
  different -> 400 `idempotency_key_mismatch`; an invalid header value -> `invalid_identifier`.
- TTLs: both given -> `invalid_auto_settlement`; not an integer in range ->
  `invalid_auto_settlement_ttl` (details.field). `60.0` counts as 60, as for amounts.
- Times: RFC 3339 with `T` and an offset (`Z`/`z` or `±hh:mm`), seconds 00-59 (no leap second),
  years 0001-9999 also after conversion to UTC; sub-millisecond digits truncated. Else
  `invalid_starts_at` / `invalid_expires_at`; expires_at <= starts_at -> `invalid_datetime_range`.
- Descriptive fields: `description` a string of at most 2000 characters (`invalid_description`);
  `name` at most NAME_LENGTH_MAX (`invalid_name`); `email` at most EMAIL_LENGTH_MAX
  (`invalid_email`); `metadata` a JSON object of at most METADATA_SIZE_MAX bytes of JSON, at most
  METADATA_DEPTH_MAX levels deep, integers within the msgpack range (-2^63 .. 2^64-1), no
  out-of-range floats (`invalid_metadata`). `business_type` one of the nine
  (`invalid_business_type`).
"""

import datetime as _dt
import re
from decimal import Decimal
from typing import Any, Final
from urllib.parse import unquote, unquote_plus

import msgspec

from engine.core.commands import Consume, Deduct, Deposit, Freeze, Unfreeze
from engine.core.limits import (
    AMOUNT_MAX,
    BUSINESS_TYPES,
    CONSUME_AFTER_S_MAX,
    DESCRIPTION_LENGTH_MAX,
    ID_LENGTH_MAX,
    LEDGER_PAGE_SIZE_DEFAULT,
    LEDGER_PAGE_SIZE_MAX,
    OPERATION_TYPES,
    UNFREEZE_AFTER_S_MAX,
)
from net.errors import ClientError

NAME_LENGTH_MAX: Final = 255
EMAIL_LENGTH_MAX: Final = 320  # RFC 5321: 64 local + @ + 255 domain
METADATA_SIZE_MAX: Final = 16 * 1024  # bytes of JSON text; "keep it small" (velobase-api §5)
METADATA_DEPTH_MAX: Final = 32  # the WAL and the response encoder recurse over it
CREDIT_TYPES_COUNT_MAX: Final = 100
CURSOR_LENGTH_MAX: Final = 512
_INT_MIN: Final = -(2**63)  # msgpack can encode every integer in [_INT_MIN, _UINT_MAX]
_UINT_MAX: Final = 2**64 - 1

# -- request Structs and their decoders (built once) ----------------------------------------------
# Fields the contract types loosely (amounts, TTLs) are `Any` so the float_hook sees their text.
# `metadata` is Raw: decoded by its own decoder, without the hook, and bounded by its size first.

_RAW_ABSENT: Final = msgspec.Raw()


class _Request(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    pass


class DepositRequest(_Request):
    customer_id: str | None = None
    amount: Any = None
    wallet: str | None = None
    credit_type: str | None = None  # deprecated alias of wallet
    source: str | None = None
    starts_at: str | None = None
    expires_at: str | None = None
    idempotency_key: str | None = None
    name: str | None = None
    email: str | None = None
    metadata: msgspec.Raw = _RAW_ABSENT
    description: str | None = None


class FreezeRequest(_Request):
    customer_id: str | None = None
    amount: Any = None
    transaction_id: str | None = None
    credit_types: list[str] | None = None
    wallet: str | None = None
    business_type: str | None = None
    description: str | None = None
    unfreeze_after_seconds: Any = None
    consume_after_seconds: Any = None


class DeductRequest(_Request):
    customer_id: str | None = None
    amount: Any = None
    transaction_id: str | None = None
    credit_types: list[str] | None = None
    wallet: str | None = None
    business_type: str | None = None
    description: str | None = None


class ConsumeRequest(_Request):
    transaction_id: str | None = None
    actual_amount: Any = None


class UnfreezeRequest(_Request):
    transaction_id: str | None = None


_deposit_decoder = msgspec.json.Decoder(DepositRequest, float_hook=Decimal)
_freeze_decoder = msgspec.json.Decoder(FreezeRequest, float_hook=Decimal)
_deduct_decoder = msgspec.json.Decoder(DeductRequest, float_hook=Decimal)
_consume_decoder = msgspec.json.Decoder(ConsumeRequest, float_hook=Decimal)
_unfreeze_decoder = msgspec.json.Decoder(UnfreezeRequest, float_hook=Decimal)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any] | None)
_any_decoder = msgspec.json.Decoder(float_hook=Decimal)

# A msgspec type error names the field ("... - at `$.customer_id`"); its code comes from here.
_TYPE_ERROR_CODES: Final = {
    "customer_id": "invalid_identifier",
    "transaction_id": "invalid_identifier",
    "wallet": "invalid_identifier",
    "credit_type": "invalid_identifier",
    "source": "invalid_identifier",
    "idempotency_key": "invalid_identifier",
    "credit_types": "invalid_credit_types",
    "business_type": "invalid_business_type",
    "description": "invalid_description",
    "starts_at": "invalid_starts_at",
    "expires_at": "invalid_expires_at",
    "name": "invalid_name",
    "email": "invalid_email",
    # only "Integer value out of range": a literal of 4300+ digits
    "amount": "amount_too_large",
    "actual_amount": "amount_too_large",
    "unfreeze_after_seconds": "invalid_auto_settlement_ttl",
    "consume_after_seconds": "invalid_auto_settlement_ttl",
}
_UNKNOWN_FIELD_PREFIX: Final = "Object contains unknown field `"
_ERROR_PATH = re.compile(r" - at `\$\.([A-Za-z_]+)")


def _decode(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """Struct | ClientError. Never raises for any input."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a bad field may be reported before malformed text
        # later in the body; malformed JSON must win. Error path only: a second, untyped parse.
        try:
            _any_decoder.decode(body)
        except msgspec.ValidationError:
            pass  # well-formed; an integer literal too long for Python's int (4300+ digits)
        except (msgspec.DecodeError, RecursionError) as malformed:
            return ClientError("invalid_json", f"body is not valid JSON: {malformed}")
        return _validation_error(str(exc))
    except msgspec.DecodeError as exc:
        return ClientError("invalid_json", f"body is not valid JSON: {exc}")
    except RecursionError:
        return ClientError("invalid_json", "body is nested too deeply")


def _validation_error(text: str) -> ClientError:
    if text.startswith(_UNKNOWN_FIELD_PREFIX) and text.endswith("`"):
        field = text[len(_UNKNOWN_FIELD_PREFIX) : -1]
        return ClientError("unknown_field", f"unknown field {field!r}", {"field": field})
    match = _ERROR_PATH.search(text)
    if match is None:  # "Expected `object`, got `array`": the body itself has the wrong shape
        return ClientError("invalid_json", "body must be a JSON object")
    field = match.group(1)
    code = _TYPE_ERROR_CODES.get(field, "invalid_json")
    return ClientError(code, f"{field}: {text}", {"field": field})


# -- identifiers ----------------------------------------------------------------------------------

# C0 controls and DEL are refused (CONTRACT §7.7); surrogates only appear from an HTTP header
# decoded with surrogateescape (JSON bodies cannot produce them) and could not be logged as UTF-8.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def is_identifier(value: str) -> bool:
    """1-255 characters, not all whitespace, no control character (CONTRACT §3.2, §7.7)."""
    if not 0 < len(value) <= ID_LENGTH_MAX or value.isspace():
        return False
    if value.isascii():
        return value.isprintable()  # ASCII printable = 0x20..0x7e: no C0, no DEL
    return _FORBIDDEN_CHARS.search(value) is None


def _invalid_id(field: str) -> ClientError:
    return ClientError("invalid_identifier",
        f"{field} must be 1-{ID_LENGTH_MAX} characters, not blank, without control characters",
        {"field": field},
    )


def _required_id(value: str | None, field: str, required_code: str) -> ClientError | None:
    """Missing, empty or blank (spaces only, no control character) -> the `*_required` code."""
    if value is not None and is_identifier(value):
        return None
    if value is None or value == "" or (value.isspace() and _FORBIDDEN_CHARS.search(value) is None):
        return ClientError(required_code, f"{field} is required", {"field": field})
    return _invalid_id(field)


def _optional_id(value: str | None, field: str) -> ClientError | None:
    if value is None or is_identifier(value):
        return None
    return _invalid_id(field)


# -- amounts --------------------------------------------------------------------------------------

_BAD: Final = -1
_TOO_LARGE: Final = -2


def _integer(value: Any, minimum: int) -> int:
    """The integer a JSON literal denotes if it is in [minimum, AMOUNT_MAX]; else _BAD/_TOO_LARGE.

    Ints arrive as int, every other number as the Decimal of its text (float_hook), so `6e2` and
    `600.0` are 600 and `99.99999999999999999` is a fraction. The range is checked before any
    int() so `1e999999999` never builds a huge integer.
    """
    if type(value) is int:  # not bool: type() is exact
        if value > AMOUNT_MAX:
            return _TOO_LARGE
        return value if value >= minimum else _BAD
    if type(value) is Decimal:
        if value > AMOUNT_MAX:
            return _TOO_LARGE
        if value < minimum or value != value.to_integral_value():
            return _BAD
        return int(value)
    return _BAD


def _amount(value: Any, field: str, minimum: int, code: str) -> int | ClientError:
    amount = _integer(value, minimum)
    if amount >= 0:
        return amount
    if amount == _TOO_LARGE:
        return ClientError("amount_too_large", f"{field} must be at most {AMOUNT_MAX}", {"field": field})
    kind = "a positive" if minimum > 0 else "a non-negative"
    return ClientError(code, f"{field} must be {kind} integer", {"field": field})


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


def _time(text: str | None, field: str) -> int | None | ClientError:
    if text is None:
        return None
    ms = parse_rfc3339_ms(text)
    if ms is None:
        return ClientError(f"invalid_{field}",
            f"{field} must be an RFC 3339 date-time with an offset, e.g. 2026-04-07T12:00:00.000Z",
            {"field": field},
        )
    return ms


# -- descriptive fields ---------------------------------------------------------------------------


def _text(value: str | None, field: str, length_max: int) -> ClientError | None:
    if value is None or len(value) <= length_max:
        return None
    return ClientError(f"invalid_{field}", f"{field} must be at most {length_max} characters", {"field": field})


def _business_type(value: str | None) -> str | ClientError:
    if value is None:
        return "UNDEFINED"
    if value in BUSINESS_TYPES:
        return value
    return ClientError("invalid_business_type",
        f"business_type must be one of {', '.join(sorted(BUSINESS_TYPES))}",
        {"field": "business_type"},
    )


def _invalid_metadata(reason: str) -> ClientError:
    return ClientError("invalid_metadata", f"metadata {reason}", {"field": "metadata"})


def _metadata(raw: msgspec.Raw) -> dict[str, Any] | None | ClientError:
    if raw is _RAW_ABSENT:
        return None
    if len(raw) > METADATA_SIZE_MAX:
        return _invalid_metadata(f"must be at most {METADATA_SIZE_MAX} bytes of JSON")
    try:
        value = _metadata_decoder.decode(raw)
    except msgspec.ValidationError as exc:  # not an object, or a float out of range
        return _invalid_metadata(f"must be a JSON object: {exc}")
    except msgspec.DecodeError as exc:  # a string that is not UTF-8
        return ClientError("invalid_json", f"body is not valid JSON: {exc}")
    except RecursionError:
        return _invalid_metadata(f"must be at most {METADATA_DEPTH_MAX} levels deep")
    if value is None:
        return None
    problem = _metadata_problem(value)
    if problem is not None:
        return _invalid_metadata(problem)
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


# -- wallet selection and TTLs --------------------------------------------------------------------


def _credit_types(value: list[str] | None) -> tuple[str, ...] | None | ClientError:
    if value is None:
        return None
    if not 0 < len(value) <= CREDIT_TYPES_COUNT_MAX:
        return ClientError("invalid_credit_types",
            f"credit_types must be a list of 1-{CREDIT_TYPES_COUNT_MAX} wallet names",
            {"field": "credit_types"},
        )
    for index, name in enumerate(value):
        if not is_identifier(name):
            return ClientError("invalid_credit_types",
                f"credit_types[{index}] is not a valid wallet name",
                {"field": "credit_types", "index": index},
            )
    return tuple(value)


def _selection(credit_types: list[str] | None, wallet: str | None) -> tuple[tuple[str, ...] | None, str | None] | ClientError:
    if credit_types is not None and wallet is not None:
        return ClientError("invalid_wallet_selection",
            "give at most one of credit_types and wallet",
            {"fields": ["credit_types", "wallet"]},
        )
    selected = _credit_types(credit_types)
    if type(selected) is ClientError:
        return selected
    error = _optional_id(wallet, "wallet")
    if error is not None:
        return error
    return selected, wallet  # type: ignore[return-value]


def _ttl(value: Any, field: str, maximum: int) -> int | None | ClientError:
    if value is None:
        return None
    seconds = _integer(value, 1)
    if 0 < seconds <= maximum:
        return seconds
    return ClientError("invalid_auto_settlement_ttl", f"{field} must be an integer from 1 to {maximum}", {"field": field}
    )


# -- the parsers ----------------------------------------------------------------------------------


def parse_deposit(body: bytes, project: str, at_ms: int, idempotency_header: str | None) -> Deposit | ClientError:
    """POST /v1/customers/deposit (velobase-api §1A.1)."""
    req = _decode(_deposit_decoder, body)
    if type(req) is ClientError:
        return req
    error = _required_id(req.customer_id, "customer_id", "customer_id_required")
    if error is not None:
        return error
    amount = _amount(req.amount, "amount", 1, "amount_must_be_positive")
    if type(amount) is ClientError:
        return amount
    wallet = _deposit_wallet(req)
    if type(wallet) is ClientError:
        return wallet
    key = _deposit_key(req.idempotency_key, idempotency_header)
    if type(key) is ClientError:
        return key
    window = _deposit_window(req)
    if type(window) is ClientError:
        return window
    error = (
        _text(req.name, "name", NAME_LENGTH_MAX)
        or _text(req.email, "email", EMAIL_LENGTH_MAX)
        or _text(req.description, "description", DESCRIPTION_LENGTH_MAX)
    )
    if error is not None:
        return error
    metadata = _metadata(req.metadata)
    if type(metadata) is ClientError:
        return metadata
    starts_at_ms, expires_at_ms = window  # type: ignore[misc]
    return Deposit(
        at_ms=at_ms,
        project=project,
        customer_id=req.customer_id,
        amount=amount,
        wallet=wallet,  # type: ignore[arg-type]
        source="default" if req.source is None else req.source,
        starts_at_ms=starts_at_ms,
        expires_at_ms=expires_at_ms,
        idempotency_key=key,  # type: ignore[arg-type]
        name=req.name,
        email=req.email,
        metadata=metadata,
        description=req.description,
    )


def _deposit_wallet(req: DepositRequest) -> str | ClientError:
    """CONTRACT §3.4: `wallet`, or `credit_type` as its alias (both and different -> 400);
    `source` checked alongside. Default "default"."""
    wallet, credit_type = req.wallet, req.credit_type
    if wallet is not None and credit_type is not None and wallet != credit_type:
        return ClientError("invalid_wallet_selection",
            "wallet and its alias credit_type differ; give one",
            {"fields": ["wallet", "credit_type"]},
        )
    if wallet is None:
        wallet, wallet_field = credit_type, "credit_type"
    else:
        wallet_field = "wallet"
    error = _optional_id(wallet, wallet_field) or _optional_id(req.source, "source")
    if error is not None:
        return error
    return "default" if wallet is None else wallet


def _deposit_key(key: str | None, header: str | None) -> str | None | ClientError:
    """CONTRACT §3.9: the body's idempotency_key and the Idempotency-Key header are one key."""
    error = _optional_id(key, "idempotency_key")
    if error is not None:
        return error
    if header is None:
        return key
    if not is_identifier(header):
        return ClientError("invalid_identifier",
            f"Idempotency-Key header must be 1-{ID_LENGTH_MAX} characters, not blank",
            {"field": "Idempotency-Key"},
        )
    if key is not None and key != header:
        return ClientError("idempotency_key_mismatch",
            "Idempotency-Key header and body idempotency_key differ",
            {"field": "idempotency_key"},
        )
    return header


def _deposit_window(req: DepositRequest) -> tuple[int | None, int | None] | ClientError:
    """CONTRACT §3.5, §7.5: RFC 3339 instants with an offset; expires_at after starts_at."""
    starts_at_ms = _time(req.starts_at, "starts_at")
    if type(starts_at_ms) is ClientError:
        return starts_at_ms
    expires_at_ms = _time(req.expires_at, "expires_at")
    if type(expires_at_ms) is ClientError:
        return expires_at_ms
    if starts_at_ms is not None and expires_at_ms is not None and expires_at_ms <= starts_at_ms:
        return ClientError("invalid_datetime_range", "expires_at must be after starts_at", {"field": "expires_at"}
        )
    return starts_at_ms, expires_at_ms  # type: ignore[return-value]


def _debit_fields(req: FreezeRequest | DeductRequest) -> ClientError | tuple[int, tuple[str, ...] | None, str | None, str]:
    """What freeze and deduct share: ids, amount, wallet selection, business_type, description."""
    error = _required_id(req.customer_id, "customer_id", "customer_id_required") or _required_id(
        req.transaction_id, "transaction_id", "transaction_id_required"
    )
    if error is not None:
        return error
    amount = _amount(req.amount, "amount", 1, "amount_must_be_positive")
    if type(amount) is ClientError:
        return amount
    selection = _selection(req.credit_types, req.wallet)
    if type(selection) is ClientError:
        return selection
    business_type = _business_type(req.business_type)
    if type(business_type) is ClientError:
        return business_type
    error = _text(req.description, "description", DESCRIPTION_LENGTH_MAX)
    if error is not None:
        return error
    credit_types, wallet = selection  # type: ignore[misc]
    return amount, credit_types, wallet, business_type  # type: ignore[return-value]


def parse_freeze(body: bytes, project: str, at_ms: int) -> Freeze | ClientError:
    """POST /v1/billing/freeze (velobase-api §1A.4, CONTRACT §3.10)."""
    req = _decode(_freeze_decoder, body)
    if type(req) is ClientError:
        return req
    fields = _debit_fields(req)
    if type(fields) is ClientError:
        return fields
    amount, credit_types, wallet, business_type = fields  # type: ignore[misc]
    if req.unfreeze_after_seconds is not None and req.consume_after_seconds is not None:
        return ClientError("invalid_auto_settlement",
            "give at most one of unfreeze_after_seconds and consume_after_seconds",
            {"fields": ["unfreeze_after_seconds", "consume_after_seconds"]},
        )
    unfreeze_after_s = _ttl(req.unfreeze_after_seconds, "unfreeze_after_seconds", UNFREEZE_AFTER_S_MAX)
    if type(unfreeze_after_s) is ClientError:
        return unfreeze_after_s
    consume_after_s = _ttl(req.consume_after_seconds, "consume_after_seconds", CONSUME_AFTER_S_MAX)
    if type(consume_after_s) is ClientError:
        return consume_after_s
    return Freeze(
        at_ms=at_ms,
        project=project,
        customer_id=req.customer_id,  # type: ignore[arg-type]
        amount=amount,
        transaction_id=req.transaction_id,  # type: ignore[arg-type]
        credit_types=credit_types,
        wallet=wallet,
        business_type=business_type,
        description=req.description,
        unfreeze_after_s=unfreeze_after_s,
        consume_after_s=consume_after_s,
    )


def parse_deduct(body: bytes, project: str, at_ms: int) -> Deduct | ClientError:
    """POST /v1/billing/deduct (velobase-api §1A.7)."""
    req = _decode(_deduct_decoder, body)
    if type(req) is ClientError:
        return req
    fields = _debit_fields(req)
    if type(fields) is ClientError:
        return fields
    amount, credit_types, wallet, business_type = fields  # type: ignore[misc]
    return Deduct(
        at_ms=at_ms,
        project=project,
        customer_id=req.customer_id,  # type: ignore[arg-type]
        amount=amount,
        transaction_id=req.transaction_id,  # type: ignore[arg-type]
        credit_types=credit_types,
        wallet=wallet,
        business_type=business_type,
        description=req.description,
    )


def parse_consume(body: bytes, project: str, at_ms: int) -> Consume | ClientError:
    """POST /v1/billing/consume (velobase-api §1A.5). `customer_id` is left to the runtime."""
    req = _decode(_consume_decoder, body)
    if type(req) is ClientError:
        return req
    error = _required_id(req.transaction_id, "transaction_id", "transaction_id_required")
    if error is not None:
        return error
    actual_amount = None
    if req.actual_amount is not None:
        actual_amount = _amount(req.actual_amount, "actual_amount", 0, "actual_amount_must_be_non_negative")
        if type(actual_amount) is ClientError:
            return actual_amount
    return Consume(
        at_ms=at_ms,
        project=project,
        customer_id=None,
        transaction_id=req.transaction_id,  # type: ignore[arg-type]
        actual_amount=actual_amount,
    )


def parse_unfreeze(body: bytes, project: str, at_ms: int) -> Unfreeze | ClientError:
    """POST /v1/billing/unfreeze (velobase-api §1A.6). `customer_id` is left to the runtime."""
    req = _decode(_unfreeze_decoder, body)
    if type(req) is ClientError:
        return req
    error = _required_id(req.transaction_id, "transaction_id", "transaction_id_required")
    if error is not None:
        return error
    return Unfreeze(at_ms=at_ms, project=project, customer_id=None, transaction_id=req.transaction_id)  # type: ignore[arg-type]


# -- GET paths and queries ------------------------------------------------------------------------


def decode_path_id(raw: str) -> str | ClientError:
    """A raw (still percent-encoded) path segment -> customer id, decoded exactly once."""
    try:
        customer_id = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return _invalid_id("customer_id")
    return _required_id(customer_id, "customer_id", "customer_id_required") or customer_id


class LedgerQuery(msgspec.Struct, frozen=True, gc=False):
    limit: int = LEDGER_PAGE_SIZE_DEFAULT
    cursor: str | None = None
    operation_type: str | None = None
    transaction_id: str | None = None


_LEDGER_PARAM_CODES: Final = {
    "limit": "invalid_limit",
    "cursor": "invalid_cursor",
    "operation_type": "invalid_operation_type",
    "transaction_id": "invalid_identifier",
}
_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")


def parse_ledger_query(raw_query: str) -> LedgerQuery | ClientError:
    """The raw query string of GET .../ledger (form-encoded: `+` is a space, as the SDK's urlencode
    writes it). Unknown parameters -> 400 `unknown_field`: a typo never silently widens a filter."""
    values: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
        except UnicodeDecodeError:
            name = raw_name
        code = _LEDGER_PARAM_CODES.get(name)
        if code is None:
            return ClientError("unknown_field", f"unknown query parameter {name!r}", {"field": name})
        if name in values:
            return ClientError(code, f"{name} given more than once", {"field": name})
        try:
            values[name] = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            return ClientError(code, f"{name} is not valid UTF-8", {"field": name})
    limit = LEDGER_PAGE_SIZE_DEFAULT
    text = values.get("limit")
    if text is not None:
        limit = int(text) if _LIMIT_TEXT.fullmatch(text) else 0
        if not 1 <= limit <= LEDGER_PAGE_SIZE_MAX:
            return ClientError("invalid_limit", f"limit must be an integer from 1 to {LEDGER_PAGE_SIZE_MAX}", {"field": "limit"}
            )
    cursor = values.get("cursor")
    if cursor is not None and not (0 < len(cursor) <= CURSOR_LENGTH_MAX and cursor.isascii() and cursor.isprintable()):
        return ClientError("invalid_cursor", "cursor is malformed", {"field": "cursor"})
    operation_type = values.get("operation_type")
    if operation_type is not None and operation_type not in OPERATION_TYPES:
        return ClientError("invalid_operation_type",
            f"operation_type must be one of {', '.join(sorted(OPERATION_TYPES))}",
            {"field": "operation_type"},
        )
    transaction_id = values.get("transaction_id")
    error = _optional_id(transaction_id, "transaction_id")
    if error is not None:
        return error
    return LedgerQuery(limit=limit, cursor=cursor, operation_type=operation_type, transaction_id=transaction_id)
