"""OpenAI Chat Completions and Embeddings wire helpers.

Request parsing checks only what the gateway itself relies on (the model,
the messages, the streaming and token-limit fields) and keeps the body as
sent, so unknown and newer fields pass through to the upstream untouched.
Invalid requests raise ``InvalidRequest`` with the offending ``param`` and a
message in the style of the OpenAI API's own 400 errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
import tiktoken

from llmgw.errors import InvalidRequest
from llmgw.protocols.sse import format_event
from llmgw.tokens import count_output_piece

# The OpenAI API's limits on ``n`` and on the items of an embeddings input.
MAX_CHOICES: Final = 128
MAX_EMBEDDING_INPUTS: Final = 2048

DONE_EVENT: Final = b"data: [DONE]\n\n"

# Delta fields whose text counts as generated output. Ollama and vLLM put
# reasoning text in "reasoning" or "reasoning_content", which the OpenAI API
# itself never streams.
_DELTA_TEXT_FIELDS: Final = ("content", "refusal", "reasoning", "reasoning_content")

# Tokens a tool call costs beyond its name and arguments, counted once per
# call. NOTE: this is an estimate from two recorded gpt-4o-2024-08-06 streams,
# which billed 7 tokens more than the text for one call and 7 more for two
# parallel calls.
TOOL_CALL_OVERHEAD_TOKENS: Final = 5


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated Chat Completions request body."""

    body: dict[str, Any]
    """The body as the client sent it."""
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    max_tokens: int | None
    max_completion_tokens: int | None
    include_usage: bool
    """Whether a streaming client requested the usage chunk."""
    n: int

    @property
    def max_output_tokens(self) -> int | None:
        """The output token limit; ``max_completion_tokens`` wins if both are set."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        return self.max_tokens


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated Embeddings request body."""

    body: dict[str, Any]
    model: str
    input: str | list[str] | list[int] | list[list[int]]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as an upstream reported it.

    ``input_tokens`` includes ``cached_tokens`` and ``cache_write_tokens``,
    and ``output_tokens`` includes ``reasoning_tokens``, as in the OpenAI API.
    """

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache (Anthropic's
    ``cache_creation_input_tokens``), which bill at a different rate."""


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """A summary of one stream chunk, from ``StreamTally.observe``."""

    usage_only: bool
    """The chunk has no choices, only usage, so a client that did not request
    usage must not see it."""
    has_output: bool
    """The chunk carries generated text or tool-call text."""
    error: bool
    """The chunk is an error object, not a completion chunk."""
    usage: Usage | None = None
    """The usage on this chunk, if any."""


def parse_chat_request(body: object) -> ChatRequest:
    """Validate a Chat Completions request body; raises ``InvalidRequest``."""
    body = _require_object_body(body)
    model = _require_model(body)
    messages = _require_messages(body)

    stream = _optional_bool(body, "stream") or False
    include_usage = False
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _invalid_type("stream_options", "an object", stream_options)
        requested = _optional_bool(stream_options, "include_usage", "stream_options.")
        include_usage = stream and bool(requested)

    n = _optional_int(body, "n", minimum=1, maximum=MAX_CHOICES)
    return ChatRequest(
        body=body,
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=_optional_int(body, "max_tokens", minimum=0),
        max_completion_tokens=_optional_int(body, "max_completion_tokens", minimum=0),
        include_usage=include_usage,
        n=1 if n is None else n,
    )


def parse_embeddings_request(body: object) -> EmbeddingsRequest:
    """Validate an Embeddings request body; raises ``InvalidRequest``.

    ``input`` must be a non-empty string, or a non-empty list of at most
    2048 items that are all non-empty strings, all token ids, or all
    non-empty token-id lists.
    """
    body = _require_object_body(body)
    model = _require_model(body)
    if body.get("input") is None:
        raise InvalidRequest("you must provide an input parameter", param="input")

    value = body["input"]
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string", param="input")
        return EmbeddingsRequest(body=body, model=model, input=value)

    if not isinstance(value, list):
        raise _invalid_type("input", "a string or an array", value)
    if not value:
        raise InvalidRequest("input must not be an empty array", param="input")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(
            f"input has {len(value)} items, more than the maximum of"
            f" {MAX_EMBEDDING_INPUTS}: split it into several requests",
            param="input",
        )

    _check_embedding_items(value)
    return EmbeddingsRequest(body=body, model=model, input=value)


def extract_usage(obj: object) -> Usage | None:
    """Read an OpenAI-style ``usage`` object; None if it contains no counts.

    Accepts ``prompt_tokens``/``completion_tokens`` and the Responses API's
    ``input_tokens``/``output_tokens``. Missing or null details count as 0,
    and so does a missing count when the other is present, as in the
    Embeddings API's usage. Counts that are not non-negative integers are
    treated as missing.
    """
    if not isinstance(obj, dict):
        return None

    input_tokens = _count(obj, "prompt_tokens", "input_tokens")
    output_tokens = _count(obj, "completion_tokens", "output_tokens")
    if input_tokens is None and output_tokens is None:
        return None

    input_details = _details(obj, "prompt_tokens_details", "input_tokens_details")
    output_details = _details(obj, "completion_tokens_details", "output_tokens_details")
    # DeepSeek reports cache hits as a top-level prompt_cache_hit_tokens.
    cached = _count(input_details, "cached_tokens") or _count(
        obj, "prompt_cache_hit_tokens"
    )
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cached_tokens=cached or 0,
        reasoning_tokens=_count(output_details, "reasoning_tokens") or 0,
    )


class StreamTally:
    """Output tokens and usage of one Chat Completions stream, chunk by chunk.

    The local tally counts every choice's text and tool-call deltas with
    ``encoding``, plus ``TOOL_CALL_OVERHEAD_TOKENS`` per tool call. It
    replaces upstream usage when none arrives, for example when the stream is
    cut off. The text pieces are kept and counted when ``output_tokens`` is
    read, so a stream whose upstream reports usage is never tokenized.
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding
        self._output_tokens = 0
        self._uncounted: list[str] = []
        self._usage: Usage | None = None
        self._error: dict[str, Any] | None = None

    @property
    def output_tokens(self) -> int:
        """The local count of output tokens so far."""
        if self._uncounted:
            for piece in self._uncounted:
                self._output_tokens += count_output_piece(piece, self._encoding)
            self._uncounted.clear()
        return self._output_tokens

    @property
    def usage(self) -> Usage | None:
        """The last usage any chunk carried, or None.

        The OpenAI API sends usage in a final chunk with no choices, Mistral
        on the chunk with the finish reason, and vLLM's continuous usage
        stats on every chunk, so the last one wins.
        """
        return self._usage

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``error`` object of the last error chunk, or None."""
        return self._error

    def observe(self, chunk: dict[str, Any]) -> ChunkInfo:
        """Count one parsed ``data:`` payload (not ``[DONE]``) and describe it."""
        if chunk.get("error") is not None:
            self._error = _error_object(chunk["error"])
            return ChunkInfo(usage_only=False, has_output=False, error=True)

        usage = extract_usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage

        choices = chunk.get("choices")
        has_output = False
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and self._count_delta(choice.get("delta")):
                    has_output = True

        return ChunkInfo(
            usage_only=usage is not None and not choices,
            has_output=has_output,
            error=False,
            usage=usage,
        )

    def _count_delta(self, delta: object) -> bool:
        """Add a delta's output tokens; True if it carried any output."""
        if not isinstance(delta, dict):
            return False

        has_output = False
        pieces = [delta.get(name) for name in _DELTA_TEXT_FIELDS]
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if not isinstance(call, dict):
                    continue
                # Only the first fragment of a call carries its id.
                if isinstance(call.get("id"), str) and call["id"]:
                    self._output_tokens += TOOL_CALL_OVERHEAD_TOKENS
                    has_output = True
                pieces.extend(_function_text(call.get("function")))
        pieces.extend(_function_text(delta.get("function_call")))

        for piece in pieces:
            if isinstance(piece, str) and piece:
                self._uncounted.append(piece)
                has_output = True
        return has_output


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """Build an OpenAI error body: ``{"error": {message, type, param, code}}``."""
    return {
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }


def error_event(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> bytes:
    """Build the SSE frame that reports a failure in the middle of a stream.

    The OpenAI Python SDK raises ``APIError`` for any ``data:`` payload with
    an ``error`` key, so the gateway sends this frame and then closes.
    """
    return format_event(orjson.dumps(error_body(message, error_type, code, param)))


def _require_object_body(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _require_model(body: dict[str, Any]) -> str:
    if body.get("model") is None:
        raise InvalidRequest("you must provide a model parameter", param="model")

    model = body["model"]
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model.strip():
        raise InvalidRequest("model must not be empty", param="model")
    return model


def _require_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if body.get("messages") is None:
        raise InvalidRequest("you must provide a messages parameter", param="messages")

    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "messages must contain at least one message", param="messages"
        )

    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid_type(param, "an object", message)
        if message.get("role") is None:
            raise InvalidRequest(
                f"missing required parameter '{param}.role'", param=f"{param}.role"
            )
        if not isinstance(message["role"], str):
            raise _invalid_type(f"{param}.role", "a string", message["role"])

    return messages


def _optional_bool(obj: dict[str, Any], key: str, prefix: str = "") -> bool | None:
    """Read a boolean field that may be absent or null."""
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid_type(prefix + key, "a boolean", value)
    return value


def _optional_int(
    obj: dict[str, Any], key: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """Read an integer field that may be absent or null, within bounds."""
    value = obj.get(key)
    if value is None:
        return None

    # bool is a subclass of int, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(key, "an integer", value)
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum}"
        if maximum is not None:
            bounds = f"between {minimum} and {maximum}"
        raise InvalidRequest(
            f"invalid value for '{key}': expected an integer {bounds}, got {value}",
            param=key,
        )
    return value


def _check_embedding_items(items: list[Any]) -> None:
    """Check that embeddings input items are all of one allowed kind."""
    first = items[0]
    if isinstance(first, str):
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise _invalid_type(f"input[{index}]", "a string", item)
            if not item:
                raise InvalidRequest(
                    f"input[{index}] must not be an empty string",
                    param=f"input[{index}]",
                )
    elif _is_token_id(first):
        for index, item in enumerate(items):
            if not _is_token_id(item):
                raise _invalid_type(f"input[{index}]", "a token id", item)
    elif isinstance(first, list):
        for index, item in enumerate(items):
            if not isinstance(item, list) or not item:
                raise _invalid_type(f"input[{index}]", "a non-empty array", item)
            if not all(_is_token_id(token) for token in item):
                raise _invalid_type(f"input[{index}]", "an array of token ids", item)
    else:
        raise _invalid_type(
            "input[0]", "a string, a token id or an array of token ids", first
        )


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
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
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _count(obj: object, *keys: str) -> int | None:
    """Return the first of ``keys`` that holds a non-negative integer count.

    Integral floats such as 12.0, which some servers send, count too.
    """
    if not isinstance(obj, dict):
        return None

    for key in keys:
        value = obj.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _details(obj: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, dict):
            return value
    return None


def _function_text(function: object) -> list[object]:
    """Return the name and arguments of a streamed function-call fragment."""
    if not isinstance(function, dict):
        return []
    return [function.get("name"), function.get("arguments")]


def _error_object(error: object) -> dict[str, Any]:
    """Return an ``error`` payload as a dict; Ollama sends a bare string."""
    if isinstance(error, dict):
        return error
    return {"message": str(error)}
