"""The gateway end to end on loopback against a mock upstream, run once with
the embedded back end and once with the Redis server on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from llmgw.config import Timeouts
from llmgw.errors import BackendUnavailable
from llmgw.providers.openai import OpenAIProvider
from tests.integration.conftest import STATE_PARAMS, shared_state
from tests.integration.gateway_harness import (
    DEV_KEY,
    GPT_ONLY_KEY,
    LIMITED_KEY,
    TOKENS_KEY,
    Harness,
    LoopWatchdog,
    running_gateway,
)
from tests.integration.mock_upstream import PROVIDER_KEY

CHAT = "/v1/chat/completions"


def chat_body(model: str = "small", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    body["messages"] = [{"role": "user", "content": "Hi"}]
    body.update(extra)
    return body


@pytest.fixture(params=STATE_PARAMS)
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    prefix = f"llmgw-test-{uuid.uuid4().hex[:8]}:"
    state = shared_state(request)
    async with running_gateway(
        tmp_path, state.url, prefix, cluster=state.cluster
    ) as harness:
        yield harness
    await state.delete_keys(prefix)


async def error_of(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}
    return body["error"]  # type: ignore[no-any-return]


async def test_chat_swaps_credentials_and_records_usage(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(), headers={"X-Client-Trace": "abc"})
    assert response.status == 200
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Hello there!"
    assert response.headers["x-request-id"].startswith("req_")
    assert "openai-organization" not in response.headers
    assert "x-ratelimit-remaining-tokens" not in response.headers
    assert response.headers["x-upstream-extra"] == "kept"

    seen = gw.upstream.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert DEV_KEY not in str(seen.headers)
    assert seen.headers["X-Client-Trace"] == "abc"
    assert seen.body["model"] == "small-v2"
    assert seen.body["max_tokens"] == 50

    [row] = await gw.ledger_rows()
    assert row["request_id"] == response.headers["x-request-id"]
    assert row["key_name"] == "dev"
    assert row["tenant"] == "acme"
    assert row["model"] == "small"
    assert row["provider"] == "mock"
    assert row["upstream_model"] == "small-v2"
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (4, 1)
    assert row["estimated"] == 0
    assert row["status"] == 200
    assert row["streamed"] == 0


async def test_x_api_key_header_authenticates(gw: Harness) -> None:
    response = await gw.post(
        CHAT, chat_body(), key=None, headers={"x-api-key": DEV_KEY}
    )
    assert response.status == 200
    assert "x-api-key" not in {h.lower() for h in gw.upstream.requests[-1].headers}


async def test_hop_by_hop_headers_stay_behind(gw: Harness) -> None:
    headers = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
    }
    response = await gw.post(CHAT, chat_body(), headers=headers)
    assert response.status == 200
    seen = {name.lower() for name in gw.upstream.requests[-1].headers}
    assert "x-hop" not in seen
    assert "keep-alive" not in seen


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"max_tokens": 500}, {"max_tokens": 50}, id="max-tokens-clamped"),
        pytest.param({"max_tokens": 7}, {"max_tokens": 7}, id="smaller-kept"),
        pytest.param(
            {"max_completion_tokens": 900},
            {"max_completion_tokens": 50},
            id="completion-tokens-clamped",
        ),
    ],
)
async def test_output_cap_clamps_request(
    gw: Harness, extra: dict[str, int], expected: dict[str, int]
) -> None:
    response = await gw.post(CHAT, {**chat_body(), **extra})
    assert response.status == 200
    sent = gw.upstream.requests[-1].body
    for field, value in expected.items():
        assert sent[field] == value
    if "max_completion_tokens" in expected:
        assert "max_tokens" not in sent


async def test_key_output_cap_is_smallest(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(max_tokens=90), key=TOKENS_KEY)
    assert response.status == 200
    assert gw.upstream.requests[-1].body["max_tokens"] == 20


@pytest.mark.parametrize(
    ("body", "key", "status", "code", "param"),
    [
        pytest.param(
            b"{not json", DEV_KEY, 400, "invalid_request", None, id="bad-json"
        ),
        pytest.param(b"[]", DEV_KEY, 400, "invalid_request", None, id="not-object"),
        pytest.param(
            orjson.dumps({"messages": [{"role": "user", "content": "x"}]}),
            DEV_KEY,
            400,
            "invalid_request",
            "model",
            id="no-model",
        ),
        pytest.param(
            orjson.dumps({"model": "small"}),
            DEV_KEY,
            400,
            "invalid_request",
            "messages",
            id="no-messages",
        ),
        pytest.param(
            orjson.dumps(chat_body("nope")),
            DEV_KEY,
            404,
            "model_not_found",
            "model",
            id="unknown-model",
        ),
        pytest.param(
            orjson.dumps(chat_body()), None, 401, "invalid_api_key", None, id="no-key"
        ),
        pytest.param(
            orjson.dumps(chat_body()),
            "sk-wrong",
            401,
            "invalid_api_key",
            None,
            id="wrong-key",
        ),
        pytest.param(
            orjson.dumps(chat_body()),
            GPT_ONLY_KEY,
            403,
            "model_not_allowed",
            "model",
            id="model-not-allowed",
        ),
        pytest.param(
            b"x" * 30000, DEV_KEY, 413, "request_too_large", None, id="body-too-large"
        ),
    ],
)
async def test_bad_request_rejected_and_recorded(
    gw: Harness, body: bytes, key: str | None, status: int, code: str, param: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = await gw.session.post(gw.url(CHAT), data=body, headers=headers)
    assert response.status == status
    error = await error_of(response)
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    assert gw.upstream.requests == []

    [row] = await gw.ledger_rows()
    assert response.headers["x-request-id"] == row["request_id"]
    assert row["status"] == status
    assert row["error_type"] == code
    assert row["input_tokens"] == 0
    assert row["output_tokens"] == 0


async def test_prompt_over_input_cap_names_both_numbers(gw: Harness) -> None:
    prompt = "word " * 200
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
    response = await gw.post(CHAT, body)
    assert response.status == 400
    error = await error_of(response)
    assert error["code"] == "context_length_exceeded"
    assert "40" in error["message"]
    counted = gw.gateway.tokens.count_chat(body["messages"], "gpt-4o").tokens
    assert str(counted) in error["message"]
    assert gw.upstream.requests == []


async def test_upstream_error_carries_limit_headers(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(user="error"), key=LIMITED_KEY)
    assert response.status == 502
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "1"


async def test_rate_limited_key_gets_429_with_headers(gw: Harness) -> None:
    statuses = []
    for _ in range(3):
        response = await gw.post(CHAT, chat_body(), key=LIMITED_KEY)
        statuses.append(response.status)
        last = response
    assert statuses == [200, 200, 429]
    assert int(last.headers["Retry-After"]) >= 1
    assert last.headers["x-ratelimit-limit-requests"] == "2"
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    error = await error_of(last)
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert len(gw.upstream.requests) == 2

    rows = await gw.ledger_rows()
    assert [r["status"] for r in rows] == [200, 200, 429]
    assert rows[2]["input_tokens"] == 0


async def test_token_bucket_reserves_and_refunds(gw: Harness) -> None:
    # The key allows 200 tokens per minute and caps output at 20; each
    # request reserves its prompt count plus 20 and the upstream reports 14.
    first = await gw.post(CHAT, chat_body(), key=TOKENS_KEY)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "200"
    reserved_left = int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved_left < 200 - 20

    second = await gw.post(CHAT, chat_body(), key=TOKENS_KEY)
    # The first request's unused reservation came back before the second.
    assert int(second.headers["x-ratelimit-remaining-tokens"]) > reserved_left - 30

    huge = await gw.post(
        CHAT,
        {"model": "small", "messages": [{"role": "user", "content": "a " * 400}]},
        key=TOKENS_KEY,
    )
    assert huge.status == 429
    assert huge.headers["x-should-retry"] == "false"
    assert (await error_of(huge))["type"] == "tokens"


async def test_upstream_error_keeps_status_and_hides_key(gw: Harness) -> None:
    # The upstream's 401 rejects the gateway's provider key, not the client's.
    response = await gw.post(CHAT, chat_body(user="error"))
    assert response.status == 502
    assert response.headers["x-should-retry"] == "false"
    text = await response.text()
    assert PROVIDER_KEY not in text
    error = await error_of(response)
    assert error["type"] == "upstream_error"
    assert error["code"] == "upstream_authentication_failed"
    assert "Provider 'mock'" in error["message"]
    assert "HTTP 401" in error["message"]
    assert "Incorrect API key provided: <redacted>" in error["message"]

    overloaded = await gw.post(CHAT, chat_body(user="overloaded"))
    assert overloaded.status == 503
    assert overloaded.headers["Retry-After"] == "7"

    rows = await gw.ledger_rows()
    assert [r["status"] for r in rows] == [502, 503]
    assert rows[0]["error_type"] == "upstream_http_401"
    # Failed upstream calls bill nothing, as the providers do.
    assert [(r["input_tokens"], r["output_tokens"]) for r in rows] == [(0, 0), (0, 0)]


async def test_upstream_timeout_is_504(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(user="stall"))
    assert response.status == 504
    assert (await error_of(response))["code"] == "upstream_timeout"
    [row] = await gw.ledger_rows()
    assert row["status"] == 504


async def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, "unused:") as gw:
        provider = gw.gateway.providers["mock"]
        assert isinstance(provider, OpenAIProvider)
        provider._base_url = "http://127.0.0.1:9/v1"  # nothing listens on port 9
        response = await gw.post(CHAT, chat_body())
        assert response.status == 502
        assert (await error_of(response))["code"] == "upstream_unreachable"
        [row] = await gw.ledger_rows()
        assert row["status"] == 502


async def read_sse(response: Any) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            payload = text[len("data: ") :]
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


async def test_stream_hides_forced_usage_chunk(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(stream=True))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_sse(response)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert all(chunk["choices"] for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("I'm unable to provide real-time weather")
    assert gw.upstream.requests[-1].body["stream_options"] == {"include_usage": True}

    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)
    assert row["estimated"] == 0
    assert row["streamed"] == 1
    assert row["ttft_ms"] is not None


async def test_stream_usage_chunk_kept_when_asked(gw: Harness) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = await read_sse(await gw.post(CHAT, body))
    usage_chunks = [e for e in events if isinstance(e, dict) and e.get("usage")]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["completion_tokens"] == 30


async def test_stream_without_usage_is_estimated(gw: Harness) -> None:
    events = await read_sse(
        await gw.post(CHAT, chat_body(stream=True, user="no-usage"))
    )
    chunks = [e for e in events if isinstance(e, dict)]
    [row] = await gw.ledger_rows()
    assert row["estimated"] == 1
    expected_input = gw.gateway.tokens.count_chat(chat_body()["messages"], "small-v2")
    assert row["input_tokens"] == expected_input.tokens
    # One token per content chunk in this recording, give or take merges.
    content_chunks = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert abs(row["output_tokens"] - len(content_chunks)) <= 3


async def test_stream_arrives_incrementally(gw: Harness) -> None:
    started = time.perf_counter()
    response = await gw.post(CHAT, chat_body(stream=True, user="drip"))
    first_at = None
    async for line in response.content:
        if line.startswith(b"data: ") and first_at is None:
            first_at = time.perf_counter() - started
    total = time.perf_counter() - started
    assert first_at is not None
    # The drip takes about 50 ms per event over 33 events.
    assert first_at < total / 3


async def test_client_disconnect_cancels_upstream(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(stream=True, user="drip"))
    seen = 0
    async for line in response.content:
        if line.startswith(b"data: "):
            seen += 1
        if seen == 3:
            break
    response.close()
    await asyncio.wait_for(gw.upstream.stream_cancelled.wait(), timeout=5)

    for _ in range(50):
        rows = await gw.ledger_rows()
        if rows:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert row["client_aborted"] == 1
    assert row["estimated"] == 1
    assert row["output_tokens"] >= 1


async def test_upstream_reset_mid_stream_sends_error_event(gw: Harness) -> None:
    events = await read_sse(await gw.post(CHAT, chat_body(stream=True, user="reset")))
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == "upstream_unreachable"
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_unreachable"
    assert row["estimated"] == 1


async def test_upstream_stall_mid_stream_times_out(gw: Harness) -> None:
    events = await read_sse(
        await gw.post(CHAT, chat_body(stream=True, user="stall-mid"))
    )
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert errors[0]["error"]["code"] == "upstream_timeout"


async def test_models_lists_only_allowed(gw: Harness) -> None:
    response = await gw.session.get(
        gw.url("/v1/models"), headers={"Authorization": f"Bearer {GPT_ONLY_KEY}"}
    )
    body = await response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["gpt-4o"]

    response = await gw.session.get(
        gw.url("/v1/models"), headers={"Authorization": f"Bearer {DEV_KEY}"}
    )
    names = sorted(m["id"] for m in (await response.json())["data"])
    # mock-a and mock-b come from the provider's own list through the
    # "mock-*" glob route; "small" is listed once, from its exact route.
    assert names == ["embed", "gpt-4o", "mock-a", "mock-b", "small"]
    listing = gw.upstream.requests[-1]
    assert listing.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"


async def test_embeddings_forwarded_and_recorded(gw: Harness) -> None:
    response = await gw.post("/v1/embeddings", {"model": "embed", "input": ["a", "b"]})
    assert response.status == 200
    assert len((await response.json())["data"]) == 2
    assert gw.upstream.requests[-1].body["model"] == "text-embedding-3-small"
    [row] = await gw.ledger_rows()
    assert row["route"] == "/v1/embeddings"
    assert row["input_tokens"] == 5


async def test_health_and_readiness(gw: Harness) -> None:
    assert (await gw.session.get(gw.url("/healthz"))).status == 200
    ready = await gw.session.get(gw.url("/readyz"))
    assert ready.status == 200


async def test_unknown_path_is_openai_shaped_404(gw: Harness) -> None:
    response = await gw.session.get(gw.url("/v1/nothing"))
    assert response.status == 404
    assert (await error_of(response))["code"] == "not_found"


async def test_request_log_line_has_no_key_or_prompt(gw: Harness) -> None:
    secret_prompt = "my-secret-prompt-text"
    body = {"model": "small", "messages": [{"role": "user", "content": secret_prompt}]}
    with capture_logs() as logs:
        response = await gw.post(CHAT, body)
        assert response.status == 200
        await gw.post(CHAT, body, key="sk-wrong-key-in-log")
        await gw.ledger_rows()
    # Settlement runs in the background, so the two lines may come in
    # either order.
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert sorted(line["status"] for line in lines) == [200, 401]
    first = next(line for line in lines if line["status"] == 200)
    assert first["request_id"] == response.headers["x-request-id"]
    assert first["key_name"] == "dev"
    assert first["input_tokens"] == 11
    assert first["output_tokens"] == 3
    text = repr(logs)
    for secret in (DEV_KEY, "sk-wrong-key-in-log", PROVIDER_KEY, secret_prompt):
        assert secret not in text


async def test_loop_watchdog_sees_a_blocking_call() -> None:
    watchdog = LoopWatchdog(interval=0.01)
    watchdog.start()
    await asyncio.sleep(0.03)
    time.sleep(0.3)  # noqa: ASYNC251 - the test blocks the loop on purpose
    await asyncio.sleep(0.03)
    await watchdog.stop()
    assert watchdog.worst >= 0.25


async def test_shutdown_finishes_running_stream(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(stream=True, user="drip"))
    first = await response.content.readline()
    assert first.startswith(b"data: ")

    # What SIGTERM does in `llmgw serve`: stop listening, wait for in-flight
    # requests, then drain the ledger and close the back end.
    shutdown = asyncio.create_task(gw.server.close())
    events = await read_sse(response)
    await shutdown

    assert events[-1] == "[DONE]"
    [row] = gw.sink_rows()
    assert row["status"] == 200
    assert row["client_aborted"] == 0
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)


async def test_upstream_redirect_not_followed(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(user="redirect"))
    assert response.status == 502
    assert (await error_of(response))["code"] == "upstream_redirect"
    assert len(gw.upstream.requests) == 1


async def test_stream_answered_with_json_passes_through(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(stream=True, user="ignore-stream"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Hello there!"
    [row] = await gw.ledger_rows()
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)
    assert row["estimated"] == 0


async def test_slow_request_body_gets_408(gw: Harness) -> None:
    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"model": "small", '
        await asyncio.sleep(2)  # past the gateway's read_timeout of 1 s
        yield b'"messages": [{"role": "user", "content": "Hi"}]}'

    response = await gw.session.post(
        gw.url(CHAT),
        data=slow_body(),
        headers={"Authorization": f"Bearer {DEV_KEY}"},
    )
    assert response.status == 408
    assert (await error_of(response))["code"] == "request_timeout"
    assert gw.upstream.requests == []


async def test_ledger_falls_back_to_sink_when_backend_down(gw: Harness) -> None:
    async def unavailable(*_args: object) -> None:
        raise BackendUnavailable("Redis is down")

    backend = gw.gateway.backend
    original = backend.append_record
    backend.append_record = unavailable  # type: ignore[method-assign,assignment]
    try:
        response = await gw.post(CHAT, chat_body())
        assert response.status == 200
        await gw.gateway.wait_background()
    finally:
        backend.append_record = original  # type: ignore[method-assign]

    [row] = gw.sink_rows()
    assert row["request_id"] == response.headers["x-request-id"]
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)


async def test_shutdown_grace_end_cuts_stream_with_error(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, None, "unused:", shutdown_timeout=5) as gw:
        response = await gw.post(CHAT, chat_body(stream=True, user="stall-mid"))
        first = await response.content.readline()
        assert first.startswith(b"data: ")

        # What `llmgw serve` does on SIGTERM when the grace period ends
        # while the upstream still stalls.
        gw.gateway.stopping = True
        shutdown = asyncio.create_task(gw.server.close())
        await asyncio.sleep(0.2)
        gw.gateway.cut_requests()
        events = await read_sse(response)
        await asyncio.wait_for(shutdown, timeout=3)

        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        assert errors[-1]["error"]["code"] == "stream_cancelled"
        [row] = gw.sink_rows()
        assert row["error_type"] == "server_shutdown"
        assert row["client_aborted"] == 0
        assert row["streamed"] == 1


async def test_client_hanging_up_after_done_is_complete(gw: Harness) -> None:
    response = await gw.post(CHAT, chat_body(stream=True, user="linger-after-done"))
    async for line in response.content:
        if line.strip() == b"data: [DONE]":
            break
    response.close()

    for _ in range(50):
        rows = await gw.ledger_rows()
        if rows:
            break
        await asyncio.sleep(0.05)
    [row] = rows
    assert row["client_aborted"] == 0
    assert row["error_type"] is None
    assert (row["input_tokens"], row["output_tokens"]) == (14, 30)


async def test_gzip_request_body_is_decoded(gw: Harness) -> None:
    body = gzip.compress(orjson.dumps(chat_body()))
    headers = {
        "Authorization": f"Bearer {DEV_KEY}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    response = await gw.session.post(gw.url(CHAT), data=body, headers=headers)
    assert response.status == 200
    seen = {name.lower() for name in gw.upstream.requests[-1].headers}
    assert "content-encoding" not in seen

    broken = await gw.session.post(
        gw.url(CHAT), data=orjson.dumps(chat_body()), headers=headers
    )
    assert broken.status == 400
    assert (await error_of(broken))["code"] == "invalid_request"


async def test_retrieve_glob_model_checks_provider_list(gw: Harness) -> None:
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    listed = await gw.session.get(gw.url("/v1/models/mock-a"), headers=headers)
    assert listed.status == 200
    assert (await listed.json())["id"] == "mock-a"

    unknown = await gw.session.get(gw.url("/v1/models/mock-zzz"), headers=headers)
    assert unknown.status == 404
    assert (await error_of(unknown))["code"] == "model_not_found"


async def test_stream_past_total_timeout_ends_with_error(gw: Harness) -> None:
    provider = gw.gateway.providers["mock"]
    timeouts = Timeouts(connect=2, first_byte=1, idle=1, total=0.5)
    provider.config = replace(provider.config, timeouts=timeouts)

    # The drip takes about 1.7 s, longer than the total of 0.5 s.
    events = await read_sse(await gw.post(CHAT, chat_body(stream=True, user="drip")))
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == "upstream_timeout"
    assert "within 0.5 s" in errors[0]["error"]["message"]
    [row] = await gw.ledger_rows()
    assert row["error_type"] == "upstream_timeout"
    assert row["output_tokens"] >= 1


async def test_shutdown_grace_end_answers_503(gw: Harness) -> None:
    request = asyncio.create_task(gw.post(CHAT, chat_body(user="stall")))
    await asyncio.sleep(0.2)  # the upstream stalls; the request is in flight

    # What `llmgw serve` does when the grace period ends.
    gw.gateway.stopping = True
    gw.gateway.cut_requests()
    response = await request

    assert response.status == 503
    assert (await error_of(response))["code"] == "server_shutdown"
    [row] = await gw.ledger_rows()
    assert row["status"] == 503
    assert row["error_type"] == "server_shutdown"
    assert row["client_aborted"] == 0
