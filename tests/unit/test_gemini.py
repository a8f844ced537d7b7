"""Gemini <-> OpenAI Chat Completions: requests, responses, streams, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmgw.errors import InvalidRequest
from llmgw.protocols.gemini import (
    FINISH_REASONS,
    SKIP_SIGNATURE_VALIDATOR,
    GeminiStreamTranslator,
    chat_request_to_gemini,
    decode_tool_call_id,
    encode_tool_call_id,
    gemini_error_to_openai,
    gemini_response_to_chat,
    gemini_usage,
    generate_content_path,
    map_finish_reason,
    retry_delay_seconds,
)
from llmgw.protocols.gemini_schema import gemini_schema
from llmgw.protocols.openai import Usage, parse_chat_request
from llmgw.protocols.sse import SSEParser
from tests.unit.translation_helpers import (
    AssembledStream,
    assemble,
    fixture_dir,
    fixture_params,
    read_lines,
)

CRLF_STREAM = "pydantic-gemini-stream-generate-content-crlf.sse"
CRLF_REQUEST = "pydantic-gemini-stream-generate-content-crlf.request.json"
TEXT_STREAM = "vercel-google-stream-text.chunks.txt"
TOOL_STREAM = "vercel-google-stream-tool-call.chunks.txt"
TEXT_BODY = "vercel-google-text.json"
TOOL_BODY = "vercel-google-tool-call.json"
ERROR_429 = "vercel-google-error-429-retry-info.json"


def request(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "gemini-2.5-flash")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return chat_request_to_gemini(parse_chat_request(body))


def translate_stream(
    data: bytes, *, include_usage: bool = True, pieces: int = 1
) -> tuple[bytes, GeminiStreamTranslator]:
    """Run SSE bytes through the parser and translator, split into pieces."""
    translator = GeminiStreamTranslator(
        model="gemini-test", include_usage=include_usage, created=1700000000
    )
    parser = SSEParser()
    size = max(1, -(-len(data) // pieces))
    out = b""
    for start in range(0, len(data), size):
        for event in parser.feed(data[start : start + size]):
            if event.has_data:
                out += translator.feed(event.data)
    for event in parser.flush():
        if event.has_data:
            out += translator.feed(event.data)
    return out + translator.finish(), translator


def wire_from_lines(path: Path) -> bytes:
    """Rebuild the SSE body of a ``.chunks.txt`` recording, with CRLF as
    Gemini sends it."""
    return b"".join(
        b"data: " + line.encode() + b"\r\n\r\n"
        for line in path.read_text().splitlines()
        if line
    )


def source_parts(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        part
        for line in lines
        for candidate in line.get("candidates", [])
        for part in candidate["content"]["parts"]
    ]


# ---------------------------------------------------------------------------
# Golden tests over the recordings


def test_every_fixture_has_a_golden_test() -> None:
    names = {path.name for path in fixture_dir("gemini").iterdir()}
    assert names == {
        CRLF_STREAM,
        CRLF_REQUEST,
        TEXT_STREAM,
        TOOL_STREAM,
        TEXT_BODY,
        TOOL_BODY,
        ERROR_429,
    }


def test_crlf_stream_events_in_order() -> None:
    data = (fixture_dir("gemini") / CRLF_STREAM).read_bytes()
    out, translator = translate_stream(data)
    stream = assemble(out)

    deltas = [chunk["choices"][0]["delta"] for chunk in stream.chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "The"},
        {"content": " capital of France"},
        {"content": " is Paris.\n"},
        {},
    ]
    assert stream.chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert stream.chunks[-1]["choices"] == []
    assert stream.done
    assert stream.errors == []
    assert {chunk["id"] for chunk in stream.chunks} == {
        "chatcmpl-w1peaMz6INOvnvgPgYfPiQY"
    }
    assert {chunk["model"] for chunk in stream.chunks} == {"gemini-test"}
    assert translator.completed


def test_crlf_stream_usage_takes_latest() -> None:
    data = (fixture_dir("gemini") / CRLF_STREAM).read_bytes()
    out, translator = translate_stream(data)
    # promptTokenCount went 15 -> 13 on the last chunk; the last value wins.
    assert translator.usage == Usage(input_tokens=13, output_tokens=8)
    assert assemble(out).usage == {
        "prompt_tokens": 13,
        "completion_tokens": 8,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_crlf_stream_without_include_usage() -> None:
    data = (fixture_dir("gemini") / CRLF_STREAM).read_bytes()
    out, translator = translate_stream(data, include_usage=False)
    stream = assemble(out)
    assert stream.usage is None
    assert all(chunk["choices"] for chunk in stream.chunks)
    assert stream.done
    assert translator.usage is not None


def test_crlf_stream_split_at_every_offset() -> None:
    data = (fixture_dir("gemini") / CRLF_STREAM).read_bytes()
    whole_parser = SSEParser()
    whole_events = whole_parser.feed(data) + whole_parser.flush()
    assert len(whole_events) == 3
    whole, _ = translate_stream(data)

    for offset in range(len(data) + 1):
        parser = SSEParser()
        events = parser.feed(data[:offset]) + parser.feed(data[offset:])
        events += parser.flush()
        assert events == whole_events, offset

        translator = GeminiStreamTranslator(
            model="gemini-test", include_usage=True, created=1700000000
        )
        out = b"".join(translator.feed(event.data) for event in events)
        assert out + translator.finish() == whole, offset


def test_text_stream_joins_to_source() -> None:
    path = fixture_dir("gemini") / TEXT_STREAM
    out, translator = translate_stream(wire_from_lines(path))
    stream = assemble(out)

    source_text = "".join(
        part.get("text", "") for part in source_parts(read_lines(path))
    )
    assert stream.choices[0].text == source_text
    assert stream.choices[0].finish_reason == "stop"
    assert stream.choices[0].tool_calls == {}
    # The last chunk's empty text (with a signature) sends no delta.
    assert all(
        chunk["choices"][0]["delta"].get("content") != ""
        for chunk in stream.chunks[1:-1]
    )
    assert translator.usage == Usage(
        input_tokens=9, output_tokens=23 + 185, reasoning_tokens=185
    )
    assert stream.usage is not None
    assert stream.usage["completion_tokens_details"] == {"reasoning_tokens": 185}
    assert stream.usage["total_tokens"] == 217


def test_tool_stream_becomes_tool_call() -> None:
    path = fixture_dir("gemini") / TOOL_STREAM
    out, translator = translate_stream(wire_from_lines(path))
    stream = assemble(out)
    source = source_parts(read_lines(path))[0]

    choice = stream.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert list(choice.tool_calls) == [0]
    call = choice.tool_calls[0]
    assert call["name"] == "weather"
    assert json.loads(call["arguments"]) == source["functionCall"]["args"]
    call_id, signature = decode_tool_call_id(call["id"])
    assert call_id.startswith("call_")
    assert signature == source["thoughtSignature"]
    assert choice.text == ""
    assert translator.usage == Usage(
        input_tokens=29, output_tokens=15 + 45, reasoning_tokens=45
    )


@pytest.mark.parametrize("path", fixture_params("gemini", "*.chunks.txt"))
def test_recorded_streams_split_bytewise(path: Path) -> None:
    data = wire_from_lines(path)
    whole, _ = translate_stream(data)
    split, _ = translate_stream(data, pieces=len(data))
    split_choices = assemble(split).choices
    whole_choices = assemble(whole).choices
    # Tool call ids are generated per run; their signature part is not.
    for choices in (split_choices, whole_choices):
        for choice in choices.values():
            for call in choice.tool_calls.values():
                call["id"] = str(decode_tool_call_id(call["id"])[1])
    assert split_choices == whole_choices


def test_text_body_translates() -> None:
    body = json.loads((fixture_dir("gemini") / TEXT_BODY).read_text())
    completion = gemini_response_to_chat(body, created=1)

    assert completion["id"] == "chatcmpl-Un6LacrVMcjUxs0PmJfWoQc"
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "gemini-3-pro-preview"
    (choice,) = completion["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": body["candidates"][0]["content"]["parts"][0]["text"],
    }
    assert choice["finish_reason"] == "stop"
    assert completion["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 28 + 244,
        "total_tokens": 281,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 244},
    }


def test_tool_body_translates() -> None:
    body = json.loads((fixture_dir("gemini") / TOOL_BODY).read_text())
    completion = gemini_response_to_chat(body, model="my-gemini", created=1)

    assert completion["model"] == "my-gemini"
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco"}
    part = body["candidates"][0]["content"]["parts"][0]
    assert decode_tool_call_id(call["id"])[1] == part["thoughtSignature"]
    assert completion["usage"]["total_tokens"] == 937


def test_error_429_keeps_status_and_retry() -> None:
    raw = (fixture_dir("gemini") / ERROR_429).read_bytes()
    error = gemini_error_to_openai(429, raw)
    assert error.status == 429
    assert error.body == {
        "error": {
            "message": "You exceeded your current quota, please check your plan.",
            "type": "rate_limit_error",
            "param": None,
            "code": "resource_exhausted",
        }
    }
    # retryDelay "34.4s", rounded up to whole seconds.
    assert error.headers == {"retry-after": "35"}


def test_recorded_request_matches_translation() -> None:
    recorded = json.loads((fixture_dir("gemini") / CRLF_REQUEST).read_text())
    translated = request(
        model="gemini-2.0-flash-exp",
        messages=[
            {"role": "system", "content": "You are a helpful chatbot."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0.0,
    )
    assert translated["contents"] == recorded["contents"]
    assert translated["generationConfig"] == recorded["generationConfig"]
    # The recording's client also sent "role": "user", which Gemini ignores.
    assert translated["systemInstruction"] == {
        "parts": recorded["systemInstruction"]["parts"]
    }
    assert set(translated) == set(recorded)


# ---------------------------------------------------------------------------
# Requests


def test_system_messages_hoisted_in_order() -> None:
    body = request(
        messages=[
            {"role": "system", "content": "One."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Two."}]},
        ]
    )
    assert body["systemInstruction"] == {"parts": [{"text": "One."}, {"text": "Two."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


def test_only_system_messages_rejected() -> None:
    with pytest.raises(InvalidRequest, match="at least one user or assistant"):
        request(messages=[{"role": "system", "content": "x"}])


def test_user_parts_translate() -> None:
    body = request(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg?x=1"},
                    },
                    {
                        "type": "input_audio",
                        "input_audio": {"data": "BBBB", "format": "wav"},
                    },
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,CCCC"},
                    },
                    {
                        "type": "file",
                        "file": {"file_data": "DDDD", "filename": "a.pdf"},
                    },
                ],
            }
        ]
    )
    assert body["contents"][0]["parts"] == [
        {"text": "Look"},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {
            "fileData": {
                "fileUri": "https://example.com/cat.jpg?x=1",
                "mimeType": "image/jpeg",
            }
        },
        {"inlineData": {"mimeType": "audio/wav", "data": "BBBB"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "CCCC"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "DDDD"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "file", "file": {"file_id": "file-1"}}, "file.file_data"),
        ({"type": "file", "file": {"file_data": "AAAA"}}, "content[0].file"),
        (
            {"type": "input_audio", "input_audio": {"data": "A", "format": "ogg"}},
            "format",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,abc"}},
            "content[0]",
        ),
        ({"type": "video"}, "content[0].type"),
    ],
    ids=["file-id", "file-no-type", "audio-format", "data-url-not-base64", "unknown"],
)
def test_user_parts_rejected(part: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        request(messages=[{"role": "user", "content": [part]}])
    assert raised.value.param is not None
    assert raised.value.param.endswith(param)


def tool_conversation(call_id: str = "call_1") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18C"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": [{"type": "text", "text": "25C"}],
        },
        {"role": "user", "content": "Thanks"},
    ]


def test_tool_round_trip_contents() -> None:
    body = request(messages=tool_conversation())
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {
                    "functionCall": {
                        "id": "call_1",
                        "name": "weather",
                        "args": {"city": "Paris"},
                    }
                },
                {
                    "functionCall": {
                        "id": "call_2",
                        "name": "weather",
                        "args": {"city": "Rome"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_1",
                        "name": "weather",
                        "response": {"output": "18C"},
                    }
                },
                {
                    "functionResponse": {
                        "id": "call_2",
                        "name": "weather",
                        "response": {"output": "25C"},
                    }
                },
                {"text": "Thanks"},
            ],
        },
    ]


def test_thought_signature_returns_from_id() -> None:
    call_id = encode_tool_call_id("call_1", "c2lnbmF0dXJl+/=")
    body = request(model="gemini-3-pro-preview", messages=tool_conversation(call_id))
    parts = body["contents"][1]["parts"]
    assert parts[1] == {
        "functionCall": {"id": "call_1", "name": "weather", "args": {"city": "Paris"}},
        "thoughtSignature": "c2lnbmF0dXJl+/=",
    }
    assert "thoughtSignature" not in parts[2]
    response = body["contents"][2]["parts"][0]["functionResponse"]
    assert response["id"] == "call_1"


def test_missing_signature_gemini_3_gets_skip_value() -> None:
    body = request(model="gemini-3-flash", messages=tool_conversation())
    parts = body["contents"][1]["parts"]
    assert parts[1]["thoughtSignature"] == SKIP_SIGNATURE_VALIDATOR
    assert "thoughtSignature" not in parts[2]


def test_missing_signature_gemini_2_left_out() -> None:
    body = request(model="gemini-2.5-pro", messages=tool_conversation())
    assert all("thoughtSignature" not in part for part in body["contents"][1]["parts"])


def test_upstream_model_decides_gemini_3() -> None:
    parsed = parse_chat_request({"model": "alias", "messages": tool_conversation()})
    body = chat_request_to_gemini(parsed, upstream_model="models/gemini-3-pro")
    assert (
        body["contents"][1]["parts"][1]["thoughtSignature"] == SKIP_SIGNATURE_VALIDATOR
    )


def test_tool_call_id_codec() -> None:
    assert encode_tool_call_id("call_1", None) == "call_1"
    assert decode_tool_call_id("call_1") == ("call_1", None)
    encoded = encode_tool_call_id("abc", "sig")
    assert encoded == "abc__thought__sig"
    assert decode_tool_call_id(encoded) == ("abc", "sig")
    assert decode_tool_call_id("abc__thought__") == ("abc", None)


def test_tool_result_unknown_id_rejected() -> None:
    with pytest.raises(InvalidRequest, match="no earlier assistant") as raised:
        request(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_9", "content": "y"},
            ]
        )
    assert raised.value.param == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{bad", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (5, "expected a string"),
    ],
    ids=["invalid-json", "not-object", "not-string"],
)
def test_bad_tool_arguments_rejected(arguments: object, message: str) -> None:
    messages = tool_conversation()
    messages[1]["tool_calls"][0]["function"]["arguments"] = arguments
    with pytest.raises(InvalidRequest, match=message) as raised:
        request(messages=messages)
    assert raised.value.param == "messages[1].tool_calls[0].function.arguments"


def test_empty_tool_arguments_are_empty_object() -> None:
    messages = tool_conversation()
    messages[1]["tool_calls"][0]["function"]["arguments"] = ""
    body = request(messages=messages)
    assert body["contents"][1]["parts"][1]["functionCall"]["args"] == {}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Get the weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}},
}


def test_tools_become_declarations() -> None:
    body = request(tools=[WEATHER_TOOL, CLOCK_TOOL])
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Get the weather.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
                # No properties: Gemini rejects an empty object schema.
                {"name": "clock"},
            ]
        }
    ]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "clock"}},
            {"mode": "ANY", "allowedFunctionNames": ["clock"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "weather"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["weather"]},
        ),
    ],
    ids=["none", "auto", "required", "function", "allowed-required"],
)
def test_tool_choice_maps(choice: object, config: dict[str, Any]) -> None:
    body = request(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_allowed_tools_auto_filters_declarations() -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "clock"}}],
        },
    }
    body = request(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=choice)
    assert body["tools"] == [{"functionDeclarations": [{"name": "clock"}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("tools", [{"type": "custom", "custom": {"name": "x"}}], "tools[0].type"),
        ("tool_choice", "sometimes", "tool_choice"),
        ("tool_choice", {"type": "custom"}, "tool_choice.type"),
        ("functions", [{"name": "x"}], "functions"),
        ("stop", [1], "stop"),
        ("temperature", "hot", "temperature"),
        ("reasoning_effort", "max", "reasoning_effort"),
        ("response_format", {"type": "yaml"}, "response_format.type"),
    ],
)
def test_invalid_fields_rejected(field: str, value: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        request(**{field: value})
    assert raised.value.param == param


def test_generation_config_fields() -> None:
    body = request(
        max_completion_tokens=100,
        max_tokens=50,
        temperature=0.5,
        top_p=0.9,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "city",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                },
            },
        },
        logprobs=True,
        user="u1",
    )
    assert body["generationConfig"] == {
        "maxOutputTokens": 100,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
        },
    }


def test_json_object_format() -> None:
    body = request(response_format={"type": "json_object"})
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0, "includeThoughts": False}),
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3-pro", "high", {"thinkingLevel": "high", "includeThoughts": True}),
        (
            "gemini-3-flash",
            "none",
            {"thinkingLevel": "minimal", "includeThoughts": False},
        ),
    ],
)
def test_reasoning_effort_maps(
    model: str, effort: str, thinking: dict[str, Any]
) -> None:
    body = request(model=model, reasoning_effort=effort)
    assert body["generationConfig"]["thinkingConfig"] == thinking


def test_no_generation_config_when_nothing_set() -> None:
    assert "generationConfig" not in request()


# ---------------------------------------------------------------------------
# Schema cleaning


def test_schema_drops_rejected_keywords() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "x",
        "title": "Args",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "n": {
                "type": "integer",
                "exclusiveMinimum": 0,
                "minimum": 1,
                "examples": [3],
            },
        },
        "required": ["n", "ghost"],
    }
    assert gemini_schema(schema, "p") == {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }


def test_schema_nullable_forms() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "B"},
            "c": {"enum": ["x", None]},
        },
    }
    assert gemini_schema(schema, "p")["properties"] == {
        "a": {"type": "string", "nullable": True},
        "b": {"type": "integer", "nullable": True, "description": "B"},
        "c": {"type": "string", "enum": ["x"], "nullable": True},
    }


def test_schema_refs_expand() -> None:
    schema = {
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/Place", "description": "Home."}},
        "$defs": {
            "Place": {
                "type": "object",
                "properties": {"city": {"$ref": "#/definitions/City"}},
            }
        },
        "definitions": {"City": {"type": "string", "const": "Paris"}},
    }
    assert gemini_schema(schema, "p") == {
        "type": "object",
        "properties": {
            "home": {
                "type": "object",
                "description": "Home.",
                "properties": {"city": {"type": "string", "enum": ["Paris"]}},
            }
        },
    }


def test_schema_recursive_ref_cut_off() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "child": {"$ref": "#/$defs/Node"},
                    "name": {"type": "string"},
                },
            }
        },
    }
    cleaned = gemini_schema(schema, "p")
    assert cleaned["properties"]["name"] == {"type": "string"}
    assert cleaned["properties"]["child"] == {"type": "object"}


def test_schema_external_ref_rejected() -> None:
    with pytest.raises(
        InvalidRequest, match="unsupported JSON Schema reference"
    ) as raised:
        gemini_schema(
            {"$ref": "https://example.com/s.json"}, "tools[0].function.parameters"
        )
    assert raised.value.param == "tools[0].function.parameters"


def test_schema_all_of_one_of_merge() -> None:
    schema = {
        "allOf": [
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
            },
            {"properties": {"b": {"oneOf": [{"type": "string"}, {"type": "number"}]}}},
        ]
    }
    assert gemini_schema(schema, "p") == {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["a"],
    }


def test_schema_non_string_enum_and_format_described() -> None:
    schema = {
        "type": "object",
        "properties": {
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "Level."},
            "mail": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date-time"},
            "ratio": {"type": "number", "format": "double"},
            "kinds": {"type": "array", "items": {"type": ["string", "integer"]}},
        },
    }
    assert gemini_schema(schema, "p")["properties"] == {
        "level": {"type": "integer", "description": "Level. Allowed values: 1, 2, 3."},
        "mail": {"type": "string", "description": "Format: email."},
        "when": {"type": "string", "format": "date-time"},
        "ratio": {"type": "number", "format": "double"},
        "kinds": {
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
    }


def test_schema_input_not_modified() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"type": "string"}},
    }
    copy = json.loads(json.dumps(schema))
    gemini_schema(schema, "p")
    assert schema == copy


# ---------------------------------------------------------------------------
# Responses, usage, finish reasons


def test_finish_reason_table() -> None:
    filtered = {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
    for reason, mapped in FINISH_REASONS.items():
        if reason in filtered:
            assert mapped == "content_filter", reason
        elif reason == "MAX_TOKENS":
            assert mapped == "length"
        else:
            assert mapped == "stop", reason
    assert map_finish_reason("SOMETHING_NEW") == "stop"
    assert map_finish_reason(None) == "stop"


def test_usage_mapping_all_fields() -> None:
    usage = gemini_usage(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 155,
        }
    )
    assert usage == Usage(
        input_tokens=105, output_tokens=50, cached_tokens=60, reasoning_tokens=30
    )
    assert gemini_usage({"totalTokenCount": 3}) is None
    assert gemini_usage(None) is None


def test_response_thoughts_and_blocked_prompt() -> None:
    body = {
        "candidates": [
            {
                "index": 0,
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Let me think.", "thought": True},
                        {"text": "Answer."},
                        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                    ],
                },
                "finishReason": "MAX_TOKENS",
            },
            {
                "index": 1,
                "content": {"parts": [{"text": "Other."}]},
                "finishReason": "SAFETY",
            },
        ]
    }
    choices = gemini_response_to_chat(body, model="m", created=1)["choices"]
    assert choices[0]["message"] == {
        "role": "assistant",
        "content": "Answer.",
        "reasoning_content": "Let me think.",
    }
    assert choices[0]["finish_reason"] == "length"
    assert choices[1]["index"] == 1
    assert choices[1]["finish_reason"] == "content_filter"

    blocked = gemini_response_to_chat(
        {"promptFeedback": {"blockReason": "SAFETY"}}, model="m", created=1
    )
    assert blocked["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    assert "usage" not in blocked
    assert blocked["id"].startswith("chatcmpl-")


def test_gemini_id_kept_for_tool_call() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "parts": [{"functionCall": {"id": "g-7", "name": "f", "args": {}}}]
                },
                "finishReason": "STOP",
            }
        ]
    }
    (call,) = gemini_response_to_chat(body, model="m")["choices"][0]["message"][
        "tool_calls"
    ]
    assert call["id"] == "g-7"
    assert call["function"]["arguments"] == "{}"


# ---------------------------------------------------------------------------
# Streams: edge cases


def feed_all(translator: GeminiStreamTranslator, *chunks: dict[str, Any]) -> bytes:
    return b"".join(translator.feed(json.dumps(chunk)) for chunk in chunks)


def test_stream_parallel_calls_and_candidates() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=False)
    out = feed_all(
        translator,
        {
            "candidates": [
                {
                    "index": 0,
                    "content": {
                        "parts": [
                            {"thought": True, "text": "hmm"},
                            {"functionCall": {"name": "a", "args": {"x": 1}}},
                            {"functionCall": {"name": "b", "args": {}}},
                        ]
                    },
                },
                {"index": 1, "content": {"parts": [{"text": "second"}]}},
            ]
        },
        {
            "candidates": [
                {"index": 0, "finishReason": "STOP"},
                {"index": 1, "finishReason": "MAX_TOKENS"},
            ]
        },
    )

    stream: AssembledStream = assemble(out + translator.finish())
    first = stream.choices[0]
    assert first.reasoning == "hmm"
    assert [call["name"] for call in first.tool_calls.values()] == ["a", "b"]
    assert list(first.tool_calls) == [0, 1]
    assert first.tool_calls[0]["arguments"] == '{"x":1}'
    assert first.finish_reason == "tool_calls"

    assert stream.choices[1].text == "second"
    assert stream.choices[1].finish_reason == "length"
    assert stream.done


def test_stream_waits_for_every_candidate() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=False)
    feed_all(
        translator,
        {"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]}}]},
        {"candidates": [{"index": 1, "content": {"parts": [{"text": "b"}]}}]},
        {"candidates": [{"index": 0, "finishReason": "STOP"}]},
    )
    assert not translator.completed
    translator.feed(json.dumps({"candidates": [{"index": 1, "finishReason": "STOP"}]}))
    assert translator.completed


def test_stream_blocked_prompt() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=False)
    out = translator.feed(
        json.dumps({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    )
    stream = assemble(out + translator.finish())
    assert stream.choices[0].finish_reason == "content_filter"
    assert stream.done


def test_stream_cut_off_ends_with_error() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=True)
    out = translator.feed(
        json.dumps({"candidates": [{"content": {"parts": [{"text": "Hal"}]}}]})
    )
    out += translator.finish()
    stream = assemble(out)
    assert not stream.done
    assert stream.errors[0]["code"] == "upstream_stream_truncated"
    assert not translator.completed
    assert translator.finish() == b""


def test_stream_error_event() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=True)
    out = translator.feed(
        json.dumps(
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        )
    )
    assert out.startswith(b"data: ")
    stream = assemble(out + translator.finish())
    assert stream.errors == [
        {
            "message": "overloaded",
            "type": "server_error",
            "param": None,
            "code": "unavailable",
        }
    ]
    assert not stream.done
    assert translator.failed
    assert translator.feed(json.dumps({"candidates": []})) == b""


def test_stream_invalid_json_event() -> None:
    translator = GeminiStreamTranslator(model="m", include_usage=False)
    stream = assemble(translator.feed("not json"))
    assert stream.errors[0]["code"] == "upstream_invalid_response"
    assert "not json" in stream.errors[0]["message"]


# ---------------------------------------------------------------------------
# Errors and paths


def test_error_without_retry_info() -> None:
    error = gemini_error_to_openai(
        400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    )
    assert error.body["error"] == {
        "message": "bad",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_argument",
    }
    assert error.headers == {}


def test_error_array_and_non_json_bodies() -> None:
    wrapped = gemini_error_to_openai(
        403,
        b'[{"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}}]',
    )
    assert wrapped.body["error"]["code"] == "permission_denied"
    assert wrapped.body["error"]["type"] == "permission_error"

    html = gemini_error_to_openai(502, b"<html>Bad Gateway</html>")
    assert html.status == 502
    assert (
        html.body["error"]["message"]
        == "Gemini returned HTTP 502: <html>Bad Gateway</html>"
    )
    assert html.body["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("delay", "seconds"),
    [("34.4s", 34.4), ("1s", 1.0), ("0.000000001s", 1e-9), ("5m", None), ("-1s", None)],
)
def test_retry_delay_parsing(delay: str, seconds: float | None) -> None:
    details = [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    ]
    assert retry_delay_seconds(details) == seconds


def test_tiny_retry_delay_rounds_to_one_second() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "slow",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": "0.2s",
                }
            ],
        }
    }
    assert gemini_error_to_openai(429, body).headers == {"retry-after": "1"}


@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        ("gemini-2.5-flash", False, "/models/gemini-2.5-flash:generateContent"),
        (
            "models/gemini-2.5-flash",
            True,
            "/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        ),
        ("tuned/x y", False, "/models/tuned%2Fx%20y:generateContent"),
    ],
)
def test_generate_content_path(model: str, stream: bool, path: str) -> None:
    assert generate_content_path(model, stream=stream) == path


def test_generate_content_path_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        generate_content_path("models/", stream=False)
