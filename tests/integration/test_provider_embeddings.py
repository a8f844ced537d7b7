"""Embeddings through providers with an embeddings API, and a clear 400 for
the others."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.integration.provider_harness import (
    ProviderHarness,
    requires_fixtures,
    running_providers,
)
from tests.integration.provider_mock import OPENAI_EMBEDDING, fixture_json

pytestmark = requires_fixtures

EMBEDDINGS = "/v1/embeddings"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ProviderHarness]:
    async with running_providers(tmp_path) as harness:
        yield harness


async def test_gemini_embeddings_through_sdk(gw: ProviderHarness) -> None:
    # The SDK requests base64 and decodes it, so this checks that encoding.
    result = await gw.client().embeddings.create(
        model="gemini-text", input=["first", "second"]
    )
    vectors = [item.embedding for item in result.data]
    # The mock returns [index + 0.5 * k for k in range(3)] per input.
    assert vectors == [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0]]
    assert [item.index for item in result.data] == [0, 1]
    assert result.model == "gemini-text"
    assert result.usage.prompt_tokens > 0

    seen = gw.mock.last("gemini")
    assert seen.path == "/gemini/v1beta/models/up-text:batchEmbedContents"
    assert seen.json() == {
        "requests": [
            {"model": "models/up-text", "content": {"parts": [{"text": "first"}]}},
            {"model": "models/up-text", "content": {"parts": [{"text": "second"}]}},
        ]
    }

    [row] = await gw.ledger_rows()
    assert row["route"] == EMBEDDINGS
    assert row["provider"] == "gemini"
    assert row["upstream_model"] == "up-text"
    # Gemini reports no token counts, so the ledger has the local count.
    assert row["estimated"] == 1
    assert row["input_tokens"] == result.usage.prompt_tokens
    assert row["status"] == 200


async def test_gemini_embeddings_float_and_dimensions(gw: ProviderHarness) -> None:
    response = await gw.post(
        EMBEDDINGS,
        {
            "model": "gemini-text",
            "input": "only one",
            "encoding_format": "float",
            "dimensions": 2,
        },
    )
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "list"
    assert body["data"] == [
        {"object": "embedding", "index": 0, "embedding": [0.0, 0.5]}
    ]
    assert gw.mock.last("gemini").json()["requests"][0]["outputDimensionality"] == 2


async def test_gemini_base64_is_little_endian_float32(gw: ProviderHarness) -> None:
    response = await gw.post(
        EMBEDDINGS,
        {"model": "gemini-text", "input": "x", "encoding_format": "base64"},
    )
    encoded = (await response.json())["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(encoded)) == (0.0, 0.5, 1.0)


async def test_gemini_rejects_token_id_input(gw: ProviderHarness) -> None:
    response = await gw.post(EMBEDDINGS, {"model": "gemini-text", "input": [1, 2, 3]})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "input"
    assert "token ids" in error["message"]
    assert [seen for seen in gw.mock.requests if seen.provider == "gemini"] == []


@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
async def test_provider_without_embeddings_is_400(
    gw: ProviderHarness, provider: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.client().embeddings.create(model=f"{provider}-text", input="x")
    assert caught.value.status_code == 400
    message = caught.value.message
    assert f"The model `{provider}-text`'s provider '{provider}'" in message
    assert "does not support embeddings" in message
    assert gw.mock.requests == []

    [row] = await gw.ledger_rows()
    assert row["status"] == 400
    assert row["error_type"] == "invalid_request"
    assert row["provider"] == provider


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("azure-text", "/azure/openai/deployments/up-text/embeddings"),
        ("azure-v1-text", "/azure/openai/v1/embeddings"),
        ("mistral-text", "/mistral/v1/embeddings"),
    ],
)
async def test_openai_format_embeddings_pass_through(
    gw: ProviderHarness, model: str, path: str
) -> None:
    result = await gw.client().embeddings.create(
        model=model, input=["a", "b"], encoding_format="float"
    )
    recorded = fixture_json(OPENAI_EMBEDDING)
    assert [item.embedding for item in result.data] == [
        item["embedding"] for item in recorded["data"]
    ]
    assert gw.mock.requests[-1].path == path
    assert gw.mock.requests[-1].json()["model"] == "up-text"

    [row] = await gw.ledger_rows()
    assert row["input_tokens"] == recorded["usage"]["prompt_tokens"]
    assert row["estimated"] == 0
