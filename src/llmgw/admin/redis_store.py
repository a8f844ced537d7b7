"""The shared admin store: managed records in Redis, for every worker.

Key layout under the configured prefix (``P``, for example ``llmgw:``). The
records of one tenant share the hash tag ``{t:<tenant>}``, so on Redis
Cluster they live in one slot and ``get_org`` and ``find_key`` read them in
one round trip. Keys without a tenant use the tag ``{t:-}``; no tenant can
be named "-".

``P admin:{t:<tenant>}:tenant``
    The tenant's JSON document, for tenants created through the API.
``P admin:{t:<tenant>}:teams``
    A hash of team name to the team's JSON document.
``P admin:{t:<tenant>}:keys``
    A hash of key id to the key's JSON document.
``P admin:tenants``
    The set of tenant names created through the API.
``P admin:key-tenants``
    The set of tenant tags ("-" for none) that hold keys, for listing.
``P admin:key-id:<id>``
    The key's tenant ("-" for none), to find its record by id.
``P admin:secret:<sha256>``
    "<tenant> <key id>" for each secret of a key. A secret in its rotation
    grace expires with it.
``P admin:key-name:<name>``
    The id of the key that claimed the name, so names of active keys stay
    unique. A claim expires after ``NAME_CLAIM_SECONDS`` until the key's
    record is written, and is then made permanent until the key is revoked
    or renamed.
``P admin:version`` and the channel ``P admin:changes``
    A counter raised by every change, and a message with its new value.

A change writes several keys in order with no transaction, because Redis
Cluster runs no transaction across slots: the record first, then the
indexes that point at it, so a reader never finds an index entry whose
record is missing. A name is claimed before the record is written, and a
claim is taken over only when it is permanent and its key is missing,
revoked or renamed, so a create or rename in progress always keeps its
claim.

On Redis Cluster (``cluster=True``) the store uses redis-py's
``RedisCluster``: the change channel is a plain pub/sub channel, which the
cluster delivers to subscribers on every node.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import orjson
import redis.asyncio
import redis.exceptions
import structlog

from llmgw.admin.records import (
    KeyMatch,
    ManagedKey,
    Team,
    Tenant,
    key_from_doc,
    key_to_doc,
    team_from_doc,
    team_to_doc,
    tenant_from_doc,
    tenant_to_doc,
)
from llmgw.admin.store import Conflict, name_taken
from llmgw.errors import BackendUnavailable
from llmgw.limits.redis import (
    UNREACHABLE_ERRORS,
    Client,
    connection_options,
    control_client,
    node_url,
    url_address,
)

log = structlog.get_logger("llmgw.admin.store")

# How often each worker reads the version counter, in case a pub/sub message
# was lost, and how long after the last successful read the cache is still
# trusted. Together they bound the delay before a worker applies a revocation.
POLL_INTERVAL_SECONDS = 0.25
FRESH_SECONDS = 1.0

NO_TENANT = "-"

# How long a name claim lasts before its key's record is written and the
# claim made permanent. A worker that dies in between blocks the name for
# at most this long. It is far above the time a write takes, which the
# client's socket timeout bounds.
NAME_CLAIM_SECONDS = 30.0

# Deletes KEYS[1] only while it contains ARGV[1], so a key gives up its own
# name claim and never one that another key has taken since.
_RELEASE_NAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
# Sets KEYS[1] to ARGV[2] as a claim that expires in ARGV[3] milliseconds,
# if KEYS[1] is absent or is the permanent claim ARGV[1]. A claim that still
# expires belongs to a create or rename in progress and is never taken.
_TAKE_NAME = """
local holder = redis.call('GET', KEYS[1])
if holder == false
    or (holder == ARGV[1] and redis.call('PTTL', KEYS[1]) == -1) then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
# Makes the claim of KEYS[1] by ARGV[1] permanent, or claims it if it is
# absent. Returns 0 when another key has claimed it, because the claim
# expired before the record was written.
_CONFIRM_NAME = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
    redis.call('PERSIST', KEYS[1])
    return 1
end
if holder == false then
    redis.call('SET', KEYS[1], ARGV[1])
    return 1
end
return 0
"""


def _json(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def _text(value: object) -> str | None:
    """Type a reply of a client that decodes responses as ``str | None``."""
    assert value is None or isinstance(value, str)
    return value


@contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except UNREACHABLE_ERRORS as exc:
        raise BackendUnavailable(
            f"Redis admin store {operation} failed: Redis is unreachable"
        ) from exc
    except redis.exceptions.ResponseError as exc:
        # redis-py's MovedError drops the word MOVED from its message.
        moved = isinstance(exc, redis.exceptions.AskError)
        if not moved and not str(exc).startswith(("MOVED", "ASK")):
            raise
        raise BackendUnavailable(
            f"Redis admin store {operation} failed: Redis is a Redis Cluster node "
            "(it answered MOVED); set redis.cluster: true"
        ) from exc


class RedisStore:
    """Managed keys, tenants and teams in Redis, shared by every worker.

    ``client`` must decode responses to str. ``open`` starts a task that
    follows the changes other workers make, through the pub/sub channel and
    by reading the version counter every ``poll_interval`` seconds.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "llmgw:",
        owns_client: bool = False,
        feed_client: Callable[[], Client] | None = None,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        fresh_seconds: float = FRESH_SECONDS,
        name_claim_seconds: float = NAME_CLAIM_SECONDS,
    ) -> None:
        if not connection_options(client).get("decode_responses"):
            raise ValueError(
                "invalid Redis client for RedisStore: create it with "
                "decode_responses=True, or use RedisStore.from_url"
            )
        self._client = client
        self._prefix = f"{prefix}admin:"
        self._owns_client = owns_client
        # Creates the client of the change feed's subscription, anew after
        # each failure; None subscribes through ``client``.
        self._new_feed_client = feed_client
        self._poll_interval = poll_interval
        self._fresh_seconds = fresh_seconds
        self._name_claim_ms = max(1, round(name_claim_seconds * 1000))
        self._listeners: list[Callable[[], None]] = []
        self._version: int | None = None
        self._confirmed_at = -float("inf")
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._release_name = client.register_script(_RELEASE_NAME)
        self._take_name = client.register_script(_TAKE_NAME)
        self._confirm_name = client.register_script(_CONFIRM_NAME)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "llmgw:",
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        cluster: bool = False,
        cluster_nodes: Sequence[tuple[str, int]] = (),
    ) -> RedisStore:
        """Create a store with its own client.

        ``cluster`` and ``cluster_nodes`` are as for ``RedisBackend.from_url``.
        """
        client = control_client(
            url,
            cluster=cluster,
            cluster_nodes=cluster_nodes,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
        )
        feed_client = None
        if cluster:
            # A cluster delivers a channel's messages to subscribers on every
            # node. redis-py's cluster client would keep subscribing at a
            # node that failed, and reads the cluster's whole command table
            # first, so each subscription uses a plain client on the next
            # node in the cluster client's node list.
            assert isinstance(client, redis.asyncio.RedisCluster)
            known = client
            seeds = [url_address(url), *cluster_nodes]
            attempts = itertools.count()

            def feed_client() -> Client:
                nodes = [(node.host, int(node.port)) for node in known.get_nodes()]
                nodes = nodes or seeds
                host, port = nodes[next(attempts) % len(nodes)]
                return control_client(
                    node_url(url, host, port),
                    cluster=False,
                    socket_timeout=socket_timeout,
                    connect_timeout=connect_timeout,
                )

        return cls(
            client,
            prefix=prefix,
            owns_client=True,
            feed_client=feed_client,
            poll_interval=poll_interval,
        )

    # Key names

    def _tag(self, tenant: str | None) -> str:
        return "{t:" + (tenant or NO_TENANT) + "}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}{self._tag(tenant)}:tenant"

    def _teams_key(self, tenant: str) -> str:
        return f"{self._prefix}{self._tag(tenant)}:teams"

    def _keys_key(self, tenant: str | None) -> str:
        return f"{self._prefix}{self._tag(tenant)}:keys"

    def _secret_key(self, digest: str) -> str:
        return f"{self._prefix}secret:{digest}"

    def _key_id_key(self, key_id: str) -> str:
        return f"{self._prefix}key-id:{key_id}"

    def _name_key(self, name: str) -> str:
        return f"{self._prefix}key-name:{name}"

    @property
    def _version_key(self) -> str:
        return f"{self._prefix}version"

    @property
    def _channel(self) -> str:
        return f"{self._prefix}changes"

    # The change feed

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._confirmed_at <= self._fresh_seconds

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    async def open(self) -> None:
        """Read the version and start following changes.

        Does not fail while Redis is down: the store is then not ``fresh`` and
        each operation raises ``BackendUnavailable`` until Redis is back.
        """
        try:
            await self._read_version()
        except BackendUnavailable as exc:
            log.warning("admin_store_unavailable", error=exc.message)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            # The loop also checks _closing, because redis-py 8.2 sometimes
            # loses a cancellation that arrives while get_message waits (1 in
            # 150 open-and-close cycles in a test loop), and the task would
            # then poll on.
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> None:
        with _translate_errors("ping"):
            await self._client.ping()

    async def _read_version(self) -> None:
        with _translate_errors("version read"):
            value = await self._client.get(self._version_key)
        version = int(value or 0)
        self._confirmed_at = time.monotonic()
        if self._version is not None and version != self._version:
            self._notify()
        self._version = version

    async def _watch(self) -> None:
        failures = 0
        while not self._closing:
            feed = self._client
            if self._new_feed_client is not None:
                feed = self._new_feed_client()
            pubsub = feed.pubsub(ignore_subscribe_messages=True)
            try:
                with _translate_errors("subscribe"):
                    await pubsub.subscribe(self._channel)
                while not self._closing:
                    # A message only ends the wait early. The version read
                    # that follows shows whether anything changed.
                    with _translate_errors("change feed read"):
                        await pubsub.get_message(timeout=self._poll_interval)
                    await self._read_version()
                    if failures:
                        log.info("admin_store_feed_recovered", failures=failures)
                        failures = 0
            except BackendUnavailable as exc:
                failures += 1
                if failures == 1:
                    # Logged once per outage; the recovery line counts them.
                    log.warning("admin_store_feed_failed", error=exc.message)
                await asyncio.sleep(self._poll_interval)
            finally:
                with suppress(*UNREACHABLE_ERRORS):
                    await pubsub.aclose()
                if feed is not self._client:
                    with suppress(*UNREACHABLE_ERRORS):
                        await feed.aclose()

    async def _changed(self) -> None:
        """Raise the version, tell other workers, then this worker's listeners.

        The listeners run after the increment, so they also cover a change
        another worker made just before it, whose version this worker then
        skips.
        """
        with _translate_errors("change notification"):
            version = await self._client.incr(self._version_key)
            await self._client.publish(self._channel, str(version))
        self._version = version
        self._notify()

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # Keys

    async def find_key(self, digest: str) -> KeyMatch | None:
        with _translate_errors("key lookup"):
            location = _text(await self._client.get(self._secret_key(digest)))
            if location is None:
                return None
            tag, _, key_id = location.partition(" ")
            tenant = None if tag == NO_TENANT else tag
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hget(self._keys_key(tenant), key_id)
                if tenant is not None:
                    pipe.get(self._tenant_key(tenant))
                    pipe.hgetall(self._teams_key(tenant))
                results = await pipe.execute()
        if results[0] is None:
            return None
        key = key_from_doc(orjson.loads(results[0]))
        if not any(secret.sha256 == digest for secret in key.secrets):
            return None  # an index entry left by an interrupted rotation
        tenant_record = team_record = None
        if tenant is not None:
            if results[1] is not None:
                tenant_record = tenant_from_doc(orjson.loads(results[1]))
            team_doc = results[2].get(key.team) if key.team is not None else None
            if team_doc is not None:
                team_record = team_from_doc(orjson.loads(team_doc))
        return KeyMatch(key=key, tenant=tenant_record, team=team_record)

    async def get_org(
        self, tenant: str, team: str | None
    ) -> tuple[Tenant | None, Team | None]:
        with _translate_errors("tenant lookup"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._tenant_key(tenant))
                if team is not None:
                    pipe.hget(self._teams_key(tenant), team)
                results = await pipe.execute()
        tenant_record = (
            None if results[0] is None else tenant_from_doc(orjson.loads(results[0]))
        )
        team_record = None
        if team is not None and results[1] is not None:
            team_record = team_from_doc(orjson.loads(results[1]))
        return tenant_record, team_record

    async def create_key(self, key: ManagedKey) -> None:
        with _translate_errors("key creation"):
            await self._claim_name(key)
            try:
                await self._write_key(key, removed_secrets=[])
                await self._keep_name(key)
            except BaseException:
                # The caller never sees the secret, so the key is of no use.
                await self._undo_create(key)
                raise
        await self._changed()

    async def save_key(self, old: ManagedKey, new: ManagedKey) -> None:
        with _translate_errors("key update"):
            renamed = new.name != old.name
            claims_name = new.status == "active" and renamed
            if claims_name:
                await self._claim_name(new)
            current = {secret.sha256 for secret in new.secrets}
            removed = [s.sha256 for s in old.secrets if s.sha256 not in current]
            try:
                await self._write_key(new, removed_secrets=removed)
                if claims_name:
                    await self._keep_name(new)
            except BaseException:
                if claims_name:
                    await self._undo_rename(old, new)
                raise
            if old.status == "active" and (renamed or new.status != "active"):
                await self._release_name(keys=[self._name_key(old.name)], args=[old.id])
        await self._changed()

    async def _claim_name(self, key: ManagedKey) -> None:
        """Claim the key's name, or raise ``Conflict`` if it is taken.

        The claim expires after the name claim time unless ``_keep_name``
        makes it permanent, so a worker that dies before the record is
        written blocks the name only that long. A permanent claim is taken
        over when its key is missing, revoked or renamed, as after a crash
        between a record's write and the release of its old name. A claim
        that still expires is never taken over, because its key's record may
        not be written yet.
        """
        name_key = self._name_key(key.name)
        if await self._client.set(name_key, key.id, nx=True, px=self._name_claim_ms):
            return
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(name_key)
            pipe.pttl(name_key)
            holder, ttl_ms = await pipe.execute()
        holder = _text(holder)
        if holder == key.id:
            return
        if holder is not None:
            if ttl_ms != -1:
                raise self._name_claimed(key.name, holder)
            other = await self.get_key(holder)
            if (
                other is not None
                and other.status == "active"
                and other.name == key.name
            ):
                raise name_taken(key.name, holder)
        args: list[str | int] = [holder or "", key.id, self._name_claim_ms]
        if not await self._take_name(keys=[name_key], args=args):
            raise self._name_claimed(key.name, "unknown")

    async def _keep_name(self, key: ManagedKey) -> None:
        """Make the key's claim on its name permanent, once its record is written.

        Raises ``Conflict`` if the claim expired first and another key took it.
        """
        name_key = self._name_key(key.name)
        if not await self._confirm_name(keys=[name_key], args=[key.id]):
            holder = _text(await self._client.get(name_key))
            raise self._name_claimed(key.name, holder or "unknown")

    def _name_claimed(self, name: str, holder: str) -> Conflict:
        seconds = self._name_claim_ms / 1000
        return Conflict(
            f"Another request is creating or renaming a key named {name!r} (id "
            f"{holder}). Choose another name, or retry in {seconds:g} seconds in "
            "case that request failed."
        )

    async def _undo_create(self, key: ManagedKey) -> None:
        """Delete what a failed create wrote: the indexes first, then the
        record, then the name claim. Logs and returns if Redis fails."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for secret in key.secrets:
                    pipe.delete(self._secret_key(secret.sha256))
                pipe.delete(self._key_id_key(key.id))
                pipe.hdel(self._keys_key(key.tenant), key.id)
                await pipe.execute()
            await self._release_name(keys=[self._name_key(key.name)], args=[key.id])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning(
                "admin_key_create_undo_failed",
                key_id=key.id,
                key_name=key.name,
                error=repr(exc),
            )

    async def _undo_rename(self, old: ManagedKey, new: ManagedKey) -> None:
        """Write back the record from before a failed rename and give up the
        new name's claim. Logs and returns if Redis fails."""
        try:
            await self._write_key(old, removed_secrets=[])
            await self._release_name(keys=[self._name_key(new.name)], args=[new.id])
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning(
                "admin_key_rename_undo_failed",
                key_id=old.id,
                key_name=old.name,
                error=repr(exc),
            )

    async def _write_key(self, key: ManagedKey, removed_secrets: list[str]) -> None:
        location = f"{key.tenant or NO_TENANT} {key.id}"
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(self._keys_key(key.tenant), key.id, _json(key_to_doc(key)))
            pipe.set(self._key_id_key(key.id), key.tenant or NO_TENANT)
            pipe.sadd(f"{self._prefix}key-tenants", key.tenant or NO_TENANT)
            for secret in key.secrets:
                if secret.valid_until is None:
                    pipe.set(self._secret_key(secret.sha256), location)
                else:
                    expire_ms = int(secret.valid_until * 1000)
                    pipe.set(self._secret_key(secret.sha256), location, pxat=expire_ms)
            for digest in removed_secrets:
                pipe.delete(self._secret_key(digest))
            await pipe.execute()

    async def get_key(self, key_id: str) -> ManagedKey | None:
        with _translate_errors("key read"):
            tag = _text(await self._client.get(self._key_id_key(key_id)))
            if tag is None:
                return None
            tenant = None if tag == NO_TENANT else tag
            doc = await self._client.hget(self._keys_key(tenant), key_id)
        return None if doc is None else key_from_doc(orjson.loads(doc))

    async def list_keys(self) -> list[ManagedKey]:
        with _translate_errors("key list"):
            tags = [
                str(tag)
                for tag in await self._client.smembers(f"{self._prefix}key-tenants")
            ]
            async with self._client.pipeline(transaction=False) as pipe:
                for tag in sorted(tags):
                    pipe.hvals(self._keys_key(None if tag == NO_TENANT else tag))
                results = await pipe.execute()
        keys = [key_from_doc(orjson.loads(doc)) for docs in results for doc in docs]
        return sorted(keys, key=lambda key: (key.created, key.id))

    # Tenants

    async def create_tenant(self, tenant: Tenant) -> None:
        doc = _json(tenant_to_doc(tenant))
        with _translate_errors("tenant creation"):
            if not await self._client.set(self._tenant_key(tenant.name), doc, nx=True):
                raise Conflict(f"A tenant named {tenant.name!r} exists.")
            await self._client.sadd(f"{self._prefix}tenants", tenant.name)
        await self._changed()

    async def get_tenant(self, name: str) -> Tenant | None:
        with _translate_errors("tenant read"):
            doc = await self._client.get(self._tenant_key(name))
        return None if doc is None else tenant_from_doc(orjson.loads(doc))

    async def list_tenants(self) -> list[Tenant]:
        with _translate_errors("tenant list"):
            members = await self._client.smembers(f"{self._prefix}tenants")
            names = sorted(str(name) for name in members)
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(self._tenant_key(name))
                docs = await pipe.execute()
        return [tenant_from_doc(orjson.loads(doc)) for doc in docs if doc is not None]

    async def save_tenant(self, tenant: Tenant) -> None:
        doc = _json(tenant_to_doc(tenant))
        with _translate_errors("tenant update"):
            await self._client.set(self._tenant_key(tenant.name), doc)
        await self._changed()

    async def delete_tenant(self, name: str) -> None:
        with _translate_errors("tenant deletion"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.srem(f"{self._prefix}tenants", name)
                pipe.delete(self._tenant_key(name), self._teams_key(name))
                await pipe.execute()
        await self._changed()

    # Teams

    async def create_team(self, team: Team) -> None:
        doc = _json(team_to_doc(team))
        with _translate_errors("team creation"):
            if not await self._client.hsetnx(
                self._teams_key(team.tenant), team.name, doc
            ):
                raise Conflict(
                    f"Tenant {team.tenant!r} already has a team named {team.name!r}."
                )
        await self._changed()

    async def get_team(self, tenant: str, name: str) -> Team | None:
        with _translate_errors("team read"):
            doc = await self._client.hget(self._teams_key(tenant), name)
        return None if doc is None else team_from_doc(orjson.loads(doc))

    async def list_teams(self, tenant: str) -> list[Team]:
        with _translate_errors("team list"):
            docs = await self._client.hvals(self._teams_key(tenant))
        teams = [team_from_doc(orjson.loads(doc)) for doc in docs]
        return sorted(teams, key=lambda team: team.name)

    async def save_team(self, team: Team) -> None:
        doc = _json(team_to_doc(team))
        with _translate_errors("team update"):
            await self._client.hset(self._teams_key(team.tenant), team.name, doc)
        await self._changed()

    async def delete_team(self, tenant: str, name: str) -> None:
        with _translate_errors("team deletion"):
            await self._client.hdel(self._teams_key(tenant), name)
        await self._changed()
