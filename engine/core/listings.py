"""Listings for operators: projects and keys (CONTRACT §9.2), the customer list (§9.3).

Pure reads: no I/O, no clock (`now_ms` is passed in), nothing here writes to the state.

The customer list walks `ProjectState.customer_ids`, a SortedList kept in step by the deposit that
creates a customer (derived: rebuilt on load, never in the digest), so a page costs
O(log n + limit) and `total_count` for a prefix two bisections, with any number of customers.

Cursor (CONTRACT §3.12, §7.9): the customer_id of the last item shown, bound to (project, prefix);
the next page starts strictly after it. Ids are only ever added, so paging never skips or repeats
a customer that existed when the listing began (one created meanwhile shows up iff it sorts after
the cursor). A cursor of another project or prefix, or not made by us -> `invalid_cursor`
(engine/core/cursors.py: its wire format).
"""

from __future__ import annotations

from typing import Final

from engine.core import cursors, spent
from engine.core.apikeys import key_view
from engine.core.limits import CUSTOMER_PAGE_SIZE_MAX
from engine.core.results import (
    Balance,
    CustomerPage,
    CustomerSummary,
    KeyList,
    ProjectList,
    ProjectView,
    Rejected,
)
from engine.core.state import CustomerState, LedgerState, bucket_valid_at
from sortedcontainers import SortedList
from engine.core.timefmt import format_ms, format_ms_or_none

_CODE_POINT_MAX: Final = 0x10FFFF

# -- projects and keys (CONTRACT §9.2) ----------------------------------------------------------


def list_projects(state: LedgerState) -> ProjectList:
    """Every project by name: its customer count, its keys not revoked, its first key's time."""
    active: dict[str, int] = {}
    created: dict[str, int] = {}
    for key in state.api_keys.values():
        if key.admin:
            continue
        active[key.project] = active.get(key.project, 0) + (not key.revoked)
        if key.created_at_ms is not None:
            created[key.project] = min(created.get(key.project, key.created_at_ms), key.created_at_ms)
    return ProjectList(
        items=[
            ProjectView(
                name=name, created_at=format_ms_or_none(created.get(name)),
                customers=len(project.customers), keys_active=active.get(name, 0),
            )  # fmt: skip
            for name, project in sorted(state.projects.items())
        ]
    )


def list_keys(state: LedgerState, project: str | None) -> KeyList | Rejected:
    """Project keys in creation order, of one project if named (unknown -> project_not_found).
    Admin keys are not listed: they are managed at start (CONTRACT §9.1) and offline."""
    if project is not None and project not in state.projects:
        return project_not_found(project)
    return KeyList(
        items=[
            key_view(key)
            for key in state.api_keys.values()
            if not key.admin and (project is None or key.project == project)
        ]
    )


def project_not_found(project: str) -> Rejected:
    return Rejected("project_not_found", f"no project {project!r}", {"project": project})


# -- the customer list (CONTRACT §9.3) ----------------------------------------------------------


def customer_page(
    state: LedgerState, project: str, *, limit: int, cursor: str | None, prefix: str | None, now_ms: int
) -> CustomerPage | Rejected:
    """Customers of `project` whose id starts with `prefix` (None or "": all), by customer_id.
    Rejected: invalid_limit, invalid_cursor (net checks both first; repeated here so no caller
    can reach a 500)."""
    if not 1 <= limit <= CUSTOMER_PAGE_SIZE_MAX:
        return Rejected("invalid_limit", f"limit must be 1..{CUSTOMER_PAGE_SIZE_MAX}")
    prefix = prefix or None
    binding = cursors.customer_list_binding(project, prefix)
    after = None
    if cursor is not None:
        after = cursors.decode_customer(cursor, binding)
        if after is None:
            return Rejected("invalid_cursor", "malformed cursor, or made for another listing", {"field": "cursor"})
    project_state = state.projects.get(project)
    if project_state is None:
        return CustomerPage(items=[], has_more=False, next_cursor=None, total_count=0)
    ids = project_state.customer_ids
    low, high = _prefix_range(ids, prefix)
    start = low if after is None else max(low, ids.bisect_right(after))
    end = min(start + limit, high)
    customers = project_state.customers
    items = [_summary(customers[customer_id], now_ms) for customer_id in ids.islice(start, end)]
    has_more = end < high
    next_cursor = cursors.encode_customer(items[-1].customer_id, binding) if has_more else None
    return CustomerPage(items=items, has_more=has_more, next_cursor=next_cursor, total_count=high - low)


def _prefix_range(ids: SortedList[str], prefix: str | None) -> tuple[int, int]:
    """[low, high) positions of the ids starting with `prefix`: two bisections."""
    if prefix is None:
        return 0, len(ids)
    low = ids.bisect_left(prefix)
    upper = prefix_upper_bound(prefix)
    return low, (len(ids) if upper is None else ids.bisect_left(upper))


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (None: there is none).
    `prefix + chr(0x10FFFF)` would not do: `prefix + chr(0x10FFFF) + "x"` sorts after it."""
    stem = prefix.rstrip(chr(_CODE_POINT_MAX))
    if not stem:
        return None
    return stem[:-1] + chr(ord(stem[-1]) + 1)


def _summary(customer: CustomerState, now_ms: int) -> CustomerSummary:
    """The customer's balance over buckets valid now, as customer_view counts it (§3.13)."""
    total = used = frozen = 0
    for bucket in customer.live:
        if bucket_valid_at(bucket, now_ms):
            total += bucket.total
            used += bucket.used
            frozen += bucket.frozen
    for totals in spent.valid_totals(customer, now_ms).values():  # spent: total == used (§7.11)
        total += totals.total
        used += totals.total
    # customer_view sums available per bucket (total - used - frozen - expired); expired is 0 for
    # a bucket still valid, so the two agree.
    return CustomerSummary(
        customer_id=customer.customer_id,
        name=customer.name,
        email=customer.email,
        created_at=format_ms(customer.created_at_ms),
        balance=Balance(total=total, used=used, frozen=frozen, available=total - used - frozen),
    )
