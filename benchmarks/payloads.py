"""The fixed OpenAI chat completion bodies that the mock upstreams send.

The nginx mock (``upstreams.py``) and the Python mock (``mock_upstream.py``)
send the same bytes, so a run gets the same responses whichever mock runs.
A stream is one role event with the first content piece, then one event per
further content piece, then a finish event, a usage event and
``data: [DONE]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MOCK_MODEL = "mock-model"
COMPLETION_TEXT = "Hello from the mock upstream."
PROMPT_TOKENS = 12
COMPLETION_TOKENS = 5
_CHUNK_ID = "chatcmpl-mock"
_CREATED = 1700000000


@dataclass(frozen=True)
class StreamPlan:
    """The events of one streamed completion, grouped by when they are sent.

    ``first`` goes out at once, each of ``later`` after one chunk interval,
    and ``tail`` right after the last content piece.
    """

    first: bytes
    later: tuple[bytes, ...]
    tail: bytes


def usage(completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }


def completion_body() -> bytes:
    """Return the body of a non-streaming completion, with usage."""
    return orjson.dumps(
        {
            "id": _CHUNK_ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": MOCK_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": COMPLETION_TEXT},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(COMPLETION_TOKENS),
        }
    )


def _event(choices: list[object], usage_field: object = None) -> bytes:
    payload = {
        "id": _CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MOCK_MODEL,
        "choices": choices,
        "usage": usage_field,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _content_event(piece: str) -> bytes:
    return _event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])


def stream_plan(chunks: int) -> StreamPlan:
    """Return the events of a stream with ``chunks`` content pieces (at least 1)."""
    if chunks < 1:
        raise ValueError(f"invalid chunk count {chunks}: expected at least 1")
    pieces = [f" word{index}" for index in range(chunks)]
    role = _event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
    finish = _event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    return StreamPlan(
        first=role + _content_event(pieces[0]),
        later=tuple(_content_event(piece) for piece in pieces[1:]),
        tail=finish + _event([], usage(chunks)) + b"data: [DONE]\n\n",
    )


def chat_request(model: str, stream: bool) -> bytes:
    """Return the request body that every load generator sends."""
    return orjson.dumps(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Write one sentence about the sea."},
            ],
            "max_tokens": 64,
            "stream": stream,
        }
    )
