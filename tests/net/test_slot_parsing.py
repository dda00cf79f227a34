"""The slot and entitlement parsers (net/slots_api.py, net/entitlements_api.py, CONTRACT §8),
which reuse net/schemas.py's decoder with their own code tables.

What: bodies and query strings straight into the pure parsers; the command built (at_ms 0: the
runtime stamps it) or the exact ClientError code and details.field.
How it could fail: a field mapped to the wrong code (e.g. a blank wallet answering
invalid_identifier on a slot route, or wallet_required leaking into deposits), an amount literal
judged on a rounded double, an empty comma-list item accepted although the document refuses it.
"""

from __future__ import annotations

import pytest

from engine.core.commands import EntitlementSet, SlotClaim, SlotGrant, SlotRevoke
from net import entitlements_api, slots_api
from net.errors import ClientError
from net.schemas import parse_deposit

P = "proj"


def _code(call, *args):
    with pytest.raises(ClientError) as info:
        call(*args)
    return info.value.code, (info.value.details or {}).get("field")


def test_claim_defaults_and_lenient_numbers():
    claim = slots_api.parse_claim(b'{"customer_id":"c","wallet":"w","resource_id":"r","ttl_seconds":2.0}', P)
    assert claim == SlotClaim(at_ms=0, project=P, customer_id="c", wallet="w", source="default", resource_id="r",
                              amount=1, description=None, ttl_s=2)
    grant = slots_api.parse_capacity(b'{"customer_id":"c","wallet":"w","amount":6e2,"source":null}', P, False)
    assert grant == SlotGrant(at_ms=0, project=P, customer_id="c", wallet="w", source="default", amount=600)
    assert type(slots_api.parse_capacity(b'{"customer_id":"c","wallet":"w","amount":1}', P, True)) is SlotRevoke


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"customer_id":"c","resource_id":"r"}', ("wallet_required", "wallet")),
        (b'{"customer_id":"c","wallet":"  ","resource_id":"r"}', ("wallet_required", "wallet")),
        (b'{"customer_id":"c","wallet":null,"resource_id":"r"}', ("wallet_required", "wallet")),
        (b'{"customer_id":"c","wallet":"a\\u0001","resource_id":"r"}', ("invalid_identifier", "wallet")),
        (b'{"customer_id":"c","wallet":"w","resource_id":""}', ("resource_id_required", "resource_id")),
        (b'{"customer_id":"","wallet":"w","resource_id":"r"}', ("customer_id_required", "customer_id")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r","amount":1.5}', ("amount_must_be_positive", "amount")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r","amount":9007199254740992}',
         ("amount_too_large", "amount")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r","ttl_seconds":86401}', ("invalid_ttl_seconds", "ttl_seconds")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r","ttl_seconds":0.5}', ("invalid_ttl_seconds", "ttl_seconds")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r","extra":1}', ("unknown_field", "extra")),
        (b'{"customer_id":"c","wallet":"w","resource_id":"r"', ("invalid_json", None)),
    ],
)
def test_claim_refusals(body, expected):
    assert _code(slots_api.parse_claim, body, P) == expected


def test_blank_deposit_wallet_keeps_its_billing_code():
    assert _code(parse_deposit, b'{"customer_id":"c","amount":1,"wallet":" "}', P, None) == ("invalid_identifier", "wallet")


def test_entitlement_set():
    body = b'{"customer_id":"c","feature_key":"f","value":"","valid_from":"2026-01-01T00:00:00Z","metadata":{"a":1}}'
    command = entitlements_api.parse_set(body, P)
    assert command == EntitlementSet(at_ms=0, project=P, customer_id="c", feature_key="f", value="",
                                     valid_from_ms=1767225600000, metadata={"a": 1})
    assert _code(entitlements_api.parse_set, b'{"customer_id":"c","feature_key":"f"}', P) == ("value_required", "value")
    assert _code(entitlements_api.parse_set, b'{"customer_id":"c","feature_key":"f","value":1}', P) == (
        "entitlement_validation_error", "value")
    assert _code(entitlements_api.parse_set, b'{"customer_id":"c","feature_key":" ","value":"v"}', P) == (
        "feature_key_required", "feature_key")
    late = b'{"customer_id":"c","feature_key":"f","value":"v","valid_from":"2026-01-02T00:00:00Z",' \
        b'"valid_until":"2026-01-01T00:00:00Z"}'
    assert _code(entitlements_api.parse_set, late, P) == ("invalid_datetime_range", "valid_until")
    assert _code(entitlements_api.parse_set, b'{"customer_id":"c","feature_key":"f","value":"v","valid_from":"x"}',
                 P) == ("invalid_valid_from", "valid_from")


def test_comma_lists():
    assert entitlements_api.parse_list_query("feature_keys=a%2Cb,c&include_expired=true") == (
        frozenset({"a", "b", "c"}), True)
    assert entitlements_api.parse_list_query("") == (None, False)
    for query in ("feature_keys=a,", "feature_keys=,a", "feature_keys=a,,b", "feature_keys="):
        assert _code(entitlements_api.parse_list_query, query) == ("invalid_identifier", "feature_keys"), query
    assert _code(entitlements_api.parse_list_query, "include_expired=1") == ("invalid_include_expired", "include_expired")
    query = slots_api.parse_events_query("types=CLAIM%2CRELEASE&sources=a&limit=5&from_at=2026-01-01T00:00:00Z")
    assert (query.types, query.sources, query.page.limit, query.page.from_ms) == (
        frozenset({"CLAIM", "RELEASE"}), frozenset({"a"}), 5, 1767225600000)
    assert _code(slots_api.parse_events_query, "types=CLAIM,") == ("invalid_event_type", "types")
    assert _code(slots_api.parse_events_query, "limit=101") == ("invalid_limit", "limit")
    assert _code(slots_api.parse_events_query, "wallet=a&wallet=b") == ("invalid_identifier", "wallet")
    assert _code(entitlements_api.parse_events_query, "wallet=a") == ("unknown_field", "wallet")
