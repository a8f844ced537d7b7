"""Relay an upstream stream to an Anthropic Messages client.

``NativeRelay`` passes an Anthropic stream on event by event, and
``ChatRelay`` translates an OpenAI-format one. ``serve_stream`` runs either
with the timeouts, client-abort and shutdown handling of
``llmgw.pipeline.forward``, ending every failure after the response started
with an Anthropic ``error`` event.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Final

import aiohttp
import orjson
import structlog
import tiktoken
from aiohttp import web

from llmgw.errors import UpstreamTimeout, UpstreamUnreachable
from llmgw.pipeline.context import RequestContext
from llmgw.protocols import anthropic
from llmgw.protocols.anthropic import UsageAccumulator
from llmgw.protocols.openai import Usage
from llmgw.protocols.sse import SSEEvent, SSEParser
from llmgw.protocols.translate_anthropic_stream import (
    ANTHROPIC_PING,
    OpenAIToAnthropicStream,
)
from llmgw.providers.base import Provider, StreamTranslator
from llmgw.tokens import count_text

log = structlog.get_logger("llmgw.messages")

# The frame that starts an Anthropic stream, as format_event writes it.
_MESSAGE_START: Final = b"event: message_start\n"
_STREAM_ERROR: Final = "upstream_stream_error"


class Relay(ABC):
    """Turn one upstream stream into the client's Messages stream."""

    @abstractmethod
    def feed(self, data: bytes) -> bytes:
        """Return the client's bytes for the upstream bytes ``data``."""

    @abstractmethod
    def end(self) -> bytes:
        """Return what remains after the upstream's last byte, with an
        ``error`` event if the stream stopped before ``message_stop``."""

    @abstractmethod
    def fail(self, message: str, error_type: str) -> bytes:
        """Return an ``error`` event for a failure of the gateway's own, or
        b"" when the client already has the whole stream or an error."""

    @property
    @abstractmethod
    def complete(self) -> bool:
        """True once the client has been sent ``message_stop``."""

    @abstractmethod
    def settle(self, ctx: RequestContext) -> None:
        """Put the stream's usage and any upstream failure on ``ctx``."""


class NativeRelay(Relay):
    """Relay an Anthropic stream event by event, reading its usage.

    The text of the deltas is kept and counted only if the stream ends
    before its usage is final.
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._parser = SSEParser()
        self._usage = UsageAccumulator()
        self._encoding = encoding
        self._output: list[str] = []
        self._complete = False
        self._failed = False
        self._upstream_failed = False

    @property
    def complete(self) -> bool:
        return self._complete

    def feed(self, data: bytes) -> bytes:
        return self._relay(self._parser.feed(data))

    def end(self) -> bytes:
        out = self._relay(self._parser.flush())
        if self._complete or self._failed:
            return out
        self._upstream_failed = True
        return out + self.fail(
            "The upstream stream ended before message_stop.", "api_error"
        )

    def fail(self, message: str, error_type: str) -> bytes:
        if self._complete or self._failed:
            return b""
        self._failed = True
        return anthropic.error_event(message, error_type)

    def _relay(self, events: list[SSEEvent]) -> bytes:
        out = bytearray()
        for event in events:
            if self._complete or self._failed:
                break
            out += event.raw
            if event.has_data:
                self._observe(event)
        return bytes(out)

    def _observe(self, event: SSEEvent) -> None:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        event_type = data.get("type", event.event)
        if event_type == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "thinking", "partial_json"):
                    piece = delta.get(key)
                    if isinstance(piece, str) and piece:
                        self._output.append(piece)
        elif event_type == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self._usage.update(message.get("usage"))
        elif event_type == "message_delta":
            self._usage.update(data.get("usage"))
        elif event_type == "message_stop":
            self._complete = True
        elif event_type == "error":
            self._failed = True
            self._upstream_failed = True

    def settle(self, ctx: RequestContext) -> None:
        if self._upstream_failed and ctx.error_type is None:
            ctx.error_type = _STREAM_ERROR
        usage = self._usage.usage
        if self._complete and usage is not None:
            ctx.usage = usage
            return
        local = sum(count_text(piece, self._encoding) for piece in self._output)
        _settle_partial(ctx, usage, local)


class ChatRelay(Relay):
    """Translate an OpenAI-format stream into a Messages stream.

    ``upstream`` first turns a translating provider's stream into OpenAI
    chunks. A ``ping`` follows ``message_start``, as in Anthropic's streams.
    """

    def __init__(
        self, translator: OpenAIToAnthropicStream, upstream: StreamTranslator | None
    ) -> None:
        self._translator = translator
        self._upstream = upstream
        self._parser = SSEParser()
        self._pinged = False
        self._upstream_failed = False

    @property
    def complete(self) -> bool:
        return self._translator.completed

    def feed(self, data: bytes) -> bytes:
        if self._upstream is not None:
            data = self._upstream.feed(data)
        return self.feed_events(self._parser.feed(data))

    def feed_events(self, events: list[SSEEvent]) -> bytes:
        """Translate OpenAI-format events that are already parsed."""
        out = b"".join(self._translator.feed(event) for event in events)
        if self._translator.error is not None:
            self._upstream_failed = True
        return self._with_ping(out)

    def end(self) -> bytes:
        data = self._upstream.finish() if self._upstream is not None else b""
        out = self.feed_events(self._parser.feed(data) + self._parser.flush())
        out += self._with_ping(self._translator.finish())
        if not self._translator.completed:
            # Cut off, or ended by an error event or an unreadable chunk.
            self._upstream_failed = True
        return out

    def fail(self, message: str, error_type: str) -> bytes:
        return self._translator.fail(message, error_type)

    def _with_ping(self, out: bytes) -> bytes:
        if self._pinged:
            return out
        start = out.find(_MESSAGE_START)
        if start < 0:
            return out
        self._pinged = True
        end = out.index(b"\n\n", start) + 2
        return out[:end] + ANTHROPIC_PING + out[end:]

    def settle(self, ctx: RequestContext) -> None:
        if self._upstream_failed and ctx.error_type is None:
            ctx.error_type = _STREAM_ERROR
        usage = self._translator.usage
        if self._translator.completed and usage is not None:
            ctx.usage = usage
            return
        _settle_partial(ctx, usage, self._translator.output_tokens)


def _settle_partial(ctx: RequestContext, usage: Usage | None, local: int) -> None:
    """Bill a stream without final usage: its local output count, or the
    upstream's partial report where that is larger, and the upstream's input
    count, which arrives first, where there is one."""
    ctx.usage = None
    ctx.output_tally = local
    if usage is not None:
        ctx.output_tally = max(local, usage.output_tokens)
        if usage.input_tokens:
            ctx.input_tokens = usage.input_tokens
            ctx.input_estimated = False


class _ClientGone(Exception):
    """The client closed its connection while the gateway wrote to it."""


class _StreamTimeout(Exception):
    """The upstream stream went idle too long or ran past its total time."""


async def _write(ctx: RequestContext, client: web.StreamResponse, data: bytes) -> None:
    if not data:
        return
    try:
        await client.write(data)
    except ConnectionResetError as exc:
        raise _ClientGone from exc
    ctx.mark_first_byte()


async def _pump(
    ctx: RequestContext,
    client: web.StreamResponse,
    upstream: aiohttp.ClientResponse,
    provider: Provider,
    relay: Relay,
) -> None:
    """Relay every upstream read, within the provider's idle and total timeouts."""
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
        await _write(ctx, client, relay.feed(chunk))
        ctx.stream_complete = relay.complete
    await _write(ctx, client, relay.end())
    ctx.stream_complete = relay.complete


async def serve_stream(
    request: web.Request,
    ctx: RequestContext,
    provider: Provider,
    upstream: aiohttp.ClientResponse,
    client: web.StreamResponse,
    relay: Relay,
) -> None:
    """Relay the stream and settle its usage, however it ends.

    After the response has started, failures can no longer change the
    status: they end the stream with an ``error`` event. Only cancellation
    is raised again.
    """
    try:
        try:
            await client.prepare(request)
        except ConnectionResetError as exc:
            raise _ClientGone from exc
        await _pump(ctx, client, upstream, provider, relay)
    except _ClientGone:
        ctx.client_aborted = not ctx.stream_complete
    except asyncio.CancelledError:
        # The client went away, or shutdown ended its grace period. In the
        # second case the client is still there and should learn why its
        # stream stops. In the first the write fails at once.
        if not ctx.stream_complete:
            await _send_final_error(client, relay)
        raise
    except _StreamTimeout as exc:
        ctx.error_type = UpstreamTimeout.code
        await _send_error(ctx, client, relay.fail(str(exc), "timeout_error"))
    except aiohttp.ClientError as exc:
        ctx.error_type = UpstreamUnreachable.code
        log.warning(
            "upstream_stream_broken", request_id=ctx.request_id, error=repr(exc)
        )
        message = f"Upstream '{provider.name}' closed the stream before it ended."
        await _send_error(ctx, client, relay.fail(message, "api_error"))
    finally:
        relay.settle(ctx)
        if not upstream.content.is_eof():
            # Stop the upstream from generating tokens that no client will read.
            upstream.close()


async def _send_error(
    ctx: RequestContext, client: web.StreamResponse, event: bytes
) -> None:
    if not event:
        return
    try:
        await client.write(event)
    except ConnectionResetError:
        ctx.client_aborted = True


async def _send_final_error(client: web.StreamResponse, relay: Relay) -> None:
    if not client.prepared:
        return
    # overloaded_error marks the failure as temporary, so a retry can succeed
    # on another worker. A request stopped earlier gets 503 for that reason.
    event = relay.fail(
        "The gateway stopped this stream before it finished.", "overloaded_error"
    )
    try:
        async with asyncio.timeout(1):
            if event:
                await client.write(event)
            # End the chunked body properly, so the client reads the error
            # event instead of failing on a truncated response.
            await client.write_eof()
    except (ConnectionResetError, TimeoutError):
        pass


async def end_stream(ctx: RequestContext, client: web.StreamResponse) -> None:
    if ctx.client_aborted:
        return
    try:
        await client.write_eof()
    except ConnectionResetError:
        ctx.client_aborted = not ctx.stream_complete
