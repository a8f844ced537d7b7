"""Translation of request bodies between Anthropic Messages and OpenAI Chat
Completions.

Tool call ids are the same in both formats, except that an OpenAI id with
characters that Anthropic rejects is rewritten (``anthropic_tool_id``). Tool
names longer than OpenAI's 64 characters are rewritten on the way to an
OpenAI upstream, and ``ChatTranslation.tool_names`` lets the response and
stream translators restore them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from llmgw.errors import InvalidRequest
from llmgw.protocols.anthropic import MessagesRequest
from llmgw.protocols.openai import ChatRequest
from llmgw.protocols.translate_anthropic import message_texts, openai_tool_call

# Anthropic requires max_tokens, and this default applies when an OpenAI
# request sets no output limit. 4096 is Claude 3 Haiku's output limit, the
# lowest of any Claude model, so every model accepts it.
DEFAULT_MAX_TOKENS: Final = 4096

_OPENAI_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ANTHROPIC_TOOL_ID: Final = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_NAME_CHARACTER: Final = re.compile(r"[^a-zA-Z0-9_-]")
# RFC 2397, base64 form only: data:<media type>[;param=value]*;base64,<data>
_DATA_URL: Final = re.compile(
    r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^;,]*)*;base64,(?P<data>.*)",
    re.DOTALL | re.IGNORECASE,
)
_EMPTY_SCHEMA: Final = {"type": "object", "properties": {}}

# The separator between the texts of a message whose content is only text,
# which goes upstream as one string. Some OpenAI-compatible servers accept
# only strings. llama-cpp-python's server (checked with 0.3.36) rejects a
# system message with content parts, and its chat templates fail on text
# parts in user messages. vLLM joins the text parts of a message with "\n"
# before it applies a chat template that takes string content
# (``_parse_chat_message_content_parts`` in vllm/entrypoints/chat_utils.py).
# With the same separator, a model gets the same prompt from both kinds of
# server.
TEXT_SEPARATOR: Final = "\n"


@dataclass(frozen=True, slots=True)
class ChatTranslation:
    """An Anthropic request translated to Chat Completions."""

    body: dict[str, Any]
    tool_names: dict[str, str]
    """Rewritten tool names, ``{OpenAI name: Anthropic name}``. Pass it to the
    response and stream translators, which restore the client's names."""


def openai_tool_name(name: str) -> str:
    """Return ``name`` if OpenAI accepts it, else a valid name derived from it.

    OpenAI requires ``[a-zA-Z0-9_-]{1,64}``. Other names keep their first 55
    valid characters plus ``_`` and 8 hex digits of their SHA-256, so the
    result is stable and distinct names stay distinct.
    """
    if _OPENAI_TOOL_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_NOT_NAME_CHARACTER.sub('_', name)[:55]}_{digest}"


def anthropic_tool_id(call_id: str) -> str:
    """Return a tool call id that Anthropic accepts (``[a-zA-Z0-9_-]+``).

    A valid id is returned as it is. Others have their invalid characters
    replaced and a hash suffix added, so a tool call and its result, which
    carry the same id, still match.
    """
    if _ANTHROPIC_TOOL_ID.fullmatch(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{_NOT_NAME_CHARACTER.sub('_', call_id)}_{digest}"


def anthropic_to_openai_request(
    request: MessagesRequest,
    *,
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
) -> ChatTranslation:
    """Translate a Messages request to a Chat Completions request.

    - ``system`` becomes one leading system message with string content.
      Text blocks are joined with ``TEXT_SEPARATOR``.
    - Every translated message whose content is only text gets a string,
      its texts joined with ``TEXT_SEPARATOR``: the user message, the tool
      messages and the assistant message. Content with images or PDF
      documents stays an array of parts.
    - A user message's ``tool_result`` blocks become ``tool`` messages,
      placed before the rest of its content, which becomes a user message.
      Images and documents inside a tool result move to that user message,
      because OpenAI tool messages carry only text. ``is_error`` is dropped.
    - An assistant message's text blocks become ``content`` and its
      ``tool_use`` blocks become ``tool_calls``, so text that followed a
      tool call moves before it. A message without text has the content ``""``.
    - Images become ``image_url`` parts (base64 as a data URL), PDF and
      plain-text documents become ``file`` and text parts.
    - Thinking blocks and the ``thinking`` option are dropped, because their
      signatures are valid only for Anthropic, and Chat Completions has no
      request field for them. ``top_k``, ``cache_control`` and the other
      Anthropic-only fields are dropped too.
    - ``max_tokens`` goes to ``max_tokens_field``. Most OpenAI-compatible
      servers read ``max_tokens``, but OpenAI's reasoning models require
      ``max_completion_tokens``.
    - A stream requests ``stream_options.include_usage``.

    Raises ``InvalidRequest`` for content that Chat Completions cannot
    carry: server tools, Anthropic-defined tools and unknown block types.

    NOTE: a final assistant message (a prefill) is sent as a finished turn,
    because Chat Completions cannot continue one.
    """
    names = _ToolNames()
    messages: list[dict[str, Any]] = []
    system = _openai_system_message(request.system)
    if system is not None:
        messages.append(system)

    for index, message in enumerate(request.messages):
        path = f"messages.{index}"
        content = message["content"]
        if message["role"] == "user":
            messages.extend(_openai_user_messages(content, path))
            continue
        assistant = _openai_assistant_message(content, path, names)
        if assistant is not None:
            messages.append(assistant)

    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        max_tokens_field: request.max_tokens,
    }
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.user_id is not None:
        body["user"] = request.user_id
    if request.tools:
        body["tools"] = _openai_tools(request.tools, names)
        _add_openai_tool_choice(body, request.tool_choice, names)
    return ChatTranslation(body=body, tool_names=names.renamed)


def openai_to_anthropic_request(
    request: ChatRequest, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """Translate a Chat Completions request to a Messages request.

    - The system and developer messages at the start become ``system``: a
      string when there is one message with string content, text blocks
      otherwise. A system or developer message after the start becomes a
      user message with the same text, in its place, since Anthropic has
      only the one leading system prompt.
    - Consecutive ``tool`` messages become one user message of
      ``tool_result`` blocks, and a user message right after them joins it.
    - ``tool_calls`` become ``tool_use`` blocks after the message's text.
      Their arguments must be a JSON object (an empty string counts as
      ``{}``). Reasoning fields on assistant messages are dropped, because
      Anthropic accepts thinking only with its own signature.
    - ``max_completion_tokens`` or ``max_tokens`` becomes ``max_tokens``,
      else ``default_max_tokens``. ``stop`` becomes ``stop_sequences``,
      ``temperature`` is capped at Anthropic's maximum of 1, and
      ``safety_identifier`` or ``user`` becomes ``metadata.user_id``.
    - ``parallel_tool_calls: false`` becomes
      ``tool_choice.disable_parallel_tool_use``.
    - Penalties, ``seed``, ``logit_bias``, ``reasoning_effort``,
      ``stream_options`` (Anthropic streams always report usage) and the
      other OpenAI-only fields are dropped.

    Raises ``InvalidRequest`` for what Anthropic cannot do: ``n`` > 1,
    ``logprobs``, JSON response formats, audio input, uploaded file ids,
    custom tools and the deprecated ``functions``.
    """
    body = request.body
    _reject_unsupported_openai_fields(request)

    system, first = _anthropic_system(request.messages)
    result: dict[str, Any] = {
        "model": request.model,
        "max_tokens": (
            request.max_output_tokens
            if request.max_output_tokens is not None
            else default_max_tokens
        ),
        "messages": _anthropic_messages(request.messages, first),
    }
    if system is not None:
        result["system"] = system
    if request.stream:
        result["stream"] = True

    stop = _stop_sequences(body.get("stop"))
    if stop:
        result["stop_sequences"] = stop
    temperature = _optional_number(body, "temperature")
    if temperature is not None:
        result["temperature"] = min(temperature, 1.0)
    top_p = _optional_number(body, "top_p")
    if top_p is not None:
        result["top_p"] = top_p

    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        result["metadata"] = {"user_id": user}

    tools = _anthropic_tools(body.get("tools"))
    if tools:
        result["tools"] = tools
        choice = _anthropic_tool_choice(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
            choice["disable_parallel_tool_use"] = True
        if choice != {"type": "auto"}:
            result["tool_choice"] = choice
    return result


class _ToolNames:
    """Tool names rewritten for OpenAI, remembered to restore them later."""

    def __init__(self) -> None:
        self.renamed: dict[str, str] = {}

    def openai(self, name: str) -> str:
        openai_name = openai_tool_name(name)
        if openai_name != name:
            self.renamed[openai_name] = name
        return openai_name


# Anthropic -> OpenAI request pieces.


def _openai_system_message(
    system: str | list[dict[str, Any]] | None,
) -> dict[str, Any] | None:
    if system is None:
        return None
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    text = TEXT_SEPARATOR.join(block["text"] for block in system)
    return {"role": "system", "content": text} if text else None


def _openai_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Return content parts as one string if they are all text, else as they are."""
    if all(part["type"] == "text" for part in parts):
        return TEXT_SEPARATOR.join(part["text"] for part in parts)
    return parts


def _openai_user_messages(
    content: str | list[dict[str, Any]], path: str
) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]

    messages: list[dict[str, Any]] = []
    moved_parts: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for number, block in enumerate(content):
        block_path = f"{path}.content.{number}"
        if block["type"] == "tool_result":
            tool_content, moved = _openai_tool_result(block, block_path)
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block["tool_use_id"],
                    "content": tool_content,
                }
            )
            moved_parts.extend(moved)
        elif block["type"] in ("thinking", "redacted_thinking"):
            continue
        else:
            parts.append(_openai_part(block, block_path))

    parts = moved_parts + parts
    if parts:
        messages.append({"role": "user", "content": _openai_content(parts)})
    return messages


def _openai_tool_result(
    block: dict[str, Any], path: str
) -> tuple[str, list[dict[str, Any]]]:
    """Return a tool result's text, and its other parts (images and
    documents), which the user message after the tool messages carries."""
    content = block.get("content")
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []

    texts: list[str] = []
    moved: list[dict[str, Any]] = []
    for number, item in enumerate(content):
        part = _openai_part(item, f"{path}.content.{number}")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            moved.append(part)
    return TEXT_SEPARATOR.join(texts), moved


def _openai_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    """Translate a text, image or document block to a content part."""
    block_type = block["type"]
    if block_type == "text":
        return {"type": "text", "text": block["text"]}
    if block_type == "image":
        source = block["source"]
        if source["type"] == "base64":
            url = f"data:{source['media_type']};base64,{source['data']}"
        elif source["type"] == "url":
            url = source["url"]
        else:
            raise _untranslatable_block(f"image source type '{source['type']}'", path)
        return {"type": "image_url", "image_url": {"url": url}}
    if block_type == "document":
        return _openai_document_part(block, path)
    raise _untranslatable_block(f"content blocks of type '{block_type}'", path)


def _openai_document_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict):
        media_type = source.get("media_type")
        data = source.get("data")
        if source.get("type") == "base64" and isinstance(data, str):
            file: dict[str, Any] = {"file_data": f"data:{media_type};base64,{data}"}
            if isinstance(block.get("title"), str):
                file["filename"] = block["title"]
            return {"type": "file", "file": file}
        if source.get("type") == "text" and isinstance(data, str):
            return {"type": "text", "text": data}
    source_type = source.get("type") if isinstance(source, dict) else None
    raise _untranslatable_block(f"document source type '{source_type}'", path)


def _openai_assistant_message(
    content: str | list[dict[str, Any]], path: str, names: _ToolNames
) -> dict[str, Any] | None:
    """Translate an assistant message, or return None if nothing translates."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}

    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for number, block in enumerate(content):
        block_type = block["type"]
        if block_type == "text":
            texts.append(block["text"])
        elif block_type == "tool_use":
            arguments = orjson.dumps(block["input"]).decode()
            tool_calls.append(
                openai_tool_call(block["id"], names.openai(block["name"]), arguments)
            )
        elif block_type not in ("thinking", "redacted_thinking"):
            raise _untranslatable_block(
                f"content blocks of type '{block_type}'", f"{path}.content.{number}"
            )

    if not texts and not tool_calls:
        return None
    # A message without text gets the content "", because llama-cpp-python's
    # server (checked with 0.3.36) rejects null, and chat templates that read
    # the field fail when it is absent.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": TEXT_SEPARATOR.join(texts),
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _openai_tools(
    tools: list[dict[str, Any]], names: _ToolNames
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        tool_type = tool.get("type")
        if tool_type not in (None, "custom"):
            raise InvalidRequest(
                f"tools.{index}.type: tools of type '{tool_type}' are defined by"
                " Anthropic and cannot be translated to OpenAI Chat Completions."
                " Remove the tool or use an Anthropic model.",
                param=f"tools.{index}.type",
            )
        function: dict[str, Any] = {
            "name": names.openai(tool["name"]),
            "parameters": tool["input_schema"],
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        result.append({"type": "function", "function": function})
    return result


def _add_openai_tool_choice(
    body: dict[str, Any], choice: dict[str, Any] | None, names: _ToolNames
) -> None:
    if choice is None:
        return
    choice_type = choice["type"]
    if choice_type == "any":
        body["tool_choice"] = "required"
    elif choice_type == "tool":
        name = names.openai(choice["name"])
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        body["tool_choice"] = choice_type
    if choice_type != "none" and choice.get("disable_parallel_tool_use") is True:
        body["parallel_tool_calls"] = False


def _untranslatable_block(content_kind: str, path: str) -> InvalidRequest:
    return InvalidRequest(
        f"{path}: {content_kind} cannot be translated to OpenAI Chat Completions."
        " Remove them or use an Anthropic model.",
        param=path,
    )


# OpenAI -> Anthropic request pieces.


def _reject_unsupported_openai_fields(request: ChatRequest) -> None:
    body = request.body
    if request.n > 1:
        raise InvalidRequest(
            f"invalid value for 'n': Anthropic models return one choice per"
            f" request, so n must be 1, got {request.n}",
            param="n",
        )
    if body.get("logprobs") is True:
        raise InvalidRequest(
            "invalid value for 'logprobs': Anthropic models return no log"
            " probabilities, so logprobs must be false or absent",
            param="logprobs",
        )
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") not in (
        None,
        "text",
    ):
        raise InvalidRequest(
            f"invalid value for 'response_format': type"
            f" '{response_format.get('type')}' cannot be translated for Anthropic"
            " models. Describe the format in the prompt or use a tool.",
            param="response_format",
        )
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise InvalidRequest(
                f"the deprecated '{legacy}' parameter cannot be translated for"
                " Anthropic models. Use 'tools' and 'tool_choice'.",
                param=legacy,
            )


def _anthropic_system(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, int]:
    """Return the system prompt of the leading system and developer messages,
    and the index of the first other message."""
    first = 0
    while first < len(messages) and messages[first]["role"] in ("system", "developer"):
        first += 1
    if first == 0:
        return None, 0

    if first == 1 and isinstance(messages[0].get("content"), str):
        text = messages[0]["content"]
        return (text or None), 1

    blocks: list[dict[str, Any]] = []
    for index in range(first):
        blocks.extend(
            _text_blocks(messages[index].get("content"), f"messages[{index}]")
        )
    return (blocks or None), first


def _anthropic_messages(
    messages: list[dict[str, Any]], first: int
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    # The user message that the latest run of tool messages became, which a
    # user message right after them joins.
    tool_results: dict[str, Any] | None = None
    for index in range(first, len(messages)):
        message = messages[index]
        path = f"messages[{index}]"
        role = message["role"]
        if role == "tool":
            if tool_results is None:
                tool_results = {"role": "user", "content": []}
                result.append(tool_results)
            tool_results["content"].append(_tool_result_block(message, path))
            continue

        if role == "user":
            content = _anthropic_user_content(message.get("content"), path)
            if tool_results is not None:
                tool_results["content"].extend(_as_blocks(content))
            else:
                result.append({"role": "user", "content": content})
        elif role in ("system", "developer"):
            blocks = _text_blocks(message.get("content"), path)
            if blocks:
                result.append({"role": "user", "content": blocks})
        elif role == "assistant":
            assistant = _anthropic_assistant_message(message, path)
            if assistant is not None:
                result.append(assistant)
        else:
            raise InvalidRequest(
                f"invalid value for '{path}.role': '{role}' messages cannot be"
                " translated for Anthropic models. Use system, developer, user,"
                " assistant or tool.",
                param=f"{path}.role",
            )
        tool_results = None
    return result


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _anthropic_user_content(content: object, path: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content

    blocks: list[dict[str, Any]] = []
    for number, part in enumerate(_parts(content, f"{path}.content")):
        part_path = f"{path}.content[{number}]"
        part_type = part.get("type")
        if part_type == "text":
            text = _part_text(part, part_path)
            if text:
                blocks.append({"type": "text", "text": text})
        elif part_type == "image_url":
            blocks.append(_image_block(part, part_path))
        elif part_type == "file":
            blocks.append(_document_block(part, part_path))
        else:
            raise InvalidRequest(
                f"invalid value for '{part_path}.type': '{part_type}' content"
                " parts cannot be translated for Anthropic models. Use text,"
                " image_url or file parts.",
                param=f"{part_path}.type",
            )
    return blocks


def _image_block(part: dict[str, Any], path: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"missing required parameter '{path}.image_url.url'",
            param=f"{path}.image_url.url",
        )
    if url[:5].lower() != "data:":
        return {"type": "image", "source": {"type": "url", "url": url}}

    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest(
            f"invalid value for '{path}.image_url.url': a data URL must be"
            " base64-encoded (data:<media type>;base64,<data>)",
            param=f"{path}.image_url.url",
        )
    source = {
        "type": "base64",
        "media_type": match["mime"].lower(),
        "data": match["data"],
    }
    return {"type": "image", "source": source}


def _document_block(part: dict[str, Any], path: str) -> dict[str, Any]:
    file = part.get("file")
    file_data = file.get("file_data") if isinstance(file, dict) else None
    match = _DATA_URL.fullmatch(file_data) if isinstance(file_data, str) else None
    if match is None:
        raise InvalidRequest(
            f"invalid value for '{path}.file': Anthropic models take files only"
            " as base64 file_data (data:<media type>;base64,<data>), not as"
            " uploaded file ids",
            param=f"{path}.file",
        )
    source = {
        "type": "base64",
        "media_type": match["mime"].lower(),
        "data": match["data"],
    }
    block: dict[str, Any] = {"type": "document", "source": source}
    assert isinstance(file, dict)  # file_data came from it
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _anthropic_assistant_message(
    message: dict[str, Any], path: str
) -> dict[str, Any] | None:
    """Translate an assistant message, or return None if it has no content."""
    content = message.get("content")
    tool_calls = _list(message.get("tool_calls"))
    refusal = message.get("refusal")
    if not isinstance(refusal, str):
        refusal = ""
    if isinstance(content, str) and not tool_calls and not refusal:
        return {"role": "assistant", "content": content} if content else None

    blocks = [{"type": "text", "text": text} for text in message_texts(content)]
    if refusal:
        blocks.append({"type": "text", "text": refusal})
    for number, call in enumerate(tool_calls):
        blocks.append(_tool_call_block(call, f"{path}.tool_calls[{number}]"))
    return {"role": "assistant", "content": blocks} if blocks else None


def _tool_call_block(call: object, path: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise _openai_invalid_type(path, "an object", call)
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(
            f"missing required parameter '{path}.function.name'",
            param=f"{path}.function.name",
        )
    call_id = call.get("id")
    if not isinstance(call_id, str):
        raise InvalidRequest(
            f"missing required parameter '{path}.id'", param=f"{path}.id"
        )
    return {
        "type": "tool_use",
        "id": anthropic_tool_id(call_id),
        "name": function["name"],
        "input": _tool_arguments(
            function.get("arguments"), f"{path}.function.arguments"
        ),
    }


def _tool_arguments(arguments: object, path: str) -> dict[str, Any]:
    """Parse a tool call's arguments, which must be a JSON object or empty."""
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise _openai_invalid_type(path, "a string", arguments)
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"invalid value for '{path}': expected a JSON object, got"
            f" {arguments[:100]!r}",
            param=path,
        )
    return parsed


def _tool_result_block(message: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise InvalidRequest(
            f"missing required parameter '{path}.tool_call_id'",
            param=f"{path}.tool_call_id",
        )
    content = message.get("content")
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": anthropic_tool_id(call_id),
    }
    if isinstance(content, str):
        block["content"] = content
    elif content is not None:
        block["content"] = _text_blocks(content, path)
    return block


def _text_blocks(content: object, path: str) -> list[dict[str, Any]]:
    """Translate text-only content (a string or text parts) to text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for number, part in enumerate(_parts(content, f"{path}.content")):
        text = _part_text(part, f"{path}.content[{number}]")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _parts(content: object, path: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if not isinstance(content, list):
        raise _openai_invalid_type(path, "a string or an array", content)
    for number, part in enumerate(content):
        if not isinstance(part, dict):
            raise _openai_invalid_type(f"{path}[{number}]", "an object", part)
    return content


def _part_text(part: dict[str, Any], path: str) -> str:
    """Return the text of a text or refusal part."""
    if part.get("type") not in ("text", "refusal"):
        raise InvalidRequest(
            f"invalid value for '{path}.type': expected 'text', got"
            f" {part.get('type')!r}",
            param=f"{path}.type",
        )
    text = part.get(part["type"])
    if not isinstance(text, str):
        raise _openai_invalid_type(f"{path}.{part['type']}", "a string", text)
    return text


def _anthropic_tools(tools: object) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for index, tool in enumerate(_list(tools)):
        path = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            tool_type = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(
                f"invalid value for '{path}.type': only function tools can be"
                f" translated for Anthropic models, got {tool_type!r}",
                param=f"{path}.type",
            )
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(
                f"missing required parameter '{path}.function.name'",
                param=f"{path}.function.name",
            )
        parameters = function.get("parameters")
        translated: dict[str, Any] = {
            "name": function["name"],
            "input_schema": parameters
            if isinstance(parameters, dict)
            else dict(_EMPTY_SCHEMA),
        }
        if isinstance(function.get("description"), str):
            translated["description"] = function["description"]
        result.append(translated)
    return result


def _anthropic_tool_choice(choice: object) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise InvalidRequest(
        f"invalid value for 'tool_choice': expected 'auto', 'required', 'none'"
        f" or a function, got {choice!r:.100}",
        param="tool_choice",
    )


def _stop_sequences(stop: object) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return stop
    raise _openai_invalid_type("stop", "a string or an array of strings", stop)


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _openai_invalid_type(key, "a number", value)
    return float(value)


def _openai_invalid_type(param: str, expected: str, value: object) -> InvalidRequest:
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
    return "an object"


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
