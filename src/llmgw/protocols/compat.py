"""Normalizers for the quirks of OpenAI-compatible servers.

Mistral, vLLM and Ollama speak OpenAI Chat Completions with differences that
break strict clients or strict servers. A ``CompatAdapter`` hides them: it
rewrites the request before it goes upstream, and the response, each stream
chunk and each error on the way back. Create one adapter per request with
``compat_adapter``, because the Mistral adapter keeps per-request state.

What each adapter changes:

* All, the base included: error bodies become the OpenAI shape
  ``{"error": {"message", "type", "param", "code"}}``. vLLM sends an
  integer ``code`` (the HTTP status), older vLLM and Mistral send
  ``{"object": "error", ...}`` at the top level, Ollama sometimes a bare
  string in ``error``, and FastAPI-based servers ``{"detail": ...}``. A
  ``code`` that is a number becomes a string, as OpenAI's codes are.
* Mistral: tool call ids must be exactly 9 characters from ``a-zA-Z0-9``.
  Other ids are replaced by a hash of themselves in requests, and restored in
  the response. The same id always gets the same replacement, so the ids
  agree in every request of a conversation. Streamed tool calls arrive whole and without
  ``index`` or ``type``, so both are added. A continuation fragment's empty
  ``name`` is dropped, so a client that overwrites the name per fragment
  keeps it. ``max_completion_tokens`` becomes ``max_tokens`` and ``seed``
  becomes ``random_seed``, the names Mistral takes, and ``stream_options``
  is dropped, because Mistral sends usage on the last chunk anyway.
  NOTE: Mistral rejects request fields it does not know with HTTP 422, but the
  other OpenAI-only fields (``store``, ``metadata``, ``service_tier`` and
  the like) are passed on as sent.
* Ollama: the reasoning text stays in Ollama's own ``reasoning`` field of
  messages and deltas, as is. The gateway's stream tally and the Anthropic
  translation read both ``reasoning`` and ``reasoning_content``, and newer
  servers (vLLM among them) also use ``reasoning``, so renaming it would only
  move the mismatch to other clients. In requests, an assistant message's
  ``reasoning_content`` becomes ``reasoning``, the field Ollama reads back,
  and ``max_completion_tokens`` becomes ``max_tokens``, which is the only
  limit Ollama's OpenAI endpoint reads.
* vLLM: errors only.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, ClassVar, Final

import orjson

from llmgw.protocols.chat_translate import (
    ErrorResponse,
    body_excerpt,
    load_json,
    openai_error_type,
)
from llmgw.protocols.openai import error_body

_MISTRAL_TOOL_CALL_ID: Final = re.compile(r"[a-zA-Z0-9]{9}")
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------
# Errors


def normalize_error(status: int, body: object) -> ErrorResponse:
    """Turn an OpenAI-compatible server's error body into the OpenAI shape.

    ``body`` may be raw bytes, text or parsed JSON. The status is kept, and a
    body that is not JSON becomes the message.
    """
    parsed = load_json(body)
    error = error_object(parsed, status)
    if error is None:
        message = f"upstream returned HTTP {status}: {body_excerpt(body)}"
        return ErrorResponse(
            status, error_body(message, openai_error_type(status), None)
        )
    return ErrorResponse(status, {"error": error})


def error_object(parsed: object, status: int) -> dict[str, Any] | None:
    """Return the OpenAI ``error`` object of a parsed error body, or None.

    None means the body has no recognizable error, so the caller decides.
    """
    if not isinstance(parsed, dict):
        return None

    inner = parsed.get("error")
    if isinstance(inner, dict):
        return _error_fields(inner, status)
    if isinstance(inner, str) and inner:
        return _error_fields({"message": inner}, status)
    if parsed.get("object") == "error":
        return _error_fields(parsed, status)

    detail = parsed.get("detail")
    if detail is not None:
        message = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
        return _error_fields({"message": message}, status)
    return None


def _error_fields(source: dict[str, Any], status: int) -> dict[str, Any]:
    message = source.get("message")
    if isinstance(message, dict | list):
        # Mistral reports request validation errors as an object here.
        message = orjson.dumps(message).decode()
    if not isinstance(message, str) or not message:
        message = f"upstream returned HTTP {status}"
    error_type = source.get("type")
    if not isinstance(error_type, str) or not error_type:
        error_type = openai_error_type(status)
    param = source.get("param")
    code = source.get("code")
    if isinstance(code, int | float) and not isinstance(code, bool):
        code = str(int(code))
    return {
        "message": message,
        "type": error_type,
        "param": param if isinstance(param, str) else None,
        "code": code if isinstance(code, str) else None,
    }


def _chunk_error_status(error: object) -> int:
    """Return the HTTP status that a mid-stream error names, or 500."""
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return 500


# ---------------------------------------------------------------------------
# Adapters


class CompatAdapter:
    """The quirks of a plain OpenAI-compatible server: only error shapes.

    OpenAI itself, llama.cpp and vLLM use this class as it is. Methods may
    return their argument unchanged, and never modify it in place.
    """

    flavor: ClassVar[str] = "openai"

    def prepare_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Rewrite a Chat Completions request body for the server."""
        return body

    def normalize_response(self, body: dict[str, Any]) -> dict[str, Any]:
        """Rewrite a ``chat.completion`` body for an OpenAI client."""
        return body

    def normalize_chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Rewrite one stream chunk (a parsed ``data:`` payload)."""
        return self._normalize_chunk_error(chunk)

    def normalize_error(self, status: int, body: object) -> ErrorResponse:
        """Rewrite an error response into the OpenAI shape, status kept."""
        return normalize_error(status, body)

    @staticmethod
    def _normalize_chunk_error(chunk: dict[str, Any]) -> dict[str, Any]:
        """Normalize the error of an error chunk, keeping its other keys."""
        if chunk.get("object") == "error":
            error = error_object(chunk, _chunk_error_status(chunk))
            return chunk if error is None else {"error": error}
        if chunk.get("error") is None:
            return chunk

        error = error_object(chunk, _chunk_error_status(chunk["error"]))
        if error is None or error == chunk["error"]:
            return chunk
        return {**chunk, "error": error}


class VLLMAdapter(CompatAdapter):
    """vLLM: integer error codes and the older ``object: error`` bodies,
    which the base class already handles."""

    flavor = "vllm"


class OllamaAdapter(CompatAdapter):
    """Ollama's ``/v1`` endpoint, as the module docstring describes."""

    flavor = "ollama"

    def prepare_request(self, body: dict[str, Any]) -> dict[str, Any]:
        body = _rename_max_completion_tokens(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not any(
            _is_assistant(message) and "reasoning_content" in message
            for message in messages
        ):
            return body

        rewritten: list[object] = []
        for message in messages:
            if _is_assistant(message) and "reasoning_content" in message:
                message = dict(message)
                reasoning = message.pop("reasoning_content")
                message.setdefault("reasoning", reasoning)
            rewritten.append(message)
        return {**body, "messages": rewritten}


class MistralAdapter(CompatAdapter):
    """Mistral's API, as the module docstring describes.

    One adapter serves one request: it remembers the ids it replaced and,
    in a stream, the tool calls seen in each choice.
    """

    flavor = "mistral"

    def __init__(self) -> None:
        self._to_mistral: dict[str, str] = {}
        self._to_client: dict[str, str] = {}
        # choice index -> (tool calls started, index of the latest one)
        self._stream_calls: dict[int, tuple[int, int]] = {}

    def mistral_id(self, client_id: str) -> str:
        """Return the Mistral id for a client's tool call id, and remember it."""
        known = self._to_mistral.get(client_id)
        if known is not None:
            return known

        candidate = client_id if _MISTRAL_TOOL_CALL_ID.fullmatch(client_id) else None
        attempt = 0
        while candidate is None or candidate in self._to_client:
            candidate = _hash_id(client_id, attempt)
            attempt += 1
        self._to_mistral[client_id] = candidate
        self._to_client[candidate] = client_id
        return candidate

    def client_id(self, mistral_id: str) -> str:
        """Return the client's id for a Mistral id, or the id itself if unknown."""
        return self._to_client.get(mistral_id, mistral_id)

    def prepare_request(self, body: dict[str, Any]) -> dict[str, Any]:
        body = _rename_max_completion_tokens(body)
        # Mistral sends usage on the last chunk unasked, and rejects fields
        # it does not know with HTTP 422.
        body = {key: value for key, value in body.items() if key != "stream_options"}
        if "seed" in body:
            seed = body.pop("seed")
            if seed is not None and body.get("random_seed") is None:
                body["random_seed"] = seed

        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = [self._map_ids(message) for message in messages]
        return body

    def _map_ids(self, message: object) -> object:
        """Replace the tool call ids in one message, if it has any."""
        if not isinstance(message, dict):
            return message
        role = message.get("role")
        call_id = message.get("tool_call_id")
        if role == "tool" and isinstance(call_id, str):
            mapped = self.mistral_id(call_id)
            return message if mapped == call_id else {**message, "tool_call_id": mapped}

        calls = message.get("tool_calls")
        if role != "assistant" or not isinstance(calls, list):
            return message
        mapped_calls: list[object] = []
        for call in calls:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                mapped = self.mistral_id(call["id"])
                if mapped != call["id"]:
                    call = {**call, "id": mapped}
            mapped_calls.append(call)
        return {**message, "tool_calls": mapped_calls}

    def normalize_response(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = body.get("choices")
        if not isinstance(choices, list):
            return body
        body = copy.deepcopy(body)
        for choice in body["choices"]:
            message = choice.get("message") if isinstance(choice, dict) else None
            calls = message.get("tool_calls") if isinstance(message, dict) else None
            if not isinstance(calls, list):
                continue
            for call in calls:
                if not isinstance(call, dict):
                    continue
                call.setdefault("type", "function")
                if isinstance(call.get("id"), str):
                    call["id"] = self.client_id(call["id"])
        return body

    def normalize_chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        chunk = self._normalize_chunk_error(chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not any(
            _delta_tool_calls(choice) for choice in choices
        ):
            return chunk

        chunk = copy.deepcopy(chunk)
        for position, choice in enumerate(chunk["choices"]):
            calls = _delta_tool_calls(choice)
            if not calls:
                continue
            index = choice.get("index")
            self._index_tool_calls(index if isinstance(index, int) else position, calls)
        return chunk

    def _index_tool_calls(self, choice: int, calls: list[Any]) -> None:
        started, latest = self._stream_calls.get(choice, (0, 0))
        for call in calls:
            if not isinstance(call, dict):
                continue
            has_id = isinstance(call.get("id"), str) and bool(call["id"])
            index = call.get("index")
            if not isinstance(index, int):
                # A call without an index is new when it has an id, and
                # continues the latest call otherwise.
                index = started if has_id else latest
                call["index"] = index
            latest = index
            started = max(started, index + 1)

            if has_id:
                call["id"] = self.client_id(call["id"])
                call.setdefault("type", "function")
            else:
                function = call.get("function")
                if isinstance(function, dict) and function.get("name") == "":
                    del function["name"]
        self._stream_calls[choice] = (started, latest)


def _hash_id(client_id: str, attempt: int) -> str:
    """Return 9 base62 characters derived from an id."""
    digest = hashlib.sha256(f"{attempt}:{client_id}".encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    characters = []
    for _ in range(9):
        number, remainder = divmod(number, 62)
        characters.append(_BASE62[remainder])
    return "".join(characters)


def _rename_max_completion_tokens(body: dict[str, Any]) -> dict[str, Any]:
    if "max_completion_tokens" not in body:
        return body
    renamed = {
        key: value for key, value in body.items() if key != "max_completion_tokens"
    }
    if body["max_completion_tokens"] is not None:
        # max_completion_tokens wins when both are set, as in the OpenAI API.
        renamed["max_tokens"] = body["max_completion_tokens"]
    return renamed


def _is_assistant(message: object) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant"


def _delta_tool_calls(choice: object) -> list[Any] | None:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    calls = delta.get("tool_calls") if isinstance(delta, dict) else None
    return calls if isinstance(calls, list) and calls else None


_ADAPTERS: Final[dict[str, type[CompatAdapter]]] = {
    "openai": CompatAdapter,
    "vllm": VLLMAdapter,
    "ollama": OllamaAdapter,
    "mistral": MistralAdapter,
}


def compat_adapter(flavor: str) -> CompatAdapter:
    """Return a new adapter for a server flavor: openai, vllm, ollama, mistral."""
    try:
        return _ADAPTERS[flavor]()
    except KeyError:
        raise ValueError(
            f"unknown OpenAI-compatible server flavor {flavor!r}: expected one of"
            f" {', '.join(sorted(_ADAPTERS))}"
        ) from None
