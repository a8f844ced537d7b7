"""Pieces shared by the Gemini and Bedrock translators of OpenAI Chat Completions.

On the request side: reading content parts, data URLs, tool definitions,
tool choice and tool-call arguments, with ``InvalidRequest`` errors that name
the offending parameter. On the response side: builders for
``chat.completion`` bodies, ``chat.completion.chunk`` streams (each choice
starts with its role, the stream ends with ``data: [DONE]``), the ``usage``
object and error bodies, so that every translator produces the same shapes.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from llmgw.errors import InvalidRequest
from llmgw.protocols.openai import DONE_EVENT, Usage, error_event
from llmgw.protocols.sse import format_event

# The error ``type`` and ``code`` sent in a stream that failed upstream.
UPSTREAM_ERROR_TYPE: Final = "upstream_error"
STREAM_TRUNCATED_CODE: Final = "upstream_stream_truncated"


# RFC 2397, base64 form only: data:<media type>[;param=value]*;base64,<data>
_DATA_URL: Final = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^;,]*)*;base64,(?P<data>.*)",
    re.DOTALL | re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class DataURL:
    mime_type: str
    data: str
    """The base64 text, not decoded."""


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """One ``tools[]`` item of type ``function``."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None
    """The JSON Schema of the arguments, as the client sent it."""


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """The ``tool_choice`` of a request, reduced to what the providers share."""

    mode: Literal["auto", "none", "required"]
    names: tuple[str, ...] | None = None
    """The functions the model may call, or None for every declared one."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tool_calls[]`` item of an assistant message, arguments parsed."""

    id: str
    name: str
    arguments: dict[str, Any]


def parse_data_url(url: str) -> DataURL | None:
    """Split a base64 ``data:`` URL, or return None for any other URL."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        return None
    return DataURL(match["mime"].lower(), match["data"])


def content_parts(content: object, param: str) -> list[dict[str, Any]]:
    """Return a message's ``content`` as a list of typed parts.

    A string becomes one text part, and None or "" no parts.
    """
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid_type(param, "a string or an array", content)

    for index, part in enumerate(content):
        if not isinstance(part, dict):
            raise invalid_type(f"{param}[{index}]", "an object", part)
        if not isinstance(part.get("type"), str):
            raise invalid_type(f"{param}[{index}].type", "a string", part.get("type"))
    return content


def text_content(content: object, param: str) -> str:
    """Join the text of a content that may contain only text.

    System, developer and tool messages take text only.
    """
    pieces: list[str] = []
    for index, part in enumerate(content_parts(content, param)):
        if part["type"] != "text":
            raise InvalidRequest(
                f"invalid content part type {part['type']!r} in '{param}[{index}]':"
                " only text parts are supported in this message",
                param=f"{param}[{index}].type",
            )
        pieces.append(part_text(part, f"{param}[{index}]"))
    return "".join(pieces)


def part_text(part: dict[str, Any], param: str) -> str:
    """Return the ``text`` of a text part (or the ``refusal`` of a refusal part)."""
    key = "refusal" if part["type"] == "refusal" else "text"
    text = part.get(key)
    if not isinstance(text, str):
        raise invalid_type(f"{param}.{key}", "a string", text)
    return text


def image_url(part: dict[str, Any], param: str) -> str:
    """Return the URL of an ``image_url`` part."""
    value = part.get("image_url")
    if isinstance(value, dict):
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise invalid_type(f"{param}.image_url.url", "a non-empty string", value)
    return value


def function_tools(body: dict[str, Any]) -> list[FunctionTool]:
    """Read ``tools``. Raises ``InvalidRequest`` for a tool that is not a function."""
    _reject_legacy_functions(body)
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)

    result: list[FunctionTool] = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(param, "an object", tool)
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"unsupported tool type {tool.get('type')!r} in '{param}.type':"
                " this provider only supports tools of type 'function'",
                param=f"{param}.type",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise invalid_type(f"{param}.function", "an object", function)
        result.append(_function_tool(function, f"{param}.function"))
    return result


def _function_tool(function: dict[str, Any], param: str) -> FunctionTool:
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_type(f"{param}.name", "a non-empty string", name)
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid_type(f"{param}.description", "a string", description)
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid_type(f"{param}.parameters", "an object", parameters)
    return FunctionTool(name, description, parameters)


def _reject_legacy_functions(body: dict[str, Any]) -> None:
    for key in ("functions", "function_call"):
        if body.get(key) is not None:
            raise InvalidRequest(
                f"'{key}' is deprecated and not supported for this provider:"
                " use 'tools' and 'tool_choice' instead",
                param=key,
            )


def tool_choice(body: dict[str, Any]) -> ToolChoice | None:
    """Read ``tool_choice``, or return None when the request has none."""
    value = body.get("tool_choice")
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"invalid value for 'tool_choice': {value!r}. Expected 'none', 'auto',"
            " 'required' or an object",
            param="tool_choice",
        )

    if value.get("type") == "function":
        return ToolChoice("required", (_choice_name(value, "tool_choice"),))
    if value.get("type") == "allowed_tools":
        return _allowed_tools(value.get("allowed_tools"))
    raise InvalidRequest(
        f"unsupported tool_choice type {value.get('type')!r}: expected 'function'"
        " or 'allowed_tools'",
        param="tool_choice.type",
    )


def _choice_name(value: dict[str, Any], param: str) -> str:
    function = value.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise invalid_type(f"{param}.function.name", "a non-empty string", name)
    return name


def _allowed_tools(value: object) -> ToolChoice:
    param = "tool_choice.allowed_tools"
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    mode = value.get("mode")
    if mode not in ("auto", "required"):
        raise InvalidRequest(
            f"invalid value for '{param}.mode': {mode!r}. Expected 'auto' or"
            " 'required'",
            param=f"{param}.mode",
        )
    tools = value.get("tools")
    if not isinstance(tools, list):
        raise invalid_type(f"{param}.tools", "an array", tools)

    names: list[str] = []
    for index, tool in enumerate(tools):
        item = f"{param}.tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise InvalidRequest(
                f"unsupported tool in '{item}': only tools of type 'function'"
                " are supported",
                param=item,
            )
        names.append(_choice_name(tool, item))
    return ToolChoice(mode, tuple(names))


def assistant_tool_calls(message: dict[str, Any], param: str) -> list[ToolCall]:
    """Read the ``tool_calls`` of an assistant message, arguments parsed."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise invalid_type(f"{param}.tool_calls", "an array", calls)

    result: list[ToolCall] = []
    for index, call in enumerate(calls):
        item = f"{param}.tool_calls[{index}]"
        if not isinstance(call, dict):
            raise invalid_type(item, "an object", call)
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid_type(f"{item}.id", "a non-empty string", call_id)
        function = call.get("function")
        if not isinstance(function, dict):
            raise invalid_type(f"{item}.function", "an object", function)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_type(f"{item}.function.name", "a non-empty string", name)
        arguments = tool_arguments(
            function.get("arguments"), f"{item}.function.arguments"
        )
        result.append(ToolCall(call_id, name, arguments))
    return result


def tool_arguments(arguments: object, param: str) -> dict[str, Any]:
    """Parse a tool call's ``arguments`` JSON text into an object.

    Gemini and Bedrock take the arguments as an object, so text that is not
    a JSON object is rejected. An empty string, which some clients send for a
    call without arguments, is read as ``{}``.
    """
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise invalid_type(param, "a string", arguments)
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            f"invalid JSON in '{param}': tool call arguments must be a JSON object",
            param=param,
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"invalid value for '{param}': tool call arguments must be a JSON object",
            param=param,
        )
    return parsed


def tool_message_id(message: dict[str, Any], param: str) -> str:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_type(f"{param}.tool_call_id", "a non-empty string", call_id)
    return call_id


def stop_sequences(body: dict[str, Any]) -> list[str] | None:
    """Read ``stop``, a string or an array of strings, as a list."""
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise invalid_type("stop", "a string or an array of strings", stop)
    return stop


def optional_number(body: dict[str, Any], key: str) -> int | float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_type(key, "a number", value)
    return value


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    """The JSON Schema of a ``json_schema`` format, if it has one."""


def response_format(body: dict[str, Any]) -> ResponseFormat | None:
    """Read ``response_format``, or return None when the request has none."""
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("response_format", "an object", value)

    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise InvalidRequest(
            f"invalid value for 'response_format.type': {kind!r}. Expected 'text',"
            " 'json_object' or 'json_schema'",
            param="response_format.type",
        )

    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid_type("response_format.json_schema", "an object", spec)
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, dict):
        raise invalid_type("response_format.json_schema.schema", "an object", schema)
    return ResponseFormat("json_schema", schema)


def reasoning_effort(body: dict[str, Any]) -> str | None:
    """Read ``reasoning_effort``: none, minimal, low, medium or high."""
    value = body.get("reasoning_effort")
    if value is None:
        return None
    if value not in ("none", "minimal", "low", "medium", "high"):
        raise InvalidRequest(
            f"invalid value for 'reasoning_effort': {value!r}. Expected 'none',"
            " 'minimal', 'low', 'medium' or 'high'",
            param="reasoning_effort",
        )
    return str(value)


def invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(
        f"invalid type for '{param}': expected {expected}, but got"
        f" {_json_type_name(value)} instead",
        param=param,
    )


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An upstream error translated for an OpenAI client."""

    status: int
    """The upstream's HTTP status, kept as it was."""
    body: dict[str, Any]
    """``{"error": {"message", "type", "param", "code"}}``."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers to send with the error, such as ``retry-after``."""


def load_json(body: object) -> object:
    """Parse an upstream body given as bytes or text, or None if it is not JSON.

    Anything else, such as an already parsed dict, is returned as it is.
    """
    if not isinstance(body, bytes | bytearray | memoryview | str):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def body_excerpt(body: object, limit: int = 500) -> str:
    """Return the start of a body that is not the expected JSON, for a message."""
    if isinstance(body, bytes | bytearray | memoryview):
        text = bytes(body).decode("utf-8", errors="replace")
    else:
        text = str(body)
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def openai_error_type(status: int) -> str:
    """Return the OpenAI error ``type`` for an HTTP status.

    The OpenAI SDKs pick their exception class from the status alone, so the
    type is informative only.
    """
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def new_completion_id() -> str:
    """Return an id in the OpenAI style, for upstreams that send none."""
    return "chatcmpl-" + secrets.token_hex(12)


def new_tool_call_id() -> str:
    """Return a tool call id in the OpenAI style, for upstreams that send none."""
    return "call_" + secrets.token_hex(12)


def usage_body(usage: Usage) -> dict[str, Any]:
    """Build the OpenAI ``usage`` object.

    Its counts include cache reads and writes (prompt) and reasoning
    (completion), as ``Usage`` does. ``cache_write_tokens`` is sent only when
    non-zero, because OpenAI's own responses do not have it.
    """
    prompt_details: dict[str, int] = {"cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def tool_call_body(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def resolve_finish_reason(reason: str, has_tool_calls: bool) -> str:
    """Report ``tool_calls`` for a normal stop that made tool calls.

    Gemini ends a turn with function calls with ``STOP``, and OpenAI clients
    run the tools only when the finish reason is ``tool_calls``.
    """
    if has_tool_calls and reason == "stop":
        return "tool_calls"
    return reason


@dataclass(slots=True)
class ChoiceOutput:
    """The content of one choice, gathered from an upstream response."""

    index: int
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None

    def to_choice(self) -> dict[str, Any]:
        """Build the ``choices[]`` item of a ``chat.completion`` body.

        ``content`` is None when there is no text, as in the OpenAI API.
        Reasoning text goes into ``reasoning_content``, a non-standard field
        that several OpenAI-compatible servers use.
        """
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) if self.text else None,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls

        reason = resolve_finish_reason(
            self.finish_reason or "stop", bool(self.tool_calls)
        )
        return {
            "index": self.index,
            "message": message,
            "logprobs": None,
            "finish_reason": reason,
        }


def completion_body(
    *,
    completion_id: str,
    model: str,
    created: int,
    choices: list[ChoiceOutput],
    usage: Usage | None,
) -> dict[str, Any]:
    """Build a ``chat.completion`` body, without ``usage`` when it is None."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice.to_choice() for choice in choices],
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


class ChatChunkStream:
    """Build the ``chat.completion.chunk`` stream of a translated response.

    Every method returns the SSE bytes to send, possibly empty. The first
    output of each choice is preceded by a chunk with
    ``delta: {"role": "assistant", "content": ""}``. Tool calls get a running
    ``index`` per choice, starting at 0, as OpenAI streams them.
    """

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.completion_id = completion_id or new_completion_id()
        self.created = int(time.time()) if created is None else created
        self._started: set[int] = set()
        self._open: set[int] = set()
        self._tool_calls: dict[int, int] = {}
        self._finished = False
        self._failed = False
        self._ended = False

    @property
    def started(self) -> bool:
        """True once any chunk was built, so the id and model are fixed."""
        return bool(self._started) or self._failed

    @property
    def completed(self) -> bool:
        """True once a finish reason was sent and no choice is still open."""
        return self._finished and not self._open

    @property
    def failed(self) -> bool:
        """True once an error event was sent."""
        return self._failed

    def tool_call_count(self, index: int = 0) -> int:
        """Return the number of tool calls started in choice ``index``."""
        return self._tool_calls.get(index, 0)

    def start(self, index: int = 0) -> bytes:
        """Build the role chunk of choice ``index``, unless it was built already."""
        return self._role(index)

    def text(self, text: str, index: int = 0) -> bytes:
        if not text:
            return b""
        return self._delta(index, {"content": text})

    def reasoning(self, text: str, index: int = 0) -> bytes:
        """Build a non-standard ``reasoning_content`` delta with reasoning text."""
        if not text:
            return b""
        return self._delta(index, {"reasoning_content": text})

    def tool_call(
        self, call_id: str, name: str, arguments: str = "", index: int = 0
    ) -> tuple[int, bytes]:
        """Start a tool call, returning its tool-call index and the chunk bytes.

        A call that arrived whole is sent in this one chunk, arguments and
        all. Otherwise pass ``arguments=""`` and send the fragments with
        ``tool_arguments``.
        """
        tool_index = self._tool_calls.get(index, 0)
        self._tool_calls[index] = tool_index + 1
        call = {"index": tool_index, **tool_call_body(call_id, name, arguments)}
        return tool_index, self._delta(index, {"tool_calls": [call]})

    def tool_arguments(self, tool_index: int, arguments: str, index: int = 0) -> bytes:
        if not arguments:
            return b""
        call = {"index": tool_index, "function": {"arguments": arguments}}
        return self._delta(index, {"tool_calls": [call]})

    def finish_choice(self, reason: str, index: int = 0) -> bytes:
        """Build the chunk with the finish reason of choice ``index``.

        A ``stop`` becomes ``tool_calls`` when the choice made tool calls.
        """
        out = self._role(index)
        reason = resolve_finish_reason(reason, self.tool_call_count(index) > 0)
        self._open.discard(index)
        self._finished = True
        return out + self._chunk(
            [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]
        )

    def error(self, message: str, error_type: str, code: str | None) -> bytes:
        """Build an OpenAI error event, after which the stream must end."""
        self._failed = True
        return error_event(message, error_type, code)

    def end(self, usage: Usage | None) -> bytes:
        """Close the stream, once, after the upstream stream has ended.

        After a finish reason this returns the usage chunk (when the client
        requested it and ``usage`` is known) and ``data: [DONE]``. After an
        error event it returns nothing. A stream that ended without a finish
        reason was cut off, so it returns an error event instead of
        ``[DONE]``, and the OpenAI SDK raises ``APIError``.
        """
        if self._ended or self._failed:
            return b""
        self._ended = True
        if not self.completed:
            return self.error(
                "The upstream stream ended before the response was complete.",
                UPSTREAM_ERROR_TYPE,
                STREAM_TRUNCATED_CODE,
            )

        out = b""
        if self.include_usage and usage is not None:
            out += self._chunk([], usage=usage_body(usage))
        return out + DONE_EVENT

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        out = self._role(index)
        return out + self._chunk(
            [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]
        )

    def _role(self, index: int) -> bytes:
        if index in self._started:
            return b""
        self._started.add(index)
        self._open.add(index)
        return self._chunk(
            [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def _chunk(
        self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return format_event(orjson.dumps(chunk))
