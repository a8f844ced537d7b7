"""Token bucket arithmetic, pure and shared by both back ends.

A bucket's state is its token count and the time it was last written. On each
access the count is first refilled: ``min(capacity, tokens + elapsed * rate)``,
and a bucket with no state starts full. ``lua/admit.lua`` and
``lua/settle.lua`` repeat ``refill``, ``is_admitted`` and ``refund`` operation
for operation in doubles, so both back ends compute the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmgw.limits.base import Admission, Bucket, BucketState, Charge


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


def validate_charges(charges: Sequence[Charge]) -> None:
    """Raise ``ValueError`` for a negative amount or a bucket charged twice.

    Both would break the all-or-nothing check, which compares each bucket's
    tokens with one non-negative amount.
    """
    seen: set[str] = set()
    for charge in charges:
        if charge.amount < 0:
            raise ValueError(
                f"invalid charge {charge.amount} on bucket {charge.bucket.key!r}: "
                "admission amounts must be >= 0 (use settle to take more)"
            )
        if charge.bucket.key in seen:
            raise ValueError(
                f"bucket {charge.bucket.key!r} is charged twice: "
                "sum the amounts into one charge"
            )
        seen.add(charge.bucket.key)


def is_admitted(charges: Sequence[Charge], tokens: Sequence[float]) -> bool:
    """Return whether every bucket has at least its charge."""
    return all(
        available >= charge.amount
        for charge, available in zip(charges, tokens, strict=True)
    )


def full_after(bucket: Bucket, tokens: float) -> float:
    """Return the seconds until a bucket holding ``tokens`` is full again."""
    return max(0.0, (bucket.capacity - tokens) / bucket.refill_per_second)


def build_admission(
    charges: Sequence[Charge], tokens: Sequence[float], admitted: bool
) -> Admission:
    """Build the result of an admission attempt.

    ``tokens`` are the refilled counts before anything was taken. When
    ``admitted`` is true each state shows the count after its charge;
    otherwise nothing was taken, and ``retry_after`` is the wait until the
    slowest short bucket has enough, or None when some charge exceeds its
    bucket's capacity and can never be admitted.
    """
    states: list[BucketState] = []
    short: list[tuple[Charge, float]] = []
    for charge, available in zip(charges, tokens, strict=True):
        remaining = available - charge.amount if admitted else available
        states.append(
            BucketState(
                bucket=charge.bucket,
                remaining=remaining,
                reset_seconds=full_after(charge.bucket, remaining),
            )
        )
        if available < charge.amount:
            short.append((charge, available))

    if admitted:
        return Admission(admitted=True, states=tuple(states))

    retry_after: float | None = max(
        (
            (charge.amount - available) / charge.bucket.refill_per_second
            for charge, available in short
        ),
        default=0.0,
    )
    if any(charge.amount > charge.bucket.capacity for charge in charges):
        retry_after = None
    return Admission(
        admitted=False,
        states=tuple(states),
        retry_after=retry_after,
        short_bucket=short[0][0].bucket if short else None,
    )
