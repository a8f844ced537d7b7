"""The prompt of an Anthropic Messages request as Chat Completions messages,
for the local token count.

``TokenCounter.count_chat`` counts Chat Completions messages, so the gateway
counts an Anthropic prompt through this view of it. Unlike
``translate_anthropic_request``, which builds a request an OpenAI upstream
accepts, this view takes every request that ``parse_messages_request``
accepts. Blocks with no Chat Completions form, such as server tool results,
stay as they are, and the counter estimates them from their JSON size.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgw.protocols.anthropic import MessagesRequest


def prompt_messages(request: MessagesRequest) -> list[dict[str, Any]]:
    """Return the system prompt and messages of ``request`` as Chat
    Completions messages.

    Text, images and tool calls take their Chat Completions form. Tool
    results become parts of the user message that carries them. Thinking
    blocks are left out, because Anthropic models ignore the thinking of
    earlier turns and the translation for other providers drops it.
    """
    messages: list[dict[str, Any]] = []
    system = request.system
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": _parts(system)})

    for message in request.messages:
        content = message["content"]
        if isinstance(content, str):
            messages.append({"role": message["role"], "content": content})
            continue
        counted: dict[str, Any] = {"role": message["role"], "content": _parts(content)}
        tool_calls = [_tool_call(block) for block in content if _is_tool_use(block)]
        if tool_calls:
            counted["tool_calls"] = tool_calls
        messages.append(counted)
    return messages


def _parts(blocks: list[Any]) -> list[Any]:
    parts: list[Any] = []
    for block in blocks:
        block_type = block.get("type") if isinstance(block, dict) else None
        if block_type == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif block_type == "image":
            # The counter gives an image part a fixed estimate, where the
            # block's base64 data would count as text.
            parts.append({"type": "image_url", "image_url": {"url": ""}})
        elif block_type == "tool_result":
            parts.extend(_tool_result_parts(block))
        elif block_type == "document":
            parts.append(_document_part(block))
        elif block_type in ("tool_use", "thinking", "redacted_thinking"):
            continue
        else:
            parts.append(block)
    return parts


def _tool_result_parts(block: dict[str, Any]) -> list[Any]:
    content = block.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return _parts(content)
    return []


def _document_part(block: dict[str, Any]) -> Any:
    """Return a plain-text document as text, and any other document as it is.

    NOTE: a base64 PDF is then estimated from the size of its JSON, which
    counts far more tokens than the model reads.
    """
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            return {"type": "text", "text": data}
    return block


def _is_tool_use(block: object) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_use"


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": arguments},
    }
