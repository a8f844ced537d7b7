"""The shared back end: token buckets and the ledger stream in Redis.

Key layout, all under the configured prefix (for example ``llmgw:``):

``{prefix}bucket:{bucket.key}``
    A hash per bucket with fields ``tokens`` and ``ts`` (seconds on the Redis
    clock). It expires once the bucket would be full again, because a missing
    bucket starts full.
``{prefix}ledger``
    The usage ledger, a stream of ``UsageRecord.to_fields()`` entries read by
    the consumer group ``llmgw-ledger``.
``{prefix}ledger:dead``
    Entries that could not be parsed into a record, moved out of the way so
    they cannot block the drainer.

``lua/admit.lua`` and ``lua/settle.lua`` run every check-and-update, taking
the time from ``redis.call('TIME')`` so all workers share one clock.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio
import redis.exceptions
import structlog
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import Admission, Bucket, Charge, LedgerEntry
from llmgw.limits.buckets import build_admission, validate_charges

log = structlog.get_logger()

DEFAULT_GROUP = "llmgw-ledger"


def bucket_key(prefix: str, bucket: Bucket) -> str:
    """Return the Redis key of a bucket's hash.

    Every bucket key is built here, so hash tags for Redis Cluster can be added
    in one place.
    """
    # NOTE: admit and settle touch several buckets (key, tenant, model) and
    # settle also the ledger stream, so on Redis Cluster they would need one
    # hash tag for all of them. Only a single Redis server (or Sentinel) works.
    return f"{prefix}bucket:{bucket.key}"


def _load_script(name: str) -> str:
    return (importlib.resources.files("llmgw.limits") / "lua" / name).read_text()


@contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    """Raise ``BackendUnavailable`` for a Redis connection error or timeout."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(
            f"Redis {operation} failed: Redis is unreachable"
        ) from exc


def _stream_fields(fields: dict[str, str]) -> dict[FieldT, EncodableT]:
    return dict(fields.items())


def _bucket_args(charges: Sequence[Charge]) -> list[float]:
    args: list[float] = []
    for charge in charges:
        bucket = charge.bucket
        args += [bucket.capacity, bucket.refill_per_second, charge.amount]
    return args


class RedisBackend:
    """Token buckets and the ledger stream shared by every worker through Redis.

    ``client`` must decode responses to str. ``claim_idle_ms`` is how long an
    entry read by another consumer stays unacknowledged before
    ``read_ledger`` takes it over. A consumer that is alive but slower than
    that is harmless, because both copies reach the sink, which keeps the
    first.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "llmgw:",
        group: str = DEFAULT_GROUP,
        claim_idle_ms: int = 60_000,
        owns_client: bool = False,
    ) -> None:
        connection_kwargs = client.connection_pool.connection_kwargs
        if not connection_kwargs.get("decode_responses"):
            raise ValueError(
                "invalid Redis client for RedisBackend: create it with "
                "decode_responses=True, or use RedisBackend.from_url"
            )
        self._client = client
        self._prefix = prefix
        self._group = group
        self._claim_idle_ms = claim_idle_ms
        self._owns_client = owns_client
        self._stream = f"{prefix}ledger"
        self._dead_stream = f"{prefix}ledger:dead"
        self._admit_script = client.register_script(_load_script("admit.lua"))
        self._settle_script = client.register_script(_load_script("settle.lua"))
        self._group_ready = False
        # XAUTOCLAIM cursor per consumer, so each read scans the next part of
        # the pending list instead of its start again.
        self._claim_cursors: dict[str, str] = {}
        # A blocking read must return before the socket timeout fires.
        socket_timeout = connection_kwargs.get("socket_timeout")
        self._max_block_ms = (
            None if socket_timeout is None else max(0, int(socket_timeout * 1000) - 500)
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "llmgw:",
        group: str = DEFAULT_GROUP,
        claim_idle_ms: int = 60_000,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> RedisBackend:
        """Create a back end with its own connection pool (closed by ``close``).

        ``socket_timeout`` and ``connect_timeout`` are in seconds. Ledger reads
        block for at most ``socket_timeout`` minus half a second.
        """
        client = redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
        return cls(
            client,
            prefix=prefix,
            group=group,
            claim_idle_ms=claim_idle_ms,
            owns_client=True,
        )

    @property
    def ledger_key(self) -> str:
        return self._stream

    async def admit(self, charges: Sequence[Charge]) -> Admission:
        validate_charges(charges)
        if not charges:
            return Admission(admitted=True, states=())

        keys = [bucket_key(self._prefix, charge.bucket) for charge in charges]
        with _translate_errors("admit"):
            reply = await self._admit_script(keys=keys, args=_bucket_args(charges))

        admitted = int(reply[0]) == 1
        tokens = [float(value) for value in reply[1:]]
        return build_admission(charges, tokens, admitted)

    async def settle(self, refunds: Sequence[Charge], record: UsageRecord) -> None:
        keys = [bucket_key(self._prefix, charge.bucket) for charge in refunds]
        keys.append(self._stream)
        args: list[Any] = [len(refunds), *_bucket_args(refunds)]
        for name, value in record.to_fields().items():
            args += [name, value]

        with _translate_errors("settle"):
            await self._settle_script(keys=keys, args=args)

    async def append_record(self, record: UsageRecord) -> None:
        # No MAXLEN, for the reason given in settle.lua.
        with _translate_errors("ledger append"):
            await self._client.xadd(self._stream, _stream_fields(record.to_fields()))

    async def read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        """Read unacknowledged records: own pending, then claimed, then new.

        ``block_ms`` 0 returns at once when nothing is new (Redis itself would
        block forever).
        """
        with _translate_errors("ledger read"):
            await self._ensure_group()
            try:
                return await self._read_ledger(consumer, count, block_ms)
            except redis.exceptions.ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
            # The stream was deleted (for example by FLUSHDB) since the group
            # was created: create both again and retry once.
            log.warning(
                "ledger_group_recreated", stream=self._stream, group=self._group
            )
            self._group_ready = False
            await self._ensure_group()
            return await self._read_ledger(consumer, count, block_ms)

    async def ack_ledger(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge entries and delete them, so the stream does not grow."""
        if not entry_ids:
            return
        with _translate_errors("ledger ack"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, self._group, *entry_ids)
                pipe.xdel(self._stream, *entry_ids)
                await pipe.execute()

    async def prune_consumers(self, min_idle_ms: int) -> int:
        with _translate_errors("ledger consumer prune"):
            await self._ensure_group()
            consumers = await self._client.xinfo_consumers(self._stream, self._group)
            pruned = 0
            for consumer in consumers:
                if consumer["pending"] == 0 and consumer["idle"] >= min_idle_ms:
                    await self._client.xgroup_delconsumer(
                        self._stream, self._group, consumer["name"]
                    )
                    pruned += 1
        return pruned

    async def ping(self) -> None:
        with _translate_errors("ping"):
            await self._client.ping()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0, so records appended before any drainer ran are read.
            await self._client.xgroup_create(
                self._stream, self._group, id="0", mkstream=True
            )
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        self._group_ready = True

    async def _read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        streams: dict[KeyT, StreamIdT] = {self._stream: "0"}
        reply = await self._client.xreadgroup(
            self._group, consumer, streams, count=count
        )
        entries = await self._parse_read_reply(reply)
        if entries:
            return entries

        entries = await self._claim_idle(consumer, count)
        if entries:
            return entries

        block: int | None = block_ms
        if self._max_block_ms is not None:
            block = min(block_ms, self._max_block_ms)
        streams = {self._stream: ">"}
        reply = await self._client.xreadgroup(
            self._group,
            consumer,
            streams,
            count=count,
            block=block or None,
        )
        return await self._parse_read_reply(reply)

    async def _claim_idle(self, consumer: str, count: int) -> list[LedgerEntry]:
        """Take over entries pending too long at other consumers (XAUTOCLAIM)."""
        start = self._claim_cursors.get(consumer, "0-0")
        next_start, claimed, _deleted = await self._client.xautoclaim(
            self._stream,
            self._group,
            consumer,
            min_idle_time=self._claim_idle_ms,
            start_id=start,
            count=count,
        )
        self._claim_cursors[consumer] = next_start
        entries = await self._parse_entries(claimed)
        if entries:
            log.info(
                "ledger_entries_claimed",
                consumer=consumer,
                entry_ids=[entry.entry_id for entry in entries],
            )
        return entries

    async def _parse_read_reply(self, reply: Any) -> list[LedgerEntry]:
        # XREADGROUP replies [[stream, [(id, fields), ...]]] or [] on timeout.
        if not reply:
            return []
        return await self._parse_entries(reply[0][1])

    async def _parse_entries(
        self, raw: list[tuple[str, dict[str, str]]]
    ) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        deleted: list[str] = []
        invalid: list[tuple[str, dict[str, str], Exception]] = []
        for entry_id, fields in raw:
            if not fields:
                # Deleted from the stream while still pending: nothing to deliver.
                deleted.append(entry_id)
                continue
            try:
                entries.append(LedgerEntry(entry_id, UsageRecord.from_fields(fields)))
            except (TypeError, ValueError) as exc:
                invalid.append((entry_id, fields, exc))

        if deleted:
            await self._client.xack(self._stream, self._group, *deleted)
        if invalid:
            await self._move_to_dead_letter(invalid)
        return entries

    async def _move_to_dead_letter(
        self, invalid: list[tuple[str, dict[str, str], Exception]]
    ) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            for entry_id, fields, exc in invalid:
                log.error(
                    "ledger_entry_invalid",
                    entry_id=entry_id,
                    dead_letter_stream=self._dead_stream,
                    error=repr(exc),
                )
                dead = {**fields, "_entry_id": entry_id, "_error": repr(exc)}
                pipe.xadd(self._dead_stream, _stream_fields(dead))
                pipe.xack(self._stream, self._group, entry_id)
                pipe.xdel(self._stream, entry_id)
            await pipe.execute()
