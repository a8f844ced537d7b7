"""AWS Bedrock Converse and ConverseStream, translated to and from OpenAI Chat.

Requests go to ``POST {bedrock_runtime_url(region)}{converse_path(model)}``,
signed with SigV4 (service name ``bedrock``) or sent with a Bedrock API key
as a bearer token. ConverseStream responds in the binary event-stream format
(see ``llmgw.protocols.eventstream``), one JSON event per message, each with
a random ``p`` padding field that is ignored here.

Usage maps to ``Usage`` as follows. Bedrock's ``inputTokens`` excludes cache
reads and writes, while ``Usage.input_tokens`` includes them like OpenAI's
``prompt_tokens``:

* ``input_tokens = inputTokens + cacheReadInputTokens + cacheWriteInputTokens``
* ``output_tokens = outputTokens``, which includes reasoning
* ``cached_tokens = cacheReadInputTokens``
* ``cache_write_tokens = cacheWriteInputTokens``

Bedrock does not report reasoning tokens separately, so ``reasoning_tokens``
stays 0. In a stream the usage comes once, in the ``metadata`` event, which
may arrive before or after ``messageStop``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import time
from typing import Any, Final
from urllib.parse import quote

import orjson

from llmgw.errors import InvalidRequest
from llmgw.protocols.chat_translate import (
    UPSTREAM_ERROR_TYPE,
    ChatChunkStream,
    ChoiceOutput,
    ErrorResponse,
    FunctionTool,
    ToolChoice,
    assistant_tool_calls,
    body_excerpt,
    completion_body,
    content_parts,
    function_tools,
    image_url,
    invalid_type,
    load_json,
    new_completion_id,
    openai_error_type,
    optional_number,
    parse_data_url,
    part_text,
    reasoning_effort,
    response_format,
    stop_sequences,
    text_content,
    tool_choice,
    tool_message_id,
)
from llmgw.protocols.eventstream import EventStreamMessage
from llmgw.protocols.openai import ChatRequest, Usage, error_body

# Converse stopReason -> OpenAI finish_reason. A stop with tool calls becomes
# "tool_calls" (see resolve_finish_reason). Unknown and future reasons map to
# "stop".
STOP_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# Stream exception types (":exception-type") -> OpenAI error type. Others
# count as server errors.
STREAM_EXCEPTION_TYPES: Final = {
    "throttlingException": "rate_limit_error",
    "validationException": "invalid_request_error",
    "accessDeniedException": "permission_error",
    "resourceNotFoundException": "invalid_request_error",
}

# Thinking budgets, in tokens, for Anthropic models on Bedrock. Anthropic
# requires at least 1024, and less than maxTokens. NOTE: medium and high reuse
# the Gemini budgets (8K and 24K tokens). They are a choice, not a mapping
# that Bedrock documents.
ANTHROPIC_THINKING_BUDGETS: Final = {
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}

# Image formats Converse takes, by MIME type.
_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# Document formats Converse takes, by MIME type.
_DOCUMENT_FORMATS: Final = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("docx"),
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}

# Converse accepts tool use ids matching this, at most 64 characters long.
_TOOL_USE_ID: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# Converse document names may only contain these characters, with no two
# whitespace characters in a row.
_DOCUMENT_NAME_UNSAFE: Final = re.compile(r"[^a-zA-Z0-9\s\-()\[\]]+")
_REGION: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")


def bedrock_runtime_url(region: str) -> str:
    """Return the Bedrock Runtime endpoint of an AWS region, such as us-east-1.

    Raises ValueError for a name that is not shaped like a region, so that a
    bad configuration cannot point the request at another host.
    """
    if not _REGION.fullmatch(region):
        raise ValueError(
            f"invalid AWS region {region!r}: expected a name such as us-east-1"
        )
    return f"https://bedrock-runtime.{region}.amazonaws.com"


def converse_path(model_id: str, *, stream: bool) -> str:
    """Return the Converse (or ConverseStream) path for a model id or ARN.

    The id is percent-encoded whole, so the ``:`` of a version and the ``/``
    of an ARN stay inside the one path segment.
    """
    if not model_id:
        raise ValueError("Bedrock model id is empty")
    operation = "converse-stream" if stream else "converse"
    return f"/model/{quote(model_id, safe='')}/{operation}"


def tool_use_id(openai_id: str) -> str:
    """Return the Converse tool use id for an OpenAI tool call id.

    An id Converse accepts is kept. Any other is replaced by a hash of it, the
    same for the call and its result, so the pair still matches.
    """
    if _TOOL_USE_ID.fullmatch(openai_id):
        return openai_id
    return "tooluse_" + hashlib.sha256(openai_id.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------
# Requests


def chat_request_to_converse(
    request: ChatRequest, *, upstream_model: str | None = None
) -> dict[str, Any]:
    """Translate a Chat Completions request into a Converse body.

    ``upstream_model`` is the Bedrock model id, or the client's model name
    if None. It decides how ``reasoning_effort`` is sent.

    System and developer messages, wherever they are, are joined in order
    into ``system``. Consecutive messages with the same Converse role are
    merged, because Converse requires user and assistant turns to alternate.
    Raises ``InvalidRequest`` for what Converse cannot do: ``n`` above 1, a
    JSON ``response_format``, audio input, and images given by http URL.
    These fields have no Converse counterpart and are dropped: ``seed``,
    ``presence_penalty``, ``frequency_penalty``, ``logprobs``,
    ``top_logprobs``, ``logit_bias``, ``parallel_tool_calls``, ``user``,
    ``metadata``, ``store``, ``service_tier``.
    """
    body = request.body
    if request.n > 1:
        raise InvalidRequest(
            f"invalid value for 'n': {request.n}. Bedrock Converse returns one"
            " choice per request",
            param="n",
        )
    output_format = response_format(body)
    if output_format is not None and output_format.type != "text":
        raise InvalidRequest(
            f"response_format type '{output_format.type}' is not supported for"
            " Bedrock Converse models",
            param="response_format.type",
        )

    system, messages, has_tool_blocks = _convert_messages(request.messages)
    converse: dict[str, Any] = {"messages": messages}
    if system:
        converse["system"] = system

    inference = _inference_config(request)
    if inference:
        converse["inferenceConfig"] = inference

    tool_config = _tool_config(function_tools(body), tool_choice(body), has_tool_blocks)
    if tool_config is not None:
        converse["toolConfig"] = tool_config

    additional = _reasoning_fields(request, upstream_model or request.model)
    if additional:
        converse["additionalModelRequestFields"] = additional
    return converse


def _convert_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Return the system blocks, the messages, and whether tool blocks occur."""
    system: list[dict[str, Any]] = []
    converted: list[dict[str, Any]] = []
    has_tool_blocks = False
    document_names: set[str] = set()

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if converted and converted[-1]["role"] == role:
            converted[-1]["content"].extend(blocks)
        else:
            converted.append({"role": role, "content": blocks})

    for index, message in enumerate(messages):
        role = message["role"]
        param = f"messages[{index}]"
        if role in ("system", "developer"):
            text = text_content(message.get("content"), f"{param}.content")
            if text:
                system.append({"text": text})
        elif role == "user":
            blocks = _user_blocks(message.get("content"), param, document_names)
            add("user", blocks)
        elif role == "assistant":
            blocks = _assistant_blocks(message, param)
            has_tool_blocks = has_tool_blocks or any("toolUse" in b for b in blocks)
            add("assistant", blocks)
        elif role == "tool":
            add("user", [_tool_result(message, param)])
            has_tool_blocks = True
        else:
            raise InvalidRequest(
                f"invalid role {role!r} in '{param}.role': expected 'system',"
                " 'developer', 'user', 'assistant' or 'tool'",
                param=f"{param}.role",
            )
    return system, converted, has_tool_blocks


def _user_blocks(
    content: object, param: str, document_names: set[str]
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content_parts(content, f"{param}.content")):
        item = f"{param}.content[{index}]"
        kind = part["type"]
        if kind == "text":
            text = part_text(part, item)
            if text:
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append(_image_block(image_url(part, item), item))
        elif kind == "file":
            blocks.append(_document_block(part, item, document_names))
        else:
            raise InvalidRequest(
                f"unsupported content part type {kind!r} in '{item}.type' for"
                " Bedrock Converse",
                param=f"{item}.type",
            )
    return blocks


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("s3://"):
        mime_type = mimetypes.guess_type(url)[0] or ""
        source: dict[str, Any] = {"s3Location": {"uri": url}}
    else:
        data_url = parse_data_url(url)
        if data_url is None:
            raise InvalidRequest(
                f"unsupported image URL in '{param}': Bedrock Converse takes images"
                " as base64 data URLs or s3:// URLs",
                param=param,
            )
        mime_type = data_url.mime_type
        source = {"bytes": data_url.data}

    image_format = _IMAGE_FORMATS.get(mime_type)
    if image_format is None:
        raise InvalidRequest(
            f"unsupported image type {mime_type or 'unknown'!r} in '{param}':"
            " Bedrock Converse takes PNG, JPEG, GIF and WebP",
            param=param,
        )
    return {"image": {"format": image_format, "source": source}}


def _document_block(
    part: dict[str, Any], param: str, used_names: set[str]
) -> dict[str, Any]:
    file = part.get("file")
    if not isinstance(file, dict):
        raise invalid_type(f"{param}.file", "an object", file)
    file_data = file.get("file_data")
    data_url = parse_data_url(file_data) if isinstance(file_data, str) else None
    if data_url is None:
        raise InvalidRequest(
            f"'{param}.file.file_data' must be a base64 data URL: Bedrock"
            " Converse cannot read files uploaded to OpenAI",
            param=f"{param}.file.file_data",
        )
    document_format = _DOCUMENT_FORMATS.get(data_url.mime_type)
    if document_format is None:
        raise InvalidRequest(
            f"unsupported document type {data_url.mime_type!r} in '{param}'",
            param=f"{param}.file.file_data",
        )

    filename = file.get("filename")
    stem = filename.rsplit(".", 1)[0] if isinstance(filename, str) else ""
    name = " ".join(_DOCUMENT_NAME_UNSAFE.sub(" ", stem).split()) or "document"
    # Converse rejects two documents with the same name in one request.
    unique = name
    counter = 2
    while unique in used_names:
        unique = f"{name} ({counter})"
        counter += 1
    used_names.add(unique)
    return {
        "document": {
            "format": document_format,
            "name": unique,
            "source": {"bytes": data_url.data},
        }
    }


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content_parts(message.get("content"), param)):
        item = f"{param}.content[{index}]"
        if part["type"] not in ("text", "refusal"):
            raise InvalidRequest(
                f"unsupported content part type {part['type']!r} in '{item}.type':"
                " assistant messages take text and refusal parts",
                param=f"{item}.type",
            )
        text = part_text(part, item)
        if text:
            blocks.append({"text": text})

    for call in assistant_tool_calls(message, param):
        tool_use = {
            "toolUseId": tool_use_id(call.id),
            "name": call.name,
            "input": call.arguments,
        }
        blocks.append({"toolUse": tool_use})
    return blocks


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = tool_message_id(message, param)
    output = text_content(message.get("content"), f"{param}.content")
    return {
        "toolResult": {"toolUseId": tool_use_id(call_id), "content": [{"text": output}]}
    }


def _inference_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_output_tokens is not None:
        config["maxTokens"] = request.max_output_tokens
    temperature = optional_number(request.body, "temperature")
    if temperature is not None:
        config["temperature"] = temperature
    top_p = optional_number(request.body, "top_p")
    if top_p is not None:
        config["topP"] = top_p
    stop = stop_sequences(request.body)
    if stop:
        config["stopSequences"] = stop
    return config


def _tool_config(
    tools: list[FunctionTool], choice: ToolChoice | None, has_tool_blocks: bool
) -> dict[str, Any] | None:
    """Build ``toolConfig``, or return None when the request should have none.

    Converse has no "none" tool choice, so "none" leaves the tools out.
    Converse rejects a conversation with tool blocks but no ``toolConfig``,
    though, so then the tools are sent with "auto".
    """
    if not tools:
        return None
    if choice is not None and choice.mode == "none":
        if not has_tool_blocks:
            return None
        # NOTE: the model may call a tool here although the client requested
        # none, because Converse offers no way to forbid it.
        choice = ToolChoice("auto")

    if choice is not None and choice.names is not None:
        allowed = set(choice.names)
        tools = [tool for tool in tools if tool.name in allowed]
    specs = [{"toolSpec": _tool_spec(tool)} for tool in tools]
    config: dict[str, Any] = {"tools": specs}

    if choice is None or choice.mode == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice.names is not None and len(choice.names) == 1:
        config["toolChoice"] = {"tool": {"name": choice.names[0]}}
    else:
        config["toolChoice"] = {"any": {}}
    return config


def _tool_spec(tool: FunctionTool) -> dict[str, Any]:
    schema = tool.parameters or {"type": "object", "properties": {}}
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": schema}}
    if tool.description:
        spec["description"] = tool.description
    return spec


def _reasoning_fields(request: ChatRequest, model: str) -> dict[str, Any]:
    """Build ``additionalModelRequestFields`` for ``reasoning_effort``.

    Anthropic Claude models get ``thinking`` with a token budget, and Amazon
    Nova models a ``reasoningConfig``. The effort is dropped for other
    models, which have no documented switch in Converse.
    """
    effort = reasoning_effort(request.body)
    if effort is None or effort == "none":
        return {}

    if "anthropic.claude" in model:
        budget = ANTHROPIC_THINKING_BUDGETS[effort]
        limit = request.max_output_tokens
        if limit is not None and limit <= budget:
            raise InvalidRequest(
                f"reasoning_effort '{effort}' uses a thinking budget of {budget}"
                f" tokens, which must be less than the output limit of {limit}:"
                " raise max_completion_tokens or lower the effort",
                param="reasoning_effort",
            )
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}
    if "amazon.nova" in model:
        level = "low" if effort == "minimal" else effort
        return {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": level}}
    return {}


# ---------------------------------------------------------------------------
# Responses


def converse_usage(usage: object) -> Usage | None:
    """Read a Converse ``usage`` object as ``Usage``, or None if it has no counts.

    The mapping is given in this module's docstring.
    """
    if not isinstance(usage, dict):
        return None
    input_tokens = _count(usage, "inputTokens")
    output_tokens = _count(usage, "outputTokens")
    if input_tokens is None and output_tokens is None:
        return None

    cache_read = _count(usage, "cacheReadInputTokens") or 0
    cache_write = _count(usage, "cacheWriteInputTokens") or 0
    return Usage(
        input_tokens=(input_tokens or 0) + cache_read + cache_write,
        output_tokens=output_tokens or 0,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def _count(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def map_stop_reason(reason: object) -> str:
    """Map a Converse ``stopReason`` to an OpenAI ``finish_reason``."""
    return STOP_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def converse_response_to_chat(
    body: dict[str, Any],
    *,
    model: str,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """Translate a Converse response into a ``chat.completion`` body.

    Converse bodies carry no id, so ``completion_id`` (the
    ``x-amzn-RequestId`` header, for example) or a generated one is used.
    Reasoning text becomes ``reasoning_content``, and its signature and
    redacted reasoning are dropped. Image, document and other blocks are
    dropped too.
    """
    output = body.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    blocks = message.get("content") if isinstance(message, dict) else None

    choice = ChoiceOutput(0)
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        text = block.get("text")
        if isinstance(text, str):
            choice.text.append(text)
        reasoning = _reasoning_text(block.get("reasoningContent"))
        if reasoning:
            choice.reasoning.append(reasoning)
        tool_use = block.get("toolUse")
        if isinstance(tool_use, dict):
            choice.tool_calls.append(_tool_call(tool_use))
    choice.finish_reason = map_stop_reason(body.get("stopReason"))

    return completion_body(
        completion_id=completion_id or new_completion_id(),
        model=model,
        created=int(time.time()) if created is None else created,
        choices=[choice],
        usage=converse_usage(body.get("usage")),
    )


def _reasoning_text(content: object) -> str:
    if not isinstance(content, dict):
        return ""
    reasoning = content.get("reasoningText")
    text = reasoning.get("text") if isinstance(reasoning, dict) else None
    return text if isinstance(text, str) else ""


def _tool_call(tool_use: dict[str, Any]) -> dict[str, Any]:
    call_id = tool_use.get("toolUseId")
    name = tool_use.get("name")
    arguments = tool_use.get("input")
    return {
        "id": call_id if isinstance(call_id, str) else "",
        "type": "function",
        "function": {
            "name": name if isinstance(name, str) else "",
            "arguments": orjson.dumps(
                arguments if isinstance(arguments, dict) else {}
            ).decode(),
        },
    }


class ConverseStreamTranslator:
    """Translate a ConverseStream event stream into OpenAI chunks.

    Pass each decoded message to ``feed_message`` (or each event's type and
    parsed payload to ``feed_event``) and send the bytes it returns, then
    send what ``finish`` returns once the upstream stream has ended. Each
    ``toolUse`` content block becomes one tool call, with a running index.
    """

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool,
        completion_id: str | None = None,
        created: int | None = None,
    ) -> None:
        self._chunks = ChatChunkStream(
            model=model,
            include_usage=include_usage,
            completion_id=completion_id,
            created=created,
        )
        self._usage: Usage | None = None
        # contentBlockIndex -> OpenAI tool call index
        self._tool_blocks: dict[int, int] = {}

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def completed(self) -> bool:
        """True once ``messageStop`` was translated."""
        return self._chunks.completed

    @property
    def failed(self) -> bool:
        """True once an error event was sent."""
        return self._chunks.failed

    def feed_message(self, message: EventStreamMessage) -> bytes:
        """Translate one event-stream message into the OpenAI SSE bytes to send."""
        if self._chunks.failed:
            return b""
        payload = load_json(message.payload) if message.payload else {}
        if message.message_type == "event":
            if not isinstance(payload, dict):
                return self._invalid_event(message.payload)
            return self.feed_event(message.event_type or "", payload)
        if message.message_type == "exception":
            exception_type = message.exception_type or "unknownException"
            return self.feed_exception(exception_type, payload)

        # ":message-type: error" carries its code and message in headers.
        code = message.error_code or "unknownError"
        text = message.error_message or "The upstream stream failed."
        return self._chunks.error(f"Bedrock: {code}: {text}", "server_error", code)

    def feed_event(self, event_type: str, payload: dict[str, Any]) -> bytes:
        """Translate one event, given its ``:event-type`` and parsed payload."""
        if self._chunks.failed:
            return b""
        if event_type == "messageStart":
            return self._chunks.start()
        if event_type == "contentBlockStart":
            return self._block_start(payload)
        if event_type == "contentBlockDelta":
            return self._block_delta(payload)
        if event_type == "messageStop":
            return self._chunks.finish_choice(
                map_stop_reason(payload.get("stopReason"))
            )
        if event_type == "metadata":
            usage = converse_usage(payload.get("usage"))
            if usage is not None:
                self._usage = usage
        # contentBlockStop, and event types added later, carry nothing to send.
        return b""

    def feed_exception(self, exception_type: str, payload: object) -> bytes:
        """Translate an exception message into an OpenAI error event."""
        error = stream_exception_to_openai(exception_type, payload)["error"]
        return self._chunks.error(error["message"], error["type"], error["code"])

    def finish(self) -> bytes:
        """Close the stream: the usage chunk if requested, then ``[DONE]``.

        A stream that ended without ``messageStop`` was cut off, so this
        returns an error event instead.
        """
        return self._chunks.end(self._usage)

    def _block_start(self, payload: dict[str, Any]) -> bytes:
        start = payload.get("start")
        tool_use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(tool_use, dict):
            return b""
        call_id = tool_use.get("toolUseId")
        name = tool_use.get("name")
        tool_index, out = self._chunks.tool_call(
            call_id if isinstance(call_id, str) else "",
            name if isinstance(name, str) else "",
        )
        block = payload.get("contentBlockIndex")
        if isinstance(block, int):
            self._tool_blocks[block] = tool_index
        return out

    def _block_delta(self, payload: dict[str, Any]) -> bytes:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return b""
        text = delta.get("text")
        if isinstance(text, str):
            return self._chunks.text(text)

        tool_use = delta.get("toolUse")
        if isinstance(tool_use, dict):
            block = payload.get("contentBlockIndex")
            tool_index = (
                self._tool_blocks.get(block) if isinstance(block, int) else None
            )
            if tool_index is None:
                return self._chunks.error(
                    f"Bedrock sent tool input for content block {block!r}, which"
                    " never started a tool call.",
                    UPSTREAM_ERROR_TYPE,
                    "upstream_invalid_response",
                )
            arguments = tool_use.get("input")
            if isinstance(arguments, str):
                return self._chunks.tool_arguments(tool_index, arguments)
            return b""

        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
            return self._chunks.reasoning(reasoning["text"])
        # Reasoning signatures and redacted reasoning have no OpenAI field.
        return b""

    def _invalid_event(self, payload: bytes) -> bytes:
        return self._chunks.error(
            "Bedrock sent an event whose payload is not a JSON object:"
            f" {body_excerpt(payload, 200)}",
            UPSTREAM_ERROR_TYPE,
            "upstream_invalid_response",
        )


# ---------------------------------------------------------------------------
# Errors


def stream_exception_to_openai(exception_type: str, payload: object) -> dict[str, Any]:
    """Build the OpenAI error body for a ConverseStream exception message.

    The OpenAI ``code`` is the exception type as Bedrock names it, such as
    ``throttlingException``.
    """
    message = _error_message(payload) or f"Bedrock stream failed: {exception_type}."
    error_type = STREAM_EXCEPTION_TYPES.get(exception_type, "server_error")
    return error_body(message, error_type, exception_type)


def bedrock_error_to_openai(
    status: int, body: object, error_type_header: str | None = None
) -> ErrorResponse:
    """Translate a Bedrock HTTP error into an OpenAI error with the same status.

    ``error_type_header`` is the ``x-amzn-ErrorType`` response header, such as
    ``ValidationException:http://internal.amazon.com/...``. Its name (or the
    body's ``__type``) becomes the OpenAI ``code``.
    """
    parsed = load_json(body)
    message = _error_message(parsed)
    if message is None:
        message = f"Bedrock returned HTTP {status}: {body_excerpt(body)}"

    code = None
    if error_type_header:
        code = error_type_header.split(":", 1)[0].strip() or None
    if (
        code is None
        and isinstance(parsed, dict)
        and isinstance(parsed.get("__type"), str)
    ):
        code = parsed["__type"].rsplit("#", 1)[-1] or None
    return ErrorResponse(status, error_body(message, openai_error_type(status), code))


def _error_message(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return None
    for key in ("message", "Message"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return None
