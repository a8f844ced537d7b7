"""Anthropic Messages upstream for OpenAI Chat Completions clients.

Requests go to ``POST {base_url}/v1/messages`` with the key in ``x-api-key``
and the ``anthropic-version`` header from the provider's ``api_version``
(2023-06-01 by default). The translation itself is in
``llmgw.protocols.translate_anthropic*``.

Anthropic's 529 ``overloaded_error`` reaches the client as 503 with the
error type ``overloaded_error``: 529 is not a standard status, and OpenAI
clients retry a 503 as they would the 529.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson
import tiktoken

from llmgw.errors import UpstreamHTTPError
from llmgw.protocols.anthropic import extract_usage
from llmgw.protocols.openai import ChatRequest, Usage
from llmgw.protocols.sse import SSEParser
from llmgw.protocols.translate_anthropic import (
    anthropic_error_to_openai,
    anthropic_to_openai_response,
)
from llmgw.protocols.translate_anthropic_request import openai_to_anthropic_request
from llmgw.protocols.translate_anthropic_stream import AnthropicToOpenAIStream
from llmgw.providers.base import (
    ChatExchange,
    StreamTranslator,
    TranslatedResponse,
    TranslatedStream,
    TranslatedUpstreamError,
    TranslatingProvider,
    UpstreamRequest,
    load_object,
    retry_hint_headers,
)

DEFAULT_VERSION: Final = "2023-06-01"
# The maximum number of models one GET /v1/models page returns: the API reference
# (platform.claude.com/docs/en/api/models-list) allows limit 1 to 1000.
_MODEL_PAGE_SIZE: Final = 1000


class AnthropicProvider(TranslatingProvider):
    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "anthropic-version": self.config.api_version or DEFAULT_VERSION,
        }
        if self.config.api_key.value:
            headers["x-api-key"] = self.config.api_key.value
        return headers

    def chat(
        self, chat: ChatRequest, upstream_model: str, incoming: Mapping[str, str]
    ) -> ChatExchange:
        body = openai_to_anthropic_request(chat)
        body["model"] = upstream_model
        request = UpstreamRequest(
            url=f"{self.config.base_url.rstrip('/')}/v1/messages",
            headers=self._headers(),
            body=orjson.dumps(body),
        )
        return _AnthropicExchange(self, request, chat.include_usage)

    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        translated = anthropic_error_to_openai(status, body)
        return TranslatedUpstreamError(
            provider_status=status,
            client_status=translated.status,
            body=translated.body,
            headers=retry_hint_headers(headers),
        )

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        base = self.config.base_url.rstrip("/")
        headers = self._headers()
        del headers["Content-Type"]
        # NOTE: only the first page is read, so models past the first 1000
        # are missing from /v1/models.
        return f"{base}/v1/models?limit={_MODEL_PAGE_SIZE}", headers

    def parse_model_list(self, body: object) -> list[str]:
        data = body.get("data") if isinstance(body, dict) else None
        return [
            item["id"]
            for item in (data if isinstance(data, list) else [])
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]


class _AnthropicExchange(ChatExchange):
    def __init__(
        self, provider: AnthropicProvider, request: UpstreamRequest, include_usage: bool
    ) -> None:
        self.provider = provider
        self.request = request
        self.include_usage = include_usage

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        message = load_object(data, self.provider)
        body = anthropic_to_openai_response(message)
        return TranslatedResponse(
            body=orjson.dumps(body), usage=extract_usage(message.get("usage"))
        )

    def stream_translator(
        self, headers: Mapping[str, str], encoding: tiktoken.Encoding
    ) -> StreamTranslator:
        return _AnthropicStream(self.include_usage, encoding)


class _AnthropicStream(TranslatedStream):
    def __init__(self, include_usage: bool, encoding: tiktoken.Encoding) -> None:
        super().__init__(encoding)
        self._parser = SSEParser()
        self._translator = AnthropicToOpenAIStream(include_usage=include_usage)

    def _translate(self, data: bytes) -> bytes:
        return b"".join(self._translator.feed(e) for e in self._parser.feed(data))

    def _finish(self) -> bytes:
        # Some Anthropic streams end without a blank line after message_stop.
        out = b"".join(self._translator.feed(e) for e in self._parser.flush())
        return out + self._translator.finish()

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage
