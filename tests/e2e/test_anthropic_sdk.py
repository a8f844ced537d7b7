"""The official anthropic SDK against llmgw's /v1/messages, in front of a real
llama.cpp model that speaks only OpenAI Chat Completions.

The gateway translates each Messages request to Chat Completions and the
response or stream back. Each test starts its own gateway, stops it with
SIGTERM and then reads the SQLite ledger, which contains every record once
the gateway has exited. The tiny model may write anything, so the tests
check the shape of what comes back and what the ledger records, not the
words.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam
from anthropic.types.beta import BetaMessageParam, BetaTextBlockParam, BetaToolParam

from llmgw.protocols.anthropic import parse_messages_request
from llmgw.protocols.anthropic_prompt import prompt_messages
from llmgw.tokens import TokenCounter
from tests.e2e.conftest import (
    MAX_OUTPUT_TOKENS,
    MODEL_NAME,
    OTHER_MODEL_NAME,
    Gateway,
    StartGateway,
)

pytestmark = pytest.mark.e2e

SHORT_PROMPT: list[MessageParam] = [{"role": "user", "content": "Say hello."}]
COUNTING_PROMPT: list[MessageParam] = [
    {"role": "user", "content": "Count from 1 to 50, one number per line."}
]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Get the current weather of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city."}},
        "required": ["city"],
    },
}
# Greedy decoding. The SDK (2.17) has no temperature parameter, but the
# Messages API and the gateway accept the field.
GREEDY: dict[str, object] = {"temperature": 0}
STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})
# The raw event types of a Messages stream, which the SDK yields before the
# events it derives from them, such as "text".
RAW_EVENT_TYPES = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)


def sdk_client(gateway: Gateway, key_name: str = "dev") -> anthropic.Anthropic:
    """Return an SDK client that sends the secret of key ``key_name``."""
    return anthropic.Anthropic(
        base_url=gateway.base_url,
        api_key=gateway.keys[key_name],
        max_retries=0,
        timeout=60.0,
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
    )


def stop_and_read_ledger(gateway: Gateway) -> list[dict[str, Any]]:
    """Stop the gateway with SIGTERM and return its ledger rows."""
    assert gateway.stop() == 0
    return gateway.ledger_rows()


def assert_message_shape(message: anthropic.types.Message) -> None:
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id
    assert message.stop_reason in STOP_REASONS
    for block in message.content:
        assert block.type in ("text", "tool_use")
        if block.type == "tool_use":
            assert block.id
            assert block.name == WEATHER_TOOL["name"]
            assert isinstance(block.input, dict)


def test_message_returns_text_and_usage(
    start_gateway: StartGateway, backend: str
) -> None:
    gateway = start_gateway(backend=backend)

    with sdk_client(gateway) as client:
        message = client.messages.create(
            model=MODEL_NAME, max_tokens=16, messages=SHORT_PROMPT, extra_body=GREEDY
        )

    assert_message_shape(message)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 16
    assert message._request_id is not None

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == message._request_id
    assert row["route"] == "/v1/messages"
    assert row["status"] == 200
    assert row["key_name"] == "dev"
    assert row["model"] == MODEL_NAME
    assert row["provider"] == "local"
    assert row["upstream_model"] == MODEL_NAME
    assert row["input_tokens"] == message.usage.input_tokens
    assert row["output_tokens"] == message.usage.output_tokens
    assert row["estimated"] == 0
    assert row["streamed"] == 0
    assert row["client_aborted"] == 0
    assert row["error_type"] is None


def test_stream_has_full_event_sequence(start_gateway: StartGateway) -> None:
    gateway = start_gateway()

    events: list[Any] = []
    with (
        sdk_client(gateway) as client,
        client.messages.stream(
            model=MODEL_NAME,
            max_tokens=MAX_OUTPUT_TOKENS,
            extra_body=GREEDY,
            messages=COUNTING_PROMPT,
        ) as stream,
    ):
        for event in stream:
            if event.type in RAW_EVENT_TYPES:
                events.append(event)
        message = stream.get_final_message()

    types = [event.type for event in events]
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = types[2:-3]
    assert len(deltas) >= 5
    assert set(deltas) == {"content_block_delta"}
    assert events[1].content_block.type == "text"

    start_usage = events[0].message.usage
    delta_usage = events[-2].usage
    assert start_usage.input_tokens > 0
    # llama.cpp sends no usage in streams, so the gateway fills in its local
    # count of the output.
    assert delta_usage.output_tokens > 0
    assert events[-2].delta.stop_reason in ("end_turn", "max_tokens")

    text = "".join(event.delta.text for event in events[2:-3])
    assert text.strip()
    assert message.content[0].type == "text"
    assert message.content[0].text == text
    assert message.usage.output_tokens == delta_usage.output_tokens

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row["route"] == "/v1/messages"
    assert row["status"] == 200
    assert row["streamed"] == 1
    assert row["estimated"] == 1
    assert row["input_tokens"] == start_usage.input_tokens
    assert row["output_tokens"] == delta_usage.output_tokens
    assert row["client_aborted"] == 0
    assert row["error_type"] is None


def test_stream_sends_ping_after_message_start(start_gateway: StartGateway) -> None:
    gateway = start_gateway()

    body = {
        "model": MODEL_NAME,
        "max_tokens": 8,
        "temperature": 0,
        "messages": SHORT_PROMPT,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{gateway.base_url}/v1/messages",
        data=json.dumps(body).encode(),
        headers={
            "x-api-key": gateway.keys["dev"],
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
    )
    # Proxy settings from the environment must not apply to loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        status = response.status
        request_id = response.headers["request-id"]
        x_request_id = response.headers["x-request-id"]
        text = response.read().decode()

    assert status == 200
    names = [
        line.removeprefix("event: ")
        for line in text.splitlines()
        if line.startswith("event: ")
    ]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert request_id == x_request_id
    assert len(stop_and_read_ledger(gateway)) == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["message", "stream"])
def test_tool_definition_gives_well_formed_reply(
    start_gateway: StartGateway, streamed: bool
) -> None:
    gateway = start_gateway()

    prompt: list[MessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    message: anthropic.types.Message
    with sdk_client(gateway) as client:
        if streamed:
            with client.messages.stream(
                model=MODEL_NAME,
                max_tokens=MAX_OUTPUT_TOKENS,
                extra_body=GREEDY,
                messages=prompt,
                tools=[WEATHER_TOOL],
            ) as stream:
                message = stream.get_final_message()
        else:
            message = client.messages.create(
                model=MODEL_NAME,
                max_tokens=MAX_OUTPUT_TOKENS,
                extra_body=GREEDY,
                messages=prompt,
                tools=[WEATHER_TOOL],
            )

    assert_message_shape(message)
    assert message.content
    if any(block.type == "tool_use" for block in message.content):
        assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row["route"] == "/v1/messages"
    assert row["status"] == 200
    assert row["streamed"] == int(streamed)
    assert row["error_type"] is None
    assert row["output_tokens"] == message.usage.output_tokens
    assert row["input_tokens"] > 0
    if streamed:
        # No upstream usage: the local counts, the prompt's with the tool.
        assert row["estimated"] == 1
    else:
        assert row["estimated"] == 0
        assert row["input_tokens"] == message.usage.input_tokens


# A request in the form Claude Code sends: system and user content as text
# blocks with cache_control, beta names in anthropic-beta, tools whose
# schemas name JSON Schema draft 7, metadata.user_id and a stream. The texts
# are short so that the request fits the test model's input cap.
CLAUDE_CODE_BETAS = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
]
CLAUDE_CODE_SYSTEM: list[BetaTextBlockParam] = [
    {
        "type": "text",
        "text": "You are Claude Code, Anthropic's official CLI for Claude.",
        "cache_control": {"type": "ephemeral"},
    },
    {
        "type": "text",
        "text": "You are an interactive CLI tool. Answer in one short line.",
        "cache_control": {"type": "ephemeral"},
    },
]
CLAUDE_CODE_MESSAGES: list[BetaMessageParam] = [
    {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "<system-reminder>The folder is /tmp.</system-reminder>",
            },
            {
                "type": "text",
                "text": "Say hello.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
    }
]
CLAUDE_CODE_TOOLS: list[BetaToolParam] = [
    {
        "name": "Read",
        "description": "Read a file from the local filesystem.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {
                    "type": "string",
                    "description": "The absolute path of the file.",
                }
            },
            "required": ["file_path"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }
]


# The turn after a tool call: the assistant's tool_use without text, then the
# tool_result (its content as text blocks) with the next user text.
CLAUDE_CODE_TOOL_TURN: list[BetaMessageParam] = [
    *CLAUDE_CODE_MESSAGES,
    {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "Read",
                "input": {"file_path": "/tmp/notes.txt"},
            }
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": [
                    {"type": "text", "text": "1\thello"},
                    {"type": "text", "text": "2\tworld"},
                ],
            },
            {
                "type": "text",
                "text": "Summarize the file.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
    },
]


@pytest.mark.parametrize(
    "messages",
    [CLAUDE_CODE_MESSAGES, CLAUDE_CODE_TOOL_TURN],
    ids=["first-turn", "tool-turn"],
)
def test_claude_code_request_streams(
    start_gateway: StartGateway, messages: list[BetaMessageParam]
) -> None:
    gateway = start_gateway()

    events: list[Any] = []
    with (
        sdk_client(gateway) as client,
        client.beta.messages.stream(
            model=MODEL_NAME,
            # Claude Code's default, which the model's output cap lowers.
            max_tokens=32000,
            system=CLAUDE_CODE_SYSTEM,
            messages=messages,
            tools=CLAUDE_CODE_TOOLS,
            metadata={"user_id": "user_e2e_account__session_e2e"},
            betas=CLAUDE_CODE_BETAS,
            extra_body=GREEDY,
        ) as stream,
    ):
        for event in stream:
            if event.type in RAW_EVENT_TYPES:
                events.append(event)
        message = stream.get_final_message()
        request_id = stream.request_id

    types = [event.type for event in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_start") == types.count("content_block_stop")
    assert types.count("content_block_start") >= 1
    assert events[0].message.usage.input_tokens > 0
    assert events[-2].usage.output_tokens > 0
    assert events[-2].delta.stop_reason in STOP_REASONS

    assert message.content
    for block in message.content:
        assert block.type in ("text", "tool_use")
        if block.type == "tool_use":
            assert block.name == "Read"
            assert isinstance(block.input, dict)
    assert 0 < message.usage.output_tokens <= MAX_OUTPUT_TOKENS

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == request_id
    assert row["route"] == "/v1/messages"
    assert row["status"] == 200
    assert row["streamed"] == 1
    assert row["model"] == MODEL_NAME
    assert row["input_tokens"] == events[0].message.usage.input_tokens
    assert row["output_tokens"] == message.usage.output_tokens
    assert row["client_aborted"] == 0
    assert row["error_type"] is None


def test_count_tokens_matches_local_count(start_gateway: StartGateway) -> None:
    gateway = start_gateway()

    request: dict[str, Any] = {
        "model": MODEL_NAME,
        "system": "You are terse.",
        "messages": SHORT_PROMPT,
        "tools": [WEATHER_TOOL],
    }
    with sdk_client(gateway) as client:
        counted = client.messages.count_tokens(**request)

    parsed = parse_messages_request({**request, "max_tokens": 1})
    expected = TokenCounter().count_chat(
        prompt_messages(parsed), MODEL_NAME, tools=parsed.tools
    )
    assert counted.input_tokens == expected.tokens
    # count_tokens generates nothing, so it leaves no ledger record.
    assert stop_and_read_ledger(gateway) == []


@pytest.mark.parametrize(
    ("key_name", "model"),
    [("dev", OTHER_MODEL_NAME), ("other-models", MODEL_NAME)],
)
def test_disallowed_model_is_permission_error(
    start_gateway: StartGateway, key_name: str, model: str
) -> None:
    gateway = start_gateway()

    with (
        sdk_client(gateway, key_name) as client,
        pytest.raises(anthropic.PermissionDeniedError) as raised,
    ):
        client.messages.create(model=model, max_tokens=8, messages=SHORT_PROMPT)

    assert raised.value.status_code == 403
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "permission_error"

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert rows[0]["status"] == 403
    assert rows[0]["route"] == "/v1/messages"
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (0, 0)


def test_wrong_key_is_authentication_error(start_gateway: StartGateway) -> None:
    gateway = start_gateway()

    wrong_secret = f"sk-wrong-{secrets.token_urlsafe(16)}"
    with (
        anthropic.Anthropic(
            base_url=gateway.base_url,
            api_key=wrong_secret,
            max_retries=0,
            http_client=anthropic.DefaultHttpxClient(trust_env=False),
        ) as client,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        client.messages.create(model=MODEL_NAME, max_tokens=8, messages=SHORT_PROMPT)

    assert raised.value.status_code == 401
    assert wrong_secret not in str(raised.value)
    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert rows[0]["status"] == 401
    assert rows[0]["key_name"] is None
