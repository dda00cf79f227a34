"""`CustomerMap`: a project's customers by id, some of them still encoded ("cold") until first use.

Issue 14 (restart with 10^7 ledger entries from a snapshot in < 30 s): decoding every customer
of a snapshot into live objects was ~90 % of a restart. A snapshot in layout 3
(engine/core/codec_v3.py) keeps each quiet customer (no open freeze, no timer, no refunds, voids,
alerts, slots or entitlements) as its encoded bytes; a restore puts those bytes here as they are,
and the first command or read that looks the customer up decodes it (a few µs) into the live
`CustomerState`, which then stays. A snapshot re-emits a still-cold customer's bytes unchanged.

Pure data plus two functions given by the codec that made the map (engine/core stays free of
I/O: the bytes come in as arguments):

- `warm(customer_id, data) -> CustomerState`: decode for good. The codec's function also points
  the project's indexes that named the cold customer (the deposit idempotency index) at the
  decoded records.
- `peek(data) -> CustomerState`: decode without side effects, for the passes that read every
  customer once (digest, invariants, layout-1 encoding): they see exactly the state a full decode
  gives, and the customer stays cold.

Lookups (`get`, `[]`) warm; iteration order is the insertion order of a dict (warming keeps a
customer's place). Writers iterate `warm_values()`; `values()` / `items()` are read-only views
of every customer (cold ones peeked, fresh objects each time: never mutate what they yield).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # state.py imports this module; the type is only named here
    from engine.core.state import CustomerState

Warm = Callable[[str, bytes], "CustomerState"]
Peek = Callable[[bytes], "CustomerState"]


class CustomerMap:
    """customer_id -> CustomerState; cold customers are held as `bytes` until looked up."""

    __slots__ = ("_map", "_warm", "_peek", "_cold")

    def __init__(self, entries: dict[str, CustomerState | bytes] | None = None, warm: Warm | None = None,
                 peek: Peek | None = None, cold_count: int = 0) -> None:  # fmt: skip
        """`entries` in the project's order (taken, not copied); `cold_count` of its values are
        `bytes` (cold; counted by the caller, who knows: a pass over 10^6 values costs ~0.3 s),
        which needs both `warm` and `peek`."""
        self._map: dict[str, CustomerState | bytes] = {} if entries is None else entries
        self._warm = warm
        self._peek = peek
        self._cold = cold_count
        assert not cold_count or (warm is not None and peek is not None)

    def get(self, customer_id: str) -> CustomerState | None:
        value = self._map.get(customer_id)
        if type(value) is bytes:
            return self._warm_one(customer_id, value)
        return value  # type: ignore[return-value]  # not bytes: a CustomerState or None

    def __getitem__(self, customer_id: str) -> CustomerState:
        value = self._map[customer_id]
        if type(value) is bytes:
            return self._warm_one(customer_id, value)
        return value  # type: ignore[return-value]

    def _warm_one(self, customer_id: str, data: bytes) -> CustomerState:
        assert self._warm is not None
        customer = self._warm(customer_id, data)
        assert customer.customer_id == customer_id
        self._map[customer_id] = customer
        self._cold -= 1
        return customer

    def __setitem__(self, customer_id: str, customer: CustomerState) -> None:
        if type(self._map.get(customer_id)) is bytes:
            self._cold -= 1
        self._map[customer_id] = customer

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def keys(self) -> Iterator[str]:
        return iter(self._map)

    @property
    def cold_count(self) -> int:
        """How many customers are still encoded."""
        return self._cold

    def is_cold(self, customer_id: str) -> bool:
        return type(self._map.get(customer_id)) is bytes

    def raw_items(self) -> Iterator[tuple[str, CustomerState | bytes]]:
        """Every (id, customer or its bytes), in order: what a snapshot writes."""
        return iter(self._map.items())

    def warm_values(self) -> Iterator[CustomerState]:
        """The decoded customers, in order (the ones a writer may change)."""
        return (value for value in self._map.values() if type(value) is not bytes)  # type: ignore[misc]

    def values(self) -> Iterator[CustomerState]:
        """Every customer in order, cold ones decoded for this pass only (read only)."""
        peek = self._peek
        for value in self._map.values():
            if type(value) is bytes:
                assert peek is not None
                yield peek(value)
            else:
                yield value  # type: ignore[misc]

    def items(self) -> Iterator[tuple[str, CustomerState]]:
        """(id, customer) for every customer, as `values()` (read only)."""
        return zip(self._map, self.values())
