"""Upstream errors of every adapter reach OpenAI clients in OpenAI's shape,
with the right status and the retry hints, and without the provider's
credentials. A provider that rejects the gateway's own credentials gives
502 on every route, so that no client takes it for a rejected gateway key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.provider_harness import (
    DEV_KEY,
    MESSAGES,
    ProviderHarness,
    requires_fixtures,
    running_providers,
)
from tests.integration.provider_mock import (
    ANTHROPIC_KEY,
    AWS_SECRET_ACCESS_KEY,
    AZURE_KEY,
    GEMINI_KEY,
    MISTRAL_KEY,
)

pytestmark = requires_fixtures

CHAT = "/v1/chat/completions"
ANTHROPIC_MESSAGES = "/v1/messages"
SECRETS = (ANTHROPIC_KEY, GEMINI_KEY, AWS_SECRET_ACCESS_KEY, MISTRAL_KEY, AZURE_KEY)
# Providers whose mock echoes the gateway's credential in its error message.
ECHOING_PROVIDERS = frozenset(
    {"anthropic", "gemini", "bedrock", "mistral", "azure", "azure-v1"}
)
PROVIDERS = ("anthropic", "gemini", "bedrock", "mistral", "vllm", "ollama", "azure")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ProviderHarness]:
    async with running_providers(tmp_path) as harness:
        yield harness


@dataclass(frozen=True)
class ErrorCase:
    provider: str
    upstream_status: int
    status: int
    error_type: str
    code: str | None
    headers: tuple[tuple[str, str], ...] = ()


ERROR_CASES = [
    ErrorCase("anthropic", 400, 400, "invalid_request_error", None),
    ErrorCase(
        "anthropic",
        429,
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        (("retry-after", "12"), ("x-should-retry", "true")),
    ),
    # 529 is not a standard status: OpenAI clients get 503, which they retry.
    ErrorCase(
        "anthropic",
        529,
        503,
        "overloaded_error",
        None,
        (("x-should-retry", "true"),),
    ),
    ErrorCase("anthropic", 500, 500, "server_error", None),
    ErrorCase("gemini", 400, 400, "invalid_request_error", "invalid_argument"),
    # The body's RetryInfo.retryDelay of 34.4s, rounded up.
    ErrorCase(
        "gemini",
        429,
        429,
        "rate_limit_error",
        "resource_exhausted",
        (("retry-after", "35"),),
    ),
    ErrorCase("gemini", 503, 503, "server_error", "unavailable"),
    ErrorCase("bedrock", 400, 400, "invalid_request_error", "ValidationException"),
    ErrorCase(
        "bedrock",
        429,
        429,
        "rate_limit_error",
        "ThrottlingException",
        (("retry-after", "3"),),
    ),
    ErrorCase("bedrock", 500, 500, "server_error", "InternalServerException"),
    ErrorCase("mistral", 400, 400, "invalid_request_error", "3280"),
    ErrorCase(
        "mistral",
        429,
        429,
        "invalid_request_error",
        "3280",
        (("retry-after", "2"), ("x-ratelimit-remaining-tokens", "0")),
    ),
    ErrorCase("vllm", 400, 400, "BadRequestError", "400"),
    ErrorCase("ollama", 500, 500, "server_error", None),
    ErrorCase(
        "azure",
        429,
        429,
        "requests",
        "429",
        (
            ("retry-after-ms", "1500"),
            ("retry-after", "2"),
            ("x-ratelimit-remaining-requests", "0"),
        ),
    ),
]


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{c.provider}-{c.upstream_status}") for c in ERROR_CASES],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_upstream_error_reaches_client(
    gw: ProviderHarness, case: ErrorCase, stream: bool
) -> None:
    model = f"{case.provider}-error-{case.upstream_status}"
    response = await gw.post(
        CHAT, {"model": model, "messages": MESSAGES, "stream": stream}
    )

    assert response.status == case.status
    assert response.headers["Content-Type"].startswith("application/json")
    text = await response.text()
    for secret in SECRETS:
        assert secret not in text
    body = await response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == case.error_type
    assert error["code"] == case.code
    for name, value in case.headers:
        assert response.headers.get(name) == value

    [row] = await gw.ledger_rows()
    assert row["status"] == case.status
    assert row["error_type"] == f"upstream_http_{case.upstream_status}"
    assert row["provider"] == case.provider
    assert row["upstream_model"] == f"up-error-{case.upstream_status}"
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)


async def test_anthropic_rate_limit_counters_stay_behind(gw: ProviderHarness) -> None:
    response = await gw.post(
        CHAT, {"model": "anthropic-error-429", "messages": MESSAGES}
    )
    assert response.status == 429
    assert "anthropic-ratelimit-requests-remaining" not in response.headers
    assert "request-id" not in response.headers


@pytest.mark.parametrize(
    ("model", "exception", "status"),
    [
        ("anthropic-error-429", openai.RateLimitError, 429),
        ("anthropic-error-529", openai.InternalServerError, 503),
        ("gemini-error-429", openai.RateLimitError, 429),
        ("bedrock-error-400", openai.BadRequestError, 400),
        ("anthropic-error-401", openai.InternalServerError, 502),
        ("azure-error-403", openai.InternalServerError, 502),
    ],
)
async def test_sdk_raises_status_error(
    gw: ProviderHarness, model: str, exception: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(exception) as caught:
        await gw.client().chat.completions.create(model=model, messages=MESSAGES)
    assert caught.value.status_code == status
    body: Any = caught.value.body
    assert isinstance(body, dict)
    assert body["message"]


async def test_overloaded_mid_stream_becomes_error_event(gw: ProviderHarness) -> None:
    chunks = await gw.client().chat.completions.create(
        model="anthropic-overloaded-mid", messages=MESSAGES, stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as caught:
        async for chunk in chunks:
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert "Overloaded" in caught.value.message
    assert text.startswith("I")

    [row] = await gw.ledger_rows()
    assert row["status"] == 200
    assert row["streamed"] == 1
    assert row["error_type"] == "upstream_stream_error"
    assert row["estimated"] == 1
    # The input count of message_start is exact even though the stream failed.
    assert row["input_tokens"] == 377


async def test_untranslatable_request_is_400(gw: ProviderHarness) -> None:
    response = await gw.post(
        CHAT, {"model": "bedrock-text", "messages": MESSAGES, "n": 2}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "n"
    assert "Bedrock Converse returns one choice" in error["message"]
    assert [seen for seen in gw.mock.requests if seen.provider == "bedrock"] == []
    [row] = await gw.ledger_rows()
    assert row["status"] == 400
    assert row["provider"] == "bedrock"


async def test_translated_first_byte_timeout_is_504(gw: ProviderHarness) -> None:
    response = await gw.post(CHAT, {"model": "anthropic-stall", "messages": MESSAGES})
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "upstream_timeout"
    [row] = await gw.ledger_rows()
    assert row["status"] == 504
    assert row["error_type"] == "upstream_timeout"


async def test_unreachable_translated_upstream_is_502(gw: ProviderHarness) -> None:
    provider = gw.gateway.providers["gemini"]
    # Nothing listens on port 9 of the loopback address.
    provider.config = replace(provider.config, base_url="http://127.0.0.1:9/v1beta")
    response = await gw.post(CHAT, {"model": "gemini-text", "messages": MESSAGES})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"


# Rejected provider credentials.


@pytest.mark.parametrize("provider", [*PROVIDERS, "azure-v1"])
@pytest.mark.parametrize("upstream_status", [401, 403])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_rejected_credentials_are_502(
    gw: ProviderHarness, provider: str, upstream_status: int, stream: bool
) -> None:
    model = f"{provider}-error-{upstream_status}"
    response = await gw.post(
        CHAT, {"model": model, "messages": MESSAGES, "stream": stream}
    )

    assert response.status == 502
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["x-should-retry"] == "false"
    text = await response.text()
    for secret in SECRETS:
        assert secret not in text
    error = (await response.json())["error"]
    assert error["type"] == "upstream_error"
    assert error["code"] == "upstream_authentication_failed"
    assert error["param"] is None
    message = error["message"]
    assert f"Provider '{provider}'" in message
    assert f"HTTP {upstream_status}" in message
    # The provider's own message, scrubbed of the key it echoed.
    assert f"with HTTP {upstream_status} for key" in message
    if provider in ECHOING_PROVIDERS:
        assert "<redacted>" in message

    [row] = await gw.ledger_rows()
    assert row["status"] == 502
    assert row["error_type"] == f"upstream_http_{upstream_status}"
    assert row["provider"] == provider
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("upstream_status", [401, 403])
async def test_rejected_credentials_anthropic_shaped(
    gw: ProviderHarness, provider: str, upstream_status: int
) -> None:
    body = {
        "model": f"{provider}-error-{upstream_status}",
        "max_tokens": 10,
        "messages": MESSAGES,
    }
    response = await gw.post(ANTHROPIC_MESSAGES, body)

    assert response.status == 502
    assert response.headers["x-should-retry"] == "false"
    text = await response.text()
    for secret in SECRETS:
        assert secret not in text
    parsed = await response.json()
    assert parsed["type"] == "error"
    assert parsed["error"]["type"] == "api_error"
    assert f"Provider '{provider}'" in parsed["error"]["message"]
    assert f"HTTP {upstream_status}" in parsed["error"]["message"]

    [row] = await gw.ledger_rows()
    assert row["route"] == ANTHROPIC_MESSAGES
    assert row["status"] == 502
    assert row["error_type"] == f"upstream_http_{upstream_status}"


async def test_gemini_invalid_key_400_is_502(gw: ProviderHarness) -> None:
    response = await gw.post(
        CHAT, {"model": "gemini-invalid-key", "messages": MESSAGES}
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_authentication_failed"
    assert "Provider 'gemini'" in error["message"]
    assert "HTTP 400" in error["message"]
    assert GEMINI_KEY not in error["message"]
    assert "<redacted>" in error["message"]
    [row] = await gw.ledger_rows()
    assert row["status"] == 502
    assert row["error_type"] == "upstream_http_400"


async def test_rejected_credentials_sdk_does_not_retry(gw: ProviderHarness) -> None:
    client = openai.AsyncOpenAI(
        base_url=gw.url("/v1"), api_key=DEV_KEY, max_retries=2, timeout=10
    )
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="mistral-error-401", messages=MESSAGES
            )
    finally:
        await client.close()
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_authentication_failed"
    sent = [seen for seen in gw.mock.requests if seen.provider == "mistral"]
    assert len(sent) == 1


async def test_rejected_credentials_anthropic_sdk(gw: ProviderHarness) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=gw.base_url, api_key=DEV_KEY, max_retries=2, timeout=10
    ) as client:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(
                model="bedrock-error-403",
                max_tokens=10,
                messages=[{"role": "user", "content": "Hello"}],
            )
    assert caught.value.status_code == 502
    assert "Provider 'bedrock'" in caught.value.message
    sent = [seen for seen in gw.mock.requests if seen.provider == "bedrock"]
    assert len(sent) == 1
