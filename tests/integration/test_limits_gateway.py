"""Limits end to end through the gateway on loopback, with the embedded back
end and with Redis: leases released on every way a request ends, and costs
counted against budgets and recorded in the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmgw.limits.base import ConcurrencyLimit
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.redis import RedisBackend, concurrency_key
from llmgw.limits.spec import Price
from llmgw.pipeline.policy import Router
from tests.integration.conftest import STATE_PARAMS, shared_state
from tests.integration.gateway_harness import DEV_KEY, Harness, running_gateway

REDIS_URL = "redis://127.0.0.1:6379/15"
CHAT = "/v1/chat/completions"
TENANT_SLOTS = ConcurrencyLimit("concurrency:tenant:acme", 3, tag="t:acme")
# The "small" model's price in these tests, US dollars per million tokens.
SMALL_PRICE = Price(input=2.5, output=10, cache_read=1.25, reasoning=20)


def chat_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "small"}
    body["messages"] = [{"role": "user", "content": "Hi"}]
    body.update(extra)
    return body


async def _gateway(
    request: pytest.FixtureRequest, tmp_path: Path, tenant_limits: str
) -> AsyncIterator[Harness]:
    prefix = f"llmgw-limits-test-{uuid.uuid4().hex[:8]}:"
    state = shared_state(request)
    extra = f"tenants: [{{name: acme, limits: {tenant_limits}}}]"
    async with running_gateway(
        tmp_path, state.url, prefix, extra, cluster=state.cluster
    ) as harness:
        yield harness
    await state.delete_keys(prefix)


@pytest.fixture(params=STATE_PARAMS)
async def slots_gw(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A gateway whose tenant acme allows 3 requests in flight."""
    async for harness in _gateway(request, tmp_path, "{max_concurrent_requests: 3}"):
        yield harness


@pytest.fixture(params=STATE_PARAMS)
async def budget_gw(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A gateway whose tenant acme has a budget of 160 micro-dollars a day,
    with a price on the model "small"."""
    async for harness in _gateway(request, tmp_path, "{budgets_usd: {day: 0.00016}}"):
        gateway = harness.gateway
        models = tuple(
            replace(model, price=SMALL_PRICE) if model.name == "small" else model
            for model in gateway.config.models
        )
        gateway.config = replace(gateway.config, models=models)
        gateway.router = Router(gateway.config)
        yield harness


async def leases(harness: Harness) -> int:
    backend = harness.gateway.backend
    if isinstance(backend, MemoryBackend):
        return backend.leases(TENANT_SLOTS.key)
    assert isinstance(backend, RedisBackend)
    # The back end's own client reaches the right node of a Redis Cluster.
    client = backend._client
    return int(await client.zcard(concurrency_key(backend.prefix, TENANT_SLOTS)))


async def settled(harness: Harness) -> None:
    """Wait until no request is in flight and every settlement has run."""
    gateway = harness.gateway
    for _ in range(100):
        if not gateway.in_flight:
            break
        await asyncio.sleep(0.05)
    await gateway.wait_background()


async def abort_stream(harness: Harness) -> None:
    response = await harness.post(CHAT, chat_body(stream=True, user="drip"))
    if response.status != 200:
        return
    async for line in response.content:
        if line.startswith(b"data: "):
            break
    response.close()


async def abort_waiting(harness: Harness) -> None:
    # The upstream stalls, and the client gives up before the gateway's
    # first-byte timeout of 1 s.
    with contextlib.suppress(TimeoutError):
        await harness.post(
            CHAT,
            chat_body(user="stall"),
            timeout=aiohttp.ClientTimeout(total=0.05),
        )


async def test_gateway_releases_slots_every_way(slots_gw: Harness) -> None:
    statuses: list[int] = []
    for round_index in range(12):
        await abort_stream(slots_gw)
        await abort_waiting(slots_gw)
        response = await slots_gw.post(CHAT, chat_body())
        statuses.append(response.status)
        response.release()
        if round_index % 4 == 0:
            timed_out = await slots_gw.post(CHAT, chat_body(user="stall"))
            statuses.append(timed_out.status)
            timed_out.release()
        upstream_error = await slots_gw.post(CHAT, chat_body(user="error"))
        statuses.append(upstream_error.status)
        upstream_error.release()
        # Release the slots of the aborted requests before the next round.
        await settled(slots_gw)

    await settled(slots_gw)

    assert await leases(slots_gw) == 0
    assert 504 in statuses
    assert 502 in statuses
    assert statuses.count(200) == 12


async def test_gateway_concurrency_rejects_beyond_limit(slots_gw: Harness) -> None:
    stalled = [
        asyncio.ensure_future(slots_gw.post(CHAT, chat_body(user="stall")))
        for _ in range(3)
    ]
    for _ in range(100):
        if await leases(slots_gw) == 3:
            break
        await asyncio.sleep(0.01)
    rejected = await slots_gw.post(CHAT, chat_body())
    error = (await rejected.json())["error"]
    for response in await asyncio.gather(*stalled):
        response.release()
    await settled(slots_gw)

    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "1"
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "concurrency"
    assert error["message"].startswith(
        "Concurrency limit exceeded for tenant acme: 3 requests in flight."
    )
    assert await leases(slots_gw) == 0


async def test_gateway_budget_counts_cost(budget_gw: Harness) -> None:
    # Each request reserves its input count at 2.5 plus 2 output tokens at
    # 20 (the reasoning price) micro-dollars: between 45 and 97.5.
    body = chat_body(max_tokens=2)
    first = await budget_gw.post(CHAT, body)
    await settled(budget_gw)
    second = await budget_gw.post(CHAT, body)
    await settled(budget_gw)
    rejected = await budget_gw.post(CHAT, body)
    error = (await rejected.json())["error"]
    rows = await budget_gw.ledger_rows()

    # The mock reports 7 input at 2.5, 4 cached at 1.25, 2 output at 10 and
    # 1 reasoning at 20 micro-dollars: 62.5 per request. After two, 125 are
    # spent, and 125 plus the third's reservation passes 160.
    assert first.status == 200
    assert second.status == 200
    assert rejected.status == 429
    assert error["code"] == "budget_exceeded"
    assert error["type"] == "budget_exceeded"
    assert error["message"].startswith(
        "Budget exceeded for tenant acme: 0.00016 USD per day."
    )
    assert int(rejected.headers["Retry-After"]) > 0
    assert [row["cost_usd"] for row in rows] == [0.0000625, 0.0000625, 0.0]
    assert rows[2]["error_type"] == "budget_exceeded"
    assert DEV_KEY not in str(rows)
