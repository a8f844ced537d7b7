"""Anthropic Messages wire helpers: request validation, usage, error bodies.

Request parsing checks the fields that the gateway and the translation to
OpenAI Chat Completions rely on, and keeps the body as sent, so newer fields
pass through to an Anthropic upstream untouched. Invalid requests raise
``InvalidRequest`` whose ``param`` is the field path in Anthropic's dotted
form (``messages.0.content``) and whose message reads like the Anthropic
API's own 400 errors (``max_tokens: Field required``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from llmgw.errors import GatewayError, InvalidRequest
from llmgw.protocols.openai import Usage
from llmgw.protocols.sse import format_event

ROLES: Final = ("user", "assistant")
IMAGE_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_CHOICE_TYPES: Final = ("auto", "any", "tool", "none")
# The smallest thinking budget the Anthropic API accepts.
MIN_THINKING_BUDGET: Final = 1024

# Error types of the Anthropic API, by the HTTP status it sends them with.
# Anthropic's own table has no 503. The gateway sends overloaded_error with
# it, because both mean "temporarily unavailable, retry later".
ERROR_TYPE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPES: Final = frozenset(ERROR_TYPE_BY_STATUS.values())

# Content block types whose fields the validation checks. Other types, such as
# server tool results and newer blocks, pass unchecked.
_CHECKED_BLOCKS: Final = frozenset(
    {"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated Messages request body."""

    body: dict[str, Any]
    """The body as the client sent it."""
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    stream: bool
    system: str | list[dict[str, Any]] | None
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any] | None
    thinking: dict[str, Any] | None
    user_id: str | None
    """``metadata.user_id``."""
    stop_sequences: list[str]
    temperature: float | None
    top_p: float | None
    top_k: int | None


def parse_messages_request(body: object) -> MessagesRequest:
    """Validate a Messages request body, raising ``InvalidRequest`` if invalid."""
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")

    model = _required(body, "model")
    if not isinstance(model, str):
        raise _invalid_type("model", "a valid string")
    if not model.strip():
        raise _invalid("model", "String should have at least 1 character")

    max_tokens = _required(body, "max_tokens")
    if not _is_int(max_tokens):
        raise _invalid_type("max_tokens", "a valid integer")
    if max_tokens < 1:
        raise _out_of_range("max_tokens", "greater than or equal to 1")

    messages = _messages(body)
    system = _system(body)
    stream = _optional_bool(body, "stream") or False
    tools = _tools(body)
    tool_choice = _tool_choice(body)
    thinking = _thinking(body, max_tokens)
    return MessagesRequest(
        body=body,
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=stream,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        thinking=thinking,
        user_id=_user_id(body),
        stop_sequences=_stop_sequences(body),
        temperature=_optional_fraction(body, "temperature"),
        top_p=_optional_fraction(body, "top_p"),
        top_k=_optional_top_k(body),
    )


def extract_usage(obj: object) -> Usage | None:
    """Read an Anthropic ``usage`` object, or return None if it has no counts.

    Anthropic's ``input_tokens`` excludes the prompt cache, so the llmgw
    ``Usage`` counts every input token once: ``input_tokens`` is
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``,
    ``cached_tokens`` is the cache read and ``cache_write_tokens`` the cache
    write. ``output_tokens`` already includes thinking. Missing or null
    counts are 0.
    """
    if not isinstance(obj, dict):
        return None
    counts = UsageAccumulator()
    counts.update(obj)
    return counts.usage


class UsageAccumulator:
    """The usage of one Anthropic stream, from ``message_start`` and
    ``message_delta`` events.

    Both events carry cumulative counts, and a later ``message_delta`` may
    correct ``input_tokens`` or the cache counts of ``message_start``, so the
    latest value of each field wins. Counts are never summed.
    """

    _FIELDS: Final = (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def update(self, usage: object) -> None:
        """Take the counts of one ``usage`` object and ignore its other fields."""
        if not isinstance(usage, dict):
            return
        for name in self._FIELDS:
            value = usage.get(name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if _is_int(value) and value >= 0:
                self._counts[name] = value

    @property
    def usage(self) -> Usage | None:
        """The counts so far, or None before any arrived."""
        if not self._counts:
            return None
        cache_read = self._counts.get("cache_read_input_tokens", 0)
        cache_write = self._counts.get("cache_creation_input_tokens", 0)
        return Usage(
            input_tokens=self._counts.get("input_tokens", 0) + cache_read + cache_write,
            output_tokens=self._counts.get("output_tokens", 0),
            cached_tokens=cache_read,
            cache_write_tokens=cache_write,
        )


def usage_body(usage: Usage) -> dict[str, int]:
    """Build an Anthropic ``usage`` object, whose ``input_tokens`` excludes
    the cache read and write counts."""
    uncached = usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
    return {
        "input_tokens": max(uncached, 0),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def error_type_for_status(status: int) -> str:
    """Return the Anthropic error ``type`` for an HTTP status.

    Statuses missing from ``ERROR_TYPE_BY_STATUS`` get
    ``invalid_request_error`` when 4xx, as the Anthropic API does, and
    ``api_error`` otherwise.
    """
    error_type = ERROR_TYPE_BY_STATUS.get(status)
    if error_type is not None:
        return error_type
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


def error_body(message: str, error_type: str) -> dict[str, Any]:
    """Build an Anthropic error body: ``{"type": "error", "error": {...}}``."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_event(message: str, error_type: str) -> bytes:
    """Build the ``error`` SSE event that ends a failed stream.

    The Anthropic Python SDK (checked with 2.17) raises ``APIStatusError``
    for it.
    """
    body = orjson.dumps(error_body(message, error_type))
    return format_event(body, event="error")


def gateway_error_body(error: GatewayError) -> dict[str, Any]:
    """Build the Anthropic error body for one of the gateway's own errors.

    The type follows the HTTP status, so that, for example, a gateway rate
    limit reaches an Anthropic client as ``rate_limit_error``.
    """
    return error_body(error.message, error_type_for_status(error.http_status))


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = _required(body, "messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "a valid list")
    if not messages:
        raise _invalid("messages", "at least one message is required")

    for index, message in enumerate(messages):
        path = f"messages.{index}"
        if not isinstance(message, dict):
            raise _invalid_type(path, "a valid dictionary")
        role = _required(message, "role", path)
        if role not in ROLES:
            raise _invalid(f"{path}.role", "Input should be 'user' or 'assistant'")
        content = _required(message, "content", path)
        if isinstance(content, list):
            for number, block in enumerate(content):
                _check_block(block, f"{path}.content.{number}", role)
        elif not isinstance(content, str):
            raise _invalid_type(f"{path}.content", "a valid string or list")
    return messages


def _check_block(block: object, path: str, role: str) -> None:
    """Check one content block of a message or of a tool result."""
    if not isinstance(block, dict):
        raise _invalid_type(path, "a valid dictionary")
    block_type = _required(block, "type", path)
    if not isinstance(block_type, str):
        raise _invalid_type(f"{path}.type", "a valid string")
    if block_type not in _CHECKED_BLOCKS:
        return

    if block_type == "text":
        _require_string(block, "text", path)
    elif block_type == "image":
        _check_image_source(block, path)
    elif block_type == "tool_use":
        if role != "assistant":
            raise _invalid(
                path, "tool_use blocks are only allowed in assistant messages"
            )
        _require_string(block, "id", path)
        _require_string(block, "name", path)
        if not isinstance(_required(block, "input", path), dict):
            raise _invalid_type(f"{path}.input", "a valid dictionary")
    elif block_type == "tool_result":
        _check_tool_result(block, path, role)
    elif block_type == "thinking":
        _require_string(block, "thinking", path)
        _require_string(block, "signature", path)
    else:
        _require_string(block, "data", path)


def _check_image_source(block: dict[str, Any], path: str) -> None:
    source = _required(block, "source", path)
    if not isinstance(source, dict):
        raise _invalid_type(f"{path}.source", "a valid dictionary")
    source_type = source.get("type")
    if source_type == "base64":
        media_type = _require_string(source, "media_type", f"{path}.source")
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(f"'{name}'" for name in IMAGE_MEDIA_TYPES)
            raise _invalid(
                f"{path}.source.media_type", f"Input should be one of {allowed}"
            )
        _require_string(source, "data", f"{path}.source")
    elif source_type == "url":
        _require_string(source, "url", f"{path}.source")
    elif not isinstance(source_type, str):
        raise _invalid_type(f"{path}.source.type", "a valid string")


def _check_tool_result(block: dict[str, Any], path: str, role: str) -> None:
    if role != "user":
        raise _invalid(path, "tool_result blocks are only allowed in user messages")
    _require_string(block, "tool_use_id", path)
    content = block.get("content")
    if isinstance(content, list):
        for number, item in enumerate(content):
            _check_block(item, f"{path}.content.{number}", role)
    elif content is not None and not isinstance(content, str):
        raise _invalid_type(f"{path}.content", "a valid string or list")
    if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
        raise _invalid_type(f"{path}.is_error", "a valid boolean")


def _system(body: dict[str, Any]) -> str | list[dict[str, Any]] | None:
    system = body.get("system")
    if system is None or isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid_type("system", "a valid string or list")

    for index, block in enumerate(system):
        path = f"system.{index}"
        if not isinstance(block, dict):
            raise _invalid_type(path, "a valid dictionary")
        if block.get("type") != "text":
            raise _invalid(f"{path}.type", "Input should be 'text'")
        _require_string(block, "text", path)
    return system


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid_type("tools", "a valid list")

    for index, tool in enumerate(tools):
        path = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid_type(path, "a valid dictionary")
        _require_string(tool, "name", path)
        tool_type = tool.get("type")
        if tool_type is not None and not isinstance(tool_type, str):
            raise _invalid_type(f"{path}.type", "a valid string")
        # Server tools and Anthropic-defined client tools, such as
        # "web_search_20250305" or "bash_20250124", have no input_schema.
        if tool_type in (None, "custom"):
            schema = _required(tool, "input_schema", path)
            if not isinstance(schema, dict):
                raise _invalid_type(f"{path}.input_schema", "a valid dictionary")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _invalid_type(f"{path}.description", "a valid string")
    return tools


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise _invalid_type("tool_choice", "a valid dictionary")

    choice_type = _required(choice, "type", "tool_choice")
    if choice_type not in TOOL_CHOICE_TYPES:
        allowed = ", ".join(f"'{name}'" for name in TOOL_CHOICE_TYPES)
        raise _invalid("tool_choice.type", f"Input should be one of {allowed}")
    if choice_type == "tool":
        _require_string(choice, "name", "tool_choice")
    _optional_bool(choice, "disable_parallel_tool_use", "tool_choice.")
    return choice


def _thinking(body: dict[str, Any], max_tokens: int) -> dict[str, Any] | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise _invalid_type("thinking", "a valid dictionary")

    thinking_type = _require_string(thinking, "type", "thinking")
    if thinking_type != "enabled":
        return thinking

    budget = _required(thinking, "budget_tokens", "thinking")
    if not _is_int(budget):
        raise _invalid_type("thinking.budget_tokens", "a valid integer")
    if budget < MIN_THINKING_BUDGET:
        raise _out_of_range(
            "thinking.budget_tokens", f"greater than or equal to {MIN_THINKING_BUDGET}"
        )
    if max_tokens <= budget:
        raise _invalid(
            "max_tokens",
            f"must be greater than thinking.budget_tokens, but max_tokens is"
            f" {max_tokens} and thinking.budget_tokens is {budget}",
        )
    return thinking


def _user_id(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid_type("metadata", "a valid dictionary")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise _invalid_type("metadata.user_id", "a valid string")
    return user_id


def _stop_sequences(body: dict[str, Any]) -> list[str]:
    sequences = body.get("stop_sequences")
    if sequences is None:
        return []
    if not isinstance(sequences, list):
        raise _invalid_type("stop_sequences", "a valid list")
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, str):
            raise _invalid_type(f"stop_sequences.{index}", "a valid string")
    return sequences


def _optional_fraction(body: dict[str, Any], key: str) -> float | None:
    """Read a number between 0 and 1 that may be absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type(key, "a valid number")
    if value < 0:
        raise _out_of_range(key, "greater than or equal to 0")
    if value > 1:
        raise _out_of_range(key, "less than or equal to 1")
    return float(value)


def _optional_top_k(body: dict[str, Any]) -> int | None:
    value = body.get("top_k")
    if value is None:
        return None
    if not _is_int(value):
        raise _invalid_type("top_k", "a valid integer")
    if value < 0:
        raise _out_of_range("top_k", "greater than or equal to 0")
    return value


def _optional_bool(obj: dict[str, Any], key: str, prefix: str = "") -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid_type(prefix + key, "a valid boolean")
    return value


def _required(obj: dict[str, Any], key: str, path: str = "") -> Any:
    """Return a field that must be present and not null."""
    param = f"{path}.{key}" if path else key
    if obj.get(key) is None:
        raise _invalid(param, "Field required")
    return obj[key]


def _require_string(obj: dict[str, Any], key: str, path: str) -> str:
    value = _required(obj, key, path)
    if not isinstance(value, str):
        raise _invalid_type(f"{path}.{key}", "a valid string")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    # bool is a subclass of int, but JSON true is not a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(param: str, detail: str) -> InvalidRequest:
    """Build the error in the Anthropic API's form, ``<field path>: <detail>``."""
    return InvalidRequest(f"{param}: {detail}", param=param)


def _invalid_type(param: str, expected: str) -> InvalidRequest:
    return _invalid(param, f"Input should be {expected}")


def _out_of_range(param: str, bound: str) -> InvalidRequest:
    return _invalid(param, f"Input should be {bound}")
