"""Round trips through the Anthropic <-> OpenAI translators, on generated input.

Requests: Anthropic -> OpenAI -> Anthropic and OpenAI -> Anthropic -> OpenAI
keep every text, image, tool call (id, name, arguments) and tool result, in
order. Both formats are reduced to one canonical form, a list of turns
(system, user, assistant) of items, so each step is compared with the
original and not only the end of the trip.

The translation to OpenAI joins the texts of a message whose content is only
text into one string, with ``TEXT_SEPARATOR``. ``joined=True`` applies that
normalization to a canonical form, and only the steps that end in an OpenAI
request are compared with the joined form of the original.

Streams: an OpenAI chunk stream translated to Anthropic events and back
keeps the text, reasoning, tool calls, finish reason and usage.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw.protocols.anthropic import IMAGE_MEDIA_TYPES, parse_messages_request
from llmgw.protocols.openai import parse_chat_request
from llmgw.protocols.sse import SSEParser
from llmgw.protocols.translate_anthropic_request import (
    TEXT_SEPARATOR,
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)
from llmgw.protocols.translate_anthropic_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
)

Turns = list[tuple[str, list[tuple[Any, ...]]]]

TEXTS = st.text(min_size=1, max_size=12)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
ARGUMENTS = st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4)
TOOL_NAMES = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
BASE64 = st.from_regex(r"[A-Za-z0-9+/]{4,16}={0,2}", fullmatch=True)
IMAGE_URLS = st.from_regex(r"https://example\.com/[a-z0-9]{1,10}\.png", fullmatch=True)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


def add_turn(turns: Turns, speaker: str, items: list[tuple[Any, ...]]) -> None:
    """Append items to the last turn if it has the same speaker."""
    if turns and turns[-1][0] == speaker:
        turns[-1][1].extend(items)
    else:
        turns.append((speaker, list(items)))


# Canonical forms.


def joined_items(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Apply the translation's text joining to the items of one message.

    Text and image items are the message's content: if they are all text,
    they become one text item in the place of the first. The texts of a
    tool result become one text.
    """
    content = [item for item in items if item[0] in ("text", "image")]
    joined: list[tuple[Any, ...]] = []
    only_text = all(item[0] == "text" for item in content)
    for item in items:
        if item[0] == "tool_result":
            joined.append(("tool_result", item[1], (TEXT_SEPARATOR.join(item[2]),)))
        elif item[0] == "text" and only_text:
            if item is content[0]:
                text = TEXT_SEPARATOR.join(text for _, text in content)
                joined.append(("text", text))
        else:
            joined.append(item)
    return joined


def canonical_anthropic(body: dict[str, Any], *, joined: bool = False) -> Turns:
    """Return the canonical turns of a Messages request.

    ``joined`` applies ``joined_items`` to the system prompt and to each
    message.
    """
    turns: Turns = []
    system = body.get("system")
    if isinstance(system, str):
        add_turn(turns, "system", [("text", system)])
    elif system:
        blocks: list[tuple[Any, ...]] = [("text", block["text"]) for block in system]
        add_turn(turns, "system", joined_items(blocks) if joined else blocks)

    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            add_turn(turns, message["role"], [("text", content)])
            continue
        items: list[tuple[Any, ...]] = []
        for block in content:
            if block["type"] == "text":
                items.append(("text", block["text"]))
            elif block["type"] == "image":
                source = block["source"]
                url = source.get("url") or (
                    f"data:{source['media_type']};base64,{source['data']}"
                )
                items.append(("image", url))
            elif block["type"] == "tool_use":
                items.append(("tool_call", block["id"], block["name"], block["input"]))
            else:
                assert block["type"] == "tool_result"
                result = block.get("content", "")
                texts = (
                    (result,)
                    if isinstance(result, str)
                    else tuple(item["text"] for item in result)
                )
                items.append(("tool_result", block["tool_use_id"], texts))
        add_turn(turns, message["role"], joined_items(items) if joined else items)
    return turns


def canonical_openai(messages: list[dict[str, Any]], *, joined: bool = False) -> Turns:
    """Return the canonical turns of Chat Completions messages.

    ``joined`` applies ``joined_items`` to each message.
    """
    turns: Turns = []
    for message in messages:
        role = message["role"]
        content = message.get("content")
        if role == "tool":
            texts = (
                (content,)
                if isinstance(content, str)
                else tuple(part["text"] for part in content or [])
            )
            result = [("tool_result", message["tool_call_id"], texts)]
            add_turn(turns, "user", joined_items(result) if joined else result)
            continue

        items: list[tuple[Any, ...]] = []
        # The translation to OpenAI sends "" for an assistant message with
        # only tool calls, so "" counts as no text, as None does.
        if isinstance(content, str) and content:
            items.append(("text", content))
        for part in content if isinstance(content, list) else []:
            if part["type"] == "text":
                items.append(("text", part["text"]))
            else:
                assert part["type"] == "image_url"
                items.append(("image", part["image_url"]["url"]))
        for call in message.get("tool_calls") or []:
            function = call["function"]
            arguments = json.loads(function["arguments"])
            items.append(("tool_call", call["id"], function["name"], arguments))
        speaker = "system" if role in ("system", "developer") else role
        add_turn(turns, speaker, joined_items(items) if joined else items)
    return turns


def text_only_arrays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the messages whose content is an array of text parts only,
    which the translation to OpenAI must send as a string."""
    return [
        message
        for message in messages
        if isinstance(message.get("content"), list)
        and all(part["type"] == "text" for part in message["content"])
    ]


# Anthropic conversations.


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@st.composite
def anthropic_user_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "text", "base64", "url"]))
    if kind == "text":
        return text_block(draw(TEXTS))
    if kind == "base64":
        source = {
            "type": "base64",
            "media_type": draw(st.sampled_from(IMAGE_MEDIA_TYPES)),
            "data": draw(BASE64),
        }
    else:
        source = {"type": "url", "url": draw(IMAGE_URLS)}
    return {"type": "image", "source": source}


@st.composite
def tool_result_content(draw: st.DrawFn) -> str | list[dict[str, Any]]:
    if draw(st.booleans()):
        return draw(TEXTS)
    return [text_block(text) for text in draw(st.lists(TEXTS, min_size=1, max_size=2))]


@st.composite
def anthropic_bodies(draw: st.DrawFn) -> dict[str, Any]:
    tool_names = draw(st.lists(TOOL_NAMES, min_size=1, max_size=3, unique=True))
    messages: list[dict[str, Any]] = []
    pending_ids: list[str] = []
    call_number = 0
    for turn in range(draw(st.integers(1, 5))):
        blocks: list[dict[str, Any]] = [
            {
                "type": "tool_result",
                "tool_use_id": call_id,
                "content": draw(tool_result_content()),
            }
            for call_id in pending_ids
        ]
        extra_min = 0 if pending_ids else 1
        blocks += draw(st.lists(anthropic_user_parts(), min_size=extra_min, max_size=3))
        user_content: str | list[dict[str, Any]] = blocks
        if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
            user_content = blocks[0]["text"]
        messages.append({"role": "user", "content": user_content})
        pending_ids = []
        if turn > 0 and draw(st.booleans()):
            break

        texts = draw(st.lists(TEXTS, max_size=2))
        calls = draw(st.integers(0 if texts else 1, 3))
        assistant: list[dict[str, Any]] = [text_block(text) for text in texts]
        for _ in range(calls):
            suffix = draw(st.from_regex(r"[A-Za-z0-9]{0,6}", fullmatch=True))
            call_id = f"toolu_{call_number:02d}{suffix}"
            call_number += 1
            assistant.append(
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": draw(st.sampled_from(tool_names)),
                    "input": draw(ARGUMENTS),
                }
            )
            pending_ids.append(call_id)
        assistant_content: str | list[dict[str, Any]] = assistant
        if calls == 0 and len(texts) == 1 and draw(st.booleans()):
            assistant_content = texts[0]
        messages.append({"role": "assistant", "content": assistant_content})

    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": draw(st.integers(1, 100_000)),
        "messages": messages,
        "tools": [
            {
                "name": name,
                "description": draw(TEXTS),
                "input_schema": {
                    "type": "object",
                    "properties": {"x": {"type": "string"}},
                },
            }
            for name in tool_names
        ],
    }
    system = draw(
        st.none() | TEXTS | st.lists(TEXTS.map(text_block), min_size=1, max_size=2)
    )
    if system is not None:
        body["system"] = system
    choice_type = draw(st.sampled_from(["auto", "any", "none", "tool"]))
    choice: dict[str, Any] = {"type": choice_type}
    if choice_type == "tool":
        choice["name"] = tool_names[0]
    if choice["type"] != "none" and draw(st.booleans()):
        choice["disable_parallel_tool_use"] = True
    body["tool_choice"] = choice
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(TEXTS, min_size=1, max_size=3))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
        body["top_p"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(TEXTS)}
    return body


def normalized_tool_choice(body: dict[str, Any]) -> dict[str, Any]:
    """Return the Anthropic tool_choice, with absence read as auto."""
    return body.get("tool_choice") or {"type": "auto"}


@PROPERTY_SETTINGS
@given(anthropic_bodies())
def test_anthropic_openai_anthropic_round_trip(body: dict[str, Any]) -> None:
    original = canonical_anthropic(body, joined=True)
    translation = anthropic_to_openai_request(parse_messages_request(body))
    assert translation.tool_names == {}
    assert text_only_arrays(translation.body["messages"]) == []
    assert canonical_openai(translation.body["messages"]) == original

    back = openai_to_anthropic_request(parse_chat_request(translation.body))
    assert canonical_anthropic(back) == original
    assert back["max_tokens"] == body["max_tokens"]
    assert back["tools"] == body["tools"]
    assert normalized_tool_choice(back) == body["tool_choice"]
    assert back.get("stop_sequences") == body.get("stop_sequences")
    assert back.get("temperature") == body.get("temperature")
    assert back.get("top_p") == body.get("top_p")
    assert back.get("metadata") == body.get("metadata")


# OpenAI conversations.


@st.composite
def openai_user_content(draw: st.DrawFn) -> str | list[dict[str, Any]]:
    if draw(st.booleans()):
        return draw(TEXTS)
    parts: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["text", "text", "base64", "url"]))
        if kind == "text":
            parts.append(text_block(draw(TEXTS)))
            continue
        if kind == "base64":
            media_type = draw(st.sampled_from(IMAGE_MEDIA_TYPES))
            url = f"data:{media_type};base64,{draw(BASE64)}"
        else:
            url = draw(IMAGE_URLS)
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


@st.composite
def openai_bodies(draw: st.DrawFn) -> dict[str, Any]:
    tool_names = draw(st.lists(TOOL_NAMES, min_size=1, max_size=3, unique=True))
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        role = draw(st.sampled_from(["system", "developer"]))
        system: str | list[dict[str, Any]] = draw(TEXTS)
        if draw(st.booleans()):
            system = [
                text_block(text)
                for text in draw(st.lists(TEXTS, min_size=1, max_size=2))
            ]
        messages.append({"role": role, "content": system})

    call_number = 0
    needs_user = True
    for _ in range(draw(st.integers(1, 4))):
        if needs_user or draw(st.booleans()):
            messages.append({"role": "user", "content": draw(openai_user_content())})
        calls = []
        for _ in range(draw(st.integers(0, 3))):
            calls.append(
                {
                    "id": f"call_{call_number}",
                    "type": "function",
                    "function": {
                        "name": draw(st.sampled_from(tool_names)),
                        "arguments": orjson.dumps(draw(ARGUMENTS)).decode(),
                    },
                }
            )
            call_number += 1
        assistant: dict[str, Any] = {"role": "assistant", "content": draw(TEXTS)}
        if calls:
            assistant["tool_calls"] = calls
            if draw(st.booleans()):
                assistant["content"] = None
        messages.append(assistant)
        for call in calls:
            content: str | list[dict[str, Any]] = draw(tool_result_content())
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": content}
            )
        needs_user = not calls

    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": draw(TEXTS),
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "string"}},
                },
            },
        }
        for name in tool_names
    ]
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": messages,
        "tools": tools,
        "max_completion_tokens": draw(st.integers(1, 100_000)),
        "tool_choice": draw(
            st.sampled_from(
                [
                    "auto",
                    "required",
                    "none",
                    {"type": "function", "function": {"name": tool_names[0]}},
                ]
            )
        ),
    }
    if draw(st.booleans()):
        body["stop"] = draw(st.lists(TEXTS, min_size=1, max_size=4))
    return body


@PROPERTY_SETTINGS
@given(openai_bodies())
def test_openai_anthropic_openai_round_trip(body: dict[str, Any]) -> None:
    original = canonical_openai(body["messages"])
    anthropic_body = openai_to_anthropic_request(parse_chat_request(body))
    assert canonical_anthropic(anthropic_body) == original

    back = anthropic_to_openai_request(parse_messages_request(anthropic_body))
    assert text_only_arrays(back.body["messages"]) == []
    assert canonical_openai(back.body["messages"]) == canonical_openai(
        body["messages"], joined=True
    )
    assert back.body["max_tokens"] == body["max_completion_tokens"]
    assert back.body["tools"] == body["tools"]
    assert back.body.get("tool_choice", "auto") == body["tool_choice"]
    assert back.body.get("stop") == body.get("stop")


# Streams.


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return a chunk stream and what it should add up to."""
    reasoning = draw(st.lists(TEXTS, max_size=3))
    texts = draw(st.lists(TEXTS, max_size=3))
    calls = []
    for number in range(draw(st.integers(0, 3))):
        arguments = orjson.dumps(draw(ARGUMENTS)).decode()
        cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=4)))
        pieces = [
            arguments[start:end]
            for start, end in zip([0, *cuts], [*cuts, len(arguments)], strict=True)
        ]
        calls.append(
            {
                "id": f"call_{number}",
                "name": draw(TOOL_NAMES),
                "pieces": pieces,
                "arguments": arguments,
            }
        )
    finish_reason = (
        "tool_calls"
        if calls
        else draw(st.sampled_from(["stop", "length", "content_filter"]))
    )
    usage = {
        "prompt_tokens": draw(st.integers(0, 10**6)),
        "completion_tokens": draw(st.integers(0, 10**5)),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [choice],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"reasoning_content": text}) for text in reasoning]
    chunks += [chunk({"content": text}) for text in texts]
    fragments: list[tuple[int, dict[str, Any]]] = []
    for index, call in enumerate(calls):
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        fragments.append((index, first))
        fragments += [
            (index, {"index": index, "function": {"arguments": piece}})
            for piece in call["pieces"]
        ]
    if draw(st.booleans()):
        # Interleave the tool calls round-robin, each call's fragments in order.
        seen: dict[int, int] = {}
        ranked = []
        for index, fragment in fragments:
            seen[index] = seen.get(index, -1) + 1
            ranked.append((seen[index], index, fragment))
        ranked.sort(key=lambda item: (item[0], item[1]))
        fragments = [(index, fragment) for _, index, fragment in ranked]
    chunks += [chunk({"tool_calls": [fragment]}) for _, fragment in fragments]
    chunks.append(chunk({}, finish_reason))
    chunks.append(
        {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [],
            "usage": usage,
        }
    )
    expected = {
        "reasoning": "".join(reasoning),
        "text": "".join(texts),
        "tool_calls": [(call["id"], call["name"], call["arguments"]) for call in calls],
        "finish_reason": finish_reason,
        "usage": usage,
    }
    return chunks, expected


def sse_events(data: bytes) -> list[Any]:
    parser = SSEParser()
    return parser.feed(data) + parser.flush()


@PROPERTY_SETTINGS
@given(openai_streams())
def test_stream_openai_anthropic_openai_round_trip(
    stream: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    chunks, expected = stream
    wire = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks)
    wire += b"data: [DONE]\n\n"

    to_anthropic = OpenAIToAnthropicStream()
    anthropic_wire = b"".join(to_anthropic.feed(event) for event in sse_events(wire))
    anthropic_wire += to_anthropic.finish()
    assert to_anthropic.completed

    to_openai = AnthropicToOpenAIStream(include_usage=True)
    openai_wire = b"".join(
        to_openai.feed(event) for event in sse_events(anthropic_wire)
    )
    openai_wire += to_openai.finish()
    assert to_openai.completed

    reasoning = text = ""
    tool_calls: dict[int, list[str]] = {}
    finish_reason = None
    usage = None
    for event in sse_events(openai_wire):
        if event.data == "[DONE]":
            continue
        chunk = json.loads(event.data)
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            reasoning += delta.get("reasoning_content", "")
            text += delta.get("content", "")
            for call in delta.get("tool_calls", []):
                if "id" in call:
                    tool_calls[call["index"]] = [
                        call["id"],
                        call["function"]["name"],
                        "",
                    ]
                tool_calls[call["index"]][2] += call["function"]["arguments"]
            finish_reason = choice["finish_reason"] or finish_reason

    assert reasoning == expected["reasoning"]
    assert text == expected["text"]
    assert [tuple(tool_calls[index]) for index in sorted(tool_calls)] == expected[
        "tool_calls"
    ]
    assert finish_reason == expected["finish_reason"]
    assert usage is not None
    assert usage["prompt_tokens"] == expected["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == expected["usage"]["completion_tokens"]
