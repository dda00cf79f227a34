"""net/schemas.py IdCheckedDecoder: identifiers checked by hand give what msgspec's pattern gives.

What: for every billing request Struct, decoding through the twin without ID_PATTERN plus the
hand check returns the same values, or raises the same ClientError (code, message, details), as
the request Struct's own decoder through decode_request; `_plain_id` accepts nothing ID_PATTERN
refuses, and refuses nothing it accepts but lone surrogates. How: every code point in four
positions, explicit precedence cases (a bad id before or after another bad field, an unknown
field), and hypothesis bodies built from identifier-like text. How it could fail: a control or
blank id accepted on the fast path, or an error code/message that depends on which path ran.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from net import schemas
from net.errors import ClientError

_REQUESTS = (
    schemas.DepositRequest, schemas.FreezeRequest, schemas.DeductRequest, schemas.ConsumeRequest,
    schemas.UnfreezeRequest, schemas.RefundRequest, schemas.VoidRequest,
)  # fmt: skip
_DECODERS = {request: schemas.IdCheckedDecoder(request) for request in _REQUESTS}


def _outcome(decode: Any, body: bytes) -> Any:
    """The decoded fields as a dict, or the ClientError's (code, message, details)."""
    try:
        return msgspec.structs.asdict(decode(body))
    except ClientError as exc:
        return (exc.code, exc.message, exc.details)


def _both(request: type[msgspec.Struct], body: bytes) -> tuple[Any, Any]:
    decoder = _DECODERS[request]
    return _outcome(decoder.decode, body), _outcome(lambda b: schemas.decode_request(decoder.strict, b), body)


def test_plain_id_is_id_pattern_at_every_code_point() -> None:
    pattern = re.compile(schemas.ID_PATTERN)
    for code_point in range(sys.maxunicode + 1):
        c = chr(code_point)
        surrogate = 0xD800 <= code_point <= 0xDFFF
        for text in (c, "a" + c, c + "a", c + c):
            matches = pattern.search(text) is not None
            assert schemas._plain_id(text) == (matches and not surrogate), (hex(code_point), text)


def test_the_twins_have_no_pattern_and_the_same_fields() -> None:
    deduct = _DECODERS[schemas.DeductRequest]
    assert deduct._ids == ("customer_id", "transaction_id", "wallet")
    assert deduct._id_lists == ("credit_types",)
    for request, decoder in _DECODERS.items():
        twin = decoder._twin.type
        assert [f.name for f in msgspec.structs.fields(twin)] == [f.name for f in msgspec.structs.fields(request)]
        assert [f.default for f in msgspec.structs.fields(twin)] == [f.default for f in msgspec.structs.fields(request)]
        assert schemas.ID_PATTERN not in repr(msgspec.json.schema(twin)), request


@pytest.mark.parametrize(
    "body",
    [
        b'{"customer_id":"c-1","amount":5,"transaction_id":"t-1","wallet":"w"}',
        b'{"customer_id":"\\u00e9l\\u00e8ve","amount":5,"transaction_id":"t\\u3000x"}',
        b'{"customer_id":"\\u0001","amount":"x","transaction_id":"t"}',  # bad id before a bad amount
        b'{"amount":"x","customer_id":"\\u0001","transaction_id":"t"}',  # ... after it
        b'{"customer_id":"\\u0001","bogus":1,"amount":1,"transaction_id":"t"}',  # before an unknown field
        b'{"bogus":1,"customer_id":"\\u0001","amount":1,"transaction_id":"t"}',
        b'{"customer_id":"   ","amount":1,"transaction_id":"t"}',  # blank: customer_id_required
        b'{"customer_id":"\\u3000","amount":1,"transaction_id":"t"}',
        b'{"customer_id":"c","amount":1,"transaction_id":"t\\n"}',
        b'{"customer_id":"c","amount":1,"transaction_id":"t","credit_types":["a"," "]}',
        b'{"customer_id":"c","amount":1,"transaction_id":"t","wallet":"w\\u007f"}',
        b'{"customer_id":"c","amount":6e2,"transaction_id":"\\u0085"}',  # lenient amount + bad id
        b'{"customer_id":"c","amount":1,"transaction_id":"t","wallet":"w","credit_types":["a"]}',
        b'{"customer_id":"c","amount":1,"transaction_id":"t"',  # malformed
    ],
)
def test_deduct_bodies_decode_the_same_both_ways(body: bytes) -> None:
    fast, strict = _both(schemas.DeductRequest, body)
    assert fast == strict


def test_a_fast_answer_is_the_twin_and_a_refused_one_the_strict_error() -> None:
    decoder = _DECODERS[schemas.DeductRequest]
    good = decoder.decode(b'{"customer_id":"c","amount":1,"transaction_id":"t"}')
    assert type(good) is decoder._twin.type and good.customer_id == "c"
    with pytest.raises(ClientError) as refused:
        decoder.decode(b'{"customer_id":"c","amount":1,"transaction_id":"\\t"}')
    assert (refused.value.code, refused.value.details) == ("invalid_identifier", {"field": "transaction_id"})


_id_text = st.text(st.sampled_from(["a", "Z", " ", "\t", "\x00", "\x7f", "\x85", "\xa0", "\u3000", "é", "\u2028", "/"]),
                   max_size=4)  # fmt: skip
_values = st.one_of(_id_text, st.integers(-2, 3), st.none(), st.lists(_id_text, max_size=2), st.just(1.5))
_names = st.sampled_from(["customer_id", "amount", "transaction_id", "wallet", "credit_types", "credit_type", "source",
                          "idempotency_key", "refund_id", "void_id", "account_id", "actual_amount", "bogus"])  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_names, _values, max_size=6), st.sampled_from(_REQUESTS))
def test_any_body_decodes_the_same_both_ways(fields: dict[str, Any], request: type[msgspec.Struct]) -> None:
    fast, strict = _both(request, msgspec.json.encode(fields))
    assert fast == strict
