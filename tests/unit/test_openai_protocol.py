"""OpenAI wire helpers: request validation, usage, the stream tally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from llmgw.errors import InvalidRequest
from llmgw.protocols.openai import (
    DONE_EVENT,
    TOOL_CALL_OVERHEAD_TOKENS,
    ChatRequest,
    StreamTally,
    Usage,
    error_body,
    error_event,
    extract_usage,
    parse_chat_request,
    parse_embeddings_request,
)
from llmgw.protocols.sse import SSEParser
from llmgw.tokens import TokenCounter, count_text
from tests.conftest import FIXTURES_DIR

OPENAI_DIR = FIXTURES_DIR / "openai"
MISTRAL_DIR = FIXTURES_DIR / "mistral"
OLLAMA_DIR = FIXTURES_DIR / "ollama"

# Usage (input, output) that each recorded OpenAI stream reports in its final
# chunk.
STREAM_USAGE = {
    "openai-chat-stream-text.sse": (14, 30),
    "openai-chat-stream-text-logprobs.sse": (9, 2),
    "openai-chat-stream-n3-multiple-choices.sse": (79, 42),
    "openai-chat-stream-finish-length.sse": (79, 1),
    "openai-chat-stream-refusal.sse": (79, 11),
    "openai-chat-stream-refusal-logprobs.sse": (79, 12),
    "openai-chat-stream-single-tool-call.sse": (44, 16),
    "openai-chat-stream-parallel-tool-calls.sse": (149, 60),
    "openai-chat-stream-json-schema-content.sse": (79, 14),
    "openai-chat-stream-long-json-content.sse": (19, 177),
}

BODY_USAGE = [
    pytest.param(
        OPENAI_DIR / "vercel-openai-chat-text.json", Usage(16, 363), id="openai"
    ),
    pytest.param(
        OPENAI_DIR / "vercel-openai-embedding.json", Usage(12, 0), id="embedding"
    ),
    pytest.param(
        MISTRAL_DIR / "vercel-mistral-text.json", Usage(13, 434), id="mistral"
    ),
    pytest.param(
        MISTRAL_DIR / "vercel-mistral-tool-call.json", Usage(124, 22), id="mistral-tool"
    ),
    pytest.param(
        OLLAMA_DIR / "pydantic-ollama-cloud-chat-text-with-reasoning.response.json",
        Usage(134, 122),
        id="ollama-cloud",
    ),
    pytest.param(
        OLLAMA_DIR / "pydantic-ollama-cloud-chat-tool-call.response.json",
        Usage(206, 194),
        id="ollama-tool",
    ),
    pytest.param(
        OLLAMA_DIR / "pydantic-ollama-local-chat-json-schema.response.json",
        Usage(136, 15),
        id="ollama-local",
    ),
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture(scope="module")
def o200k(counter: TokenCounter) -> tiktoken.Encoding:
    return counter.encoding("o200k_base")


def sse_chunks(path: Path) -> Iterator[dict[str, Any]]:
    """Parse an .sse fixture into its JSON payloads, without [DONE]."""
    parser = SSEParser()
    for event in [*parser.feed(path.read_bytes()), *parser.flush()]:
        if event.data != "[DONE]":
            yield json.loads(event.data)


def line_chunks(path: Path) -> list[dict[str, Any]]:
    """Parse a .chunks.txt fixture, which contains one JSON payload per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def chat_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not ...}


def test_parse_chat_request_minimal() -> None:
    body = chat_body()
    request = parse_chat_request(body)
    assert request == ChatRequest(
        body=body,
        model="gpt-4o",
        messages=body["messages"],
        stream=False,
        max_tokens=None,
        max_completion_tokens=None,
        include_usage=False,
        n=1,
    )
    assert request.body is body


def test_parse_chat_request_all_fields() -> None:
    body = chat_body(
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=100,
        max_completion_tokens=50,
        n=3,
        temperature=0.2,
    )
    request = parse_chat_request(body)
    assert request.stream is True
    assert request.include_usage is True
    assert request.max_tokens == 100
    assert request.max_completion_tokens == 50
    assert request.max_output_tokens == 50
    assert request.n == 3


@pytest.mark.parametrize(
    ("fields", "include_usage"),
    [
        pytest.param({"stream": True}, False, id="no-options"),
        pytest.param(
            {"stream": True, "stream_options": None}, False, id="null-options"
        ),
        pytest.param(
            {"stream": True, "stream_options": {"include_usage": False}},
            False,
            id="asked-not",
        ),
        pytest.param(
            {"stream": False, "stream_options": {"include_usage": True}},
            False,
            id="not-streaming",
        ),
        pytest.param(
            {"stream": True, "stream_options": {"include_obfuscation": False}},
            False,
            id="other-option",
        ),
    ],
)
def test_parse_chat_request_include_usage(
    fields: dict[str, Any], include_usage: bool
) -> None:
    assert parse_chat_request(chat_body(**fields)).include_usage is include_usage


def test_max_output_tokens_falls_back_to_max_tokens() -> None:
    assert parse_chat_request(chat_body(max_tokens=7)).max_output_tokens == 7


def test_null_optional_fields_take_defaults() -> None:
    request = parse_chat_request(
        chat_body(stream=None, n=None, max_tokens=None, max_completion_tokens=None)
    )
    assert (request.stream, request.n, request.max_output_tokens) == (False, 1, None)


INVALID_CHAT_REQUESTS = [
    pytest.param([], None, "request body must be a JSON object", id="array-body"),
    pytest.param("text", None, "request body must be a JSON object", id="string-body"),
    pytest.param(None, None, "request body must be a JSON object", id="null-body"),
    pytest.param(
        chat_body(model=...),
        "model",
        "you must provide a model parameter",
        id="no-model",
    ),
    pytest.param(
        chat_body(model=None),
        "model",
        "you must provide a model parameter",
        id="null-model",
    ),
    pytest.param(
        chat_body(model=4),
        "model",
        "expected a string, but got an integer",
        id="int-model",
    ),
    pytest.param(
        chat_body(model="  "), "model", "model must not be empty", id="blank-model"
    ),
    pytest.param(
        chat_body(messages=...),
        "messages",
        "you must provide a messages parameter",
        id="no-messages",
    ),
    pytest.param(
        chat_body(messages={"role": "user"}),
        "messages",
        "expected an array, but got an object",
        id="object-messages",
    ),
    pytest.param(
        chat_body(messages=[]),
        "messages",
        "messages must contain at least one message",
        id="empty-messages",
    ),
    pytest.param(
        chat_body(messages=["hi"]),
        "messages[0]",
        "expected an object, but got a string",
        id="string-message",
    ),
    pytest.param(
        chat_body(messages=[{"role": "user"}, {"content": "x"}]),
        "messages[1].role",
        "missing required parameter 'messages[1].role'",
        id="no-role",
    ),
    pytest.param(
        chat_body(messages=[{"role": 1}]),
        "messages[0].role",
        "expected a string, but got an integer",
        id="int-role",
    ),
    pytest.param(
        chat_body(stream="yes"),
        "stream",
        "expected a boolean, but got a string",
        id="stream",
    ),
    pytest.param(
        chat_body(stream_options=[]),
        "stream_options",
        "expected an object, but got an array",
        id="stream-options",
    ),
    pytest.param(
        chat_body(stream=True, stream_options={"include_usage": 1}),
        "stream_options.include_usage",
        "expected a boolean, but got an integer",
        id="include-usage",
    ),
    pytest.param(
        chat_body(max_tokens=-1),
        "max_tokens",
        "expected an integer at least 0, got -1",
        id="negative-max-tokens",
    ),
    pytest.param(
        chat_body(max_tokens="10"),
        "max_tokens",
        "expected an integer, but got a string",
        id="string-max-tokens",
    ),
    pytest.param(
        chat_body(max_tokens=True),
        "max_tokens",
        "expected an integer, but got a boolean",
        id="bool-max-tokens",
    ),
    pytest.param(
        chat_body(max_completion_tokens=1.5),
        "max_completion_tokens",
        "expected an integer, but got a number",
        id="float-max-completion-tokens",
    ),
    pytest.param(
        chat_body(n=0), "n", "expected an integer between 1 and 128, got 0", id="n-zero"
    ),
    pytest.param(
        chat_body(n=129),
        "n",
        "expected an integer between 1 and 128, got 129",
        id="n-big",
    ),
    pytest.param(
        chat_body(n=False), "n", "expected an integer, but got a boolean", id="n-bool"
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID_CHAT_REQUESTS)
def test_parse_chat_request_rejects(
    body: object, param: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body)
    assert message in caught.value.message
    assert caught.value.param == param
    assert caught.value.status == 400


VALID_EMBEDDING_INPUTS = [
    pytest.param("hello", id="string"),
    pytest.param(["a", "b"], id="strings"),
    pytest.param([1, 2, 0], id="token-ids"),
    pytest.param([[1, 2], [3]], id="token-id-lists"),
    pytest.param(["x"] * 2048, id="max-items"),
]


@pytest.mark.parametrize("value", VALID_EMBEDDING_INPUTS)
def test_parse_embeddings_request_accepts(value: object) -> None:
    body = {"model": "text-embedding-3-small", "input": value, "dimensions": 256}
    request = parse_embeddings_request(body)
    assert request.model == "text-embedding-3-small"
    assert request.input == value
    assert request.body is body


INVALID_EMBEDDING_REQUESTS = [
    pytest.param([], None, "request body must be a JSON object", id="array-body"),
    pytest.param({"input": "x"}, "model", "you must provide a model", id="no-model"),
    pytest.param({"model": "m"}, "input", "you must provide an input", id="no-input"),
    pytest.param(
        {"model": "m", "input": None}, "input", "you must provide an input", id="null"
    ),
    pytest.param(
        {"model": "m", "input": ""}, "input", "empty string", id="empty-string"
    ),
    pytest.param({"model": "m", "input": []}, "input", "empty array", id="empty-list"),
    pytest.param(
        {"model": "m", "input": {"text": "x"}},
        "input",
        "expected a string or an array, but got an object",
        id="object",
    ),
    pytest.param(
        {"model": "m", "input": ["a", 1]},
        "input[1]",
        "expected a string, but got an integer",
        id="mixed",
    ),
    pytest.param(
        {"model": "m", "input": ["a", ""]}, "input[1]", "empty string", id="empty-item"
    ),
    pytest.param(
        {"model": "m", "input": [1, -2]},
        "input[1]",
        "expected a token id, but got an integer",
        id="negative-id",
    ),
    pytest.param(
        {"model": "m", "input": [True]},
        "input[0]",
        "expected a string, a token id or an array of token ids",
        id="bool-id",
    ),
    pytest.param(
        {"model": "m", "input": [[1], []]},
        "input[1]",
        "expected a non-empty array",
        id="empty-id-list",
    ),
    pytest.param(
        {"model": "m", "input": [[1], ["a"]]},
        "input[1]",
        "expected an array of token ids",
        id="string-in-id-list",
    ),
    pytest.param(
        {"model": "m", "input": ["x"] * 2049},
        "input",
        "more than the maximum of 2048",
        id="too-many",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID_EMBEDDING_REQUESTS)
def test_parse_embeddings_request_rejects(
    body: object, param: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_embeddings_request(body)
    assert message in caught.value.message
    assert caught.value.param == param


@pytest.mark.parametrize(("path", "expected"), BODY_USAGE)
def test_extract_usage_from_fixture_body(path: Path, expected: Usage) -> None:
    body = json.loads(path.read_text())
    assert extract_usage(body["usage"]) == expected


@pytest.mark.parametrize("name", sorted(STREAM_USAGE))
def test_extract_usage_from_final_chunk(name: str) -> None:
    final = list(sse_chunks(OPENAI_DIR / name))[-1]
    assert extract_usage(final["usage"]) == Usage(*STREAM_USAGE[name])


def test_extract_usage_reads_details() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert extract_usage(usage) == Usage(100, 50, cached_tokens=64, reasoning_tokens=30)


def test_extract_usage_mistral_cached_tokens() -> None:
    chunks = line_chunks(
        MISTRAL_DIR / "vercel-mistral-stream-incremental-tool-call.chunks.txt"
    )
    assert extract_usage(chunks[-1]["usage"]) == Usage(171, 14, cached_tokens=128)


USAGE_VARIANTS = [
    pytest.param(
        {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": None},
        Usage(5, 2),
        id="null-details",
    ),
    pytest.param(
        {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": None},
        },
        Usage(5, 2),
        id="null-detail-counts",
    ),
    pytest.param(
        {"prompt_tokens": 5, "total_tokens": 5}, Usage(5, 0), id="no-completion"
    ),
    pytest.param({"completion_tokens": 3}, Usage(0, 3), id="no-prompt"),
    pytest.param(
        {"prompt_tokens": 5.0, "completion_tokens": 2.0}, Usage(5, 2), id="floats"
    ),
    pytest.param(
        {
            "input_tokens": 134,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 28,
            "output_tokens_details": {"reasoning_tokens": 9},
            "total_tokens": 162,
        },
        Usage(134, 28, cached_tokens=4, reasoning_tokens=9),
        id="responses-api",
    ),
    pytest.param(
        {"prompt_tokens": 50, "completion_tokens": 5, "prompt_cache_hit_tokens": 32},
        Usage(50, 5, cached_tokens=32),
        id="deepseek-cache-hits",
    ),
    pytest.param(
        {"prompt_tokens": -1, "completion_tokens": 4}, Usage(0, 4), id="negative"
    ),
]


@pytest.mark.parametrize(("usage", "expected"), USAGE_VARIANTS)
def test_extract_usage_variants(usage: dict[str, Any], expected: Usage) -> None:
    assert extract_usage(usage) == expected


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="array"),
        pytest.param({}, id="empty"),
        pytest.param({"total_tokens": 9}, id="total-only"),
        pytest.param({"prompt_tokens": "12", "completion_tokens": "3"}, id="strings"),
        pytest.param(
            {"prompt_tokens": True, "completion_tokens": 1.5}, id="bool-float"
        ),
    ],
)
def test_extract_usage_rejects_unusable(usage: object) -> None:
    assert extract_usage(usage) is None


@pytest.mark.parametrize("name", sorted(STREAM_USAGE))
def test_stream_tally_on_fixture_stream(name: str, o200k: tiktoken.Encoding) -> None:
    tally = StreamTally(o200k)
    infos = [tally.observe(chunk) for chunk in sse_chunks(OPENAI_DIR / name)]
    recorded_input, recorded_output = STREAM_USAGE[name]

    assert tally.usage == Usage(recorded_input, recorded_output)
    assert [info.usage_only for info in infos] == [False] * (len(infos) - 1) + [True]
    assert infos[-1].usage == tally.usage
    assert not any(info.error for info in infos)
    assert any(info.has_output for info in infos)
    assert abs(tally.output_tokens - recorded_output) <= 0.25 * recorded_output


def test_stream_tally_counts_every_choice(o200k: tiktoken.Encoding) -> None:
    chunks = list(sse_chunks(OPENAI_DIR / "openai-chat-stream-n3-multiple-choices.sse"))
    text = "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
    )
    tally = StreamTally(o200k)
    for chunk in chunks:
        tally.observe(chunk)
    assert tally.output_tokens == 42
    assert count_text(text, o200k) <= tally.output_tokens


def test_stream_tally_on_vercel_openai_chunks(o200k: tiktoken.Encoding) -> None:
    chunks = line_chunks(OPENAI_DIR / "vercel-openai-chat-stream-text.chunks.txt")
    tally = StreamTally(o200k)
    infos = [tally.observe(chunk) for chunk in chunks]

    assert tally.usage == Usage(16, 300)
    assert infos[-1].usage_only is True
    assert sum(info.usage_only for info in infos) == 1
    assert tally.output_tokens == 300


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("vercel-mistral-stream-text.chunks.txt", Usage(13, 8), id="text"),
        pytest.param(
            "vercel-mistral-stream-tool-call.chunks.txt", Usage(124, 22), id="tool"
        ),
        pytest.param(
            "vercel-mistral-stream-incremental-tool-call.chunks.txt",
            Usage(171, 14, cached_tokens=128),
            id="incremental-tool",
        ),
    ],
)
def test_stream_tally_mistral_usage_on_finish_chunk(
    name: str, expected: Usage, counter: TokenCounter
) -> None:
    encoding, _ = counter.encoding_for("mistral-small-latest")
    chunks = line_chunks(MISTRAL_DIR / name)
    tally = StreamTally(encoding)
    infos = [tally.observe(chunk) for chunk in chunks]

    assert tally.usage == expected
    assert not any(info.usage_only for info in infos)
    finish = [
        i for i, chunk in enumerate(chunks) if chunk["choices"][0]["finish_reason"]
    ]
    assert [i for i, info in enumerate(infos) if info.usage] == finish
    assert tally.output_tokens > 0


def test_stream_tally_mistral_whole_tool_call(counter: TokenCounter) -> None:
    encoding = counter.encoding("cl100k_base")
    chunks = line_chunks(MISTRAL_DIR / "vercel-mistral-stream-tool-call.chunks.txt")
    call = chunks[-1]["choices"][0]["delta"]["tool_calls"][0]
    tally = StreamTally(encoding)
    infos = [tally.observe(chunk) for chunk in chunks]

    assert infos[-1].has_output is True
    assert tally.output_tokens == (
        TOOL_CALL_OVERHEAD_TOKENS
        + count_text(call["function"]["name"], encoding)
        + count_text(call["function"]["arguments"], encoding)
    )


def test_stream_tally_counts_reasoning_and_refusal(o200k: tiktoken.Encoding) -> None:
    tally = StreamTally(o200k)
    deltas = [
        {"reasoning_content": "hello world"},
        {"reasoning": "hello world"},
        {"refusal": "hello world"},
        {"function_call": {"name": "hello", "arguments": " world"}},
    ]
    for delta in deltas:
        info = tally.observe({"choices": [{"index": 0, "delta": delta}]})
        assert info.has_output is True
    assert tally.output_tokens == 8
    assert tally.usage is None


def test_stream_tally_role_chunk_has_no_output(o200k: tiktoken.Encoding) -> None:
    tally = StreamTally(o200k)
    chunk = {
        "choices": [{"delta": {"role": "assistant", "content": ""}}],
        "usage": None,
    }
    info = tally.observe(chunk)
    assert (info.has_output, info.usage_only, info.usage) == (False, False, None)
    assert tally.output_tokens == 0


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param({}, id="empty"),
        pytest.param({"choices": None}, id="null-choices"),
        pytest.param({"choices": [None, 1, {"delta": None}]}, id="odd-choices"),
        pytest.param(
            {"choices": [{"delta": {"tool_calls": [None, {"function": 1}]}}]},
            id="odd-tool-calls",
        ),
        pytest.param({"choices": [{"delta": {"content": 5}}]}, id="number-content"),
        pytest.param(
            {"choices": [], "usage": {"total_tokens": 3}}, id="unusable-usage"
        ),
    ],
)
def test_stream_tally_tolerates_odd_chunks(
    chunk: dict[str, Any], o200k: tiktoken.Encoding
) -> None:
    tally = StreamTally(o200k)
    info = tally.observe(chunk)
    assert (info.has_output, info.usage_only, info.error) == (False, False, False)
    assert tally.output_tokens == 0


def test_stream_tally_usage_chunk_without_choices(o200k: tiktoken.Encoding) -> None:
    tally = StreamTally(o200k)
    info = tally.observe({"usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    assert info.usage_only is True
    assert tally.usage == Usage(3, 1)


def test_stream_tally_last_usage_wins(o200k: tiktoken.Encoding) -> None:
    tally = StreamTally(o200k)
    tally.observe(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    )
    tally.observe(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    )
    assert tally.usage == Usage(3, 9)


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        pytest.param(
            {"error": {"message": "overloaded", "type": "server_error", "code": 503}},
            {"message": "overloaded", "type": "server_error", "code": 503},
            id="openai-vllm",
        ),
        pytest.param(
            {"error": "model not found"}, {"message": "model not found"}, id="ollama"
        ),
    ],
)
def test_stream_tally_error_chunk(
    chunk: dict[str, Any], expected: dict[str, Any], o200k: tiktoken.Encoding
) -> None:
    tally = StreamTally(o200k)
    info = tally.observe(chunk)
    assert info.error is True
    assert info.has_output is False
    assert tally.error == expected


def test_stream_tally_responses_api_error_event(o200k: tiktoken.Encoding) -> None:
    chunks = line_chunks(
        OPENAI_DIR
        / "vercel-openai-responses-stream-error-insufficient-quota.chunks.txt"
    )
    tally = StreamTally(o200k)
    infos = [tally.observe(chunk) for chunk in chunks]
    assert [info.error for info in infos] == [False, False, True, False]
    assert tally.error is not None
    assert tally.error["code"] == "insufficient_quota"


def test_error_body_shape() -> None:
    assert error_body("boom", "server_error", "upstream_error") == {
        "error": {
            "message": "boom",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        }
    }


def test_error_event_is_sse_frame() -> None:
    frame = error_event("upstream closed", "upstream_error", None, param="x")
    assert frame.startswith(b"data: {")
    assert frame.endswith(b"}\n\n")

    parser = SSEParser()
    events = parser.feed(frame)
    assert len(events) == 1
    assert json.loads(events[0].data) == error_body(
        "upstream closed", "upstream_error", None, "x"
    )


def test_done_event() -> None:
    events = SSEParser().feed(DONE_EVENT)
    assert [event.data for event in events] == ["[DONE]"]
