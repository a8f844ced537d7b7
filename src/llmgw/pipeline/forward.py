"""Forward: send the request upstream and relay the response.

OpenAI-format providers (``OpenAIProvider``) get the client's body with the
model swapped, and their response bytes go back as they are. Streams are
relayed event by event as they arrive, and the usage-only chunk the gateway
requested upstream is hidden from clients that did not request it.

Translating providers (``TranslatingProvider``) get a body built for their
own API. Their whole responses, streams and errors are translated into
OpenAI's format, and stream chunks are written to the client as soon as the
upstream bytes that complete them arrive. Both kinds of stream share the
timeouts, the client-abort handling and the shutdown behaviour below.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import structlog
import tiktoken
from aiohttp import web

from llmgw.errors import UpstreamTimeout, UpstreamUnreachable
from llmgw.pipeline.context import RequestContext
from llmgw.protocols.openai import (
    ChatRequest,
    EmbeddingsRequest,
    StreamTally,
    error_event,
    extract_usage,
)
from llmgw.protocols.sse import SSEEvent, SSEParser
from llmgw.providers.base import (
    STREAM_ERROR_TYPE,
    ChatExchange,
    Exchange,
    Provider,
    StreamTranslator,
    TranslatingProvider,
    UpstreamInvalidResponse,
    UpstreamRequest,
)
from llmgw.providers.openai import OpenAIProvider, forwardable_response_headers
from llmgw.tokens import TokenCounter

log = structlog.get_logger("llmgw.forward")

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _gateway_headers(ctx: RequestContext) -> dict[str, str]:
    """Return the headers the gateway adds to every response it relays."""
    headers: dict[str, str] = {}
    if ctx.reservation is not None:
        headers.update(ctx.reservation.headers)
    headers["x-request-id"] = ctx.request_id
    return headers


def response_headers(
    upstream: Mapping[str, str], ctx: RequestContext
) -> dict[str, str]:
    headers = forwardable_response_headers(upstream)
    headers.update(_gateway_headers(ctx))
    return headers


async def forward_chat(
    request: web.Request,
    ctx: RequestContext,
    provider: Provider,
    chat: ChatRequest,
    upstream_model: str,
    encoding: tiktoken.Encoding,
) -> web.StreamResponse:
    """Forward a chat request, translating it when the provider needs it."""
    if isinstance(provider, OpenAIProvider):
        body = chat.body
        body["model"] = upstream_model
        if chat.stream:
            # Ask for usage even if the client did not; the relay hides the
            # extra chunk from such clients.
            options = body.get("stream_options") or {}
            body["stream_options"] = {**options, "include_usage": True}
        call = provider.call("chat/completions", body, upstream_model, request.headers)
        if chat.stream:
            return await forward_stream(
                request, ctx, provider, call, encoding, chat.include_usage
            )
        return await forward_json(request, ctx, provider, call, encoding)

    assert isinstance(provider, TranslatingProvider)
    exchange = provider.chat(_with_body_limits(chat), upstream_model, request.headers)
    if chat.stream:
        return await _forward_translated_stream(
            request, ctx, provider, exchange, encoding
        )
    return await _forward_translated_json(ctx, provider, exchange, encoding)


def _with_body_limits(chat: ChatRequest) -> ChatRequest:
    """Return ``chat`` with the output limits its body has now.

    Policy clamps ``max_tokens`` and ``max_completion_tokens`` in the body
    after parsing, and the translators read the parsed fields.
    """
    body = chat.body
    return dataclasses.replace(
        chat,
        max_tokens=body.get("max_tokens"),
        max_completion_tokens=body.get("max_completion_tokens"),
    )


async def forward_embeddings(
    request: web.Request,
    ctx: RequestContext,
    provider: Provider,
    embeddings: EmbeddingsRequest,
    upstream_model: str,
    tokens: TokenCounter,
    tokenizer: str | None,
) -> web.StreamResponse:
    """Forward an embeddings request, translating it when the provider needs it.

    ``tokens`` and ``tokenizer`` count the input locally for providers that
    report no usage.
    """
    encoding, _ = tokens.encoding_for(upstream_model, tokenizer)
    if isinstance(provider, OpenAIProvider):
        body = embeddings.body
        body["model"] = upstream_model
        call = provider.call("embeddings", body, upstream_model, request.headers)
        return await forward_json(request, ctx, provider, call, encoding)

    assert isinstance(provider, TranslatingProvider)
    if ctx.input_tokens is None:
        count = await tokens.count_embedding_input_async(
            embeddings.input, upstream_model, tokenizer
        )
        ctx.input_tokens = count.tokens
        ctx.input_estimated = count.estimated
    exchange = provider.embeddings(
        embeddings, upstream_model, request.headers, ctx.input_tokens
    )
    return await _forward_translated_json(ctx, provider, exchange, encoding)


async def _read_body(response: aiohttp.ClientResponse, provider: Provider) -> bytes:
    try:
        async with asyncio.timeout(provider.config.timeouts.total):
            return await response.read()
    except TimeoutError:
        raise UpstreamTimeout(
            f"Upstream '{provider.name}' did not finish its response within "
            f"{provider.config.timeouts.total:g} s."
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"Upstream '{provider.name}' closed the connection mid-response: "
            f"{type(exc).__name__}."
        ) from exc


def _tally_message_output(
    ctx: RequestContext, body: Any, encoding: tiktoken.Encoding
) -> None:
    """Count a non-streamed response locally when the upstream sent no usage."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return
    tally = StreamTally(encoding)
    for choice in body["choices"]:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            tally.observe({"choices": [{"delta": choice["message"]}]})
    ctx.output_tally = tally.output_tokens


async def forward_json(
    request: web.Request,
    ctx: RequestContext,
    provider: OpenAIProvider,
    call: UpstreamRequest,
    encoding: tiktoken.Encoding,
) -> web.Response:
    """Forward a non-streaming request and return the upstream body as is."""
    ctx.forwarded = True
    async with provider.open(call) as upstream:
        return await _whole_response(ctx, upstream, provider, encoding)


async def _whole_response(
    ctx: RequestContext,
    upstream: aiohttp.ClientResponse,
    provider: Provider,
    encoding: tiktoken.Encoding,
) -> web.Response:
    """Read the whole upstream body, take its usage, and pass it on as is."""
    data = await _read_body(upstream, provider)
    headers = response_headers(upstream.headers, ctx)
    status = upstream.status
    ctx.mark_first_byte()

    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        ctx.usage = extract_usage(parsed.get("usage"))
        if ctx.usage is None:
            _tally_message_output(ctx, parsed, encoding)
    ctx.status = status
    return web.Response(body=data, status=status, headers=headers)


async def _forward_translated_json(
    ctx: RequestContext,
    provider: Provider,
    exchange: Exchange,
    encoding: tiktoken.Encoding,
) -> web.Response:
    ctx.forwarded = True
    async with provider.open(exchange.request) as upstream:
        return await _translated_response(ctx, upstream, provider, exchange, encoding)


async def _translated_response(
    ctx: RequestContext,
    upstream: aiohttp.ClientResponse,
    provider: Provider,
    exchange: Exchange,
    encoding: tiktoken.Encoding,
) -> web.Response:
    """Read the whole upstream body and send its OpenAI translation.

    The upstream's own headers stay behind, because they describe its API,
    not the OpenAI API of the response the client receives.
    """
    data = await _read_body(upstream, provider)
    ctx.mark_first_byte()
    translated = exchange.response(data, upstream.headers)
    ctx.usage = translated.usage
    if ctx.usage is None:
        try:
            parsed = orjson.loads(translated.body)
        except orjson.JSONDecodeError:
            parsed = None
        _tally_message_output(ctx, parsed, encoding)
    ctx.status = upstream.status
    headers = _gateway_headers(ctx)
    headers["Content-Type"] = "application/json"
    return web.Response(body=translated.body, status=upstream.status, headers=headers)


class _ClientGone(Exception):
    """The client closed its connection while the gateway wrote to it."""


class _StreamRelay:
    """Relay one upstream stream to the client: the bytes for each read,
    the error event that ends a failed stream, and the usage at the end."""

    def __init__(self, ctx: RequestContext, client: web.StreamResponse) -> None:
        self.ctx = ctx
        self.client = client

    async def feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        """Send what remains once the upstream stream has ended."""
        raise NotImplementedError

    def error_event(self, message: str, code: str) -> bytes:
        """Return the event that ends a stream the gateway cut, or b"" when
        the client already has an ending."""
        raise NotImplementedError

    def finish(self) -> None:
        """Put the stream's usage on the context for the ledger."""
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self.client.write(data)
        except ConnectionResetError as exc:
            raise _ClientGone from exc
        self.ctx.mark_first_byte()


class _PassThroughRelay(_StreamRelay):
    """Relay an OpenAI-format SSE stream byte for byte, tallying as it goes."""

    def __init__(
        self,
        ctx: RequestContext,
        client: web.StreamResponse,
        encoding: tiktoken.Encoding,
        client_wants_usage: bool,
    ) -> None:
        super().__init__(ctx, client)
        self.parser = SSEParser()
        self.tally = StreamTally(encoding)
        self.client_wants_usage = client_wants_usage
        self._done_pending = False

    def _select(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if event.data == "[DONE]":
                self._done_pending = True
            elif event.data:
                try:
                    chunk = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    chunk = None
                if isinstance(chunk, dict):
                    info = self.tally.observe(chunk)
                    if info.error:
                        self.ctx.error_type = "upstream_stream_error"
                    if info.usage_only and not self.client_wants_usage:
                        continue
            out += event.raw
        return bytes(out)

    async def send(self, events: list[SSEEvent]) -> None:
        await self.write(self._select(events))
        if self._done_pending:
            self.ctx.stream_complete = True

    async def feed(self, chunk: bytes) -> None:
        await self.send(self.parser.feed(chunk))

    async def end(self) -> None:
        await self.send(self.parser.flush())

    def error_event(self, message: str, code: str) -> bytes:
        return error_event(message, STREAM_ERROR_TYPE, code)

    def finish(self) -> None:
        self.ctx.usage = self.tally.usage
        if self.ctx.usage is None:
            # Only a stream without upstream usage is billed by local count.
            self.ctx.output_tally = self.tally.output_tokens


class _TranslatedRelay(_StreamRelay):
    """Relay a stream through a provider's ``StreamTranslator``."""

    def __init__(
        self,
        ctx: RequestContext,
        client: web.StreamResponse,
        translator: StreamTranslator,
    ) -> None:
        super().__init__(ctx, client)
        self.translator = translator

    async def _send(self, data: bytes) -> None:
        await self.write(data)
        if self.translator.done:
            self.ctx.stream_complete = True

    async def feed(self, chunk: bytes) -> None:
        await self._send(self.translator.feed(chunk))

    async def end(self) -> None:
        await self._send(self.translator.finish())

    def error_event(self, message: str, code: str) -> bytes:
        return self.translator.fail(message, code)

    def finish(self) -> None:
        ctx, translator = self.ctx, self.translator
        if translator.upstream_failed and ctx.error_type is None:
            ctx.error_type = "upstream_stream_error"
        usage = translator.usage
        if translator.done and usage is not None:
            ctx.usage = usage
            return
        # A stream cut before its end has at most a partial usage report:
        # bill its input count, which arrives first, and the larger of the
        # reported and the locally counted output.
        ctx.usage = None
        ctx.output_tally = translator.output_tokens
        if usage is not None:
            ctx.output_tally = max(ctx.output_tally, usage.output_tokens)
            if usage.input_tokens:
                ctx.input_tokens = usage.input_tokens
                ctx.input_estimated = False


class _StreamTimeout(Exception):
    """The upstream stream went idle too long or ran past its total time."""


async def _relay(
    relay: _StreamRelay, upstream: aiohttp.ClientResponse, provider: Provider
) -> None:
    timeouts = provider.config.timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total
    while True:
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(min(timeouts.idle, max(left, 0.0))):
                chunk = await upstream.content.readany()
        except TimeoutError:
            if timeouts.idle < left:
                raise _StreamTimeout(
                    f"Upstream '{provider.name}' sent nothing for {timeouts.idle:g} s."
                ) from None
            raise _StreamTimeout(
                f"Upstream '{provider.name}' did not finish its stream within "
                f"{timeouts.total:g} s."
            ) from None
        if not chunk:
            break
        await relay.feed(chunk)
    await relay.end()


async def _relay_to_client(
    relay: _StreamRelay,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    provider: Provider,
) -> None:
    """Relay the stream, turning every failure after the first byte into an
    error event or a flag on the context; re-raises only cancellation."""
    ctx, client = relay.ctx, relay.client
    try:
        try:
            await client.prepare(request)
        except ConnectionResetError as exc:
            raise _ClientGone from exc
        await _relay(relay, upstream, provider)
    except _ClientGone:
        ctx.client_aborted = not ctx.stream_complete
    except asyncio.CancelledError:
        # The client went away, or shutdown ended its grace period. In the
        # second case the client is still there and should learn why its
        # stream stops; in the first the write fails at once.
        if not ctx.stream_complete:
            await _send_final_error(client)
        raise
    except _StreamTimeout as exc:
        ctx.error_type = UpstreamTimeout.code
        await _send_error(
            client, ctx, relay.error_event(str(exc), UpstreamTimeout.code)
        )
    except aiohttp.ClientError as exc:
        ctx.error_type = UpstreamUnreachable.code
        log.warning(
            "upstream_stream_broken", request_id=ctx.request_id, error=repr(exc)
        )
        message = f"Upstream '{provider.name}' closed the stream before it ended."
        await _send_error(
            client, ctx, relay.error_event(message, UpstreamUnreachable.code)
        )


async def _serve_stream(
    request: web.Request,
    relay: _StreamRelay,
    upstream: aiohttp.ClientResponse,
    provider: Provider,
) -> None:
    """Relay the stream to the client and settle its usage, however it ends."""
    try:
        await _relay_to_client(relay, request, upstream, provider)
    finally:
        relay.finish()
        if not upstream.content.is_eof():
            # Stop the upstream from generating tokens that no client will read.
            upstream.close()


async def _end_stream(ctx: RequestContext, client: web.StreamResponse) -> None:
    if not ctx.client_aborted:
        try:
            await client.write_eof()
        except ConnectionResetError:
            ctx.client_aborted = not ctx.stream_complete


async def forward_stream(
    request: web.Request,
    ctx: RequestContext,
    provider: OpenAIProvider,
    call: UpstreamRequest,
    encoding: tiktoken.Encoding,
    client_wants_usage: bool,
) -> web.StreamResponse:
    """Forward a streaming request, writing each event as it arrives.

    After the response has started, failures can no longer change the
    status: an upstream failure becomes an OpenAI error event, and a client
    that went away cancels the upstream request. Either way the tally so far
    is kept for the ledger.
    """
    ctx.forwarded = True
    async with provider.open(call) as upstream:
        if not upstream.content_type.startswith("text/event-stream"):
            # Some OpenAI-compatible servers ignore "stream": true and respond
            # with one JSON body; the client gets that body as it is.
            return await _whole_response(ctx, upstream, provider, encoding)
        ctx.streamed = True
        headers = response_headers(upstream.headers, ctx)
        headers.update(_SSE_HEADERS)
        client = web.StreamResponse(status=upstream.status, headers=headers)
        relay = _PassThroughRelay(ctx, client, encoding, client_wants_usage)
        await _serve_stream(request, relay, upstream, provider)
    await _end_stream(ctx, client)
    return client


async def _forward_translated_stream(
    request: web.Request,
    ctx: RequestContext,
    provider: Provider,
    exchange: ChatExchange,
    encoding: tiktoken.Encoding,
) -> web.StreamResponse:
    """Forward a streaming request to a translating provider.

    Each upstream read is translated and written at once, with the same
    timeouts, abort and shutdown handling as ``forward_stream``.
    """
    ctx.forwarded = True
    async with provider.open(exchange.request) as upstream:
        content_type = upstream.content_type
        if content_type == "application/json":
            # The upstream responded with one whole body, as some servers do
            # when they ignore "stream": true.
            return await _translated_response(
                ctx, upstream, provider, exchange, encoding
            )
        if not content_type.startswith(exchange.stream_content_type):
            raise UpstreamInvalidResponse(
                f"Upstream '{provider.name}' responded to a streaming request with"
                f" Content-Type {content_type!r}, expected"
                f" {exchange.stream_content_type!r}."
            )
        ctx.streamed = True
        headers = _gateway_headers(ctx)
        headers.update(_SSE_HEADERS)
        client = web.StreamResponse(status=upstream.status, headers=headers)
        translator = exchange.stream_translator(upstream.headers, encoding)
        relay = _TranslatedRelay(ctx, client, translator)
        await _serve_stream(request, relay, upstream, provider)
    await _end_stream(ctx, client)
    return client


async def _send_final_error(client: web.StreamResponse) -> None:
    if not client.prepared:
        return
    event = error_event(
        "The gateway stopped this stream before it finished.",
        "server_error",
        "stream_cancelled",
    )
    try:
        async with asyncio.timeout(1):
            await client.write(event)
            # End the chunked body properly, so the client reads the error
            # event instead of failing on a truncated response.
            await client.write_eof()
    except (ConnectionResetError, TimeoutError):
        pass


async def _send_error(
    client: web.StreamResponse, ctx: RequestContext, event: bytes
) -> None:
    if not event:
        return
    try:
        await client.write(event)
    except ConnectionResetError:
        ctx.client_aborted = True
