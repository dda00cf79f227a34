"""Request parsing shared by the slot and entitlement routes (velobase-api §1A.8-§1A.9, CONTRACT §8).

Pure: bytes or a raw query string in, a typed request Struct / values or a ClientError out; never
raises for any input. The same decisions as net/schemas.py (CONTRACT §3.2, §7.6-§7.9):

- body not UTF-8, malformed JSON, not an object -> 400 `invalid_json`; unknown field ->
  `unknown_field` (details.field); a field sent as null is treated as absent.
- identifiers 1-255 characters, not all whitespace, no C0 control or DEL; missing, empty or
  blank -> the field's `*_required` code, any other bad id -> `invalid_identifier`.
- amounts are judged on the literal's decimal text (`2.0` is 2); below 1 or not integral ->
  `amount_must_be_positive`, above 2^53-1 -> `amount_too_large`.
- times RFC 3339 with an offset (net.schemas.parse_rfc3339_ms), else the field's own code.
- query strings are form-encoded (`+` is a space), decoded once; a parameter given twice -> its
  code; an unknown one -> `unknown_field`; comma lists split after decoding, so a `%2C` comma
  separates too (CONTRACT §8.5).

Only the public helpers of net/schemas.py are imported (`is_identifier`, `parse_rfc3339_ms`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final
from urllib.parse import unquote_plus

import msgspec

from engine.core.limits import (
    AMOUNT_MAX,
    CURSOR_LENGTH_MAX,
    EVENT_FILTER_COUNT_MAX,
    EVENT_PAGE_SIZE_DEFAULT,
    EVENT_PAGE_SIZE_MAX,
    ID_LENGTH_MAX,
    METADATA_DEPTH_MAX,
    METADATA_SIZE_MAX,
)
from net.errors import ClientError
from net.schemas import is_identifier, parse_rfc3339_ms

RAW_ABSENT: Final = msgspec.Raw()
_any_decoder = msgspec.json.Decoder(float_hook=Decimal)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any] | None)
_UNKNOWN_FIELD_PREFIX: Final = "Object contains unknown field `"
_MISSING_FIELD = re.compile(r"Object missing required field `([A-Za-z_]+)`")
_ERROR_PATH = re.compile(r" - at `\$\.([A-Za-z_]+)")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1


class Request(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Base of the request bodies: unknown fields are refused (CONTRACT §7.9)."""


def decode(decoder: msgspec.json.Decoder, body: bytes, codes: dict[str, str]) -> Any:
    """Struct | ClientError. `codes`: field -> code of a wrong type, or of a missing required field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        try:  # malformed JSON later in the body wins over a bad field reported first
            _any_decoder.decode(body)
        except msgspec.ValidationError:
            pass
        except (msgspec.DecodeError, RecursionError) as malformed:
            return ClientError("invalid_json", f"body is not valid JSON: {malformed}")
        return _validation_error(str(exc), codes)
    except msgspec.DecodeError as exc:
        return ClientError("invalid_json", f"body is not valid JSON: {exc}")
    except RecursionError:
        return ClientError("invalid_json", "body is nested too deeply")


def _validation_error(text: str, codes: dict[str, str]) -> ClientError:
    if text.startswith(_UNKNOWN_FIELD_PREFIX) and text.endswith("`"):
        field = text[len(_UNKNOWN_FIELD_PREFIX) : -1]
        return ClientError("unknown_field", f"unknown field {field!r}", {"field": field})
    match = _MISSING_FIELD.search(text) or _ERROR_PATH.search(text)
    if match is None:
        return ClientError("invalid_json", "body must be a JSON object")
    field = match.group(1)
    return ClientError(codes.get(field, "invalid_json"), f"{field}: {text}", {"field": field})


# -- fields ---------------------------------------------------------------------------------------


def required_id(value: str | None, field: str, required_code: str) -> ClientError | None:
    """Missing, empty or blank -> `required_code`; other bad ids -> invalid_identifier."""
    if value is not None and is_identifier(value):
        return None
    if value is None or value == "" or (value.isspace() and _FORBIDDEN_CHARS.search(value) is None):
        return ClientError(required_code, f"{field} is required", {"field": field})
    return invalid_id(field)


def optional_id(value: str | None, field: str) -> ClientError | None:
    return None if value is None or is_identifier(value) else invalid_id(field)


def invalid_id(field: str) -> ClientError:
    return ClientError("invalid_identifier",
        f"{field} must be 1-{ID_LENGTH_MAX} characters, not blank, without control characters",
        {"field": field},
    )  # fmt: skip


def integer(value: Any, field: str, maximum: int, code: str) -> int | ClientError:
    """An integral JSON number in [1, maximum] (`2.0` counts as 2), else `code`;
    above 2^53-1 -> amount_too_large."""
    if type(value) is int or type(value) is Decimal:
        if value > AMOUNT_MAX:
            return ClientError("amount_too_large", f"{field} must be at most {AMOUNT_MAX}", {"field": field})
        if 1 <= value <= maximum and value == int(value):
            return int(value)
    return ClientError(code, f"{field} must be an integer from 1 to {maximum}", {"field": field})


def instant(text: str | None, field: str) -> int | None | ClientError:
    """RFC 3339 with an offset -> UTC ms; else 400 `invalid_<field>`."""
    if text is None:
        return None
    ms = parse_rfc3339_ms(text)
    if ms is None:
        return ClientError(f"invalid_{field}", f"{field} must be an RFC 3339 date-time with an offset",
            {"field": field},
        )  # fmt: skip
    return ms


def metadata(raw: msgspec.Raw) -> dict[str, Any] | None | ClientError:
    """A JSON object of at most METADATA_SIZE_MAX bytes and METADATA_DEPTH_MAX levels, integers
    msgpack can hold (the deposit rules, CONTRACT §8.1); else 400 invalid_metadata."""
    if raw is RAW_ABSENT:
        return None
    problem = None
    value: Any = None
    if len(raw) > METADATA_SIZE_MAX:
        problem = f"must be at most {METADATA_SIZE_MAX} bytes of JSON"
    else:
        try:
            value = _metadata_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            problem = f"must be a JSON object: {exc}"
        except RecursionError:
            problem = f"must be at most {METADATA_DEPTH_MAX} levels deep"
    stack: list[tuple[Any, int]] = [] if value is None or problem else [(value, 1)]
    while stack and problem is None:
        item, depth = stack.pop()
        if depth > METADATA_DEPTH_MAX:
            problem = f"must be at most {METADATA_DEPTH_MAX} levels deep"
        elif type(item) is dict:
            stack.extend((v, depth + 1) for v in item.values())
        elif type(item) is list:
            stack.extend((v, depth + 1) for v in item)
        elif type(item) is int and not _INT_MIN <= item <= _UINT_MAX:
            problem = f"integers must be within [{_INT_MIN}, {_UINT_MAX}]"
    if problem is not None:
        return ClientError("invalid_metadata", f"metadata {problem}", {"field": "metadata"})
    return value  # type: ignore[no-any-return]


# -- query strings --------------------------------------------------------------------------------


def query_values(raw_query: str, codes: dict[str, str]) -> dict[str, str] | ClientError:
    """name -> decoded value for the allowed names (`codes`: name -> its 400 code)."""
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
            return ClientError("unknown_field", f"unknown query parameter {name!r}", {"field": name})
        if name in values:
            return ClientError(code, f"{name} given more than once", {"field": name})
        try:
            values[name] = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            return ClientError(code, f"{name} is not valid UTF-8", {"field": name})
    return values


_LIMIT_TEXT = re.compile(r"[0-9]{1,3}")


def page_limit(text: str | None) -> int | ClientError:
    if text is None:
        return EVENT_PAGE_SIZE_DEFAULT
    limit = int(text) if _LIMIT_TEXT.fullmatch(text) else 0
    if not 1 <= limit <= EVENT_PAGE_SIZE_MAX:
        return ClientError("invalid_limit", f"limit must be an integer from 1 to {EVENT_PAGE_SIZE_MAX}",
            {"field": "limit"},
        )  # fmt: skip
    return limit


def cursor(text: str | None) -> str | None | ClientError:
    if text is not None and not (0 < len(text) <= CURSOR_LENGTH_MAX and text.isascii() and text.isprintable()):
        return ClientError("invalid_cursor", "cursor is malformed", {"field": "cursor"})
    return text


def comma_list(text: str | None, field: str, code: str, allowed: tuple[str, ...] | None = None) -> frozenset[str] | None | ClientError:
    """A comma-separated list (decoded first, so `%2C` separates too) of identifiers, or of
    `allowed` values; empty items (`a,,b`, a trailing comma) are skipped."""
    if text is None:
        return None
    items = [item for item in text.split(",") if item]
    if len(items) > EVENT_FILTER_COUNT_MAX:
        return ClientError(code, f"{field} lists at most {EVENT_FILTER_COUNT_MAX} values", {"field": field})
    for item in items:
        if (allowed is not None and item not in allowed) or (allowed is None and not is_identifier(item)):
            hint = f"one of {', '.join(allowed)}" if allowed is not None else "identifiers"
            return ClientError(code, f"{field} must be a comma-separated list of {hint}", {"field": field})
    return frozenset(items)
