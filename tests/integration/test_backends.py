"""Both back ends, memory and Redis, against the same admit, settle and ledger rules."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio
import redis.exceptions

from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import Backend, Bucket, Charge
from llmgw.limits.buckets import Level, refill, refund
from llmgw.limits.redis import RedisBackend, bucket_key

from .conftest import CLAIM_IDLE_MS, REDIS_URL, BackendFactory

# Refills so slowly that no test runs long enough to get a whole token back.
SLOW = 0.001


# Every bucket of these tests shares one Redis Cluster hash tag, as the
# buckets of one request do, so the cluster runs them in one script.
TAG = "k:test"


def slow_bucket(name: str, capacity: float) -> Bucket:
    return Bucket(
        key=name, kind="tokens", capacity=capacity, refill_per_second=SLOW, tag=TAG
    )


def make_record(request_id: str, **changes: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "ts": 1_700_000_000.25,
        "route": "/v1/chat/completions",
        "key_name": "ci",
        "tenant": "acme",
        "model": "smollm2",
        "provider": "local",
        "upstream_model": "smollm2-upstream",
        "input_tokens": 12,
        "output_tokens": 7,
    }
    values.update(changes)
    return UsageRecord(**values)  # type: ignore[arg-type]


async def test_admit_takes_until_empty(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 5)

    first = await backend.admit([Charge(bucket, 3)])
    second = await backend.admit([Charge(bucket, 2)])
    third = await backend.admit([Charge(bucket, 1)])

    assert first.admitted
    assert first.states[0].remaining == pytest.approx(2, abs=0.01)
    assert first.states[0].reset_seconds == pytest.approx(3 / SLOW, rel=0.01)
    assert second.admitted
    assert not third.admitted
    assert third.short_bucket == bucket


async def test_rejected_retry_after_from_refill(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 5)

    await backend.admit([Charge(bucket, 5)])
    rejected = await backend.admit([Charge(bucket, 2)])

    # Short of 2 tokens less what refilled in the meantime.
    assert rejected.retry_after is not None
    assert 2 / SLOW - 10 < rejected.retry_after <= 2 / SLOW
    assert rejected.states[0].remaining == pytest.approx(0, abs=0.01)


async def test_admit_refills_with_time(backend: Backend) -> None:
    bucket = Bucket(
        key="key:fast:requests",
        kind="requests",
        capacity=2,
        refill_per_second=10,
        tag=TAG,
    )

    taken = await backend.admit([Charge(bucket, 2)])
    rejected = await backend.admit([Charge(bucket, 2)])
    await asyncio.sleep(0.25)
    refilled = await backend.admit([Charge(bucket, 2)])

    assert taken.admitted
    assert not rejected.admitted
    assert refilled.admitted


async def test_over_capacity_never_admitted(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 5)

    rejected = await backend.admit([Charge(bucket, 6)])
    after = await backend.admit([Charge(bucket, 5)])

    assert not rejected.admitted
    assert rejected.retry_after is None
    assert after.admitted


async def test_all_or_nothing_across_buckets(backend: Backend) -> None:
    requests = slow_bucket("key:a:requests", 10)
    tokens = slow_bucket("key:a:tokens", 100)

    await backend.admit([Charge(tokens, 95)])
    rejected = await backend.admit([Charge(requests, 1), Charge(tokens, 10)])
    probe = await backend.admit([Charge(requests, 0), Charge(tokens, 0)])

    assert not rejected.admitted
    assert rejected.short_bucket == tokens
    assert probe.admitted
    assert probe.states[0].remaining == pytest.approx(10, abs=0.01)
    assert probe.states[1].remaining == pytest.approx(5, abs=0.01)


async def test_settle_refund_caps_at_capacity(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 10)

    await backend.admit([Charge(bucket, 4)])
    await backend.settle([Charge(bucket, 100)], make_record("r1"))
    probe = await backend.admit([Charge(bucket, 0)])

    assert probe.states[0].remaining == 10


async def test_negative_settle_delays_next_request(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 10)

    await backend.admit([Charge(bucket, 10)])
    await backend.settle([Charge(bucket, -3)], make_record("r1"))
    rejected = await backend.admit([Charge(bucket, 1)])

    assert not rejected.admitted
    assert rejected.states[0].remaining == pytest.approx(-3, abs=0.01)
    assert rejected.retry_after is not None
    assert rejected.retry_after == pytest.approx(4 / SLOW, rel=0.01)


async def test_settle_debt_stops_at_capacity(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 10)

    await backend.admit([Charge(bucket, 10)])
    await backend.settle([Charge(bucket, -5000)], make_record("r1"))
    probe = await backend.admit([Charge(bucket, 0)])

    assert probe.states[0].remaining == pytest.approx(-10, abs=0.01)


async def test_invalid_charges_rejected(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 10)

    with pytest.raises(ValueError, match="must be >= 0"):
        await backend.admit([Charge(bucket, -1)])
    with pytest.raises(ValueError, match="charged twice"):
        await backend.admit([Charge(bucket, 1), Charge(bucket, 1)])


async def test_concurrent_admits_stop_at_capacity(
    backend_factory: BackendFactory,
) -> None:
    # Two back ends on one store: for Redis, two clients as two workers.
    first = await backend_factory()
    second = await backend_factory()
    bucket = slow_bucket("key:busy:requests", 50)

    results = await asyncio.gather(
        *(backend.admit([Charge(bucket, 1)]) for backend in [first, second] * 100)
    )

    assert sum(result.admitted for result in results) == 50


async def test_settle_appends_one_entry(backend: Backend) -> None:
    bucket = slow_bucket("key:a:tokens", 10)
    record = make_record("r1", cached_tokens=3, estimated=True, ttft_ms=12.5)

    await backend.settle([Charge(bucket, 2)], record)
    entries = await backend.read_ledger("drainer", 10, block_ms=0)

    assert [entry.record for entry in entries] == [record]


async def test_settle_with_no_refunds_appends(backend: Backend) -> None:
    await backend.settle([], make_record("r1"))

    entries = await backend.read_ledger("drainer", 10, block_ms=0)

    assert [entry.record.request_id for entry in entries] == ["r1"]


async def test_unacked_entries_read_again(backend: Backend) -> None:
    await backend.append_record(make_record("r1"))
    await backend.append_record(make_record("r2"))

    first = await backend.read_ledger("drainer", 10, block_ms=0)
    await backend.append_record(make_record("r3"))
    again = await backend.read_ledger("drainer", 10, block_ms=0)
    await backend.ack_ledger([entry.entry_id for entry in again])
    new = await backend.read_ledger("drainer", 10, block_ms=0)
    await backend.ack_ledger([entry.entry_id for entry in new])
    empty = await backend.read_ledger("drainer", 10, block_ms=0)

    assert [entry.record.request_id for entry in first] == ["r1", "r2"]
    assert [entry.entry_id for entry in again] == [entry.entry_id for entry in first]
    assert [entry.record.request_id for entry in new] == ["r3"]
    assert empty == []


async def test_read_respects_count(backend: Backend) -> None:
    for i in range(5):
        await backend.append_record(make_record(f"r{i}"))

    batch = await backend.read_ledger("drainer", 2, block_ms=0)

    assert [entry.record.request_id for entry in batch] == ["r0", "r1"]


async def test_blocking_read_wakes_on_append(backend: Backend) -> None:
    reader = asyncio.create_task(backend.read_ledger("drainer", 10, block_ms=2000))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await backend.settle([], make_record("r1"))
    entries = await reader

    assert [entry.record.request_id for entry in entries] == ["r1"]
    assert time.monotonic() - started < 1.0


async def test_blocking_read_times_out_empty(backend: Backend) -> None:
    started = time.monotonic()
    entries = await backend.read_ledger("drainer", 10, block_ms=200)

    assert entries == []
    assert 0.15 < time.monotonic() - started < 1.5


async def test_dead_consumer_entries_claimed(backend: Backend) -> None:
    await backend.append_record(make_record("r1"))
    taken = await backend.read_ledger("dead", 10, block_ms=0)

    too_early = await backend.read_ledger("alive", 10, block_ms=0)
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.1)
    claimed = await backend.read_ledger("alive", 10, block_ms=0)

    assert [entry.record.request_id for entry in taken] == ["r1"]
    assert too_early == []
    assert [entry.entry_id for entry in claimed] == [taken[0].entry_id]


async def test_ping_succeeds(backend: Backend) -> None:
    await backend.ping()


@pytest.mark.redis
async def test_redis_bucket_matches_python_arithmetic(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    bucket = Bucket(
        key="key:exact:tokens", kind="tokens", capacity=7, refill_per_second=0.37
    )
    key = bucket_key(redis_prefix, bucket)
    try:
        await backend.admit([Charge(bucket, 6.5)])
        after_admit = await redis_client.hgetall(key)
        await asyncio.sleep(0.05)
        await backend.settle([Charge(bucket, 0.125)], make_record("r1"))
        after_settle = await redis_client.hgetall(key)
    finally:
        await backend.close()

    level = Level(float(after_admit["tokens"]), float(after_admit["ts"]))
    expected = refund(bucket, refill(bucket, level, float(after_settle["ts"])), 0.125)
    assert float(after_admit["tokens"]) == 0.5
    assert float(after_settle["tokens"]) == expected


@pytest.mark.redis
async def test_redis_bucket_expires_when_full(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    bucket = slow_bucket("key:ttl:tokens", 5)
    try:
        await backend.admit([Charge(bucket, 1)])
        ttl_ms = await redis_client.pttl(bucket_key(redis_prefix, bucket))
    finally:
        await backend.close()

    # Full again after 1 / SLOW seconds, plus one second of margin.
    assert 1 / SLOW * 1000 < ttl_ms <= 1 / SLOW * 1000 + 1000


@pytest.mark.redis
async def test_redis_ack_deletes_entries(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        await backend.append_record(make_record("r1"))
        await backend.append_record(make_record("r2"))
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
        length_before = await redis_client.xlen(backend.ledger_key)
        await backend.ack_ledger([entry.entry_id for entry in entries])
        length_after = await redis_client.xlen(backend.ledger_key)
    finally:
        await backend.close()

    assert length_before == 2
    assert length_after == 0


@pytest.mark.redis
async def test_redis_records_before_group_are_read(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Workers may settle before any drainer has created the consumer group.
    stream = f"{redis_prefix}ledger"
    await redis_client.xadd(stream, make_record("early").to_fields())  # type: ignore[arg-type]
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
    finally:
        await backend.close()

    assert [entry.record.request_id for entry in entries] == ["early"]


@pytest.mark.redis
async def test_redis_invalid_entry_moved_to_dead_letter(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        await redis_client.xadd(backend.ledger_key, {"request_id": "bad", "ts": "noon"})
        await backend.append_record(make_record("good"))
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
        again = await backend.read_ledger("drainer", 10, block_ms=0)
        dead = await redis_client.xrange(f"{redis_prefix}ledger:dead")
    finally:
        await backend.close()

    assert [entry.record.request_id for entry in entries] == ["good"]
    assert [entry.record.request_id for entry in again] == ["good"]
    assert dead is not None
    assert len(dead) == 1
    dead_fields = dead[0][1]
    assert dead_fields is not None
    assert dead_fields["request_id"] == "bad"
    assert str(dead_fields["_error"]).startswith("ValueError")


@pytest.mark.redis
async def test_redis_group_recreated_after_flush(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        assert await backend.read_ledger("drainer", 10, block_ms=0) == []
        await redis_client.delete(backend.ledger_key)
        await backend.append_record(make_record("r1"))
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
    finally:
        await backend.close()

    assert [entry.record.request_id for entry in entries] == ["r1"]


async def test_redis_client_must_decode_responses() -> None:
    # Creating a client does not connect, so this needs no server.
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        with pytest.raises(ValueError, match="decode_responses=True"):
            RedisBackend(client)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_unreachable_raises_backend_unavailable() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused.
    backend = RedisBackend.from_url("redis://127.0.0.1:1/0", connect_timeout=1.0)
    bucket = slow_bucket("key:a:tokens", 5)
    try:
        with pytest.raises(BackendUnavailable) as admit_error:
            await backend.admit([Charge(bucket, 1)])
        with pytest.raises(BackendUnavailable):
            await backend.settle([Charge(bucket, 1)], make_record("r1"))
        with pytest.raises(BackendUnavailable):
            await backend.read_ledger("drainer", 10, block_ms=0)
        with pytest.raises(BackendUnavailable):
            await backend.ping()
    finally:
        await backend.close()

    assert isinstance(admit_error.value.__cause__, redis.exceptions.ConnectionError)


@pytest.mark.redis
async def test_redis_prunes_idle_consumers(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    try:
        await backend.append_record(make_record("r1"))
        busy = await backend.read_ledger("busy-worker", 10, block_ms=0)
        assert len(busy) == 1
        await backend.read_ledger("stopped-worker", 10, block_ms=0)

        assert await backend.prune_consumers(min_idle_ms=60_000) == 0
        # Only the consumer with nothing pending goes; the one holding an
        # unacknowledged entry stays so the entry can still be claimed.
        assert await backend.prune_consumers(min_idle_ms=0) == 1
        consumers = await redis_client.xinfo_consumers(
            backend.ledger_key, "llmgw-ledger"
        )
    finally:
        await backend.close()

    assert [c["name"] for c in consumers] == ["busy-worker"]
