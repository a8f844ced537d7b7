"""Translated streams behave as relayed OpenAI streams do.

Chunks arrive as the upstream sends them. Idle and total timeouts, a broken
upstream, a client that hangs up and a shutdown all end the stream cleanly
and leave a ledger record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from llmgw.config import Timeouts
from tests.integration.provider_harness import (
    MESSAGES,
    ProviderHarness,
    requires_fixtures,
    running_providers,
)
from tests.integration.provider_mock import DRIP_INTERVAL

pytestmark = requires_fixtures

CHAT = "/v1/chat/completions"
# The providers whose streams the gateway translates or normalizes.
STREAMING_PROVIDERS = ["anthropic", "gemini", "bedrock", "mistral"]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ProviderHarness]:
    async with running_providers(tmp_path) as harness:
        yield harness


def stream_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": True}


async def read_sse(response: Any) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            payload = text[len("data: ") :]
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def errors_in(events: list[dict[str, Any] | str]) -> list[dict[str, Any]]:
    return [e["error"] for e in events if isinstance(e, dict) and "error" in e]


async def wait_for_rows(gw: ProviderHarness) -> list[dict[str, Any]]:
    """Return the ledger rows once the request has settled."""
    for _ in range(50):
        rows = await gw.ledger_rows()
        if rows:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError("no ledger row within 2.5 s")


@pytest.mark.parametrize("provider", STREAMING_PROVIDERS)
async def test_translated_stream_arrives_incrementally(
    gw: ProviderHarness, provider: str
) -> None:
    started = time.perf_counter()
    response = await gw.post(CHAT, stream_body(f"{provider}-drip"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    first_at = None
    async for line in response.content:
        if line.startswith(b"data: ") and first_at is None:
            first_at = time.perf_counter() - started
    total = time.perf_counter() - started
    assert first_at is not None
    # The mock waits DRIP_INTERVAL before each upstream piece, so a gateway
    # that buffered the stream would send its first chunk at the end.
    assert first_at < total - DRIP_INTERVAL / 2


@pytest.mark.parametrize("provider", STREAMING_PROVIDERS)
async def test_upstream_reset_mid_stream_sends_error_event(
    gw: ProviderHarness, provider: str
) -> None:
    events = await read_sse(await gw.post(CHAT, stream_body(f"{provider}-reset")))
    errors = errors_in(events)
    assert len(errors) == 1
    assert errors[0]["code"] == "upstream_unreachable"
    assert "[DONE]" not in events
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_unreachable"
    assert row["estimated"] == 1
    assert row["streamed"] == 1


@pytest.mark.parametrize("provider", STREAMING_PROVIDERS)
async def test_upstream_stall_mid_stream_times_out(
    gw: ProviderHarness, provider: str
) -> None:
    events = await read_sse(await gw.post(CHAT, stream_body(f"{provider}-stall-mid")))
    errors = errors_in(events)
    assert len(errors) == 1
    assert errors[0]["code"] == "upstream_timeout"
    assert "sent nothing for 1 s" in errors[0]["message"]
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_timeout"


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "bedrock"])
async def test_stream_ending_early_is_reported_truncated(
    gw: ProviderHarness, provider: str
) -> None:
    chunks = await gw.client().chat.completions.create(
        model=f"{provider}-cut", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        async for _chunk in chunks:
            pass
    assert "ended before" in caught.value.message

    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_stream_error"
    assert row["estimated"] == 1
    assert row["status"] == 200


async def test_invalid_event_stream_ends_with_error(gw: ProviderHarness) -> None:
    events = await read_sse(await gw.post(CHAT, stream_body("bedrock-corrupt")))
    errors = errors_in(events)
    assert len(errors) == 1
    assert errors[0]["code"] == "upstream_invalid_response"
    assert "CRC32" in errors[0]["message"]
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_stream_error"


async def test_stream_past_total_timeout_ends_with_error(gw: ProviderHarness) -> None:
    provider = gw.gateway.providers["anthropic"]
    timeouts = Timeouts(connect=2, first_byte=1, idle=1, total=0.3)
    provider.config = replace(provider.config, timeouts=timeouts)

    # The drip of 15 events takes about 1.5 s, longer than the total of 0.3 s.
    events = await read_sse(await gw.post(CHAT, stream_body("anthropic-drip")))
    errors = errors_in(events)
    assert len(errors) == 1
    assert errors[0]["code"] == "upstream_timeout"
    assert "within 0.3 s" in errors[0]["message"]
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_timeout"
    assert row["output_tokens"] >= 1


@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
async def test_client_disconnect_cancels_upstream(
    gw: ProviderHarness, provider: str
) -> None:
    response = await gw.post(CHAT, stream_body(f"{provider}-drip"))
    seen = 0
    async for line in response.content:
        if line.startswith(b"data: "):
            seen += 1
        if seen == 3:
            break
    response.close()
    await asyncio.wait_for(gw.mock.stream_cancelled.wait(), timeout=5)

    [row] = await wait_for_rows(gw)
    assert row["client_aborted"] == 1
    assert row["estimated"] == 1
    assert row["output_tokens"] >= 1
    assert row["provider"] == provider


async def test_cut_anthropic_stream_bills_reported_input(gw: ProviderHarness) -> None:
    response = await gw.post(CHAT, stream_body("anthropic-drip"))
    async for line in response.content:
        if b"get_weather" in line:
            break
    response.close()
    [row] = await wait_for_rows(gw)
    # message_start reported 377 input tokens before the client left.
    assert row["input_tokens"] == 377
    assert row["estimated"] == 1


async def test_shutdown_finishes_running_stream(gw: ProviderHarness) -> None:
    response = await gw.post(CHAT, stream_body("bedrock-drip"))
    first = await response.content.readline()
    assert first.startswith(b"data: ")

    # What SIGTERM does in `llmgw serve`: stop listening, wait for in-flight
    # requests, then drain the ledger and close the back end.
    shutdown = asyncio.create_task(gw.server.close())
    events = await read_sse(response)
    await shutdown

    assert events[-1] == "[DONE]"
    [row] = gw.sink_rows()
    assert row["status"] == 200
    assert row["client_aborted"] == 0
    assert (row["input_tokens"], row["output_tokens"]) == (125, 45)
    assert row["estimated"] == 0


async def test_shutdown_grace_end_cuts_stream_with_error(tmp_path: Path) -> None:
    async with running_providers(tmp_path, shutdown_timeout=5) as gw:
        response = await gw.post(CHAT, stream_body("anthropic-stall-mid"))
        first = await response.content.readline()
        assert first.startswith(b"data: ")

        # What `llmgw serve` does on SIGTERM when the grace period ends
        # while the upstream still stalls.
        gw.gateway.stopping = True
        shutdown = asyncio.create_task(gw.server.close())
        await asyncio.sleep(0.2)
        gw.gateway.cut_requests()
        events = await read_sse(response)
        await asyncio.wait_for(shutdown, timeout=3)

        errors = errors_in(events)
        assert errors[-1]["code"] == "stream_cancelled"
        [row] = gw.sink_rows()
        assert row["error_type"] == "server_shutdown"
        assert row["client_aborted"] == 0
        assert row["streamed"] == 1
        assert row["provider"] == "anthropic"


async def test_stream_answered_with_json_is_normalized(gw: ProviderHarness) -> None:
    response = await gw.post(CHAT, stream_body("mistral-ignore-stream"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    [call] = body["choices"][0]["message"]["tool_calls"]
    # The Mistral normalizer adds the type Mistral leaves out.
    assert call["type"] == "function"
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (124, 22)
    assert row["streamed"] == 0
