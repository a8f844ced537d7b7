"""The official openai SDK against llmgw in front of a real llama.cpp model.

Each test starts its own gateway, stops it with SIGTERM and then reads the
SQLite ledger, which contains every record once the gateway has exited.
"""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgw.tokens import TokenCounter, count_output_piece
from tests.e2e.conftest import (
    MAX_INPUT_TOKENS,
    MAX_OUTPUT_TOKENS,
    MODEL_NAME,
    OTHER_MODEL_NAME,
    Gateway,
    StartGateway,
)

pytestmark = pytest.mark.e2e

# A prompt that makes SmolLM2 write until max_tokens runs out, so that a
# stream has many content chunks.
COUNTING_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Count from 1 to 50, one number per line."}
]
SHORT_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say hello."}
]


@pytest.fixture(scope="module")
def token_counter() -> TokenCounter:
    return TokenCounter()


def stop_and_read_ledger(gateway: Gateway) -> list[dict[str, Any]]:
    """Stop the gateway with SIGTERM and return its ledger rows."""
    assert gateway.stop() == 0
    return gateway.ledger_rows()


def assert_rejected_row(row: dict[str, Any], status: int) -> None:
    assert row["status"] == status
    assert row["input_tokens"] == 0
    assert row["output_tokens"] == 0
    assert row["cached_tokens"] == 0
    assert row["reasoning_tokens"] == 0
    assert row["error_type"]


def test_chat_returns_text_and_usage(start_gateway: StartGateway, backend: str) -> None:
    gateway = start_gateway(backend=backend)

    with gateway.client("dev") as client:
        completion = client.chat.completions.create(
            model=MODEL_NAME, messages=SHORT_PROMPT, max_tokens=16, temperature=0
        )

    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16

    # The drainer writes the record while the gateway still runs.
    assert len(gateway.wait_for_ledger_rows(1)) == 1

    rows = stop_and_read_ledger(gateway)
    request_logs = gateway.log_events("request")
    assert len(request_logs) == 1
    log_line = request_logs[0]
    assert log_line["status"] == 200
    assert log_line["model"] == MODEL_NAME
    assert log_line["provider"] == "local"
    assert log_line["key_name"] == "dev"
    assert log_line["input_tokens"] == usage.prompt_tokens
    assert log_line["output_tokens"] == usage.completion_tokens
    assert log_line["latency_ms"] > 0
    assert log_line["request_id"]
    assert log_line["route"]
    assert log_line["pid"] > 0

    assert len(rows) == 1
    row = rows[0]
    assert row["request_id"] == log_line["request_id"]
    assert row["status"] == 200
    assert row["key_name"] == "dev"
    assert row["model"] == MODEL_NAME
    assert row["provider"] == "local"
    assert row["upstream_model"] == MODEL_NAME
    assert row["input_tokens"] == usage.prompt_tokens
    assert row["output_tokens"] == usage.completion_tokens
    assert row["estimated"] == 0
    assert row["streamed"] == 0
    assert row["client_aborted"] == 0
    assert row["error_type"] is None


def test_stream_yields_chunks_as_generated(
    start_gateway: StartGateway, backend: str, token_counter: TokenCounter
) -> None:
    gateway = start_gateway(backend=backend)

    deltas: list[str] = []
    arrival_times: list[float] = []
    with (
        gateway.client("dev") as client,
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=COUNTING_PROMPT,
            max_tokens=MAX_OUTPUT_TOKENS,
            temperature=0,
            stream=True,
        ) as stream,
    ):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
                arrival_times.append(time.monotonic())

    assert "".join(deltas).strip()
    assert len(deltas) >= 5
    # llama.cpp wrote 32 SmolLM2 tokens over 0.32 s on a 2-core machine, so a
    # relayed stream spreads its chunks over well above 50 ms. A gateway that
    # buffered the whole response would deliver them within a few ms.
    assert arrival_times[-1] - arrival_times[0] > 0.05

    # llama.cpp sends no usage in streams, so the gateway records its local
    # prompt count and a tally of each delta, both with the encoding it uses
    # for the upstream model.
    encoding, _ = token_counter.encoding_for(MODEL_NAME)
    expected_output = sum(count_output_piece(delta, encoding) for delta in deltas)
    expected_input = token_counter.count_chat(list(COUNTING_PROMPT), MODEL_NAME).tokens

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == 200
    assert row["streamed"] == 1
    assert row["estimated"] == 1
    assert row["output_tokens"] == expected_output
    assert row["input_tokens"] == expected_input
    assert row["ttft_ms"] is not None
    assert row["ttft_ms"] <= row["latency_ms"]


def test_wrong_key_is_authentication_error(
    start_gateway: StartGateway, backend: str
) -> None:
    gateway = start_gateway(backend=backend)

    wrong_secret = f"sk-wrong-{secrets.token_urlsafe(16)}"
    with (
        gateway.client_with_secret(wrong_secret) as client,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        client.chat.completions.create(model=MODEL_NAME, messages=SHORT_PROMPT)

    assert raised.value.status_code == 401
    assert wrong_secret not in raised.value.message

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert_rejected_row(rows[0], 401)
    assert rows[0]["key_name"] is None
    assert all(wrong_secret not in line for line in gateway.stdout_lines)


@pytest.mark.parametrize(
    ("key_name", "model"),
    [("dev", OTHER_MODEL_NAME), ("other-models", MODEL_NAME)],
)
def test_disallowed_model_is_permission_denied(
    start_gateway: StartGateway, backend: str, key_name: str, model: str
) -> None:
    gateway = start_gateway(backend=backend)

    with (
        gateway.client(key_name) as client,
        pytest.raises(openai.PermissionDeniedError) as raised,
    ):
        client.chat.completions.create(model=model, messages=SHORT_PROMPT)

    assert raised.value.status_code == 403

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert_rejected_row(rows[0], 403)
    assert rows[0]["key_name"] == key_name


def test_unknown_model_is_not_found(start_gateway: StartGateway, backend: str) -> None:
    gateway = start_gateway(backend=backend)

    with (
        gateway.client("dev") as client,
        pytest.raises(openai.NotFoundError) as raised,
    ):
        client.chat.completions.create(model="no-such-model", messages=SHORT_PROMPT)

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert_rejected_row(rows[0], 404)


def test_long_prompt_is_bad_request(
    start_gateway: StartGateway, backend: str, token_counter: TokenCounter
) -> None:
    gateway = start_gateway(backend=backend)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "hello " * (2 * MAX_INPUT_TOKENS)}
    ]
    prompt_tokens = token_counter.count_chat(list(messages), MODEL_NAME).tokens

    with (
        gateway.client("dev") as client,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        client.chat.completions.create(model=MODEL_NAME, messages=messages)

    assert raised.value.status_code == 400
    assert raised.value.code == "context_length_exceeded"
    numbers = {int(n) for n in re.findall(r"\d+", raised.value.message)}
    assert MAX_INPUT_TOKENS in numbers
    assert prompt_tokens in numbers

    rows = stop_and_read_ledger(gateway)
    assert len(rows) == 1
    assert_rejected_row(rows[0], 400)


def test_third_request_is_rate_limited(
    start_gateway: StartGateway, backend: str
) -> None:
    gateway = start_gateway(backend=backend, limited_requests_per_minute=2)

    with gateway.client("limited") as client:
        for _ in range(2):
            client.chat.completions.create(
                model=MODEL_NAME, messages=SHORT_PROMPT, max_tokens=1
            )
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(
                model=MODEL_NAME, messages=SHORT_PROMPT, max_tokens=1
            )

    headers = raised.value.response.headers
    assert raised.value.status_code == 429
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"

    rows = stop_and_read_ledger(gateway)
    assert [row["status"] for row in rows] == [200, 200, 429]
    assert_rejected_row(rows[2], 429)
    assert rows[2]["key_name"] == "limited"


@pytest.mark.parametrize(
    ("key_name", "expected_models"),
    [("dev", [MODEL_NAME]), ("other-models", [OTHER_MODEL_NAME])],
    ids=["dev", "other-models"],
)
def test_models_list_shows_allowed_models(
    start_gateway: StartGateway,
    backend: str,
    key_name: str,
    expected_models: list[str],
) -> None:
    gateway = start_gateway(backend=backend)

    with gateway.client(key_name) as client:
        listed = sorted(model.id for model in client.models.list())

    assert listed == expected_models


@pytest.mark.redis
def test_two_workers_share_rate_limit(start_gateway: StartGateway) -> None:
    requests_per_minute = 5
    request_count = 12
    gateway = start_gateway(
        backend="redis", workers=2, limited_requests_per_minute=requests_per_minute
    )

    def send_on_new_connection(_: int) -> str:
        # A new client opens a new TCP connection, which the kernel assigns
        # to one of the SO_REUSEPORT listeners by its address hash.
        with gateway.client("limited") as client:
            try:
                client.chat.completions.create(
                    model=MODEL_NAME, messages=SHORT_PROMPT, max_tokens=1
                )
            except openai.RateLimitError:
                return "rate limited"
        return "ok"

    # Sent all at once, so that the bucket cannot refill (one request per
    # 12 s) while the requests run.
    with ThreadPoolExecutor(max_workers=request_count) as pool:
        outcomes = list(pool.map(send_on_new_connection, range(request_count)))

    assert outcomes.count("ok") == requests_per_minute
    assert outcomes.count("rate limited") == request_count - requests_per_minute

    # Read the log after the exit: a worker may log a request after it has
    # sent the response.
    rows = stop_and_read_ledger(gateway)
    malformed = gateway.malformed_stdout_lines()
    assert malformed == [], f"stdout lines that are not one JSON object: {malformed}"
    request_logs = gateway.log_events("request")
    assert len(request_logs) == request_count
    # NOTE: with 12 connections spread by a hash, both workers serve at least
    # one of them except with a probability of about 2 * 2**-12.
    assert len({line["pid"] for line in request_logs}) == 2

    assert len(rows) == request_count
    assert sorted(row["status"] for row in rows) == [200] * requests_per_minute + [
        429
    ] * (request_count - requests_per_minute)

    for by, column in (("key", "key_name"), ("model", "model")):
        totals = {entry["group"]: entry for entry in gateway.usage(by)}
        expected = ledger_totals(rows, column)
        assert set(totals) == set(expected), f"--by {by}"
        for group, expected_totals in expected.items():
            reported = {name: totals[group][name] for name in expected_totals}
            assert reported == expected_totals, f"--by {by}, group {group}"


def ledger_totals(rows: list[dict[str, Any]], column: str) -> dict[str, dict[str, int]]:
    """Add up ledger rows by ``column`` as `llmgw usage` should."""
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        group = totals.setdefault(
            str(row[column]),
            {
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "estimated_requests": 0,
                "errors": 0,
            },
        )
        group["requests"] += 1
        group["input_tokens"] += row["input_tokens"]
        group["output_tokens"] += row["output_tokens"]
        group["cached_tokens"] += row["cached_tokens"]
        group["reasoning_tokens"] += row["reasoning_tokens"]
        group["estimated_requests"] += row["estimated"]
        group["errors"] += 1 if row["status"] >= 400 else 0
    return totals
