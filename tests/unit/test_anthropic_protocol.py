"""Anthropic wire helpers: request validation, usage, error bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmgw.errors import (
    AuthenticationFailed,
    BackendUnavailable,
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    RateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmgw.protocols.anthropic import (
    ERROR_TYPE_BY_STATUS,
    UsageAccumulator,
    error_body,
    error_event,
    error_type_for_status,
    extract_usage,
    gateway_error_body,
    parse_messages_request,
    usage_body,
)
from llmgw.protocols.openai import Usage
from llmgw.protocols.sse import SSEParser
from tests.conftest import FIXTURES_DIR

ANTHROPIC_DIR = FIXTURES_DIR / "anthropic"
needs_fixtures = pytest.mark.skipif(
    not ANTHROPIC_DIR.is_dir(),
    reason=f"recorded Anthropic responses not found at {ANTHROPIC_DIR}",
)


def messages_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not ...}


def one_message(content: Any, role: str = "user") -> dict[str, Any]:
    return messages_body(messages=[{"role": role, "content": content}])


def test_parse_minimal_request() -> None:
    body = messages_body()
    request = parse_messages_request(body)
    assert request.body is body
    assert request.model == "claude-sonnet-4-5"
    assert request.max_tokens == 1024
    assert request.messages == [{"role": "user", "content": "Hi"}]
    assert request.stream is False
    assert request.system is None
    assert request.tools == []
    assert request.tool_choice is None
    assert request.thinking is None
    assert request.user_id is None
    assert request.stop_sequences == []
    assert (request.temperature, request.top_p, request.top_k) == (None, None, None)


def test_parse_request_all_fields() -> None:
    tool = {
        "name": "get_weather",
        "description": "Weather by city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    body = messages_body(
        system=[
            {
                "type": "text",
                "text": "Be brief.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        max_tokens=2048,
        stream=True,
        tools=[tool, {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "tool", "name": "get_weather"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "user-7"},
        stop_sequences=["END"],
        temperature=0.5,
        top_p=1,
        top_k=40,
        service_tier="auto",
    )
    request = parse_messages_request(body)
    assert request.stream is True
    assert request.system == body["system"]
    assert request.tools == body["tools"]
    assert request.tool_choice == {"type": "tool", "name": "get_weather"}
    assert request.thinking == {"type": "enabled", "budget_tokens": 1024}
    assert request.user_id == "user-7"
    assert request.stop_sequences == ["END"]
    assert request.temperature == 0.5
    assert request.top_p == 1.0
    assert request.top_k == 40
    # Fields the gateway does not read stay in the body.
    assert request.body["service_tier"] == "auto"


def test_parse_request_accepts_every_block_type() -> None:
    user_blocks = [
        {"type": "text", "text": "Look"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
        },
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/a.png"},
        },
        {"type": "document", "source": {"type": "text", "data": "notes"}},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "18 C"}],
            "is_error": False,
        },
        {"type": "search_result", "source": "x", "title": "y", "content": []},
    ]
    assistant_blocks = [
        {"type": "thinking", "thinking": "Hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Calling"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]
    body = messages_body(
        messages=[
            {"role": "user", "content": user_blocks},
            {"role": "assistant", "content": assistant_blocks},
        ]
    )
    assert parse_messages_request(body).messages == body["messages"]


def test_thinking_disabled_needs_no_budget() -> None:
    request = parse_messages_request(messages_body(thinking={"type": "disabled"}))
    assert request.thinking == {"type": "disabled"}


INVALID_REQUESTS = [
    pytest.param([], None, "Request body must be a JSON object", id="array-body"),
    pytest.param(
        messages_body(model=...), "model", "model: Field required", id="no-model"
    ),
    pytest.param(
        messages_body(model=3),
        "model",
        "Input should be a valid string",
        id="int-model",
    ),
    pytest.param(
        messages_body(model=" "), "model", "at least 1 character", id="blank-model"
    ),
    pytest.param(
        messages_body(max_tokens=...),
        "max_tokens",
        "max_tokens: Field required",
        id="no-max-tokens",
    ),
    pytest.param(
        messages_body(max_tokens=0),
        "max_tokens",
        "max_tokens: Input should be greater than or equal to 1",
        id="zero-max-tokens",
    ),
    pytest.param(
        messages_body(max_tokens=True),
        "max_tokens",
        "Input should be a valid integer",
        id="bool-max-tokens",
    ),
    pytest.param(
        messages_body(max_tokens=10.0),
        "max_tokens",
        "Input should be a valid integer",
        id="float-max-tokens",
    ),
    pytest.param(
        messages_body(messages=...),
        "messages",
        "messages: Field required",
        id="no-messages",
    ),
    pytest.param(
        messages_body(messages={}),
        "messages",
        "messages: Input should be a valid list",
        id="object-messages",
    ),
    pytest.param(
        messages_body(messages=[]),
        "messages",
        "messages: at least one message is required",
        id="empty-messages",
    ),
    pytest.param(
        messages_body(messages=["hi"]),
        "messages.0",
        "Input should be a valid dictionary",
        id="string-message",
    ),
    pytest.param(
        messages_body(messages=[{"content": "x"}]),
        "messages.0.role",
        "messages.0.role: Field required",
        id="no-role",
    ),
    pytest.param(
        one_message("x", role="system"),
        "messages.0.role",
        "Input should be 'user' or 'assistant'",
        id="system-role",
    ),
    pytest.param(
        messages_body(messages=[{"role": "user"}]),
        "messages.0.content",
        "messages.0.content: Field required",
        id="no-content",
    ),
    pytest.param(
        one_message(5),
        "messages.0.content",
        "Input should be a valid string or list",
        id="int-content",
    ),
    pytest.param(
        one_message([{"text": "x"}]),
        "messages.0.content.0.type",
        "messages.0.content.0.type: Field required",
        id="block-without-type",
    ),
    pytest.param(
        one_message([{"type": "text"}]),
        "messages.0.content.0.text",
        "Field required",
        id="text-without-text",
    ),
    pytest.param(
        one_message([{"type": "image", "source": {"type": "base64", "data": "x"}}]),
        "messages.0.content.0.source.media_type",
        "Field required",
        id="image-without-media-type",
    ),
    pytest.param(
        one_message(
            [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/bmp",
                        "data": "x",
                    },
                }
            ]
        ),
        "messages.0.content.0.source.media_type",
        "Input should be one of 'image/jpeg', 'image/png'",
        id="image-bmp",
    ),
    pytest.param(
        one_message([{"type": "image", "source": {"type": "url"}}]),
        "messages.0.content.0.source.url",
        "Field required",
        id="image-without-url",
    ),
    pytest.param(
        one_message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
        "messages.0.content.0",
        "tool_use blocks are only allowed in assistant messages",
        id="tool-use-from-user",
    ),
    pytest.param(
        one_message(
            [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}], "assistant"
        ),
        "messages.0.content.0.input",
        "Input should be a valid dictionary",
        id="tool-use-string-input",
    ),
    pytest.param(
        one_message([{"type": "tool_result", "tool_use_id": "t"}], "assistant"),
        "messages.0.content.0",
        "tool_result blocks are only allowed in user messages",
        id="tool-result-from-assistant",
    ),
    pytest.param(
        one_message([{"type": "tool_result", "content": "x"}]),
        "messages.0.content.0.tool_use_id",
        "Field required",
        id="tool-result-without-id",
    ),
    pytest.param(
        one_message(
            [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}]
        ),
        "messages.0.content.0.content.0.text",
        "Field required",
        id="tool-result-bad-content",
    ),
    pytest.param(
        one_message([{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}]),
        "messages.0.content.0.is_error",
        "Input should be a valid boolean",
        id="tool-result-is-error",
    ),
    pytest.param(
        one_message([{"type": "thinking", "thinking": "x"}], "assistant"),
        "messages.0.content.0.signature",
        "Field required",
        id="thinking-without-signature",
    ),
    pytest.param(
        messages_body(system=5),
        "system",
        "system: Input should be a valid string or list",
        id="int-system",
    ),
    pytest.param(
        messages_body(system=[{"type": "image", "source": {}}]),
        "system.0.type",
        "system.0.type: Input should be 'text'",
        id="image-in-system",
    ),
    pytest.param(
        messages_body(stream="yes"),
        "stream",
        "stream: Input should be a valid boolean",
        id="string-stream",
    ),
    pytest.param(
        messages_body(tools={}),
        "tools",
        "Input should be a valid list",
        id="object-tools",
    ),
    pytest.param(
        messages_body(tools=[{"input_schema": {}}]),
        "tools.0.name",
        "tools.0.name: Field required",
        id="tool-without-name",
    ),
    pytest.param(
        messages_body(tools=[{"name": "f"}]),
        "tools.0.input_schema",
        "tools.0.input_schema: Field required",
        id="tool-without-schema",
    ),
    pytest.param(
        messages_body(tools=[{"name": "f", "input_schema": {}, "description": 1}]),
        "tools.0.description",
        "Input should be a valid string",
        id="tool-int-description",
    ),
    pytest.param(
        messages_body(tool_choice="auto"),
        "tool_choice",
        "Input should be a valid dictionary",
        id="string-tool-choice",
    ),
    pytest.param(
        messages_body(tool_choice={"type": "required"}),
        "tool_choice.type",
        "Input should be one of 'auto', 'any', 'tool', 'none'",
        id="openai-tool-choice",
    ),
    pytest.param(
        messages_body(tool_choice={"type": "tool"}),
        "tool_choice.name",
        "tool_choice.name: Field required",
        id="tool-choice-without-name",
    ),
    pytest.param(
        messages_body(tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
        "tool_choice.disable_parallel_tool_use",
        "Input should be a valid boolean",
        id="tool-choice-parallel",
    ),
    pytest.param(
        messages_body(thinking={"type": "enabled"}),
        "thinking.budget_tokens",
        "thinking.budget_tokens: Field required",
        id="thinking-without-budget",
    ),
    pytest.param(
        messages_body(thinking={"type": "enabled", "budget_tokens": 1023}),
        "thinking.budget_tokens",
        "Input should be greater than or equal to 1024",
        id="thinking-small-budget",
    ),
    pytest.param(
        messages_body(
            max_tokens=1024, thinking={"type": "enabled", "budget_tokens": 1024}
        ),
        "max_tokens",
        "must be greater than thinking.budget_tokens, but max_tokens is 1024",
        id="thinking-budget-over-max-tokens",
    ),
    pytest.param(
        messages_body(metadata={"user_id": 7}),
        "metadata.user_id",
        "Input should be a valid string",
        id="int-user-id",
    ),
    pytest.param(
        messages_body(stop_sequences="END"),
        "stop_sequences",
        "Input should be a valid list",
        id="string-stop-sequences",
    ),
    pytest.param(
        messages_body(stop_sequences=["a", 1]),
        "stop_sequences.1",
        "Input should be a valid string",
        id="int-stop-sequence",
    ),
    pytest.param(
        messages_body(temperature=1.5),
        "temperature",
        "temperature: Input should be less than or equal to 1",
        id="temperature-above-1",
    ),
    pytest.param(
        messages_body(temperature="hot"),
        "temperature",
        "Input should be a valid number",
        id="string-temperature",
    ),
    pytest.param(
        messages_body(top_p=-0.1),
        "top_p",
        "Input should be greater than or equal to 0",
        id="negative-top-p",
    ),
    pytest.param(
        messages_body(top_k=2.5),
        "top_k",
        "Input should be a valid integer",
        id="float-top-k",
    ),
    pytest.param(
        messages_body(top_k=-1),
        "top_k",
        "Input should be greater than or equal to 0",
        id="negative-top-k",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID_REQUESTS)
def test_parse_request_rejects(body: object, param: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(body)
    assert message in caught.value.message
    assert caught.value.param == param
    assert caught.value.status == 400


def test_validation_message_starts_with_path() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_messages_request(messages_body(max_tokens="1"))
    assert caught.value.message == "max_tokens: Input should be a valid integer"


def test_extract_usage_counts_cache_once() -> None:
    usage = extract_usage(
        {
            "input_tokens": 3,
            "cache_read_input_tokens": 1111,
            "cache_creation_input_tokens": 20,
            "output_tokens": 9,
        }
    )
    assert usage == Usage(
        input_tokens=1134, output_tokens=9, cached_tokens=1111, cache_write_tokens=20
    )


@needs_fixtures
def test_extract_usage_from_fixture_bodies() -> None:
    text = json.loads((ANTHROPIC_DIR / "vercel-anthropic-text.json").read_text())
    tool = json.loads(
        (ANTHROPIC_DIR / "vercel-anthropic-tool-no-args.json").read_text()
    )
    assert extract_usage(text["usage"]) == Usage(12, 29)
    assert extract_usage(tool["usage"]) == Usage(602, 93)


@pytest.mark.parametrize(
    "usage",
    [None, "12", [], {}, {"input_tokens": -1}, {"output_tokens": True}],
    ids=["null", "string", "array", "empty", "negative", "bool"],
)
def test_extract_usage_rejects_unusable(usage: object) -> None:
    assert extract_usage(usage) is None


def test_extract_usage_null_cache_counts_are_zero() -> None:
    usage = {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": None}
    assert extract_usage(usage) == Usage(5, 2)


def test_usage_accumulator_latest_value_wins() -> None:
    counts = UsageAccumulator()
    assert counts.usage is None
    counts.update(
        {"input_tokens": 43, "output_tokens": 1, "cache_read_input_tokens": 4}
    )
    counts.update({"output_tokens": 10})
    counts.update({"input_tokens": 61, "output_tokens": 2})
    assert counts.usage == Usage(input_tokens=65, output_tokens=2, cached_tokens=4)


def test_usage_accumulator_ignores_other_fields() -> None:
    counts = UsageAccumulator()
    counts.update(
        {"output_tokens": 8, "fallback_credit": {"status": {}}, "server_tool_use": {}}
    )
    counts.update("not usage")
    assert counts.usage == Usage(0, 8)


def stream_usage_objects(events: list[dict[str, Any]]) -> list[object]:
    found: list[object] = []
    for event in events:
        if event["type"] == "message_start":
            found.append(event["message"].get("usage"))
        elif event["type"] == "message_delta":
            found.append(event.get("usage"))
    return found


STREAM_USAGE = [
    ("anthropic-messages-stream-text-basic.sse", Usage(11, 6)),
    ("anthropic-messages-stream-text-then-tool-use.sse", Usage(377, 65)),
    ("anthropic-messages-stream-max-tokens-truncated-tool-json.sse", Usage(450, 124)),
    ("anthropic-messages-stream-refusal-stop-details.sse", Usage(20, 0)),
    ("anthropic-messages-stream-compaction-block.sse", Usage(30, 8)),
    ("anthropic-messages-stream-fallback-block.sse", Usage(25, 8)),
    ("anthropic-messages-stream-fallback-credit-usage.sse", Usage(25, 8)),
    ("pydantic-anthropic-messages-stream-thinking-padded.sse", Usage(43, 282)),
    ("vercel-anthropic-stream-text.chunks.txt", Usage(12, 30)),
    ("vercel-anthropic-stream-tool-no-args.chunks.txt", Usage(565, 48)),
    # message_delta corrects message_start's input_tokens of 43.
    ("vercel-anthropic-stream-message-delta-input-tokens.chunks.txt", Usage(61, 2)),
]


def fixture_events(name: str) -> list[dict[str, Any]]:
    path = ANTHROPIC_DIR / name
    if name.endswith(".chunks.txt"):
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    parser = SSEParser()
    events = parser.feed(path.read_bytes()) + parser.flush()
    return [json.loads(event.data) for event in events]


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "expected"), STREAM_USAGE, ids=[n for n, _ in STREAM_USAGE]
)
def test_usage_accumulator_on_fixture_streams(name: str, expected: Usage) -> None:
    counts = UsageAccumulator()
    for usage in stream_usage_objects(fixture_events(name)):
        counts.update(usage)
    assert counts.usage == expected


def test_usage_body_splits_cache_out() -> None:
    usage = Usage(
        input_tokens=1134, output_tokens=9, cached_tokens=1111, cache_write_tokens=20
    )
    assert usage_body(usage) == {
        "input_tokens": 3,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 1111,
        "output_tokens": 9,
    }
    assert extract_usage(usage_body(usage)) == usage


STATUS_TYPES = [
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (402, "billing_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (405, "invalid_request_error"),
    (409, "invalid_request_error"),
    (413, "request_too_large"),
    (422, "invalid_request_error"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (502, "api_error"),
    (503, "overloaded_error"),
    (504, "timeout_error"),
    (529, "overloaded_error"),
    (599, "api_error"),
]


@pytest.mark.parametrize(("status", "error_type"), STATUS_TYPES)
def test_error_type_for_status(status: int, error_type: str) -> None:
    assert error_type_for_status(status) == error_type


def test_error_types_cover_anthropic_list() -> None:
    expected = {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
    }
    assert expected <= set(ERROR_TYPE_BY_STATUS.values())


def test_error_body_shape() -> None:
    assert error_body("Overloaded", "overloaded_error") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_error_event_is_anthropic_sse() -> None:
    parser = SSEParser()
    events = parser.feed(error_event("Overloaded", "overloaded_error"))
    assert len(events) == 1
    assert events[0].event == "error"
    assert json.loads(events[0].data) == error_body("Overloaded", "overloaded_error")


GATEWAY_ERRORS = [
    pytest.param(InvalidRequest("bad"), 400, "invalid_request_error", id="invalid"),
    pytest.param(
        AuthenticationFailed("no key"), 401, "authentication_error", id="auth"
    ),
    pytest.param(ModelNotAllowed("no"), 403, "permission_error", id="not-allowed"),
    pytest.param(ModelNotFound("no model"), 404, "not_found_error", id="no-model"),
    pytest.param(BodyTooLarge("big"), 413, "request_too_large", id="too-large"),
    pytest.param(
        RateLimited("slow down", limit_kind="tokens", retry_after=1.0),
        429,
        "rate_limit_error",
        id="rate-limited",
    ),
    pytest.param(UpstreamUnreachable("down"), 502, "api_error", id="unreachable"),
    pytest.param(BackendUnavailable("redis"), 503, "overloaded_error", id="backend"),
    pytest.param(UpstreamTimeout("slow"), 504, "timeout_error", id="timeout"),
]


@pytest.mark.parametrize(("error", "status", "error_type"), GATEWAY_ERRORS)
def test_gateway_error_body(error: GatewayError, status: int, error_type: str) -> None:
    assert error.http_status == status
    assert gateway_error_body(error) == error_body(error.message, error_type)
