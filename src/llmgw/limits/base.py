"""The back end interface shared by the embedded and the Redis implementation.

A back end holds the token buckets and the ledger stream. Admission takes
from every bucket that applies or from none; settlement returns what a
request did not use and appends its usage record in the same step, so a
crash can never leave a settled request without its record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmgw.ledger.record import UsageRecord


@dataclass(frozen=True)
class Bucket:
    """A token bucket: ``capacity`` units, refilled at ``refill_per_second``."""

    key: str  # unique name, for example "key:ci-pipeline:requests"
    kind: str  # "requests" or "tokens": which x-ratelimit-* headers it feeds
    capacity: float
    refill_per_second: float

    def __post_init__(self) -> None:
        # A zero rate would make every retry and reset time infinite.
        if self.capacity < 0:
            raise ValueError(
                f"invalid capacity {self.capacity} for bucket {self.key!r}: "
                "expected >= 0"
            )
        if self.refill_per_second <= 0:
            raise ValueError(
                f"invalid refill_per_second {self.refill_per_second} for bucket "
                f"{self.key!r}: expected > 0"
            )

    @classmethod
    def per_minute(cls, key: str, kind: str, limit: int) -> Bucket:
        return cls(
            key=key, kind=kind, capacity=float(limit), refill_per_second=limit / 60
        )


@dataclass(frozen=True)
class Charge:
    bucket: Bucket
    amount: float


@dataclass(frozen=True)
class BucketState:
    """A bucket after an admission attempt, for the x-ratelimit-* headers."""

    bucket: Bucket
    remaining: float
    # Seconds until the bucket is full again at its refill rate.
    reset_seconds: float


@dataclass(frozen=True)
class Admission:
    admitted: bool
    states: tuple[BucketState, ...]
    # When rejected: seconds until every short bucket holds enough, or None
    # when a charge exceeds a bucket's capacity and can never be admitted.
    retry_after: float | None = None
    # When rejected: the first bucket that was short.
    short_bucket: Bucket | None = None


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str  # the stream id, for ack
    record: UsageRecord


class Backend(Protocol):
    async def admit(self, charges: Sequence[Charge]) -> Admission:
        """Take every charge or none. Charges with amount 0 only read state."""
        ...

    async def settle(self, refunds: Sequence[Charge], record: UsageRecord) -> None:
        """Give back each refund (negative amounts take more, letting a bucket
        go below zero), never past capacity, and append ``record`` to the
        ledger stream, atomically."""
        ...

    async def append_record(self, record: UsageRecord) -> None:
        """Append a record with no bucket change (rejected requests)."""
        ...

    async def read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        """Read records not yet acknowledged: first this consumer's own pending
        ones, then ones idle too long at other (dead) consumers, then new.

        Waits up to ``block_ms`` for new records; 0 returns at once."""
        ...

    async def prune_consumers(self, min_idle_ms: int) -> int:
        """Forget ledger consumers with nothing pending that have been idle
        for ``min_idle_ms``, such as those of stopped workers. A live one
        that is forgotten is recreated by its next read. Returns how many."""
        ...

    async def ack_ledger(self, entry_ids: Sequence[str]) -> None: ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` if the store cannot be reached."""
        ...

    async def close(self) -> None: ...
