"""The Python mock upstream, and the harness's fallback when nginx is absent.

One process serves up to four OpenAI-compatible mocks, each on its own
loopback port. The first three are the ones the nginx mock serves (see
``upstreams.py``):

- ``--instant-port``: ``POST /v1/chat/completions`` returns a fixed
  completion with usage at once;
- ``--delay-port``: the same body after ``--delay-ms``;
- ``--stream-port``: a stream of ``--chunks`` content events,
  ``--interval-ms`` apart, then a usage event and ``data: [DONE]``;
- ``--port``: the completion at once, or for ``"stream": true`` a stream of
  five content events with no pause.

The first three respond the same way whatever the request body contains. Every
port reads and parses the body but does not check it. ``GET /healthz``
returns 200 on every port. This mock costs far more CPU per request than
nginx, so with it the direct figures are lower and the mock competes with
the target for the cores.

Usage: ``python benchmarks/mock_upstream.py [--port P] [--instant-port P1]
[--delay-port P2] [--stream-port P3] [--delay-ms 20] [--chunks 50]
[--interval-ms 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from common import HOST, new_event_loop, stop_when_orphaned
from payloads import StreamPlan, completion_body, stream_plan

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_HEADERS = {"Content-Type": "application/json"}
# Content events in a stream from --port, as the first harness's mock sent.
AUTO_STREAM_CHUNKS = 5
STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def instant_app(body: bytes) -> web.Application:
    async def complete(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(body=body, headers=JSON_HEADERS)

    return _app(complete)


def delay_app(body: bytes, delay: float) -> web.Application:
    async def complete(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        await asyncio.sleep(delay)
        return web.Response(body=body, headers=JSON_HEADERS)

    return _app(complete)


def stream_app(plan: StreamPlan, interval: float) -> web.Application:
    async def complete(request: web.Request) -> web.StreamResponse:
        orjson.loads(await request.read())
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await response.write(plan.first)
        for event in plan.later:
            await asyncio.sleep(interval)
            await response.write(event)
        await response.write(plan.tail)
        await response.write_eof()
        return response

    return _app(complete)


def auto_app(body: bytes, plan: StreamPlan) -> web.Application:
    async def complete(request: web.Request) -> web.StreamResponse:
        if not orjson.loads(await request.read()).get("stream"):
            return web.Response(body=body, headers=JSON_HEADERS)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        # One write per event, as a real server sends them as they are made.
        for event in (plan.first, *plan.later, plan.tail):
            await response.write(event)
        await response.write_eof()
        return response

    return _app(complete)


def _app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(args: argparse.Namespace) -> None:
    body = completion_body()
    plan = stream_plan(args.chunks)
    apps = [
        (instant_app(body), args.instant_port),
        (delay_app(body, args.delay_ms / 1000), args.delay_port),
        (stream_app(plan, args.interval_ms / 1000), args.stream_port),
        (auto_app(body, stream_plan(AUTO_STREAM_CHUNKS)), args.port),
    ]
    runners = []
    for app, port in apps:
        if port is None:
            continue
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        runners.append(runner)
    try:
        # SIGTERM from the harness ends the process; so does the harness's exit.
        await stop_when_orphaned(os.getppid())
    finally:
        for runner in runners:
            await runner.cleanup()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="port that streams on request")
    parser.add_argument("--instant-port", type=int, help="port that responds at once")
    parser.add_argument(
        "--delay-port", type=int, help="port that responds after a delay"
    )
    parser.add_argument("--stream-port", type=int, help="port that always streams")
    parser.add_argument(
        "--delay-ms", type=float, default=20.0, help="delay of the delay port, in ms"
    )
    parser.add_argument(
        "--chunks", type=int, default=50, help="content events per stream (1-10000)"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=10.0, help="time between content events"
    )
    args = parser.parse_args()
    ports = (args.port, args.instant_port, args.delay_port, args.stream_port)
    if all(port is None for port in ports):
        parser.error(
            "missing port: give at least one of --port, --instant-port, "
            "--delay-port and --stream-port"
        )
    if not 1 <= args.chunks <= 10000:
        parser.error(f"invalid --chunks {args.chunks}: expected 1 to 10000")
    return args


def main() -> None:
    args = parse_args()
    loop = new_event_loop()
    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(serve(args))
    loop.close()


if __name__ == "__main__":
    main()
