"""Time the counting of a 100,000-token prompt, and check it stalls nothing.

Part one runs in this process. It builds a chat prompt of about 100,000
``o200k_base`` tokens and times ``TokenCounter.count_chat`` (on the calling
thread) and ``count_chat_async`` (what the gateway awaits, which counts
large prompts in a worker thread). A task that sleeps 1 ms in a loop
measures how late the event loop wakes it (the event-loop lag) during
each async count.

Part two runs ``llmgw serve`` (Redis back end, database 13) in front of the
instant mock upstream, with ``max_input_tokens`` above the prompt's size so
that llmgw counts every prompt. Small chat requests go out at a steady rate
while ``/healthz`` is probed every 10 ms. After a baseline window, large
prompts are sent one after another for a window of the same length. The
report compares the small requests' and the probes' latency (p50, p99, max)
in the baseline window with the window of large prompts. A probe's latency is an
upper bound on llmgw's event-loop lag at that moment.

Usage: ``.venv/bin/python benchmarks/token_count.py [--prompt-tokens N]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from common import HOST, new_event_loop
from processes import (
    MODEL,
    REDIS_URL,
    GatewaySetup,
    chat_body,
    cleanup_redis,
    free_port,
    latency_summary,
    llmgw_serve_command,
    mock_upstream_command,
    new_gateway_key,
    new_redis_prefix,
    running,
)

from llmgw.tokens import TokenCounter

# The encoding llmgw picks for MODEL (gpt-4o-mini).
ENCODING = "o200k_base"
PROBE_INTERVAL_SECONDS = 0.01
LAG_TICK_SECONDS = 0.001
REQUEST_TIMEOUT_SECONDS = 60.0
# Seconds of small requests before the baseline window, not measured.
WARMUP_SECONDS = 2.0

# Words for the generated prompt: English, code and numbers, so the text
# tokenizes like a real log or document rather than one repeated token.
_WORDS = (
    "the gateway routes each request to a provider and records usage in a",
    "ledger tokens limits budgets streams latency cache model prompt completion",
    "worker redis postgres quota tenant team key policy guardrail retry timeout",
    "error kubernetes deployment replica metric trace span dashboard report",
    "invoice alpha beta gamma delta epsilon zeta theta lambda sigma omega 2024",
    "512 8080 function class import return yield async await None True False",
)
WORDS = tuple(word for line in _WORDS for word in line.split())


def build_prompt_text(tokens: int, counter: TokenCounter, seed: int = 11) -> str:
    """Return the text of ``tokens`` tokens in ``ENCODING``.

    Encoded again, the text may count a few tokens more or less, because the
    characters on either side of the cut can merge differently.
    """
    rng = random.Random(seed)
    encoding = counter.encoding(ENCODING)
    pieces: list[str] = []
    # About 1.3 tokens per word in this vocabulary, so this overshoots.
    for line in range(tokens // 10 + 1):
        words = " ".join(rng.choice(WORDS) for _ in range(12))
        pieces.append(f"{line}. {words.capitalize()}.\n")
    ids = encoding.encode_ordinary("".join(pieces))
    if len(ids) < tokens:
        raise RuntimeError(f"generated {len(ids)} tokens, fewer than {tokens}")
    return encoding.decode(ids[:tokens])


def prompt_messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Summarize the log below in one line."},
        {"role": "user", "content": text},
    ]


async def _lag_monitor(stop: asyncio.Event, lags: list[float]) -> None:
    """Record how late each 1 ms sleep wakes up, until ``stop`` is set."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(LAG_TICK_SECONDS)
        lags.append(time.perf_counter() - before - LAG_TICK_SECONDS)


async def _time_async_counts(
    counter: TokenCounter, messages: list[dict[str, str]], repeats: int
) -> tuple[list[float], list[float], int]:
    durations: list[float] = []
    max_lags: list[float] = []
    tokens = 0
    for _ in range(repeats):
        stop = asyncio.Event()
        lags: list[float] = []
        monitor = asyncio.create_task(_lag_monitor(stop, lags))
        await asyncio.sleep(0.05)  # let the monitor tick before the count
        started = time.perf_counter()
        count = await counter.count_chat_async(messages, MODEL)
        durations.append(time.perf_counter() - started)
        stop.set()
        await monitor
        max_lags.append(max(lags, default=0.0))
        tokens = count.tokens
    return durations, max_lags, tokens


def measure_in_process(
    counter: TokenCounter, text: str, repeats: int
) -> dict[str, Any]:
    """Time count_chat and count_chat_async on one prompt and return
    milliseconds."""
    messages = prompt_messages(text)

    sync_durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = counter.count_chat(messages, MODEL)
        sync_durations.append(time.perf_counter() - started)

    loop = new_event_loop()
    try:
        async_durations, max_lags, async_tokens = loop.run_until_complete(
            _time_async_counts(counter, messages, repeats)
        )
    finally:
        loop.close()
    if async_tokens != count.tokens:
        raise RuntimeError(
            f"count_chat_async returned {async_tokens} tokens, count_chat "
            f"{count.tokens}"
        )

    def milliseconds(values: list[float]) -> dict[str, float]:
        return {
            "min_ms": round(min(values) * 1000, 3),
            "median_ms": round(statistics.median(values) * 1000, 3),
            "max_ms": round(max(values) * 1000, 3),
        }

    return {
        "prompt_tokens": count.tokens,
        "prompt_characters": len(text),
        "encoding": ENCODING,
        "repeats": repeats,
        "count_chat": milliseconds(sync_durations),
        "count_chat_async": milliseconds(async_durations),
        "count_chat_async_max_loop_lag": milliseconds(max_lags),
    }


@dataclass
class Samples:
    """Start times (perf_counter seconds) and latencies of timed requests."""

    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, started: float, latency: float, outcome: str) -> None:
        self.outcomes[outcome] += 1
        if outcome == "ok":
            self.starts.append(started)
            self.latencies.append(latency)

    def between(self, begin: float, end: float) -> list[float]:
        return [
            latency
            for started, latency in zip(self.starts, self.latencies, strict=True)
            if begin <= started < end
        ]


async def _timed_post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> str:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    return "ok" if response.status == 200 else f"HTTP {response.status}"


async def _steady(
    rate: float,
    stop: asyncio.Event,
    send: Callable[[], Awaitable[str]],
    samples: Samples,
) -> None:
    """Call ``send`` ``rate`` times a second, on schedule, until ``stop``."""
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()

    async def one(started: float) -> None:
        outcome = await send()
        samples.add(started, time.perf_counter() - started, outcome)

    next_at = time.perf_counter()
    while not stop.is_set():
        now = time.perf_counter()
        if now < next_at:
            await asyncio.sleep(next_at - now)
            continue
        task = asyncio.create_task(one(time.perf_counter()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
    await asyncio.gather(*tasks)


async def _probe(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, samples: Samples
) -> None:
    """Request ``url`` every PROBE_INTERVAL_SECONDS, one at a time."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with session.get(url) as response:
                await response.read()
            outcome = "ok" if response.status == 200 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        samples.add(started, time.perf_counter() - started, outcome)
        await asyncio.sleep(PROBE_INTERVAL_SECONDS)


async def _drive_gateway(
    base_url: str,
    key: str,
    big_body: bytes,
    rate: float,
    window_seconds: float,
) -> dict[str, Any]:
    url = f"{base_url}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    small_body = chat_body(stream=False)
    small, probes, big = Samples(), Samples(), Samples()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send_small() -> str:
            return await _timed_post(session, url, small_body, headers)

        background = [
            asyncio.create_task(_steady(rate, stop, send_small, small)),
            asyncio.create_task(_probe(session, f"{base_url}/healthz", stop, probes)),
        ]
        try:
            await asyncio.sleep(WARMUP_SECONDS)
            baseline_start = time.perf_counter()
            await asyncio.sleep(window_seconds)
            big_start = time.perf_counter()
            while (started := time.perf_counter()) < big_start + window_seconds:
                outcome = await _timed_post(session, url, big_body, headers)
                big.add(started, time.perf_counter() - started, outcome)
            big_end = time.perf_counter()
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*background)

    return {
        "baseline_seconds": round(big_start - baseline_start, 3),
        "large_prompt_window_seconds": round(big_end - big_start, 3),
        "large_prompts": latency_summary(big.latencies),
        "large_prompt_outcomes": dict(big.outcomes),
        "small_requests_per_second": rate,
        "small_baseline": latency_summary(small.between(baseline_start, big_start)),
        "small_during_large": latency_summary(small.between(big_start, big_end)),
        "small_outcomes": dict(small.outcomes),
        "healthz_baseline": latency_summary(probes.between(baseline_start, big_start)),
        "healthz_during_large": latency_summary(probes.between(big_start, big_end)),
        "healthz_outcomes": dict(probes.outcomes),
    }


def measure_gateway(text: str, rate: float, window_seconds: float) -> dict[str, Any]:
    """Run llmgw and measure small requests beside large prompts."""
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-tokens-"))
    prefix = new_redis_prefix("tokens")
    upstream_port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    big_body = orjson.dumps(
        {"model": MODEL, "messages": prompt_messages(text), "max_tokens": 64}
    )
    setup = GatewaySetup(
        port=free_port(),
        upstream=upstream,
        ledger=workdir / "ledger.db",
        key=new_gateway_key(),
        redis_prefix=prefix,
        # Above the prompt's token count (below its character count), so
        # that llmgw counts the prompt and admits it.
        max_input_tokens=len(text),
        max_body_bytes=max(4 * 1024 * 1024, 2 * len(big_body)),
    )
    loop = new_event_loop()
    try:
        with (
            running(
                "mock",
                mock_upstream_command(upstream_port),
                workdir,
                f"{upstream}/healthz",
            ),
            running(
                "llmgw",
                llmgw_serve_command(setup, workdir),
                workdir,
                f"{setup.base_url}/readyz",
            ),
        ):
            results = loop.run_until_complete(
                _drive_gateway(
                    setup.base_url,
                    setup.key,
                    big_body,
                    rate,
                    window_seconds,
                )
            )
    finally:
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            cleanup_redis(REDIS_URL, prefix)
        except redis.exceptions.RedisError as exc:
            print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")
    results["large_prompt_bytes"] = len(big_body)
    return results


def measure(
    *,
    prompt_tokens: int = 100_000,
    repeats: int = 5,
    rate: float = 50.0,
    window_seconds: float = 10.0,
    gateway: bool = True,
) -> dict[str, Any]:
    """Time the count in process, then (with ``gateway``) through llmgw.

    ``rate`` is small requests per second. The baseline window and the
    window of large prompts each last ``window_seconds``.
    """
    started = time.perf_counter()
    counter = TokenCounter()
    load_seconds = time.perf_counter() - started
    text = build_prompt_text(prompt_tokens, counter)
    in_process = measure_in_process(counter, text, repeats)
    in_process["counter_load_ms"] = round(load_seconds * 1000, 1)
    results: dict[str, Any] = {"in_process": in_process}
    if gateway:
        results["gateway"] = measure_gateway(text, rate, window_seconds)
    return results


def format_report(results: dict[str, Any]) -> str:
    local = results["in_process"]
    lag = local["count_chat_async_max_loop_lag"]
    lines = [
        f"Prompt: {local['prompt_tokens']} tokens ({local['encoding']}), "
        f"{local['prompt_characters']} characters; median of {local['repeats']}:",
        f"  count_chat        {local['count_chat']['median_ms']:8.1f} ms "
        f"(min {local['count_chat']['min_ms']:.1f})",
        f"  count_chat_async  {local['count_chat_async']['median_ms']:8.1f} ms "
        f"(min {local['count_chat_async']['min_ms']:.1f})",
        f"  event-loop lag during count_chat_async: median of the maxima "
        f"{lag['median_ms']:.2f} ms, worst {lag['max_ms']:.2f} ms",
    ]
    gateway = results.get("gateway")
    if gateway is None:
        return "\n".join(lines)
    big = gateway["large_prompts"]
    lines += [
        "",
        f"Through llmgw: {big['count']} large prompts ({gateway['large_prompt_bytes']} "
        f"bytes) in {gateway['large_prompt_window_seconds']:.2f} s, each "
        f"p50 {big['p50_ms']:.0f} ms, max {big['max_ms']:.0f} ms; "
        f"{gateway['small_requests_per_second']:g} small requests/s beside them.",
        f"{'':<24} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for label, name in (
        ("small, baseline", "small_baseline"),
        ("small, during large", "small_during_large"),
        ("/healthz, baseline", "healthz_baseline"),
        ("/healthz, during large", "healthz_during_large"),
    ):
        row = gateway[name]
        lines.append(
            f"{label:<24} {row['count']:>6} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )
    lines.append(
        f"Outcomes: small {gateway['small_outcomes']}, large "
        f"{gateway['large_prompt_outcomes']}, /healthz {gateway['healthz_outcomes']}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prompt-tokens",
        type=int,
        default=100_000,
        help="tokens in the large prompt (1000-1000000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="in-process counts to time (1-100)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="small requests per second sent through llmgw (1-1000)",
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=10.0,
        help="seconds of the baseline window and of the large-prompt window (1-300)",
    )
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="time the count in this process only, without starting llmgw",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    checks = (
        ("--prompt-tokens", args.prompt_tokens, 1000, 1_000_000),
        ("--repeats", args.repeats, 1, 100),
        ("--rate", args.rate, 1, 1000),
        ("--window-seconds", args.window_seconds, 1, 300),
    )
    for option, value, low, high in checks:
        if not low <= value <= high:
            parser.error(f"invalid {option} {value}: expected {low} to {high}")

    results = measure(
        prompt_tokens=args.prompt_tokens,
        repeats=args.repeats,
        rate=args.rate,
        window_seconds=args.window_seconds,
        gateway=not args.no_gateway,
    )
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print()
    else:
        print(format_report(results))
    gateway = results.get("gateway")
    if gateway is None:
        return 0
    failed = [
        name
        for name in ("small_outcomes", "large_prompt_outcomes", "healthz_outcomes")
        if set(gateway[name]) != {"ok"}
    ]
    if failed:
        print(f"ERRORS in {', '.join(failed)}: see the outcomes above.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
