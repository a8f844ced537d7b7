"""An instant OpenAI-compatible upstream for the benchmark, on loopback.

``POST /v1/chat/completions`` returns a fixed small completion with usage. A
body with ``"stream": true`` gets server-sent events instead: a few content
chunks, a usage chunk and ``data: [DONE]``. The request body is parsed but
not checked. ``GET /healthz`` returns 200 once the server listens.

Usage: ``python benchmarks/mock_upstream.py --port PORT``
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web
from common import new_event_loop

MODEL = "mock-model"
CONTENT_PIECES = ("Hello", " from", " the", " mock", " upstream.")
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}

COMPLETION_BODY = orjson.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(CONTENT_PIECES)},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)


def _chunk(choices: list[object], usage: object = None) -> bytes:
    payload = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _build_stream_events() -> list[bytes]:
    events = [_chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])]
    for piece in CONTENT_PIECES:
        events.append(_chunk([{"index": 0, "delta": {"content": piece}}]))
    events.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(_chunk([], USAGE))
    events.append(b"data: [DONE]\n\n")
    return events


STREAM_EVENTS = _build_stream_events()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=COMPLETION_BODY, content_type="application/json")

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    # One write per event, as a real server sends them as they are generated.
    for event in STREAM_EVENTS:
        await response.write(event)
    await response.write_eof()
    return response


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    args = parser.parse_args()
    web.run_app(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
