"""The ledger state machine: `apply(state, lsn, command) -> Applied | Rejected`.

One `match` over the Command union; the rules live one subsystem per module beside this one:
`deposits`, `debits` (deduct, freeze), `settlement` (consume, unfreeze), `timers` (expiry, TTLs,
the due index), `corrections` (refund, void: CONTRACT §10), `apikeys`, `hooks` (webhooks, alert
rules, delivery outcomes and the events derived from logged changes: CONTRACT §11), `slots`,
`entitlements` (CONTRACT §8); their shared steps in `common`. A new subsystem is a new module and a
new `case` here.

Pure and deterministic: no I/O, no clock, no randomness, no asyncio. Time comes in as `at_ms`
on each command (CONTRACT §3.16); ids are derived from the LSN (`acc_{lsn}`, `le_{lsn}_{i}`).

Outcomes:
- `Applied(body, logged=True)`: the state changed; `state.last_lsn == lsn` and the touched
  customer's `last_lsn == lsn`.
- `Applied(body, logged=False)`: an idempotent replay (or a timer with nothing left to do);
  nothing changed.
- `Rejected`: nothing changed at all (CONTRACT §7.1). Every handler validates fully before its
  first write; the writes that follow cannot fail.

Validation order inside the engine (shape was checked by net/, CONTRACT §3.3):
customer existence (404) -> idempotency identity (replay, or 409 `transaction_conflict`) ->
business rules (400). A known id decides before the business rules so a replay never fails on a
balance that changed since; an unknown id cannot conflict, so §3.3's "conflicts last" holds.

`insufficient_balance` details (CONTRACT §3.14): `{"wallet": <name, or null for "every wallet">,
"requested": n, "available": m}`; with `credit_types` the code is
`insufficient_balance_in_selected_credit_types`, `wallet` is null and `credit_types` lists the
selection. For a consume overage, `requested` is the excess over the frozen amount.
"""

from __future__ import annotations

from typing import assert_never

from engine.core.apikeys import apply_create_api_key, apply_revoke_api_key
from engine.core.commands import (
    AnyCommand,
    AutoSettle,
    Consume,
    CreateApiKey,
    CreateWebhook,
    Deduct,
    DeleteWebhook,
    Deposit,
    EntitlementRemove,
    EntitlementSet,
    ExpireBuckets,
    Freeze,
    Refund,
    RevokeApiKey,
    SetAlerts,
    SlotAutoRelease,
    SlotClaim,
    SlotGrant,
    SlotRelease,
    SlotRevoke,
    Unfreeze,
    Void,
    WebhookAttempt,
)
from engine.core.corrections import apply_refund, apply_void
from engine.core.debits import apply_deduct, apply_freeze
from engine.core.deposits import apply_deposit
from engine.core.hooks import (
    apply_create_webhook,
    apply_delete_webhook,
    apply_set_alerts,
    apply_webhook_attempt,
    derive_events,
)
from engine.core.entitlements import apply_entitlement_remove, apply_entitlement_set
from engine.core.results import Applied, Rejected
from engine.core.settlement import apply_consume, apply_unfreeze
from engine.core.slots import (
    apply_slot_auto_release,
    apply_slot_claim,
    apply_slot_grant,
    apply_slot_release,
    apply_slot_revoke,
)
from engine.core.state import LedgerState
from engine.core.timers import (
    apply_auto_settle,
    apply_expire_buckets,
)

# Timer commands carry their due time as `at_ms` (CONTRACT §6).
_TIMERS = frozenset({ExpireBuckets, AutoSettle, SlotAutoRelease})


# Commands that change a customer's credit: the ones events derive from (CONTRACT §11.2).
_LEDGER_CHANGES = frozenset({Deposit, Deduct, Freeze, Consume, Unfreeze, ExpireBuckets, AutoSettle, Refund, Void})


def apply(state: LedgerState, lsn: int, command: AnyCommand) -> Applied | Rejected:
    """Apply one command stamped for `lsn` (= state.last_lsn + 1). See the module docstring."""
    assert lsn == state.last_lsn + 1, (lsn, state.last_lsn)
    # The runtime stamps client commands where they get their LSN, so their stamps never go
    # backwards in log order. Timers carry their due time instead, which lies at or before the
    # moment they fire, so it may be older than the last stamp (CONTRACT §6).
    is_timer = type(command) in _TIMERS
    if not is_timer:
        assert command.at_ms >= state.stamp_ms_last, (command.at_ms, state.stamp_ms_last)
    match command:
        case Deduct():
            result = apply_deduct(state, lsn, command)
        case Freeze():
            result = apply_freeze(state, lsn, command)
        case Consume():
            result = apply_consume(state, lsn, command)
        case Unfreeze():
            result = apply_unfreeze(state, lsn, command)
        case Deposit():
            result = apply_deposit(state, lsn, command)
        case ExpireBuckets():
            result = apply_expire_buckets(state, lsn, command)
        case AutoSettle():
            result = apply_auto_settle(state, lsn, command)
        case Refund():
            result = apply_refund(state, lsn, command)
        case Void():
            result = apply_void(state, lsn, command)
        case SlotClaim():
            result = apply_slot_claim(state, lsn, command)
        case SlotRelease():
            result = apply_slot_release(state, lsn, command)
        case SlotGrant():
            result = apply_slot_grant(state, lsn, command)
        case SlotRevoke():
            result = apply_slot_revoke(state, lsn, command)
        case SlotAutoRelease():
            result = apply_slot_auto_release(state, lsn, command)
        case EntitlementSet():
            result = apply_entitlement_set(state, lsn, command)
        case EntitlementRemove():
            result = apply_entitlement_remove(state, lsn, command)
        case CreateApiKey():
            result = apply_create_api_key(state, lsn, command)
        case RevokeApiKey():
            result = apply_revoke_api_key(state, lsn, command)
        case CreateWebhook():
            result = apply_create_webhook(state, lsn, command)
        case DeleteWebhook():
            result = apply_delete_webhook(state, lsn, command)
        case SetAlerts():
            result = apply_set_alerts(state, lsn, command)
        case WebhookAttempt():
            result = apply_webhook_attempt(state, lsn, command)
        case _:
            assert_never(command)
    if type(result) is Applied and result.logged:
        assert state.last_lsn == lsn
        # CONTRACT §11.2: events derive from logged customer changes; one check when no hooks.
        if state.hooks is not None and type(command) in _LEDGER_CHANGES:
            derive_events(state, state.hooks, lsn, command)
        if not is_timer:
            state.stamp_ms_last = command.at_ms
    else:
        assert state.last_lsn == lsn - 1
    return result


