"""The pure ledger core: deterministic, no I/O, no clock, no randomness, no asyncio.

Time and ids come in with each command (stamped by engine/runtime at the ordering point); every
outcome is an `Applied` body or a `Rejected` code (engine/core/codes.py), never an HTTP status.
"""
