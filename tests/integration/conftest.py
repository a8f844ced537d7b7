"""Fixtures for the back ends and ledger sinks, against real Redis and PostgreSQL.

Redis tests use database 15 and a key prefix unique to the test; PostgreSQL
tests use a table unique to the test. Both are removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from llmgw.ledger.sink import Sink, open_sink
from llmgw.limits.base import Backend
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.redis import RedisBackend

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


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the test database, to inspect keys under the prefix.

    The keys under the prefix are deleted afterwards.
    """
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()
    await _delete_keys(redis_prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend_factory(
    request: pytest.FixtureRequest, redis_prefix: str
) -> AsyncIterator[BackendFactory]:
    """Create back ends that share one store.

    For Redis each call opens a new client on the same prefix, as another
    worker would. The memory back end exists once per process, so every call
    returns the same instance.
    """
    created: list[Backend] = []
    memory = MemoryBackend(claim_idle_ms=CLAIM_IDLE_MS)

    async def create() -> Backend:
        backend: Backend
        if request.param == "memory":
            backend = memory
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
