"""The limit engine on both back ends, memory and Redis: scopes, concurrency,
quotas and budgets through ``pipeline.admit`` and back-end settlement."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio
from redis.crc import key_slot

from llmgw.errors import BudgetExceeded, QuotaExceeded, RateLimited
from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import (
    PERIOD_KEY_GRACE_SECONDS,
    Backend,
    Bucket,
    Charge,
    Commit,
    ConcurrencyLimit,
    Lease,
    PeriodLimit,
    Reserve,
)
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.periods import Calendar
from llmgw.limits.redis import (
    Client,
    RedisBackend,
    concurrency_key,
    period_keys,
)
from llmgw.limits.spec import LimitSpec, Price, Scope
from llmgw.pipeline.admit import Reservation, admit, settle_reservation
from llmgw.pipeline.authenticate import Principal

from .conftest import REDIS_URL, BackendFactory

# One micro-dollar per token each way, so costs read as token counts.
PRICE = Price(input=1, output=1)


def principal(*scopes: Scope) -> Principal:
    return Principal(
        key_name="ci",
        tenant="acme",
        models=None,
        max_input_tokens=None,
        max_output_tokens=None,
        scopes=scopes,
    )


def scope(kind: str, scope_id: str, **limits: object) -> Scope:
    return Scope(
        kind=kind,  # type: ignore[arg-type]
        id=scope_id,
        tenant="acme",
        limits=LimitSpec(**limits),  # type: ignore[arg-type]
    )


def tenant_limit(kind: str, name: str = "acme") -> str:
    """Return the name admission gives a limit of tenant ``name``."""
    return f"{kind}:tenant:{name}"


def make_record(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts=1_700_000_000.0,
        route="/v1/chat/completions",
        key_name="ci",
        tenant="acme",
        model="gpt-4o",
        provider="mock",
        upstream_model="gpt-4o",
    )


class Inspector:
    """Read limit state straight from the store of any back end.

    For Redis it reads through the back end's own client for ledger reads,
    which also reaches the right node of a Redis Cluster.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def _redis(self) -> tuple[Client, str]:
        assert isinstance(self.backend, RedisBackend)
        return self.backend._client, self.backend.prefix

    async def leases(self, limit: ConcurrencyLimit) -> int:
        """Return the leases held, expired ones not yet removed included."""
        if isinstance(self.backend, MemoryBackend):
            return self.backend.leases(limit.key)
        client, prefix = self._redis()
        return int(await client.zcard(concurrency_key(prefix, limit)))

    async def period(self, limit: PeriodLimit) -> tuple[int, int]:
        """Return (used, reserved) of a period limit, or (0, 0) when absent."""
        if isinstance(self.backend, MemoryBackend):
            return self.backend.period_state(limit.key) or (0, 0)
        client, prefix = self._redis()
        counter, _ = period_keys(prefix, limit)
        used, reserved = await client.hmget(counter, ["used", "reserved"])
        return int(used or 0), int(reserved or 0)

    async def close(self) -> None:
        """Nothing to close: the client belongs to the back end."""


@pytest.fixture
async def inspector(backend: Backend) -> AsyncIterator[Inspector]:
    inspector = Inspector(backend)
    yield inspector
    await inspector.close()


def period_limit(
    calendar: Calendar, key_kind: str, period: str, unit: str = "tokens"
) -> PeriodLimit:
    """Return the current period limit that admission builds for tenant acme.

    The key, tag and end are those of admission, and the limit is 0, because
    reading and committing do not use it.
    """
    window = calendar.window(period)  # type: ignore[arg-type]
    return PeriodLimit(
        f"{key_kind}:tenant:acme:{period}:{window.label}",
        unit,  # type: ignore[arg-type]
        0,
        window.ends_at,
        tag="t:acme",
    )


async def settle(
    backend: Backend,
    reservation: Reservation,
    *,
    input_tokens: int,
    output_tokens: int,
    cost: int = 0,
    record: UsageRecord | None = None,
) -> None:
    items = settle_reservation(
        reservation,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_micro_usd=cost,
    )
    await backend.settle(items, record, request_id=reservation.request_id)


async def test_all_or_nothing_across_scopes(
    backend: Backend, inspector: Inspector
) -> None:
    calendar = Calendar()
    caller = principal(
        scope("key", "ci", requests_per_minute=100, max_concurrent_requests=5),
        scope("team", "acme/platform", tokens_per_minute=10_000),
        scope("tenant", "acme", token_quotas=(("day", 1000),)),
    )
    quota = period_limit(calendar, "quota", "day")
    first = await admit(backend, caller, 900, 50, calendar=calendar, request_id="r1")

    with pytest.raises(QuotaExceeded):
        await admit(backend, caller, 60, 0, calendar=calendar, request_id="r2")

    # The rejection took from no limit: one request, 950 tokens, one lease.
    probe = await admit(backend, caller, 50, 0, calendar=calendar, request_id="r3")
    assert probe.headers["x-ratelimit-remaining-requests"] == "98"
    # The team's bucket refills 167 tokens per second meanwhile.
    team_tokens = int(probe.headers["x-ratelimit-remaining-tokens"])
    assert 10_000 - 1000 <= team_tokens <= 10_000 - 1000 + 200
    assert await inspector.period(quota) == (0, 1000)
    key_slots = ConcurrencyLimit("concurrency:key:ci", 5, tag="t:acme")
    assert await inspector.leases(key_slots) == 2

    await settle(backend, first, input_tokens=900, output_tokens=10)
    assert await inspector.period(quota) == (910, 50)
    assert await inspector.leases(key_slots) == 1


async def test_concurrency_admits_exactly_limit(
    backend_factory: BackendFactory,
) -> None:
    # Two back ends on one store: for Redis, two clients as two workers.
    backends = [await backend_factory(), await backend_factory()]
    caller = principal(scope("tenant", "acme", max_concurrent_requests=25))

    async def attempt(index: int) -> bool:
        try:
            await admit(backends[index % 2], caller, 0, request_id=f"r{index}")
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(200)))

    assert sum(results) == 25


async def test_quota_admits_exactly_what_fits(backend_factory: BackendFactory) -> None:
    backends = [await backend_factory(), await backend_factory()]
    caller = principal(
        scope("key", "ci", requests_per_minute=1000),
        scope("tenant", "acme", token_quotas=(("month", 1000),)),
    )

    async def attempt(index: int) -> bool:
        try:
            await admit(backends[index % 2], caller, 20, 10, request_id=f"r{index}")
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(200)))

    # 1000 // 30 requests fit. The rejected ones took no request either,
    # else fewer than 800 would remain.
    assert sum(results) == 33
    probe = await admit(backends[0], principal(caller.scopes[0]), 0, request_id="p")
    remaining = int(probe.headers["x-ratelimit-remaining-requests"])
    assert 1000 - 33 - 1 <= remaining < 1000


async def test_in_flight_never_exceeds_limit(backend_factory: BackendFactory) -> None:
    backends = [await backend_factory(), await backend_factory()]
    limit = 4
    caller = principal(scope("tenant", "acme", max_concurrent_requests=limit))
    in_flight = 0
    busiest = 0
    admitted = 0

    async def request(index: int) -> None:
        nonlocal in_flight, busiest, admitted
        backend = backends[index % 2]
        for _ in range(40):
            try:
                reservation = await admit(backend, caller, 0, request_id=f"r{index}")
            except RateLimited:
                await asyncio.sleep(0.001)
                continue
            admitted += 1
            in_flight += 1
            busiest = max(busiest, in_flight)
            await asyncio.sleep(random.uniform(0, 0.003))
            # Leaves the count before the lease goes, so the count is never
            # above the leases Redis holds.
            in_flight -= 1
            await settle(backend, reservation, input_tokens=0, output_tokens=0)
            return

    await asyncio.gather(*(request(i) for i in range(30)))

    assert busiest <= limit
    assert busiest >= 2
    assert admitted >= limit


async def test_slot_released_after_cancel_or_timeout(
    backend: Backend, inspector: Inspector
) -> None:
    calendar = Calendar()
    caller = principal(
        scope("key", "ci", tokens_per_minute=1_000_000),
        scope(
            "tenant",
            "acme",
            max_concurrent_requests=3,
            token_quotas=(("day", 10_000_000),),
        ),
    )
    quota = period_limit(calendar, "quota", "day")
    settlements: list[asyncio.Task[None]] = []
    outcomes = {"cancelled": 0, "timed_out": 0, "finished": 0, "rejected": 0}

    async def handler(index: int) -> None:
        # Mirrors the pipeline: the reservation is stored as soon as admit
        # returns, and settlement runs on every way out.
        reservation: Reservation | None = None
        try:
            reservation = await admit(
                backend, caller, 10, 20, request_id=f"r{index}", calendar=calendar
            )
            await asyncio.sleep(random.uniform(0, 0.002))  # forwarding
        finally:
            if reservation is not None:
                items = settle_reservation(
                    reservation, input_tokens=10, output_tokens=5, cost_micro_usd=0
                )
                settlements.append(
                    asyncio.ensure_future(
                        backend.settle(items, None, request_id=reservation.request_id)
                    )
                )

    for index in range(200):
        mode = index % 3
        task = asyncio.ensure_future(handler(index))
        try:
            if mode == 0:
                # A client abort at any point, during admission included.
                await asyncio.sleep(random.uniform(0, 0.0015))
                task.cancel()
                await task
            elif mode == 1:
                async with asyncio.timeout(random.uniform(0, 0.0015)):
                    await task
            else:
                await task
            outcomes["finished"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        except TimeoutError:
            outcomes["timed_out"] += 1
        except RateLimited:
            outcomes["rejected"] += 1

    await asyncio.gather(*settlements)
    slots = ConcurrencyLimit(tenant_limit("concurrency"), 3, tag="t:acme")
    for _ in range(100):
        # Releases of cancelled admissions run in tasks of their own.
        if await inspector.leases(slots) == 0:
            break
        await asyncio.sleep(0.01)

    assert await inspector.leases(slots) == 0
    used, reserved = await inspector.period(quota)
    assert reserved == 0
    assert used % 15 == 0
    assert outcomes["cancelled"] > 20
    assert outcomes["timed_out"] > 20
    assert outcomes["finished"] > 20


async def test_dead_worker_lease_expires(backend_factory: BackendFactory) -> None:
    dead = await backend_factory()
    alive = await backend_factory()
    caller = principal(scope("tenant", "acme", max_concurrent_requests=1))

    # The dead worker admits and never settles.
    await admit(dead, caller, 0, request_id="dead", lease_seconds=0.3)
    with pytest.raises(RateLimited) as blocked:
        await admit(alive, caller, 0, request_id="r1", lease_seconds=0.3)
    await asyncio.sleep(0.35)
    reservation = await admit(alive, caller, 0, request_id="r2", lease_seconds=0.3)

    assert blocked.value.limit_kind == "concurrency"
    assert reservation.items


async def test_dead_worker_reservation_expires(
    backend_factory: BackendFactory,
) -> None:
    dead = await backend_factory()
    alive = await backend_factory()
    inspector = Inspector(alive)
    calendar = Calendar()
    caller = principal(
        scope(
            "tenant", "acme", token_quotas=(("week", 100),), budgets_usd=(("day", 1),)
        )
    )
    quota = period_limit(calendar, "quota", "week")
    try:
        await admit(
            dead,
            caller,
            90,
            10,
            request_id="dead",
            lease_seconds=0.3,
            calendar=calendar,
        )
        with pytest.raises(QuotaExceeded):
            await admit(alive, caller, 1, 0, request_id="r1", calendar=calendar)
        await asyncio.sleep(0.35)
        freed = await admit(alive, caller, 60, 0, request_id="r2", calendar=calendar)
        state = await inspector.period(quota)
        # The dead worker's request settles late: what it used still counts.
        await dead.settle([Commit(quota, 80)], make_record("dead"), request_id="dead")
        late = await inspector.period(quota)
    finally:
        await inspector.close()

    assert freed.items
    assert state == (0, 60)
    assert late == (80, 60)


def _next_midnight(zone: tzinfo, weekday: int | None = None) -> float:
    """Return the next local midnight (on a Monday when ``weekday`` is 0)."""
    now = datetime.now(zone)
    day = now.date() + timedelta(days=1)
    if weekday is not None:
        while day.weekday() != weekday:
            day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


@pytest.mark.parametrize(
    ("period", "zone", "weekday"),
    [
        pytest.param("day", UTC, None, id="day-utc"),
        pytest.param("week", ZoneInfo("Europe/Berlin"), 0, id="week-berlin"),
    ],
)
async def test_quota_resets_at_calendar_boundary(
    backend: Backend,
    inspector: Inspector,
    period: str,
    zone: tzinfo,
    weekday: int | None,
) -> None:
    # The boundary is in the future, so the Redis keys do not expire at once.
    boundary = _next_midnight(zone, weekday)
    now = [boundary - 1.0]
    calendar = Calendar(zone, clock=lambda: now[0])
    caller = principal(scope("tenant", "acme", token_quotas=((period, 100),)))
    before = period_limit(calendar, "quota", period)

    first = await admit(backend, caller, 100, 0, request_id="r1", calendar=calendar)
    await settle(backend, first, input_tokens=100, output_tokens=0)
    with pytest.raises(QuotaExceeded) as rejected:
        await admit(backend, caller, 1, 0, request_id="r2", calendar=calendar)
    now[0] = boundary + 1.0
    after = await admit(backend, caller, 100, 0, request_id="r3", calendar=calendar)
    next_period = period_limit(calendar, "quota", period)

    assert before.key != next_period.key
    assert await inspector.period(before) == (100, 0)
    assert await inspector.period(next_period) == (0, 100)
    assert after.items
    # The Retry-After counts to the boundary on the back end's real clock.
    assert rejected.value.retry_after == pytest.approx(boundary - time.time(), abs=5)


@pytest.mark.parametrize(
    ("output_used", "bound_per_request"),
    [
        pytest.param(600, 0, id="within-cap"),
        pytest.param(1400, 500, id="beyond-cap"),
    ],
)
async def test_budget_overshoot_within_bound(
    backend_factory: BackendFactory, output_used: int, bound_per_request: int
) -> None:
    backends = [await backend_factory(), await backend_factory()]
    inspector = Inspector(backends[0])
    calendar = Calendar()
    limit_usd = 0.01  # 10 000 micro-dollars
    caller = principal(scope("tenant", "acme", budgets_usd=(("day", limit_usd),)))
    budget = period_limit(calendar, "budget", "day", unit="micro_usd")
    # Each request reserves 100 input + 900 output tokens: 1000 micro-dollars.
    reserved_cost = 1000
    actual_cost = 100 + output_used
    attempts = {"admitted": 0, "rejected": 0}

    async def client(index: int) -> None:
        # Sends requests until 20 in a row are rejected, so demand lasts
        # until the budget is spent.
        backend = backends[index % 2]
        rejected_in_row = 0
        sent = 0
        while rejected_in_row < 20:
            sent += 1
            try:
                reservation = await admit(
                    backend,
                    caller,
                    100,
                    900,
                    price=PRICE,
                    request_id=f"r{index}-{sent}",
                    calendar=calendar,
                )
            except BudgetExceeded:
                attempts["rejected"] += 1
                rejected_in_row += 1
                await asyncio.sleep(0.002)
                continue
            rejected_in_row = 0
            attempts["admitted"] += 1
            assert reservation.cost_micro_usd == reserved_cost
            await asyncio.sleep(random.uniform(0, 0.01))
            await settle(
                backend,
                reservation,
                input_tokens=100,
                output_tokens=output_used,
                cost=actual_cost,
            )

    try:
        await asyncio.gather(*(client(i) for i in range(30)))
        used, reserved = await inspector.period(budget)
    finally:
        await inspector.close()

    # At busiest limit / reserved_cost requests are in flight at once, and each
    # can overshoot by actual - reserved.
    max_in_flight = 10_000 // reserved_cost
    assert reserved == 0
    assert used <= 10_000 + max_in_flight * bound_per_request
    assert used == attempts["admitted"] * actual_cost
    # The budget is spent: not even one more reservation fits.
    assert used > 10_000 - reserved_cost
    assert attempts["rejected"] > 0


async def test_per_model_limits_inside_tenant(backend: Backend) -> None:
    calendar = Calendar()
    gpt_4o = LimitSpec(requests_per_minute=2, budgets_usd=(("day", 0.002),))
    caller = principal(
        scope("key", "ci"),
        scope(
            "tenant",
            "acme",
            requests_per_minute=100,
            models=(("gpt-4o", gpt_4o), ("gpt-4o*", LimitSpec(tokens_per_minute=500))),
        ),
    )

    async def request(model: str, request_id: str) -> Reservation:
        return await admit(
            backend,
            caller,
            10,
            10,
            model=model,
            price=PRICE,
            request_id=request_id,
            calendar=calendar,
        )

    first = await request("gpt-4o", "r1")
    await request("gpt-4o", "r2")
    with pytest.raises(RateLimited) as third:
        await request("gpt-4o", "r3")
    mini = [await request("gpt-4o-mini", f"m{i}") for i in range(5)]
    other = await request("claude-3-haiku", "c1")

    assert "tenant acme, model gpt-4o: 2 requests per minute" in third.value.message
    assert len(first.items) == 4  # tenant requests, model requests, budget, tokens
    assert all(len(reservation.items) == 2 for reservation in mini)
    assert len(other.items) == 1
    # The gpt-4o* token bucket is shared by every matching model: 7 requests
    # took 20 tokens each, and it refills 8.3 tokens per second meanwhile.
    remaining = int(mini[-1].headers["x-ratelimit-remaining-tokens"])
    assert 500 - 7 * 20 <= remaining <= 500 - 7 * 20 + 10


@pytest.mark.redis
async def test_redis_keys_share_tenant_slot(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    calendar = Calendar()
    caller = principal(
        scope("key", "ci", requests_per_minute=10, tokens_per_minute=1000),
        scope("team", "acme/platform", max_concurrent_requests=5),
        scope(
            "tenant",
            "acme",
            token_quotas=(("month", 10_000),),
            budgets_usd=(("week", 1),),
        ),
    )
    try:
        await admit(backend, caller, 10, 10, price=PRICE, calendar=calendar)
    finally:
        await backend.close()
    keys = [key async for key in redis_client.scan_iter(match=f"{redis_prefix}*")]

    month = calendar.window("month").label
    assert f"{redis_prefix}{{t:acme}}:bucket:key:ci:requests" in keys
    assert f"{redis_prefix}{{t:acme}}:concurrency:team:acme/platform" in keys
    assert f"{redis_prefix}{{t:acme}}:quota:tenant:acme:month:{month}" in keys
    assert (
        f"{redis_prefix}{{t:acme}}:quota:tenant:acme:month:{month}:reservations"
    ) in keys
    assert len(keys) == 7
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.redis
async def test_redis_period_key_expires_after_period(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    calendar = Calendar()
    caller = principal(scope("tenant", "acme", token_quotas=(("day", 100),)))
    window = calendar.window("day")
    quota = period_limit(calendar, "quota", "day")
    counter, reservations = period_keys(redis_prefix, quota)
    try:
        await admit(backend, caller, 5, 5, calendar=calendar, request_id="r1")
        counter_expiry = await redis_client.expiretime(counter)
        reservations_expiry = await redis_client.expiretime(reservations)
    finally:
        await backend.close()

    expected = math.ceil(window.ends_at) + PERIOD_KEY_GRACE_SECONDS
    assert counter_expiry == expected
    assert reservations_expiry == expected


@pytest.mark.redis
async def test_redis_lease_key_expiry_only_grows(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    slots = ConcurrencyLimit("concurrency:key:ci", 5)
    key = concurrency_key(redis_prefix, slots)
    try:
        await backend.admit([Lease(slots)], request_id="long", lease_seconds=600)
        await backend.admit([Lease(slots)], request_id="short", lease_seconds=1)
        ttl_ms = await redis_client.pttl(key)
    finally:
        await backend.close()

    # A shorter lease must not shorten the key under a longer one.
    assert ttl_ms > 590_000


@pytest.mark.redis
async def test_redis_settle_loads_missing_script(
    redis_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    backend = RedisBackend.from_url(REDIS_URL, prefix=redis_prefix)
    # A copy of settle.lua with a new SHA, as if Redis had restarted and
    # lost its scripts. SCRIPT FLUSH would disturb other users of the server.
    source = backend._settle_script.script
    assert isinstance(source, str)
    backend._settle_script = backend._client.register_script(
        f"{source}\n-- {uuid.uuid4().hex}"
    )
    slots = ConcurrencyLimit("concurrency:key:ci", 1)
    try:
        await backend.admit([Lease(slots)], request_id="r1")
        await backend.settle([Lease(slots)], make_record("r1"), request_id="r1")
        leases = await redis_client.zcard(concurrency_key(redis_prefix, slots))
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
    finally:
        await backend.close()

    assert leases == 0
    assert [entry.record.request_id for entry in entries] == ["r1"]


async def test_backends_agree_on_levels(backend: Backend) -> None:
    # The same sequence gives the same levels on both back ends.
    bucket = Bucket("key:ci:tokens", "tokens", 100, 0.001, tag="k:ci")
    slots = ConcurrencyLimit("concurrency:key:ci", 2, tag="k:ci")
    quota = PeriodLimit(
        "quota:key:ci:day:x", "tokens", 50, time.time() + 3600, tag="k:ci"
    )

    first = await backend.admit(
        [Charge(bucket, 30), Lease(slots), Reserve(quota, 20)], request_id="a"
    )
    second = await backend.admit(
        [Charge(bucket, 30), Lease(slots), Reserve(quota, 20)], request_id="b"
    )
    third = await backend.admit(
        [Charge(bucket, 30), Lease(slots), Reserve(quota, 10)], request_id="c"
    )
    await backend.settle(
        [Charge(bucket, 10), Lease(slots), Commit(quota, 5)], None, request_id="a"
    )
    fourth = await backend.admit(
        [Charge(bucket, 0), Lease(slots), Reserve(quota, 25)], request_id="d"
    )

    assert first.admitted
    assert second.admitted
    assert not third.admitted
    assert third.shortfall is not None
    assert third.shortfall.limit == slots
    assert third.states[0].remaining == pytest.approx(40, abs=0.01)
    assert fourth.admitted
    assert fourth.states[0].remaining == pytest.approx(50, abs=0.01)
