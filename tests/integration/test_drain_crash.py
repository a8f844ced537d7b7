"""A gateway killed while it drains the ledger loses and doubles nothing.

The Redis ledger stream is filled with records, a ``llmgw serve`` process
starts draining them into PostgreSQL and is killed with SIGKILL part way.
A second process takes over the records the first had read but not
acknowledged, and PostgreSQL ends with every record exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from llmgw.ledger.record import UsageRecord
from llmgw.limits.redis import DEFAULT_GROUP, RedisBackend
from tests.integration.conftest import (
    POSTGRES_DSN,
    STATE_PARAMS,
    SharedState,
    shared_state,
)

pytestmark = pytest.mark.redis

RECORDS = 60_000
CLAIM_IDLE_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(index: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"crash-{index:06d}",
        ts=1796400000.0 + index,
        route="/v1/chat/completions",
        key_name="ci",
        tenant="acme",
        model="small",
        provider="mock",
        upstream_model="small",
        input_tokens=index % 100,
        output_tokens=7,
    )


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config)]
    with log.open("wb") as output:
        return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture(params=STATE_PARAMS[1:])
def state(request: pytest.FixtureRequest) -> SharedState:
    """The Redis server or the Redis Cluster."""
    return shared_state(request)


@pytest.fixture
async def names(state: SharedState) -> AsyncIterator[tuple[str, str]]:
    """A Redis key prefix and a PostgreSQL table unique to the test."""
    prefix = f"llmgw-crash-test-{uuid.uuid4().hex[:12]}:"
    table = f"llmgw_crash_{uuid.uuid4().hex[:12]}"
    yield prefix, table
    await state.delete_keys(prefix)
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await connection.close()


async def _row_counts(table: str) -> tuple[int, int]:
    """Return the table's rows and distinct request ids, (0, 0) before it exists."""
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        exists = await connection.fetchval("SELECT to_regclass($1)", table)
        if exists is None:
            return 0, 0
        row = await connection.fetchrow(
            f"SELECT count(*), count(DISTINCT request_id) FROM {table}"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await connection.close()


async def test_killed_drain_loses_and_doubles_nothing(
    tmp_path: Path, state: SharedState, names: tuple[str, str]
) -> None:
    prefix, table = names
    assert state.url is not None
    backend = RedisBackend.from_url(state.url, prefix=prefix, cluster=state.cluster)
    try:
        await asyncio.gather(
            *(backend.append_record(_record(i)) for i in range(RECORDS))
        )
    finally:
        await backend.close()

    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": f"127.0.0.1:{_free_port()}"},
                "redis": {
                    "url": state.url,
                    "key_prefix": prefix,
                    "cluster": state.cluster,
                },
                "ledger": {
                    "sink": POSTGRES_DSN,
                    "table": table,
                    "claim_idle_seconds": CLAIM_IDLE_SECONDS,
                },
            }
        )
    )

    first_log = tmp_path / "first.log"
    first = _spawn(config, first_log)
    try:
        # Kill the first gateway once some records are committed, while
        # batches are still being read and written.
        deadline = time.monotonic() + 60
        rows = 0
        while time.monotonic() < deadline and rows == 0:
            assert first.poll() is None, _tail(first_log)
            rows, _ = await _row_counts(table)
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    rows_at_kill, _ = await _row_counts(table)
    inspector = RedisBackend.from_url(state.url, prefix=prefix, cluster=state.cluster)
    try:
        pending = await inspector._client.xpending(f"{prefix}ledger", DEFAULT_GROUP)
    finally:
        await inspector.close()
    assert 0 < rows_at_kill < RECORDS, "the first gateway was not killed mid-drain"

    second_log = tmp_path / "second.log"
    second = _spawn(config, second_log)
    try:
        deadline = time.monotonic() + 90
        rows = distinct = 0
        while time.monotonic() < deadline and rows < RECORDS:
            assert second.poll() is None, _tail(second_log)
            rows, distinct = await _row_counts(table)
            await asyncio.sleep(0.2)
    finally:
        second.send_signal(signal.SIGTERM)
        exit_code = second.wait(timeout=60)

    assert exit_code == 0, _tail(second_log)
    assert rows == RECORDS
    assert distinct == RECORDS
    # The killed gateway had read records it never acknowledged; the second
    # one took them over after claim_idle_seconds.
    assert pending["pending"] > 0
    assert "ledger_entries_claimed" in second_log.read_text()
