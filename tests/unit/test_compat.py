"""Quirk normalizers for OpenAI-compatible servers: Mistral, vLLM, Ollama."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmgw.protocols.compat import (
    CompatAdapter,
    MistralAdapter,
    OllamaAdapter,
    VLLMAdapter,
    compat_adapter,
    normalize_error,
)
from llmgw.protocols.sse import SSEParser, format_event
from tests.unit.translation_helpers import (
    assemble,
    fixture_dir,
    fixture_params,
    read_lines,
)

FLAVORS = ["openai", "vllm", "ollama", "mistral"]
MISTRAL_ID = re.compile(r"[a-zA-Z0-9]{9}")
TOOL_ID_MESSAGE = (
    "Tool call id was toolu_01 but must be a-z, A-Z, 0-9, with a length of 9."
)


def sse_payloads(path: Path) -> list[dict[str, Any]]:
    parser = SSEParser()
    events = parser.feed(path.read_bytes()) + parser.flush()
    return [json.loads(e.data) for e in events if e.has_data and e.data != "[DONE]"]


def as_sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(format_event(json.dumps(chunk)) for chunk in chunks) + (
        b"data: [DONE]\n\n"
    )


# ---------------------------------------------------------------------------
# Well-formed OpenAI traffic passes through every adapter unchanged


@pytest.mark.parametrize("path", fixture_params("openai", "*.sse"))
@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_streams_unchanged(path: Path, flavor: str) -> None:
    adapter = compat_adapter(flavor)
    for chunk in sse_payloads(path):
        before = copy.deepcopy(chunk)
        assert adapter.normalize_chunk(chunk) == before
        assert chunk == before, "the adapter must not modify its argument"


@pytest.mark.parametrize("path", fixture_params("openai", "*.chunks.txt"))
@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_chunk_lines_unchanged(path: Path, flavor: str) -> None:
    adapter = compat_adapter(flavor)
    for chunk in read_lines(path):
        assert adapter.normalize_chunk(chunk) == chunk


@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_bodies_unchanged(flavor: str) -> None:
    folder = fixture_dir("openai")
    adapter = compat_adapter(flavor)
    for name in ("vercel-openai-chat-text.json", "vercel-openai-embedding.json"):
        body = json.loads((folder / name).read_text())
        assert adapter.normalize_response(body) == body


@pytest.mark.parametrize("flavor", FLAVORS)
def test_openai_error_body_unchanged(flavor: str) -> None:
    raw = (
        fixture_dir("openai") / "vercel-openai-responses-error-insufficient-quota.json"
    ).read_bytes()
    error = compat_adapter(flavor).normalize_error(429, raw)
    assert error.status == 429
    assert error.body == json.loads(raw)


# ---------------------------------------------------------------------------
# Mistral recordings


def test_mistral_fixtures_all_covered() -> None:
    names = {path.name for path in fixture_dir("mistral").iterdir()}
    assert names == {
        "vercel-mistral-stream-incremental-tool-call.chunks.txt",
        "vercel-mistral-stream-text.chunks.txt",
        "vercel-mistral-stream-tool-call.chunks.txt",
        "vercel-mistral-text.json",
        "vercel-mistral-tool-call.json",
    }


def test_mistral_text_stream_unchanged() -> None:
    path = fixture_dir("mistral") / "vercel-mistral-stream-text.chunks.txt"
    adapter = MistralAdapter()
    chunks = read_lines(path)
    normalized = [adapter.normalize_chunk(chunk) for chunk in chunks]
    assert normalized == chunks
    stream = assemble(as_sse(normalized), strict=False)
    assert stream.choices[0].text == "Hello, world! This is a test response."
    assert stream.choices[0].finish_reason == "stop"
    assert stream.chunks[-1]["usage"]["completion_tokens"] == 8


def test_mistral_whole_tool_call_gets_index_and_type() -> None:
    path = fixture_dir("mistral") / "vercel-mistral-stream-tool-call.chunks.txt"
    adapter = MistralAdapter()
    chunks = read_lines(path)
    normalized = [adapter.normalize_chunk(chunk) for chunk in chunks]

    source_call = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert "index" not in source_call
    (call,) = normalized[1]["choices"][0]["delta"]["tool_calls"]
    assert call == {
        "id": "gSIMJiOkT",
        "index": 0,
        "type": "function",
        "function": {"name": "weather", "arguments": '{"location": "San Francisco"}'},
    }
    stream = assemble(as_sse(normalized), strict=False)
    assert stream.choices[0].tool_calls == {
        0: {
            "id": "gSIMJiOkT",
            "name": "weather",
            "arguments": source_call["function"]["arguments"],
        }
    }
    assert stream.choices[0].finish_reason == "tool_calls"


def test_mistral_incremental_tool_call_drops_empty_name() -> None:
    path = (
        fixture_dir("mistral")
        / "vercel-mistral-stream-incremental-tool-call.chunks.txt"
    )
    adapter = MistralAdapter()
    chunks = read_lines(path)
    normalized = [adapter.normalize_chunk(chunk) for chunk in chunks]

    (continuation,) = normalized[1]["choices"][0]["delta"]["tool_calls"]
    assert continuation["function"] == {
        "arguments": '{"query": "current Berlin weather"}'
    }
    assert continuation["index"] == 0
    stream = assemble(as_sse(normalized), strict=False)
    assert stream.choices[0].tool_calls == {
        0: {
            "id": "chatcmpl-tool-9f149c74c42f265b",
            "name": "webSearchTool",
            "arguments": '{"query": "current Berlin weather"}',
        }
    }
    # A client that keeps the last name it saw would have lost it.
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == ""


def test_mistral_tool_call_body_gets_type() -> None:
    body = json.loads(
        (fixture_dir("mistral") / "vercel-mistral-tool-call.json").read_text()
    )
    normalized = MistralAdapter().normalize_response(body)
    (call,) = normalized["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"] == "gSIMJiOkT"
    assert "type" not in body["choices"][0]["message"]["tool_calls"][0]


def test_mistral_text_body_unchanged() -> None:
    body = json.loads((fixture_dir("mistral") / "vercel-mistral-text.json").read_text())
    assert MistralAdapter().normalize_response(body) == body


# ---------------------------------------------------------------------------
# Mistral requests


def conversation(call_id: str) -> dict[str, Any]:
    return {
        "model": "mistral-small-latest",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ],
    }


def test_mistral_ids_mapped_consistently() -> None:
    body = conversation("toolu_01A09q90qw90lq917835lq9")
    first = MistralAdapter().prepare_request(body)
    second = MistralAdapter().prepare_request(body)

    mapped = first["messages"][1]["tool_calls"][0]["id"]
    assert MISTRAL_ID.fullmatch(mapped)
    assert first["messages"][2]["tool_call_id"] == mapped
    # A later request of the same conversation maps the id the same way.
    assert second["messages"][1]["tool_calls"][0]["id"] == mapped
    assert body["messages"][1]["tool_calls"][0]["id"] == "toolu_01A09q90qw90lq917835lq9"


def test_mistral_valid_ids_kept() -> None:
    body = conversation("gSIMJiOkT")
    assert MistralAdapter().prepare_request(body)["messages"] == body["messages"]


def test_mistral_ids_restored_in_response() -> None:
    adapter = MistralAdapter()
    sent = adapter.prepare_request(conversation("call_abc"))
    mapped = sent["messages"][1]["tool_calls"][0]["id"]
    assert adapter.client_id(mapped) == "call_abc"
    assert adapter.client_id("unknown12") == "unknown12"

    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"id": mapped, "function": {"name": "f"}}]},
            }
        ]
    }
    call = adapter.normalize_chunk(chunk)["choices"][0]["delta"]["tool_calls"][0]
    assert call["id"] == "call_abc"
    body = {"choices": [{"message": {"tool_calls": [{"id": mapped, "function": {}}]}}]}
    assert (
        adapter.normalize_response(body)["choices"][0]["message"]["tool_calls"][0]["id"]
        == "call_abc"
    )


def test_mistral_distinct_ids_stay_distinct() -> None:
    adapter = MistralAdapter()
    ids = {adapter.mistral_id(f"call_{n}") for n in range(2000)}
    assert len(ids) == 2000
    assert all(MISTRAL_ID.fullmatch(value) for value in ids)


def test_mistral_request_fields_renamed() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 50,
        "max_tokens": 10,
        "seed": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    prepared = MistralAdapter().prepare_request(body)
    assert prepared == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 50,
        "random_seed": 4,
        "stream": True,
    }
    assert "seed" in body


def test_mistral_parallel_calls_without_index() -> None:
    adapter = MistralAdapter()
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "id": "aaaaaaaaa",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "bbbbbbbbb",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ]
                },
            }
        ]
    }
    calls = adapter.normalize_chunk(chunk)["choices"][0]["delta"]["tool_calls"]
    assert [call["index"] for call in calls] == [0, 1]
    later = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [{"id": "ccccccccc", "function": {"name": "h"}}]
                },
            }
        ]
    }
    assert (
        adapter.normalize_chunk(later)["choices"][0]["delta"]["tool_calls"][0]["index"]
        == 2
    )
    fragment = {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "x"}}]}}
        ]
    }
    assert (
        adapter.normalize_chunk(fragment)["choices"][0]["delta"]["tool_calls"][0][
            "index"
        ]
        == 2
    )


# ---------------------------------------------------------------------------
# Ollama


def test_ollama_fixtures_pass_through() -> None:
    folder = fixture_dir("ollama")
    adapter = OllamaAdapter()
    paths = sorted(folder.glob("*.json"))
    assert len(paths) == 6
    for path in paths:
        body = json.loads(path.read_text())
        if path.name.endswith(".request.json"):
            assert adapter.prepare_request(body) == body, path.name
        else:
            assert adapter.normalize_response(body) == body, path.name


def test_ollama_reasoning_kept_as_is() -> None:
    path = fixture_dir("ollama") / "pydantic-ollama-cloud-chat-tool-call.response.json"
    body = OllamaAdapter().normalize_response(json.loads(path.read_text()))
    message = body["choices"][0]["message"]
    assert message["reasoning"].startswith("The conversation:")
    assert "reasoning_content" not in message
    assert message["tool_calls"][0]["id"] == "call_o2vnpxrw"


def test_ollama_request_reasoning_content_renamed() -> None:
    body: dict[str, Any] = {
        "model": "qwen3:0.6b",
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y", "reasoning_content": "thought"},
        ],
        "max_completion_tokens": 20,
    }
    prepared = OllamaAdapter().prepare_request(body)
    assert prepared["messages"][1] == {
        "role": "assistant",
        "content": "y",
        "reasoning": "thought",
    }
    assert prepared["max_tokens"] == 20
    assert "max_completion_tokens" not in prepared
    assert body["messages"][1]["reasoning_content"] == "thought"


def test_ollama_stream_reasoning_delta_kept() -> None:
    chunk = {
        "choices": [{"index": 0, "delta": {"reasoning": "hmm"}, "finish_reason": None}]
    }
    assert OllamaAdapter().normalize_chunk(chunk) == chunk


# ---------------------------------------------------------------------------
# Error shapes


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {
                "object": "error",
                "message": "bad",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            {"message": "bad", "type": "BadRequestError", "param": None, "code": "400"},
        ),
        (
            404,
            {
                "error": {
                    "message": "no model",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            },
            {
                "message": "no model",
                "type": "NotFoundError",
                "param": "model",
                "code": "404",
            },
        ),
        (
            400,
            {
                "object": "error",
                "message": TOOL_ID_MESSAGE,
                "type": "invalid_function_call",
                "param": None,
                "code": "3280",
            },
            {
                "message": TOOL_ID_MESSAGE,
                "type": "invalid_function_call",
                "param": None,
                "code": "3280",
            },
        ),
        (
            404,
            {"error": "model 'llama9' not found"},
            {
                "message": "model 'llama9' not found",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            422,
            {
                "object": "error",
                "message": {"detail": [{"type": "extra_forbidden"}]},
                "type": "invalid_request_error",
            },
            {
                "message": '{"detail":[{"type":"extra_forbidden"}]}',
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            422,
            {"detail": [{"loc": ["body", "x"], "msg": "field required"}]},
            {
                "message": '[{"loc":["body","x"],"msg":"field required"}]',
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            500,
            {"error": {"message": "", "code": 500.0}},
            {
                "message": "upstream returned HTTP 500",
                "type": "server_error",
                "param": None,
                "code": "500",
            },
        ),
    ],
    ids=[
        "vllm-old",
        "vllm-new",
        "mistral-3280",
        "ollama-string",
        "mistral-object",
        "fastapi",
        "empty",
    ],
)
def test_error_bodies_normalized(
    status: int, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    for raw in (body, json.dumps(body).encode()):
        error = normalize_error(status, raw)
        assert error.status == status
        assert error.body == {"error": expected}


def test_error_not_json() -> None:
    error = normalize_error(502, b"<html>bad gateway</html>")
    assert error.body == {
        "error": {
            "message": "upstream returned HTTP 502: <html>bad gateway</html>",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.parametrize("flavor", FLAVORS)
def test_stream_error_chunks_normalized(flavor: str) -> None:
    adapter = compat_adapter(flavor)
    chunk = {
        "error": {
            "message": "engine died",
            "type": "InternalServerError",
            "param": None,
            "code": 500,
        }
    }
    assert adapter.normalize_chunk(chunk) == {
        "error": {
            "message": "engine died",
            "type": "InternalServerError",
            "param": None,
            "code": "500",
        }
    }
    old = {
        "object": "error",
        "message": "too long",
        "type": "BadRequestError",
        "code": 400,
    }
    assert adapter.normalize_chunk(old)["error"]["code"] == "400"
    assert adapter.normalize_chunk({"error": "boom"})["error"]["type"] == "server_error"
    # Other keys of the chunk, such as a Responses API event's, are kept.
    event = {
        "type": "error",
        "sequence_number": 4,
        "error": {"message": "x", "code": 503},
    }
    assert adapter.normalize_chunk(event) == {
        "type": "error",
        "sequence_number": 4,
        "error": {"message": "x", "type": "server_error", "param": None, "code": "503"},
    }


def test_adapter_factory() -> None:
    assert type(compat_adapter("openai")) is CompatAdapter
    assert type(compat_adapter("vllm")) is VLLMAdapter
    assert type(compat_adapter("ollama")) is OllamaAdapter
    assert type(compat_adapter("mistral")) is MistralAdapter
    assert compat_adapter("mistral") is not compat_adapter("mistral")
    with pytest.raises(
        ValueError, match="unknown OpenAI-compatible server flavor 'tgi'"
    ):
        compat_adapter("tgi")
