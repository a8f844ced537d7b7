"""The embedded back end: limits and ledger stream in this process only.

It has the semantics of ``RedisBackend`` for a single process, state for
state: the same bucket arithmetic, lease deadlines in whole milliseconds and
period counters that expire a day after their period. Every check-and-update
runs with no ``await`` inside it, so on one event loop it is as atomic as a
Lua script. Two processes with their own ``MemoryBackend`` do not share
limits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import (
    DEFAULT_LEASE_SECONDS,
    PERIOD_KEY_GRACE_SECONDS,
    Admission,
    AdmitItem,
    Charge,
    Lease,
    LedgerEntry,
    PeriodLimit,
    SettleItem,
)
from llmgw.limits.buckets import (
    Level,
    build_admission,
    is_admitted,
    lease_deadline_ms,
    now_ms,
    refill,
    refund,
    validate_items,
    validate_settle_items,
)


@dataclass
class _Delivery:
    consumer: str
    delivered_at: float  # clock seconds of the last delivery


class MemoryLedger:
    """An in-memory stream with one consumer group, modelled on Redis Streams.

    An entry stays until it is acknowledged. A read entry stays pending at its
    consumer, which gets it again on its next read (a restarted drain loop in
    this process loses nothing), and another consumer takes it over once it
    has been idle for ``claim_idle_seconds``.
    """

    def __init__(self, clock: Callable[[], float], claim_idle_seconds: float) -> None:
        self._clock = clock
        self._claim_idle_seconds = claim_idle_seconds
        self._entries: dict[str, UsageRecord] = {}  # in append order
        self._undelivered: dict[str, None] = {}  # ordered set of entry ids
        self._pending: dict[str, _Delivery] = {}  # in first-delivery order
        self._next_id = 1
        self._appended = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def append(self, record: UsageRecord) -> str:
        entry_id = f"{self._next_id}-0"
        self._next_id += 1
        self._entries[entry_id] = record
        self._undelivered[entry_id] = None
        return entry_id

    async def notify_readers(self) -> None:
        async with self._appended:
            self._appended.notify_all()

    async def read(self, consumer: str, count: int, block_ms: int) -> list[LedgerEntry]:
        """Read up to ``count`` entries, waiting up to ``block_ms`` for new ones.

        Unlike BLOCK 0 in XREADGROUP, which waits forever, ``block_ms`` 0
        returns at once.
        """
        entries = self._own_pending(consumer, count) or self._claim(consumer, count)
        if entries:
            return entries
        if not self._undelivered and block_ms > 0:
            async with self._appended:
                try:
                    async with asyncio.timeout(block_ms / 1000):
                        await self._appended.wait_for(lambda: bool(self._undelivered))
                except TimeoutError:
                    return []
        return self._deliver_new(consumer, count)

    def ack(self, entry_ids: Sequence[str]) -> int:
        acked = 0
        for entry_id in entry_ids:
            if self._pending.pop(entry_id, None) is not None:
                del self._entries[entry_id]
                acked += 1
        return acked

    def _own_pending(self, consumer: str, count: int) -> list[LedgerEntry]:
        now = self._clock()
        entries: list[LedgerEntry] = []
        for entry_id, delivery in self._pending.items():
            if len(entries) >= count:
                break
            if delivery.consumer == consumer:
                delivery.delivered_at = now
                entries.append(LedgerEntry(entry_id, self._entries[entry_id]))
        return entries

    def _claim(self, consumer: str, count: int) -> list[LedgerEntry]:
        now = self._clock()
        entries: list[LedgerEntry] = []
        for entry_id, delivery in self._pending.items():
            if len(entries) >= count:
                break
            if now - delivery.delivered_at >= self._claim_idle_seconds:
                delivery.consumer = consumer
                delivery.delivered_at = now
                entries.append(LedgerEntry(entry_id, self._entries[entry_id]))
        return entries

    def _deliver_new(self, consumer: str, count: int) -> list[LedgerEntry]:
        now = self._clock()
        entries: list[LedgerEntry] = []
        for entry_id in list(self._undelivered)[:count]:
            del self._undelivered[entry_id]
            self._pending[entry_id] = _Delivery(consumer, now)
            entries.append(LedgerEntry(entry_id, self._entries[entry_id]))
        return entries


@dataclass
class _PeriodCounter:
    """A period limit's state, as the hash and sorted set of admit.lua hold it."""

    expire_at: float
    used: int = 0
    # Request id to (reserved amount, deadline in ms).
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)

    def drop_expired(self, now_ms: int) -> None:
        expired = [
            request_id
            for request_id, (_, deadline) in self.reservations.items()
            if deadline <= now_ms
        ]
        for request_id in expired:
            del self.reservations[request_id]

    @property
    def level(self) -> int:
        return self.used + sum(amount for amount, _ in self.reservations.values())


class MemoryBackend:
    """Limits and the ledger stream in this process.

    ``clock`` returns Unix time in seconds, like Redis TIME, because period
    limits end at calendar times; tests inject a fake one. Like Redis time it
    may go backwards, which bucket refills treat as no time passing. It also
    times how long a read ledger entry has been pending.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self._clock = clock
        self._levels: dict[str, Level] = {}
        # Limit key to request id to lease deadline in ms.
        self._leases: dict[str, dict[str, int]] = {}
        self._counters: dict[str, _PeriodCounter] = {}
        self._next_sweep = 0.0
        self.ledger = MemoryLedger(clock, claim_idle_ms / 1000)

    def level(self, bucket_key: str) -> Level | None:
        """Return the stored state of a bucket, or None if it was never written."""
        return self._levels.get(bucket_key)

    def leases(self, limit_key: str) -> int:
        """Return the leases held under a concurrency limit, expired ones too."""
        return len(self._leases.get(limit_key, {}))

    def period_state(self, limit_key: str) -> tuple[int, int] | None:
        """Return (used, reserved) of a period limit, or None if it has none.

        ``reserved`` includes reservations that expired but were not yet
        dropped by an admission.
        """
        counter = self._counters.get(limit_key)
        if counter is None:
            return None
        return counter.used, counter.level - counter.used

    async def admit(
        self,
        items: Sequence[AdmitItem],
        *,
        request_id: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Admission:
        validate_items(items, request_id, lease_seconds)
        now = self._clock()
        current_ms = now_ms(now)
        self._sweep(now)
        levels = [self._level_of(item, now, current_ms) for item in items]
        admitted = is_admitted(items, levels)

        if admitted:
            deadline = lease_deadline_ms(now, lease_seconds)
            for item, level in zip(items, levels, strict=True):
                self._take(item, level, now, request_id, deadline)
        return build_admission(items, levels, admitted, now=now)

    def _level_of(self, item: AdmitItem, now: float, current_ms: int) -> float:
        if isinstance(item, Charge):
            return refill(item.bucket, self._levels.get(item.bucket.key), now)
        if isinstance(item, Lease):
            leases = self._leases.get(item.limit.key, {})
            for request_id in [r for r, d in leases.items() if d <= current_ms]:
                del leases[request_id]
            return float(len(leases))
        counter = self._counter(item.limit, now)
        if counter is None:
            return 0.0
        counter.drop_expired(current_ms)
        return float(counter.level)

    def _take(
        self, item: AdmitItem, level: float, now: float, request_id: str, deadline: int
    ) -> None:
        if isinstance(item, Charge):
            if item.amount != 0:
                self._levels[item.bucket.key] = Level(level - item.amount, now)
        elif isinstance(item, Lease):
            self._leases.setdefault(item.limit.key, {})[request_id] = deadline
        elif item.amount != 0:
            counter = self._counter(item.limit, now, create=True)
            assert counter is not None
            counter.reservations[request_id] = (item.amount, deadline)

    def _counter(
        self, limit: PeriodLimit, now: float, *, create: bool = False
    ) -> _PeriodCounter | None:
        """Return a period limit's counter, dropping it once it has expired."""
        counter = self._counters.get(limit.key)
        if counter is not None and counter.expire_at <= now:
            del self._counters[limit.key]
            counter = None
        if counter is None and create:
            counter = _PeriodCounter(
                expire_at=math.ceil(limit.ends_at) + PERIOD_KEY_GRACE_SECONDS
            )
            self._counters[limit.key] = counter
        return counter

    def _sweep(self, now: float) -> None:
        """Forget expired period counters and empty lease sets once an hour,
        as Redis expires their keys."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 3600
        for key in [k for k, c in self._counters.items() if c.expire_at <= now]:
            del self._counters[key]
        for key in [k for k, leases in self._leases.items() if not leases]:
            del self._leases[key]

    async def settle(
        self,
        items: Sequence[SettleItem],
        record: UsageRecord | None,
        *,
        request_id: str = "",
    ) -> None:
        validate_settle_items(items, request_id)
        now = self._clock()
        for item in items:
            self._settle_item(item, now, request_id)
        if record is not None:
            self.ledger.append(record)
            await self.ledger.notify_readers()

    def _settle_item(self, item: SettleItem, now: float, request_id: str) -> None:
        if isinstance(item, Charge):
            if item.amount == 0:
                return
            bucket = item.bucket
            tokens = refill(bucket, self._levels.get(bucket.key), now)
            self._levels[bucket.key] = Level(refund(bucket, tokens, item.amount), now)
        elif isinstance(item, Lease):
            self._leases.get(item.limit.key, {}).pop(request_id, None)
        else:
            counter = self._counter(item.limit, now, create=item.used != 0)
            if counter is None:
                return
            counter.reservations.pop(request_id, None)
            counter.used += item.used

    async def append_record(self, record: UsageRecord) -> None:
        self.ledger.append(record)
        await self.ledger.notify_readers()

    async def read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        return await self.ledger.read(consumer, count, block_ms)

    async def ack_ledger(self, entry_ids: Sequence[str]) -> None:
        self.ledger.ack(entry_ids)

    async def prune_consumers(self, min_idle_ms: int) -> int:
        # One process, one consumer: there is nothing of others to forget.
        return 0

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
