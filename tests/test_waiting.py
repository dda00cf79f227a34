"""tests/waiting.py: a bounded poll returns the first value that holds, and fails the test naming
what never happened (never how long it took)."""

from __future__ import annotations

import pytest

from tests.waiting import wait_for


def test_returns_the_first_value_that_holds() -> None:
    values = iter([0, 0, 3, 4])
    assert wait_for(lambda: next(values), what="a value", within_s=1) == 3
    values = iter(["a", "bb", "ccc"])
    assert wait_for(lambda: next(values), what="long", within_s=1, until=lambda v: len(v) > 1) == "bb"


def test_a_condition_that_never_holds_fails_with_what_and_the_last_value() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"never happened: the answer \(last seen: 41\)"):
        wait_for(lambda: 41, what="the answer", within_s=0.1, until=lambda v: v == 42)
