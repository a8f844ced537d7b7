"""The shared back end: limits and the ledger stream in Redis.

Key layout, under the configured prefix (for example ``llmgw:``). ``{tag}``
is a Redis Cluster hash tag: ``{t:<tenant>}`` for every limit of a tenant,
its teams and its keys, or ``{k:<key id>}`` for a key without a tenant, so
every key one admission or settlement touches lives in one slot. Limit
names are built in ``llmgw.pipeline.admit``; ``<scope>`` is for example
``tenant:acme``, ``team:acme/platform`` or ``key:ci``, followed by
``:model:<glob>`` for a per-model limit.

``{prefix}{tag}:bucket:<scope>:requests`` and ``...:tokens``
    A token bucket: a hash with fields ``tokens`` and ``ts`` (seconds on
    the Redis clock). It expires once the bucket would be full again,
    because a missing bucket starts full.
``{prefix}{tag}:concurrency:<scope>``
    The leases of the requests in flight: a sorted set of request ids
    scored by lease deadline (milliseconds on the Redis clock). Expired
    leases are removed before each count, so a dead worker's leases free
    themselves.
``{prefix}{tag}:quota:<scope>:<period>:<label>`` and ``...:budget:...``
    A token quota or a budget in micro-dollars for one calendar period, for
    example ``quota:tenant:acme:month:2026-12`` or
    ``budget:tenant:acme:week:2026-W49``: a hash with ``used``, ``reserved``
    (the sum of live reservations) and one field per request in flight
    holding its reservation. It expires a day after the period ends.
``...:reservations`` beside each quota or budget hash
    The deadlines of those reservations: a sorted set of request ids scored
    in milliseconds. Expired reservations are dropped from ``reserved``
    before each check.
``{prefix}ledger``
    The usage ledger, a stream of ``UsageRecord.to_fields()`` entries read by
    the consumer group ``llmgw-ledger``.
``{prefix}ledger:dead``
    Entries that could not be parsed into a record, moved out of the way so
    they cannot block the drainer.

``lua/admit.lua`` and ``lua/settle.lua`` run every check-and-update, taking
the time from ``redis.call('TIME')`` so all workers share one clock.
Admission is one EVALSHA.

The ledger stream has no hash tag, because it cannot share the slot of every
tenant, so the record is not appended inside ``settle.lua``. Settlement sends
``MULTI``, ``XADD`` of the record, ``EVALSHA settle.lua``, ``EXEC`` in one
pipeline: one round trip, and on a single Redis server (or Sentinel) both
happen or neither does. On Redis Cluster (``cluster=True``) the two live on
different nodes and cannot share a transaction, so both are sent at once and
each may fail alone. A failed XADD raises ``BackendUnavailable`` after the
script has freed the request's leases and reservations, and the caller
stores the record in the sink directly. A script that Redis did not run, as
during a failover, is sent again for up to ``SETTLE_RETRY_SECONDS``. One
that may have run before its connection dropped is not, and its leases and
reservations stay until their deadlines, which errs towards limiting.

On Redis Cluster the whole ledger stream lives in one slot, so one node
takes every request's XADD and every drain read. Each tenant's limits live
on the node of its own slot.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
import structlog
from redis.asyncio.cluster import ClusterNode
from redis.commands.core import AsyncScript
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import (
    DEFAULT_LEASE_SECONDS,
    PERIOD_KEY_GRACE_SECONDS,
    Admission,
    AdmitItem,
    Bucket,
    Charge,
    ConcurrencyLimit,
    Lease,
    LedgerEntry,
    PeriodLimit,
    SettleItem,
)
from llmgw.limits.buckets import (
    build_admission,
    validate_items,
    validate_settle_items,
)
from llmgw.limits.cluster import ClusterPipelinedRedis
from llmgw.limits.resp import NotExecuted, PipelinedRedis, Script

log = structlog.get_logger()

DEFAULT_GROUP = "llmgw-ledger"

# How long a settlement on Redis Cluster is sent again while the cluster
# refuses it (CLUSTERDOWN) or its node cannot be reached, as during a
# failover, and how long it waits between tries. The default
# cluster-node-timeout is 15 s, after which a replica is promoted.
SETTLE_RETRY_SECONDS = 30.0
SETTLE_RETRY_INTERVAL_SECONDS = 0.25

Client = redis.asyncio.Redis | redis.asyncio.RedisCluster


def _tagged(prefix: str, tag: str) -> str:
    return f"{prefix}{{{tag}}}:" if tag else prefix


def bucket_key(prefix: str, bucket: Bucket) -> str:
    """Return the Redis key of a bucket's hash."""
    return f"{_tagged(prefix, bucket.tag)}bucket:{bucket.key}"


def concurrency_key(prefix: str, limit: ConcurrencyLimit) -> str:
    """Return the Redis key of a concurrency limit's lease sorted set."""
    return f"{_tagged(prefix, limit.tag)}{limit.key}"


def period_keys(prefix: str, limit: PeriodLimit) -> tuple[str, str]:
    """Return the Redis keys of a period limit: its hash and its deadlines."""
    counter = f"{_tagged(prefix, limit.tag)}{limit.key}"
    return counter, f"{counter}:reservations"


def _expire_at(limit: PeriodLimit) -> int:
    return math.ceil(limit.ends_at) + PERIOD_KEY_GRACE_SECONDS


def _flatten(fields: dict[str, str]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat += [name, value]
    return flat


def _load_script(name: str) -> str:
    return (importlib.resources.files("llmgw.limits") / "lua" / name).read_text()


# Errors that mean Redis, or the part of a Redis Cluster that serves a key,
# cannot be reached. redis-py raises the last two when no cluster node
# replies or none serves a slot.
UNREACHABLE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterUnreachableError,
    redis.exceptions.SlotNotCoveredError,
)


def control_client(
    url: str,
    *,
    cluster: bool,
    cluster_nodes: Sequence[tuple[str, int]] = (),
    socket_timeout: float,
    connect_timeout: float,
) -> Client:
    """Create a redis-py client that decodes replies to str.

    With ``cluster`` it is a cluster client seeded with the node of ``url``
    and ``cluster_nodes``.
    """
    if not cluster:
        return redis.asyncio.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
    startup_nodes = [ClusterNode(host, port) for host, port in cluster_nodes]
    return redis.asyncio.RedisCluster.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        startup_nodes=startup_nodes or None,
    )


def url_address(url: str) -> tuple[str, int]:
    """Return the host and port a ``redis://`` or ``rediss://`` URL names."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def node_url(url: str, host: str, port: int) -> str:
    """Return ``url`` with another host and port, its scheme and user kept."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{parts.scheme}://{user}{at}{address}/0"


def connection_options(client: Client) -> dict[str, Any]:
    """Return the options each of the client's connections is made with."""
    if isinstance(client, redis.asyncio.RedisCluster):
        return client.connection_kwargs
    return client.connection_pool.connection_kwargs


@contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    """Raise ``BackendUnavailable`` for a Redis connection error or timeout.

    A Redis Cluster that cannot serve a slot counts as unreachable.
    """
    try:
        yield
    except UNREACHABLE_ERRORS as exc:
        raise BackendUnavailable(
            f"Redis {operation} failed: Redis is unreachable"
        ) from exc
    except redis.exceptions.ResponseError as exc:
        # redis-py's MovedError drops the word MOVED from its message.
        moved = isinstance(exc, redis.exceptions.AskError)
        if not moved and not str(exc).startswith(("MOVED", "ASK")):
            raise
        raise BackendUnavailable(
            f"Redis {operation} failed: Redis is a Redis Cluster node "
            "(it answered MOVED); set redis.cluster: true"
        ) from exc


def _stream_fields(fields: dict[str, str]) -> dict[FieldT, EncodableT]:
    return dict(fields.items())


def admit_arguments(
    prefix: str, items: Sequence[AdmitItem], request_id: str, lease_seconds: float
) -> tuple[list[str], list[EncodableT]]:
    """Return the KEYS and ARGV of ``admit.lua`` for the items."""
    keys: list[str] = []
    args: list[EncodableT] = [request_id, math.ceil(lease_seconds * 1000)]
    for item in items:
        if isinstance(item, Charge):
            bucket = item.bucket
            keys.append(bucket_key(prefix, bucket))
            args += ["b", bucket.capacity, bucket.refill_per_second, item.amount]
        elif isinstance(item, Lease):
            keys.append(concurrency_key(prefix, item.limit))
            args += ["c", item.limit.limit]
        else:
            keys += period_keys(prefix, item.limit)
            args += ["q", item.limit.limit, item.amount, _expire_at(item.limit)]
    return keys, args


def settle_arguments(
    prefix: str, items: Sequence[SettleItem], request_id: str
) -> tuple[list[str], list[EncodableT]]:
    """Return the KEYS and ARGV of ``settle.lua`` for the items."""
    keys: list[str] = []
    args: list[EncodableT] = [request_id]
    for item in items:
        if isinstance(item, Charge):
            bucket = item.bucket
            keys.append(bucket_key(prefix, bucket))
            args += ["b", bucket.capacity, bucket.refill_per_second, item.amount]
        elif isinstance(item, Lease):
            keys.append(concurrency_key(prefix, item.limit))
            args.append("c")
        else:
            keys += period_keys(prefix, item.limit)
            args += ["q", item.used, _expire_at(item.limit)]
    return keys, args


class RedisBackend:
    """Limits and the ledger stream shared by every worker through Redis.

    ``client`` must decode responses to str. ``claim_idle_ms`` is how long an
    entry read by another consumer stays unacknowledged before
    ``read_ledger`` takes it over. A consumer that is alive but slower than
    that is harmless, because both copies reach the sink, which keeps the
    first.

    All commands of the request path go through ``_run_script``,
    ``_append_and_run_script`` and ``_append``.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "llmgw:",
        group: str = DEFAULT_GROUP,
        claim_idle_ms: int = 60_000,
        owns_client: bool = False,
        hot_path: PipelinedRedis | ClusterPipelinedRedis | None = None,
    ) -> None:
        connection_kwargs = connection_options(client)
        if not connection_kwargs.get("decode_responses"):
            raise ValueError(
                "invalid Redis client for RedisBackend: create it with "
                "decode_responses=True, or use RedisBackend.from_url"
            )
        self._client = client
        self._cluster = isinstance(client, redis.asyncio.RedisCluster)
        # redis-py 8.2 can send a two-word command such as XGROUP CREATE
        # without its key ("No way to dispatch this command") when it runs
        # while another task's first command reads the cluster's commands,
        # so the first use of a cluster client initializes it alone.
        self._initialized = not self._cluster
        self._initializing = asyncio.Lock()
        if self._cluster and isinstance(hot_path, PipelinedRedis):
            raise ValueError(
                "invalid hot path for Redis Cluster: use ClusterPipelinedRedis"
            )
        self._prefix = prefix
        self._group = group
        self._claim_idle_ms = claim_idle_ms
        self._owns_client = owns_client
        self._stream = f"{prefix}ledger"
        self._dead_stream = f"{prefix}ledger:dead"
        # The request path's commands go through the pipelined client when
        # there is one; ledger reads and acknowledgements stay on ``client``.
        self._hot_path = hot_path
        scripts: Client | PipelinedRedis | ClusterPipelinedRedis = hot_path or client
        self._admit_script = scripts.register_script(_load_script("admit.lua"))
        self._settle_script = scripts.register_script(_load_script("settle.lua"))
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
        cluster: bool = False,
        cluster_nodes: Sequence[tuple[str, int]] = (),
    ) -> RedisBackend:
        """Create a back end with its own connection pool (closed by ``close``).

        ``socket_timeout`` and ``connect_timeout`` are in seconds. Ledger reads
        block for at most ``socket_timeout`` minus half a second. With
        ``cluster``, ``url`` names one node of a Redis Cluster, from which the
        clients learn the others, and ``cluster_nodes`` (host, port) pairs are
        tried after it.
        """
        client = control_client(
            url,
            cluster=cluster,
            cluster_nodes=cluster_nodes,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
        )
        hot_path: PipelinedRedis | ClusterPipelinedRedis
        if cluster:
            hot_path = ClusterPipelinedRedis.from_url(
                url,
                cluster_nodes,
                connect_timeout=connect_timeout,
                command_timeout=socket_timeout,
            )
        else:
            hot_path = PipelinedRedis.from_url(
                url, connect_timeout=connect_timeout, command_timeout=socket_timeout
            )
        return cls(
            client,
            prefix=prefix,
            group=group,
            claim_idle_ms=claim_idle_ms,
            owns_client=True,
            hot_path=hot_path,
        )

    @property
    def ledger_key(self) -> str:
        return self._stream

    @property
    def prefix(self) -> str:
        return self._prefix

    async def admit(
        self,
        items: Sequence[AdmitItem],
        *,
        request_id: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Admission:
        validate_items(items, request_id, lease_seconds)
        if not items:
            return Admission(admitted=True, states=())

        keys, args = admit_arguments(self._prefix, items, request_id, lease_seconds)
        with _translate_errors("admit"):
            reply = await self._run_script(self._admit_script, keys, args)

        admitted = int(reply[0]) == 1
        now = float(reply[1])
        levels = [float(value) for value in reply[2:]]
        return build_admission(items, levels, admitted, now=now)

    async def settle(
        self,
        items: Sequence[SettleItem],
        record: UsageRecord | None,
        *,
        request_id: str = "",
    ) -> None:
        validate_settle_items(items, request_id)
        keys, args = settle_arguments(self._prefix, items, request_id)
        with _translate_errors("settle"):
            if record is None:
                if items:
                    await self._run_script(self._settle_script, keys, args)
            elif not items:
                await self._append(record.to_fields())
            elif self._cluster:
                # No transaction spans two nodes, so both go out at once. The
                # script runs even when the append fails, so the request's
                # leases and reservations are freed while the caller stores
                # the record elsewhere.
                results = await asyncio.gather(
                    self._append(record.to_fields()),
                    self._settle_patiently(keys, args),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            else:
                await self._append_and_run_script(
                    record.to_fields(), self._settle_script, keys, args
                )

    async def _settle_patiently(self, keys: list[str], args: list[EncodableT]) -> None:
        """Run the settlement script, again while Redis Cluster cannot run it.

        A failover makes every node refuse commands for a moment, and makes
        the failed node's slots unreachable until a replica takes over. A
        settlement that gave up then would hold its leases and reservations
        until their deadlines, so it is sent again while Redis reports it
        did not run, for up to ``SETTLE_RETRY_SECONDS``. No response waits
        for it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_RETRY_SECONDS
        script = self._settle_script
        while True:
            try:
                if isinstance(script, Script):
                    # Not urgent, as on one server: no response waits for it,
                    # and a connection that Redis closed meanwhile is noticed
                    # before the script is written, so the script is known
                    # not to have run and is sent again.
                    await script(keys=keys, args=args, urgent=False)
                else:
                    await script(keys=keys, args=args)
                return
            except NotExecuted:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(SETTLE_RETRY_INTERVAL_SECONDS)

    async def prepare(self) -> None:
        """Check the mode and read a cluster's layout before the first request.

        Raises ValueError when ``cluster`` is off but Redis is a cluster
        node, whose MOVED replies would fail most requests. Redis being
        unreachable is logged, not raised, so a gateway starts while Redis is
        down.
        """
        if not self._cluster:
            await self._check_not_cluster()
            return
        try:
            with _translate_errors("start-up"):
                await self._initialize()
                if isinstance(self._hot_path, ClusterPipelinedRedis):
                    await self._hot_path.prepare()
        except BackendUnavailable as exc:
            log.warning("redis_cluster_unreachable", error=exc.message)

    async def _check_not_cluster(self) -> None:
        try:
            with _translate_errors("start-up check"):
                info = await self._client.info("cluster")
        except BackendUnavailable as exc:
            log.warning("redis_unreachable", error=exc.message)
            return
        except redis.exceptions.ResponseError:
            return  # INFO is not allowed for this user: nothing to check
        if str(info.get("cluster_enabled", "0")) == "1":
            raise ValueError(
                "Redis at redis.url is a Redis Cluster node: set redis.cluster: true"
            )

    async def append_record(self, record: UsageRecord) -> None:
        with _translate_errors("ledger append"):
            await self._append(record.to_fields())

    async def _run_script(
        self, script: AsyncScript | Script, keys: list[str], args: list[EncodableT]
    ) -> Any:
        """Run a script with EVALSHA, loading it first if Redis lacks it."""
        return await script(keys=keys, args=args)

    async def _append(self, fields: dict[str, str]) -> None:
        # No MAXLEN: trimming could drop records that no drainer has
        # acknowledged. Acknowledged entries are deleted by the drainer.
        if self._hot_path is not None:
            command = ["XADD", self._stream, "*", *_flatten(fields)]
            await self._hot_path.execute(command, urgent=False)
            return
        await self._client.xadd(self._stream, _stream_fields(fields))

    async def _append_and_run_script(
        self,
        fields: dict[str, str],
        script: AsyncScript | Script,
        keys: list[str],
        args: list[EncodableT],
    ) -> None:
        """Append a ledger record and run a script in one MULTI transaction.

        Redis that lacks the script still appends the record inside the
        transaction and fails only the EVALSHA, so the script then runs on
        its own once loaded, and the record is not appended twice.
        """
        if isinstance(self._hot_path, PipelinedRedis):
            # No response waits for a settlement, so it may share a write
            # with others (urgent=False).
            _, _, _, results = await self._hot_path.execute_many(
                [
                    ["MULTI"],
                    ["XADD", self._stream, "*", *_flatten(fields)],
                    ["EVALSHA", script.sha, len(keys), *keys, *args],
                    ["EXEC"],
                ],
                urgent=False,
            )
        else:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(self._stream, _stream_fields(fields))
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
        outcome = results[1]
        if isinstance(outcome, redis.exceptions.ResponseError) and str(
            outcome
        ).startswith("NOSCRIPT"):
            await script(keys=keys, args=args)
        elif isinstance(outcome, Exception):
            raise outcome

    async def read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        """Read unacknowledged records: own pending, then claimed, then new.

        ``block_ms`` 0 returns at once when nothing is new (Redis itself would
        block forever).
        """
        with _translate_errors("ledger read"):
            await self._initialize()
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
            await self._initialize()
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, self._group, *entry_ids)
                pipe.xdel(self._stream, *entry_ids)
                await pipe.execute()

    async def prune_consumers(self, min_idle_ms: int) -> int:
        with _translate_errors("ledger consumer prune"):
            await self._initialize()
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
            if self._hot_path is not None:
                await self._hot_path.aclose()

    async def _initialize(self) -> None:
        if self._initialized:
            return
        async with self._initializing:
            if not self._initialized:
                assert isinstance(self._client, redis.asyncio.RedisCluster)
                await self._client.initialize()
                self._initialized = True

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
        """Copy entries to the dead-letter stream, then remove them.

        The two streams may live on different Redis Cluster nodes, so the
        copy and the removal are separate steps: an entry copied by a worker
        that dies before removing it is copied again by the next reader.
        """
        entry_ids: list[str] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id, fields, exc in invalid:
                log.error(
                    "ledger_entry_invalid",
                    entry_id=entry_id,
                    dead_letter_stream=self._dead_stream,
                    error=repr(exc),
                )
                dead = {**fields, "_entry_id": entry_id, "_error": repr(exc)}
                pipe.xadd(self._dead_stream, _stream_fields(dead))
                entry_ids.append(entry_id)
            await pipe.execute()
        await self.ack_ledger(entry_ids)
