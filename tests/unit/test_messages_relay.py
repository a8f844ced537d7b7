"""The stream relays of the Messages route, fed recorded streams without a
network."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import tiktoken

from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.messages_stream import ChatRelay, NativeRelay, Relay
from llmgw.protocols.openai import Usage
from llmgw.protocols.sse import SSEParser
from llmgw.protocols.translate_anthropic_stream import OpenAIToAnthropicStream
from llmgw.tokens import TokenCounter, count_text
from tests.unit.translation_helpers import fixture_dir

TOOL_USE_STREAM = "anthropic-messages-stream-text-then-tool-use.sse"
OPENAI_STREAM = "openai-chat-stream-text.sse"


@pytest.fixture(scope="module")
def encoding() -> tiktoken.Encoding:
    return TokenCounter().encoding("o200k_base")


def anthropic_fixture(name: str) -> bytes:
    return (fixture_dir("anthropic") / name).read_bytes()


def openai_fixture(name: str) -> bytes:
    return (fixture_dir("openai") / name).read_bytes()


def feed_in_pieces(relay: Relay, data: bytes, seed: int = 0) -> bytes:
    """Feed ``data`` in random pieces, as reads from a socket arrive."""
    rng = random.Random(seed)
    out = b""
    start = 0
    while start < len(data):
        end = start + rng.randint(1, 40)
        out += relay.feed(data[start:end])
        start = end
    return out + relay.end()


def events_of(data: bytes) -> list[tuple[str | None, dict[str, Any] | None]]:
    parser = SSEParser()
    return [
        (event.event, orjson.loads(event.data) if event.has_data else None)
        for event in parser.feed(data) + parser.flush()
    ]


def chat_relay(encoding: tiktoken.Encoding) -> ChatRelay:
    translator = OpenAIToAnthropicStream(
        input_tokens=9, count_output=lambda text: count_text(text, encoding)
    )
    return ChatRelay(translator, None)


@pytest.mark.parametrize("seed", range(5))
def test_native_relay_passes_bytes_unchanged(
    encoding: tiktoken.Encoding, seed: int
) -> None:
    data = anthropic_fixture(TOOL_USE_STREAM)
    relay = NativeRelay(encoding)
    assert feed_in_pieces(relay, data, seed) == data
    assert relay.complete

    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage == Usage(input_tokens=377, output_tokens=65)
    assert ctx.error_type is None


def test_native_relay_latest_usage_wins(encoding: tiktoken.Encoding) -> None:
    fixture = "pydantic-anthropic-messages-stream-thinking-padded.sse"
    relay = NativeRelay(encoding)
    feed_in_pieces(relay, anthropic_fixture(fixture))
    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage == Usage(input_tokens=43, output_tokens=282)


def test_native_relay_counts_cache_once(encoding: tiktoken.Encoding) -> None:
    usage = {
        "input_tokens": 3,
        "cache_read_input_tokens": 1111,
        "cache_creation_input_tokens": 20,
        "output_tokens": 1,
    }
    start = {"type": "message_start", "message": {"id": "msg_1", "usage": usage}}
    delta = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 7}}
    stream = b"".join(
        f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
        for event in (start, delta, {"type": "message_stop"})
    )
    relay = NativeRelay(encoding)
    assert feed_in_pieces(relay, stream) == stream

    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage == Usage(
        input_tokens=1134, output_tokens=7, cached_tokens=1111, cache_write_tokens=20
    )


def test_native_relay_cut_stream_ends_with_error(encoding: tiktoken.Encoding) -> None:
    data = anthropic_fixture(TOOL_USE_STREAM)
    cut = data[: data.index(b"event: message_delta")]
    relay = NativeRelay(encoding)
    out = feed_in_pieces(relay, cut)

    assert out.startswith(cut)
    name, error = events_of(out)[-1]
    assert name == "error"
    assert error is not None
    assert error["error"]["type"] == "api_error"
    assert not relay.complete
    assert relay.fail("later failure", "api_error") == b""

    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage is None
    assert ctx.error_type == "upstream_stream_error"
    assert ctx.input_tokens == 377
    assert not ctx.input_estimated
    # The relayed text and tool input, counted locally.
    assert ctx.output_tally > 10


def test_native_relay_stops_after_error_event(encoding: tiktoken.Encoding) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":'
        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    after = b'event: ping\ndata: {"type": "ping"}\n\n'
    relay = NativeRelay(encoding)
    out = relay.feed(error + after) + relay.end()
    assert out == error
    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.error_type == "upstream_stream_error"


def test_native_relay_fail_after_stop_is_empty(encoding: tiktoken.Encoding) -> None:
    relay = NativeRelay(encoding)
    feed_in_pieces(relay, anthropic_fixture(TOOL_USE_STREAM))
    assert relay.fail("timed out", "timeout_error") == b""


def test_native_relay_fail_sends_error_once(encoding: tiktoken.Encoding) -> None:
    data = anthropic_fixture(TOOL_USE_STREAM)
    relay = NativeRelay(encoding)
    relay.feed(data[:300])
    event = relay.fail("Upstream 'x' sent nothing for 1 s.", "timeout_error")
    [(name, body)] = events_of(event)
    assert name == "error"
    assert body == {
        "type": "error",
        "error": {
            "type": "timeout_error",
            "message": "Upstream 'x' sent nothing for 1 s.",
        },
    }
    assert relay.fail("again", "api_error") == b""


@pytest.mark.parametrize("seed", range(3))
def test_chat_relay_sends_ping_after_start(
    encoding: tiktoken.Encoding, seed: int
) -> None:
    relay = chat_relay(encoding)
    out = feed_in_pieces(relay, openai_fixture(OPENAI_STREAM), seed)
    names = [name for name, _ in events_of(out)]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names.count("ping") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    assert relay.complete

    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage == Usage(input_tokens=14, output_tokens=30)
    assert ctx.error_type is None


def test_chat_relay_ping_follows_keep_alive(encoding: tiktoken.Encoding) -> None:
    data = openai_fixture(OPENAI_STREAM)
    first_event = data[: data.index(b"\n\n") + 2]
    relay = chat_relay(encoding)
    out = relay.feed(b": keep-alive\n\n" + first_event)
    assert out.startswith(b": ping\n\n")
    names = [name for name, _ in events_of(out)]
    assert names[1:3] == ["message_start", "ping"]


def test_chat_relay_cut_stream_ends_with_error(encoding: tiktoken.Encoding) -> None:
    data = openai_fixture(OPENAI_STREAM)
    cut = data[: len(data) // 2]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    relay = chat_relay(encoding)
    out = feed_in_pieces(relay, cut)

    name, error = events_of(out)[-1]
    assert name == "error"
    assert error is not None
    assert error["error"]["type"] == "api_error"
    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.usage is None
    assert ctx.error_type == "upstream_stream_error"
    assert ctx.output_tally > 0


def test_chat_relay_upstream_error_chunk(encoding: tiktoken.Encoding) -> None:
    chunk = b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    relay = chat_relay(encoding)
    out = relay.feed(chunk) + relay.end()
    [(name, body)] = events_of(out)
    assert name == "error"
    assert body is not None
    assert body["error"]["message"] == "boom"
    ctx = RequestContext(route="/v1/messages")
    relay.settle(ctx)
    assert ctx.error_type == "upstream_stream_error"
