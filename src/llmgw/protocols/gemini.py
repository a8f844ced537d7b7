"""Google Gemini ``generateContent`` translated to and from OpenAI Chat Completions.

Requests go to ``POST {GEMINI_API_BASE}/models/{model}:generateContent``, or
``:streamGenerateContent?alt=sse`` for a stream, with the key in the
``x-goog-api-key`` header. A stream is SSE with CRLF line ends, one complete
``GenerateContentResponse`` per event and no ``[DONE]``.

Tool call ids. Gemini may omit the ``id`` of a ``functionCall`` (the
Developer API usually does) or send its own. The OpenAI id of a call is
Gemini's id when there is one, otherwise a generated ``call_...`` id, and it
goes back to Gemini as the ``id`` of the ``functionCall`` and of its
``functionResponse``. Gemini 3 also attaches a ``thoughtSignature`` to the
first function call of a turn and rejects a later request whose history
lacks it (HTTP 400). An OpenAI client has no field for it, so the signature
rides in the tool call id: ``<id>__thought__<signature>``. Clients treat ids
as opaque and send them back unchanged, so no state is kept between requests.

Usage (``usageMetadata``) maps to ``Usage`` as follows:

* ``input_tokens = promptTokenCount + toolUsePromptTokenCount``. The prompt
  count already includes ``cachedContentTokenCount``.
* ``output_tokens = candidatesTokenCount + thoughtsTokenCount``, because the
  candidates count excludes thinking, which is billed as output.
* ``cached_tokens = cachedContentTokenCount``, and
  ``reasoning_tokens = thoughtsTokenCount``.

In a stream every chunk carries the totals so far, and they can go down: the
prompt count went from 15 to 13 in a recorded stream. So the latest chunk's
values replace the earlier ones, and they are never added up.
"""

from __future__ import annotations

import math
import mimetypes
import re
import time
from dataclasses import dataclass
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
    new_tool_call_id,
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
from llmgw.protocols.gemini_schema import gemini_schema
from llmgw.protocols.openai import ChatRequest, Usage, error_body

GEMINI_API_BASE: Final = "https://generativelanguage.googleapis.com/v1beta"
API_KEY_HEADER: Final = "x-goog-api-key"

THOUGHT_SIGNATURE_SEPARATOR: Final = "__thought__"
# The value Google documents for a function call whose real signature is
# lost. Gemini 3 then skips the signature check for that call.
# Source: https://ai.google.dev/gemini-api/docs/thought-signatures
SKIP_SIGNATURE_VALIDATOR: Final = "skip_thought_signature_validator"

# Thinking budgets, in tokens, for each OpenAI reasoning_effort. These are
# the values Google's own OpenAI-compatible endpoint uses for Gemini 2.5
# (https://ai.google.dev/gemini-api/docs/openai): low 1K, medium 8K, high 24K,
# none disables thinking. "minimal" is not in that table and gets the
# smallest budget.
THINKING_BUDGETS: Final = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
# Gemini 3 models take a thinking level instead of a budget, and reject a
# request that sets both. They cannot turn thinking off, so "none" requests
# the least.
THINKING_LEVELS: Final = {
    "none": "minimal",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
}

# Gemini finishReason -> OpenAI finish_reason. STOP with function calls
# becomes "tool_calls" (see resolve_finish_reason). Reasons that withheld
# content for policy reasons become "content_filter". A malformed, unexpected
# or excess tool call produced no usable call, so it ends as "stop" rather
# than "tool_calls", which would make the client run nothing. Unknown and
# future reasons also map to "stop".
FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "TOO_MANY_TOOL_CALLS": "stop",
    "OTHER": "stop",
    "IMAGE_OTHER": "stop",
    "NO_IMAGE": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}

# OpenAI input_audio formats -> MIME types Gemini accepts.
_AUDIO_MIME_TYPES: Final = {"wav": "audio/wav", "mp3": "audio/mp3"}

# google.protobuf.Duration in its JSON form, such as "34.4s".
_DURATION: Final = re.compile(r"(?P<seconds>\d+(?:\.\d{1,9})?)s")
_RETRY_INFO_TYPE: Final = "type.googleapis.com/google.rpc.RetryInfo"


def generate_content_path(model: str, *, stream: bool) -> str:
    """Return the path, below ``GEMINI_API_BASE``, that generates with ``model``.

    A ``models/`` prefix on the name, as the models list returns it, is
    dropped. A stream path requests SSE with ``alt=sse``.
    """
    name = model.removeprefix("models/")
    if not name:
        raise ValueError("Gemini model name is empty")
    path = f"/models/{quote(name, safe='')}"
    if stream:
        return path + ":streamGenerateContent?alt=sse"
    return path + ":generateContent"


def encode_tool_call_id(call_id: str, thought_signature: str | None) -> str:
    """Return the OpenAI tool call id that carries a Gemini thought signature."""
    if not thought_signature:
        return call_id
    return f"{call_id}{THOUGHT_SIGNATURE_SEPARATOR}{thought_signature}"


def decode_tool_call_id(openai_id: str) -> tuple[str, str | None]:
    """Split an OpenAI tool call id into the Gemini id and thought signature."""
    call_id, separator, signature = openai_id.partition(THOUGHT_SIGNATURE_SEPARATOR)
    if not separator or not signature:
        return call_id, None
    return call_id, signature


def is_gemini_3(model: str) -> bool:
    """True for Gemini 3 models, which need thought signatures and thinking
    levels."""
    return model.removeprefix("models/").startswith("gemini-3")


# ---------------------------------------------------------------------------
# Requests


def chat_request_to_gemini(
    request: ChatRequest, *, upstream_model: str | None = None
) -> dict[str, Any]:
    """Translate a Chat Completions request into a ``generateContent`` body.

    ``upstream_model`` is the Gemini model the request goes to (the client's
    model name if None). It selects the Gemini 3 forms of thinking and of
    thought signatures.

    System and developer messages, wherever they are, are joined in order
    into ``systemInstruction``, the only place Gemini takes them.
    Consecutive messages with the same Gemini role are merged, so the tool
    results of one turn share a content. These request fields have no
    Gemini counterpart and are dropped: ``logprobs``, ``top_logprobs``,
    ``logit_bias``, ``parallel_tool_calls``, ``user``, ``metadata``,
    ``store``, ``service_tier``. Raises ``InvalidRequest`` for content Gemini
    cannot take.
    """
    model = upstream_model or request.model
    system_parts, contents = _convert_messages(request.messages, model)
    if not contents:
        raise InvalidRequest(
            "messages must contain at least one user or assistant message:"
            " Gemini rejects a request with only system messages",
            param="messages",
        )

    gemini: dict[str, Any] = {"contents": contents}
    if system_parts:
        gemini["systemInstruction"] = {"parts": system_parts}

    tools = function_tools(request.body)
    choice = tool_choice(request.body)
    declarations = _declarations(tools, choice)
    if declarations:
        gemini["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(choice)
        if tool_config is not None:
            gemini["toolConfig"] = tool_config

    generation_config = _generation_config(request, model)
    if generation_config:
        gemini["generationConfig"] = generation_config
    return gemini


class _Contents:
    """Gemini ``contents``, merging consecutive parts of the same role."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.items and self.items[-1]["role"] == role:
            self.items[-1]["parts"].extend(parts)
        else:
            self.items.append({"role": role, "parts": parts})


def _convert_messages(
    messages: list[dict[str, Any]], model: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system_parts: list[dict[str, Any]] = []
    contents = _Contents()
    # Gemini's functionResponse needs the function name, which an OpenAI
    # tool message lacks, so it is looked up from the assistant's call.
    call_names: dict[str, str] = {}

    for index, message in enumerate(messages):
        role = message["role"]
        param = f"messages[{index}]"
        if role in ("system", "developer"):
            text = text_content(message.get("content"), f"{param}.content")
            if text:
                system_parts.append({"text": text})
        elif role == "user":
            contents.add("user", _user_parts(message.get("content"), param))
        elif role == "assistant":
            parts = _assistant_parts(message, param, model, call_names)
            contents.add("model", parts)
        elif role == "tool":
            contents.add("user", [_function_response(message, param, call_names)])
        else:
            raise InvalidRequest(
                f"invalid role {role!r} in '{param}.role': expected 'system',"
                " 'developer', 'user', 'assistant' or 'tool'",
                param=f"{param}.role",
            )
    return system_parts, contents.items


def _user_parts(content: object, param: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content_parts(content, f"{param}.content")):
        item = f"{param}.content[{index}]"
        kind = part["type"]
        if kind == "text":
            text = part_text(part, item)
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_media_part(image_url(part, item), item))
        elif kind == "input_audio":
            parts.append(_audio_part(part, item))
        elif kind == "file":
            parts.append(_file_part(part, item))
        else:
            raise InvalidRequest(
                f"unsupported content part type {kind!r} in '{item}.type'",
                param=f"{item}.type",
            )
    return parts


def _media_part(url: str, param: str) -> dict[str, Any]:
    """Turn a URL into inline data (a data URL) or a file reference."""
    data_url = parse_data_url(url)
    if data_url is not None:
        return {"inlineData": {"mimeType": data_url.mime_type, "data": data_url.data}}
    if url.startswith("data:"):
        raise InvalidRequest(
            f"invalid data URL in '{param}': only base64 data URLs are supported",
            param=param,
        )

    file_data: dict[str, Any] = {"fileUri": url}
    # NOTE: the MIME type is guessed from the URL's extension and left out
    # when it has none, and Gemini may reject such a file reference.
    mime_type, _ = mimetypes.guess_type(url.split("?", 1)[0])
    if mime_type is not None:
        file_data["mimeType"] = mime_type
    return {"fileData": file_data}


def _audio_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    audio = part.get("input_audio")
    if not isinstance(audio, dict):
        raise invalid_type(f"{param}.input_audio", "an object", audio)
    data = audio.get("data")
    if not isinstance(data, str) or not data:
        raise invalid_type(f"{param}.input_audio.data", "a non-empty string", data)
    audio_format = audio.get("format")
    if audio_format not in _AUDIO_MIME_TYPES:
        raise InvalidRequest(
            f"invalid value for '{param}.input_audio.format': {audio_format!r};"
            " expected 'wav' or 'mp3'",
            param=f"{param}.input_audio.format",
        )
    return {"inlineData": {"mimeType": _AUDIO_MIME_TYPES[audio_format], "data": data}}


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    file = part.get("file")
    if not isinstance(file, dict):
        raise invalid_type(f"{param}.file", "an object", file)
    if file.get("file_data") is None:
        raise InvalidRequest(
            f"'{param}.file' needs 'file_data': file ids refer to files uploaded"
            " to OpenAI, which Gemini cannot read",
            param=f"{param}.file.file_data",
        )

    file_data = file["file_data"]
    if not isinstance(file_data, str) or not file_data:
        raise invalid_type(f"{param}.file.file_data", "a non-empty string", file_data)
    data_url = parse_data_url(file_data)
    if data_url is not None:
        return {"inlineData": {"mimeType": data_url.mime_type, "data": data_url.data}}

    # Plain base64: the file name has to tell the MIME type.
    filename = file.get("filename")
    mime_type = mimetypes.guess_type(filename)[0] if isinstance(filename, str) else None
    if mime_type is None:
        raise InvalidRequest(
            f"'{param}.file' needs a data URL in 'file_data', or a 'filename' with"
            " a known extension, to tell Gemini the file's MIME type",
            param=f"{param}.file",
        )
    return {"inlineData": {"mimeType": mime_type, "data": file_data}}


def _assistant_parts(
    message: dict[str, Any], param: str, model: str, call_names: dict[str, str]
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
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
            parts.append({"text": text})

    for position, call in enumerate(assistant_tool_calls(message, param)):
        call_names[call.id] = call.name
        call_id, signature = decode_tool_call_id(call.id)
        function_call = {"id": call_id, "name": call.name, "args": call.arguments}
        gemini_part: dict[str, Any] = {"functionCall": function_call}
        # Gemini 3 checks the signature of the first call of each step only.
        if signature is None and position == 0 and is_gemini_3(model):
            signature = SKIP_SIGNATURE_VALIDATOR
        if signature is not None:
            gemini_part["thoughtSignature"] = signature
        parts.append(gemini_part)
    return parts


def _function_response(
    message: dict[str, Any], param: str, call_names: dict[str, str]
) -> dict[str, Any]:
    openai_id = tool_message_id(message, param)
    name = call_names.get(openai_id)
    if name is None:
        raise InvalidRequest(
            f"'{param}.tool_call_id' is {openai_id!r}, which no earlier assistant"
            " message made: Gemini needs the function name of every tool result",
            param=f"{param}.tool_call_id",
        )

    call_id, _ = decode_tool_call_id(openai_id)
    output = text_content(message.get("content"), f"{param}.content")
    # Gemini documents "output" (and "error") as the keys of a response.
    response = {"id": call_id, "name": name, "response": {"output": output}}
    return {"functionResponse": response}


def _declarations(
    tools: list[FunctionTool], choice: ToolChoice | None
) -> list[dict[str, Any]]:
    # "allowed_tools" in auto mode: Gemini restricts names only in ANY mode,
    # so the other functions are left out of the request instead.
    allowed = None
    if choice is not None and choice.mode == "auto" and choice.names is not None:
        allowed = set(choice.names)

    declarations: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        if allowed is not None and tool.name not in allowed:
            continue
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        if tool.parameters is not None:
            param = f"tools[{position}].function.parameters"
            parameters = gemini_schema(tool.parameters, param)
            # Gemini rejects an object schema without properties.
            if parameters.get("properties"):
                declaration["parameters"] = parameters
        declarations.append(declaration)
    return declarations


def _tool_config(choice: ToolChoice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice.mode == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice.mode == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}

    config: dict[str, Any] = {"mode": "ANY"}
    if choice.names is not None:
        config["allowedFunctionNames"] = list(choice.names)
    return {"functionCallingConfig": config}


def _generation_config(request: ChatRequest, model: str) -> dict[str, Any]:
    body = request.body
    config: dict[str, Any] = {}
    if request.max_output_tokens is not None:
        config["maxOutputTokens"] = request.max_output_tokens

    for openai_key, gemini_key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        value = optional_number(body, openai_key)
        if value is not None:
            config[gemini_key] = value

    stop = stop_sequences(body)
    if stop:
        config["stopSequences"] = stop
    if body.get("n") is not None:
        config["candidateCount"] = request.n

    output_format = response_format(body)
    if output_format is not None and output_format.type != "text":
        config["responseMimeType"] = "application/json"
        if output_format.schema is not None:
            config["responseSchema"] = gemini_schema(
                output_format.schema, "response_format.json_schema.schema"
            )

    effort = reasoning_effort(body)
    if effort is not None:
        if is_gemini_3(model):
            thinking: dict[str, Any] = {"thinkingLevel": THINKING_LEVELS[effort]}
        else:
            thinking = {"thinkingBudget": THINKING_BUDGETS[effort]}
        # Thought summaries come back as reasoning_content.
        thinking["includeThoughts"] = effort != "none"
        config["thinkingConfig"] = thinking
    return config


# ---------------------------------------------------------------------------
# Responses


def gemini_usage(metadata: object) -> Usage | None:
    """Read ``usageMetadata`` as ``Usage``, or None if it has no counts.

    The mapping is given in this module's docstring.
    """
    if not isinstance(metadata, dict):
        return None
    counts = {
        key: _count(metadata, key)
        for key in (
            "promptTokenCount",
            "candidatesTokenCount",
            "cachedContentTokenCount",
            "thoughtsTokenCount",
            "toolUsePromptTokenCount",
        )
    }
    if counts["promptTokenCount"] is None and counts["candidatesTokenCount"] is None:
        return None

    thoughts = counts["thoughtsTokenCount"] or 0
    return Usage(
        input_tokens=(counts["promptTokenCount"] or 0)
        + (counts["toolUsePromptTokenCount"] or 0),
        output_tokens=(counts["candidatesTokenCount"] or 0) + thoughts,
        cached_tokens=counts["cachedContentTokenCount"] or 0,
        reasoning_tokens=thoughts,
    )


def _count(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def map_finish_reason(reason: object) -> str:
    """Map a Gemini ``finishReason`` to an OpenAI ``finish_reason``."""
    return FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


@dataclass(frozen=True, slots=True)
class _PartOutput:
    kind: str
    """``text``, ``reasoning`` or ``tool_call``."""
    text: str = ""
    call_id: str = ""
    name: str = ""
    arguments: str = ""


def _read_part(part: object) -> _PartOutput | None:
    """Classify one response part, or return None if OpenAI has no field for it.

    NOTE: inline images, executable code and code results are dropped.
    """
    if not isinstance(part, dict):
        return None

    function_call = part.get("functionCall")
    if isinstance(function_call, dict):
        name = function_call.get("name")
        gemini_id = function_call.get("id")
        call_id = gemini_id if isinstance(gemini_id, str) and gemini_id else None
        signature = part.get("thoughtSignature")
        args = function_call.get("args")
        return _PartOutput(
            "tool_call",
            call_id=encode_tool_call_id(
                call_id or new_tool_call_id(),
                signature if isinstance(signature, str) else None,
            ),
            name=name if isinstance(name, str) else "",
            arguments=orjson.dumps(args if isinstance(args, dict) else {}).decode(),
        )

    text = part.get("text")
    if isinstance(text, str) and text:
        return _PartOutput("reasoning" if part.get("thought") is True else "text", text)
    return None


def _candidates(body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Return each candidate with its choice index."""
    candidates = body.get("candidates")
    if not isinstance(candidates, list):
        return []
    result: list[tuple[int, dict[str, Any]]] = []
    for position, candidate in enumerate(candidates):
        if isinstance(candidate, dict):
            index = candidate.get("index")
            result.append((index if isinstance(index, int) else position, candidate))
    return result


def _candidate_parts(candidate: dict[str, Any]) -> list[object]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


def _is_prompt_blocked(body: dict[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def gemini_response_to_chat(
    body: dict[str, Any], *, model: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """Translate a ``generateContent`` response into a ``chat.completion`` body.

    ``model`` names the model in the output, Gemini's ``modelVersion`` if
    None. Thought parts become ``reasoning_content``, and function calls
    become ``tool_calls`` with ids as described in this module's docstring.
    A prompt blocked before any candidate gives one empty choice with the
    finish reason ``content_filter``.
    """
    choices: list[ChoiceOutput] = []
    for index, candidate in _candidates(body):
        choice = ChoiceOutput(index)
        for part in _candidate_parts(candidate):
            output = _read_part(part)
            if output is None:
                continue
            if output.kind == "tool_call":
                choice.tool_calls.append(
                    {
                        "id": output.call_id,
                        "type": "function",
                        "function": {
                            "name": output.name,
                            "arguments": output.arguments,
                        },
                    }
                )
            elif output.kind == "reasoning":
                choice.reasoning.append(output.text)
            else:
                choice.text.append(output.text)
        choice.finish_reason = map_finish_reason(candidate.get("finishReason"))
        choices.append(choice)

    if not choices and _is_prompt_blocked(body):
        choices.append(ChoiceOutput(0, finish_reason="content_filter"))

    return completion_body(
        completion_id=_completion_id(body),
        model=model or _model_version(body),
        created=_created(created),
        choices=choices,
        usage=gemini_usage(body.get("usageMetadata")),
    )


def _completion_id(body: dict[str, Any]) -> str:
    response_id = body.get("responseId")
    if isinstance(response_id, str) and response_id:
        return f"chatcmpl-{response_id}"
    return new_completion_id()


def _model_version(body: dict[str, Any]) -> str:
    version = body.get("modelVersion")
    return version if isinstance(version, str) else ""


def _created(created: int | None) -> int:
    return int(time.time()) if created is None else created


class GeminiStreamTranslator:
    """Translate a ``streamGenerateContent?alt=sse`` stream into OpenAI chunks.

    Pass each SSE event's ``data`` to ``feed`` and send the bytes it returns,
    then send what ``finish`` returns once the upstream stream has ended.
    ``usage`` is the latest usage the stream reported.
    """

    def __init__(
        self, *, model: str, include_usage: bool, created: int | None = None
    ) -> None:
        self._chunks = ChatChunkStream(
            model=model, include_usage=include_usage, created=created
        )
        self._usage: Usage | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def completed(self) -> bool:
        """True once every choice has received its finish reason."""
        return self._chunks.completed

    @property
    def failed(self) -> bool:
        """True once an error event was sent."""
        return self._chunks.failed

    def feed(self, data: str | bytes) -> bytes:
        """Translate one SSE event's data into the OpenAI SSE bytes to send."""
        if self._chunks.failed:
            return b""
        chunk = load_json(data)
        if not isinstance(chunk, dict):
            return self._chunks.error(
                f"The upstream sent a stream event that is not a JSON object:"
                f" {body_excerpt(data, 200)}",
                UPSTREAM_ERROR_TYPE,
                "upstream_invalid_response",
            )
        if isinstance(chunk.get("error"), dict):
            error = gemini_error_to_openai(_error_status(chunk["error"]), chunk)
            inner = error.body["error"]
            return self._chunks.error(inner["message"], inner["type"], inner["code"])

        if not self._chunks.started:
            response_id = chunk.get("responseId")
            if isinstance(response_id, str) and response_id:
                self._chunks.completion_id = f"chatcmpl-{response_id}"
        usage = gemini_usage(chunk.get("usageMetadata"))
        if usage is not None:
            self._usage = usage

        out = bytearray()
        candidates = _candidates(chunk)
        for index, candidate in candidates:
            for part in _candidate_parts(candidate):
                out += self._translate_part(part, index)
            if candidate.get("finishReason"):
                reason = map_finish_reason(candidate["finishReason"])
                out += self._chunks.finish_choice(reason, index)
        if not candidates and _is_prompt_blocked(chunk):
            out += self._chunks.finish_choice("content_filter", 0)
        return bytes(out)

    def finish(self) -> bytes:
        """Close the stream: the usage chunk if requested, then ``[DONE]``.

        A stream that ended without a finish reason was cut off, so this
        returns an error event instead.
        """
        return self._chunks.end(self._usage)

    def _translate_part(self, part: object, index: int) -> bytes:
        output = _read_part(part)
        if output is None:
            return b""
        if output.kind == "tool_call":
            # Gemini sends each call whole, so one chunk carries all of it.
            _, out = self._chunks.tool_call(
                output.call_id, output.name, output.arguments, index
            )
            return out
        if output.kind == "reasoning":
            return self._chunks.reasoning(output.text, index)
        return self._chunks.text(output.text, index)


# ---------------------------------------------------------------------------
# Errors


def _error_status(error: dict[str, Any]) -> int:
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return 500


def gemini_error_to_openai(status: int, body: object) -> ErrorResponse:
    """Translate a Gemini error (HTTP status and body) into an OpenAI error.

    ``body`` is the raw or parsed body, an ``{"error": {code, message,
    status, details}}`` object or a one-item array of it. The status is kept.
    The OpenAI ``code`` is Gemini's status name in lower case, such as
    ``resource_exhausted``. A ``RetryInfo.retryDelay`` becomes a
    ``retry-after`` header, in whole seconds rounded up.
    """
    parsed = load_json(body)
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        message = f"Gemini returned HTTP {status}: {body_excerpt(body)}"
        return ErrorResponse(
            status, error_body(message, openai_error_type(status), None)
        )

    upstream_message = error.get("message")
    message = f"Gemini returned HTTP {status}."
    if isinstance(upstream_message, str) and upstream_message:
        message = upstream_message
    google_status = error.get("status")
    code = google_status.lower() if isinstance(google_status, str) else None

    headers: dict[str, str] = {}
    delay = retry_delay_seconds(error.get("details"))
    if delay is not None:
        headers["retry-after"] = str(max(1, math.ceil(delay)))
    return ErrorResponse(
        status, error_body(message, openai_error_type(status), code), headers
    )


def retry_delay_seconds(details: object) -> float | None:
    """Return the ``retryDelay`` of a ``google.rpc.RetryInfo`` detail, in seconds."""
    if not isinstance(details, list):
        return None
    for detail in details:
        if not isinstance(detail, dict) or detail.get("@type") != _RETRY_INFO_TYPE:
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str):
            match = _DURATION.fullmatch(delay.strip())
            if match is not None:
                return float(match["seconds"])
    return None
