"""A bare aiohttp pass-through proxy: the benchmark's reference for overhead.

It does the least work that any usage-aware gateway must do, and nothing
else. For ``POST /v1/chat/completions`` it parses the request JSON, picks
the upstream by the requested model, requests usage for streams
(``stream_options.include_usage``), forwards the body through one shared
``ClientSession`` and returns the upstream status and body. It reads
``usage`` from a JSON response, and from a stream it parses every
server-sent event to find the usage event, relaying the events as they
arrive and hiding the usage event from a client that did not ask for it.
There is no authentication, no policy, no limit and no ledger: the usage
totals go to stdout when the process stops.

Usage: ``python benchmarks/passthrough.py --port PORT --upstream MODEL=URL
[--upstream MODEL=URL ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web
from common import HOST, new_event_loop, stop_when_orphaned

EVENT_END = b"\n\n"
DATA_PREFIX = b"data:"


@dataclass
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: object) -> None:
        self.requests += 1
        if isinstance(usage, dict):
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)


SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAMS = web.AppKey("upstreams", dict[str, str])
TOTALS = web.AppKey("totals", UsageTotals)


def event_usage(event: bytes) -> tuple[object, bool]:
    """Return an event's usage and whether it is a usage-only event."""
    if not event.startswith(DATA_PREFIX):
        return None, False
    data = event[len(DATA_PREFIX) :].strip()
    if not data.startswith(b"{"):
        return None, False  # data: [DONE]
    payload = orjson.loads(data)
    usage = payload.get("usage")
    return usage, bool(usage) and not payload.get("choices")


async def relay_stream(
    request: web.Request, upstream: aiohttp.ClientResponse, client_wants_usage: bool
) -> web.StreamResponse:
    """Relay a stream event by event and record its usage."""
    response = web.StreamResponse(
        status=upstream.status,
        headers={"Content-Type": upstream.headers.get("Content-Type", "")},
    )
    await response.prepare(request)
    pending = b""
    usage: object = None
    async for chunk in upstream.content.iter_any():
        *events, pending = (pending + chunk).split(EVENT_END)
        forwarded = []
        for event in events:
            event_usage_field, usage_only = event_usage(event)
            if event_usage_field:
                usage = event_usage_field
            if not usage_only or client_wants_usage:
                forwarded.append(event + EVENT_END)
        if forwarded:
            await response.write(b"".join(forwarded))
    if pending:
        await response.write(pending)
    request.app[TOTALS].add(usage)
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    upstream_url = request.app[UPSTREAMS].get(str(body.get("model")))
    if upstream_url is None:
        error = {"message": f"unknown model {body.get('model')!r}", "type": "invalid"}
        return web.json_response({"error": error}, status=404)
    stream = bool(body.get("stream"))
    options = body.get("stream_options") or {}
    client_wants_usage = bool(options.get("include_usage"))
    if stream:
        body["stream_options"] = {**options, "include_usage": True}

    session = request.app[SESSION]
    url = upstream_url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=orjson.dumps(body), headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "")
        if content_type.startswith("text/event-stream"):
            return await relay_stream(request, upstream, client_wants_usage)
        payload = await upstream.read()
        if upstream.status == 200:
            request.app[TOTALS].add(orjson.loads(payload).get("usage"))
        return web.Response(
            status=upstream.status, body=payload, content_type="application/json"
        )


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(upstreams: dict[str, str]) -> web.Application:
    app = web.Application()
    app[UPSTREAMS] = {model: url.rstrip("/") for model, url in upstreams.items()}
    app[TOTALS] = UsageTotals()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", healthz)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        # No connection cap, like llmgw's upstream connector.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            app[SESSION] = session
            yield
        totals = app[TOTALS]
        print(
            f"usage totals: {totals.requests} requests, {totals.prompt_tokens} "
            f"prompt tokens, {totals.completion_tokens} completion tokens",
            flush=True,
        )

    async def orphan_watch(app: web.Application) -> AsyncIterator[None]:
        watch = asyncio.create_task(stop_when_orphaned(os.getppid()))
        yield
        watch.cancel()

    app.cleanup_ctx.append(session_context)
    app.cleanup_ctx.append(orphan_watch)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument(
        "--upstream",
        action="append",
        required=True,
        help="a model and its upstream base URL without /v1, "
        "e.g. gpt-4o=http://127.0.0.1:9000; repeatable",
    )
    args = parser.parse_args()
    upstreams = {}
    for entry in args.upstream:
        model, separator, url = entry.partition("=")
        if not separator or not model or not url:
            parser.error(f"invalid --upstream {entry!r}: expected MODEL=URL")
        upstreams[model] = url
    web.run_app(
        build_app(upstreams),
        host=HOST,
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
