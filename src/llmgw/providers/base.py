"""The interface every upstream provider implements, and what they share.

There are two families of providers:

* ``OpenAIProvider`` and its subclasses (OpenAI, OpenAI-compatible servers,
  Azure OpenAI) speak the client's own format. The gateway sends the body
  the client sent, with the model and credentials swapped, and relays the
  response bytes without translating them.
* ``TranslatingProvider`` subclasses (Anthropic, Gemini, Bedrock, and the
  Mistral, vLLM and Ollama flavors of OpenAI-compatible servers) build the
  upstream request from the validated request, and translate the response,
  the stream and the errors back into OpenAI's format. Each request gets an
  ``Exchange`` that keeps what its translation needs between the request
  and the response.

``Provider`` contains what both share: the HTTP call with the connect and
first-byte timeouts, the reading of error responses, and the model list.

An error response that means the provider rejected the gateway's own
credentials (HTTP 401 or 403, and Gemini's 400 for an invalid API key)
becomes ``UpstreamAuthenticationFailed`` for every provider, which the
client gets as 502. Relayed as it is, it would tell the client that its
gateway key is wrong.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import aiohttp
import orjson
import tiktoken
from yarl import URL

from llmgw.config import ProviderConfig
from llmgw.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmgw.protocols.chat_translate import body_excerpt, load_json
from llmgw.protocols.openai import (
    ChatRequest,
    EmbeddingsRequest,
    StreamTally,
    Usage,
    error_event,
)
from llmgw.protocols.sse import SSEParser

# The most of an error body that is read, in bytes.
MAX_ERROR_BODY = 1024 * 1024
# Seconds a provider's model list is reused for /v1/models, how long a
# failed listing is remembered, and the most a listing may take: clients
# often call /v1/models at start-up and should not hang on one provider.
MODEL_LIST_TTL = 60.0
MODEL_LIST_FAILURE_TTL = 10.0
MODEL_LIST_TIMEOUT = 5.0

# Response headers that tell a client when to retry. The OpenAI and Anthropic
# SDKs read retry-after-ms, retry-after and x-should-retry; x-ratelimit-* are
# OpenAI's limit counters and reset times, which Azure OpenAI also sends.
RETRY_HEADERS = frozenset({"retry-after", "retry-after-ms", "x-should-retry"})
RATE_LIMIT_HEADER_PREFIX = "x-ratelimit-"

# The error type of events that report a failed or cut-off upstream stream.
STREAM_ERROR_TYPE = "upstream_error"

# Upstream error statuses that mean the provider rejected the gateway's own
# credentials: missing or invalid (401) or without permission (403).
CREDENTIALS_REJECTED_STATUSES: Final = frozenset({401, 403})


def retry_hint_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the retry hints among upstream response headers, names in lower case."""
    hints: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in RETRY_HEADERS or lower.startswith(RATE_LIMIT_HEADER_PREFIX):
            hints[lower] = value
    return hints


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP POST to an upstream, ready to send."""

    url: str | URL
    """A ``yarl.URL`` built with ``encoded=True`` is sent exactly as it is,
    where a string would have its percent-encoding normalized."""
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class TranslatedResponse:
    """A whole upstream response in OpenAI's format."""

    body: bytes
    """The OpenAI JSON body to send to the client."""
    usage: Usage | None
    """The upstream's own usage report, or None when it sent none."""


class UpstreamInvalidResponse(UpstreamError):
    """The upstream sent a success status with a body the gateway cannot read."""

    code = "upstream_invalid_response"
    retryable = False


class UpstreamAuthenticationFailed(UpstreamError):
    """The provider rejected the credentials that the gateway sends to it.

    The client gets 502, because the provider's own 401 or 403 would tell
    it that its gateway key is wrong. The ledger's error kind keeps the
    provider's status, such as ``upstream_http_401``. A retry cannot help
    before an operator fixes the credentials, so the response carries
    ``x-should-retry: false``, which the OpenAI and Anthropic Python SDKs
    obey (checked with openai 3.60 and anthropic 2.17).
    """

    code = "upstream_authentication_failed"
    retryable = False

    def __init__(self, message: str, *, provider_status: int) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})
        self.provider_status = provider_status

    @property
    def kind(self) -> str:
        return f"upstream_http_{self.provider_status}"


def upstream_error_message(body: bytes) -> str:
    """Return the message of an upstream error body, at most 500 characters.

    The message is ``error.message`` (OpenAI's shape, which the translating
    providers produce), a string ``error``, a top-level ``message``, or else
    the start of the body.
    """
    parsed = load_json(body)
    if isinstance(parsed, dict):
        error = parsed.get("error")
        for message in (
            error.get("message") if isinstance(error, dict) else error,
            parsed.get("message"),
        ):
            if isinstance(message, str) and message.strip():
                return body_excerpt(message)
    return body_excerpt(body)


class TranslatedUpstreamError(UpstreamHTTPError):
    """An upstream error status with its body translated into OpenAI's shape.

    ``upstream_status`` is the status the client gets. It equals the
    provider's own status except where OpenAI clients would not understand
    it, such as Anthropic's 529, which the client gets as 503. The ledger's
    error kind keeps the provider's status.
    """

    def __init__(
        self,
        *,
        provider_status: int,
        client_status: int,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        super().__init__(
            status=client_status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )
        self.provider_status = provider_status

    @property
    def kind(self) -> str:
        return f"upstream_http_{self.provider_status}"


class Provider(ABC):
    """An upstream the gateway sends requests to, named in the configuration.

    Subclasses set ``supports_embeddings`` and build the requests. The
    timeouts are read from ``config`` on every call, so a replaced
    ``config`` takes effect at once.
    """

    supports_embeddings: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self._session = session
        # The first-byte, idle and total limits are applied around the calls.
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, connect=config.timeouts.connect, sock_read=None
        )
        # (expiry on the monotonic clock, model ids); empty after a failure.
        self._model_list: tuple[float, list[str]] | None = None

    def secrets(self) -> tuple[str, ...]:
        """Return the credentials that must never reach a client."""
        return (self.config.api_key.value,)

    def scrub(self, data: bytes) -> bytes:
        """Remove the provider's credentials from text an upstream echoed back."""
        for secret in self.secrets():
            if secret:
                data = data.replace(secret.encode(), b"<redacted>")
        return data

    @abstractmethod
    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        """Build the client's error for an upstream error status.

        ``body`` is already scrubbed of credentials.
        """

    def rejects_credentials(self, status: int, body: bytes) -> bool:
        """Return whether an error response means that the provider rejected
        the gateway's credentials, rather than the client's request.

        This is HTTP 401 or 403. Subclasses add their provider's other
        responses for rejected credentials.
        """
        return status in CREDENTIALS_REJECTED_STATUSES

    def credentials_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamAuthenticationFailed:
        """Build the client's error for rejected provider credentials.

        The message names the provider and its status, and quotes the
        provider's message from ``body``, which is already scrubbed.
        """
        translated = self.translate_error(status, body, headers)
        message = (
            f"Provider '{self.name}' rejected the gateway's credentials with"
            f" HTTP {status}. Your gateway key was accepted, so the gateway's"
            f" operator must fix the credentials of provider '{self.name}'."
        )
        detail = upstream_error_message(translated.body)
        if detail:
            message += f" Provider message: {detail}"
        return UpstreamAuthenticationFailed(message, provider_status=status)

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        """Return the URL and headers of the upstream's model list, or None
        when the provider has no list to read."""
        return None

    def parse_model_list(self, body: object) -> list[str]:
        """Return the model ids in the upstream's model list body."""
        return []

    async def list_models(self) -> list[str]:
        """Return the model ids the upstream lists, cached for a minute.

        An empty list means the provider cannot list its models. Raises the
        gateway's upstream errors on failure.
        """
        now = time.monotonic()
        if self._model_list is not None and now < self._model_list[0]:
            return self._model_list[1]
        target = self.model_list_request()
        if target is None:
            return []
        try:
            ids = await self._fetch_model_list(*target)
        except UpstreamError:
            self._model_list = (now + MODEL_LIST_FAILURE_TTL, [])
            raise
        self._model_list = (now + MODEL_LIST_TTL, ids)
        return ids

    async def _fetch_model_list(self, url: str, headers: dict[str, str]) -> list[str]:
        limit = min(self.config.timeouts.first_byte, MODEL_LIST_TIMEOUT)
        try:
            async with asyncio.timeout(limit):
                async with self._session.get(
                    url, headers=headers, allow_redirects=False
                ) as response:
                    if 300 <= response.status < 400:
                        raise self._redirect_error(response)
                    if response.status >= 400:
                        raise await self._error_from(response)
                    body = orjson.loads(await response.read())
        except TimeoutError:
            raise UpstreamTimeout(
                f"Upstream '{self.name}' did not list its models within {limit:g} s."
            ) from None
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise UpstreamUnreachable(
                f"Upstream '{self.name}' failed to list its models: "
                f"{type(exc).__name__}."
            ) from exc
        return self.parse_model_list(body)

    @asynccontextmanager
    async def open(
        self, call: UpstreamRequest
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send ``call`` and yield the response once its headers arrived.

        Raises ``UpstreamHTTPError`` for an error status, with the body read,
        scrubbed and translated, ``UpstreamAuthenticationFailed`` when the
        provider rejected the gateway's credentials, and the gateway's timeout
        and connection errors for failures before the headers.
        """
        timeouts = self.config.timeouts
        try:
            async with asyncio.timeout(timeouts.first_byte):
                response = await self._session.post(
                    call.url,
                    data=call.body,
                    headers=call.headers,
                    timeout=self._client_timeout,
                    allow_redirects=False,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"Upstream '{self.name}' sent no response within "
                f"{timeouts.first_byte:g} s."
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"Upstream '{self.name}' is unreachable: {type(exc).__name__}."
            ) from exc

        try:
            if 300 <= response.status < 400:
                raise self._redirect_error(response)
            if response.status >= 400:
                raise await self._error_from(response)
            yield response
        except BaseException:
            # Closing, not releasing, so a half-read body never goes back to
            # the pool, and the dropped connection cancels the upstream request.
            response.close()
            raise
        response.release()

    def _redirect_error(self, response: aiohttp.ClientResponse) -> UpstreamRedirect:
        return UpstreamRedirect(
            f"Upstream '{self.name}' answered with HTTP {response.status} (a "
            "redirect), which the gateway does not follow: set the provider's "
            "base_url to the final address."
        )

    async def _error_from(self, response: aiohttp.ClientResponse) -> UpstreamError:
        try:
            async with asyncio.timeout(self.config.timeouts.idle):
                body = await response.content.read(MAX_ERROR_BODY)
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        body = self.scrub(body)
        if self.rejects_credentials(response.status, body):
            return self.credentials_error(response.status, body, response.headers)
        return self.translate_error(response.status, body, response.headers)


class StreamTranslator(ABC):
    """Turn an upstream stream's bytes into OpenAI ``chat.completion.chunk`` SSE.

    ``feed`` takes the bytes as they arrive and returns the bytes to send,
    possibly none. ``finish`` runs once the upstream stream has ended, and
    ``fail`` when the gateway itself cut it (a timeout, a broken connection).
    After either, the translator returns nothing more.
    """

    @abstractmethod
    def feed(self, data: bytes) -> bytes: ...

    @abstractmethod
    def finish(self) -> bytes:
        """End the stream after the upstream's last byte, returning what is
        left: ``[DONE]`` after a complete stream. Translators of formats other
        than OpenAI's return an error event for a stream that was cut off."""

    @abstractmethod
    def fail(self, message: str, code: str) -> bytes:
        """Return an error event, unless the client already has the whole
        stream or an error."""

    @property
    @abstractmethod
    def usage(self) -> Usage | None:
        """The upstream's usage so far, which is partial until ``done``."""

    @property
    @abstractmethod
    def output_tokens(self) -> int:
        """The output tokens counted locally in what was sent to the client."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True once ``data: [DONE]`` was returned."""

    @property
    @abstractmethod
    def upstream_failed(self) -> bool:
        """True once an error event that the upstream caused was returned: an
        upstream error event, an unreadable event or a cut-off stream."""


class _ChunkTally:
    """Read the OpenAI SSE bytes a translator returned, for the local count."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._parser = SSEParser()
        self.tally = StreamTally(encoding)
        self.done = False
        self.error = False

    def observe(self, data: bytes) -> None:
        if not data:
            return
        for event in self._parser.feed(data):
            if event.data == "[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(event.data) if event.data else None
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict) and self.tally.observe(chunk).error:
                self.error = True


class TranslatedStream(StreamTranslator):
    """A ``StreamTranslator`` over a protocol translator that returns OpenAI
    SSE bytes. It reads its own output back to count the output tokens
    locally and to see ``[DONE]`` and error events.

    Subclasses implement ``_translate`` and ``_finish`` with the upstream's
    framing (SSE or the AWS event stream) and protocol translator.
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._output = _ChunkTally(encoding)
        self._ended = False

    @abstractmethod
    def _translate(self, data: bytes) -> bytes: ...

    @abstractmethod
    def _finish(self) -> bytes: ...

    def feed(self, data: bytes) -> bytes:
        if self._ended:
            return b""
        return self._observed(self._translate(data))

    def finish(self) -> bytes:
        if self._ended:
            return b""
        out = self._observed(self._finish())
        self._ended = True
        return out

    def fail(self, message: str, code: str) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        return error_event(message, STREAM_ERROR_TYPE, code)

    def _observed(self, out: bytes) -> bytes:
        self._output.observe(out)
        if self._output.done or self._output.error:
            self._ended = True
        return out

    @property
    def output_tokens(self) -> int:
        return self._output.tally.output_tokens

    @property
    def done(self) -> bool:
        return self._output.done

    @property
    def upstream_failed(self) -> bool:
        return self._output.error


class Exchange(ABC):
    """One request to a translating provider: what to send, and how to read
    the whole response."""

    request: UpstreamRequest

    @abstractmethod
    def response(self, data: bytes, headers: Mapping[str, str]) -> TranslatedResponse:
        """Translate a whole success response body.

        Raises ``UpstreamInvalidResponse`` for a body that cannot be read.
        """


class ChatExchange(Exchange):
    """One chat request to a translating provider, streamed or not."""

    stream_content_type: ClassVar[str] = "text/event-stream"
    """The Content-Type of the upstream's stream. A JSON body instead is read
    with ``response``, as some servers ignore ``stream: true``."""

    @abstractmethod
    def stream_translator(
        self, headers: Mapping[str, str], encoding: tiktoken.Encoding
    ) -> StreamTranslator:
        """Return the translator of this request's stream, given the upstream's
        response headers."""


class TranslatingProvider(Provider):
    """A provider whose requests and responses the gateway translates."""

    @abstractmethod
    def chat(
        self, chat: ChatRequest, upstream_model: str, incoming: Mapping[str, str]
    ) -> ChatExchange:
        """Build the upstream request for a chat request.

        ``incoming`` are the client's request headers. Raises
        ``InvalidRequest`` for what the provider cannot do.
        """

    def embeddings(
        self,
        request: EmbeddingsRequest,
        upstream_model: str,
        incoming: Mapping[str, str],
        input_tokens: int,
    ) -> Exchange:
        """Build the upstream request for an embeddings request.

        ``input_tokens`` is the local count of the input, for providers that
        report no usage. Raises ``InvalidRequest`` unless
        ``supports_embeddings`` is set and the subclass overrides this.
        """
        raise unsupported_embeddings(request.model, self)


def unsupported_embeddings(model: str, provider: Provider) -> InvalidRequest:
    return InvalidRequest(
        f"The model `{model}`'s provider '{provider.name}' (kind {provider.kind})"
        " does not support embeddings: use a model served by an openai,"
        " openai-compatible, azure-openai, gemini, mistral, vllm or ollama"
        " provider.",
        param="model",
    )


def load_object(data: bytes, provider: Provider) -> dict[str, Any]:
    """Parse a success body that must be a JSON object.

    Raises ``UpstreamInvalidResponse`` naming the provider otherwise.
    """
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        excerpt = data[:200].decode("utf-8", errors="replace")
        raise UpstreamInvalidResponse(
            f"Upstream '{provider.name}' sent a response body that is not a JSON"
            f" object: {excerpt!r}"
        )
    return parsed
