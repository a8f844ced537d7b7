"""Translation of streams between Anthropic Messages and OpenAI Chat Completions.

Each translator takes the upstream's parsed SSE events one at a time and
returns the bytes of zero or more SSE events for the client. ``finish()``
ends the stream: after a complete upstream stream it returns what is still
held back, and after a stream that was cut off it returns an error event in
the client's format. ``fail()`` ends the stream with the caller's own error,
for example a timeout. Both translators expose the upstream's usage so far
and whether the stream completed, for the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from llmgw.protocols import anthropic
from llmgw.protocols.anthropic import UsageAccumulator, usage_body
from llmgw.protocols.openai import DONE_EVENT, Usage
from llmgw.protocols.openai import error_event as openai_error_event
from llmgw.protocols.sse import SSEEvent, format_event
from llmgw.protocols.translate_anthropic import (
    anthropic_error_type,
    finish_reason_for,
    new_message_id,
    new_tool_use_id,
    openai_error_type,
    openai_usage,
    openai_usage_body,
    stop_reason_for,
)

# An SSE comment, which clients skip but which keeps idle connections open.
KEEP_ALIVE: Final = b": ping\n\n"
ANTHROPIC_PING: Final = format_event(b'{"type":"ping"}', event="ping")

# The error type and code an OpenAI client gets when the upstream stream
# failed or ended early.
UPSTREAM_ERROR_TYPE: Final = "upstream_error"
STREAM_TRUNCATED_CODE: Final = "upstream_stream_truncated"


@dataclass(slots=True)
class _AnthropicBlock:
    """A content block of the Anthropic stream being read."""

    kind: str
    """``text``, ``thinking``, ``tool_use``, or ``other`` for blocks that
    have no Chat Completions form."""
    tool_index: int = 0
    """The OpenAI ``tool_calls[].index`` of a ``tool_use`` block."""
    start_input: str = ""
    """The JSON of a non-empty ``input`` in ``content_block_start``."""
    has_arguments: bool = False


class AnthropicToOpenAIStream:
    """Translate an Anthropic Messages stream into ``chat.completion.chunk``s.

    - ``message_start`` becomes the first chunk, with role ``assistant``.
    - ``text_delta`` becomes ``delta.content``, and ``thinking_delta`` the
      non-standard ``delta.reasoning_content`` of DeepSeek's API.
      ``signature_delta`` and the blocks with no Chat Completions form
      (server tools, citations, compaction) are dropped.
    - A ``tool_use`` block becomes a tool call whose ``index`` counts tool
      calls from 0 (not Anthropic's block index). Its first delta carries the
      id and name, then each ``input_json_delta`` becomes an arguments delta,
      so the arguments joined are exactly the JSON the model wrote. A block
      that ends with no input at all gets ``{}``.
    - ``message_delta`` stop reasons and usage are kept until
      ``message_stop``, which becomes a chunk with ``finish_reason``, a usage
      chunk with no choices if the client set ``include_usage``, and
      ``data: [DONE]``.
    - ``ping`` becomes an SSE comment, and an ``error`` event an OpenAI error
      event that ends the stream.
    """

    def __init__(
        self,
        *,
        include_usage: bool,
        model: str | None = None,
        created: int | None = None,
    ) -> None:
        """``model`` replaces the upstream's model name in every chunk."""
        self._include_usage = include_usage
        self._model_override = model
        self._model = model or ""
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._started = False
        self._blocks: dict[int, _AnthropicBlock] = {}
        self._tool_count = 0
        self._stop_reason: str | None = None
        self._usage = UsageAccumulator()
        self._completed = False
        self._failed = False
        self._error: dict[str, Any] | None = None

    @property
    def usage(self) -> Usage | None:
        """The upstream's usage so far, latest value of each count."""
        return self._usage.usage

    @property
    def completed(self) -> bool:
        """Whether the upstream stream reached ``message_stop``."""
        return self._completed

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``error`` object of the upstream's error event, if any."""
        return self._error

    def feed(self, event: SSEEvent) -> bytes:
        """Translate one upstream event, or return b"" once the stream ended."""
        if self._completed or self._failed:
            return b""
        if not event.has_data:
            return KEEP_ALIVE
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return self._fail_invalid()

        event_type = data.get("type", event.event)
        if event_type == "message_start":
            return self._message_start(data)
        if event_type == "content_block_start":
            return self._block_start(data)
        if event_type == "content_block_delta":
            return self._block_delta(data)
        if event_type == "content_block_stop":
            return self._block_stop(data)
        if event_type == "message_delta":
            self._message_delta(data)
            return b""
        if event_type == "message_stop":
            return self._message_stop()
        if event_type == "ping":
            return KEEP_ALIVE
        if event_type == "error":
            return self._upstream_error(data)
        return b""

    def fail(
        self,
        message: str,
        error_type: str = UPSTREAM_ERROR_TYPE,
        code: str | None = None,
    ) -> bytes:
        """End the stream with an OpenAI error event, unless it already ended."""
        if self._completed or self._failed:
            return b""
        self._failed = True
        return openai_error_event(message, error_type, code)

    def finish(self) -> bytes:
        """End the stream, with an error event if it stopped before ``message_stop``."""
        return self.fail(
            "The upstream stream ended before message_stop.",
            UPSTREAM_ERROR_TYPE,
            STREAM_TRUNCATED_CODE,
        )

    def _message_start(self, data: dict[str, Any]) -> bytes:
        message = data.get("message")
        if not isinstance(message, dict):
            message = {}
        if isinstance(message.get("id"), str) and not self._id:
            self._id = message["id"]
        if self._model_override is None and isinstance(message.get("model"), str):
            self._model = message["model"]
        self._usage.update(message.get("usage"))
        return self._start()

    def _start(self) -> bytes:
        """Return the role chunk the first time, before any content, then b""."""
        if self._started:
            return b""
        self._started = True
        if not self._id:
            self._id = new_message_id()
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, data: dict[str, Any]) -> bytes:
        index = data.get("index")
        block = data.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return b""

        out = self._start()
        block_type = block.get("type")
        if block_type == "text":
            self._blocks[index] = _AnthropicBlock("text")
            out += self._text_delta("content", block.get("text"))
        elif block_type == "thinking":
            self._blocks[index] = _AnthropicBlock("thinking")
            out += self._text_delta("reasoning_content", block.get("thinking"))
        elif block_type == "tool_use":
            out += self._tool_start(index, block)
        else:
            self._blocks[index] = _AnthropicBlock("other")
        return out

    def _tool_start(self, index: int, block: dict[str, Any]) -> bytes:
        tool = _AnthropicBlock("tool_use", tool_index=self._tool_count)
        self._tool_count += 1
        start_input = block.get("input")
        if isinstance(start_input, dict) and start_input:
            tool.start_input = orjson.dumps(start_input).decode()
        self._blocks[index] = tool

        call_id = block.get("id")
        call = {
            "index": tool.tool_index,
            "id": call_id if isinstance(call_id, str) else new_tool_use_id(),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return self._chunk({"tool_calls": [call]})

    def _block_delta(self, data: dict[str, Any]) -> bytes:
        block = self._block_at(data)
        delta = data.get("delta")
        if block is None or not isinstance(delta, dict):
            return b""

        delta_type = delta.get("type")
        if delta_type == "text_delta" and block.kind == "text":
            return self._text_delta("content", delta.get("text"))
        if delta_type == "thinking_delta" and block.kind == "thinking":
            return self._text_delta("reasoning_content", delta.get("thinking"))
        if delta_type == "input_json_delta" and block.kind == "tool_use":
            partial = delta.get("partial_json")
            if not isinstance(partial, str) or not partial:
                return b""
            block.has_arguments = True
            return self._arguments_delta(block, partial)
        return b""

    def _block_stop(self, data: dict[str, Any]) -> bytes:
        block = self._block_at(data)
        if block is None or block.kind != "tool_use" or block.has_arguments:
            return b""
        # A tool called with no input streams no JSON at all, but OpenAI
        # clients parse the arguments, and "" is not JSON.
        block.has_arguments = True
        return self._arguments_delta(block, block.start_input or "{}")

    def _block_at(self, data: dict[str, Any]) -> _AnthropicBlock | None:
        index = data.get("index")
        return self._blocks.get(index) if isinstance(index, int) else None

    def _message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self._stop_reason = delta["stop_reason"]
        self._usage.update(data.get("usage"))

    def _message_stop(self) -> bytes:
        out = self._start()
        out += self._chunk({}, finish_reason_for(self._stop_reason) or "stop")
        usage = self._usage.usage
        if self._include_usage and usage is not None:
            out += self._usage_chunk(usage)
        self._completed = True
        return out + DONE_EVENT

    def _upstream_error(self, data: dict[str, Any]) -> bytes:
        error = data.get("error")
        if not isinstance(error, dict):
            error = {}
        self._error = error
        anthropic_type = error.get("type")
        if not isinstance(anthropic_type, str):
            anthropic_type = "api_error"
        message = error.get("message")
        if not isinstance(message, str):
            message = "The upstream reported an error."
        error_type, code = openai_error_type(anthropic_type)
        return self.fail(message, error_type, code)

    def _fail_invalid(self) -> bytes:
        return self.fail(
            "The upstream sent an event whose data is not a JSON object.",
            UPSTREAM_ERROR_TYPE,
            "upstream_invalid_event",
        )

    def _text_delta(self, field_name: str, text: object) -> bytes:
        if not isinstance(text, str) or not text:
            return b""
        return self._chunk({field_name: text})

    def _arguments_delta(self, block: _AnthropicBlock, arguments: str) -> bytes:
        call = {"index": block.tool_index, "function": {"arguments": arguments}}
        return self._chunk({"tool_calls": [call]})

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return self._send({**self._chunk_header(), "choices": [choice]})

    def _usage_chunk(self, usage: Usage) -> bytes:
        return self._send(
            {**self._chunk_header(), "choices": [], "usage": openai_usage_body(usage)}
        )

    def _chunk_header(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    @staticmethod
    def _send(chunk: dict[str, Any]) -> bytes:
        return format_event(orjson.dumps(chunk))


@dataclass(slots=True)
class _Pending:
    """Content held back while another tool call's block is open."""

    kind: str
    """``text``, ``thinking`` or ``tool_use``."""
    pieces: list[str] = field(default_factory=list)
    tool_id: str = ""
    name: str = ""


@dataclass(slots=True)
class _OpenBlock:
    kind: str
    index: int
    tool_key: object = None


@dataclass(slots=True)
class _ToolCall:
    """One tool call of the OpenAI stream, by its position in the output."""

    block_index: int | None = None
    """Its Anthropic block index, once its block has started."""
    pending: _Pending | None = None
    """Its held-back content, while it waits for its block."""


class OpenAIToAnthropicStream:
    """Translate a ``chat.completion.chunk`` stream into an Anthropic stream.

    The output is the full Anthropic sequence: ``message_start``, then for
    each block ``content_block_start``, deltas and ``content_block_stop``,
    then ``message_delta`` with the stop reason and usage, and
    ``message_stop``. Only choice 0 is read.

    - ``reasoning_content`` or ``reasoning`` deltas become a thinking block
      with no signature, ``content`` and ``refusal`` deltas a text block. A
      refusal sets the stop reason to ``refusal``.
    - Each tool call, identified by its ``index`` (or by its id where, as
      with Mistral, there is no index), becomes its own ``tool_use`` block
      whose ``input_json_delta``s join to exactly the upstream's arguments.
      Names are restored through ``tool_names``.
    - Anthropic clients expect one open block at a time, with indices in
      start order. The first tool call streams live. Content that arrives
      while a tool call's block is open, including parallel tool calls, is
      held back and sent in order when the choice finishes. So no fragment
      is lost even if the upstream interleaves tool calls.
    - ``message_delta`` waits for ``[DONE]`` (or ``finish()``), because the
      usage chunk follows the finish reason. It carries the upstream usage,
      or without one the output tokens counted with ``count_output`` (0 when
      not given). ``message_start`` carries ``input_tokens``, the caller's
      estimate.
    - An error chunk becomes an Anthropic ``error`` event that ends the
      stream.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        input_tokens: int = 0,
        tool_names: Mapping[str, str] | None = None,
        count_output: Callable[[str], int] | None = None,
    ) -> None:
        """``model`` replaces the upstream's model name, ``input_tokens`` is
        the prompt estimate for ``message_start``, ``tool_names`` maps
        rewritten tool names back to the client's, and ``count_output``
        returns the tokens of a piece of output text."""
        self._model_override = model
        self._input_tokens = input_tokens
        self._tool_names = tool_names or {}
        self._count_output = count_output
        self._started = False
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._queue: list[_Pending] = []
        self._tools: dict[object, _ToolCall] = {}
        self._last_tool_key: object = None
        self._made_tool_calls = False
        self._finish_reason: str | None = None
        self._stop_sequence: str | None = None
        self._refused = False
        self._usage: Usage | None = None
        self._output_tokens = 0
        self._completed = False
        self._failed = False
        self._error: dict[str, Any] | None = None

    @property
    def usage(self) -> Usage | None:
        """The last usage the upstream sent, or None."""
        return self._usage

    @property
    def output_tokens(self) -> int:
        """The output tokens counted with ``count_output`` so far."""
        return self._output_tokens

    @property
    def completed(self) -> bool:
        """Whether the upstream sent ``[DONE]``, or a finish reason before
        ``finish()``."""
        return self._completed

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``error`` object of the upstream's error chunk, if any."""
        return self._error

    def feed(self, event: SSEEvent) -> bytes:
        """Translate one upstream event, or return b"" once the stream ended."""
        if self._completed or self._failed:
            return b""
        if not event.has_data:
            return ANTHROPIC_PING if self._started else KEEP_ALIVE
        if event.data == "[DONE]":
            return self._complete()
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            return self.fail("The upstream sent an event that is not a JSON object.")
        if chunk.get("error") is not None:
            return self._upstream_error(chunk["error"])

        usage = openai_usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choice = _first_choice(chunk.get("choices"))
        if choice is None:
            return b""

        out = self._start(chunk)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            out += self._delta(delta)
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str):
            self._finish_reason = finish_reason
            # vLLM reports the stop string that ended the output here.
            if isinstance(choice.get("stop_reason"), str):
                self._stop_sequence = choice["stop_reason"]
            out += self._close_all()
        return out

    def fail(self, message: str, error_type: str = "api_error") -> bytes:
        """End the stream with an Anthropic error event, unless it already ended."""
        if self._completed or self._failed:
            return b""
        self._failed = True
        return anthropic.error_event(message, error_type)

    def finish(self) -> bytes:
        """End the stream.

        After a finish reason, a stream without ``[DONE]`` still completes
        normally. Before one, the stream was cut off and gets an error event.
        """
        if self._completed or self._failed:
            return b""
        if self._finish_reason is not None:
            return self._complete()
        return self.fail("The upstream stream ended before the response finished.")

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        message_id = chunk.get("id")
        if not isinstance(message_id, str) or not message_id:
            message_id = new_message_id()
        model = self._model_override or chunk.get("model") or ""
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return _event({"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._add_text("thinking", reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            out += self._add_text("text", content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refused = True
            out += self._add_text("text", refusal)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, dict):
                    out += self._add_tool_fragment(call)
        return out

    def _add_text(self, kind: str, text: str) -> bytes:
        self._count(text)
        if self._queue:
            last = self._queue[-1]
            if last.kind == kind:
                last.pieces.append(text)
            else:
                self._queue.append(_Pending(kind, [text]))
            return b""

        out = b""
        if self._open is None or self._open.kind != kind:
            out += self._close_open()
            out += self._start_block(kind)
        return out + self._block_delta(kind, text)

    def _add_tool_fragment(self, call: dict[str, Any]) -> bytes:
        key = self._tool_key(call)
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = ""
        self._count(arguments)

        tool = self._tools.get(key)
        if tool is None:
            return self._new_tool_call(key, call, function, arguments)
        if not arguments:
            return b""
        if tool.pending is not None:
            tool.pending.pieces.append(arguments)
            return b""
        assert tool.block_index is not None  # a call is either pending or started
        # NOTE: when the block of this tool call was closed already (text came
        # between its fragments), the delta still names its block. The
        # Anthropic SDK accepts that, but Anthropic's own streams never do it.
        return self._block_delta("tool_use", arguments, tool.block_index)

    def _tool_key(self, call: dict[str, Any]) -> object:
        """Return the key of a tool call fragment: its index, else its id, else
        the key of the latest fragment."""
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            key: object = ("index", index)
        elif isinstance(call.get("id"), str) and call["id"]:
            key = ("id", call["id"])
        elif self._last_tool_key is not None:
            key = self._last_tool_key
        else:
            key = ("index", 0)
        self._last_tool_key = key
        return key

    def _new_tool_call(
        self,
        key: object,
        call: dict[str, Any],
        function: dict[str, Any],
        arguments: str,
    ) -> bytes:
        self._made_tool_calls = True
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = new_tool_use_id()
        name = function.get("name")
        if not isinstance(name, str):
            name = ""
        self._count(name)
        name = self._tool_names.get(name, name)

        if self._queue or (self._open is not None and self._open.kind == "tool_use"):
            pending = _Pending(
                "tool_use", [arguments] if arguments else [], call_id, name
            )
            self._queue.append(pending)
            self._tools[key] = _ToolCall(pending=pending)
            return b""

        out = self._close_open()
        out += self._start_block("tool_use", call_id, name, key)
        assert self._open is not None
        self._tools[key] = _ToolCall(block_index=self._open.index)
        if arguments:
            out += self._block_delta("tool_use", arguments)
        return out

    def _start_block(
        self, kind: str, tool_id: str = "", name: str = "", tool_key: object = None
    ) -> bytes:
        index = self._next_index
        self._next_index += 1
        self._open = _OpenBlock(kind, index, tool_key)
        block: dict[str, Any]
        if kind == "text":
            block = {"type": "text", "text": ""}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        return _event(
            {"type": "content_block_start", "index": index, "content_block": block}
        )

    def _block_delta(self, kind: str, text: str, index: int | None = None) -> bytes:
        if index is None:
            assert self._open is not None
            index = self._open.index
        if kind == "text":
            delta = {"type": "text_delta", "text": text}
        elif kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": text}
        else:
            delta = {"type": "input_json_delta", "partial_json": text}
        return _event({"type": "content_block_delta", "index": index, "delta": delta})

    def _close_open(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open.index
        self._open = None
        return _event({"type": "content_block_stop", "index": index})

    def _close_all(self) -> bytes:
        """Close the open block, then send every held-back block in order."""
        out = self._close_open()
        queue, self._queue = self._queue, []
        for pending in queue:
            out += self._start_block(pending.kind, pending.tool_id, pending.name)
            if pending.kind == "tool_use":
                for tool in self._tools.values():
                    if tool.pending is pending:
                        tool.pending = None
                        tool.block_index = self._next_index - 1
            if pending.pieces:
                out += self._block_delta(pending.kind, "".join(pending.pieces))
            out += self._close_open()
        return out

    def _complete(self) -> bytes:
        out = self._start({}) + self._close_all()
        usage = (
            usage_body(self._usage)
            if self._usage is not None
            else {"output_tokens": self._output_tokens}
        )
        delta = {"stop_reason": self._stop_reason(), "stop_sequence": None}
        if delta["stop_reason"] == "stop_sequence":
            delta["stop_sequence"] = self._stop_sequence
        out += _event({"type": "message_delta", "delta": delta, "usage": usage})
        out += _event({"type": "message_stop"})
        self._completed = True
        return out

    def _stop_reason(self) -> str:
        finish_reason = self._finish_reason
        if self._refused and finish_reason in (None, "stop", "content_filter"):
            return "refusal"
        stop_reason = stop_reason_for(finish_reason) or "end_turn"
        if stop_reason == "end_turn" and self._made_tool_calls:
            # An upstream may end a turn of tool calls with "stop", as Gemini's
            # own API does, but Anthropic clients expect tool_use.
            return "tool_use"
        if stop_reason == "end_turn" and self._stop_sequence is not None:
            return "stop_sequence"
        return stop_reason

    def _upstream_error(self, error: object) -> bytes:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        self._error = error
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = "The upstream reported an error."
        error_type = anthropic_error_type(error.get("type"), error.get("code"), None)
        return self.fail(message, error_type)

    def _count(self, text: str) -> None:
        if text and self._count_output is not None:
            self._output_tokens += self._count_output(text)


def _first_choice(choices: object) -> dict[str, Any] | None:
    """Return choice 0 of a chunk, or None if the chunk has none."""
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _event(payload: dict[str, Any]) -> bytes:
    return format_event(orjson.dumps(payload), event=payload["type"])
