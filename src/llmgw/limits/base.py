"""The back end interface shared by the embedded and the Redis implementation.

A back end holds three kinds of limit and the ledger stream:

- token buckets (``Bucket``), for requests and tokens per minute;
- concurrency limits (``ConcurrencyLimit``), one lease per request in flight;
- period limits (``PeriodLimit``), token quotas and USD budgets that count
  what a calendar period used, plus what requests in flight reserved.

Admission takes from every limit that applies or from none. Settlement
gives back what a request did not use, releases its lease, replaces its
reservations with what it used, and appends its usage record, so a settled
request never lacks its record.

Leases and reservations carry a deadline. A worker that dies before it
settles cannot hold a slot or a quota for longer than that, because expired
entries are dropped on the next admission.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from llmgw.ledger.record import UsageRecord

# A lease or reservation with no settlement after this long is dropped.
# Callers size it from the upstream timeouts (``pipeline.admit``).
DEFAULT_LEASE_SECONDS = 780.0
MAX_LEASE_SECONDS = 86_400.0
# A period counter stays this long after its period ends, so requests
# admitted just before the end can still settle into it.
PERIOD_KEY_GRACE_SECONDS = 86_400
# The Retry-After for a full concurrency limit: a slot frees when any
# request in flight finishes, which no refill rate predicts.
CONCURRENCY_RETRY_SECONDS = 1.0

PeriodUnit = Literal["tokens", "micro_usd"]


@dataclass(frozen=True)
class Bucket:
    """A token bucket: ``capacity`` units, refilled at ``refill_per_second``.

    ``tag`` is the Redis Cluster hash tag that every key of one request
    shares, for example ``t:acme``, or empty for none.
    """

    key: str  # unique name, for example "key:ci-pipeline:requests"
    kind: str  # "requests" or "tokens": which x-ratelimit-* headers it feeds
    capacity: float
    refill_per_second: float
    tag: str = ""

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
    def per_minute(cls, key: str, kind: str, limit: int, tag: str = "") -> Bucket:
        return cls(
            key=key,
            kind=kind,
            capacity=float(limit),
            refill_per_second=limit / 60,
            tag=tag,
        )


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most ``limit`` requests in flight under ``key``."""

    key: str  # for example "concurrency:tenant:acme"
    limit: int
    tag: str = ""


@dataclass(frozen=True)
class PeriodLimit:
    """A token quota or a USD budget for one calendar period.

    ``key`` names the period, for example ``quota:tenant:acme:month:2026-12``,
    so the next period starts from a new, empty counter. ``limit`` is in
    tokens or in micro-dollars (``unit``). ``ends_at`` is the Unix time the
    period ends, the Retry-After of a rejection; the counter expires
    ``PERIOD_KEY_GRACE_SECONDS`` later.
    """

    key: str
    unit: PeriodUnit
    limit: int
    ends_at: float
    tag: str = ""


Limit = Bucket | ConcurrencyLimit | PeriodLimit


@dataclass(frozen=True)
class Charge:
    """Take ``amount`` from a bucket, or at settlement give it back."""

    bucket: Bucket
    amount: float


@dataclass(frozen=True)
class Lease:
    """Take one slot of a concurrency limit, or at settlement release it."""

    limit: ConcurrencyLimit


@dataclass(frozen=True)
class Reserve:
    """Reserve ``amount`` of a period limit for the request until it settles."""

    limit: PeriodLimit
    amount: int


@dataclass(frozen=True)
class Commit:
    """Replace the request's reservation on a period limit with ``used``.

    ``used`` counts even when the reservation has already expired, because
    the request did use it.
    """

    limit: PeriodLimit
    used: int


AdmitItem = Charge | Lease | Reserve
SettleItem = Charge | Lease | Commit


@dataclass(frozen=True)
class BucketState:
    """A bucket after an admission attempt, for the x-ratelimit-* headers."""

    bucket: Bucket
    remaining: float
    # Seconds until the bucket is full again at its refill rate.
    reset_seconds: float


@dataclass(frozen=True)
class Shortfall:
    """The limit that rejected a request.

    ``remaining`` is what the limit had left before the request: tokens in a
    bucket, free slots, or the unreserved part of a period limit.
    ``retry_after`` is None when the request exceeds the whole limit, so
    waiting cannot help.
    """

    limit: Limit
    requested: float
    remaining: float
    retry_after: float | None


@dataclass(frozen=True)
class Admission:
    admitted: bool
    # One state per bucket charge, in the order of the charges.
    states: tuple[BucketState, ...]
    # When rejected: the limit that rejects the request for the longest
    # time, or one that it can never fit.
    shortfall: Shortfall | None = None

    @property
    def retry_after(self) -> float | None:
        return None if self.shortfall is None else self.shortfall.retry_after

    @property
    def short_bucket(self) -> Bucket | None:
        if self.shortfall is None or not isinstance(self.shortfall.limit, Bucket):
            return None
        return self.shortfall.limit


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str  # the stream id, for ack
    record: UsageRecord


class Backend(Protocol):
    async def admit(
        self,
        items: Sequence[AdmitItem],
        *,
        request_id: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Admission:
        """Take every item or none, atomically.

        Charges with amount 0 only read state. Leases and reservations are
        held under ``request_id``, which they require, until settlement or
        until ``lease_seconds`` pass.
        """
        ...

    async def settle(
        self,
        items: Sequence[SettleItem],
        record: UsageRecord | None,
        *,
        request_id: str = "",
    ) -> None:
        """Settle the items and append ``record`` to the ledger stream.

        A charge gives its amount back (negative takes more, letting a
        bucket go below zero), never past capacity. A lease is released and
        a commit replaces the reservation of ``request_id``. ``record`` None
        appends nothing.
        """
        ...

    async def append_record(self, record: UsageRecord) -> None:
        """Append a record with no limit change (rejected requests)."""
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
