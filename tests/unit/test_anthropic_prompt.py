"""The Chat Completions view of an Anthropic prompt, which the gateway counts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from llmgw.protocols.anthropic import parse_messages_request
from llmgw.protocols.anthropic_prompt import prompt_messages
from llmgw.tokens import IMAGE_PART_TOKENS, TokenCounter
from tests.unit.test_translate_anthropic_properties import anthropic_bodies


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def view(**body: Any) -> list[dict[str, Any]]:
    return prompt_messages(
        parse_messages_request({"model": "m", "max_tokens": 5, **body})
    )


def test_strings_stay_strings() -> None:
    assert view(system="Be brief.", messages=[{"role": "user", "content": "Hi"}]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_system_blocks_become_parts() -> None:
    system = [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]
    messages = view(system=system, messages=[{"role": "user", "content": "Hi"}])
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "A"}]}


def test_empty_system_left_out() -> None:
    messages = view(system="", messages=[{"role": "user", "content": "Hi"}])
    assert messages == [{"role": "user", "content": "Hi"}]


def test_tool_use_becomes_tool_call() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
    }
    messages = view(messages=[{"role": "user", "content": "Hi"}, assistant])
    assert messages[1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Checking."}],
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


def test_tool_result_content_becomes_parts() -> None:
    user = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "Sunny"},
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": [{"type": "text", "text": "Rain"}],
            },
            {"type": "tool_result", "tool_use_id": "t3"},
            {"type": "text", "text": "Thanks"},
        ],
    }
    [message] = view(messages=[user])
    assert message["content"] == [
        {"type": "text", "text": "Sunny"},
        {"type": "text", "text": "Rain"},
        {"type": "text", "text": "Thanks"},
    ]


def test_image_counts_fixed_estimate(counter: TokenCounter) -> None:
    data = "QUJD" * 5000
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": data},
    }
    [message] = view(messages=[{"role": "user", "content": [image]}])
    count = counter.count_chat([message], "gpt-4o")
    # The base64 data counted as text would be thousands of tokens.
    assert count.tokens < IMAGE_PART_TOKENS + 10
    assert count.estimated


def test_text_document_becomes_text() -> None:
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Notes"},
    }
    [message] = view(messages=[{"role": "user", "content": [document]}])
    assert message["content"] == [{"type": "text", "text": "Notes"}]


def test_unknown_block_kept_and_estimated(counter: TokenCounter) -> None:
    block = {"type": "server_tool_use", "id": "srv_1", "name": "web_search"}
    [message] = view(messages=[{"role": "assistant", "content": [block]}])
    assert message["content"] == [block]
    assert counter.count_chat([message], "gpt-4o").estimated


@settings(max_examples=200, deadline=None)
@given(anthropic_bodies())
def test_view_keeps_every_text(body: dict[str, Any]) -> None:
    messages = prompt_messages(parse_messages_request(body))
    dumped = orjson.dumps(messages).decode()
    for text in _texts(body):
        assert orjson.dumps(text).decode() in dumped


def _texts(body: dict[str, Any]) -> list[str]:
    """Return every text of a request's system prompt and messages."""
    texts: list[str] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        texts.append(system)
    elif isinstance(system, list):
        texts += [block["text"] for block in system]
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content:
            if block["type"] == "text":
                texts.append(block["text"])
            elif block["type"] == "tool_result":
                result = block.get("content")
                if isinstance(result, str):
                    texts.append(result)
                elif isinstance(result, list):
                    texts += [item["text"] for item in result]
    return texts
