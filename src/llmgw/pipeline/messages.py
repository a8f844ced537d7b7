"""Forward an Anthropic Messages request and send the response in Messages format.

The provider decides the way upstream:

* An ``anthropic`` provider gets the Messages body itself, with the model
  and the credentials swapped. The client's ``anthropic-version`` (else the
  provider's ``api_version``, else 2023-06-01) and ``anthropic-beta``
  headers go along. The response goes back as it is, and a stream event by
  event.
* An ``OpenAIProvider`` gets the request translated to Chat Completions, and
  its response or stream is translated back into Messages format.
* Any other ``TranslatingProvider`` gets that Chat Completions request
  through its own translation. Its output, already in OpenAI's format, is
  then translated into Messages format like an OpenAI upstream's.

``plan_messages`` builds the upstream request before admission, so a request
that cannot be translated is rejected with 400 before it uses any limit.
``llmgw.pipeline.messages_stream`` relays the streams.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
import orjson
import tiktoken
from aiohttp import web
from multidict import CIMultiDict

from llmgw.errors import (
    GatewayError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.messages_stream import (
    ChatRelay,
    NativeRelay,
    end_stream,
    serve_stream,
)
from llmgw.pipeline.policy import Deployment
from llmgw.protocols import anthropic
from llmgw.protocols.anthropic import (
    MessagesRequest,
    extract_usage,
    gateway_error_body,
)
from llmgw.protocols.openai import (
    StreamTally,
    Usage,
    parse_chat_request,
)
from llmgw.protocols.sse import SSEEvent
from llmgw.protocols.translate_anthropic import (
    openai_error_to_anthropic,
    openai_to_anthropic_response,
    openai_usage,
)
from llmgw.protocols.translate_anthropic_request import anthropic_to_openai_request
from llmgw.protocols.translate_anthropic_stream import (
    OpenAIToAnthropicStream,
)
from llmgw.providers.anthropic import DEFAULT_VERSION
from llmgw.providers.base import (
    ChatExchange,
    Provider,
    StreamTranslator,
    TranslatedUpstreamError,
    TranslatingProvider,
    UpstreamInvalidResponse,
    UpstreamRequest,
    load_object,
)
from llmgw.providers.openai import (
    OpenAIProvider,
    forwardable_request_headers,
    forwardable_response_headers,
)
from llmgw.tokens import TokenCounter, count_text

MESSAGES_PATH: Final = "/v1/messages"
COUNT_TOKENS_PATH: Final = "/v1/messages/count_tokens"

_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# Anthropic response headers that describe the organisation's account, or
# that the gateway replaces with its own (request-id).
_HIDDEN_RESPONSE_HEADERS: Final = frozenset({"request-id", "anthropic-organization-id"})
_HIDDEN_RESPONSE_PREFIXES: Final = ("anthropic-ratelimit-", "anthropic-priority-")


def is_messages_path(path: str) -> bool:
    """Return whether ``path`` is an Anthropic Messages route, known or not."""
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


class AnthropicUpstreamError(UpstreamHTTPError):
    """An upstream error status whose body is already in Anthropic's shape."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        super().__init__(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )
        self.anthropic_body = body


def anthropic_error(error: GatewayError) -> tuple[int, dict[str, Any]]:
    """Return the status and the Anthropic error body for ``error``.

    An upstream error body in OpenAI's shape is translated, and one that is
    not JSON becomes the message. The status stays the upstream's.
    """
    if isinstance(error, AnthropicUpstreamError):
        return error.upstream_status, error.anthropic_body
    if isinstance(error, UpstreamHTTPError):
        translated = openai_error_to_anthropic(error.upstream_status, error.body)
        return translated.status, translated.body
    return error.http_status, gateway_error_body(error)


def _native_error(error: UpstreamHTTPError) -> AnthropicUpstreamError:
    """Rebuild an Anthropic provider's error in Anthropic's shape.

    ``Provider.open`` hands over the error already translated into OpenAI's
    shape for Chat Completions clients, with Anthropic's own status in
    ``provider_status``. That status decides the Anthropic error type, as in
    Anthropic's API, and the message is kept.
    """
    status = error.upstream_status
    if isinstance(error, TranslatedUpstreamError):
        status = error.provider_status
    translated = openai_error_to_anthropic(status, error.body)
    return AnthropicUpstreamError(status, translated.body, dict(error.headers))


def gateway_headers(ctx: RequestContext) -> dict[str, str]:
    """Return the headers the gateway adds to every Messages response.

    ``request-id`` is where the Anthropic SDK reads the request id from.
    """
    headers: dict[str, str] = {}
    if ctx.reservation is not None:
        headers.update(ctx.reservation.headers)
    headers["x-request-id"] = ctx.request_id
    headers["request-id"] = ctx.request_id
    return headers


def _visible_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    """Return the Anthropic upstream's response headers that a client may see."""
    headers: CIMultiDict[str] = CIMultiDict(forwardable_response_headers(upstream))
    for name in list(headers.keys()):
        lower = name.lower()
        if lower in _HIDDEN_RESPONSE_HEADERS or lower.startswith(
            _HIDDEN_RESPONSE_PREFIXES
        ):
            headers.popall(name, None)
    return headers


def _native_response_headers(
    upstream: Mapping[str, str], ctx: RequestContext
) -> CIMultiDict[str]:
    headers = _visible_headers(upstream)
    headers.update(gateway_headers(ctx))
    return headers


@asynccontextmanager
async def _open_native(
    provider: Provider, call: UpstreamRequest
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Open ``call`` like ``Provider.open``, with errors in Anthropic's shape."""
    try:
        async with provider.open(call) as upstream:
            yield upstream
    except UpstreamHTTPError as exc:
        raise _native_error(exc) from None


def native_request(
    provider: Provider, path: str, body: dict[str, Any], incoming: Mapping[str, str]
) -> UpstreamRequest:
    """Build a request to an Anthropic provider's ``path``, such as
    ``/v1/messages``, with the provider's key and the client's other headers."""
    headers: CIMultiDict[str] = CIMultiDict(forwardable_request_headers(incoming))
    headers["Content-Type"] = "application/json"
    version = incoming.get("anthropic-version")
    headers["anthropic-version"] = (
        version or provider.config.api_version or DEFAULT_VERSION
    )
    api_key = provider.config.api_key.value
    if api_key:
        headers["x-api-key"] = api_key
    return UpstreamRequest(
        url=provider.config.base_url.rstrip("/") + path,
        headers={name: value for name, value in headers.items()},
        body=orjson.dumps(body),
    )


def _without_anthropic_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """Return the client's headers without ``anthropic-*``, which only an
    Anthropic upstream understands."""
    return {
        name: value
        for name, value in incoming.items()
        if not name.lower().startswith("anthropic-")
    }


async def _read_body(response: aiohttp.ClientResponse, provider: Provider) -> bytes:
    timeouts = provider.config.timeouts
    try:
        async with asyncio.timeout(timeouts.total):
            return await response.read()
    except TimeoutError:
        raise UpstreamTimeout(
            f"Upstream '{provider.name}' did not finish its response within "
            f"{timeouts.total:g} s."
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"Upstream '{provider.name}' closed the connection mid-response: "
            f"{type(exc).__name__}."
        ) from exc


async def count_tokens_native(
    request: web.Request, provider: Provider, body: dict[str, Any]
) -> web.Response:
    """Send a count_tokens body, whose model is already the upstream's, to an
    Anthropic provider and return its response."""
    call = native_request(provider, COUNT_TOKENS_PATH, body, request.headers)
    async with _open_native(provider, call) as upstream:
        data = await _read_body(upstream, provider)
        headers = _visible_headers(upstream.headers)
        return web.Response(body=data, status=upstream.status, headers=headers)


class MessagesForward(ABC):
    """The upstream request for one Messages request, and how its response
    reaches the client."""

    def __init__(self, provider: Provider, messages: MessagesRequest) -> None:
        self.provider = provider
        self.messages = messages

    @abstractmethod
    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        tokens: TokenCounter,
        deployment: Deployment,
    ) -> web.StreamResponse:
        """Send the request and return the client's response.

        ``tokens`` and ``deployment`` count the prompt locally where the
        upstream reports no usage.
        """


def plan_messages(
    messages: MessagesRequest,
    provider: Provider,
    upstream_model: str,
    incoming: Mapping[str, str],
) -> MessagesForward:
    """Build the upstream request for ``messages``, whose ``max_tokens`` and
    body already have the output cap applied.

    Raises ``InvalidRequest`` for content the provider's format cannot carry.
    """
    if provider.kind == "anthropic":
        body = dict(messages.body)
        body["model"] = upstream_model
        call = native_request(provider, MESSAGES_PATH, body, incoming)
        return _NativeForward(provider, messages, call)

    # OpenAI's reasoning models reject max_tokens, as in apply_output_cap.
    if provider.kind == "openai":
        translation = anthropic_to_openai_request(
            messages, max_tokens_field="max_completion_tokens"
        )
    else:
        translation = anthropic_to_openai_request(messages)
    chat_body = translation.body
    chat_body["model"] = upstream_model
    chat = parse_chat_request(chat_body)
    headers = _without_anthropic_headers(incoming)
    if isinstance(provider, OpenAIProvider):
        call = provider.call("chat/completions", chat_body, upstream_model, headers)
        return _ChatForward(provider, messages, translation.tool_names, call=call)
    if isinstance(provider, TranslatingProvider):
        exchange = provider.chat(chat, upstream_model, headers)
        return _ChatForward(
            provider, messages, translation.tool_names, exchange=exchange
        )
    raise TypeError(f"provider {provider.name!r} has no chat path: {type(provider)}")


# The Anthropic upstream.


class _NativeForward(MessagesForward):
    def __init__(
        self, provider: Provider, messages: MessagesRequest, call: UpstreamRequest
    ) -> None:
        super().__init__(provider, messages)
        self.call = call

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        tokens: TokenCounter,
        deployment: Deployment,
    ) -> web.StreamResponse:
        provider = self.provider
        encoding, _ = tokens.encoding_for(
            deployment.upstream_model, deployment.route.tokenizer
        )
        ctx.forwarded = True
        async with _open_native(provider, self.call) as upstream:
            if not self.messages.stream or not upstream.content_type.startswith(
                "text/event-stream"
            ):
                return await self._whole(ctx, upstream, encoding)
            ctx.streamed = True
            headers = _native_response_headers(upstream.headers, ctx)
            headers.update(_SSE_HEADERS)
            client = web.StreamResponse(status=upstream.status, headers=headers)
            relay = NativeRelay(encoding)
            await serve_stream(request, ctx, provider, upstream, client, relay)
        await end_stream(ctx, client)
        return client

    async def _whole(
        self,
        ctx: RequestContext,
        upstream: aiohttp.ClientResponse,
        encoding: tiktoken.Encoding,
    ) -> web.Response:
        """Read the whole response, take its usage and pass it on as it is."""
        data = await _read_body(upstream, self.provider)
        ctx.mark_first_byte()
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            ctx.usage = extract_usage(parsed.get("usage"))
            if ctx.usage is None:
                ctx.output_tally = _message_output_tokens(parsed, encoding)
        ctx.status = upstream.status
        headers = _native_response_headers(upstream.headers, ctx)
        return web.Response(body=data, status=upstream.status, headers=headers)


def _message_output_tokens(message: dict[str, Any], encoding: tiktoken.Encoding) -> int:
    """Count the output of a Messages response locally."""
    tokens = 0
    content = message.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        for key in ("text", "thinking", "name"):
            if isinstance(block.get(key), str):
                tokens += count_text(block[key], encoding)
        if "input" in block:
            tokens += count_text(orjson.dumps(block["input"]).decode(), encoding)
    return tokens


# The Chat Completions upstreams.


class _ChatForward(MessagesForward):
    """A Messages request sent as Chat Completions, to an OpenAI-format
    upstream (``call``) or through a translating provider (``exchange``)."""

    def __init__(
        self,
        provider: Provider,
        messages: MessagesRequest,
        tool_names: dict[str, str],
        *,
        call: UpstreamRequest | None = None,
        exchange: ChatExchange | None = None,
    ) -> None:
        super().__init__(provider, messages)
        self.tool_names = tool_names
        self.call = call
        self.exchange = exchange

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        tokens: TokenCounter,
        deployment: Deployment,
    ) -> web.StreamResponse:
        encoding, _ = tokens.encoding_for(
            deployment.upstream_model, deployment.route.tokenizer
        )
        call = self.exchange.request if self.exchange is not None else self.call
        assert call is not None
        ctx.forwarded = True
        async with self.provider.open(call) as upstream:
            content_type = upstream.content_type
            if not self.messages.stream or content_type == "application/json":
                completion = await self._completion(upstream)
                ctx.mark_first_byte()
                ctx.status = upstream.status
                if self.messages.stream:
                    # The upstream ignored "stream": true, but an Anthropic
                    # client can read only a stream now.
                    return await self._stream_completion(
                        request, ctx, completion, tokens, deployment, encoding
                    )
                return await self._json(ctx, completion, tokens, deployment, encoding)

            expected = "text/event-stream"
            if self.exchange is not None:
                expected = self.exchange.stream_content_type
            if not content_type.startswith(expected):
                raise UpstreamInvalidResponse(
                    f"Upstream '{self.provider.name}' responded to a streaming request"
                    f" with Content-Type {content_type!r}, expected {expected!r}."
                )
            relay = await self._relay(ctx, upstream, tokens, deployment, encoding)
            client = self._stream_response(ctx, upstream.status)
            await serve_stream(request, ctx, self.provider, upstream, client, relay)
        await end_stream(ctx, client)
        return client

    async def _completion(
        self, upstream: aiohttp.ClientResponse
    ) -> tuple[dict[str, Any], Usage | None]:
        """Read a whole ``chat.completion`` body and the upstream's usage."""
        data = await _read_body(upstream, self.provider)
        if self.exchange is not None:
            translated = self.exchange.response(data, upstream.headers)
            body = load_object(translated.body, self.provider)
            return body, translated.usage
        body = load_object(data, self.provider)
        return body, openai_usage(body.get("usage"))

    async def _json(
        self,
        ctx: RequestContext,
        completion: tuple[dict[str, Any], Usage | None],
        tokens: TokenCounter,
        deployment: Deployment,
        encoding: tiktoken.Encoding,
    ) -> web.Response:
        body, usage = completion
        message = openai_to_anthropic_response(body, tool_names=self.tool_names)
        ctx.usage = usage
        if usage is None:
            # Without upstream usage the client gets the local counts, which
            # the ledger records as estimates.
            ctx.output_tally = _completion_output_tokens(body, encoding)
            input_tokens = await _count_input(ctx, tokens, deployment, self.messages)
            message["usage"] = anthropic.usage_body(
                Usage(input_tokens=input_tokens, output_tokens=ctx.output_tally)
            )
        headers = gateway_headers(ctx)
        headers["Content-Type"] = "application/json"
        return web.Response(body=orjson.dumps(message), status=200, headers=headers)

    async def _stream_completion(
        self,
        request: web.Request,
        ctx: RequestContext,
        completion: tuple[dict[str, Any], Usage | None],
        tokens: TokenCounter,
        deployment: Deployment,
        encoding: tiktoken.Encoding,
    ) -> web.StreamResponse:
        """Send a whole ``chat.completion`` as a Messages stream."""
        body, usage = completion
        ctx.streamed = True
        chunk = _completion_chunk(body, usage)
        translator = await self._translator(ctx, tokens, deployment, encoding)
        relay = ChatRelay(translator, None)
        out = relay.feed_events([_data_event(orjson.dumps(chunk).decode())])
        out += relay.feed_events([_data_event("[DONE]")])
        client = self._stream_response(ctx, 200)
        try:
            await client.prepare(request)
            await client.write(out)
        except ConnectionResetError:
            ctx.client_aborted = True
        relay.settle(ctx)
        ctx.stream_complete = relay.complete
        await end_stream(ctx, client)
        return client

    async def _relay(
        self,
        ctx: RequestContext,
        upstream: aiohttp.ClientResponse,
        tokens: TokenCounter,
        deployment: Deployment,
        encoding: tiktoken.Encoding,
    ) -> ChatRelay:
        ctx.streamed = True
        translator = await self._translator(ctx, tokens, deployment, encoding)
        upstream_translator: StreamTranslator | None = None
        if self.exchange is not None:
            upstream_translator = self.exchange.stream_translator(
                upstream.headers, encoding
            )
        return ChatRelay(translator, upstream_translator)

    async def _translator(
        self,
        ctx: RequestContext,
        tokens: TokenCounter,
        deployment: Deployment,
        encoding: tiktoken.Encoding,
    ) -> OpenAIToAnthropicStream:
        # message_start carries the prompt's token count before any upstream
        # usage can arrive, so the prompt is counted locally first.
        input_tokens = await _count_input(ctx, tokens, deployment, self.messages)
        return OpenAIToAnthropicStream(
            input_tokens=input_tokens,
            tool_names=self.tool_names,
            count_output=lambda text: count_text(text, encoding),
        )

    @staticmethod
    def _stream_response(ctx: RequestContext, status: int) -> web.StreamResponse:
        headers = gateway_headers(ctx)
        headers.update(_SSE_HEADERS)
        return web.StreamResponse(status=status, headers=headers)


async def _count_input(
    ctx: RequestContext,
    tokens: TokenCounter,
    deployment: Deployment,
    messages: MessagesRequest,
) -> int:
    """Return the local prompt count, counting ``ctx.prompt`` if no phase has."""
    if ctx.input_tokens is None:
        count = await tokens.count_chat_async(
            ctx.prompt,
            deployment.upstream_model,
            deployment.route.tokenizer,
            tools=messages.tools or None,
        )
        ctx.input_tokens = count.tokens
        ctx.input_estimated = count.estimated
    return ctx.input_tokens


def _completion_output_tokens(body: dict[str, Any], encoding: tiktoken.Encoding) -> int:
    """Count the output of a ``chat.completion`` body locally."""
    tally = StreamTally(encoding)
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            tally.observe({"choices": [{"delta": choice["message"]}]})
    return tally.output_tokens


def _completion_chunk(body: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """Return a ``chat.completion`` as the one chunk a stream of it would be."""
    choices = body.get("choices")
    choice: dict[str, Any] = {}
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
    message = choice.get("message")
    chunk: dict[str, Any] = {
        "id": body.get("id"),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "delta": message if isinstance(message, dict) else {},
                "finish_reason": choice.get("finish_reason") or "stop",
            }
        ],
    }
    if usage is not None:
        chunk["usage"] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "prompt_tokens_details": {
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            },
        }
    return chunk


def _data_event(data: str) -> SSEEvent:
    return SSEEvent(event=None, data=data, id=None, raw=b"")
