"""Forward: send the request upstream and relay the response.

Streams are relayed event by event as they arrive. The usage-only chunk the
gateway requested upstream is hidden from clients that did not request it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
import structlog
import tiktoken
from aiohttp import web

from llmgw.errors import UpstreamTimeout, UpstreamUnreachable
from llmgw.pipeline.context import RequestContext
from llmgw.protocols.openai import StreamTally, error_event, extract_usage
from llmgw.protocols.sse import SSEEvent, SSEParser
from llmgw.providers.openai import OpenAIProvider, forwardable_response_headers

log = structlog.get_logger("llmgw.forward")

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def response_headers(
    upstream: Mapping[str, str], ctx: RequestContext
) -> dict[str, str]:
    headers = forwardable_response_headers(upstream)
    if ctx.reservation is not None:
        headers.update(ctx.reservation.headers)
    headers["x-request-id"] = ctx.request_id
    return headers


async def _read_body(
    response: aiohttp.ClientResponse, provider: OpenAIProvider
) -> bytes:
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
    path: str,
    body: bytes,
    encoding: tiktoken.Encoding,
) -> web.Response:
    """Forward a non-streaming request and return the upstream body as is."""
    ctx.forwarded = True
    async with provider.post(path, body, request.headers) as upstream:
        return await _whole_response(ctx, upstream, provider, encoding)


async def _whole_response(
    ctx: RequestContext,
    upstream: aiohttp.ClientResponse,
    provider: OpenAIProvider,
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


class _ClientGone(Exception):
    """The client closed its connection while the gateway wrote to it."""


class _StreamRelay:
    """Relay one upstream SSE stream to the client, tallying as it goes."""

    def __init__(
        self,
        ctx: RequestContext,
        client: web.StreamResponse,
        encoding: tiktoken.Encoding,
        client_wants_usage: bool,
    ) -> None:
        self.ctx = ctx
        self.client = client
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
        data = self._select(events)
        if not data:
            return
        try:
            await self.client.write(data)
        except ConnectionResetError as exc:
            raise _ClientGone from exc
        self.ctx.mark_first_byte()
        if self._done_pending:
            self.ctx.stream_complete = True

    def finish(self) -> None:
        self.ctx.usage = self.tally.usage
        if self.ctx.usage is None:
            # Only a stream without upstream usage is billed by local count.
            self.ctx.output_tally = self.tally.output_tokens


class _StreamTimeout(Exception):
    """The upstream stream went idle too long or ran past its total time."""


async def _relay(
    relay: _StreamRelay, upstream: aiohttp.ClientResponse, provider: OpenAIProvider
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
        await relay.send(relay.parser.feed(chunk))
    await relay.send(relay.parser.flush())


async def _relay_to_client(
    relay: _StreamRelay,
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    provider: OpenAIProvider,
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
        await _send_error(client, ctx, str(exc), UpstreamTimeout.code)
    except aiohttp.ClientError as exc:
        ctx.error_type = UpstreamUnreachable.code
        log.warning(
            "upstream_stream_broken", request_id=ctx.request_id, error=repr(exc)
        )
        message = f"Upstream '{provider.name}' closed the stream before it ended."
        await _send_error(client, ctx, message, UpstreamUnreachable.code)


async def forward_stream(
    request: web.Request,
    ctx: RequestContext,
    provider: OpenAIProvider,
    path: str,
    body: bytes,
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
    async with provider.post(path, body, request.headers) as upstream:
        if not upstream.content_type.startswith("text/event-stream"):
            # Some OpenAI-compatible servers ignore "stream": true and respond
            # with one JSON body; the client gets that body as it is.
            return await _whole_response(ctx, upstream, provider, encoding)
        ctx.streamed = True
        headers = response_headers(upstream.headers, ctx)
        headers.update(_SSE_HEADERS)
        client = web.StreamResponse(status=upstream.status, headers=headers)
        relay = _StreamRelay(ctx, client, encoding, client_wants_usage)
        try:
            await _relay_to_client(relay, request, upstream, provider)
        finally:
            relay.finish()
            if not upstream.content.is_eof():
                # Stop the upstream from generating tokens that no client will read.
                upstream.close()
    if not ctx.client_aborted:
        try:
            await client.write_eof()
        except ConnectionResetError:
            ctx.client_aborted = not ctx.stream_complete
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
    client: web.StreamResponse, ctx: RequestContext, message: str, code: str
) -> None:
    try:
        await client.write(error_event(message, "upstream_error", code))
    except ConnectionResetError:
        ctx.client_aborted = True
