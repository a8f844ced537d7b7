"""Helpers for the translator tests: fixture lookup and OpenAI stream assembly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmgw.protocols.sse import SSEParser
from tests.conftest import FIXTURES_DIR

MISSING_FIXTURES = (
    f"recorded provider fixtures not found at {FIXTURES_DIR}: the shared/ folder"
    " beside the repository is missing"
)


def fixture_dir(name: str) -> Path:
    """Return a fixture folder, skipping the test if the fixtures are absent."""
    folder = FIXTURES_DIR / name
    if not folder.is_dir():
        pytest.skip(MISSING_FIXTURES)
    return folder


def fixture_params(name: str, pattern: str) -> list[Any]:
    """Parametrize over fixture files; one skipped case if they are absent."""
    folder = FIXTURES_DIR / name
    if not folder.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING_FIXTURES))]
    return [pytest.param(path, id=path.name) for path in sorted(folder.glob(pattern))]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Read a ``.chunks.txt`` fixture: one JSON object per line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@dataclass
class AssembledChoice:
    text: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    roles: list[str] = field(default_factory=list)


@dataclass
class AssembledStream:
    """An OpenAI chunk stream put back together, as a client would."""

    chunks: list[dict[str, Any]]
    choices: dict[int, AssembledChoice]
    usage: dict[str, Any] | None
    done: bool
    errors: list[dict[str, Any]]


def parse_sse_chunks(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """Return the JSON payloads of an SSE body and whether it ended in [DONE]."""
    parser = SSEParser()
    events = parser.feed(data) + parser.flush()
    payloads = [event.data for event in events if event.has_data]
    done = bool(payloads) and payloads[-1] == "[DONE]"
    assert payloads.count("[DONE]") == (1 if done else 0), "[DONE] must come last"
    chunks = [json.loads(payload) for payload in payloads if payload != "[DONE]"]
    return chunks, done


def assemble(data: bytes, *, strict: bool = True) -> AssembledStream:
    """Assemble translated OpenAI SSE bytes, checking the chunk invariants.

    Checks that every chunk has the same id and that a tool call's id and
    name come in its first fragment. ``strict`` also checks what OpenAI
    itself does and some compatible servers do not: a choice's first delta
    is its role, and usage comes in a chunk of its own.
    """
    chunks, done = parse_sse_chunks(data)
    choices: dict[int, AssembledChoice] = {}
    usage = None
    errors = [chunk["error"] for chunk in chunks if "error" in chunk]
    completion_ids = {chunk["id"] for chunk in chunks if "error" not in chunk}
    assert len(completion_ids) <= 1, f"chunk ids differ: {completion_ids}"

    for chunk in chunks:
        if "error" in chunk:
            continue
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage") is not None:
            if strict:
                assert chunk["choices"] == [], "usage comes in a chunk of its own"
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            _apply_choice(choices, choice, strict)
    return AssembledStream(chunks, choices, usage, done, errors)


def _apply_choice(
    choices: dict[int, AssembledChoice], choice: dict[str, Any], strict: bool
) -> None:
    index = choice["index"]
    first = index not in choices
    state = choices.setdefault(index, AssembledChoice())
    delta = choice["delta"]
    if first and strict:
        assert delta.get("role") == "assistant", f"choice {index} starts without role"
    if "role" in delta:
        state.roles.append(delta["role"])
    state.text += delta.get("content") or ""
    state.reasoning += delta.get("reasoning_content") or ""

    for call in delta.get("tool_calls") or []:
        tool_index = call["index"]
        if tool_index not in state.tool_calls:
            assert call.get("id"), "a tool call's first fragment carries its id"
            assert call["function"].get("name"), "and its name"
            state.tool_calls[tool_index] = {
                "id": call["id"],
                "name": call["function"]["name"],
                "arguments": "",
            }
        else:
            assert "id" not in call, "only the first fragment carries the id"
        state.tool_calls[tool_index]["arguments"] += call["function"].get(
            "arguments", ""
        )

    if choice.get("finish_reason") is not None:
        assert state.finish_reason is None, "one finish reason per choice"
        state.finish_reason = choice["finish_reason"]
