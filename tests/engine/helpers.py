"""A tiny driver for engine tests: assigns LSNs, records the history, and checks after every
command the promises of engine.core.ledger.apply (a rejection or a replay changes nothing)."""

from __future__ import annotations

from typing import Any

from engine.core.commands import Command
from engine.core.digest import digest
from engine.core.ledger import apply
from engine.core.results import Applied, Rejected
from engine.core.state import LedgerState
from engine.core.timers import due_commands

T0_MS = 1_775_563_200_000  # 2026-04-07T12:00:00.000Z
P = "proj"


class Driver:
    def __init__(self) -> None:
        self.state = LedgerState()
        self.history: list[tuple[int, Command]] = []

    def run(self, command: Command) -> Applied | Rejected:
        before = digest(self.state)
        lsn = self.state.last_lsn + 1
        result = apply(self.state, lsn, command)
        if isinstance(result, Applied) and result.logged:
            self.history.append((lsn, command))
            assert self.state.last_lsn == lsn
        else:
            assert digest(self.state) == before, f"state changed by {result!r}"
            assert self.state.last_lsn == lsn - 1
        return result

    def ok(self, command: Command) -> Any:
        result = self.run(command)
        assert isinstance(result, Applied), result
        return result.body

    def rejected(self, command: Command) -> Rejected:
        result = self.run(command)
        assert isinstance(result, Rejected), result
        return result

    def tick(self, customer_id: str, now_ms: int, project: str = P) -> list[Command]:
        """Fire the customer's due timers as the runtime does (each must be logged)."""
        fired = due_commands(self.state, project, customer_id, now_ms)
        for timer in fired:
            result = self.run(timer)
            assert isinstance(result, Applied) and result.logged, (timer, result)
        return fired
