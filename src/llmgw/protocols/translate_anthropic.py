"""Translation between Anthropic Messages and OpenAI Chat Completions.

OpenAI Chat Completions is the gateway's pivot format: an Anthropic client in
front of another provider is translated Anthropic -> Chat Completions ->
provider, and an OpenAI client in front of Anthropic the other way. This
module translates whole response bodies, stop reasons, usage and error
bodies. ``translate_anthropic_request`` translates requests, and
``translate_anthropic_stream`` streams.

Ids pass through unchanged: an Anthropic ``msg_...`` id becomes the
completion id and a ``chatcmpl-...`` id becomes the message id.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import orjson

from llmgw.protocols.anthropic import (
    ERROR_TYPES,
    error_body,
    error_type_for_status,
    extract_usage,
    usage_body,
)
from llmgw.protocols.openai import Usage
from llmgw.protocols.openai import error_body as openai_error_body
from llmgw.protocols.openai import extract_usage as extract_openai_usage

STOP_TO_FINISH_REASON: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    # The server paused a long turn of server tools. The client continues it
    # by sending the response back, so to an OpenAI client the turn ended.
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP_REASON: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# HTTP status that an OpenAI client gets for Anthropic's 529 overloaded_error.
# 529 is not a standard status, and proxies and HTTP clients that know only
# the standard ones handle 503 Service Unavailable as the same condition.
OVERLOADED_STATUS_FOR_OPENAI: Final = 503

# Response headers with retry hints, which the OpenAI and Anthropic Python
# SDKs both read (retry-after-ms and x-should-retry are non-standard). The
# caller copies them to the translated error. Other provider headers, such as
# rate-limit counters in one provider's format, stay behind.
RETRY_HEADERS: Final = ("retry-after", "retry-after-ms", "x-should-retry")

# OpenAI error type and code for each Anthropic error type.
_OPENAI_ERRORS: Final[Mapping[str, tuple[str, str | None]]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("overloaded_error", None),
    "timeout_error": ("timeout_error", None),
}
# OpenAI error types and codes (rate limit "type" is the exhausted resource).
_RATE_LIMIT_NAMES: Final = frozenset(
    {"rate_limit_exceeded", "rate_limit_error", "requests", "tokens"}
)


@dataclass(frozen=True, slots=True)
class TranslatedError:
    """An upstream error body in the client's format."""

    status: int
    body: dict[str, Any]


def finish_reason_for(stop_reason: str | None) -> str | None:
    """Map an Anthropic ``stop_reason`` to an OpenAI ``finish_reason``.

    None stays None, and stop reasons newer than ``STOP_TO_FINISH_REASON``
    map to ``stop``.
    """
    if stop_reason is None:
        return None
    return STOP_TO_FINISH_REASON.get(stop_reason, "stop")


def stop_reason_for(finish_reason: str | None) -> str | None:
    """Map an OpenAI ``finish_reason`` to an Anthropic ``stop_reason``.

    None stays None, and unknown reasons map to ``end_turn``. ``stop`` always
    maps to ``end_turn``, never ``stop_sequence``, because the OpenAI API
    does not report which stop sequence matched (see
    ``openai_to_anthropic_response`` for the vLLM exception).
    """
    if finish_reason is None:
        return None
    return FINISH_TO_STOP_REASON.get(finish_reason, "end_turn")


def anthropic_to_openai_response(
    body: dict[str, Any], *, created: int | None = None
) -> dict[str, Any]:
    """Translate a Messages response body to a ``chat.completion`` body.

    Text blocks are joined into ``content``, ``tool_use`` blocks become
    ``tool_calls`` with the input as a JSON string, and thinking becomes the
    non-standard ``reasoning_content`` field of DeepSeek's API.
    Signatures, redacted thinking, server tool blocks and ``stop_sequence``
    have no Chat Completions field and are dropped.
    """
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    content = body.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        block_type = block.get("type")
        if block_type == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block_type == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif block_type == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            tool_calls.append(
                openai_tool_call(block.get("id"), block.get("name"), arguments)
            )

    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls

    stop_reason = body.get("stop_reason")
    finish_reason = finish_reason_for(
        stop_reason if isinstance(stop_reason, str) else None
    )
    result: dict[str, Any] = {
        "id": body.get("id") or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }
        ],
    }
    usage = extract_usage(body.get("usage"))
    if usage is not None:
        result["usage"] = openai_usage_body(usage)
    return result


def openai_to_anthropic_response(
    body: dict[str, Any], *, tool_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Translate a ``chat.completion`` body to a Messages response body.

    Only the first choice is read. ``reasoning_content`` or ``reasoning``
    becomes a thinking block with an empty signature, ``content`` and
    ``refusal`` become text blocks, and ``tool_calls`` become ``tool_use``
    blocks, their names restored through ``tool_names``. A refusal sets
    ``stop_reason`` to ``refusal``. vLLM reports the stop string that ended
    the output in the choice's ``stop_reason``, which becomes
    ``stop_sequence``.

    NOTE: tool call arguments that are not a JSON object become ``{}``, so
    the client's tool reports the missing arguments to the model, which can
    retry the call.
    """
    choices = body.get("choices")
    choice: dict[str, Any] = {}
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}

    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    for text in message_texts(message.get("content")):
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in _list(message.get("tool_calls")):
        block = _tool_use_block(call, tool_names or {})
        if block is not None:
            content.append(block)

    finish_reason = choice.get("finish_reason")
    stop_reason = stop_reason_for(
        finish_reason if isinstance(finish_reason, str) else None
    )
    stop_sequence = None
    if isinstance(refusal, str) and refusal:
        stop_reason = "refusal"
    elif stop_reason == "end_turn" and isinstance(choice.get("stop_reason"), str):
        stop_reason = "stop_sequence"
        stop_sequence = choice["stop_reason"]

    usage = openai_usage(body.get("usage")) or Usage(0, 0)
    return {
        "id": body.get("id") or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop_reason or "end_turn",
        "stop_sequence": stop_sequence,
        "usage": usage_body(usage),
    }


def openai_usage(obj: object) -> Usage | None:
    """Read an OpenAI ``usage`` object, with the prompt cache writes that
    ``prompt_tokens_details.cache_write_tokens`` reports."""
    usage = extract_openai_usage(obj)
    if usage is None or not isinstance(obj, dict):
        return usage
    details = obj.get("prompt_tokens_details")
    if isinstance(details, dict):
        written = details.get("cache_write_tokens")
        if isinstance(written, int) and not isinstance(written, bool) and written > 0:
            return replace(usage, cache_write_tokens=written)
    return usage


def openai_usage_body(usage: Usage) -> dict[str, Any]:
    """Build an OpenAI ``usage`` object, whose ``prompt_tokens`` includes the
    cache read and write counts."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
    }


def openai_error_to_anthropic(status: int, body: bytes | str) -> TranslatedError:
    """Translate an OpenAI-format error response for an Anthropic client.

    The status stays the same. The message comes from ``error.message``
    (the shape of OpenAI, Azure, Mistral, Ollama, newer vLLM and Gemini) or
    a top-level ``message`` (older vLLM), else from the start of the body.
    """
    parsed = _load_json(body)
    message, error_type, code = _openai_error_fields(parsed)
    if message is None:
        message = _body_excerpt(body) or f"Upstream returned HTTP {status}."
    anthropic_type = anthropic_error_type(error_type, code, status)
    return TranslatedError(status=status, body=error_body(message, anthropic_type))


def anthropic_error_to_openai(status: int, body: bytes | str) -> TranslatedError:
    """Translate an Anthropic error response for an OpenAI client.

    The status stays the same, except that 529 becomes
    ``OVERLOADED_STATUS_FOR_OPENAI``. The type and code come from
    ``openai_error_type``.
    """
    parsed = _load_json(body)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    anthropic_type = error_type_for_status(status)
    message: str | None = None
    if isinstance(error, dict):
        if isinstance(error.get("type"), str):
            anthropic_type = error["type"]
        if isinstance(error.get("message"), str):
            message = error["message"]
    if message is None:
        message = _body_excerpt(body) or f"Upstream returned HTTP {status}."

    error_type, code = openai_error_type(anthropic_type)
    openai_status = OVERLOADED_STATUS_FOR_OPENAI if status == 529 else status
    return TranslatedError(
        status=openai_status, body=openai_error_body(message, error_type, code)
    )


def openai_error_type(anthropic_type: str) -> tuple[str, str | None]:
    """Return the OpenAI error ``type`` and ``code`` for an Anthropic type.

    Authentication, rate-limit and quota errors get the codes the OpenAI API
    itself uses (``invalid_api_key``, ``rate_limit_exceeded``,
    ``insufficient_quota``). Unknown types pass through with no code.
    """
    return _OPENAI_ERRORS.get(anthropic_type, (anthropic_type, None))


def anthropic_error_type(error_type: object, code: object, status: int | None) -> str:
    """Return the Anthropic error type for an OpenAI-format error.

    A quota error (``insufficient_quota``, sent with 429) is
    ``billing_error``. Otherwise an error status decides, which vLLM and
    Gemini also put in ``code`` as an integer. An error inside a stream, sent after
    status 200, is judged by its type and code, and is ``api_error`` when
    neither is known.
    """
    names = {value for value in (error_type, code) if isinstance(value, str)}
    if "insufficient_quota" in names:
        return "billing_error"
    if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
        status = code if status is None or status < 400 else status
    if status is not None and status >= 400:
        return error_type_for_status(status)

    for name in (error_type, code):
        if isinstance(name, str) and name in ERROR_TYPES:
            return name
    if names & _RATE_LIMIT_NAMES:
        return "rate_limit_error"
    if "context_length_exceeded" in names:
        return "invalid_request_error"
    return "api_error"


def retry_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the upstream response headers in ``RETRY_HEADERS``, names in
    lower case, to send with the translated error."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() in RETRY_HEADERS
    }


def new_completion_id() -> str:
    """Return a completion id in OpenAI's style, for an upstream that sent none."""
    return "chatcmpl-" + secrets.token_hex(12)


def new_message_id() -> str:
    """Return a message id in Anthropic's style, for an upstream that sent none."""
    return "msg_" + secrets.token_hex(12)


# Response pieces.


def openai_tool_call(call_id: object, name: object, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def message_texts(content: object) -> list[str]:
    """Return the texts of message content: a string, or text and refusal parts."""
    if isinstance(content, str):
        return [content] if content else []
    texts: list[str] = []
    for part in _list(content):
        if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
            text = part.get(part["type"])
            if isinstance(text, str) and text:
                texts.append(text)
    return texts


def _tool_use_block(
    call: object, tool_names: Mapping[str, str]
) -> dict[str, Any] | None:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return None
    function = call["function"]
    name = function.get("name")
    if not isinstance(name, str):
        return None
    arguments = function.get("arguments")
    parsed: object = None
    if isinstance(arguments, str) and arguments:
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else new_tool_use_id(),
        "name": tool_names.get(name, name),
        "input": parsed if isinstance(parsed, dict) else {},
    }


def new_tool_use_id() -> str:
    """Return a tool use id in Anthropic's style, for an upstream that sent none."""
    return "toolu_" + secrets.token_hex(12)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# Error pieces.


def _load_json(body: bytes | str) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _openai_error_fields(parsed: object) -> tuple[str | None, object, object]:
    """Return the message, type and code of an OpenAI-format error body."""
    if not isinstance(parsed, dict):
        return None, None, None
    error = parsed.get("error")
    if isinstance(error, str):
        return error, None, None
    source = error if isinstance(error, dict) else parsed
    message = source.get("message")
    return (
        message if isinstance(message, str) else None,
        source.get("type"),
        source.get("code"),
    )


def _body_excerpt(body: bytes | str, limit: int = 500) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."
