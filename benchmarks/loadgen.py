"""A closed-loop HTTP load generator for the benchmark, loopback only.

``--concurrency`` workers share one aiohttp session. Each sends the chat
completion request in ``--body-file``, reads the whole response, checks it
and sends the next,
until ``--warmup`` plus ``--seconds`` have passed since the start. Requests
that start during the warm-up are counted as sent but left out of the
figures. A request counts as an error when it fails at the transport level,
gets a status other than 200, or returns an incomplete body: JSON without
``choices``, or a stream that does not end with ``data: [DONE]``.

The result is one JSON object on stdout (see ``Tally.summary``).

run.py uses it for the throughput figures when wrk is not installed.

Usage: ``python benchmarks/loadgen.py --url URL --body-file FILE [--stream]
[--header "Name: value"] [options]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from common import is_loopback_url, new_event_loop, percentile

# A single request that takes longer than this counts as an error.
REQUEST_TIMEOUT_SECONDS = 10.0
STREAM_END = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class RequestSpec:
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


@dataclass
class Tally:
    """Outcomes of every request sent, and latencies of the measured ones."""

    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    measured_ok: int = 0
    measured_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last_finish: float = 0.0

    def add(self, error: str | None, measured: bool, latency: float) -> None:
        self.sent += 1
        if error is None:
            self.ok += 1
        else:
            self.errors[error] += 1
        self.last_finish = time.perf_counter()
        if not measured:
            return
        self.latencies.append(latency)
        if error is None:
            self.measured_ok += 1
        else:
            self.measured_errors += 1

    def summary(self, measure_from: float) -> dict[str, object]:
        """Return the result: counts, successful requests per second, latency in ms.

        ``sent``, ``ok`` and ``errors`` include the warm-up. The ``measured_``
        fields, ``rps`` and the percentiles cover only the measured window.
        """
        elapsed = max(self.last_finish - measure_from, 1e-9)
        ordered = sorted(self.latencies)
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "measured_ok": self.measured_ok,
            "measured_errors": self.measured_errors,
            "elapsed_seconds": elapsed,
            "rps": self.measured_ok / elapsed,
            "p50_ms": percentile(ordered, 0.50) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000,
        }


def check_body(body: bytes, stream: bool) -> str | None:
    """Return why a 200 response body is incomplete, or None when it is whole."""
    if stream:
        return None if body.endswith(STREAM_END) else "stream without [DONE]"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "invalid JSON body"
    if not isinstance(parsed, dict) or "choices" not in parsed:
        return "JSON body without choices"
    return None


async def send_one(session: aiohttp.ClientSession, spec: RequestSpec) -> str | None:
    """Send one request, read the whole response and return the error or None."""
    try:
        async with session.post(
            spec.url, data=spec.body, headers=spec.headers
        ) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    if response.status != 200:
        return f"HTTP {response.status}"
    return check_body(body, spec.stream)


async def worker(
    session: aiohttp.ClientSession,
    spec: RequestSpec,
    measure_from: float,
    stop_at: float,
    tally: Tally,
) -> None:
    while (started := time.perf_counter()) < stop_at:
        error = await send_one(session, spec)
        latency = time.perf_counter() - started
        tally.add(error, measured=started >= measure_from, latency=latency)


async def run_load(
    spec: RequestSpec, concurrency: int, warmup: float, seconds: float
) -> dict[str, object]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency)
    tally = Tally()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds
        workers = [
            worker(session, spec, measure_from, stop_at, tally)
            for _ in range(concurrency)
        ]
        await asyncio.gather(*workers)
    return tally.summary(measure_from)


def build_spec(args: argparse.Namespace) -> RequestSpec:
    headers = {"Content-Type": "application/json"}
    for header in args.header:
        name, separator, value = header.partition(":")
        if not separator or not name.strip():
            raise SystemExit(f"invalid --header {header!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return RequestSpec(args.url, headers, args.body_file.read_bytes(), args.stream)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, help="chat completions URL on a loopback address"
    )
    parser.add_argument(
        "--body-file", type=Path, required=True, help="file with the request body"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="extra request header, 'Name: value'; repeatable",
    )
    parser.add_argument(
        "--stream", action="store_true", help="check responses as event streams"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (1 to 1024)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds, not measured"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds (0.1 to 300)"
    )
    args = parser.parse_args(argv)
    if not is_loopback_url(args.url):
        parser.error(f"invalid --url {args.url!r}: expected a loopback address")
    if not 1 <= args.concurrency <= 1024:
        parser.error(f"invalid --concurrency {args.concurrency}: expected 1 to 1024")
    if not 0.1 <= args.seconds <= 300:
        parser.error(f"invalid --seconds {args.seconds}: expected 0.1 to 300")
    if not 0 <= args.warmup <= 60:
        parser.error(f"invalid --warmup {args.warmup}: expected 0 to 60")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    loop = new_event_loop()
    try:
        result = loop.run_until_complete(
            run_load(build_spec(args), args.concurrency, args.warmup, args.seconds)
        )
    finally:
        loop.close()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
