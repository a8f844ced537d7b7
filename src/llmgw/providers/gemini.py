"""Google Gemini (Developer API) upstream for OpenAI clients.

Chat requests go to ``{base_url}/models/{model}:generateContent``, or
``:streamGenerateContent?alt=sse`` for a stream, with the key in
``x-goog-api-key``. The base URL includes the API version, by default
``https://generativelanguage.googleapis.com/v1beta``. The chat translation
is in ``llmgw.protocols.gemini``.

Embeddings go to ``{base_url}/models/{model}:batchEmbedContents``, one
request per input text, and come back in OpenAI's shape: float arrays, or
base64 of little-endian float32 values for ``encoding_format: base64``,
which the openai Python SDK requests by default. Token-id inputs have no
Gemini form and are rejected.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import orjson
import tiktoken

from llmgw.errors import InvalidRequest, UpstreamHTTPError
from llmgw.protocols.chat_translate import load_json
from llmgw.protocols.gemini import (
    API_KEY_HEADER,
    GeminiStreamTranslator,
    chat_request_to_gemini,
    gemini_error_to_openai,
    gemini_response_to_chat,
    gemini_usage,
    generate_content_path,
)
from llmgw.protocols.openai import ChatRequest, EmbeddingsRequest, Usage
from llmgw.protocols.sse import SSEParser
from llmgw.providers.base import (
    ChatExchange,
    Exchange,
    StreamTranslator,
    TranslatedResponse,
    TranslatedStream,
    TranslatedUpstreamError,
    TranslatingProvider,
    UpstreamInvalidResponse,
    UpstreamRequest,
    load_object,
    retry_hint_headers,
)

# The maximum number of models one GET /models page returns, per the Gemini
# API reference (ai.google.dev/api/rest/v1beta/models/list).
_MODEL_PAGE_SIZE: Final = 1000
_ENCODING_FORMATS: Final = ("float", "base64")
_ERROR_INFO_TYPE: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_INVALID_KEY_REASON: Final = "API_KEY_INVALID"


class GeminiProvider(TranslatingProvider):
    supports_embeddings = True

    def _base(self) -> str:
        return self.config.base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key.value:
            headers[API_KEY_HEADER] = self.config.api_key.value
        return headers

    def chat(
        self, chat: ChatRequest, upstream_model: str, incoming: Mapping[str, str]
    ) -> ChatExchange:
        body = chat_request_to_gemini(chat, upstream_model=upstream_model)
        path = generate_content_path(upstream_model, stream=chat.stream)
        request = UpstreamRequest(
            url=f"{self._base()}{path}",
            headers=self._headers(),
            body=orjson.dumps(body),
        )
        return _GeminiChatExchange(self, request, upstream_model, chat.include_usage)

    def embeddings(
        self,
        request: EmbeddingsRequest,
        upstream_model: str,
        incoming: Mapping[str, str],
        input_tokens: int,
    ) -> Exchange:
        body, encoding_format = embeddings_request_to_gemini(request, upstream_model)
        name = quote(upstream_model.removeprefix("models/"), safe="")
        call = UpstreamRequest(
            url=f"{self._base()}/models/{name}:batchEmbedContents",
            headers=self._headers(),
            body=orjson.dumps(body),
        )
        return _GeminiEmbeddingsExchange(
            self, call, request.model, encoding_format, input_tokens
        )

    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        translated = gemini_error_to_openai(status, body)
        # A Retry-After the upstream sent wins over the body's RetryInfo.
        hints = {**translated.headers, **retry_hint_headers(headers)}
        return TranslatedUpstreamError(
            provider_status=status,
            client_status=translated.status,
            body=translated.body,
            headers=hints,
        )

    def rejects_credentials(self, status: int, body: bytes) -> bool:
        """Also return True for the Gemini API's response to an invalid API
        key, which is 400 INVALID_ARGUMENT with the ErrorInfo reason
        ``API_KEY_INVALID``, not 401."""
        if super().rejects_credentials(status, body):
            return True
        return status == 400 and _INVALID_KEY_REASON in _error_reasons(body)

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        headers = self._headers()
        del headers["Content-Type"]
        # NOTE: only the first page is read, so models past the first 1000
        # are missing from /v1/models.
        return f"{self._base()}/models?pageSize={_MODEL_PAGE_SIZE}", headers

    def parse_model_list(self, body: object) -> list[str]:
        models = body.get("models") if isinstance(body, dict) else None
        return [
            item["name"].removeprefix("models/")
            for item in (models if isinstance(models, list) else [])
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        ]


def _error_reasons(body: bytes) -> set[str]:
    """Return the ``reason`` of each ``google.rpc.ErrorInfo`` detail in a
    Gemini error body, an ``{"error": ...}`` object or a one-item array of it."""
    parsed = load_json(body)
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    reasons: set[str] = set()
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("@type") == _ERROR_INFO_TYPE:
            reason = detail.get("reason")
            if isinstance(reason, str):
                reasons.add(reason)
    return reasons


class _GeminiChatExchange(ChatExchange):
    def __init__(
        self,
        provider: GeminiProvider,
        request: UpstreamRequest,
        upstream_model: str,
        include_usage: bool,
    ) -> None:
        self.provider = provider
        self.request = request
        self.upstream_model = upstream_model
        self.include_usage = include_usage

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        parsed = load_object(data, self.provider)
        body = gemini_response_to_chat(parsed)
        usage = gemini_usage(parsed.get("usageMetadata"))
        return TranslatedResponse(body=orjson.dumps(body), usage=usage)

    def stream_translator(
        self, headers: Mapping[str, str], encoding: tiktoken.Encoding
    ) -> StreamTranslator:
        translator = GeminiStreamTranslator(
            model=self.upstream_model, include_usage=self.include_usage
        )
        return _GeminiStream(translator, encoding)


class _GeminiStream(TranslatedStream):
    def __init__(
        self, translator: GeminiStreamTranslator, encoding: tiktoken.Encoding
    ) -> None:
        super().__init__(encoding)
        self._parser = SSEParser()
        self._translator = translator

    def _translate(self, data: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(data):
            if event.has_data:
                out += self._translator.feed(event.data)
        return bytes(out)

    def _finish(self) -> bytes:
        out = bytearray()
        for event in self._parser.flush():
            if event.has_data:
                out += self._translator.feed(event.data)
        return bytes(out + self._translator.finish())

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage


class _GeminiEmbeddingsExchange(Exchange):
    def __init__(
        self,
        provider: GeminiProvider,
        request: UpstreamRequest,
        model: str,
        encoding_format: str,
        input_tokens: int,
    ) -> None:
        self.provider = provider
        self.request = request
        self.model = model
        self.encoding_format = encoding_format
        self.input_tokens = input_tokens

    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        parsed = load_object(data, self.provider)
        embeddings = parsed.get("embeddings")
        if not isinstance(embeddings, list):
            raise UpstreamInvalidResponse(
                f"Upstream '{self.provider.name}' sent an embeddings response"
                " without an 'embeddings' array."
            )
        usage = gemini_usage(parsed.get("usageMetadata"))
        # NOTE: batchEmbedContents reports no token counts, so the body's
        # usage is the gateway's local count of the input.
        prompt_tokens = usage.input_tokens if usage is not None else self.input_tokens
        body = {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": self._vector(item, index),
                }
                for index, item in enumerate(embeddings)
            ],
            "model": self.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        return TranslatedResponse(body=orjson.dumps(body), usage=usage)

    def _vector(self, item: object, index: int) -> list[float] | str:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in values
        ):
            raise UpstreamInvalidResponse(
                f"Upstream '{self.provider.name}' sent embedding {index} without a"
                " 'values' array of numbers."
            )
        if self.encoding_format == "base64":
            packed = struct.pack(f"<{len(values)}f", *values)
            return base64.b64encode(packed).decode("ascii")
        return [float(value) for value in values]


def embeddings_request_to_gemini(
    request: EmbeddingsRequest, model: str
) -> tuple[dict[str, Any], str]:
    """Build a ``batchEmbedContents`` body and return it with the encoding format.

    Raises ``InvalidRequest`` for token-id input, an unknown
    ``encoding_format`` and a ``dimensions`` that is not a positive integer.
    """
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not all(isinstance(text, str) for text in texts):
        raise InvalidRequest(
            "Gemini embeddings take text input: send strings in 'input', not token ids",
            param="input",
        )

    encoding_format = request.body.get("encoding_format") or "float"
    if encoding_format not in _ENCODING_FORMATS:
        raise InvalidRequest(
            f"invalid value for 'encoding_format': {encoding_format!r}. Expected"
            " 'float' or 'base64'",
            param="encoding_format",
        )

    dimensions = request.body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or dimensions < 1
    ):
        raise InvalidRequest(
            f"invalid value for 'dimensions': {dimensions!r}. Expected a positive"
            " integer",
            param="dimensions",
        )

    name = "models/" + model.removeprefix("models/")
    requests: list[dict[str, Any]] = []
    for text in texts:
        item: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            item["outputDimensionality"] = dimensions
        requests.append(item)
    return {"requests": requests}, str(encoding_format)
