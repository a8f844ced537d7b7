"""Shared pieces of the Gemini and Bedrock translators."""

from __future__ import annotations

import pytest

from llmgw.errors import InvalidRequest
from llmgw.protocols.chat_translate import (
    ChatChunkStream,
    DataURL,
    ToolChoice,
    content_parts,
    openai_error_type,
    parse_data_url,
    resolve_finish_reason,
    tool_choice,
    usage_body,
)
from llmgw.protocols.openai import DONE_EVENT, StreamTally, Usage
from llmgw.tokens import TokenCounter
from tests.unit.translation_helpers import assemble, parse_sse_chunks


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("data:image/png;base64,AAAA", DataURL("image/png", "AAAA")),
        ("DATA:Image/JPEG;name=a.jpg;base64,/9j/", DataURL("image/jpeg", "/9j/")),
        ("data:application/pdf;base64,", DataURL("application/pdf", "")),
        ("data:image/png,rawtext", None),
        ("data:;base64,AAAA", None),
        ("https://example.com/a.png", None),
    ],
)
def test_parse_data_url(url: str, parsed: DataURL | None) -> None:
    assert parse_data_url(url) == parsed


def test_content_parts_forms() -> None:
    assert content_parts(None, "c") == []
    assert content_parts("", "c") == []
    assert content_parts("hi", "c") == [{"type": "text", "text": "hi"}]
    with pytest.raises(InvalidRequest, match="expected a string or an array"):
        content_parts(5, "messages[0].content")
    with pytest.raises(InvalidRequest) as raised:
        content_parts([{"text": "no type"}], "messages[0].content")
    assert raised.value.param == "messages[0].content[0].type"


def test_tool_choice_forms() -> None:
    assert tool_choice({}) is None
    assert tool_choice({"tool_choice": "required"}) == ToolChoice("required")
    named = {"tool_choice": {"type": "function", "function": {"name": "f"}}}
    assert tool_choice(named) == ToolChoice("required", ("f",))
    with pytest.raises(InvalidRequest) as raised:
        tool_choice({"tool_choice": {"type": "function", "function": {}}})
    assert raised.value.param == "tool_choice.function.name"


def test_usage_body_fields() -> None:
    assert usage_body(Usage(10, 5, cached_tokens=4, reasoning_tokens=2)) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    with_write = usage_body(Usage(10, 5, cache_write_tokens=3))
    assert with_write["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": 3,
    }


def test_resolve_finish_reason() -> None:
    assert resolve_finish_reason("stop", True) == "tool_calls"
    assert resolve_finish_reason("stop", False) == "stop"
    assert resolve_finish_reason("length", True) == "length"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_openai_error_type(status: int, error_type: str) -> None:
    assert openai_error_type(status) == error_type


def test_chunk_stream_end_once() -> None:
    chunks = ChatChunkStream(model="m", include_usage=True, created=1)
    out = chunks.text("Hi") + chunks.finish_choice("stop")
    end = chunks.end(Usage(3, 1))
    assert end.endswith(DONE_EVENT)
    assert chunks.end(Usage(3, 1)) == b""
    stream = assemble(out + end)
    assert stream.choices[0].text == "Hi"
    assert stream.usage is not None
    assert stream.usage["total_tokens"] == 4


def test_chunk_stream_usage_unknown() -> None:
    chunks = ChatChunkStream(model="m", include_usage=True)
    out = chunks.finish_choice("stop") + chunks.end(None)
    parsed, done = parse_sse_chunks(out)
    assert done
    assert all(chunk["choices"] for chunk in parsed)


def test_chunk_stream_counts_with_stream_tally() -> None:
    # The gateway's own stream tally reads translated chunks like any other.
    chunks = ChatChunkStream(model="m", include_usage=True)
    out = chunks.text("Hello there")
    _, tool = chunks.tool_call("call_1", "f", '{"a": 1}')
    out += tool + chunks.finish_choice("stop") + chunks.end(Usage(7, 9))
    tally = StreamTally(TokenCounter().encoding("o200k_base"))
    parsed, _ = parse_sse_chunks(out)
    infos = [tally.observe(chunk) for chunk in parsed]
    assert tally.usage == Usage(7, 9)
    assert infos[-1].usage_only
    assert tally.output_tokens > 0
