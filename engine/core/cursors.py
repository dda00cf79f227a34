"""Keyset cursors: the ledger page and the slot and entitlement event pages (by LSN), and the
customer list (by customer id). CONTRACT §3.12: an opaque cursor that never skips or repeats an
entry; §7.9: a malformed cursor, or one made for another customer, filter or project, is 400
`invalid_cursor`; §9.3: the customer list pages with the same rules.

A cursor is the key of the last item shown plus an 8-byte binding naming the listing it was made
for, as unpadded base64url of a msgpack array:

    LSN cursor       [CURSOR_VERSION, lsn, i, binding]   i: the entry's index in the record at
                                                          `lsn` (0 for the event pages)
    customer cursor  [CURSOR_VERSION, customer_id, binding]
    binding          sha256(tag + parts)[:8], each part b"\\x00" (absent) or b"\\x01" + 4-byte
                     big-endian length + UTF-8 (surrogatepass) bytes; the tag is b"tally-cursor-v1"
                     for LSN listings and b"tally-customers-v1" for the customer list

Cursors live in clients between requests, so these bytes are a wire format: a cursor made by an
older server must decode the same (tests/engine/test_cursors.py pins some). Each cursor has one
spelling: another text that decodes to the same array is refused. Pure: no I/O; nothing raises.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from engine.core.limits import CUSTOMER_CURSOR_LENGTH_MAX

CURSOR_VERSION: Final = 1
CURSOR_TEXT_LENGTH_MAX: Final = 64  # an LSN cursor is at most 40 characters; longer text is not one
_encoder: Final = msgspec.msgpack.Encoder()
_lsn_decoder: Final = msgspec.msgpack.Decoder(tuple[int, int, int, bytes])
_customer_decoder: Final = msgspec.msgpack.Decoder(tuple[int, str, bytes])


def _digest(tag: bytes, parts: Sequence[str | None]) -> bytes:
    """8 bytes of sha256 over `tag` and the length-prefixed `parts` (no two part lists share the
    bytes by concatenation)."""
    digest = hashlib.sha256(tag)
    for part in parts:
        if part is None:
            digest.update(b"\x00")
        else:
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(b"\x01" + len(raw).to_bytes(4, "big") + raw)
    return digest.digest()[:8]


def _text(fields: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(fields)).rstrip(b"=").decode("ascii")


def _fields(cursor: str, length_max: int, decoder: msgspec.msgpack.Decoder[Any]) -> Any:
    """The decoded array of a cursor text, or None when it is not one (too long, not ASCII, not
    base64url, not the array `decoder` wants)."""
    if not cursor or len(cursor) > length_max or not cursor.isascii():
        return None
    try:
        return decoder.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        return None


# -- LSN listings: the ledger page, the event pages ------------------------------------------------


def binding(project: str, customer_id: str, parts: Sequence[str | None], later: Sequence[str | int | None] = ()) -> bytes:
    """8 bytes naming one LSN listing: project, customer, then `parts` (None: not given). `later`
    holds parts added to a listing after its first cursors were made: they are hashed only when one
    is given, so a cursor made before them keeps its binding."""
    hashed: list[str | None] = [project, customer_id, *parts]
    if any(part is not None for part in later):
        hashed.extend(None if part is None else str(part) for part in later)
    return _digest(b"tally-cursor-v1", hashed)


def encode(lsn: int, i: int, listing: bytes) -> str:
    """The cursor (ASCII, URL-safe) after the item `(lsn, i)` of the listing bound by `listing`
    (from `binding`)."""
    return _text((CURSOR_VERSION, lsn, i, listing))


def decode(cursor: str, listing: bytes) -> tuple[int, int] | None:
    """`(lsn, i)` of a cursor made by `encode` for the same `listing`; None (the caller answers
    400 invalid_cursor) when it is malformed, of another version or listing, or not spelled as
    `encode` spells it."""
    fields = _fields(cursor, CURSOR_TEXT_LENGTH_MAX, _lsn_decoder)
    if fields is None:
        return None
    version, lsn, i, cursor_listing = fields
    if version != CURSOR_VERSION or cursor_listing != listing or lsn < 1 or i < 0:
        return None
    if encode(lsn, i, listing) != cursor:
        return None  # one spelling per cursor: no alternative encodings accepted
    return (lsn, i)


# -- the customer list (CONTRACT §9.3) --------------------------------------------------------------


def customer_list_binding(project: str, prefix: str | None) -> bytes:
    """8 bytes naming one customer listing (project, prefix; None: no prefix). Its own tag: never
    the binding of an LSN listing."""
    return _digest(b"tally-customers-v1", (project, prefix))


def encode_customer(customer_id: str, listing: bytes) -> str:
    """The cursor after `customer_id` in the customer listing bound by `listing`."""
    return _text((CURSOR_VERSION, customer_id, listing))


def decode_customer(cursor: str, listing: bytes) -> str | None:
    """The customer_id after which the page starts, or None (400 invalid_cursor) for a cursor
    longer than CUSTOMER_CURSOR_LENGTH_MAX, malformed, of another version or listing, or not spelled
    as `encode_customer` spells it."""
    fields = _fields(cursor, CUSTOMER_CURSOR_LENGTH_MAX, _customer_decoder)
    if fields is None:
        return None
    version, customer_id, cursor_listing = fields
    if version != CURSOR_VERSION or cursor_listing != listing:
        return None
    if encode_customer(customer_id, listing) != cursor:
        return None  # one spelling per cursor
    return str(customer_id)
