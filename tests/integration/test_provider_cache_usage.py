"""Prompt cache reads and writes reported by Anthropic and Bedrock reach the
client's usage and the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.provider_harness import (
    MESSAGES,
    ProviderHarness,
    requires_fixtures,
    running_providers,
)
from tests.integration.provider_mock import CACHE_READ, CACHE_WRITTEN

pytestmark = requires_fixtures


# (model, streamed, uncached input tokens, output tokens) of the recordings
# the cache scenarios start from.
CACHE_CASES = [
    pytest.param("anthropic-cache", False, 12, 29, id="anthropic-json"),
    pytest.param("anthropic-cache", True, 377, 65, id="anthropic-stream"),
    pytest.param("bedrock-cache", False, 22, 57, id="bedrock-json"),
]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ProviderHarness]:
    async with running_providers(tmp_path) as harness:
        yield harness


async def usage_of(gw: ProviderHarness, model: str, stream: bool) -> Any:
    client = gw.client()
    if not stream:
        completion = await client.chat.completions.create(
            model=model, messages=MESSAGES
        )
        return completion.usage
    chunks = await client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    return [chunk.usage async for chunk in chunks if chunk.usage is not None][-1]


@pytest.mark.parametrize(("model", "stream", "uncached", "output"), CACHE_CASES)
async def test_cache_tokens_reach_client_and_ledger(
    gw: ProviderHarness, model: str, stream: bool, uncached: int, output: int
) -> None:
    usage = await usage_of(gw, model, stream)

    # prompt_tokens counts every input token once, cached or not.
    prompt_tokens = uncached + CACHE_READ + CACHE_WRITTEN
    assert usage.prompt_tokens == prompt_tokens
    assert usage.completion_tokens == output
    details = usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens == CACHE_READ
    assert details.model_dump()["cache_write_tokens"] == CACHE_WRITTEN

    [row] = await gw.ledger_rows()
    assert row["input_tokens"] == prompt_tokens
    assert row["cached_tokens"] == CACHE_READ
    assert row["output_tokens"] == output
    assert row["estimated"] == 0


async def test_cache_write_tokens_reach_ledger_column(gw: ProviderHarness) -> None:
    await usage_of(gw, "anthropic-cache", stream=False)
    [row] = await gw.ledger_rows()
    assert row["cache_write_tokens"] == CACHE_WRITTEN
