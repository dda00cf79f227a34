"""The comma-list query schemas of the slot and entitlement GETs (net/openapi_slots.py) against
the parser that really decides (net/hosted_parse.py `comma_list`, CONTRACT §8.4, §8.5).

What: for every code point in every position of a list, and for empty items and item counts, the
documented pattern (with maxLength) accepts exactly what `comma_list` accepts; the item pattern
splits the non-control, non-comma characters into leading whitespace and "not blank" with no
overlap, so a string matches it in one way only.
How: Python's `re` on the served pattern (it is also the ECMA-262 text, as net/schemas.py's
ID_PATTERN); `comma_list` on the same (already percent-decoded) text.
How it could fail: a schema stricter or looser than the server (schemathesis, tests/fuzz, then
sees a valid request refused or an invalid one accepted), or an item pattern that matches in
many ways again (a failing match backtracks exponentially in the item count: hypothesis filters
its generated cases with the regex and stalled for minutes per case).
"""

from __future__ import annotations

import re
import sys

import pytest

from engine.core.limits import EVENT_FILTER_COUNT_MAX
from engine.core.state import SLOT_EVENT_TYPES
from net import openapi_slots
from net.errors import ClientError
from net.hosted_parse import comma_list


def _accepts(text: str, allowed: tuple[str, ...] | None = None) -> bool:
    try:
        comma_list(text, "f", "invalid_identifier", allowed)
    except ClientError:
        return False
    return True


def _documented(schema: dict[str, object], text: str) -> bool:
    pattern = schema["pattern"]
    length_max = schema["maxLength"]
    assert isinstance(pattern, str) and isinstance(length_max, int)
    return len(text) <= length_max and re.compile(pattern).search(text) is not None


def test_item_classes_split_the_identifier_characters_without_overlap() -> None:
    whitespace = re.compile(openapi_slots._WS)
    not_blank = re.compile(openapi_slots._NOT_BLANK)
    for code_point in range(sys.maxunicode + 1):
        c = chr(code_point)
        kinds = (whitespace.fullmatch(c) is not None, not_blank.fullmatch(c) is not None)
        control_or_comma = code_point <= 0x1F or code_point == 0x7F or c == ","
        assert kinds.count(True) == (0 if control_or_comma else 1), hex(code_point)
        assert kinds[0] == (c.isspace() and not control_or_comma), hex(code_point)


def test_id_list_pattern_is_comma_list() -> None:
    schema = openapi_slots._id_list("Any.", EVENT_FILTER_COUNT_MAX)
    # Every code point up to U+3100 (all controls and whitespace lie below), then a sample: the
    # classes themselves are checked on every code point above.
    for code_point in (*range(0x3100), *range(0x3100, sys.maxunicode + 1, 251), sys.maxunicode):
        if 0xD800 <= code_point <= 0xDFFF:
            continue  # a query is UTF-8: no lone surrogate reaches the parser
        c = chr(code_point)
        for text in (c, c + ",a", "a" + c, "a," + c, "a," + "a" + c):  # an item's start (first item), rest (a later one)
            assert _documented(schema, text) == _accepts(text), (hex(code_point), text)
    cases = ["a", "a,b", " a", "a ", " ", " , a", "a,", ",a", "a,,b", "", "abc\n", "a,b\n", "\u3000x\u3000,y",
             ",".join(["x"] * EVENT_FILTER_COUNT_MAX), ",".join(["x"] * (EVENT_FILTER_COUNT_MAX + 1)),
             ",".join(["x" * 255] * EVENT_FILTER_COUNT_MAX)]  # fmt: skip
    for text in cases:
        assert _documented(schema, text) == _accepts(text), repr(text[:40])


def test_a_failing_list_match_is_cheap() -> None:
    """The old item pattern took ~16 s here at 8 items (exponential); this one answers at once."""
    schema = openapi_slots._id_list("Any.", EVENT_FILTER_COUNT_MAX)
    assert not _documented(schema, ",".join(["abcdefgh"] * 40) + "\n")


@pytest.mark.parametrize("text", ["CLAIM", "CLAIM,RELEASE", "CLAIM,", "claim", ",".join(["CLAIM"] * EVENT_FILTER_COUNT_MAX),
                                  ",".join(["CLAIM"] * (EVENT_FILTER_COUNT_MAX + 1)), "CLAIM\n", "CLAIM,,RELEASE"])  # fmt: skip
def test_enum_list_pattern_is_comma_list(text: str) -> None:
    schema = openapi_slots._enum_list(SLOT_EVENT_TYPES)
    assert _documented(schema, text) == _accepts(text, SLOT_EVENT_TYPES)
