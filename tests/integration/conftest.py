"""Fixtures for the back ends and ledger sinks, against real Redis and PostgreSQL.

Redis tests use database 15 and a key prefix unique to the test; PostgreSQL
tests use a table unique to the test. Both are removed afterwards. Redis
Cluster tests share one three-node cluster that the session starts on
loopback ports of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from llmgw.ledger.sink import Sink, open_sink
from llmgw.limits.base import Backend
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.redis import RedisBackend
from tests.integration.redis_cluster import RedisClusterNodes, start_cluster

REDIS_URL = os.environ.get("LLMGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get(
    "LLMGW_TEST_POSTGRES_DSN", "postgresql://root@127.0.0.1:5432/test"
)
# Short, so tests of taking over a dead consumer's entries wait little.
CLAIM_IDLE_MS = 200

BackendFactory = Callable[[], Awaitable[Backend]]


@pytest.fixture
def redis_prefix() -> str:
    return f"llmgw-backend-test-{uuid.uuid4().hex[:12]}:"


async def _delete_keys(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def delete_cluster_keys(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` on every node of a Redis Cluster."""
    client = redis.asyncio.RedisCluster.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        for key in keys:
            await client.delete(key)
    finally:
        await client.aclose()


@dataclass(frozen=True)
class SharedState:
    """Where a test's gateways keep their shared state.

    ``name`` is "memory" (in process, ``url`` None), "redis" (the server on
    127.0.0.1:6379, database 15) or "cluster" (the session's Redis Cluster).
    """

    name: str
    url: str | None = None

    @property
    def cluster(self) -> bool:
        return self.name == "cluster"

    async def delete_keys(self, prefix: str) -> None:
        if self.url is None:
            return
        if self.cluster:
            await delete_cluster_keys(self.url, prefix)
        else:
            await _delete_keys(prefix)


STATE_PARAMS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]


def shared_state(request: pytest.FixtureRequest) -> SharedState:
    """Return the shared state that a fixture parametrized by ``STATE_PARAMS`` names."""
    name = str(request.param)
    if name == "redis":
        return SharedState(name, REDIS_URL)
    if name == "cluster":
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        return SharedState(name, cluster.url)
    return SharedState(name)


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterNodes]:
    """A three-node Redis Cluster on loopback, shared by the session."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test database, to inspect keys under the prefix.

    The keys under the prefix are deleted afterwards.
    """
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()
    await _delete_keys(redis_prefix)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def backend_factory(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[BackendFactory]:
    """Create back ends that share one store.

    For Redis and Redis Cluster each call opens a new client on the same
    prefix, as another worker would. The memory back end exists once per
    process, so every call returns the same instance.
    """
    cluster_url = ""
    if request.param == "cluster":
        cluster_url = request.getfixturevalue("redis_cluster").url
    created: list[Backend] = []
    memory = MemoryBackend(claim_idle_ms=CLAIM_IDLE_MS)

    async def create() -> Backend:
        backend: Backend
        if request.param == "memory":
            backend = memory
        elif request.param == "cluster":
            backend = RedisBackend.from_url(
                cluster_url,
                prefix=redis_prefix,
                claim_idle_ms=CLAIM_IDLE_MS,
                cluster=True,
            )
        else:
            backend = RedisBackend.from_url(
                REDIS_URL, prefix=redis_prefix, claim_idle_ms=CLAIM_IDLE_MS
            )
        created.append(backend)
        return backend

    yield create

    for backend in created:
        await backend.close()
    if request.param == "redis":
        await _delete_keys(redis_prefix)
    elif request.param == "cluster":
        await delete_cluster_keys(cluster_url, redis_prefix)


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> Backend:
    return await backend_factory()


async def drop_postgres_table(table: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


@pytest.fixture
def ledger_table() -> str:
    """A table name unique to the test."""
    return f"llmgw_usage_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
async def sink_url(
    request: pytest.FixtureRequest, sqlite_url: str, ledger_table: str
) -> AsyncIterator[str]:
    """The URL of each sink; the PostgreSQL table is dropped afterwards."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    yield POSTGRES_DSN
    await drop_postgres_table(ledger_table)


@pytest.fixture
async def sink(sink_url: str, ledger_table: str) -> AsyncIterator[Sink]:
    sink = open_sink(sink_url, table=ledger_table)
    await sink.open()
    yield sink
    await sink.close()
