"""Anthropic <-> OpenAI translation of requests, responses and errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmgw.errors import InvalidRequest
from llmgw.protocols.anthropic import parse_messages_request
from llmgw.protocols.openai import Usage, parse_chat_request
from llmgw.protocols.translate_anthropic import (
    FINISH_TO_STOP_REASON,
    OVERLOADED_STATUS_FOR_OPENAI,
    STOP_TO_FINISH_REASON,
    anthropic_error_to_openai,
    anthropic_error_type,
    anthropic_to_openai_response,
    finish_reason_for,
    openai_error_to_anthropic,
    openai_error_type,
    openai_to_anthropic_response,
    openai_usage,
    openai_usage_body,
    retry_headers,
    stop_reason_for,
)
from llmgw.protocols.translate_anthropic_request import (
    DEFAULT_MAX_TOKENS,
    TEXT_SEPARATOR,
    ChatTranslation,
    anthropic_to_openai_request,
    anthropic_tool_id,
    openai_to_anthropic_request,
    openai_tool_name,
)
from tests.conftest import FIXTURES_DIR

needs_fixtures = pytest.mark.skipif(
    not FIXTURES_DIR.is_dir(),
    reason=f"recorded provider responses not found at {FIXTURES_DIR}",
)

PNG_DATA = "iVBORw0KGgo="
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def fixture_json(*parts: str) -> Any:
    return json.loads(FIXTURES_DIR.joinpath(*parts).read_text())


def to_openai(**fields: Any) -> ChatTranslation:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body.update(fields)
    return anthropic_to_openai_request(parse_messages_request(body))


def to_anthropic(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    body.update(fields)
    return openai_to_anthropic_request(parse_chat_request(body))


# Anthropic -> OpenAI requests.


def test_anthropic_request_minimal() -> None:
    translation = to_openai()
    assert translation.body == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 512,
    }
    assert translation.tool_names == {}


def test_anthropic_request_scalar_fields() -> None:
    body = to_openai(
        stream=True,
        stop_sequences=["END", "STOP"],
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "user-7"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=4096,
        service_tier="auto",
    ).body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["stop"] == ["END", "STOP"]
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["user"] == "user-7"
    assert body["max_tokens"] == 4096
    for dropped in ("top_k", "thinking", "metadata", "service_tier", "stop_sequences"):
        assert dropped not in body


def test_anthropic_request_max_completion_tokens_field() -> None:
    request = parse_messages_request(
        {
            "model": "o3",
            "max_tokens": 300,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    body = anthropic_to_openai_request(
        request, max_tokens_field="max_completion_tokens"
    ).body
    assert body["max_completion_tokens"] == 300
    assert "max_tokens" not in body


def test_anthropic_system_string_leads() -> None:
    messages = to_openai(system="Be brief.").body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {"role": "user", "content": "Hi"}


def test_anthropic_system_blocks_become_string() -> None:
    system = [
        {
            "type": "text",
            "text": "You are Claude Code.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "Be brief."},
    ]
    messages = to_openai(system=system).body["messages"]
    assert messages[0] == {
        "role": "system",
        "content": "You are Claude Code.\nBe brief.",
    }
    assert TEXT_SEPARATOR == "\n"


def test_anthropic_user_text_blocks_become_string() -> None:
    content = [
        {"type": "text", "text": "<system-reminder>Be kind.</system-reminder>"},
        {
            "type": "text",
            "text": "Say hi.",
            "cache_control": {"type": "ephemeral"},
        },
    ]
    messages = to_openai(messages=[{"role": "user", "content": content}]).body[
        "messages"
    ]
    assert messages == [
        {
            "role": "user",
            "content": "<system-reminder>Be kind.</system-reminder>\nSay hi.",
        }
    ]


def test_anthropic_plain_text_document_joins_text() -> None:
    content = [
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        },
        {"type": "text", "text": "Summarize."},
    ]
    messages = to_openai(messages=[{"role": "user", "content": content}]).body[
        "messages"
    ]
    assert messages == [{"role": "user", "content": "notes\nSummarize."}]


def test_anthropic_single_system_block_keeps_text() -> None:
    system = [{"type": "text", "text": "Line one.\n\nLine two.\n"}]
    messages = to_openai(system=system).body["messages"]
    assert messages[0] == {"role": "system", "content": "Line one.\n\nLine two.\n"}


def test_anthropic_empty_system_is_dropped() -> None:
    assert to_openai(system="").body["messages"][0]["role"] == "user"
    assert to_openai(system=[]).body["messages"][0]["role"] == "user"


def tool_turns() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_B",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18 C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_B",
                    "content": [
                        {"type": "text", "text": "21 C"},
                        {"type": "text", "text": "sunny"},
                    ],
                    "is_error": False,
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_anthropic_tool_turns() -> None:
    messages = to_openai(messages=tool_turns()).body["messages"]
    assert messages == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "toolu_A",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city":"Paris"}',
                    },
                },
                {
                    "id": "toolu_B",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_A", "content": "18 C"},
        {"role": "tool", "tool_call_id": "toolu_B", "content": "21 C\nsunny"},
        {"role": "user", "content": "Which is warmer?"},
    ]


def test_tool_results_only_add_no_user_message() -> None:
    turns = tool_turns()
    turns[2]["content"] = turns[2]["content"][:2]
    messages = to_openai(messages=turns).body["messages"]
    assert [message["role"] for message in messages] == [
        "user",
        "assistant",
        "tool",
        "tool",
    ]


def test_anthropic_tool_use_without_text() -> None:
    turns = tool_turns()
    turns[1]["content"] = turns[1]["content"][2:3]
    assistant = to_openai(messages=turns[:2]).body["messages"][1]
    assert assistant["content"] == ""
    assert [call["id"] for call in assistant["tool_calls"]] == ["toolu_A"]


def test_anthropic_assistant_text_blocks_become_string() -> None:
    assistant = {
        "role": "assistant",
        "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
    }
    messages = to_openai(messages=[{"role": "user", "content": "x"}, assistant]).body[
        "messages"
    ]
    assert messages[1] == {"role": "assistant", "content": "One.\nTwo."}


def test_anthropic_empty_tool_result_is_empty_string() -> None:
    turns = tool_turns()[:2]
    turns[1]["content"] = turns[1]["content"][2:3]
    result = {"type": "tool_result", "tool_use_id": "toolu_A", "content": []}
    turns.append({"role": "user", "content": [result]})
    messages = to_openai(messages=turns).body["messages"]
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_A", "content": ""}


def test_anthropic_thinking_only_message_is_dropped() -> None:
    assistant = {
        "role": "assistant",
        "content": [{"type": "redacted_thinking", "data": "opaque"}],
    }
    turns = [
        {"role": "user", "content": "x"},
        assistant,
        {"role": "user", "content": "y"},
    ]
    messages = to_openai(messages=turns).body["messages"]
    assert messages == [
        {"role": "user", "content": "x"},
        {"role": "user", "content": "y"},
    ]


def test_anthropic_images_and_documents() -> None:
    content = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_DATA},
        },
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
        },
        {
            "type": "document",
            "title": "report.pdf",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": "JVBERi0=",
            },
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        },
        {"type": "text", "text": "Describe these."},
    ]
    messages = to_openai(messages=[{"role": "user", "content": content}]).body[
        "messages"
    ]
    assert messages == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"},
                },
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/cat.jpg"},
                },
                {
                    "type": "file",
                    "file": {
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                        "filename": "report.pdf",
                    },
                },
                {"type": "text", "text": "notes"},
                {"type": "text", "text": "Describe these."},
            ],
        }
    ]


def test_tool_result_image_moves_to_user() -> None:
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_A",
        "content": [
            {"type": "text", "text": "Screenshot:"},
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": "image/png",
                    "data": PNG_DATA,
                },
            },
        ],
    }
    turns = tool_turns()[:2]
    turns[1]["content"] = turns[1]["content"][2:3]
    turns.append(
        {"role": "user", "content": [result, {"type": "text", "text": "Next?"}]}
    )
    messages = to_openai(messages=turns).body["messages"]
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": "toolu_A",
        "content": "Screenshot:",
    }
    assert messages[3] == {
        "role": "user",
        "content": [
            {
                "type": "image_url",
                "image_url": {"url": f"data:image/png;base64,{PNG_DATA}"},
            },
            {"type": "text", "text": "Next?"},
        ],
    }


def test_anthropic_tools_and_choice() -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": WEATHER_SCHEMA,
        },
        {"name": "noop", "input_schema": {"type": "object"}, "strict": True},
    ]
    body = to_openai(
        tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}
    ).body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_SCHEMA,
                "description": "Weather by city",
            },
        },
        {
            "type": "function",
            "function": {
                "name": "noop",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
    ids=["auto", "any", "none", "tool"],
)
def test_anthropic_tool_choice_table(choice: dict[str, Any], expected: object) -> None:
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    body = to_openai(tools=tools, tool_choice=choice).body
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_anthropic_tool_choice_without_tools_is_dropped() -> None:
    body = to_openai(tool_choice={"type": "auto"}).body
    assert "tool_choice" not in body
    assert "tools" not in body


def test_anthropic_none_choice_keeps_parallel_calls() -> None:
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    choice = {"type": "none", "disable_parallel_tool_use": True}
    body = to_openai(tools=tools, tool_choice=choice).body
    assert "parallel_tool_calls" not in body


def test_long_tool_names_rewritten_everywhere() -> None:
    long_name = "mcp__github-enterprise__list_pull_requests_for_repository_with_filters"
    assert len(long_name) > 64
    short = openai_tool_name(long_name)
    turns = [
        {"role": "user", "content": "List PRs"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": long_name, "input": {}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "[]"}
            ],
        },
    ]
    translation = to_openai(
        messages=turns,
        tools=[{"name": long_name, "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": long_name},
    )
    body = translation.body
    assert body["tools"][0]["function"]["name"] == short
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert body["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert translation.tool_names == {short: long_name}


@pytest.mark.parametrize(
    "name",
    [
        "a" * 65,
        "server.tool:name",
        "名前",
        "mcp__github__" + "x" * 60,
    ],
    ids=["long", "punctuation", "non-ascii", "mcp-long"],
)
def test_openai_tool_name_is_valid_and_stable(name: str) -> None:
    rewritten = openai_tool_name(name)
    assert 1 <= len(rewritten) <= 64
    assert all(
        char.isascii() and (char.isalnum() or char in "_-") for char in rewritten
    )
    assert openai_tool_name(name) == rewritten
    assert openai_tool_name(name + "2") != rewritten


def test_openai_tool_name_keeps_valid_names() -> None:
    assert openai_tool_name("get_weather-2") == "get_weather-2"
    assert openai_tool_name("x" * 64) == "x" * 64


@pytest.mark.parametrize(
    ("block", "param"),
    [
        (
            {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
            "messages.1.content.0",
        ),
        (
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_1",
                "content": [],
            },
            "messages.1.content.0",
        ),
    ],
    ids=["server-tool-use", "web-search-result"],
)
def test_anthropic_server_tool_blocks_rejected(
    block: dict[str, Any], param: str
) -> None:
    turns = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [block]},
    ]
    with pytest.raises(InvalidRequest) as caught:
        to_openai(messages=turns)
    assert caught.value.param == param
    assert "cannot be translated to OpenAI Chat Completions" in caught.value.message


def test_anthropic_unknown_user_block_rejected() -> None:
    content = [
        {"type": "text", "text": "x"},
        {"type": "container_upload", "file_id": "f"},
    ]
    with pytest.raises(InvalidRequest) as caught:
        to_openai(messages=[{"role": "user", "content": content}])
    assert caught.value.param == "messages.0.content.1"
    assert "'container_upload'" in caught.value.message


def test_anthropic_file_image_source_rejected() -> None:
    content = [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]
    with pytest.raises(InvalidRequest) as caught:
        to_openai(messages=[{"role": "user", "content": content}])
    assert caught.value.param == "messages.0.content.0"
    assert "image source type 'file'" in caught.value.message


def test_anthropic_server_tool_definition_rejected() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    with pytest.raises(InvalidRequest) as caught:
        to_openai(tools=tools)
    assert caught.value.param == "tools.0.type"
    assert "'web_search_20250305'" in caught.value.message


# OpenAI -> Anthropic requests.


def test_openai_request_default_max_tokens() -> None:
    assert to_anthropic() == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hi"}],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 100, "max_completion_tokens": 200}, 200),
    ],
    ids=["max-tokens", "max-completion-tokens", "both"],
)
def test_openai_request_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert to_anthropic(**fields)["max_tokens"] == expected


def test_openai_request_default_max_tokens_argument() -> None:
    request = parse_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert (
        openai_to_anthropic_request(request, default_max_tokens=64000)["max_tokens"]
        == 64000
    )


def test_openai_request_scalar_fields() -> None:
    body = to_anthropic(
        stream=True,
        stream_options={"include_usage": True},
        stop="END",
        temperature=1.7,
        top_p=0.5,
        user="user-7",
        seed=4,
        frequency_penalty=0.5,
        logprobs=False,
        reasoning_effort="high",
    )
    assert body["stream"] is True
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 1.0
    assert body["top_p"] == 0.5
    assert body["metadata"] == {"user_id": "user-7"}
    for dropped in (
        "stream_options",
        "seed",
        "frequency_penalty",
        "logprobs",
        "user",
        "stop",
    ):
        assert dropped not in body


def test_openai_request_safety_identifier_wins() -> None:
    body = to_anthropic(user="old", safety_identifier="new")
    assert body["metadata"] == {"user_id": "new"}


def test_openai_request_stop_list() -> None:
    assert to_anthropic(stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_openai_single_system_string() -> None:
    body = to_anthropic(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_openai_leading_system_messages_to_blocks() -> None:
    body = to_anthropic(
        messages=[
            {"role": "system", "content": "Rule one."},
            {"role": "developer", "content": [{"type": "text", "text": "Rule two."}]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert body["system"] == [
        {"type": "text", "text": "Rule one."},
        {"type": "text", "text": "Rule two."},
    ]


def test_openai_later_system_message_stays_in_place() -> None:
    body = to_anthropic(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "system", "content": "Now answer in French."},
            {"role": "user", "content": "How are you?"},
        ]
    )
    assert "system" not in body
    assert body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Now answer in French."}],
        },
        {"role": "user", "content": "How are you?"},
    ]


def openai_tool_history() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "reasoning_content": "Two cities.",
            "tool_calls": [
                {
                    "id": "call_A",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris"}',
                    },
                },
                {
                    "id": "call_B",
                    "type": "function",
                    "function": {"name": "noop", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_A", "content": "18 C"},
        {
            "role": "tool",
            "tool_call_id": "call_B",
            "content": [{"type": "text", "text": "ok"}],
        },
        {"role": "user", "content": "Thanks."},
    ]


def test_openai_tool_history() -> None:
    body = to_anthropic(messages=openai_tool_history())
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "call_A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "call_B", "name": "noop", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_A", "content": "18 C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_B",
                    "content": [{"type": "text", "text": "ok"}],
                },
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]


def test_openai_tool_results_then_assistant() -> None:
    history = openai_tool_history()[:4]
    history.append({"role": "assistant", "content": "Paris is colder."})
    roles = [message["role"] for message in to_anthropic(messages=history)["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_openai_empty_assistant_messages_dropped() -> None:
    body = to_anthropic(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "Hello?"},
        ]
    )
    assert [message["role"] for message in body["messages"]] == ["user", "user"]


def test_openai_assistant_refusal_kept_as_text() -> None:
    body = to_anthropic(
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "refusal": "I can't help with that.",
            },
        ]
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "I can't help with that."}],
    }


def test_openai_tool_ids_rewritten_consistently() -> None:
    odd_id = "functions.get_weather:0"
    history = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": odd_id,
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": odd_id, "content": "done"},
    ]
    messages = to_anthropic(messages=history)["messages"]
    tool_use_id = messages[1]["content"][0]["id"]
    assert tool_use_id == anthropic_tool_id(odd_id)
    assert tool_use_id != odd_id
    assert messages[2]["content"][0]["tool_use_id"] == tool_use_id
    assert all(char.isalnum() or char in "_-" for char in tool_use_id)
    assert anthropic_tool_id("call_abc-1") == "call_abc-1"


def test_openai_user_parts() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "text", "text": ""},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/PNG;base64,{PNG_DATA}", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {
            "type": "file",
            "file": {
                "filename": "a.pdf",
                "file_data": "data:application/pdf;base64,JVBERi0=",
            },
        },
    ]
    body = to_anthropic(messages=[{"role": "user", "content": content}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_DATA},
        },
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
        },
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": "JVBERi0=",
            },
            "title": "a.pdf",
        },
    ]


def test_openai_tools_and_choice() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": WEATHER_SCHEMA,
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "noop"}},
    ]
    body = to_anthropic(tools=tools, tool_choice="required", parallel_tool_calls=False)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_SCHEMA,
            "description": "Weather",
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", None),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
    ids=["absent", "auto", "required", "none", "function"],
)
def test_openai_tool_choice_table(choice: object, expected: object) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA},
        }
    ]
    body = to_anthropic(tools=tools, tool_choice=choice)
    assert body.get("tool_choice") == expected


def test_openai_parallel_false_without_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = to_anthropic(tools=tools, parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_openai_parallel_false_with_none_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = to_anthropic(tools=tools, tool_choice="none", parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "none"}


def test_openai_tool_choice_without_tools_is_dropped() -> None:
    body = to_anthropic(tool_choice="required")
    assert "tool_choice" not in body


def tool_call_message(arguments: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": arguments},
                }
            ],
        },
    ]


INVALID_OPENAI_REQUESTS = [
    pytest.param({"n": 2}, "n", "n must be 1, got 2", id="n"),
    pytest.param({"logprobs": True}, "logprobs", "no log probabilities", id="logprobs"),
    pytest.param(
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        "response_format",
        "type 'json_schema' cannot be translated",
        id="json-schema",
    ),
    pytest.param(
        {"functions": [{"name": "f"}]},
        "functions",
        "deprecated 'functions'",
        id="functions",
    ),
    pytest.param(
        {"messages": tool_call_message('{"city": ')},
        "messages[1].tool_calls[0].function.arguments",
        "expected a JSON object",
        id="invalid-arguments",
    ),
    pytest.param(
        {"messages": tool_call_message("[1, 2]")},
        "messages[1].tool_calls[0].function.arguments",
        "expected a JSON object",
        id="array-arguments",
    ),
    pytest.param(
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        "messages[0].role",
        "'function' messages cannot be translated",
        id="function-role",
    ),
    pytest.param(
        {"messages": [{"role": "tool", "content": "x"}]},
        "messages[0].tool_call_id",
        "missing required parameter 'messages[0].tool_call_id'",
        id="tool-without-id",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_audio",
                            "input_audio": {"data": "x", "format": "wav"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].type",
        "'input_audio' content parts cannot be translated",
        id="audio",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_id": "file-1"}}],
                }
            ]
        },
        "messages[0].content[0].file",
        "not as uploaded file ids",
        id="file-id",
    ),
    pytest.param(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png,raw"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
        "must be base64-encoded",
        id="non-base64-data-url",
    ),
    pytest.param(
        {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]},
        "tools[0].type",
        "only function tools",
        id="custom-tool",
    ),
    pytest.param(
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": []},
            },
        },
        "tool_choice",
        "invalid value for 'tool_choice'",
        id="allowed-tools",
    ),
    pytest.param(
        {"temperature": "hot"}, "temperature", "expected a number", id="temperature"
    ),
    pytest.param({"stop": [1]}, "stop", "a string or an array of strings", id="stop"),
]


@pytest.mark.parametrize(("fields", "param", "message"), INVALID_OPENAI_REQUESTS)
def test_openai_request_rejects(
    fields: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_anthropic(**fields)
    assert caught.value.param == param
    assert message in caught.value.message


# Responses.


@needs_fixtures
def test_anthropic_response_text_fixture() -> None:
    body = fixture_json("anthropic", "vercel-anthropic-text.json")
    response = anthropic_to_openai_response(body, created=1700000000)
    assert response == {
        "id": "msg_01VdEjxAP5ahtHKrrRdNBteQ",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": body["content"][0]["text"],
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 29,
            "total_tokens": 41,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        },
    }


@needs_fixtures
def test_anthropic_response_tool_without_input() -> None:
    body = fixture_json("anthropic", "vercel-anthropic-tool-no-args.json")
    choice = anthropic_to_openai_response(body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"].startswith("<thinking>")
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01LRmxn9vGM1d2DZSDBowdZ1",
            "type": "function",
            "function": {"name": "updateIssueList", "arguments": "{}"},
        }
    ]


def test_anthropic_response_thinking_and_cache_usage() -> None:
    body = {
        "id": "msg_1",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Hello"},
            {"type": "text", "text": " there."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 3,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 7,
            "output_tokens": 5,
        },
    }
    response = anthropic_to_openai_response(body)
    message = response["choices"][0]["message"]
    assert message["content"] == "Hello there."
    assert message["reasoning_content"] == "Let me think."
    assert message["tool_calls"][0]["function"]["arguments"] == '{"a":[1,2]}'
    assert response["usage"] == {
        "prompt_tokens": 110,
        "completion_tokens": 5,
        "total_tokens": 115,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 7},
    }


def test_anthropic_response_tool_only_has_null_content() -> None:
    body = {
        "id": "msg_1",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
    }
    response = anthropic_to_openai_response(body)
    assert response["choices"][0]["message"]["content"] is None
    assert "usage" not in response


@needs_fixtures
def test_openai_response_text_fixture() -> None:
    body = fixture_json("openai", "vercel-openai-chat-text.json")
    response = openai_to_anthropic_response(body)
    assert response["id"] == body["id"]
    assert response["type"] == "message"
    assert response["role"] == "assistant"
    assert response["model"] == "gpt-4.1-nano-2025-04-14"
    assert response["content"] == [
        {"type": "text", "text": body["choices"][0]["message"]["content"]}
    ]
    assert response["stop_reason"] == "end_turn"
    assert response["stop_sequence"] is None
    assert response["usage"] == {
        "input_tokens": 16,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 363,
    }


@needs_fixtures
def test_openai_response_mistral_tool_call() -> None:
    body = fixture_json("mistral", "vercel-mistral-tool-call.json")
    response = openai_to_anthropic_response(body)
    assert response["content"] == [
        {
            "type": "tool_use",
            "id": "gSIMJiOkT",
            "name": "weather",
            "input": {"location": "San Francisco"},
        }
    ]
    assert response["stop_reason"] == "tool_use"
    assert response["usage"]["input_tokens"] == 124
    assert response["usage"]["output_tokens"] == 22


@needs_fixtures
def test_openai_response_ollama_reasoning_and_tool_call() -> None:
    body = fixture_json("ollama", "pydantic-ollama-cloud-chat-tool-call.response.json")
    response = openai_to_anthropic_response(
        body, tool_names={"final_result": "FinalResult"}
    )
    thinking, tool_use = response["content"]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == body["choices"][0]["message"]["reasoning"]
    assert thinking["signature"] == ""
    assert tool_use == {
        "type": "tool_use",
        "id": "call_o2vnpxrw",
        "name": "FinalResult",
        "input": {"city": "Paris", "country": "France"},
    }
    assert response["stop_reason"] == "tool_use"


@needs_fixtures
def test_openai_response_cache_usage() -> None:
    body = fixture_json("openai", "vercel-openai-chat-text.json")
    body["usage"]["prompt_tokens_details"] = {
        "cached_tokens": 10,
        "cache_write_tokens": 4,
    }
    usage = openai_to_anthropic_response(body)["usage"]
    assert usage == {
        "input_tokens": 2,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 10,
        "output_tokens": 363,
    }


def openai_completion(
    message: dict[str, Any], finish_reason: str, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, **choice}
        ],
    }


def test_openai_response_refusal() -> None:
    body = openai_completion(
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        "stop",
    )
    response = openai_to_anthropic_response(body)
    assert response["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert response["stop_reason"] == "refusal"
    assert response["usage"]["output_tokens"] == 0


def test_openai_response_vllm_stop_string() -> None:
    body = openai_completion(
        {"role": "assistant", "content": "1, 2, 3"}, "stop", stop_reason="###"
    )
    response = openai_to_anthropic_response(body)
    assert response["stop_reason"] == "stop_sequence"
    assert response["stop_sequence"] == "###"


def test_openai_response_invalid_arguments_become_empty_input() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": '},
    }
    body = openai_completion(
        {"role": "assistant", "content": "", "tool_calls": [call]}, "tool_calls"
    )
    response = openai_to_anthropic_response(body)
    assert response["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    ]


def test_openai_response_without_choices() -> None:
    response = openai_to_anthropic_response({"id": "", "model": "m", "choices": []})
    assert response["content"] == []
    assert response["stop_reason"] == "end_turn"
    assert response["id"].startswith("msg_")


# Stop reasons.


STOP_REASONS = [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    ("some_future_reason", "stop"),
    (None, None),
]


@pytest.mark.parametrize(("stop_reason", "finish_reason"), STOP_REASONS)
def test_finish_reason_for(stop_reason: str | None, finish_reason: str | None) -> None:
    assert finish_reason_for(stop_reason) == finish_reason


FINISH_REASONS = [
    ("stop", "end_turn"),
    ("length", "max_tokens"),
    ("tool_calls", "tool_use"),
    ("function_call", "tool_use"),
    ("content_filter", "refusal"),
    ("eos", "end_turn"),
    (None, None),
]


@pytest.mark.parametrize(("finish_reason", "stop_reason"), FINISH_REASONS)
def test_stop_reason_for(finish_reason: str | None, stop_reason: str | None) -> None:
    assert stop_reason_for(finish_reason) == stop_reason


def test_stop_reason_tables_round_trip() -> None:
    for finish_reason, stop_reason in FINISH_TO_STOP_REASON.items():
        if finish_reason != "function_call":
            assert STOP_TO_FINISH_REASON[stop_reason] == finish_reason


# Usage.


def test_openai_usage_reads_cache_writes() -> None:
    usage = openai_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    )
    assert usage == Usage(
        100, 5, cached_tokens=60, reasoning_tokens=2, cache_write_tokens=30
    )
    assert openai_usage(None) is None


def test_openai_usage_body_round_trips() -> None:
    usage = Usage(100, 5, cached_tokens=60, cache_write_tokens=30)
    assert openai_usage(openai_usage_body(usage)) == usage


# Errors.


def error_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


OPENAI_ERRORS = [
    pytest.param(
        429,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "tokens",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        "rate_limit_error",
        "Rate limit reached",
        id="rate-limit",
    ),
    pytest.param(
        404,
        {
            "error": {
                "message": "The model `x` does not exist",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
        "not_found_error",
        "The model `x` does not exist",
        id="model-not-found",
    ),
    pytest.param(
        400,
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
        "invalid_request_error",
        "too long",
        id="context-length",
    ),
    pytest.param(
        401,
        {
            "error": {
                "message": "Incorrect API key",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
        "authentication_error",
        "Incorrect API key",
        id="auth",
    ),
    pytest.param(
        503,
        {
            "error": {
                "message": "The engine is currently overloaded",
                "type": "server_error",
            }
        },
        "overloaded_error",
        "The engine is currently overloaded",
        id="overloaded",
    ),
    pytest.param(
        500,
        {"error": {"message": "boom", "type": "server_error"}},
        "api_error",
        "boom",
        id="server-error",
    ),
    pytest.param(
        400,
        {
            "object": "error",
            "message": "max_tokens too large",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
        "invalid_request_error",
        "max_tokens too large",
        id="vllm-old",
    ),
    pytest.param(
        404,
        {"error": 'model "llama9" not found, try pulling it first'},
        "not_found_error",
        'model "llama9" not found, try pulling it first',
        id="ollama-string",
    ),
]


@pytest.mark.parametrize(("status", "body", "error_type", "message"), OPENAI_ERRORS)
def test_openai_error_to_anthropic(
    status: int, body: dict[str, Any], error_type: str, message: str
) -> None:
    translated = openai_error_to_anthropic(status, error_json(body))
    assert translated.status == status
    assert translated.body == {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }


@needs_fixtures
def test_openai_insufficient_quota_is_billing_error() -> None:
    path = (
        FIXTURES_DIR
        / "openai"
        / "vercel-openai-responses-error-insufficient-quota.json"
    )
    translated = openai_error_to_anthropic(429, path.read_bytes())
    error = translated.body["error"]
    assert translated.status == 429
    assert error["type"] == "billing_error"
    assert error["message"] == json.loads(path.read_text())["error"]["message"]


@needs_fixtures
def test_gemini_error_body_to_anthropic() -> None:
    path = FIXTURES_DIR / "gemini" / "vercel-google-error-429-retry-info.json"
    translated = openai_error_to_anthropic(429, path.read_bytes())
    assert translated.body["error"]["type"] == "rate_limit_error"
    assert (
        translated.body["error"]["message"]
        == json.loads(path.read_text())["error"]["message"]
    )


def test_non_json_error_body_to_anthropic() -> None:
    translated = openai_error_to_anthropic(502, b"<html>Bad Gateway</html>")
    assert translated.status == 502
    assert translated.body["error"] == {
        "type": "api_error",
        "message": "<html>Bad Gateway</html>",
    }
    empty = openai_error_to_anthropic(500, b"")
    assert empty.body["error"]["message"] == "Upstream returned HTTP 500."


def test_long_error_body_is_cut() -> None:
    translated = openai_error_to_anthropic(500, b"x" * 2000)
    assert translated.body["error"]["message"] == "x" * 500 + "..."


ANTHROPIC_ERRORS = [
    pytest.param(
        529,
        "overloaded_error",
        OVERLOADED_STATUS_FOR_OPENAI,
        "overloaded_error",
        None,
        id="overloaded",
    ),
    pytest.param(
        429,
        "rate_limit_error",
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        id="rate-limit",
    ),
    pytest.param(
        401,
        "authentication_error",
        401,
        "authentication_error",
        "invalid_api_key",
        id="auth",
    ),
    pytest.param(
        400, "invalid_request_error", 400, "invalid_request_error", None, id="invalid"
    ),
    pytest.param(
        403, "permission_error", 403, "permission_error", None, id="permission"
    ),
    pytest.param(
        404,
        "not_found_error",
        404,
        "invalid_request_error",
        "not_found",
        id="not-found",
    ),
    pytest.param(
        413,
        "request_too_large",
        413,
        "invalid_request_error",
        "request_too_large",
        id="too-large",
    ),
    pytest.param(
        402,
        "billing_error",
        402,
        "insufficient_quota",
        "insufficient_quota",
        id="billing",
    ),
    pytest.param(500, "api_error", 500, "server_error", None, id="api-error"),
    pytest.param(504, "timeout_error", 504, "timeout_error", None, id="timeout"),
]


@pytest.mark.parametrize(
    ("status", "anthropic_type", "openai_status", "error_type", "code"),
    ANTHROPIC_ERRORS,
)
def test_anthropic_error_to_openai(
    status: int,
    anthropic_type: str,
    openai_status: int,
    error_type: str,
    code: str | None,
) -> None:
    body = {
        "type": "error",
        "error": {"type": anthropic_type, "message": "Details."},
        "request_id": "req_1",
    }
    translated = anthropic_error_to_openai(status, error_json(body))
    assert translated.status == openai_status
    assert translated.body == {
        "error": {
            "message": "Details.",
            "type": error_type,
            "param": None,
            "code": code,
        }
    }


def test_anthropic_error_without_json_body() -> None:
    translated = anthropic_error_to_openai(529, b"Overloaded")
    assert translated.status == 503
    assert translated.body["error"]["type"] == "overloaded_error"
    assert translated.body["error"]["message"] == "Overloaded"


def test_unknown_anthropic_error_type_passes_through() -> None:
    assert openai_error_type("conflict_error") == ("conflict_error", None)


@pytest.mark.parametrize(
    ("error_type", "code", "status", "expected"),
    [
        ("overloaded_error", None, None, "overloaded_error"),
        ("tokens", "rate_limit_exceeded", None, "rate_limit_error"),
        ("insufficient_quota", "insufficient_quota", None, "billing_error"),
        (
            "invalid_request_error",
            "context_length_exceeded",
            None,
            "invalid_request_error",
        ),
        ("server_error", None, None, "api_error"),
        (None, None, None, "api_error"),
        ("BadRequestError", 400, None, "invalid_request_error"),
        ("InternalServerError", 500, 200, "api_error"),
        ("server_error", None, 503, "overloaded_error"),
    ],
    ids=[
        "anthropic-type",
        "rate-limit",
        "quota",
        "context",
        "server",
        "unknown",
        "vllm-400",
        "vllm-500",
        "status",
    ],
)
def test_anthropic_error_type(
    error_type: object, code: object, status: int | None, expected: str
) -> None:
    assert anthropic_error_type(error_type, code, status) == expected


def test_retry_headers() -> None:
    headers = {
        "Retry-After": "3",
        "retry-after-ms": "2500",
        "X-Should-Retry": "true",
        "x-ratelimit-remaining-tokens": "0",
        "anthropic-ratelimit-requests-reset": "2025-01-01T00:00:00Z",
        "request-id": "req_1",
    }
    assert retry_headers(headers) == {
        "retry-after": "3",
        "retry-after-ms": "2500",
        "x-should-retry": "true",
    }


def test_tool_result_document_moves_to_user() -> None:
    document = {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": "JVBERi0=",
        },
    }
    result = {"type": "tool_result", "tool_use_id": "toolu_A", "content": [document]}
    turns = tool_turns()[:2]
    turns[1]["content"] = turns[1]["content"][2:3]
    turns.append({"role": "user", "content": [result]})
    messages = to_openai(messages=turns).body["messages"]
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_A", "content": ""}
    assert messages[3]["content"] == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}
    ]


def test_openai_empty_later_system_message_dropped() -> None:
    body = to_anthropic(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": ""},
            {"role": "assistant", "content": "Hello."},
        ]
    )
    assert [message["role"] for message in body["messages"]] == ["user", "assistant"]
