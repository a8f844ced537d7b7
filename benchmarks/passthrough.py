"""A bare aiohttp pass-through proxy: the benchmark's reference for overhead.

It forwards ``POST /v1/chat/completions`` bodies unchanged to the upstream
through one shared ``ClientSession`` and returns the upstream status and body.
An event stream is relayed chunk by chunk; any other body is read whole and
returned. There is no authentication, no policy, no limit and no ledger.

Usage: ``python benchmarks/passthrough.py --port PORT --upstream URL``
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from common import new_event_loop

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + "/v1/chat/completions"
    body = await request.read()
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as upstream:
        content_type = upstream.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                status=upstream.status,
                body=await upstream.read(),
                content_type="application/json",
            )

        response = web.StreamResponse(
            status=upstream.status, headers={"Content-Type": content_type}
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", healthz)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        # No connection cap, like llmgw's upstream connector.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_context)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument(
        "--upstream",
        required=True,
        help="upstream base URL, e.g. http://127.0.0.1:9000",
    )
    args = parser.parse_args()
    web.run_app(
        build_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
