"""Limit arithmetic, pure and shared by both back ends.

A bucket's state is its token count and the time it was last written. On each
access the count is first refilled: ``min(capacity, tokens + elapsed * rate)``,
and a bucket with no state starts full. ``lua/admit.lua`` and
``lua/settle.lua`` repeat ``refill``, ``fits`` and ``refund`` operation for
operation in doubles, so both back ends compute the same numbers.

The state of a concurrency limit is the number of live leases, and the state
of a period limit is what it used plus what live reservations hold. Both
back ends compute those themselves and pass them to ``fits`` and
``build_admission`` as the item's "level".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmgw.limits.base import (
    CONCURRENCY_RETRY_SECONDS,
    MAX_LEASE_SECONDS,
    Admission,
    AdmitItem,
    Bucket,
    BucketState,
    Charge,
    Commit,
    Lease,
    Limit,
    Reserve,
    SettleItem,
    Shortfall,
)


@dataclass(frozen=True)
class Level:
    """The stored state of one bucket: its tokens at time ``updated_at``."""

    tokens: float
    updated_at: float  # seconds on the back end's clock


def refill(bucket: Bucket, level: Level | None, now: float) -> float:
    """Return the tokens in ``bucket`` at ``now``, capped at its capacity.

    A clock that went backwards (for example after a Redis failover) counts as
    no time elapsed, so it never takes tokens away.
    """
    if level is None:
        return bucket.capacity
    elapsed = max(0.0, now - level.updated_at)
    return min(bucket.capacity, level.tokens + elapsed * bucket.refill_per_second)


def refund(bucket: Bucket, tokens: float, amount: float) -> float:
    """Return ``tokens`` after giving back ``amount``, capped at the capacity.

    A negative amount takes tokens and may leave the bucket below zero, which
    then delays later requests until the refill covers the debt. The debt
    stops at one capacity, so one request that used far more than it
    reserved (no output cap, a huge response) locks its key out for at most
    two full refill periods, not for days.
    """
    return max(-bucket.capacity, min(bucket.capacity, tokens + amount))


def item_limit(item: AdmitItem | SettleItem) -> Limit:
    if isinstance(item, Charge):
        return item.bucket
    return item.limit


def item_key(item: AdmitItem | SettleItem) -> str:
    return item_limit(item).key


def validate_items(
    items: Sequence[AdmitItem], request_id: str, lease_seconds: float
) -> None:
    """Raise ``ValueError`` for items the admission check cannot handle.

    A negative amount or a limit charged twice would break the all-or-nothing
    check, which compares each limit's level with one non-negative amount.
    Leases and reservations need a request id to be settled by.
    """
    seen: set[str] = set()
    for item in items:
        key = item_key(item)
        if isinstance(item, Charge | Reserve) and item.amount < 0:
            raise ValueError(
                f"invalid charge {item.amount} on limit {key!r}: "
                "admission amounts must be >= 0 (use settle to take more)"
            )
        if key in seen:
            raise ValueError(
                f"limit {key!r} is charged twice: sum the amounts into one charge"
            )
        seen.add(key)
        if isinstance(item, Lease | Reserve) and not request_id:
            raise ValueError(
                f"missing request_id for the lease or reservation on {key!r}"
            )
    if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
        raise ValueError(
            f"invalid lease_seconds {lease_seconds}: expected > 0 and <= "
            f"{MAX_LEASE_SECONDS:g}"
        )


def validate_settle_items(items: Sequence[SettleItem], request_id: str) -> None:
    """Raise ``ValueError`` for a negative commit or a missing request id."""
    for item in items:
        if isinstance(item, Commit) and item.used < 0:
            raise ValueError(
                f"invalid commit {item.used} on limit {item.limit.key!r}: "
                "used amounts must be >= 0"
            )
        if isinstance(item, Lease | Commit) and not request_id:
            raise ValueError(
                f"missing request_id to settle the lease or reservation on "
                f"{item.limit.key!r}"
            )


def requested(item: AdmitItem) -> float:
    """Return how much of its limit an item takes: a lease takes one slot."""
    if isinstance(item, Lease):
        return 1.0
    return float(item.amount)


def remaining(item: AdmitItem, level: float) -> float:
    """Return what the limit has left at ``level``, before the item."""
    if isinstance(item, Charge):
        return level
    return item.limit.limit - level


def fits(item: AdmitItem, level: float) -> bool:
    """Return whether the limit at ``level`` has room for the item."""
    return remaining(item, level) >= requested(item)


def never_fits(item: AdmitItem) -> bool:
    """Return whether the item exceeds its whole limit, so no wait helps."""
    if isinstance(item, Charge):
        return item.amount > item.bucket.capacity
    return requested(item) > item.limit.limit


def is_admitted(items: Sequence[AdmitItem], levels: Sequence[float]) -> bool:
    """Return whether every limit has room for its item."""
    return all(fits(item, level) for item, level in zip(items, levels, strict=True))


def full_after(bucket: Bucket, tokens: float) -> float:
    """Return the seconds until a bucket holding ``tokens`` is full again."""
    return max(0.0, (bucket.capacity - tokens) / bucket.refill_per_second)


def retry_after(item: AdmitItem, level: float, now: float) -> float | None:
    """Return the seconds until the item fits, or None if it never will.

    ``now`` is Unix time on the back end's clock, for the end of a period.
    """
    if never_fits(item):
        return None
    if isinstance(item, Charge):
        return max(0.0, (item.amount - level) / item.bucket.refill_per_second)
    if isinstance(item, Lease):
        return CONCURRENCY_RETRY_SECONDS
    return max(0.0, item.limit.ends_at - now)


def build_admission(
    items: Sequence[AdmitItem],
    levels: Sequence[float],
    admitted: bool,
    *,
    now: float,
) -> Admission:
    """Build the result of an admission attempt.

    ``levels`` are the states before anything was taken: refilled tokens,
    live leases, or used plus reserved. When ``admitted`` is true each
    bucket state shows the count after its charge. Otherwise nothing was
    taken, and the shortfall is the first item that can never fit, or else
    the short item with the longest wait.
    """
    states: list[BucketState] = []
    shortfall: Shortfall | None = None
    for item, level in zip(items, levels, strict=True):
        if isinstance(item, Charge):
            left = level - item.amount if admitted else level
            states.append(
                BucketState(
                    bucket=item.bucket,
                    remaining=left,
                    reset_seconds=full_after(item.bucket, left),
                )
            )
        if admitted or fits(item, level):
            continue
        candidate = Shortfall(
            limit=item_limit(item),
            requested=requested(item),
            remaining=remaining(item, level),
            retry_after=retry_after(item, level, now),
        )
        if shortfall is None or _blocks_longer(candidate, shortfall):
            shortfall = candidate

    return Admission(admitted=admitted, states=tuple(states), shortfall=shortfall)


def _blocks_longer(candidate: Shortfall, current: Shortfall) -> bool:
    if current.retry_after is None:
        return False
    if candidate.retry_after is None:
        return True
    return candidate.retry_after > current.retry_after


def lease_deadline_ms(now: float, lease_seconds: float) -> int:
    """Return the deadline of a lease in whole milliseconds, as admit.lua does."""
    return now_ms(now) + math.ceil(lease_seconds * 1000)


def now_ms(now: float) -> int:
    return math.floor(now * 1000)
