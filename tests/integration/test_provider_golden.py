"""Golden replay: the openai SDK against the gateway in front of each
translating provider, with the mock upstream replaying recorded traffic.

Each case names the fixture the mock serves, and the expected text is read
from that fixture here, independently of the gateway's translators. The
expected finish reason, tool calls and token counts are the recorded ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.provider_harness import (
    MESSAGES,
    ProviderHarness,
    requires_fixtures,
    running_providers,
)
from tests.integration.provider_mock import (
    AWS_ACCESS_KEY_ID,
    AWS_SESSION_TOKEN,
    chunk_lines,
    fixture,
    fixture_json,
)

pytestmark = requires_fixtures


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[ProviderHarness]:
    async with running_providers(tmp_path) as harness:
        yield harness


# Expected text, read straight from the fixtures.


def sse_payloads(path: str) -> list[dict[str, Any]]:
    """Return the JSON of every ``data:`` line of a raw SSE fixture."""
    lines = fixture(path).read_bytes().splitlines()
    return [orjson.loads(line[5:]) for line in lines if line.startswith(b"data:")]


def anthropic_body_text(path: str) -> str:
    blocks = fixture_json(path)["content"]
    return "".join(block["text"] for block in blocks if block["type"] == "text")


def anthropic_stream_text(payloads: list[dict[str, Any]]) -> str:
    return "".join(
        payload["delta"]["text"]
        for payload in payloads
        if payload["type"] == "content_block_delta"
        and payload["delta"]["type"] == "text_delta"
    )


def anthropic_sse_text(path: str) -> str:
    return anthropic_stream_text(sse_payloads(path))


def anthropic_chunks_text(path: str) -> str:
    return anthropic_stream_text([orjson.loads(line) for line in chunk_lines(path)])


def gemini_text(payloads: list[dict[str, Any]]) -> str:
    return "".join(
        part.get("text", "")
        for payload in payloads
        for candidate in payload["candidates"]
        for part in candidate["content"]["parts"]
        if not part.get("thought")
    )


def bedrock_body_text(path: str) -> str:
    blocks = fixture_json(path)["output"]["message"]["content"]
    return "".join(block.get("text", "") for block in blocks)


def bedrock_chunks_text(path: str) -> str:
    text = []
    for line in chunk_lines(path):
        delta = orjson.loads(line).get("contentBlockDelta", {}).get("delta", {})
        text.append(delta.get("text", ""))
    return "".join(text)


def bedrock_capture_text(path: str) -> str:
    from llmgw.protocols.eventstream import decode_all

    text = []
    for message in decode_all(fixture(path).read_bytes()):
        if message.event_type == "contentBlockDelta":
            text.append(orjson.loads(message.payload)["delta"].get("text", ""))
    return "".join(text)


def openai_body_text(path: str) -> str:
    return fixture_json(path)["choices"][0]["message"].get("content") or ""


def openai_chunks_text(path: str) -> str:
    text = []
    for line in chunk_lines(path):
        for choice in orjson.loads(line)["choices"]:
            text.append(choice["delta"].get("content") or "")
    return "".join(text)


@dataclass(frozen=True)
class Golden:
    provider: str
    scenario: str
    stream: bool
    text: Callable[[], str]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    cached_tokens: int = 0
    reasoning_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return f"{self.provider}-{self.scenario}"


def golden(case: Golden) -> Any:
    mode = "stream" if case.stream else "json"
    return pytest.param(case, id=f"{case.provider}-{case.scenario}-{mode}")


CASES = [
    # Anthropic
    golden(
        Golden(
            "anthropic",
            "text",
            False,
            lambda: anthropic_body_text("anthropic/vercel-anthropic-text.json"),
            "stop",
            12,
            29,
        )
    ),
    golden(
        Golden(
            "anthropic",
            "tool-no-args",
            False,
            lambda: anthropic_body_text("anthropic/vercel-anthropic-tool-no-args.json"),
            "tool_calls",
            602,
            93,
            tool_calls=(("updateIssueList", {}),),
        )
    ),
    golden(
        Golden(
            "anthropic",
            "tool",
            True,
            lambda: anthropic_sse_text(
                "anthropic/anthropic-messages-stream-text-then-tool-use.sse"
            ),
            "tool_calls",
            377,
            65,
            tool_calls=(("get_weather", {"location": "Paris"}),),
        )
    ),
    golden(
        Golden(
            "anthropic",
            "tool-no-args",
            True,
            lambda: anthropic_chunks_text(
                "anthropic/vercel-anthropic-stream-tool-no-args.chunks.txt"
            ),
            "tool_calls",
            565,
            48,
            tool_calls=(("updateIssueList", {}),),
        )
    ),
    golden(
        Golden(
            "anthropic",
            "thinking",
            True,
            lambda: anthropic_sse_text(
                "anthropic/pydantic-anthropic-messages-stream-thinking-padded.sse"
            ),
            "stop",
            43,
            282,
        )
    ),
    golden(
        Golden(
            "anthropic",
            "text-basic",
            True,
            lambda: anthropic_sse_text(
                "anthropic/anthropic-messages-stream-text-basic.sse"
            ),
            "stop",
            11,
            6,
        )
    ),
    # Gemini
    golden(
        Golden(
            "gemini",
            "text",
            False,
            lambda: gemini_text([fixture_json("gemini/vercel-google-text.json")]),
            "stop",
            9,
            28 + 244,
            reasoning_tokens=244,
        )
    ),
    golden(
        Golden(
            "gemini",
            "tool",
            False,
            lambda: gemini_text([fixture_json("gemini/vercel-google-tool-call.json")]),
            "tool_calls",
            29,
            15 + 893,
            tool_calls=(("weather", {"location": "San Francisco"}),),
            reasoning_tokens=893,
        )
    ),
    golden(
        Golden(
            "gemini",
            "text",
            True,
            lambda: gemini_text(
                [
                    orjson.loads(line)
                    for line in chunk_lines(
                        "gemini/vercel-google-stream-text.chunks.txt"
                    )
                ]
            ),
            "stop",
            9,
            23 + 185,
            reasoning_tokens=185,
        )
    ),
    golden(
        Golden(
            "gemini",
            "tool",
            True,
            lambda: "",
            "tool_calls",
            29,
            15 + 45,
            tool_calls=(("weather", {"location": "San Francisco"}),),
        )
    ),
    golden(
        Golden(
            "gemini",
            "crlf",
            True,
            lambda: gemini_text(
                sse_payloads("gemini/pydantic-gemini-stream-generate-content-crlf.sse")
            ),
            "stop",
            13,
            8,
        )
    ),
    # Bedrock
    golden(
        Golden(
            "bedrock",
            "text",
            False,
            lambda: bedrock_body_text("bedrock/vercel-bedrock-converse-text.json"),
            "stop",
            22,
            57,
        )
    ),
    golden(
        Golden(
            "bedrock",
            "tool",
            False,
            lambda: "",
            "tool_calls",
            10,
            20,
            tool_calls=(("bash", {"command": "ls -l"}),),
        )
    ),
    golden(
        Golden(
            "bedrock",
            "reasoning",
            False,
            lambda: bedrock_body_text("bedrock/vercel-bedrock-converse-reasoning.json"),
            "stop",
            51,
            78,
        )
    ),
    golden(
        Golden(
            "bedrock",
            "nova-micro-v1:0",
            True,
            lambda: bedrock_capture_text(
                "bedrock/pydantic-bedrock-converse-stream-nova-micro.eventstream.bin"
            ),
            "stop",
            13,
            82,
        )
    ),
    golden(
        Golden(
            "bedrock",
            "text",
            True,
            lambda: bedrock_chunks_text(
                "bedrock/vercel-bedrock-converse-stream-text.chunks.txt"
            ),
            "stop",
            22,
            55,
        )
    ),
    golden(
        Golden(
            "bedrock",
            "tool",
            True,
            lambda: "",
            "tool_calls",
            125,
            45,
            tool_calls=(("test-tool", {"value": "Sparkle Day"}),),
        )
    ),
    golden(
        Golden(
            "bedrock",
            "reasoning",
            True,
            lambda: bedrock_chunks_text(
                "bedrock/vercel-bedrock-converse-stream-reasoning.chunks.txt"
            ),
            "stop",
            51,
            94,
        )
    ),
    # Mistral
    golden(
        Golden(
            "mistral",
            "text",
            False,
            lambda: openai_body_text("mistral/vercel-mistral-text.json"),
            "stop",
            13,
            434,
        )
    ),
    golden(
        Golden(
            "mistral",
            "tool",
            False,
            lambda: "",
            "tool_calls",
            124,
            22,
            tool_calls=(("weather", {"location": "San Francisco"}),),
        )
    ),
    golden(
        Golden(
            "mistral",
            "text",
            True,
            lambda: openai_chunks_text("mistral/vercel-mistral-stream-text.chunks.txt"),
            "stop",
            13,
            8,
        )
    ),
    golden(
        Golden(
            "mistral",
            "tool",
            True,
            lambda: "",
            "tool_calls",
            124,
            22,
            tool_calls=(("weather", {"location": "San Francisco"}),),
        )
    ),
    golden(
        Golden(
            "mistral",
            "incremental-tool",
            True,
            lambda: "",
            "tool_calls",
            171,
            14,
            tool_calls=(("webSearchTool", {"query": "current Berlin weather"}),),
            cached_tokens=128,
        )
    ),
    # Ollama has no recorded stream, so only whole responses.
    golden(
        Golden(
            "ollama",
            "reasoning",
            False,
            lambda: openai_body_text(
                "ollama/pydantic-ollama-cloud-chat-text-with-reasoning.response.json"
            ),
            "stop",
            134,
            122,
        )
    ),
    golden(
        Golden(
            "ollama",
            "tool",
            False,
            lambda: "",
            "tool_calls",
            206,
            194,
            tool_calls=(("final_result", {"city": "Paris", "country": "France"}),),
        )
    ),
    golden(
        Golden(
            "ollama",
            "json-schema",
            False,
            lambda: openai_body_text(
                "ollama/pydantic-ollama-local-chat-json-schema.response.json"
            ),
            "stop",
            136,
            15,
        )
    ),
]


@dataclass
class SDKResult:
    text: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Any = None
    chunks: int = 0


async def run_sdk(gw: ProviderHarness, model: str, stream: bool) -> SDKResult:
    """Call the gateway with the openai SDK and gather what it returned."""
    client = gw.client()
    result = SDKResult()
    if not stream:
        completion = await client.chat.completions.create(
            model=model, messages=MESSAGES
        )
        [choice] = completion.choices
        result.text = choice.message.content or ""
        for call in choice.message.tool_calls or []:
            assert call.type == "function"
            result.tool_calls.append(
                {
                    "id": call.id,
                    "name": call.function.name,
                    "arguments": call.function.arguments,
                }
            )
        result.finish_reason = choice.finish_reason
        result.usage = completion.usage
        return result

    chunks = await client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    async for chunk in chunks:
        result.chunks += 1
        if chunk.usage is not None:
            result.usage = chunk.usage
        for chunk_choice in chunk.choices:
            result.text += chunk_choice.delta.content or ""
            for delta in chunk_choice.delta.tool_calls or []:
                gathered = calls.setdefault(
                    delta.index, {"id": "", "name": "", "arguments": ""}
                )
                gathered["id"] = delta.id or gathered["id"]
                if delta.function is not None:
                    gathered["name"] += delta.function.name or ""
                    gathered["arguments"] += delta.function.arguments or ""
            if chunk_choice.finish_reason is not None:
                result.finish_reason = chunk_choice.finish_reason
    result.tool_calls = [calls[index] for index in sorted(calls)]
    return result


@pytest.mark.parametrize("case", CASES)
async def test_sdk_output_matches_fixture(gw: ProviderHarness, case: Golden) -> None:
    result = await run_sdk(gw, case.model, case.stream)

    assert result.text == case.text()
    assert result.finish_reason == case.finish_reason
    names_and_arguments = [
        (call["name"], orjson.loads(call["arguments"])) for call in result.tool_calls
    ]
    assert names_and_arguments == list(case.tool_calls)
    assert all(call["id"] for call in result.tool_calls)

    usage = result.usage
    assert usage is not None
    assert usage.prompt_tokens == case.prompt_tokens
    assert usage.completion_tokens == case.completion_tokens
    assert usage.total_tokens == case.prompt_tokens + case.completion_tokens
    cached = (
        usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    )
    assert (cached or 0) == case.cached_tokens
    if case.reasoning_tokens is not None:
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == case.reasoning_tokens

    [row] = await gw.ledger_rows()
    assert row["model"] == case.model
    assert row["provider"] == case.provider
    assert row["upstream_model"] == f"up-{case.scenario}"
    assert row["input_tokens"] == case.prompt_tokens
    assert row["output_tokens"] == case.completion_tokens
    assert row["cached_tokens"] == case.cached_tokens
    assert row["estimated"] == 0
    assert row["status"] == 200
    assert row["error_type"] is None
    assert row["streamed"] == int(case.stream)


async def test_stream_without_include_usage_has_no_usage_chunk(
    gw: ProviderHarness,
) -> None:
    client = gw.client()
    chunks = await client.chat.completions.create(
        model="anthropic-tool", messages=MESSAGES, stream=True
    )
    usages = [chunk.usage async for chunk in chunks if chunk.usage is not None]
    assert usages == []
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (377, 65)


async def test_anthropic_request_translated_with_credentials(
    gw: ProviderHarness,
) -> None:
    client = gw.client()
    await client.chat.completions.create(
        model="anthropic-text",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        max_tokens=300,
    )
    seen = gw.mock.last("anthropic")
    assert seen.path == "/anthropic/v1/messages"
    assert seen.headers["x-api-key"].startswith("sk-ant-")
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in seen.headers
    body = seen.json()
    assert body["model"] == "up-text"
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 300
    assert body["messages"] == [{"role": "user", "content": "Hello"}]


async def test_gemini_request_goes_to_model_path(gw: ProviderHarness) -> None:
    client = gw.client()
    await client.chat.completions.create(model="gemini-text", messages=MESSAGES)
    chunks = await client.chat.completions.create(
        model="gemini-crlf", messages=MESSAGES, stream=True
    )
    [_ async for _ in chunks]

    plain, streamed = [seen for seen in gw.mock.requests if seen.provider == "gemini"]
    assert plain.path == "/gemini/v1beta/models/up-text:generateContent"
    assert streamed.path == "/gemini/v1beta/models/up-crlf:streamGenerateContent"
    assert streamed.query == {"alt": "sse"}
    assert plain.headers["x-goog-api-key"] == streamed.headers["x-goog-api-key"]
    assert "Authorization" not in plain.headers
    assert plain.json()["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]


async def test_bedrock_requests_carry_valid_sigv4(gw: ProviderHarness) -> None:
    client = gw.client()
    await client.chat.completions.create(model="bedrock-text", messages=MESSAGES)
    chunks = await client.chat.completions.create(
        model="bedrock-nova-micro-v1:0", messages=MESSAGES, stream=True
    )
    [_ async for _ in chunks]

    plain, streamed = [seen for seen in gw.mock.requests if seen.provider == "bedrock"]
    assert plain.path == "/bedrock/model/up-text/converse"
    # The model id's ":" goes out percent-encoded, as it was signed.
    assert streamed.path == "/bedrock/model/up-nova-micro-v1:0/converse-stream"
    for seen in (plain, streamed):
        authorization = seen.headers["Authorization"]
        assert authorization.startswith(
            f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/"
        )
        assert "/us-east-1/bedrock/aws4_request" in authorization
        assert seen.headers["X-Amz-Security-Token"] == AWS_SESSION_TOKEN
        assert seen.sigv4_verified is True
    assert streamed.headers["Accept"] == "application/vnd.amazon.eventstream"
    assert plain.json()["messages"] == [
        {"role": "user", "content": [{"text": "Hello"}]}
    ]


async def test_bedrock_signature_check_is_real(gw: ProviderHarness) -> None:
    import openai

    gw.mock.aws_secret_access_key = "a-different-secret"
    # Bedrock's 403 rejects the gateway's credentials, which the client gets
    # as 502.
    with pytest.raises(openai.InternalServerError) as caught:
        await gw.client().chat.completions.create(
            model="bedrock-text", messages=MESSAGES
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_authentication_failed"
    assert "signature we calculated does not match" in caught.value.message
    assert gw.mock.last("bedrock").sigv4_verified is False


async def test_mistral_tool_ids_mapped_both_ways(gw: ProviderHarness) -> None:
    client = gw.client()
    completion = await client.chat.completions.create(
        model="mistral-tool",
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_not_nine_chars_long",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_not_nine_chars_long",
                "content": "sunny",
            },
        ],
        max_completion_tokens=50,
        seed=7,
    )
    sent = gw.mock.last("mistral").json()
    mistral_id = sent["messages"][1]["tool_calls"][0]["id"]
    assert len(mistral_id) == 9
    assert mistral_id.isalnum()
    assert sent["messages"][2]["tool_call_id"] == mistral_id
    assert sent["max_tokens"] == 50
    assert "max_completion_tokens" not in sent
    assert sent["random_seed"] == 7
    [call] = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.id == "gSIMJiOkT"


async def test_ollama_reasoning_field_reaches_client(gw: ProviderHarness) -> None:
    response = await gw.post(
        "/v1/chat/completions", {"model": "ollama-reasoning", "messages": MESSAGES}
    )
    body = await response.json()
    recorded = fixture_json(
        "ollama/pydantic-ollama-cloud-chat-text-with-reasoning.response.json"
    )
    assert (
        body["choices"][0]["message"]["reasoning"]
        == (recorded["choices"][0]["message"]["reasoning"])
    )


async def test_azure_deployment_and_v1_urls(gw: ProviderHarness) -> None:
    client = gw.client()
    first = await client.chat.completions.create(model="azure-text", messages=MESSAGES)
    second = await client.chat.completions.create(
        model="azure-v1-text", messages=MESSAGES
    )
    assert first.choices[0].message.content == second.choices[0].message.content

    deployment, v1 = [seen for seen in gw.mock.requests if seen.provider == "azure"]
    assert deployment.path == "/azure/openai/deployments/up-text/chat/completions"
    assert deployment.query == {"api-version": "2024-10-21"}
    assert v1.path == "/azure/openai/v1/chat/completions"
    assert v1.query == {}
    assert v1.json()["model"] == "up-text"
    for seen in (deployment, v1):
        assert seen.headers["api-key"].startswith("azure-")
        assert "Authorization" not in seen.headers

    rows = await gw.ledger_rows()
    assert [(row["provider"], row["upstream_model"]) for row in rows] == [
        ("azure", "up-text"),
        ("azure-v1", "up-text"),
    ]


async def test_azure_stream_is_relayed(gw: ProviderHarness) -> None:
    result = await run_sdk(gw, "azure-drip", stream=True)
    assert result.text.startswith("I'm unable to provide real-time weather")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (14, 30)
    [row] = await gw.ledger_rows()
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "azure",
        14,
        30,
    )


async def test_truncated_tool_json_keeps_length_finish(gw: ProviderHarness) -> None:
    result = await run_sdk(gw, "anthropic-truncated-tool", stream=True)
    assert result.finish_reason == "length"
    [call] = result.tool_calls
    assert call["name"] == "make_file"
    # The model ran out of tokens inside the arguments, so they are cut JSON.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(call["arguments"])
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (450, 124)
    assert row["estimated"] == 0


async def test_glob_routes_list_provider_models(tmp_path: Path) -> None:
    extra = "\n".join(
        [
            "  - {name: 'claude-*', provider: anthropic}",
            "  - {name: 'gemini-*', provider: gemini}",
        ]
    )
    async with running_providers(tmp_path, extra_models=extra) as gw:
        listed = await gw.client().models.list()
        owners = {model.id: model.owned_by for model in listed.data}
        assert owners["claude-listed-1"] == "anthropic"
        assert owners["claude-listed-2"] == "anthropic"
        assert owners["gemini-listed-1"] == "gemini"
        # Only names that match the route's glob are listed.
        assert "text-embedding-004" not in owners

        anthropic = gw.mock.last("anthropic")
        assert anthropic.path == "/anthropic/v1/models"
        assert anthropic.query == {"limit": "1000"}
        assert anthropic.headers["anthropic-version"] == "2023-06-01"
        assert "x-api-key" in anthropic.headers
        gemini = gw.mock.last("gemini")
        assert gemini.path == "/gemini/v1beta/models"
        assert gemini.query == {"pageSize": "1000"}
        assert "x-goog-api-key" in gemini.headers
