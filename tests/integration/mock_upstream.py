"""A fake OpenAI-compatible provider on loopback, steered per request.

The request's ``user`` field picks a behaviour: recorded stream replay,
error, stall, reset mid-stream or slow drip. Every request is kept in
``requests`` so tests can check what the gateway sent upstream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
STREAM_FIXTURE = FIXTURES / "openai" / "openai-chat-stream-text.sse"
PROVIDER_KEY = "sk-provider-secret-0123456789"


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class MockUpstream:
    requests: list[SeenRequest] = field(default_factory=list)
    # Set when a streaming response noticed that the gateway went away.
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        self.requests.append(SeenRequest(request.path, dict(request.headers), body))
        return body  # type: ignore[no-any-return]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = body.get("user") or "ok"
        if behaviour == "error":
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
        if behaviour == "overloaded":
            return web.json_response(
                {
                    "error": {
                        "message": "The engine is currently overloaded",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=503,
                headers={"Retry-After": "7"},
            )
        if behaviour == "redirect":
            raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/v1/chat/completions")
        if behaviour == "stall":
            await asyncio.sleep(30)
        if body.get("stream") and behaviour != "ignore-stream":
            return await self._stream(request, behaviour)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello there!"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": 3,
                    "total_tokens": 14,
                    "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 1},
                },
            },
            headers={
                "x-ratelimit-remaining-tokens": "999",
                "openai-organization": "org-secret",
                "x-upstream-extra": "kept",
            },
        )

    async def _stream(self, request: web.Request, behaviour: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = STREAM_FIXTURE.read_bytes().split(b"\n\n")
        events = [e + b"\n\n" for e in events if e.strip()]
        if behaviour == "no-usage":
            events = [e for e in events if b'"usage"' not in e]
        try:
            for index, event in enumerate(events):
                if behaviour == "reset" and index == 5:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if behaviour == "drip":
                    await asyncio.sleep(0.05)
                if behaviour == "stall-mid" and index == 3:
                    await asyncio.sleep(30)
                # Split each event in two writes to exercise reassembly.
                await response.write(event[:7])
                await response.write(event[7:])
            if behaviour == "linger-after-done":
                # Some servers close a moment after [DONE]; the openai SDK
                # hangs up as soon as it reads [DONE].
                await asyncio.sleep(0.3)
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_cancelled.set()
            raise
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append(SeenRequest(request.path, dict(request.headers), {}))
        names = ["mock-a", "mock-b", "other", "small"]
        return web.json_response(
            {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2]}
                    for i in range(len(inputs))
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 5, "total_tokens": 5},
            }
        )
