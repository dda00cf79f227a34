"""Keyset cursors of the LSN-ordered listings: the ledger page and the slot and entitlement event
pages (CONTRACT §3.12: an opaque cursor that never skips or repeats an entry; §7.9: a malformed
cursor, or one made for another customer, filter or project, is 400 `invalid_cursor`).

A cursor is the key of the last item shown, `(lsn, i)` (i: the entry's index within the record
at `lsn`; 0 for the event pages), plus an 8-byte binding naming the listing it was made for:

    cursor  = base64url, unpadded, of msgpack [CURSOR_VERSION, lsn, i, binding]
    binding = sha256(b"tally-cursor-v1" + parts)[:8], each part b"\\x00" (absent) or
              b"\\x01" + 4-byte big-endian length + UTF-8 (surrogatepass) bytes

Cursors live in clients between requests, so these bytes are a wire format: a cursor made by an
older server must decode the same (tests/engine/test_cursors.py pins one). Pure: no I/O.
The customer list has its own cursor (engine/core/listings.py: a customer id, not an LSN).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Final

import msgspec

CURSOR_VERSION: Final = 1
CURSOR_TEXT_LENGTH_MAX: Final = 64  # longer text is never a cursor made here (no decoding tried)
_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(tuple[int, int, int, bytes])


def binding(project: str, customer_id: str, parts: Sequence[str | None], later: Sequence[str | int | None] = ()) -> bytes:
    """8 bytes naming one listing: project, customer, then `parts` (None: not given). `later`
    holds parts added to a listing after its first cursors were made: they are hashed only when one
    is given, so a cursor made before them keeps its binding. Parts are length-prefixed, so no two
    listings share a binding by concatenation. Never raises."""
    digest = hashlib.sha256(b"tally-cursor-v1")
    hashed: list[str | None] = [project, customer_id, *parts]
    if any(part is not None for part in later):
        hashed.extend(None if part is None else str(part) for part in later)
    for part in hashed:
        if part is None:
            digest.update(b"\x00")
        else:
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(b"\x01" + len(raw).to_bytes(4, "big") + raw)
    return digest.digest()[:8]


def encode(lsn: int, i: int, listing: bytes) -> str:
    """The cursor (ASCII, URL-safe, at most CURSOR_TEXT_LENGTH_MAX characters for any LSN below
    2^64) after the item `(lsn, i)` of the listing bound by `listing` (from `binding`)."""
    raw = _encoder.encode((CURSOR_VERSION, lsn, i, listing))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(cursor: str, listing: bytes) -> tuple[int, int] | None:
    """`(lsn, i)` of a cursor made by `encode` for the same `listing`; None (the caller answers
    400 invalid_cursor) when it is malformed, of another version or listing, or not spelled as
    `encode` spells it (one spelling per cursor). Never raises, for any text."""
    if not cursor or len(cursor) > CURSOR_TEXT_LENGTH_MAX or not cursor.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, lsn, i, cursor_listing = _decoder.decode(raw)
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        return None
    if version != CURSOR_VERSION or cursor_listing != listing or lsn < 1 or i < 0:
        return None
    if encode(lsn, i, listing) != cursor:
        return None  # one spelling per cursor: no alternative encodings accepted
    return (lsn, i)
