"""net/schemas.py: request bytes -> Command or the exact ClientError (CONTRACT §3.1-§3.4, §7).

Method: call the pure parse_* functions with literal bodies (the helpers below return the raised
ClientError); assert the whole Command on success and (status, code, details) on refusal. Fails if
a rule is loosened (a fraction accepted, a typo'd field ignored, a null actual_amount taken as
"all"), if a code drifts from the contract, or if any input raises anything but ClientError.
"""

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.codes import status_of
from engine.core.commands import Consume, Deduct, Deposit, Freeze, Unfreeze
from engine.core.limits import AMOUNT_MAX, BUSINESS_TYPES
from engine.core.timefmt import format_ms
from net import schemas
from net.errors import ClientError

AT = 0  # parsers leave the stamp to the runtime (engine/runtime/runtime.py _apply_write)
P = "proj"


def j(**fields: Any) -> bytes:
    return msgspec.json.encode(fields)


def err(result: Any, code: str, details: dict[str, Any] | None = None, status: int = 400) -> None:
    assert type(result) is ClientError, result
    assert (status_of(result.code), result.code) == (status, code), result
    if details is not None:
        assert result.details == details, result


def caught(parse: Any, *args: Any) -> Any:
    """The parser's result, or the ClientError it raised (any other exception propagates)."""
    try:
        return parse(*args)
    except ClientError as exc:
        return exc


def deposit(body: bytes, header: str | None = None) -> Any:
    return caught(schemas.parse_deposit, body, P, header)


def freeze(body: bytes) -> Any:
    return caught(schemas.parse_freeze, body, P)


def deduct(body: bytes) -> Any:
    return caught(schemas.parse_deduct, body, P)


def consume(body: bytes) -> Any:
    return caught(schemas.parse_consume, body, P)


def unfreeze(body: bytes) -> Any:
    return caught(schemas.parse_unfreeze, body, P)


def path_id(raw: str) -> Any:
    return caught(schemas.decode_path_id, raw)


def ledger_query(raw: str) -> Any:
    return caught(schemas.parse_ledger_query, raw)


# -- the body as a whole ------------------------------------------------------------------------

NOT_JSON = [b"", b"   ", b"{", b"[1]", b"1", b'"x"', b"null", b"true", b'{"a":1} x', b"\xef\xbb\xbf{}",
            b'{"customer_id":"\xff"}', b'{"amount":NaN}', b'{"amount":Infinity}', b"{'a':1}",
            b'{"transaction_id":"\\ud800"}']


@pytest.mark.parametrize("parse", [deposit, freeze, deduct, consume, unfreeze])
@pytest.mark.parametrize("body", NOT_JSON)
def test_not_a_json_object_is_invalid_json(parse: Any, body: bytes) -> None:
    err(parse(body), "invalid_json")


@pytest.mark.parametrize(
    "parse, body, field",
    [
        (consume, b'{"transaction_id":"t","actual_amout":5}', "actual_amout"),
        (deposit, b'{"customer_id":"c","amount":1,"amount_usd":1}', "amount_usd"),
        (freeze, b'{"customer_id":"c","amount":1,"transaction_id":"t","ttl":5}', "ttl"),
        (deduct, b'{"customerId":"c"}', "customerId"),
        (unfreeze, b'{"transaction_id":"t","x`y":1}', "x`y"),
    ],
)
def test_unknown_field_names_the_field(parse: Any, body: bytes, field: str) -> None:
    err(parse(body), "unknown_field", {"field": field})


def test_deep_nesting_is_400_not_an_exception() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    err(freeze(b'{"amount":' + deep + b"}"), "invalid_json")
    err(deposit(b'{"customer_id":"c","amount":1,"metadata":{"a":' + deep + b"}}"), "invalid_json")
    medium = b"[" * 100 + b"]" * 100  # within the decoder's limit, over ours
    err(deposit(b'{"customer_id":"c","amount":1,"metadata":{"a":' + medium + b"}}"), "invalid_metadata",
        {"field": "metadata"})


# -- amounts ------------------------------------------------------------------------------------

GOOD_AMOUNTS = [(b"600", 600), (b"600.0", 600), (b"6e2", 600), (b"6E+2", 600), (b"60000e-2", 600),
                (b"1", 1), (b"9007199254740991", AMOUNT_MAX), (b"9007199254740991.000", AMOUNT_MAX)]
BAD_AMOUNTS = [b"0", b"-0", b"0.0", b"-1", b"-600", b"0.5", b"99.99999999999999999", b"1e-400", b'"600"',
               b"true", b"false", b"null", b"[1]", b'{"v":1}', b'"NaN"', b'"Infinity"', b"600.0000000000000001"]
TOO_LARGE = [b"9007199254740992", b"9007199254740993.0", b"1e308", b"1e400", b"1e999999999",
             b"123456789012345678901234567890"]


@pytest.mark.parametrize("literal, value", GOOD_AMOUNTS)
def test_amount_literals_judged_on_text(literal: bytes, value: int) -> None:
    got = freeze(b'{"customer_id":"c","transaction_id":"t","amount":' + literal + b"}")
    assert got == Freeze(at_ms=AT, project=P, customer_id="c", amount=value, transaction_id="t")
    assert type(got.amount) is int
    got = consume(b'{"transaction_id":"t","actual_amount":' + literal + b"}")
    assert got.actual_amount == value and type(got.actual_amount) is int


@pytest.mark.parametrize("literal", BAD_AMOUNTS)
@pytest.mark.parametrize("parse", [deposit, freeze, deduct])
def test_bad_amount(parse: Any, literal: bytes) -> None:
    body = b'{"customer_id":"c","transaction_id":"t","amount":' + literal + b"}"
    if parse is deposit:
        body = b'{"customer_id":"c","amount":' + literal + b"}"
    err(parse(body), "amount_must_be_positive", {"field": "amount"})


@pytest.mark.parametrize("literal", TOO_LARGE)
def test_amount_over_2_53_is_too_large(literal: bytes) -> None:
    err(deduct(b'{"customer_id":"c","transaction_id":"t","amount":' + literal + b"}"), "amount_too_large",
        {"field": "amount"})
    err(consume(b'{"transaction_id":"t","actual_amount":' + literal + b"}"), "amount_too_large",
        {"field": "actual_amount"})


def test_integer_literal_too_long_for_python_int() -> None:
    huge = b"9" * 5000  # past Python's int-from-str digit limit: msgspec refuses to build it
    err(consume(b'{"transaction_id":"t","actual_amount":' + huge + b"}"), "amount_too_large", {"field": "actual_amount"})
    err(deduct(b'{"customer_id":"c","transaction_id":"t","amount":-' + huge + b"}"), "amount_too_large")
    err(freeze(b'{"customer_id":"c","transaction_id":"t","amount":1,"consume_after_seconds":' + huge + b"}"),
        "invalid_auto_settlement_ttl", {"field": "consume_after_seconds"})
    err(deposit(b'{"customer_id":"c","amount":1,"metadata":{"n":' + huge + b"}}"), "invalid_metadata")


def test_missing_amount() -> None:
    err(deposit(j(customer_id="c")), "amount_must_be_positive")
    err(freeze(j(customer_id="c", transaction_id="t")), "amount_must_be_positive")


@pytest.mark.parametrize("literal", [b"0", b"-0", b"0.0", b"-0.0", b"0e5"])
def test_actual_amount_zero_is_allowed(literal: bytes) -> None:
    got = consume(b'{"transaction_id":"t","actual_amount":' + literal + b"}")
    assert got == Consume(at_ms=AT, project=P, customer_id=None, transaction_id="t", actual_amount=0)


@pytest.mark.parametrize("literal", [b"-1", b"0.5", b"-0.5", b'"5"', b"true", b"[5]", b"1e-400"])
def test_bad_actual_amount(literal: bytes) -> None:
    err(consume(b'{"transaction_id":"t","actual_amount":' + literal + b"}"), "actual_amount_must_be_non_negative",
        {"field": "actual_amount"})


def test_only_an_absent_actual_amount_means_all() -> None:
    """CONTRACT §3.1: an explicit null is an error like any other null, never "consume all"."""
    expected = Consume(at_ms=AT, project=P, customer_id=None, transaction_id="t", actual_amount=None)
    assert consume(b'{"transaction_id":"t"}') == expected
    err(consume(b'{"transaction_id":"t","actual_amount":null}'), "actual_amount_must_be_non_negative",
        {"field": "actual_amount"})
    err(consume(b'{"actual_amount":null,"transaction_id":"t"}'), "actual_amount_must_be_non_negative",
        {"field": "actual_amount"})


@pytest.mark.parametrize(
    "literal",
    [b"9007199254740992", b"9007199254740992.0", b"18446744073709551616", b"1e308", b"1E+16", b"9" * 4301,
     b"9" * 5000 + b".0"],
)
@pytest.mark.parametrize("parse, field", [(deposit, "amount"), (freeze, "amount"), (deduct, "amount"),
                                          (consume, "actual_amount")])
def test_amount_too_large_always_names_the_field(parse: Any, field: str, literal: bytes) -> None:
    """CONTRACT §3.1: an integer above 2^53-1, however it is spelled, is amount_too_large with
    details.field, on every operation and whatever else the body holds."""
    fields = b'"customer_id":"c","transaction_id":"t"' if parse is not consume else b'"transaction_id":"t"'
    for body in (b"{" + fields + b',"' + field.encode() + b'":' + literal + b"}",
                 b'{"' + field.encode() + b'":' + literal + b"," + fields + b"}"):
        if parse is deposit:
            body = body.replace(b',"transaction_id":"t"', b"").replace(b'"transaction_id":"t",', b"")
        err(parse(body), "amount_too_large", {"field": field})


# -- identifiers --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", " ", " \u3000\u00a0"])
def test_customer_id_required(value: str | None) -> None:
    err(deposit(j(customer_id=value, amount=1)), "customer_id_required", {"field": "customer_id"})
    err(deduct(j(customer_id=value, amount=1, transaction_id="t")), "customer_id_required")
    err(freeze(j(amount=1, transaction_id="t")), "customer_id_required")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_transaction_id_required(value: str | None) -> None:
    for parse, body in [
        (freeze, j(customer_id="c", amount=1, transaction_id=value)),
        (deduct, j(customer_id="c", amount=1, transaction_id=value)),
        (consume, j(transaction_id=value)),
        (unfreeze, j(transaction_id=value)),
    ]:
        err(parse(body), "transaction_id_required", {"field": "transaction_id"})


BAD_IDS = ["x" * 256, "a\x00b", "a\nb", "\x1f", "\t", " \n ", "a\x7fb", "é" * 256, "tab\there", 17, True, ["a"], {"a": 1}]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_invalid_identifier_in_every_id_field(bad: Any) -> None:
    cases = [
        (deposit, dict(customer_id=bad, amount=1), "customer_id"),
        (deposit, dict(customer_id="c", amount=1, wallet=bad), "wallet"),
        (deposit, dict(customer_id="c", amount=1, credit_type=bad), "credit_type"),
        (deposit, dict(customer_id="c", amount=1, source=bad), "source"),
        (deposit, dict(customer_id="c", amount=1, idempotency_key=bad), "idempotency_key"),
        (freeze, dict(customer_id=bad, amount=1, transaction_id="t"), "customer_id"),
        (freeze, dict(customer_id="c", amount=1, transaction_id=bad), "transaction_id"),
        (freeze, dict(customer_id="c", amount=1, transaction_id="t", wallet=bad), "wallet"),
        (deduct, dict(customer_id="c", amount=1, transaction_id=bad), "transaction_id"),
        (deduct, dict(customer_id="c", amount=1, transaction_id="t", wallet=bad), "wallet"),
        (consume, dict(transaction_id=bad), "transaction_id"),
        (unfreeze, dict(transaction_id=bad), "transaction_id"),
    ]
    for parse, fields, field in cases:
        err(parse(j(**fields)), "invalid_identifier", {"field": field})


def test_empty_optional_ids_are_invalid_not_defaulted() -> None:
    err(deposit(j(customer_id="c", amount=1, wallet="")), "invalid_identifier", {"field": "wallet"})
    err(deposit(j(customer_id="c", amount=1, source=" ")), "invalid_identifier", {"field": "source"})
    err(deposit(j(customer_id="c", amount=1, idempotency_key="")), "invalid_identifier",
        {"field": "idempotency_key"})


@pytest.mark.parametrize("good", ["x" * 255, "é" * 255, " padded ", "user+1@example.com", "a/b%2Fc", "\u0080\u009f",
                                  "😀", "e\u0301", "é"])
def test_valid_identifiers_kept_verbatim(good: str) -> None:
    got = deduct(j(customer_id=good, amount=1, transaction_id=good))
    assert got == Deduct(at_ms=AT, project=P, customer_id=good, amount=1, transaction_id=good)


# -- wallet selection ---------------------------------------------------------------------------


def test_credit_types_and_wallet() -> None:
    base = dict(customer_id="c", amount=5, transaction_id="t")
    assert freeze(j(**base, credit_types=["a", "b"])).credit_types == ("a", "b")
    assert deduct(j(**base, wallet="w")).wallet == "w"
    for parse in (freeze, deduct):
        err(parse(j(**base, credit_types=["a"], wallet="a")), "invalid_wallet_selection",
            {"fields": ["credit_types", "wallet"]})
        err(parse(j(**base, credit_types=[])), "invalid_credit_types", {"field": "credit_types"})
        err(parse(j(**base, credit_types=["ok", ""])), "invalid_credit_types", {"field": "credit_types", "index": 1})
        err(parse(j(**base, credit_types=["a\x00"])), "invalid_credit_types", {"field": "credit_types", "index": 0})
        err(parse(j(**base, credit_types=[1])), "invalid_credit_types", {"field": "credit_types"})
        err(parse(j(**base, credit_types="default")), "invalid_credit_types", {"field": "credit_types"})
        err(parse(j(**base, credit_types=["w"] * 101)), "invalid_credit_types")
    # null means absent
    assert freeze(j(**base, credit_types=None, wallet="w")).wallet == "w"


def test_deposit_wallet_alias() -> None:
    assert deposit(j(customer_id="c", amount=1)).wallet == "default"
    assert deposit(j(customer_id="c", amount=1, credit_type="promo")).wallet == "promo"
    assert deposit(j(customer_id="c", amount=1, wallet="w", credit_type="w")).wallet == "w"
    err(deposit(j(customer_id="c", amount=1, wallet="a", credit_type="b")), "invalid_wallet_selection",
        {"fields": ["wallet", "credit_type"]})


# -- business_type, description, TTLs -----------------------------------------------------------


@pytest.mark.parametrize("bt", sorted(BUSINESS_TYPES))
def test_business_types_accepted(bt: str) -> None:
    assert deduct(j(customer_id="c", amount=1, transaction_id="t", business_type=bt)).business_type == bt


@pytest.mark.parametrize("bt", ["task", "", "DEPOSIT", 3, ["TASK"]])
def test_bad_business_type(bt: Any) -> None:
    err(freeze(j(customer_id="c", amount=1, transaction_id="t", business_type=bt)), "invalid_business_type",
        {"field": "business_type"})


def test_description_bound() -> None:
    assert deduct(j(customer_id="c", amount=1, transaction_id="t", description="é" * 2000)).description == "é" * 2000
    err(deduct(j(customer_id="c", amount=1, transaction_id="t", description="x" * 2001)), "invalid_description",
        {"field": "description"})
    err(freeze(j(customer_id="c", amount=1, transaction_id="t", description=5)), "invalid_description")


def test_ttls() -> None:
    base = dict(customer_id="c", amount=5, transaction_id="t")
    assert freeze(j(**base, unfreeze_after_seconds=2_592_000)).unfreeze_after_s == 2_592_000
    assert freeze(j(**base, consume_after_seconds=604_800)).consume_after_s == 604_800
    assert freeze(b'{"customer_id":"c","amount":5,"transaction_id":"t","consume_after_seconds":60.0}').consume_after_s == 60
    got = freeze(j(**base, unfreeze_after_seconds=None, consume_after_seconds=1))
    assert (got.unfreeze_after_s, got.consume_after_s) == (None, 1)
    err(freeze(j(**base, unfreeze_after_seconds=10, consume_after_seconds=10)), "invalid_auto_settlement")
    for field, bad in [("unfreeze_after_seconds", 0), ("unfreeze_after_seconds", 2_592_001),
                       ("consume_after_seconds", 604_801), ("consume_after_seconds", -1),
                       ("consume_after_seconds", 1.5), ("consume_after_seconds", "60"),
                       ("unfreeze_after_seconds", True), ("unfreeze_after_seconds", 10**30)]:
        err(freeze(j(**base, **{field: bad})), "invalid_auto_settlement_ttl", {"field": field})


# -- deposit: times, idempotency key, descriptive fields ----------------------------------------


@pytest.mark.parametrize(
    "text, iso",
    [
        ("2026-04-07T12:00:00Z", "2026-04-07T12:00:00.000Z"),
        ("2026-04-07T12:00:00.123456789Z", "2026-04-07T12:00:00.123Z"),
        ("2026-04-07T12:00:00.1z", "2026-04-07T12:00:00.100Z"),
        ("2026-04-07t14:30:00+02:30", "2026-04-07T12:00:00.000Z"),
        ("2026-04-07T00:00:00-05:00", "2026-04-07T05:00:00.000Z"),
        ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
        ("2028-02-29T00:00:00Z", "2028-02-29T00:00:00.000Z"),
    ],
)
def test_times_to_utc_ms(text: str, iso: str) -> None:
    got = deposit(j(customer_id="c", amount=1, starts_at=text))
    assert format_ms(got.starts_at_ms) == iso
    got = deposit(j(customer_id="c", amount=1, expires_at=text))
    assert format_ms(got.expires_at_ms) == iso


BAD_TIMES = ["2026-04-07T12:00:00", "2026-04-07", "2026-04-07 12:00:00Z", "2026-02-30T00:00:00Z",
             "2026-04-07T24:00:00Z", "2026-04-07T12:60:00Z", "2026-06-30T23:59:60Z", "2026-04-07T12:00:00+24:00",
             "2026-04-07T12:00:00+0200", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-00:01",
             "0001-01-01T00:00:00+00:01", "２０２６-04-07T12:00:00Z", "2026-04-07T12:00:00.Z", "", "now",
             "2026-04-07T12:00:00Z ", 1775563200000]


@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_bad_times(bad: Any) -> None:
    err(deposit(j(customer_id="c", amount=1, starts_at=bad)), "invalid_starts_at", {"field": "starts_at"})
    err(deposit(j(customer_id="c", amount=1, expires_at=bad)), "invalid_expires_at", {"field": "expires_at"})


def test_time_range() -> None:
    ok = deposit(j(customer_id="c", amount=1, starts_at="2026-01-01T00:00:00Z", expires_at="2026-01-01T00:00:00.001Z"))
    assert ok.expires_at_ms - ok.starts_at_ms == 1
    for expires in ["2026-01-01T00:00:00Z", "2025-12-31T23:59:59Z", "2026-01-01T01:00:00+01:00"]:
        err(deposit(j(customer_id="c", amount=1, starts_at="2026-01-01T00:00:00Z", expires_at=expires)),
            "invalid_datetime_range")


def test_idempotency_key_header_and_body() -> None:
    assert deposit(j(customer_id="c", amount=1), header="k1").idempotency_key == "k1"
    assert deposit(j(customer_id="c", amount=1, idempotency_key="k1"), header="k1").idempotency_key == "k1"
    assert deposit(j(customer_id="c", amount=1, idempotency_key="k1")).idempotency_key == "k1"
    assert deposit(j(customer_id="c", amount=1)).idempotency_key is None
    err(deposit(j(customer_id="c", amount=1, idempotency_key="k1"), header="k2"), "idempotency_key_mismatch")
    err(deposit(j(customer_id="c", amount=1), header=""), "invalid_identifier", {"field": "Idempotency-Key"})
    err(deposit(j(customer_id="c", amount=1), header="\udcff"), "invalid_identifier", {"field": "Idempotency-Key"})


def test_full_deposit_command() -> None:
    body = j(customer_id="user+1@example.com", amount=1000, wallet="promo", source="stripe",
             starts_at="2026-04-07T12:00:00Z", expires_at="2026-05-07T12:00:00Z", idempotency_key="dep_1",
             name="Alice", email=None, metadata={"plan": "pro", "n": [1, 2.5, None, True]}, description="welcome")
    assert deposit(body) == Deposit(
        at_ms=AT, project=P, customer_id="user+1@example.com", amount=1000, wallet="promo", source="stripe",
        starts_at_ms=1_775_563_200_000, expires_at_ms=1_778_155_200_000, idempotency_key="dep_1", name="Alice",
        email=None, metadata={"plan": "pro", "n": [1, 2.5, None, True]}, description="welcome",
    )


def test_descriptive_field_bounds() -> None:
    err(deposit(j(customer_id="c", amount=1, name="n" * 256)), "invalid_name", {"field": "name"})
    err(deposit(j(customer_id="c", amount=1, email="e" * 321)), "invalid_email", {"field": "email"})
    err(deposit(j(customer_id="c", amount=1, name=5)), "invalid_name", {"field": "name"})
    err(deposit(j(customer_id="c", amount=1, email=["a"])), "invalid_email", {"field": "email"})


@pytest.mark.parametrize(
    "metadata",
    [b"[]", b"1", b'"x"', b"true", b'{"a":1e400}', b'{"a":' + str(2**64).encode() + b"}",
     b'{"a":' + str(-(2**63) - 1).encode() + b"}", b'{"a":"' + b"x" * 17_000 + b'"}'],
)
def test_bad_metadata(metadata: bytes) -> None:
    err(deposit(b'{"customer_id":"c","amount":1,"metadata":' + metadata + b"}"), "invalid_metadata",
        {"field": "metadata"})


def test_metadata_null_is_absent_and_edges_ok() -> None:
    assert deposit(b'{"customer_id":"c","amount":1,"metadata":null}').metadata is None
    edge = {"max": 2**64 - 1, "min": -(2**63), "f": 1.5e300, "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    assert deposit(j(customer_id="c", amount=1, metadata=edge)).metadata == edge


# -- GET: path ids and ledger queries -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw, decoded",
    [("abc", "abc"), ("a%2Fb", "a/b"), ("100%25", "100%"), ("user%2B1%40x.com", "user+1@x.com"), ("a+b", "a+b"),
     ("%C3%A9", "é"), ("é", "é"), ("%2541", "%41"), ("a%20b", "a b"), ("%zz", "%zz")],
)
def test_decode_path_id_once(raw: str, decoded: str) -> None:
    assert path_id(raw) == decoded


@pytest.mark.parametrize("raw", ["%00", "%09%20", "a%0Ab", "%7F", "%FF", "%C3", "%ED%A0%80", "x" * 256, "%41" * 256])
def test_decode_path_id_invalid(raw: str) -> None:
    err(path_id(raw), "invalid_identifier", {"field": "customer_id"})


@pytest.mark.parametrize("raw", ["", "%20", "%20%E3%80%80"])
def test_decode_path_id_blank(raw: str) -> None:
    err(path_id(raw), "customer_id_required")


def test_ledger_query() -> None:
    q = ledger_query
    assert q("") == schemas.LedgerQuery(limit=20)
    assert q("limit=100&cursor=abc&operation_type=GRANT&transaction_id=t+1%2B") == schemas.LedgerQuery(
        limit=100, cursor="abc", operation_type="GRANT", transaction_id="t 1+"
    )
    for bad in ["limit=0", "limit=101", "limit=abc", "limit=", "limit=5.0", "limit=-1", "limit=%EF%BC%95",
                "limit=1&limit=2", "limit=+5", "limit=1000"]:
        err(q(bad), "invalid_limit", {"field": "limit"})
    for bad in ["operation_type=grant", "operation_type=", "operation_type=DEPOSIT"]:
        err(q(bad), "invalid_operation_type", {"field": "operation_type"})
    for bad in ["cursor=" + "c" * 513, "cursor=", "cursor=%00", "cursor=%FF"]:
        err(q(bad), "invalid_cursor", {"field": "cursor"})
    for bad in ["transaction_id=", "transaction_id=%00", "transaction_id=" + "t" * 256]:
        err(q(bad), "invalid_identifier", {"field": "transaction_id"})
    err(q("limt=5"), "unknown_field", {"field": "limt"})
    assert q("cursor=" + "c" * 512).cursor == "c" * 512


# -- no input raises ----------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(
    ["customer_id", "amount", "transaction_id", "wallet", "credit_type", "credit_types", "source", "starts_at",
     "expires_at", "idempotency_key", "name", "email", "metadata", "description", "business_type",
     "unfreeze_after_seconds", "consume_after_seconds", "actual_amount", "bogus"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_fields, _json_values, max_size=6), st.sampled_from([deposit, freeze, deduct, consume, unfreeze]))
def test_any_json_object_parses_or_is_a_client_error(fields: dict[str, Any], parse: Any) -> None:
    result = parse(msgspec.json.encode(fields))
    assert isinstance(result, ClientError | Deposit | Freeze | Deduct | Consume | Unfreeze)
    if isinstance(result, ClientError):
        assert status_of(result.code) == 400 and result.code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([deposit, freeze, deduct, consume, unfreeze]))
def test_any_bytes_parse_or_are_a_client_error(body: bytes, parse: Any) -> None:
    assert isinstance(parse(body), ClientError | Deposit | Freeze | Deduct | Consume | Unfreeze)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_query_or_path_is_handled(text: str) -> None:
    ledger_query(text)
    path_id(text)


def test_id_pattern_is_is_identifier() -> None:
    """The body ids are checked by msgspec with ID_PATTERN (also the document's pattern); paths,
    queries and headers by is_identifier. Both must accept the same characters, in every position."""
    import re
    import sys

    pattern = re.compile(schemas.ID_PATTERN)
    for code_point in range(sys.maxunicode + 1):
        if 0xD800 <= code_point <= 0xDFFF:
            continue  # JSON bodies cannot hold lone surrogates (invalid_json)
        c = chr(code_point)
        for text in (c, "a" + c, c + "a", "a" + c + "a"):
            assert (pattern.search(text) is not None) == schemas.is_identifier(text), (hex(code_point), text)
    for text in ("abc\n", "abc\r\n", "\nabc", " ", "x" * 255):
        assert (pattern.search(text) is not None) == schemas.is_identifier(text), repr(text)


def test_request_structs_carry_the_contract_bounds() -> None:
    """The constraints msgspec checks (and the document shows) are the named limits."""
    from engine.core.limits import CREDIT_TYPES_COUNT_MAX, ID_LENGTH_MAX

    _, components = msgspec.json.schema_components(schemas.REQUEST_STRUCTS)
    deduct_schema = components["DeductRequest"]
    assert deduct_schema["required"] == ["customer_id", "amount", "transaction_id"]
    assert deduct_schema["additionalProperties"] is False
    amount = deduct_schema["properties"]["amount"]
    assert (amount["type"], amount["minimum"], amount["maximum"]) == ("integer", 1, AMOUNT_MAX)
    customer_id = deduct_schema["properties"]["customer_id"]
    assert (customer_id["minLength"], customer_id["maxLength"]) == (1, ID_LENGTH_MAX)
    assert customer_id["pattern"] == schemas.ID_PATTERN
    business_type = deduct_schema["properties"]["business_type"]["anyOf"][0]
    assert set(business_type["enum"]) == BUSINESS_TYPES
    credit_types = deduct_schema["properties"]["credit_types"]["anyOf"][0]
    assert credit_types["maxItems"] == CREDIT_TYPES_COUNT_MAX
    consume_schema = components["ConsumeRequest"]
    assert consume_schema["required"] == ["transaction_id"]
    assert consume_schema["properties"]["actual_amount"]["minimum"] == 0
    assert consume_schema["properties"]["actual_amount"]["type"] == "integer"  # no anyOf with null
