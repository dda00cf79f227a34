"""Type aliases shared by the engine, the runtime and the log.

Units are last in names: `*_ms` is UTC milliseconds since the Unix epoch, `*_s` seconds.
"""

from typing import Final

Lsn = int  # log sequence number: 1, 2, 3 ... totally orders every state change (CONTRACT §6)
StampMs = int  # UTC milliseconds since the epoch, chosen by the runtime clock (CONTRACT §3.16)
ProjectId = str
CustomerId = str
TransactionId = str

AMOUNT_MAX: Final = 2**53 - 1  # CONTRACT §3.1: every amount and every sum stays <= this
ID_LENGTH_MAX: Final = 255  # CONTRACT §3.2
DESCRIPTION_LENGTH_MAX: Final = 2000  # velobase-api §5 [REC]
UNFREEZE_AFTER_S_MAX: Final = 2_592_000  # CONTRACT §3.10: 30 days
CONSUME_AFTER_S_MAX: Final = 604_800  # CONTRACT §3.10: 7 days
LEDGER_PAGE_SIZE_MAX: Final = 100  # CONTRACT §2
LEDGER_PAGE_SIZE_DEFAULT: Final = 20

BUSINESS_TYPES: Final = frozenset(
    {
        "UNDEFINED",
        "TASK",
        "ORDER",
        "MEMBERSHIP",
        "SUBSCRIPTION",
        "FREE_TRIAL",
        "ADMIN_GRANT",
        "TOKEN_USAGE",
        "ADMIN_DEDUCT",
    }
)
OPERATION_TYPES: Final = frozenset({"GRANT", "FREEZE", "CONSUME", "UNFREEZE", "EXPIRE"})
