"""A fake upstream on loopback that speaks both OpenAI Chat Completions and
Anthropic Messages, replaying recorded provider traffic.

Two request headers, which the gateway forwards, steer each request:
``x-mock-behaviour`` picks an error, a stall, a cut or a missing usage, and
``x-mock-fixture`` names the recorded stream to replay. Every request is
kept in ``requests`` so tests can check what the gateway sent upstream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from tests.integration.mock_upstream import FIXTURES, PROVIDER_KEY, SeenRequest

OPENAI_STREAM: Final = "openai/openai-chat-stream-text.sse"
ANTHROPIC_STREAM: Final = "anthropic/anthropic-messages-stream-text-then-tool-use.sse"
ANTHROPIC_MESSAGE: Final = FIXTURES / "anthropic" / "vercel-anthropic-text.json"
COUNTED_TOKENS: Final = 1234
BEHAVIOUR_HEADER: Final = "x-mock-behaviour"
FIXTURE_HEADER: Final = "x-mock-fixture"


def split_events(path: Path) -> list[bytes]:
    """Return the SSE frames of a recorded stream, each with its blank line,
    the last one as recorded (some recordings lack the final newline)."""
    data = path.read_bytes()
    frames = [frame for frame in data.split(b"\n\n") if frame.strip()]
    events = [frame + b"\n\n" for frame in frames[:-1]]
    return [*events, data[data.rindex(frames[-1]) :]]


def _openai_completion(model: str, behaviour: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "Hello there!"}
    finish_reason = "stop"
    if behaviour == "tool":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris"}',
                    },
                }
            ],
        }
        finish_reason = "tool_calls"
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if behaviour != "no-usage":
        body["usage"] = {
            "prompt_tokens": 11,
            "completion_tokens": 3,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 4},
        }
    return body


@dataclass
class MessagesUpstream:
    requests: list[SeenRequest] = field(default_factory=list)
    # Set when a streaming response noticed that the gateway went away.
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        self.requests.append(SeenRequest(request.path, dict(request.headers), body))
        return body  # type: ignore[no-any-return]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = request.headers.get(BEHAVIOUR_HEADER, "ok")
        if behaviour == "error-401":
            return web.json_response(
                {
                    "error": {
                        "message": f"Incorrect API key provided: {PROVIDER_KEY}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        if behaviour == "error-429":
            return web.json_response(
                {
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"Retry-After": "7"},
            )
        if body.get("stream") and behaviour != "ignore-stream":
            fixture = request.headers.get(FIXTURE_HEADER, OPENAI_STREAM)
            events = split_events(FIXTURES / fixture)
            if behaviour == "no-usage":
                events = [e for e in events if b'"usage":{' not in e]
            return await self._replay(request, events, behaviour)
        return web.json_response(_openai_completion(body["model"], behaviour))

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = request.headers.get(BEHAVIOUR_HEADER, "ok")
        error = _anthropic_error(behaviour)
        if error is not None:
            return error
        if not body.get("stream"):
            return web.Response(
                body=ANTHROPIC_MESSAGE.read_bytes(),
                content_type="application/json",
                headers={
                    "request-id": "req_upstream_1",
                    "anthropic-organization-id": "org-secret",
                    "anthropic-ratelimit-requests-remaining": "99",
                    "x-upstream-extra": "kept",
                },
            )
        fixture = request.headers.get(FIXTURE_HEADER, ANTHROPIC_STREAM)
        events = split_events(FIXTURES / fixture)
        if behaviour == "cut":
            events = [
                e
                for e in events
                if b"message_stop" not in e and b"message_delta" not in e
            ]
        elif behaviour == "error-event":
            error_event = (
                b"event: error\ndata: "
                b'{"type":"error","error":{"type":"overloaded_error",'
                b'"message":"Overloaded"}}\n\n'
            )
            events = [*events[:4], error_event]
        return await self._replay(request, events, behaviour)

    async def count_tokens(self, request: web.Request) -> web.Response:
        await self._record(request)
        error = _anthropic_error(request.headers.get(BEHAVIOUR_HEADER, "ok"))
        if error is not None:
            return error
        return web.json_response({"input_tokens": COUNTED_TOKENS})

    async def _replay(
        self, request: web.Request, events: list[bytes], behaviour: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                if behaviour == "reset" and index == 3:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if behaviour == "stall-mid" and index == 3:
                    await asyncio.sleep(30)
                if behaviour == "drip":
                    await asyncio.sleep(0.05)
                # Split each event in two writes to exercise reassembly.
                await response.write(event[:7])
                await response.write(event[7:])
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_cancelled.set()
            raise
        await response.write_eof()
        return response


def _anthropic_error(behaviour: str) -> web.Response | None:
    errors = {
        "error-400": (400, "invalid_request_error", "messages: roles must alternate"),
        "error-401": (401, "authentication_error", "invalid x-api-key"),
        "error-403": (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        "error-429": (429, "rate_limit_error", "Number of requests has exceeded"),
        "error-529": (529, "overloaded_error", "Overloaded"),
    }
    if behaviour not in errors:
        return None
    status, error_type, message = errors[behaviour]
    headers = {"request-id": "req_upstream_err"}
    if status == 429:
        headers["retry-after"] = "12"
    return web.json_response(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_upstream_err",
        },
        status=status,
        headers=headers,
    )
