"""Mistral, vLLM and Ollama: OpenAI-compatible servers with known quirks.

Requests and responses are OpenAI's format, as for ``openai-compatible``,
but each passes through the server's normalizer in
``llmgw.protocols.compat`` (tool call ids, field names, error shapes). A
stream chunk that the normalizer leaves unchanged goes to the client as the
upstream's bytes, and only a changed one is serialized again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import aiohttp
import orjson
import tiktoken

from llmgw.config import ProviderConfig
from llmgw.errors import UpstreamHTTPError
from llmgw.protocols.compat import CompatAdapter, compat_adapter, normalize_error
from llmgw.protocols.openai import (
    ChatRequest,
    EmbeddingsRequest,
    StreamTally,
    Usage,
    error_event,
    extract_usage,
)
from llmgw.protocols.sse import SSEEvent, SSEParser, format_event
from llmgw.providers.base import (
    STREAM_ERROR_TYPE,
    ChatExchange,
    Exchange,
    StreamTranslator,
    TranslatedResponse,
    TranslatedUpstreamError,
    TranslatingProvider,
    UpstreamRequest,
)
from llmgw.providers.openai import (
    error_response_headers,
    forwardable_request_headers,
    openai_model_ids,
)

# Provider kind -> the compat.py flavor whose normalizer it uses.
FLAVORS: Final = {"mistral": "mistral", "vllm": "vllm", "ollama": "ollama"}


class CompatProvider(TranslatingProvider):
    supports_embeddings = True

    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self.flavor = FLAVORS[config.kind]
        self._base_url = config.base_url.rstrip("/")

    def _headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        headers = forwardable_request_headers(incoming)
        headers["Content-Type"] = "application/json"
        if self.config.api_key.value:
            headers["Authorization"] = f"Bearer {self.config.api_key.value}"
        return headers

    def chat(
        self, chat: ChatRequest, upstream_model: str, incoming: Mapping[str, str]
    ) -> ChatExchange:
        adapter = compat_adapter(self.flavor)
        body = {**chat.body, "model": upstream_model}
        if chat.stream:
            # Ask for usage even if the client did not; the translator hides
            # the extra chunk from such clients. The Mistral adapter drops
            # stream_options, because Mistral sends usage unasked.
            options = body.get("stream_options") or {}
            body["stream_options"] = {**options, "include_usage": True}
        request = UpstreamRequest(
            url=f"{self._base_url}/chat/completions",
            headers=self._headers(incoming),
            body=orjson.dumps(adapter.prepare_request(body)),
        )
        return _CompatChatExchange(request, adapter, chat.include_usage)

    def embeddings(
        self,
        request: EmbeddingsRequest,
        upstream_model: str,
        incoming: Mapping[str, str],
        input_tokens: int,
    ) -> Exchange:
        call = UpstreamRequest(
            url=f"{self._base_url}/embeddings",
            headers=self._headers(incoming),
            body=orjson.dumps({**request.body, "model": upstream_model}),
        )
        return _CompatEmbeddingsExchange(call)

    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        translated = normalize_error(status, body)
        return TranslatedUpstreamError(
            provider_status=status,
            client_status=translated.status,
            body=translated.body,
            headers=error_response_headers(headers),
        )

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        return f"{self._base_url}/models", self._headers({})

    def parse_model_list(self, body: object) -> list[str]:
        return openai_model_ids(body)


def _passed_response(data: bytes) -> TranslatedResponse:
    """Return a body that needs no normalizing as it is, with its usage."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    usage = extract_usage(parsed.get("usage")) if isinstance(parsed, dict) else None
    return TranslatedResponse(body=data, usage=usage)


class _CompatEmbeddingsExchange(Exchange):
    def __init__(self, request: UpstreamRequest) -> None:
        self.request = request

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        return _passed_response(data)


class _CompatChatExchange(ChatExchange):
    def __init__(
        self, request: UpstreamRequest, adapter: CompatAdapter, include_usage: bool
    ) -> None:
        self.request = request
        self.adapter = adapter
        self.include_usage = include_usage

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        # A body that is not a JSON object goes to the client as it is, as
        # with an openai-compatible provider.
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return TranslatedResponse(body=data, usage=None)
        normalized = self.adapter.normalize_response(parsed)
        body = data if normalized is parsed else orjson.dumps(normalized)
        return TranslatedResponse(
            body=body, usage=extract_usage(normalized.get("usage"))
        )

    def stream_translator(
        self, headers: Mapping[str, str], encoding: tiktoken.Encoding
    ) -> StreamTranslator:
        return _CompatStream(self.adapter, encoding, self.include_usage)


class _CompatStream(StreamTranslator):
    """Normalize each chunk of an OpenAI-format stream and tally it."""

    def __init__(
        self, adapter: CompatAdapter, encoding: tiktoken.Encoding, include_usage: bool
    ) -> None:
        self._adapter = adapter
        self._parser = SSEParser()
        self._tally = StreamTally(encoding)
        self._include_usage = include_usage
        self._done = False
        self._error = False
        self._ended = False

    def feed(self, data: bytes) -> bytes:
        return self._select(self._parser.feed(data))

    def finish(self) -> bytes:
        # As with an openai-compatible provider, a stream that ends without
        # [DONE] gets no error event added.
        out = self._select(self._parser.flush())
        self._ended = True
        return out

    def fail(self, message: str, code: str) -> bytes:
        if self._ended or self._done:
            return b""
        self._ended = True
        return error_event(message, STREAM_ERROR_TYPE, code)

    def _select(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._ended:
                break
            if event.data == "[DONE]":
                self._done = True
                out += event.raw
            elif event.data:
                out += self._chunk(event)
            else:
                # Comments and keep-alives pass as they are.
                out += event.raw
        return bytes(out)

    def _chunk(self, event: SSEEvent) -> bytes:
        """Return the bytes to send for one data event, b"" to hide it."""
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return event.raw
        if not isinstance(chunk, dict):
            return event.raw
        normalized = self._adapter.normalize_chunk(chunk)
        info = self._tally.observe(normalized)
        if info.error:
            self._error = True
        if info.usage_only and not self._include_usage:
            return b""
        if normalized is chunk:
            return event.raw
        return format_event(orjson.dumps(normalized), event.event)

    @property
    def usage(self) -> Usage | None:
        return self._tally.usage

    @property
    def output_tokens(self) -> int:
        return self._tally.output_tokens

    @property
    def done(self) -> bool:
        return self._done

    @property
    def upstream_failed(self) -> bool:
        return self._error
