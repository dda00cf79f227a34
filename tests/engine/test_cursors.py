"""The keyset cursors of the ledger, event and customer pages (engine/core/cursors.py, CONTRACT
§3.12, §7.9, §9.3).

What: cursors are a wire format held by clients between requests, so known cursor strings, made
by the server before cursors.py existed (the private helpers of engine/core/queries.py and
listings.py, commit 359debe), must decode to the same key, and the same key and listing must
encode to the same string; a cursor of another listing, version or spelling decodes to None.
How: fixed strings and bindings; the ledger and event-page bindings through their callers.
How it could fail: a change to the msgpack layout, the base64 spelling, the binding's hash input
(part order, length prefix, the `later` rule) or the checks: old cursors would then be refused
as invalid_cursor after an upgrade, or accepted for another listing.
"""

from __future__ import annotations

import pytest

from engine.core import cursors, pages
from engine.core.limits import CUSTOMER_CURSOR_LENGTH_MAX
from engine.core.queries import LedgerFilters, _ledger_binding

# (binding hex, lsn, i, cursor): made by the code before this module (see the module doc).
KNOWN = [
    ("089dd20f257d0c17", 12345, 2, "lAHNMDkCxAgIndIPJX0MFw"),
    ("ce0755713b261115", 7, 0, "lAEHAMQIzgdVcTsmERU"),
    ("6e305d6711254f2d", 2**40, 0, "lAHPAAABAAAAAAAAxAhuMF1nESVPLQ"),
]


def test_known_bindings() -> None:
    assert _ledger_binding("proj", "cust/ü", LedgerFilters()).hex() == "089dd20f257d0c17"
    filtered = LedgerFilters(operation_type="CONSUME", transaction_id="t1", wallet="promo", from_ms=5)
    assert _ledger_binding("proj", "cust", filtered).hex() == "ce0755713b261115"
    assert pages.binding("proj", "cust", "slot_events", ["promo", None, ["CLAIM"]]).hex() == "6e305d6711254f2d"
    # the §10.3 filters are hashed only when given: an unfiltered binding has only the first parts
    assert cursors.binding("proj", "cust/ü", (None, None)).hex() == "089dd20f257d0c17"
    assert cursors.binding("proj", "cust/ü", (None, None), (None, None)).hex() == "089dd20f257d0c17"


@pytest.mark.parametrize(("listing", "lsn", "i", "cursor"), KNOWN)
def test_known_cursors_decode_and_encode_the_same(listing: str, lsn: int, i: int, cursor: str) -> None:
    bound = bytes.fromhex(listing)
    assert cursors.decode(cursor, bound) == (lsn, i)
    assert cursors.encode(lsn, i, bound) == cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "lAHNMDkCxAgIndIPJX0MFw=",  # padded: another spelling of KNOWN[0]
        "lAHNMDkCxAgIndIPJX0MFx",  # last character changed: another spelling or binding
        "lALNMDkCxAgIndIPJX0MFw",  # version 2, else KNOWN[0]
        "lAHNMDkCxAgIndIPJX0MF",  # cut
        "ü" * 8,
        "A" * (cursors.CURSOR_TEXT_LENGTH_MAX + 1),
        "lAEAAMQICJ3SDyV9DBc",  # lsn 0 (never an LSN), i 0, the right binding
    ],
)
def test_bad_cursors_decode_to_none(cursor: str) -> None:
    assert cursors.decode(cursor, bytes.fromhex("089dd20f257d0c17")) is None


def test_a_cursor_of_another_listing_is_refused() -> None:
    _, lsn, i, cursor = KNOWN[0]
    other = _ledger_binding("proj", "cust/ü", LedgerFilters(wallet="promo"))
    assert cursors.decode(cursor, other) is None
    assert cursors.decode(cursors.encode(lsn, i, other), other) == (lsn, i)


# (project, prefix, binding hex, customer_id, cursor) of the customer list, made before the move.
KNOWN_CUSTOMER = [
    ("proj", None, "4cf66fb66fa501df", "cust/ü", "kwGnY3VzdC_DvMQITPZvtm-lAd8"),
    ("proj", "ab", "0c6989ac7dedcbd1", "ab\u3000z", "kwGmYWLjgIB6xAgMaYmsfe3L0Q"),
]


@pytest.mark.parametrize(("project", "prefix", "listing", "customer_id", "cursor"), KNOWN_CUSTOMER)
def test_known_customer_cursors(project: str, prefix: str | None, listing: str, customer_id: str, cursor: str) -> None:
    bound = cursors.customer_list_binding(project, prefix)
    assert bound.hex() == listing
    assert cursors.decode_customer(cursor, bound) == customer_id
    assert cursors.encode_customer(customer_id, bound) == cursor


def test_customer_cursors_are_refused_elsewhere() -> None:
    _, _, listing, customer_id, cursor = KNOWN_CUSTOMER[0]
    bound = bytes.fromhex(listing)
    assert cursors.decode_customer(cursor, cursors.customer_list_binding("proj", "c")) is None  # another prefix
    assert cursors.decode_customer(cursor + "=", bound) is None  # another spelling
    assert cursors.decode(cursor, bound) is None  # not an LSN cursor
    assert cursors.decode_customer(KNOWN[0][3], bytes.fromhex(KNOWN[0][0])) is None  # an LSN cursor
    long_id = "x" * 255
    assert cursors.decode_customer(cursors.encode_customer(long_id, bound), bound) == long_id
    assert cursors.decode_customer("A" * (CUSTOMER_CURSOR_LENGTH_MAX + 1), bound) is None
