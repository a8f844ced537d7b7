"""Bedrock Converse <-> OpenAI Chat Completions: requests, responses, streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmgw.errors import InvalidRequest
from llmgw.protocols.bedrock import (
    STOP_REASONS,
    ConverseStreamTranslator,
    bedrock_error_to_openai,
    bedrock_runtime_url,
    chat_request_to_converse,
    converse_path,
    converse_response_to_chat,
    converse_usage,
    map_stop_reason,
    stream_exception_to_openai,
    tool_use_id,
)
from llmgw.protocols.eventstream import (
    EventStreamDecoder,
    decode_all,
    encode_event,
    encode_exception,
    encode_message,
)
from llmgw.protocols.openai import Usage, parse_chat_request
from tests.unit.translation_helpers import (
    assemble,
    fixture_dir,
    fixture_params,
    read_lines,
)

RECORDING = "pydantic-bedrock-converse-stream-nova-micro.eventstream.bin"
RECORDED_REQUEST = "pydantic-bedrock-converse-stream-nova-micro.request.json"
TEXT_STREAM = "vercel-bedrock-converse-stream-text.chunks.txt"
REASONING_STREAM = "vercel-bedrock-converse-stream-reasoning.chunks.txt"
TOOL_STREAM = "vercel-bedrock-converse-stream-tool-call.chunks.txt"
TEXT_BODY = "vercel-bedrock-converse-text.json"
REASONING_BODY = "vercel-bedrock-converse-reasoning.json"
TOOL_BODY = "vercel-bedrock-converse-tool-call.json"


def request(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return chat_request_to_converse(parse_chat_request(body))


def translator(include_usage: bool = True) -> ConverseStreamTranslator:
    return ConverseStreamTranslator(
        model="bedrock-test", include_usage=include_usage, completion_id="chatcmpl-1"
    )


def events_of(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Unwrap a ``.chunks.txt`` recording: ``{"<eventType>": {...}}`` per line."""
    events = []
    for line in read_lines(path):
        ((event_type, payload),) = line.items()
        events.append((event_type, payload))
    return events


def wire_of(path: Path) -> bytes:
    """Rebuild the event-stream bytes of a ``.chunks.txt`` recording."""
    return b"".join(
        encode_event(event_type, json.dumps(payload).encode())
        for event_type, payload in events_of(path)
    )


def translate_wire(
    data: bytes, pieces: int = 1
) -> tuple[bytes, ConverseStreamTranslator]:
    stream = translator()
    decoder = EventStreamDecoder()
    size = max(1, -(-len(data) // pieces))
    out = b""
    for start in range(0, len(data), size):
        for message in decoder.feed(data[start : start + size]):
            out += stream.feed_message(message)
    decoder.close()
    return out + stream.finish(), stream


def delta_texts(events: list[tuple[str, dict[str, Any]]], key: str) -> str:
    pieces = []
    for event_type, payload in events:
        if event_type == "contentBlockDelta":
            delta = payload["delta"]
            if key == "reasoning":
                pieces.append(delta.get("reasoningContent", {}).get("text", ""))
            else:
                pieces.append(delta.get(key, ""))
    return "".join(pieces)


# ---------------------------------------------------------------------------
# Golden tests over the recordings


def test_every_fixture_has_a_golden_test() -> None:
    names = {path.name for path in fixture_dir("bedrock").iterdir()}
    assert names == {
        RECORDING,
        RECORDED_REQUEST,
        TEXT_STREAM,
        REASONING_STREAM,
        TOOL_STREAM,
        TEXT_BODY,
        REASONING_BODY,
        TOOL_BODY,
    }


def test_binary_recording_translates() -> None:
    data = (fixture_dir("bedrock") / RECORDING).read_bytes()
    out, stream_translator = translate_wire(data)
    stream = assemble(out)

    expected_text = "".join(
        json.loads(message.payload)["delta"]["text"]
        for message in decode_all(data)
        if message.event_type == "contentBlockDelta"
    )
    assert stream.choices[0].text == expected_text
    assert expected_text.startswith("The capital of France is Paris")
    assert stream.choices[0].finish_reason == "stop"
    assert stream.usage is not None
    assert stream.usage["prompt_tokens"] == 13
    assert stream.usage["completion_tokens"] == 82
    assert stream.usage["total_tokens"] == 95
    assert stream.done
    assert stream_translator.usage == Usage(input_tokens=13, output_tokens=82)
    # The padding field never reaches the client.
    assert b'"p"' not in out


def test_binary_recording_chunk_order() -> None:
    data = (fixture_dir("bedrock") / RECORDING).read_bytes()
    out, _ = translate_wire(data)
    stream = assemble(out)
    messages = decode_all(data)
    deltas = [m for m in messages if m.event_type == "contentBlockDelta"]

    # Role, one chunk per text delta, finish, usage.
    assert len(stream.chunks) == 1 + len(deltas) + 2
    for chunk, message in zip(stream.chunks[1:], deltas, strict=False):
        text = json.loads(message.payload)["delta"]["text"]
        assert chunk["choices"][0]["delta"] == {"content": text}
    assert {chunk["id"] for chunk in stream.chunks} == {"chatcmpl-1"}


def test_binary_recording_split_anywhere() -> None:
    data = (fixture_dir("bedrock") / RECORDING).read_bytes()
    whole, _ = translate_wire(data)
    for pieces in (2, 7, 64, len(data)):
        split, _ = translate_wire(data, pieces)
        assert split == whole, pieces


def test_text_stream_events() -> None:
    path = fixture_dir("bedrock") / TEXT_STREAM
    events = events_of(path)
    stream_translator = translator()
    out = b"".join(stream_translator.feed_event(*event) for event in events)
    stream = assemble(out + stream_translator.finish())

    assert stream.choices[0].text == delta_texts(events, "text")
    assert stream.choices[0].finish_reason == "stop"
    assert stream.usage is not None
    assert (stream.usage["prompt_tokens"], stream.usage["completion_tokens"]) == (
        22,
        55,
    )


def test_reasoning_stream_events() -> None:
    path = fixture_dir("bedrock") / REASONING_STREAM
    events = events_of(path)
    out, _ = translate_wire(wire_of(path))
    stream = assemble(out)

    assert stream.choices[0].reasoning == delta_texts(events, "reasoning")
    assert stream.choices[0].reasoning.startswith("Let me count the r")
    assert stream.choices[0].text == delta_texts(events, "text")
    assert stream.choices[0].finish_reason == "stop"
    assert stream.usage is not None
    assert (stream.usage["prompt_tokens"], stream.usage["completion_tokens"]) == (
        51,
        94,
    )
    # The reasoning signature has no OpenAI field and is not sent.
    signature = events[12][1]["delta"]["reasoningContent"]["signature"]
    assert signature.encode() not in out


def test_tool_stream_metadata_before_stop() -> None:
    path = fixture_dir("bedrock") / TOOL_STREAM
    events = events_of(path)
    assert [event for event, _ in events][-2:] == ["metadata", "messageStop"]
    out, stream_translator = translate_wire(wire_of(path))
    stream = assemble(out)

    (call,) = stream.choices[0].tool_calls.values()
    assert call == {
        "id": "tool-use-id",
        "name": "test-tool",
        "arguments": '{"value":"Sparkle Day"}',
    }
    assert json.loads(call["arguments"]) == {"value": "Sparkle Day"}
    assert stream.choices[0].finish_reason == "tool_calls"
    assert stream.usage is not None
    assert (stream.usage["prompt_tokens"], stream.usage["completion_tokens"]) == (
        125,
        45,
    )
    assert stream_translator.completed


@pytest.mark.parametrize("path", fixture_params("bedrock", "*.chunks.txt"))
def test_recorded_streams_wire_matches_events(path: Path) -> None:
    by_events = translator()
    out = b"".join(by_events.feed_event(*event) for event in events_of(path))
    by_wire, _ = translate_wire(wire_of(path), pieces=13)
    assert by_wire == out + by_events.finish()


def test_text_body_translates() -> None:
    body = json.loads((fixture_dir("bedrock") / TEXT_BODY).read_text())
    completion = converse_response_to_chat(
        body, model="claude", completion_id="req-1", created=5
    )
    assert completion == {
        "id": "req-1",
        "object": "chat.completion",
        "created": 5,
        "model": "claude",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": body["output"]["message"]["content"][0]["text"],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 22,
            "completion_tokens": 57,
            "total_tokens": 79,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def test_reasoning_body_translates() -> None:
    body = json.loads((fixture_dir("bedrock") / REASONING_BODY).read_text())
    (choice,) = converse_response_to_chat(body, model="m")["choices"]
    blocks = body["output"]["message"]["content"]
    assert (
        choice["message"]["reasoning_content"]
        == blocks[0]["reasoningContent"]["reasoningText"]["text"]
    )
    assert choice["message"]["content"] == blocks[1]["text"]
    assert choice["finish_reason"] == "stop"


def test_tool_body_translates() -> None:
    body = json.loads((fixture_dir("bedrock") / TOOL_BODY).read_text())
    completion = converse_response_to_chat(body, model="m")
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "tool-use-id",
            "type": "function",
            "function": {"name": "bash", "arguments": '{"command":"ls -l"}'},
        }
    ]
    assert completion["usage"]["total_tokens"] == 30
    assert completion["id"].startswith("chatcmpl-")


def test_recorded_request_matches_translation() -> None:
    recorded = json.loads((fixture_dir("bedrock") / RECORDED_REQUEST).read_text())
    translated = request(
        model="us.amazon.nova-micro-v1:0",
        messages=[
            {"role": "system", "content": "You are a helpful chatbot."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0.0,
    )
    assert translated == recorded


# ---------------------------------------------------------------------------
# Requests


def test_messages_merge_and_alternate() -> None:
    body = request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What's the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "weather",
                            "arguments": '{"city":"Paris"}',
                        },
                    },
                    {
                        "id": "toolu_01+odd/id",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_01+odd/id", "content": "25C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                    },
                },
            }
        ],
    )
    odd_id = tool_use_id("toolu_01+odd/id")
    assert odd_id.startswith("tooluse_")
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "What's the weather?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "call_abc",
                        "name": "weather",
                        "input": {"city": "Paris"},
                    }
                },
                {
                    "toolUse": {
                        "toolUseId": odd_id,
                        "name": "weather",
                        "input": {"city": "Rome"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_abc", "content": [{"text": "18C"}]}},
                {"toolResult": {"toolUseId": odd_id, "content": [{"text": "25C"}]}},
                {"text": "And tomorrow?"},
            ],
        },
    ]
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "weather",
                    "inputSchema": {
                        "json": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        }
                    },
                }
            }
        ],
        "toolChoice": {"auto": {}},
    }


def test_tool_use_id_rules() -> None:
    assert tool_use_id("call_Abc-123") == "call_Abc-123"
    long_id = "a" * 65
    assert tool_use_id(long_id) == tool_use_id(long_id)
    assert len(tool_use_id(long_id)) == len("tooluse_") + 32
    assert tool_use_id("x y") != tool_use_id("x z")


TOOLS = [
    {"type": "function", "function": {"name": "a", "description": "A."}},
    {"type": "function", "function": {"name": "b"}},
]


@pytest.mark.parametrize(
    ("choice", "names", "converse_choice"),
    [
        ("auto", ["a", "b"], {"auto": {}}),
        ("required", ["a", "b"], {"any": {}}),
        (
            {"type": "function", "function": {"name": "b"}},
            ["b"],
            {"tool": {"name": "b"}},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [
                        {"type": "function", "function": {"name": "a"}},
                        {"type": "function", "function": {"name": "b"}},
                    ],
                },
            },
            ["a", "b"],
            {"any": {}},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "a"}}],
                },
            },
            ["a"],
            {"auto": {}},
        ),
    ],
    ids=["auto", "required", "function", "allowed-required", "allowed-auto"],
)
def test_tool_choice_maps(
    choice: object, names: list[str], converse_choice: dict[str, Any]
) -> None:
    config = request(tools=TOOLS, tool_choice=choice)["toolConfig"]
    assert [tool["toolSpec"]["name"] for tool in config["tools"]] == names
    assert config["toolChoice"] == converse_choice
    assert config["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": {"type": "object", "properties": {}}
    }


def test_tool_choice_none_without_history_drops_tools() -> None:
    assert "toolConfig" not in request(tools=TOOLS, tool_choice="none")


def test_tool_choice_none_with_history_keeps_tools() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "a", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    config = request(tools=TOOLS, tool_choice="none", messages=messages)["toolConfig"]
    assert config["toolChoice"] == {"auto": {}}


def test_inference_config() -> None:
    body = request(max_tokens=300, temperature=0.2, top_p=0.8, stop=["a", "b"], seed=3)
    assert body["inferenceConfig"] == {
        "maxTokens": 300,
        "temperature": 0.2,
        "topP": 0.8,
        "stopSequences": ["a", "b"],
    }


def test_images_and_documents() -> None:
    body = request(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/jpeg;base64,AAAA"},
                    },
                    {"type": "image_url", "image_url": {"url": "s3://bucket/cat.png"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "Q3 report!.pdf",
                            "file_data": "data:application/pdf;base64,BBBB",
                        },
                    },
                    {
                        "type": "file",
                        "file": {
                            "filename": "Q3 report?.pdf",
                            "file_data": "data:application/pdf;base64,CCCC",
                        },
                    },
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}},
        {
            "image": {
                "format": "png",
                "source": {"s3Location": {"uri": "s3://bucket/cat.png"}},
            }
        },
        {
            "document": {
                "format": "pdf",
                "name": "Q3 report",
                "source": {"bytes": "BBBB"},
            }
        },
        {
            "document": {
                "format": "pdf",
                "name": "Q3 report (2)",
                "source": {"bytes": "CCCC"},
            }
        },
    ]


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
            "data URLs or s3",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}},
            "PNG, JPEG",
        ),
        ({"type": "file", "file": {"file_id": "file-1"}}, "base64 data URL"),
        (
            {"type": "file", "file": {"file_data": "data:video/mp4;base64,AA"}},
            "document type",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
            "input_audio",
        ),
    ],
    ids=["http-image", "bmp", "file-id", "video", "audio"],
)
def test_user_parts_rejected(part: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        request(messages=[{"role": "user", "content": [part]}])


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("n", 2, "n"),
        ("response_format", {"type": "json_object"}, "response_format.type"),
        ("tools", [{"type": "custom"}], "tools[0].type"),
    ],
)
def test_unsupported_fields_rejected(field: str, value: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        request(**{field: value})
    assert raised.value.param == param


def test_text_response_format_allowed() -> None:
    assert "inferenceConfig" not in request(response_format={"type": "text"})


@pytest.mark.parametrize(
    ("model", "effort", "fields"),
    [
        (
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "medium",
            {"thinking": {"type": "enabled", "budget_tokens": 8192}},
        ),
        ("anthropic.claude-3-7-sonnet", "none", None),
        (
            "us.amazon.nova-2-lite-v1:0",
            "minimal",
            {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": "low"}},
        ),
        ("meta.llama3-70b-instruct-v1:0", "high", None),
    ],
)
def test_reasoning_effort_maps(
    model: str, effort: str, fields: dict[str, Any] | None
) -> None:
    body = request(model=model, reasoning_effort=effort)
    assert body.get("additionalModelRequestFields") == fields


def test_reasoning_budget_must_fit_output_limit() -> None:
    with pytest.raises(InvalidRequest, match="less than the output limit of 4000"):
        request(reasoning_effort="medium", max_completion_tokens=4000)


# ---------------------------------------------------------------------------
# Responses, usage, stop reasons


def test_stop_reason_table() -> None:
    assert STOP_REASONS == {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "guardrail_intervened": "content_filter",
        "content_filtered": "content_filter",
    }
    assert map_stop_reason("something_new") == "stop"
    assert map_stop_reason(None) == "stop"


def test_usage_includes_cache() -> None:
    usage = converse_usage(
        {
            "inputTokens": 13,
            "outputTokens": 7,
            "cacheReadInputTokens": 1504,
            "cacheWriteInputTokens": 5,
            "totalTokens": 1529,
        }
    )
    assert usage == Usage(
        input_tokens=13 + 1504 + 5,
        output_tokens=7,
        cached_tokens=1504,
        cache_write_tokens=5,
    )
    assert converse_usage({"totalTokens": 3}) is None


def test_cache_write_reaches_usage_chunk() -> None:
    stream_translator = translator()
    stream_translator.feed_event("messageStop", {"stopReason": "end_turn"})
    stream_translator.feed_event(
        "metadata",
        {"usage": {"inputTokens": 3, "outputTokens": 1, "cacheWriteInputTokens": 9}},
    )
    stream = assemble(stream_translator.finish())
    assert stream.usage == {
        "prompt_tokens": 12,
        "completion_tokens": 1,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 9},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


# ---------------------------------------------------------------------------
# Streams: edge cases


def test_stream_two_tool_blocks_get_indexes() -> None:
    stream_translator = translator(include_usage=False)
    events: list[tuple[str, dict[str, Any]]] = [
        ("messageStart", {"role": "assistant"}),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 0, "delta": {"text": "Let me check."}},
        ),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        (
            "contentBlockStart",
            {
                "contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "t1", "name": "a"}},
            },
        ),
        (
            "contentBlockStart",
            {
                "contentBlockIndex": 2,
                "start": {"toolUse": {"toolUseId": "t2", "name": "b"}},
            },
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"y":'}}},
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"x":1}'}}},
        ),
        (
            "contentBlockDelta",
            {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "2}"}}},
        ),
        ("messageStop", {"stopReason": "tool_use"}),
    ]
    out = b"".join(stream_translator.feed_event(*event) for event in events)
    stream = assemble(out + stream_translator.finish())
    calls = stream.choices[0].tool_calls
    assert calls == {
        0: {"id": "t1", "name": "a", "arguments": '{"x":1}'},
        1: {"id": "t2", "name": "b", "arguments": '{"y":2}'},
    }
    assert stream.choices[0].text == "Let me check."
    assert stream.choices[0].roles == ["assistant"]


def test_stream_exception_becomes_error_event() -> None:
    data = encode_event("messageStart", b'{"role":"assistant"}') + encode_exception(
        "throttlingException", b'{"message":"Too many requests, please wait."}'
    )
    out, stream_translator = translate_wire(data)
    stream = assemble(out)
    assert stream.errors == [
        {
            "message": "Too many requests, please wait.",
            "type": "rate_limit_error",
            "param": None,
            "code": "throttlingException",
        }
    ]
    assert not stream.done
    assert stream_translator.failed


def test_stream_error_message_type() -> None:
    data = encode_message(
        {
            ":message-type": "error",
            ":error-code": "InternalFailure",
            ":error-message": "boom",
        }
    )
    stream = assemble(translate_wire(data)[0])
    assert stream.errors[0]["code"] == "InternalFailure"
    assert "boom" in stream.errors[0]["message"]


def test_stream_cut_off_ends_with_error() -> None:
    stream_translator = translator()
    out = stream_translator.feed_event(
        "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Par"}}
    )
    stream = assemble(out + stream_translator.finish())
    assert stream.errors[0]["code"] == "upstream_stream_truncated"
    assert not stream.done


def test_stream_tool_delta_without_start_fails() -> None:
    stream_translator = translator()
    out = stream_translator.feed_event(
        "contentBlockDelta",
        {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}},
    )
    assert assemble(out).errors[0]["code"] == "upstream_invalid_response"


def test_stream_invalid_payload_fails() -> None:
    out, _ = translate_wire(encode_event("messageStart", b"[1, 2]"))
    assert assemble(out).errors[0]["code"] == "upstream_invalid_response"


def test_stream_unknown_events_ignored() -> None:
    stream_translator = translator(include_usage=False)
    assert stream_translator.feed_event("somethingNew", {"x": 1}) == b""
    assert (
        stream_translator.feed_event("contentBlockStop", {"contentBlockIndex": 0})
        == b""
    )


# ---------------------------------------------------------------------------
# Errors and URLs


def test_http_error_with_type_header() -> None:
    error = bedrock_error_to_openai(
        400,
        b'{"message":"The provided model identifier is invalid."}',
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
    )
    assert error.status == 400
    assert error.body == {
        "error": {
            "message": "The provided model identifier is invalid.",
            "type": "invalid_request_error",
            "param": None,
            "code": "ValidationException",
        }
    }


def test_http_error_type_from_body() -> None:
    error = bedrock_error_to_openai(
        429,
        {"__type": "com.amazon.bedrock#ThrottlingException", "Message": "Slow down"},
    )
    assert error.body["error"]["code"] == "ThrottlingException"
    assert error.body["error"]["message"] == "Slow down"
    assert error.body["error"]["type"] == "rate_limit_error"


def test_http_error_not_json() -> None:
    error = bedrock_error_to_openai(503, b"Service Unavailable")
    assert (
        error.body["error"]["message"]
        == "Bedrock returned HTTP 503: Service Unavailable"
    )
    assert error.body["error"]["code"] is None


def test_stream_exception_types() -> None:
    assert (
        stream_exception_to_openai("validationException", {"message": "m"})["error"][
            "type"
        ]
        == "invalid_request_error"
    )
    unknown = stream_exception_to_openai("modelStreamErrorException", None)["error"]
    assert unknown["type"] == "server_error"
    assert unknown["message"] == "Bedrock stream failed: modelStreamErrorException."


@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        (
            "us.amazon.nova-micro-v1:0",
            True,
            "/model/us.amazon.nova-micro-v1%3A0/converse-stream",
        ),
        ("anthropic.claude-3-haiku", False, "/model/anthropic.claude-3-haiku/converse"),
        (
            "arn:aws:bedrock:us-east-1:123:inference-profile/x",
            False,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fx/converse",
        ),
    ],
)
def test_converse_path(model: str, stream: bool, path: str) -> None:
    assert converse_path(model, stream=stream) == path


def test_runtime_url() -> None:
    assert (
        bedrock_runtime_url("us-east-1")
        == "https://bedrock-runtime.us-east-1.amazonaws.com"
    )
    assert bedrock_runtime_url("us-gov-west-1").endswith("us-gov-west-1.amazonaws.com")
    for bad in ("", "us-east-1.evil.com/", "US-EAST-1", "localhost"):
        with pytest.raises(ValueError, match="invalid AWS region"):
            bedrock_runtime_url(bad)
    with pytest.raises(ValueError, match="empty"):
        converse_path("", stream=False)


def test_document_names_unique_across_messages() -> None:
    document = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AA"},
    }
    body = request(
        messages=[
            {"role": "user", "content": [document]},
            {"role": "assistant", "content": "Read it."},
            {"role": "user", "content": [document]},
        ]
    )
    names = [
        block["document"]["name"]
        for message in body["messages"]
        for block in message["content"]
        if "document" in block
    ]
    assert names == ["a", "a (2)"]
