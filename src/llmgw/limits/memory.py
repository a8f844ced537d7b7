"""The embedded back end: buckets and ledger stream in this process only.

It has the semantics of ``RedisBackend`` for a single process. Every
check-and-update runs with no ``await`` inside it, so on one event loop it is
as atomic as a Lua script. Two processes with their own ``MemoryBackend`` do
not share limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import Admission, Charge, LedgerEntry
from llmgw.limits.buckets import (
    Level,
    build_admission,
    is_admitted,
    refill,
    refund,
    validate_charges,
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


class MemoryBackend:
    """Token buckets and the ledger stream in this process.

    ``clock`` returns seconds and must never go backwards; tests inject a fake
    one. It also times how long a read ledger entry has been pending.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self._clock = clock
        self._levels: dict[str, Level] = {}
        self.ledger = MemoryLedger(clock, claim_idle_ms / 1000)

    def level(self, bucket_key: str) -> Level | None:
        """Return the stored state of a bucket, or None if it was never written."""
        return self._levels.get(bucket_key)

    async def admit(self, charges: Sequence[Charge]) -> Admission:
        validate_charges(charges)
        now = self._clock()
        tokens = [
            refill(charge.bucket, self._levels.get(charge.bucket.key), now)
            for charge in charges
        ]
        admitted = is_admitted(charges, tokens)

        if admitted:
            for charge, available in zip(charges, tokens, strict=True):
                if charge.amount != 0:
                    self._levels[charge.bucket.key] = Level(
                        available - charge.amount, now
                    )
        return build_admission(charges, tokens, admitted)

    async def settle(self, refunds: Sequence[Charge], record: UsageRecord) -> None:
        now = self._clock()
        for charge in refunds:
            if charge.amount == 0:
                continue
            bucket = charge.bucket
            tokens = refill(bucket, self._levels.get(bucket.key), now)
            self._levels[bucket.key] = Level(refund(bucket, tokens, charge.amount), now)
        self.ledger.append(record)
        await self.ledger.notify_readers()

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
