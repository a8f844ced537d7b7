"""Stream translation between Anthropic Messages and OpenAI Chat Completions.

The recorded streams are replayed through the translators. Some outputs are
checked event by event against hand-written expectations, and every output
structurally against its source: text, tool arguments, ids, order, stop
reason and usage. The official OpenAI and Anthropic SDKs then parse the
output as a client would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmgw.protocols.openai import Usage
from llmgw.protocols.sse import SSEEvent, SSEParser
from llmgw.protocols.translate_anthropic import finish_reason_for, stop_reason_for
from llmgw.protocols.translate_anthropic_stream import (
    KEEP_ALIVE,
    STREAM_TRUNCATED_CODE,
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)
from tests.conftest import FIXTURES_DIR

ANTHROPIC_DIR = FIXTURES_DIR / "anthropic"
OPENAI_DIR = FIXTURES_DIR / "openai"
MISTRAL_DIR = FIXTURES_DIR / "mistral"

if not FIXTURES_DIR.is_dir():
    pytest.skip(
        f"recorded provider streams not found at {FIXTURES_DIR}",
        allow_module_level=True,
    )

# Splitting a stream at every offset parses it once per byte. Above this size
# only offsets near line ends, plus every 61st, are tried.
EVERY_OFFSET_MAX_BYTES = 16 * 1024

# Final usage of each recorded Anthropic stream. In the message-delta-input-
# tokens stream, message_delta's input_tokens wins over message_start's.
ANTHROPIC_USAGE = {
    "anthropic-messages-stream-compaction-block.sse": Usage(30, 8),
    "anthropic-messages-stream-fallback-block.sse": Usage(25, 8),
    "anthropic-messages-stream-fallback-credit-usage.sse": Usage(25, 8),
    "anthropic-messages-stream-max-tokens-truncated-tool-json.sse": Usage(450, 124),
    "anthropic-messages-stream-refusal-stop-details.sse": Usage(20, 0),
    "anthropic-messages-stream-text-basic.sse": Usage(11, 6),
    "anthropic-messages-stream-text-then-tool-use.sse": Usage(377, 65),
    "pydantic-anthropic-messages-stream-thinking-padded.sse": Usage(43, 282),
    "vercel-anthropic-stream-message-delta-input-tokens.chunks.txt": Usage(61, 2),
    "vercel-anthropic-stream-text.chunks.txt": Usage(12, 30),
    "vercel-anthropic-stream-tool-no-args.chunks.txt": Usage(565, 48),
}

# OpenAI-format streams with one choice. The n=3 stream has its own test.
OPENAI_STREAMS = [
    *(
        path
        for path in sorted(OPENAI_DIR.glob("*.sse"))
        if "multiple-choices" not in path.name
    ),
    OPENAI_DIR / "vercel-openai-chat-stream-text.chunks.txt",
    *sorted(MISTRAL_DIR.glob("*.chunks.txt")),
]


def anthropic_wire(path: Path) -> bytes:
    """Return a recorded Anthropic stream as the bytes sent on the wire."""
    if path.suffix == ".sse":
        return path.read_bytes()
    frames = []
    for line in path.read_text().splitlines():
        if line:
            frames.append(f"event: {json.loads(line)['type']}\ndata: {line}\n\n")
    return "".join(frames).encode()


def openai_wire(path: Path) -> bytes:
    """Return a recorded OpenAI-format stream as the bytes sent on the wire."""
    if path.suffix == ".sse":
        return path.read_bytes()
    lines = [line for line in path.read_text().splitlines() if line]
    return "".join(f"data: {line}\n\n" for line in [*lines, "[DONE]"]).encode()


def parse_sse(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush()


Translator = AnthropicToOpenAIStream | OpenAIToAnthropicStream


def translate(translator: Translator, *pieces: bytes) -> bytes:
    """Parse the pieces as one stream, translate it and end it."""
    parser = SSEParser()
    out = bytearray()
    for piece in pieces:
        for event in parser.feed(piece):
            out += translator.feed(event)
    for event in parser.flush():
        out += translator.feed(event)
    return bytes(out + translator.finish())


def source_payloads(data: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(event.data)
        for event in parse_sse(data)
        if event.has_data and event.data != "[DONE]"
    ]


def chunk_payloads(data: bytes) -> list[Any]:
    """Parse translated Chat Completions output; [DONE] becomes None."""
    payloads: list[Any] = []
    for event in parse_sse(data):
        if event.has_data:
            payloads.append(None if event.data == "[DONE]" else json.loads(event.data))
    return payloads


def anthropic_events(data: bytes) -> list[dict[str, Any]]:
    """Parse translated Anthropic output, checking each event name."""
    events = []
    for event in parse_sse(data):
        payload = json.loads(event.data)
        assert event.event == payload["type"]
        events.append(payload)
    return events


def split_offsets(
    data: bytes, every_offset_max_bytes: int = EVERY_OFFSET_MAX_BYTES
) -> list[int]:
    if len(data) <= every_offset_max_bytes:
        return list(range(len(data) + 1))
    offsets = set(range(0, len(data) + 1, 61))
    for index, byte in enumerate(data):
        if byte in b"\r\n" or byte >= 0x80:
            offsets.update(range(max(0, index - 2), min(len(data), index + 3) + 1))
    return sorted(offsets)


# What the source streams contain, gathered by reading their events.


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Message:
    id: str = ""
    model: str = ""
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str | None = None


def read_anthropic_source(events: list[dict[str, Any]]) -> Message:
    message = Message()
    tools: dict[int, ToolCall] = {}
    for event in events:
        if event["type"] == "message_start":
            message.id = event["message"]["id"]
            message.model = event["message"]["model"]
        elif event["type"] == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                tools[event["index"]] = ToolCall(block["id"], block["name"], "")
                message.tool_calls.append(tools[event["index"]])
        elif event["type"] == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                message.text += delta["text"]
            elif delta["type"] == "thinking_delta":
                message.reasoning += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                tools[event["index"]].arguments += delta["partial_json"]
        elif event["type"] == "message_delta":
            message.stop_reason = event["delta"]["stop_reason"]
    return message


def read_openai_source(chunks: list[dict[str, Any]]) -> tuple[Message, bool]:
    """Return choice 0 of a chunk stream, and whether it made a refusal."""
    message = Message()
    tools: dict[object, ToolCall] = {}
    refused = False
    for chunk in chunks:
        message.id = message.id or chunk.get("id", "")
        message.model = message.model or chunk.get("model", "")
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            message.text += delta.get("content") or ""
            if delta.get("refusal"):
                message.text += delta["refusal"]
                refused = True
            for call in delta.get("tool_calls") or []:
                key = call.get("index", call.get("id"))
                function = call.get("function") or {}
                if key not in tools:
                    tools[key] = ToolCall(call["id"], function["name"], "")
                    message.tool_calls.append(tools[key])
                tools[key].arguments += function.get("arguments") or ""
            if choice.get("finish_reason"):
                message.stop_reason = choice["finish_reason"]
    return message, refused


def read_translated_chunks(chunks: list[Any]) -> Message:
    message = Message(id=chunks[0]["id"], model=chunks[0]["model"])
    tools: dict[int, ToolCall] = {}
    for chunk in chunks:
        if chunk is None or not chunk["choices"]:
            continue
        choice = chunk["choices"][0]
        delta = choice["delta"]
        message.text += delta.get("content") or ""
        message.reasoning += delta.get("reasoning_content") or ""
        for call in delta.get("tool_calls") or []:
            if "id" in call:
                assert call["index"] == len(tools)
                tools[call["index"]] = ToolCall(
                    call["id"], call["function"]["name"], ""
                )
                message.tool_calls.append(tools[call["index"]])
            tools[call["index"]].arguments += call["function"]["arguments"]
        if choice["finish_reason"] is not None:
            message.stop_reason = choice["finish_reason"]
    return message


def read_translated_events(events: list[dict[str, Any]]) -> Message:
    """Read translated Anthropic output, checking the order of its events."""
    assert events[0]["type"] == "message_start"
    assert events[-2]["type"] == "message_delta"
    assert events[-1]["type"] == "message_stop"
    message = Message(
        id=events[0]["message"]["id"], model=events[0]["message"]["model"]
    )
    open_index: int | None = None
    next_index = 0
    tools: dict[int, ToolCall] = {}
    for event in events[1:-2]:
        if event["type"] == "content_block_start":
            assert open_index is None, "a block started while another was open"
            assert event["index"] == next_index
            open_index = event["index"]
            next_index += 1
            block = event["content_block"]
            if block["type"] == "tool_use":
                assert block["input"] == {}
                tools[event["index"]] = ToolCall(block["id"], block["name"], "")
                message.tool_calls.append(tools[event["index"]])
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
            delta = event["delta"]
            if delta["type"] == "text_delta":
                message.text += delta["text"]
            elif delta["type"] == "thinking_delta":
                message.reasoning += delta["thinking"]
            else:
                assert delta["type"] == "input_json_delta"
                tools[event["index"]].arguments += delta["partial_json"]
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        else:
            assert event["type"] == "ping"
    assert open_index is None
    message.stop_reason = events[-2]["delta"]["stop_reason"]
    return message


# Anthropic -> OpenAI.


@pytest.mark.parametrize("name", sorted(ANTHROPIC_USAGE))
def test_anthropic_fixture_to_openai(name: str) -> None:
    data = anthropic_wire(ANTHROPIC_DIR / name)
    source = read_anthropic_source(source_payloads(data))
    translator = AnthropicToOpenAIStream(include_usage=True, created=1)
    chunks = chunk_payloads(translate(translator, data))

    assert translator.completed
    assert translator.usage == ANTHROPIC_USAGE[name]
    assert chunks[-1] is None
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for chunk in chunks[:-1]:
        assert chunk["id"] == source.id
        assert chunk["model"] == source.model
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == 1

    translated = read_translated_chunks(chunks)
    assert translated.text == source.text
    assert translated.reasoning == source.reasoning
    assert [(call.id, call.name) for call in translated.tool_calls] == [
        (call.id, call.name) for call in source.tool_calls
    ]
    for got, sent in zip(translated.tool_calls, source.tool_calls, strict=True):
        assert got.arguments == (sent.arguments or "{}")
    assert translated.stop_reason == finish_reason_for(source.stop_reason)

    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    expected = ANTHROPIC_USAGE[name]
    assert usage_chunk["usage"]["prompt_tokens"] == expected.input_tokens
    assert usage_chunk["usage"]["completion_tokens"] == expected.output_tokens


def test_anthropic_text_stream_event_by_event() -> None:
    data = anthropic_wire(ANTHROPIC_DIR / "anthropic-messages-stream-text-basic.sse")
    translator = AnthropicToOpenAIStream(include_usage=True, created=7)
    header = {
        "id": "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "claude-3-opus-latest",
    }

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return {**header, "choices": [choice]}

    expected_usage = {
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    }
    assert chunk_payloads(translate(translator, data)) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk({"content": "!"}),
        chunk({}, "stop"),
        {**header, "choices": [], "usage": expected_usage},
        None,
    ]


def test_anthropic_tool_stream_event_by_event() -> None:
    data = anthropic_wire(
        ANTHROPIC_DIR / "vercel-anthropic-stream-tool-no-args.chunks.txt"
    )
    translator = AnthropicToOpenAIStream(include_usage=False, created=7)
    deltas = [
        (chunk["choices"][0]["delta"], chunk["choices"][0]["finish_reason"])
        for chunk in chunk_payloads(translate(translator, data))[:-1]
    ]
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "I'll update the issue list for"}, None),
        ({"content": " you."}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01QE1WLsSVp5hy5Q3GmGTmjP",
                        "type": "function",
                        "function": {"name": "updateIssueList", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, None),
        ({}, "tool_calls"),
    ]


def test_anthropic_pings_become_comments() -> None:
    data = anthropic_wire(
        ANTHROPIC_DIR / "vercel-anthropic-stream-tool-no-args.chunks.txt"
    )
    translator = AnthropicToOpenAIStream(include_usage=False)
    output = translate(translator, data)
    comments = [event for event in parse_sse(output) if not event.has_data]
    assert len(comments) == 3
    assert all(event.raw == KEEP_ALIVE for event in comments)


def test_anthropic_stream_without_include_usage() -> None:
    data = anthropic_wire(ANTHROPIC_DIR / "anthropic-messages-stream-text-basic.sse")
    translator = AnthropicToOpenAIStream(include_usage=False)
    chunks = chunk_payloads(translate(translator, data))
    assert all(chunk is None or chunk["choices"] for chunk in chunks)
    assert translator.usage == Usage(11, 6)


def test_anthropic_stream_model_override() -> None:
    data = anthropic_wire(ANTHROPIC_DIR / "anthropic-messages-stream-text-basic.sse")
    translator = AnthropicToOpenAIStream(include_usage=True, model="claude-public")
    chunks = chunk_payloads(translate(translator, data))
    assert {chunk["model"] for chunk in chunks[:-1]} == {"claude-public"}


def anthropic_frames(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
        for event in events
    )


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 90,
            "output_tokens": 1,
        },
    },
}


def test_anthropic_error_event_mid_stream() -> None:
    data = anthropic_frames(
        MESSAGE_START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hi"},
        },
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "!"},
        },
    )
    translator = AnthropicToOpenAIStream(include_usage=True)
    chunks = chunk_payloads(translate(translator, data))
    assert chunks[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": None,
        }
    }
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
    ]
    assert translator.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert not translator.completed
    assert translator.usage == Usage(100, 1, cached_tokens=90)


def test_anthropic_cut_stream_ends_with_error() -> None:
    data = anthropic_wire(
        ANTHROPIC_DIR / "anthropic-messages-stream-text-then-tool-use.sse"
    )
    cut = data[: data.index(b"event: message_delta")]
    translator = AnthropicToOpenAIStream(include_usage=True)
    chunks = chunk_payloads(translate(translator, cut))
    assert chunks[-1]["error"]["type"] == "upstream_error"
    assert chunks[-1]["error"]["code"] == STREAM_TRUNCATED_CODE
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])
    assert not translator.completed
    assert translator.usage == Usage(377, 1)
    assert translator.finish() == b""


def test_anthropic_fail_after_completion_sends_nothing() -> None:
    data = anthropic_wire(ANTHROPIC_DIR / "anthropic-messages-stream-text-basic.sse")
    translator = AnthropicToOpenAIStream(include_usage=True)
    translate(translator, data)
    assert translator.fail("too late") == b""
    assert translator.feed(parse_sse(data)[0]) == b""


def test_anthropic_fail_sends_callers_error() -> None:
    translator = AnthropicToOpenAIStream(include_usage=True)
    translator.feed(parse_sse(anthropic_frames(MESSAGE_START))[0])
    output = translator.fail(
        "Upstream sent nothing for 30 s.", "upstream_error", "upstream_timeout"
    )
    assert chunk_payloads(output) == [
        {
            "error": {
                "message": "Upstream sent nothing for 30 s.",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_timeout",
            }
        }
    ]
    assert translator.finish() == b""


def test_anthropic_invalid_event_data() -> None:
    translator = AnthropicToOpenAIStream(include_usage=True)
    output = translate(translator, b"event: message_start\ndata: {not json\n\n")
    assert chunk_payloads(output)[-1]["error"]["code"] == "upstream_invalid_event"


def test_anthropic_tool_input_in_block_start() -> None:
    data = anthropic_frames(
        MESSAGE_START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "f",
                "input": {"a": 1},
            },
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5},
        },
        {"type": "message_stop"},
    )
    message = read_translated_chunks(
        chunk_payloads(translate(AnthropicToOpenAIStream(include_usage=False), data))
    )
    assert message.tool_calls == [ToolCall("toolu_1", "f", '{"a":1}')]


def test_anthropic_several_tool_calls_count_from_zero() -> None:
    events: list[dict[str, Any]] = [MESSAGE_START]
    for index, name in enumerate(["first", "second"], start=1):
        events += [
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": f"toolu_{index}",
                    "name": name,
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": '{"n": '},
            },
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f"{index}}}"},
            },
            {"type": "content_block_stop", "index": index},
        ]
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    translator = AnthropicToOpenAIStream(include_usage=True)
    message = read_translated_chunks(
        chunk_payloads(translate(translator, anthropic_frames(*events)))
    )
    assert message.tool_calls == [
        ToolCall("toolu_1", "first", '{"n": 1}'),
        ToolCall("toolu_2", "second", '{"n": 2}'),
    ]
    assert message.stop_reason == "tool_calls"


@pytest.mark.parametrize("name", sorted(p.name for p in ANTHROPIC_DIR.glob("*.sse")))
def test_anthropic_translation_independent_of_reads(name: str) -> None:
    data = (ANTHROPIC_DIR / name).read_bytes()
    whole = translate(AnthropicToOpenAIStream(include_usage=True, created=1), data)
    for offset in split_offsets(data):
        translator = AnthropicToOpenAIStream(include_usage=True, created=1)
        split = translate(translator, data[:offset], data[offset:])
        assert split == whole, f"split at {offset}"


# OpenAI -> Anthropic.


def stream_id(path: Path) -> str:
    return path.name.removesuffix(".sse").removesuffix(".chunks.txt")


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=stream_id)
def test_openai_fixture_to_anthropic(path: Path) -> None:
    data = openai_wire(path)
    chunks = source_payloads(data)
    source, refused = read_openai_source(chunks)
    final_usage = next(
        chunk["usage"] for chunk in reversed(chunks) if chunk.get("usage")
    )
    translator = OpenAIToAnthropicStream(input_tokens=5, count_output=len)
    events = anthropic_events(translate(translator, data))

    assert translator.completed
    assert translator.usage is not None
    assert translator.usage.input_tokens == final_usage["prompt_tokens"]
    assert translator.usage.output_tokens == final_usage["completion_tokens"]
    expected_count = len(source.text) + sum(
        len(call.name) + len(call.arguments) for call in source.tool_calls
    )
    assert translator.output_tokens == expected_count

    start = events[0]["message"]
    assert start["id"] == source.id
    assert start["model"] == source.model
    assert start["usage"]["input_tokens"] == 5

    translated = read_translated_events(events)
    assert translated.text == source.text
    assert translated.tool_calls == source.tool_calls
    expected_stop = "refusal" if refused else stop_reason_for(source.stop_reason)
    assert translated.stop_reason == expected_stop

    usage = events[-2]["usage"]
    cached = (final_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert usage["input_tokens"] == final_usage["prompt_tokens"] - cached
    assert usage["cache_read_input_tokens"] == cached
    assert usage["output_tokens"] == final_usage["completion_tokens"]


def test_openai_tool_stream_event_by_event() -> None:
    data = openai_wire(OPENAI_DIR / "openai-chat-stream-single-tool-call.sse")
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    fragments = ['{"', "city", '":"', "New", " York", " City", '"}']
    assert events == [
        {
            "type": "message_start",
            "message": {
                "id": "chatcmpl-ABfwERreu9s99xXsVuOWtIB2UOx62",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o-2024-08-06",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 0,
                },
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "call_4XzlGBLtUe9dy3GVNV4jhq7h",
                "name": "get_weather",
                "input": {},
            },
        },
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            }
            for fragment in fragments
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 44,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 16,
            },
        },
        {"type": "message_stop"},
    ]


def test_openai_parallel_tool_calls_are_sequential_blocks() -> None:
    data = openai_wire(OPENAI_DIR / "openai-chat-stream-parallel-tool-calls.sse")
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    starts = [event for event in events if event["type"] == "content_block_start"]
    assert [(event["index"], event["content_block"]["name"]) for event in starts] == [
        (0, "GetWeatherArgs"),
        (1, "get_stock_price"),
    ]
    message = read_translated_events(events)
    assert [json.loads(call.arguments) for call in message.tool_calls] == [
        {"city": "Edinburgh", "country": "GB", "units": "c"},
        {"ticker": "AAPL", "exchange": "NASDAQ"},
    ]


def test_openai_multiple_choices_reads_choice_zero() -> None:
    data = openai_wire(OPENAI_DIR / "openai-chat-stream-n3-multiple-choices.sse")
    text = "".join(
        (choice["delta"].get("content") or "")
        for chunk in source_payloads(data)
        for choice in chunk["choices"]
        if choice["index"] == 0
    )
    translator = OpenAIToAnthropicStream()
    message = read_translated_events(anthropic_events(translate(translator, data)))
    assert message.text == text
    assert translator.usage == Usage(79, 42)


@pytest.mark.parametrize("path", sorted(OPENAI_DIR.glob("*.sse")), ids=stream_id)
def test_openai_translation_independent_of_reads(path: Path) -> None:
    data = path.read_bytes()
    whole = translate(OpenAIToAnthropicStream(), data)
    # Translating is slower than parsing, so streams above 4 KiB are cut at
    # sampled offsets here. test_sse checks the parser alone at every offset
    # of streams up to 16 KiB.
    offsets = split_offsets(data, every_offset_max_bytes=4 * 1024)
    for offset in offsets:
        split = translate(OpenAIToAnthropicStream(), data[:offset], data[offset:])
        # The message id comes from the stream, so the bytes must match.
        assert split == whole, f"split at {offset}"


def openai_frames(*chunks: dict[str, Any], done: bool = True) -> bytes:
    frames = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    if done:
        frames.append("data: [DONE]\n\n")
    return "".join(frames).encode()


def chunk_with(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    **choice: Any,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
    }
    chunk["choices"] = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, **choice}]
    )
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def tool_delta(
    index: int | None, arguments: str, call_id: str = "", name: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"arguments": arguments}}
    if index is not None:
        call["index"] = index
    if call_id:
        call["id"] = call_id
        call["type"] = "function"
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def test_openai_interleaved_tool_calls_are_held_back() -> None:
    data = openai_frames(
        chunk_with({"role": "assistant", "content": None}),
        chunk_with(tool_delta(0, '{"a":', "call_0", "first")),
        chunk_with(tool_delta(1, '{"b":', "call_1", "second")),
        chunk_with(tool_delta(0, " 1}")),
        chunk_with(tool_delta(1, " 2}")),
        chunk_with({}, "tool_calls"),
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    message = read_translated_events(events)
    assert message.tool_calls == [
        ToolCall("call_0", "first", '{"a": 1}'),
        ToolCall("call_1", "second", '{"b": 2}'),
    ]
    assert message.stop_reason == "tool_use"


def test_text_after_parallel_calls_keeps_order() -> None:
    data = openai_frames(
        chunk_with(tool_delta(0, "{}", "call_0", "first")),
        chunk_with(tool_delta(1, "{}", "call_1", "second")),
        chunk_with({"content": "Done."}),
        chunk_with({}, "tool_calls"),
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    kinds = [
        event["content_block"]["type"]
        for event in events
        if event["type"] == "content_block_start"
    ]
    assert kinds == ["tool_use", "tool_use", "text"]
    assert read_translated_events(events).text == "Done."


def test_openai_reasoning_text_and_tool_blocks() -> None:
    data = openai_frames(
        chunk_with({"role": "assistant", "reasoning_content": "Think"}),
        chunk_with({"reasoning_content": "ing."}),
        chunk_with({"content": "Answer: "}),
        chunk_with({"reasoning": "Ollama's field."}),
        chunk_with(tool_delta(0, '{"q": 1}', "call_0", "search")),
        chunk_with({}, "tool_calls", usage=None),
        chunk_with(usage={"prompt_tokens": 9, "completion_tokens": 4}),
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    starts = [
        event["content_block"]
        for event in events
        if event["type"] == "content_block_start"
    ]
    assert [block["type"] for block in starts] == [
        "thinking",
        "text",
        "thinking",
        "tool_use",
    ]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    message = read_translated_events(events)
    assert message.reasoning == "Thinking.Ollama's field."
    assert message.text == "Answer: "
    assert events[-2]["usage"]["output_tokens"] == 4


def test_openai_mistral_tool_call_without_index() -> None:
    data = openai_wire(MISTRAL_DIR / "vercel-mistral-stream-tool-call.chunks.txt")
    message = read_translated_events(
        anthropic_events(translate(OpenAIToAnthropicStream(), data))
    )
    assert message.tool_calls == [
        ToolCall("gSIMJiOkT", "weather", '{"location": "San Francisco"}')
    ]


def test_unindexed_fragments_follow_last_call() -> None:
    data = openai_frames(
        chunk_with(tool_delta(None, '{"a"', "call_x", "f")),
        chunk_with(tool_delta(None, ": 1}")),
        chunk_with({}, "tool_calls"),
    )
    message = read_translated_events(
        anthropic_events(translate(OpenAIToAnthropicStream(), data))
    )
    assert message.tool_calls == [ToolCall("call_x", "f", '{"a": 1}')]


def test_openai_tool_names_restored() -> None:
    data = openai_frames(
        chunk_with(tool_delta(0, "{}", "call_0", "short_1a2b")),
        chunk_with({}, "tool_calls"),
    )
    translator = OpenAIToAnthropicStream(tool_names={"short_1a2b": "a.very.long.name"})
    message = read_translated_events(anthropic_events(translate(translator, data)))
    assert message.tool_calls[0].name == "a.very.long.name"


def test_openai_stop_with_tool_calls_is_tool_use() -> None:
    data = openai_frames(
        chunk_with(tool_delta(0, "{}", "call_0", "f")), chunk_with({}, "stop")
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_openai_vllm_stop_string() -> None:
    data = openai_frames(
        chunk_with({"content": "1 2 3"}), chunk_with({}, "stop", stop_reason="###")
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    assert events[-2]["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "###",
    }


def test_openai_usage_never_sent_uses_local_count() -> None:
    data = openai_frames(
        chunk_with({"content": "abcd"}),
        chunk_with({"content": "ef"}),
        chunk_with({}, "stop"),
    )
    translator = OpenAIToAnthropicStream(
        input_tokens=12, count_output=lambda text: len(text) // 2
    )
    events = anthropic_events(translate(translator, data))
    assert events[0]["message"]["usage"]["input_tokens"] == 12
    assert events[-2]["usage"] == {"output_tokens": 3}
    assert translator.usage is None
    assert translator.output_tokens == 3


def test_openai_usage_without_counter_is_zero() -> None:
    data = openai_frames(chunk_with({"content": "abcd"}), chunk_with({}, "stop"))
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    assert events[-2]["usage"] == {"output_tokens": 0}


def test_openai_missing_done_still_completes() -> None:
    data = openai_frames(
        chunk_with({"content": "Hi"}), chunk_with({}, "length"), done=False
    )
    translator = OpenAIToAnthropicStream()
    events = anthropic_events(translate(translator, data))
    assert translator.completed
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-1] == {"type": "message_stop"}


def test_openai_cut_stream_ends_with_error() -> None:
    data = openai_frames(chunk_with({"content": "Hi"}), done=False)
    translator = OpenAIToAnthropicStream()
    events = anthropic_events(translate(translator, data))
    assert [event["type"] for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1]["error"]["type"] == "api_error"
    assert not translator.completed


def test_openai_error_chunk() -> None:
    error = {
        "message": "Rate limit reached",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
    data = openai_frames(
        chunk_with({"content": "Hi"}), {"error": error}, chunk_with({"content": "!"})
    )
    translator = OpenAIToAnthropicStream()
    events = anthropic_events(translate(translator, data))
    assert events[-1] == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached"},
    }
    assert translator.error == error
    assert not translator.completed


def test_openai_ollama_string_error() -> None:
    data = openai_frames({"error": "model crashed"}, done=False)
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    assert events == [
        {"type": "error", "error": {"type": "api_error", "message": "model crashed"}}
    ]


def test_openai_keep_alive_before_and_after_start() -> None:
    translator = OpenAIToAnthropicStream()
    comment = parse_sse(b": keep-alive\n\n")[0]
    assert translator.feed(comment) == KEEP_ALIVE
    translator.feed(
        parse_sse(openai_frames(chunk_with({"content": "x"}), done=False))[0]
    )
    assert anthropic_events(translator.feed(comment)) == [{"type": "ping"}]


def test_openai_azure_first_chunk_starts_nothing() -> None:
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [],
    }
    data = openai_frames(
        azure_first, chunk_with({"content": "Hi"}), chunk_with({}, "stop")
    )
    events = anthropic_events(
        translate(OpenAIToAnthropicStream(model="gpt-public"), data)
    )
    assert events[0]["message"]["id"] == "chatcmpl-1"
    assert events[0]["message"]["model"] == "gpt-public"


def test_openai_invalid_json_event() -> None:
    translator = OpenAIToAnthropicStream()
    events = anthropic_events(translate(translator, b"data: {oops\n\n"))
    assert events[-1]["type"] == "error"
    assert "not a JSON object" in events[-1]["error"]["message"]


def test_openai_empty_stream_done_only() -> None:
    events = anthropic_events(translate(OpenAIToAnthropicStream(), b"data: [DONE]\n\n"))
    assert [event["type"] for event in events] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    assert events[1]["delta"]["stop_reason"] == "end_turn"


def test_openai_text_between_fragments_of_one_call() -> None:
    # An upstream that sends text between two fragments of one tool call: the
    # tool block closes at the text, and the late fragment names its block.
    data = openai_frames(
        chunk_with(tool_delta(0, '{"a"', "call_0", "f")),
        chunk_with({"content": "Hmm."}),
        chunk_with(tool_delta(0, ": 1}")),
        chunk_with({}, "tool_calls"),
    )
    events = anthropic_events(translate(OpenAIToAnthropicStream(), data))
    deltas = [event for event in events if event["type"] == "content_block_delta"]
    arguments = "".join(
        event["delta"]["partial_json"] for event in deltas if event["index"] == 0
    )
    assert arguments == '{"a": 1}'


# Both translators, as the official SDKs read their output.


def openai_sdk_snapshot(stream: bytes) -> Any:
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx2")
    from openai.lib.streaming.chat import ChatCompletionStreamState

    def respond(request: Any) -> Any:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=stream
        )

    client = openai.OpenAI(
        api_key="test",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(respond)),
        max_retries=0,
    )
    state: Any = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        state.handle_chunk(chunk)
    return state.current_completion_snapshot


def anthropic_sdk_message(stream: bytes) -> Any:
    anthropic = pytest.importorskip("anthropic")
    httpx = pytest.importorskip("httpx2")

    def respond(request: Any) -> Any:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=stream
        )

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://127.0.0.1:9",
        http_client=httpx.Client(transport=httpx.MockTransport(respond)),
        max_retries=0,
    )
    with client.messages.stream(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream_manager:
        return stream_manager.get_final_message()


@pytest.mark.parametrize("name", sorted(ANTHROPIC_USAGE))
def test_openai_sdk_reads_translated_stream(name: str) -> None:
    data = anthropic_wire(ANTHROPIC_DIR / name)
    source = read_anthropic_source(source_payloads(data))
    output = translate(AnthropicToOpenAIStream(include_usage=True), data)
    snapshot = openai_sdk_snapshot(output)

    choice = snapshot.choices[0]
    assert snapshot.id == source.id
    assert (choice.message.content or "") == source.text
    assert choice.finish_reason == finish_reason_for(source.stop_reason)
    calls = choice.message.tool_calls or []
    assert [(call.id, call.function.name) for call in calls] == [
        (call.id, call.name) for call in source.tool_calls
    ]
    for call, sent in zip(calls, source.tool_calls, strict=True):
        assert call.function.arguments == (sent.arguments or "{}")
    assert snapshot.usage.prompt_tokens == ANTHROPIC_USAGE[name].input_tokens
    assert snapshot.usage.completion_tokens == ANTHROPIC_USAGE[name].output_tokens


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=stream_id)
def test_anthropic_sdk_reads_translated_stream(path: Path) -> None:
    data = openai_wire(path)
    chunks = source_payloads(data)
    source, refused = read_openai_source(chunks)
    final_usage = next(
        chunk["usage"] for chunk in reversed(chunks) if chunk.get("usage")
    )
    message = anthropic_sdk_message(translate(OpenAIToAnthropicStream(), data))

    assert message.id == source.id
    texts = [block.text for block in message.content if block.type == "text"]
    assert "".join(texts) == source.text
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert [(block.id, block.name) for block in tool_uses] == [
        (call.id, call.name) for call in source.tool_calls
    ]
    for block, call in zip(tool_uses, source.tool_calls, strict=True):
        assert block.input == json.loads(call.arguments)
    assert message.stop_reason == (
        "refusal" if refused else stop_reason_for(source.stop_reason)
    )
    assert message.usage.output_tokens == final_usage["completion_tokens"]


def test_anthropic_sdk_raises_on_translated_error() -> None:
    anthropic = pytest.importorskip("anthropic")
    error = {
        "message": "Rate limit reached",
        "type": "tokens",
        "code": "rate_limit_exceeded",
    }
    data = openai_frames(chunk_with({"content": "Hi"}), {"error": error}, done=False)
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_sdk_message(translate(OpenAIToAnthropicStream(), data))
    assert "Rate limit reached" in str(caught.value)


def test_openai_sdk_raises_on_translated_error() -> None:
    openai = pytest.importorskip("openai")
    data = anthropic_frames(
        MESSAGE_START,
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        },
    )
    with pytest.raises(openai.APIError) as caught:
        openai_sdk_snapshot(
            translate(AnthropicToOpenAIStream(include_usage=True), data)
        )
    assert "Overloaded" in str(caught.value)
