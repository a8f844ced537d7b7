"""The Anthropic Messages routes end to end on loopback: the official
``anthropic`` SDK and raw HTTP against the gateway, in front of a mock
upstream that replays recorded OpenAI and Anthropic traffic. Each test runs
once with the embedded back end and once with Redis."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer
from anthropic.types import ToolParam

from llmgw.config import Config, parse_config
from llmgw.gateway import Gateway
from llmgw.handlers import GATEWAY
from llmgw.protocols.anthropic import parse_messages_request
from llmgw.protocols.anthropic_prompt import prompt_messages
from llmgw.protocols.sse import SSEParser
from llmgw.server import create_app
from llmgw.tokens import TokenCounter
from tests.integration.gateway_harness import (
    DEV_KEY,
    GPT_ONLY_KEY,
    LIMITED_KEY,
    MAX_LOOP_STALL,
    LoopWatchdog,
)
from tests.integration.messages_upstream import (
    BEHAVIOUR_HEADER,
    COUNTED_TOKENS,
    FIXTURE_HEADER,
    MessagesUpstream,
    split_events,
)
from tests.integration.mock_upstream import FIXTURES, PROVIDER_KEY

REDIS_URL = "redis://127.0.0.1:6379/15"
ANTHROPIC_PROVIDER_KEY = "sk-ant-provider-secret-9876543210"
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
HELLO: list[Any] = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Get the weather of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
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
# The text of the recorded OpenAI stream that the mock replays by default.
OPENAI_STREAM_TEXT = (
    "I'm unable to provide real-time weather updates. To get the current"
    " weather in San Francisco, I recommend checking a reliable weather"
    " website or a weather app."
)


def messages_config(
    upstream_url: str, sink: Path, redis_url: str | None, prefix: str
) -> Config:
    redis_line = (
        f"redis: {{url: '{redis_url}', key_prefix: '{prefix}'}}" if redis_url else ""
    )
    timeouts = "{connect: 2, first_byte: 1, idle: 1, total: 5}"
    text = textwrap.dedent(
        f"""\
        server: {{listen: '127.0.0.1:4000', max_body_bytes: 20000, read_timeout: 1}}
        {redis_line}
        ledger: {{sink: 'sqlite:///{sink}'}}
        providers:
          - name: mock
            kind: openai-compatible
            base_url: '{upstream_url}/v1'
            api_key: {PROVIDER_KEY}
            timeouts: {timeouts}
          - name: claude
            kind: anthropic
            base_url: '{upstream_url}'
            api_key: {ANTHROPIC_PROVIDER_KEY}
            timeouts: {timeouts}
          - name: local-vllm
            kind: vllm
            base_url: '{upstream_url}/v1'
            timeouts: {timeouts}
        models:
          - name: small
            provider: mock
            upstream_model: small-v2
            max_output_tokens: 50
          - {{name: gpt-4o, provider: mock, max_input_tokens: 40}}
          - name: claude-sonnet
            provider: claude
            upstream_model: claude-sonnet-4-20250514
            max_output_tokens: 2000
          - {{name: claude-tiny, provider: claude, max_output_tokens: 500}}
          - {{name: vllm-small, provider: local-vllm, upstream_model: small-v3}}
        keys:
          - {{name: dev, key: {DEV_KEY}, tenant: acme}}
          - name: limited
            key: {LIMITED_KEY}
            limits: {{requests_per_minute: 2}}
          - {{name: gpt-only, key: {GPT_ONLY_KEY}, models: ['gpt-*']}}
        policies: {{max_output_tokens: 4000}}
        """
    )
    return parse_config(text, "test.yaml")


@dataclass
class Harness:
    base_url: str
    upstream: MessagesUpstream
    gateway: Gateway
    session: aiohttp.ClientSession
    sink_path: Path
    server: TestServer

    def client(self, key: str = DEV_KEY, **options: Any) -> anthropic.AsyncAnthropic:
        """Return an SDK client of the gateway that never retries."""
        return anthropic.AsyncAnthropic(
            base_url=self.base_url,
            api_key=key,
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(trust_env=False),
            **options,
        )

    async def post(
        self,
        path: str,
        body: Any,
        key: str | None = DEV_KEY,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        sent = dict(headers or {})
        if key is not None:
            sent["x-api-key"] = key
        return await self.session.post(self.base_url + path, json=body, headers=sent)

    async def ledger_rows(self) -> list[dict[str, Any]]:
        """Drain the back end's stream into the sink, then read the sink."""
        await self.gateway.wait_background()
        while await self.gateway.drainer.drain_once():
            pass
        with sqlite3.connect(self.sink_path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM llmgw_usage ORDER BY ts").fetchall()
        return [dict(row) for row in rows]

    async def rows_after_settle(self, count: int = 1) -> list[dict[str, Any]]:
        """Wait for ``count`` ledger rows, for requests that settle after the
        client has stopped reading."""
        rows: list[dict[str, Any]] = []
        for _ in range(100):
            rows = await self.ledger_rows()
            if len(rows) >= count:
                break
            await asyncio.sleep(0.05)
        return rows


async def _delete_keys(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    prefix = f"llmgw-test-{uuid.uuid4().hex[:8]}:"
    redis_url = REDIS_URL if request.param == "redis" else None
    upstream = MessagesUpstream()
    upstream_server = TestServer(upstream.app(), host="127.0.0.1")
    await upstream_server.start_server()
    sink = tmp_path / "ledger.db"
    upstream_url = str(upstream_server.make_url("")).rstrip("/")
    app = create_app(messages_config(upstream_url, sink, redis_url, prefix))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(shutdown_timeout=5)
    watchdog = LoopWatchdog()
    watchdog.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(
                base_url=str(server.make_url("")).rstrip("/"),
                upstream=upstream,
                gateway=app[GATEWAY],
                session=session,
                sink_path=sink,
                server=server,
            )
    finally:
        await watchdog.stop()
        await server.close()
        await upstream_server.close()
        if redis_url:
            await _delete_keys(prefix)
    assert watchdog.worst < MAX_LOOP_STALL, (
        f"the event loop stalled for {watchdog.worst:.3f} s during the test"
    )


async def read_events(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """Read a whole Messages stream and return each event's data, checking
    that every ``event:`` line names its data's ``type``."""
    parser = SSEParser()
    events = []
    raw = await response.read()
    for event in parser.feed(raw) + parser.flush():
        if not event.has_data:
            continue
        data = orjson.loads(event.data)
        assert event.event == data["type"]
        events.append(data)
    return events


def event_types(events: list[dict[str, Any]]) -> list[str]:
    """Return the event types with the runs of deltas collapsed to one."""
    types: list[str] = []
    for event in events:
        if not (types and types[-1] == event["type"] == "content_block_delta"):
            types.append(event["type"])
    return types


async def anthropic_error_of(
    response: aiohttp.ClientResponse,
) -> dict[str, Any]:
    body = await response.json()
    assert body["type"] == "error"
    assert set(body) == {"type", "error", "request_id"}
    assert body["request_id"] == response.headers["request-id"]
    return body["error"]  # type: ignore[no-any-return]


# Chat Completions upstreams.


async def test_sdk_message_via_openai_upstream(gw: Harness) -> None:
    async with gw.client() as client:
        message = await client.messages.create(
            model="small",
            max_tokens=500,
            system="Be brief.",
            messages=HELLO,
            extra_headers={"anthropic-beta": "some-beta", "x-client-trace": "abc"},
        )
    assert message.type == "message"
    assert message.role == "assistant"
    [block] = message.content
    assert block.type == "text"
    assert block.text == "Hello there!"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    assert message.usage.cache_read_input_tokens == 4
    assert message.usage.output_tokens == 3
    assert message._request_id is not None
    assert message._request_id.startswith("req_")

    seen = gw.upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "small-v2"
    assert seen.body["max_tokens"] == 50
    assert seen.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "x-api-key" not in headers
    assert "anthropic-version" not in headers
    assert "anthropic-beta" not in headers
    assert headers["x-client-trace"] == "abc"
    assert DEV_KEY not in str(seen.headers)

    [row] = await gw.ledger_rows()
    assert row["request_id"] == message._request_id
    assert row["route"] == "/v1/messages"
    assert row["key_name"] == "dev"
    assert row["tenant"] == "acme"
    assert row["model"] == "small"
    assert row["provider"] == "mock"
    assert row["upstream_model"] == "small-v2"
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)
    assert row["cached_tokens"] == 4
    assert row["estimated"] == 0
    assert row["status"] == 200
    assert row["streamed"] == 0
    assert row["error_type"] is None


async def test_sdk_stream_via_openai_upstream(gw: Harness) -> None:
    async with (
        gw.client() as client,
        client.messages.stream(model="small", max_tokens=100, messages=HELLO) as stream,
    ):
        types = [event.type async for event in stream]
        message = await stream.get_final_message()

    # The SDK adds events of its own, such as "text", after the raw ones.
    raw_types = [t for t in types if t in RAW_EVENT_TYPES]
    assert raw_types[:3] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert raw_types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "text" in types
    [block] = message.content
    assert block.type == "text"
    assert block.text == OPENAI_STREAM_TEXT
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 30)

    seen = gw.upstream.requests[-1]
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}

    [row] = await gw.ledger_rows()
    assert row["streamed"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)
    assert row["estimated"] == 0
    assert row["error_type"] is None


async def test_stream_event_sequence_has_ping(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["request-id"] == response.headers["x-request-id"]
    events = await read_events(response)

    assert event_types(events) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["role"] == "assistant"
    assert start["content"] == []
    # The local count of the prompt, until the upstream's usage arrives.
    assert start["usage"]["input_tokens"] > 0
    assert events[-2]["usage"]["output_tokens"] == 30


async def test_stream_without_usage_counts_locally(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "no-usage"})
    events = await read_events(response)

    counter = TokenCounter()
    encoding, _ = counter.encoding_for("small-v2")
    expected_output = len(encoding.encode(OPENAI_STREAM_TEXT))
    output = events[-2]["usage"]["output_tokens"]
    # Each delta is counted apart, so the sum can exceed the joined text's.
    assert expected_output <= output <= expected_output + 5
    input_tokens = events[0]["message"]["usage"]["input_tokens"]
    assert input_tokens > 0

    [row] = await gw.ledger_rows()
    assert row["estimated"] == 1
    assert row["output_tokens"] == output
    assert row["input_tokens"] == input_tokens


async def test_tool_call_stream_becomes_tool_use(gw: Harness) -> None:
    fixture = {FIXTURE_HEADER: "openai/openai-chat-stream-single-tool-call.sse"}
    async with (
        gw.client() as client,
        client.messages.stream(
            model="small",
            max_tokens=100,
            messages=[{"role": "user", "content": "Weather in NYC?"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "auto"},
            extra_headers=fixture,
        ) as stream,
    ):
        message = await stream.get_final_message()

    [block] = message.content
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.id == "call_4XzlGBLtUe9dy3GVNV4jhq7h"
    assert block.input == {"city": "New York City"}
    assert message.stop_reason == "tool_use"

    sent = gw.upstream.requests[-1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather of a city.",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert sent["tool_choice"] == "auto"
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (44, 16)


async def test_tool_result_round_trip_translated(gw: Harness) -> None:
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"}
            ],
        },
    ]
    async with gw.client() as client:
        message = await client.messages.create(
            model="small",
            max_tokens=100,
            messages=history,
            tools=[WEATHER_TOOL],
            extra_headers={BEHAVIOUR_HEADER: "tool"},
        )

    [block] = message.content
    assert block.type == "tool_use"
    assert block.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    sent = gw.upstream.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_1"
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"}


async def test_text_blocks_sent_as_strings(gw: Harness) -> None:
    """Claude Code sends the system prompt and user content as text blocks
    with cache_control. Servers such as llama.cpp take only strings there."""
    cached: Any = {"type": "ephemeral"}
    history: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "Weather?", "cache_control": cached},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "Sunny"},
                        {"type": "text", "text": "21 C"},
                    ],
                },
                {"type": "text", "text": "And tomorrow?", "cache_control": cached},
            ],
        },
    ]
    async with gw.client() as client:
        message = await client.messages.create(
            model="small",
            max_tokens=100,
            system=[
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": cached,
                },
                {"type": "text", "text": "Be brief."},
            ],
            messages=history,
            tools=[WEATHER_TOOL],
            extra_headers={"anthropic-beta": "claude-code-20250219"},
        )

    assert message.stop_reason == "end_turn"
    sent = gw.upstream.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "You are Claude Code.\nBe brief."},
        {"role": "user", "content": "<system-reminder>x</system-reminder>\nWeather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city":"Paris"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny\n21 C"},
        {"role": "user", "content": "And tomorrow?"},
    ]


async def test_stream_answered_with_json_is_sent_as_stream(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(
        MESSAGES, body, headers={BEHAVIOUR_HEADER: "ignore-stream"}
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(response)

    assert event_types(events)[0:2] == ["message_start", "ping"]
    assert event_types(events)[-2:] == ["message_delta", "message_stop"]
    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert texts == ["Hello there!"]
    [row] = await gw.ledger_rows()
    assert row["streamed"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)


async def test_translating_provider_stream(gw: Harness) -> None:
    async with (
        gw.client() as client,
        client.messages.stream(
            model="vllm-small", max_tokens=100, messages=HELLO
        ) as stream,
    ):
        message = await stream.get_final_message()

    [block] = message.content
    assert block.type == "text"
    assert block.text == OPENAI_STREAM_TEXT
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 30)
    seen = gw.upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "small-v3"
    [row] = await gw.ledger_rows()
    assert row["provider"] == "local-vllm"
    assert row["streamed"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)


async def test_translating_provider_message(gw: Harness) -> None:
    async with gw.client() as client:
        message = await client.messages.create(
            model="vllm-small", max_tokens=100, messages=HELLO
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there!"
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)


async def test_message_without_usage_counts_locally(gw: Harness) -> None:
    async with gw.client() as client:
        message = await client.messages.create(
            model="small",
            max_tokens=100,
            messages=HELLO,
            extra_headers={BEHAVIOUR_HEADER: "no-usage"},
        )
    assert message.usage.output_tokens == 3  # "Hello there!"
    assert message.usage.input_tokens > 0
    [row] = await gw.ledger_rows()
    assert row["estimated"] == 1
    assert row["output_tokens"] == 3
    assert row["input_tokens"] == message.usage.input_tokens


async def test_bearer_token_authenticates(gw: Harness) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=gw.base_url,
        auth_token=DEV_KEY,
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(trust_env=False),
    ) as client:
        message = await client.messages.create(
            model="small", max_tokens=10, messages=HELLO
        )
    assert message.content[0].type == "text"
    headers = {name.lower() for name in gw.upstream.requests[-1].headers}
    assert "x-api-key" not in headers


# The Anthropic upstream.


async def test_native_message_relayed_as_is(gw: Harness) -> None:
    body = {
        "model": "claude-sonnet",
        "max_tokens": 300,
        "messages": HELLO,
        "metadata": {"user_id": "u-1"},
        "top_k": 5,
    }
    response = await gw.post(
        MESSAGES,
        body,
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "beta-1"},
    )
    assert response.status == 200
    expected = FIXTURES / "anthropic" / "vercel-anthropic-text.json"
    assert await response.read() == expected.read_bytes()
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["request-id"] != "req_upstream_1"
    assert response.headers["x-upstream-extra"] == "kept"
    assert "anthropic-organization-id" not in response.headers
    assert "anthropic-ratelimit-requests-remaining" not in response.headers

    seen = gw.upstream.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.body == {**body, "model": "claude-sonnet-4-20250514"}
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "beta-1"
    assert "authorization" not in headers
    assert DEV_KEY not in str(seen.headers)

    [row] = await gw.ledger_rows()
    assert row["provider"] == "claude"
    assert row["upstream_model"] == "claude-sonnet-4-20250514"
    assert (row["input_tokens"], row["output_tokens"]) == (12, 29)
    assert row["estimated"] == 0


async def test_native_version_defaults_when_absent(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(MESSAGES, body)
    assert response.status == 200
    headers = {k.lower(): v for k, v in gw.upstream.requests[-1].headers.items()}
    assert headers["anthropic-version"] == "2023-06-01"


async def test_native_version_passes_through(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(
        MESSAGES, body, headers={"anthropic-version": "2099-01-01"}
    )
    assert response.status == 200
    headers = {k.lower(): v for k, v in gw.upstream.requests[-1].headers.items()}
    assert headers["anthropic-version"] == "2099-01-01"


async def test_native_stream_relayed_byte_for_byte(gw: Harness) -> None:
    fixture = "anthropic/anthropic-messages-stream-text-then-tool-use.sse"
    body = {
        "model": "claude-sonnet",
        "max_tokens": 300,
        "messages": HELLO,
        "tools": [WEATHER_TOOL],
        "stream": True,
    }
    response = await gw.post(MESSAGES, body, headers={FIXTURE_HEADER: fixture})
    assert response.status == 200
    assert await response.read() == (FIXTURES / fixture).read_bytes()

    [row] = await gw.ledger_rows()
    assert row["streamed"] == 1
    assert (row["input_tokens"], row["output_tokens"]) == (377, 65)
    assert row["estimated"] == 0
    assert row["error_type"] is None


async def test_native_sdk_stream_with_tool_use(gw: Harness) -> None:
    async with (
        gw.client() as client,
        client.messages.stream(
            model="claude-sonnet",
            max_tokens=300,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
        ) as stream,
    ):
        message = await stream.get_final_message()

    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use"
    assert tool.name == "get_weather"
    assert tool.input == {"location": "Paris"}
    assert message.stop_reason == "tool_use"
    assert message.model == "claude-sonnet-4-20250514"


async def test_native_thinking_stream(gw: Harness) -> None:
    fixture = "anthropic/pydantic-anthropic-messages-stream-thinking-padded.sse"
    async with (
        gw.client() as client,
        client.messages.stream(
            model="claude-sonnet",
            max_tokens=1900,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=HELLO,
            extra_headers={FIXTURE_HEADER: fixture},
        ) as stream,
    ):
        message = await stream.get_final_message()

    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking = message.content[0]
    assert thinking.type == "thinking"
    assert thinking.signature
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (43, 282)


async def test_native_cache_tokens_recorded(gw: Harness) -> None:
    fixture = "anthropic/anthropic-messages-stream-text-basic.sse"
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(
        MESSAGES, {**body, "stream": True}, headers={FIXTURE_HEADER: fixture}
    )
    events = await read_events(response)
    assert events[-1]["type"] == "message_stop"
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (11, 6)


async def test_native_output_cap_lowers_thinking_budget(gw: Harness) -> None:
    body = {
        "model": "claude-sonnet",
        "max_tokens": 8000,
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "messages": HELLO,
    }
    response = await gw.post(MESSAGES, body)
    assert response.status == 200
    sent = gw.upstream.requests[-1].body
    assert sent["max_tokens"] == 2000
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1999}


async def test_output_cap_too_small_for_thinking(gw: Harness) -> None:
    body = {
        "model": "claude-tiny",
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": HELLO,
    }
    response = await gw.post(MESSAGES, body)
    assert response.status == 400
    error = await anthropic_error_of(response)
    assert error["type"] == "invalid_request_error"
    assert "500" in error["message"]
    assert "1024" in error["message"]
    assert gw.upstream.requests == []


async def test_native_stream_cut_ends_with_error(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "max_tokens": 300, "messages": HELLO}
    response = await gw.post(
        MESSAGES, {**body, "stream": True}, headers={BEHAVIOUR_HEADER: "cut"}
    )
    events = await read_events(response)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error"
    assert "message_stop" not in event_types(events)

    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_stream_error"
    assert row["estimated"] == 1
    # The input count of message_start, and at least the text relayed.
    assert row["input_tokens"] == 377
    assert row["output_tokens"] > 1


async def test_native_error_event_relayed(gw: Harness) -> None:
    async with gw.client() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(
                model="claude-sonnet",
                max_tokens=300,
                messages=HELLO,
                extra_headers={BEHAVIOUR_HEADER: "error-event"},
            ) as stream:
                async for _ in stream:
                    pass
    assert "overloaded_error" in str(caught.value)
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_stream_error"
    assert row["status"] == 200
    assert row["streamed"] == 1


@pytest.mark.parametrize(
    ("behaviour", "status", "error_type"),
    [
        pytest.param("error-400", 400, "invalid_request_error", id="400"),
        pytest.param("error-429", 429, "rate_limit_error", id="429"),
        pytest.param("error-529", 529, "overloaded_error", id="529"),
    ],
)
async def test_native_error_keeps_status_and_type(
    gw: Harness, behaviour: str, status: int, error_type: str
) -> None:
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: behaviour})
    assert response.status == status
    error = await anthropic_error_of(response)
    assert error["type"] == error_type
    if status == 429:
        assert response.headers["retry-after"] == "12"
    [row] = await gw.ledger_rows()
    assert row["status"] == status
    assert row["error_type"] == f"upstream_http_{status}"
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)


async def test_native_overloaded_raises_sdk_error(gw: Harness) -> None:
    async with gw.client() as client:
        with pytest.raises(anthropic.OverloadedError) as caught:
            await client.messages.create(
                model="claude-sonnet",
                max_tokens=10,
                messages=HELLO,
                extra_headers={BEHAVIOUR_HEADER: "error-529"},
            )
    assert caught.value.status_code == 529
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")


# Errors of the gateway and of OpenAI-format upstreams.


async def test_openai_upstream_error_translated(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "error-401"})
    # The upstream's 401 rejects the gateway's provider key, not the client's.
    assert response.status == 502
    assert response.headers["x-should-retry"] == "false"
    error = await anthropic_error_of(response)
    assert error["type"] == "api_error"
    assert "Provider 'mock'" in error["message"]
    assert "HTTP 401" in error["message"]
    assert PROVIDER_KEY not in error["message"]
    assert "<redacted>" in error["message"]
    [row] = await gw.ledger_rows()
    assert row["status"] == 502
    assert row["error_type"] == "upstream_http_401"


@pytest.mark.parametrize("status", [401, 403])
async def test_native_rejected_credentials_are_502(gw: Harness, status: int) -> None:
    async with gw.client() as client:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(
                model="claude-sonnet",
                max_tokens=10,
                messages=HELLO,
                extra_headers={BEHAVIOUR_HEADER: f"error-{status}"},
            )
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    message = body["error"]["message"]
    assert "Provider 'claude'" in message
    assert f"HTTP {status}" in message
    upstream_message = "invalid x-api-key" if status == 401 else "does not have"
    assert upstream_message in message
    assert ANTHROPIC_PROVIDER_KEY not in message
    [row] = await gw.ledger_rows()
    assert row["status"] == 502
    assert row["error_type"] == f"upstream_http_{status}"
    assert (row["input_tokens"], row["output_tokens"]) == (0, 0)


async def test_count_tokens_native_rejected_credentials(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "messages": HELLO}
    response = await gw.post(
        COUNT_TOKENS, body, headers={BEHAVIOUR_HEADER: "error-401"}
    )
    assert response.status == 502
    error = await anthropic_error_of(response)
    assert error["type"] == "api_error"
    assert "Provider 'claude'" in error["message"]


async def test_openai_upstream_429_keeps_retry_after(gw: Harness) -> None:
    async with gw.client() as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(
                model="small",
                max_tokens=10,
                messages=HELLO,
                extra_headers={BEHAVIOUR_HEADER: "error-429"},
            )
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Rate limit reached for requests",
        },
        "request_id": caught.value.request_id,
    }


@pytest.mark.parametrize(
    ("key", "body", "status", "error_type", "sdk_error"),
    [
        pytest.param(
            None,
            {"model": "small", "max_tokens": 10, "messages": HELLO},
            401,
            "authentication_error",
            None,
            id="missing-key",
        ),
        pytest.param(
            "sk-wrong",
            {"model": "small", "max_tokens": 10, "messages": HELLO},
            401,
            "authentication_error",
            anthropic.AuthenticationError,
            id="wrong-key",
        ),
        pytest.param(
            GPT_ONLY_KEY,
            {"model": "small", "max_tokens": 10, "messages": HELLO},
            403,
            "permission_error",
            anthropic.PermissionDeniedError,
            id="model-not-allowed",
        ),
        pytest.param(
            DEV_KEY,
            {"model": "nope", "max_tokens": 10, "messages": HELLO},
            404,
            "not_found_error",
            anthropic.NotFoundError,
            id="unknown-model",
        ),
        pytest.param(
            DEV_KEY,
            {"model": "small", "messages": HELLO},
            400,
            "invalid_request_error",
            None,
            id="missing-max-tokens",
        ),
    ],
)
async def test_gateway_errors_in_anthropic_shape(
    gw: Harness,
    key: str | None,
    body: dict[str, Any],
    status: int,
    error_type: str,
    sdk_error: type[anthropic.APIStatusError] | None,
) -> None:
    """``sdk_error`` is the SDK's exception for the error, None where the SDK
    cannot send the request (no key, or no max_tokens)."""
    response = await gw.post(MESSAGES, body, key=key)
    assert response.status == status
    error = await anthropic_error_of(response)
    assert error["type"] == error_type
    assert error["message"]

    if sdk_error is not None:
        assert key is not None
        async with gw.client(key) as client:
            with pytest.raises(sdk_error):
                await client.messages.create(**body)

    rows = await gw.ledger_rows()
    assert len(rows) == (1 if sdk_error is None else 2)
    assert all(row["status"] == status for row in rows)
    assert all(row["route"] == "/v1/messages" for row in rows)
    assert all(row["error_type"] for row in rows)
    assert gw.upstream.requests == []


async def test_invalid_field_message_names_path(gw: Harness) -> None:
    body = {
        "model": "small",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text"}]}],
    }
    response = await gw.post(MESSAGES, body)
    assert response.status == 400
    error = await anthropic_error_of(response)
    assert error["message"] == "messages.0.content.0.text: Field required"


async def test_untranslatable_block_rejected_before_admission(gw: Harness) -> None:
    body = {
        "model": "small",
        "max_tokens": 10,
        "messages": HELLO,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    response = await gw.post(MESSAGES, body, key=LIMITED_KEY)
    assert response.status == 400
    error = await anthropic_error_of(response)
    assert "web_search" in error["message"]
    assert gw.upstream.requests == []

    # The limited key allows 2 requests a minute, and the rejected one used none.
    for _ in range(2):
        ok = await gw.post(MESSAGES, {**body, "tools": []}, key=LIMITED_KEY)
        assert ok.status == 200


async def test_rate_limit_is_429_with_retry_after(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 10, "messages": HELLO}
    for _ in range(2):
        response = await gw.post(MESSAGES, body, key=LIMITED_KEY)
        assert response.status == 200
        assert response.headers["x-ratelimit-limit-requests"] == "2"

    response = await gw.post(MESSAGES, body, key=LIMITED_KEY)
    assert response.status == 429
    assert int(response.headers["retry-after"]) >= 1
    error = await anthropic_error_of(response)
    assert error["type"] == "rate_limit_error"

    async with gw.client(LIMITED_KEY) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="small", max_tokens=10, messages=HELLO)
    rows = await gw.ledger_rows()
    assert [row["status"] for row in rows] == [200, 200, 429, 429]


async def test_input_cap_rejects_long_prompt(gw: Harness) -> None:
    long_text = "word " * 100
    body = {
        "model": "gpt-4o",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": long_text}],
    }
    response = await gw.post(MESSAGES, body)
    assert response.status == 400
    error = await anthropic_error_of(response)
    assert error["type"] == "invalid_request_error"
    assert "40 tokens" in error["message"]
    assert gw.upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", MESSAGES, 405, id="get-messages"),
        pytest.param("POST", "/v1/messages/batches", 404, id="unknown-below"),
        pytest.param("GET", COUNT_TOKENS, 405, id="get-count-tokens"),
    ],
)
async def test_unknown_messages_paths_anthropic_shaped(
    gw: Harness, method: str, path: str, status: int
) -> None:
    response = await gw.session.request(
        method, gw.base_url + path, headers={"x-api-key": DEV_KEY}
    )
    assert response.status == status
    error = await anthropic_error_of(response)
    expected = "not_found_error" if status == 404 else "invalid_request_error"
    assert error["type"] == expected


async def test_other_routes_keep_openai_shape(gw: Harness) -> None:
    response = await gw.session.get(gw.base_url + "/v1/nothing")
    assert response.status == 404
    body = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "not_found"


# Streams that fail or stop.


async def test_stream_idle_timeout_ends_with_error(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "stall-mid"})
    events = await read_events(response)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "timeout_error"
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_timeout"
    assert row["estimated"] == 1


async def test_native_stream_idle_timeout(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": HELLO}
    response = await gw.post(
        MESSAGES, {**body, "stream": True}, headers={BEHAVIOUR_HEADER: "stall-mid"}
    )
    events = await read_events(response)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "timeout_error"
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_timeout"
    assert row["input_tokens"] == 377


async def test_upstream_reset_mid_stream(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "reset"})
    events = await read_events(response)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error"
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_unreachable"


@pytest.mark.parametrize("model", ["small", "claude-sonnet"])
async def test_client_abort_cancels_upstream(gw: Harness, model: str) -> None:
    body = {"model": model, "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "drip"})
    seen = 0
    async for line in response.content:
        if line.startswith(b"data: "):
            seen += 1
        if seen == 3:
            break
    response.close()
    await asyncio.wait_for(gw.upstream.stream_cancelled.wait(), timeout=5)

    [row] = await gw.rows_after_settle()
    assert row["client_aborted"] == 1
    assert row["streamed"] == 1
    assert row["estimated"] == 1


async def test_shutdown_cuts_stream_with_error_event(gw: Harness) -> None:
    body = {"model": "small", "max_tokens": 100, "messages": HELLO, "stream": True}
    response = await gw.post(MESSAGES, body, headers={BEHAVIOUR_HEADER: "stall-mid"})
    first = await response.content.readline()
    assert first == b"event: message_start\n"

    # What `llmgw serve` does on SIGTERM when the grace period ends while
    # the upstream still stalls.
    gw.gateway.stopping = True
    shutdown = asyncio.create_task(gw.server.close())
    await asyncio.sleep(0.2)
    gw.gateway.cut_requests()
    parser = SSEParser()
    events = [
        orjson.loads(event.data)
        for event in parser.feed(await response.read()) + parser.flush()
        if event.has_data
    ]
    await asyncio.wait_for(shutdown, timeout=3)

    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "overloaded_error"
    [row] = await gw.rows_after_settle()
    assert row["error_type"] == "server_shutdown"
    assert row["client_aborted"] == 0
    assert row["streamed"] == 1


# count_tokens.


async def test_count_tokens_local(gw: Harness) -> None:
    request: dict[str, Any] = {
        "model": "small",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
        "tools": [WEATHER_TOOL],
    }
    async with gw.client() as client:
        counted = await client.messages.count_tokens(**request)

    parsed = parse_messages_request({**request, "max_tokens": 1})
    expected = TokenCounter().count_chat(
        prompt_messages(parsed), "small-v2", tools=parsed.tools
    )
    assert counted.input_tokens == expected.tokens
    assert gw.upstream.requests == []
    assert await gw.ledger_rows() == []


async def test_count_tokens_native(gw: Harness) -> None:
    request: dict[str, Any] = {"model": "claude-sonnet", "messages": HELLO}
    async with gw.client() as client:
        counted = await client.messages.count_tokens(**request)
    assert counted.input_tokens == COUNTED_TOKENS

    seen = gw.upstream.requests[-1]
    assert seen.path == "/v1/messages/count_tokens"
    assert seen.body == {**request, "model": "claude-sonnet-4-20250514"}
    headers = {name.lower(): value for name, value in seen.headers.items()}
    assert headers["x-api-key"] == ANTHROPIC_PROVIDER_KEY
    assert await gw.ledger_rows() == []


async def test_count_tokens_native_error(gw: Harness) -> None:
    body = {"model": "claude-sonnet", "messages": HELLO}
    response = await gw.post(
        COUNT_TOKENS, body, headers={BEHAVIOUR_HEADER: "error-529"}
    )
    assert response.status == 529
    error = await anthropic_error_of(response)
    assert error["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("key", "body", "status", "error_type"),
    [
        pytest.param(
            None,
            {"model": "small", "messages": HELLO},
            401,
            "authentication_error",
            id="missing-key",
        ),
        pytest.param(
            GPT_ONLY_KEY,
            {"model": "small", "messages": HELLO},
            403,
            "permission_error",
            id="model-not-allowed",
        ),
        pytest.param(
            DEV_KEY,
            {"model": "nope", "messages": HELLO},
            404,
            "not_found_error",
            id="unknown-model",
        ),
        pytest.param(
            DEV_KEY,
            {"model": "small", "messages": []},
            400,
            "invalid_request_error",
            id="no-messages",
        ),
    ],
)
async def test_count_tokens_rejections(
    gw: Harness,
    key: str | None,
    body: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    response = await gw.post(COUNT_TOKENS, body, key=key)
    assert response.status == status
    error = await anthropic_error_of(response)
    assert error["type"] == error_type


def test_split_events_rebuilds_fixture() -> None:
    path = FIXTURES / "anthropic" / "anthropic-messages-stream-text-basic.sse"
    assert b"".join(split_events(path)) == path.read_bytes()
