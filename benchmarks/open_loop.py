"""An open-loop HTTP load generator for the benchmark, loopback only.

Requests start on a fixed schedule, ``--rate`` per second, whether or not
earlier ones have finished, so a slow target cannot slow the load down
(no coordinated omission). Each request's latency runs from its scheduled
start, or from its real start when the timer fired up to a millisecond
early, to the end of its response. Requests scheduled during ``--warmup``
are sent and checked but left out of the figures. After the last scheduled
request the generator waits for those in flight, at most ``--timeout``
seconds.

A request counts as an error when it fails at the transport level, times
out, gets a status other than 200, or returns an incomplete body. A body is
incomplete when it is JSON without ``choices``, or a stream without
``data: [DONE]`` or with another number of content chunks than
``--expect-chunks``.

For streams (``--stream``) it also records, from the scheduled start, the
time to the first and to the last content chunk, and the gaps between
consecutive content chunks of each stream as the client reads them. A gap
under 1 ms means two chunks arrived together: something held the first one
back.

The result is one JSON object on stdout.

Usage: ``python benchmarks/open_loop.py --url URL --body-file FILE --rate R
[--stream --expect-chunks N] [--header "Name: value"] [options]``
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

EVENT_END = b"\n\n"
DONE = b"[DONE]"
# Gaps shorter than this mean the chunks arrived in one read.
COALESCED_GAP_SECONDS = 0.001
# Seconds by which a timer may fire early and its request still start.
EARLY_START_SECONDS = 0.001


@dataclass(frozen=True)
class Spec:
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    expect_chunks: int | None


@dataclass
class StreamTimes:
    """Read times of one stream's content chunks, and whether it ended."""

    chunks: list[float] = field(default_factory=list)
    done: bool = False


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Requests that failed before any response status arrived.
    no_response: int = 0
    measured: int = 0
    measured_ok: int = 0
    latencies: list[float] = field(default_factory=list)
    start_lags: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    last_chunk: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)

    def add(
        self,
        start: float,
        error: str | None,
        measured: bool,
        times: StreamTimes | None,
    ) -> None:
        finished = time.perf_counter()
        self.sent += 1
        if error is not None:
            self.errors[error] += 1
        else:
            self.ok += 1
        if not measured:
            return
        self.measured += 1
        if error is not None:
            return
        self.measured_ok += 1
        self.latencies.append(finished - start)
        if times is not None and times.chunks:
            self.first_chunk.append(times.chunks[0] - start)
            self.last_chunk.append(times.chunks[-1] - start)
            pairs = zip(times.chunks, times.chunks[1:], strict=False)
            self.gaps.extend(later - earlier for earlier, later in pairs)


def content_of(event: bytes) -> str | None:
    """Return the content text of a chat completion chunk event, or None."""
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data.startswith(b"{"):
            return None
        payload = orjson.loads(data)
        choices = payload.get("choices") or []
        if not choices:
            return None
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        return content if isinstance(content, str) else None
    return None


async def read_stream(response: aiohttp.ClientResponse) -> StreamTimes:
    """Read a server-sent event stream, timing each content chunk."""
    times = StreamTimes()
    pending = b""
    async for chunk in response.content.iter_any():
        now = time.perf_counter()
        pending += chunk.replace(b"\r\n", b"\n")
        *events, pending = pending.split(EVENT_END)
        for event in events:
            if event.strip() == b"data: " + DONE or event.strip() == b"data:" + DONE:
                times.done = True
            elif content_of(event):
                times.chunks.append(now)
    return times


def check_stream(times: StreamTimes, expect_chunks: int | None) -> str | None:
    if not times.done:
        return "stream without [DONE]"
    if expect_chunks is not None and len(times.chunks) != expect_chunks:
        return f"stream with {len(times.chunks)} of {expect_chunks} content chunks"
    return None


def check_json(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "invalid JSON body"
    if not isinstance(parsed, dict) or "choices" not in parsed:
        return "JSON body without choices"
    return None


async def send_one(
    session: aiohttp.ClientSession, spec: Spec
) -> tuple[str | None, StreamTimes | None, bool]:
    """Send one request and read the whole response.

    Return the error or None, the stream's chunk times, and whether the
    response status arrived.
    """
    times = None
    responded = False
    try:
        async with session.post(
            spec.url, data=spec.body, headers=spec.headers
        ) as response:
            responded = True
            if response.status != 200:
                await response.read()
                return f"HTTP {response.status}", None, True
            if spec.stream:
                times = await read_stream(response)
                return check_stream(times, spec.expect_chunks), times, True
            return check_json(await response.read()), None, True
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, times, responded


async def request(
    session: aiohttp.ClientSession,
    spec: Spec,
    start: float,
    measured: bool,
    tally: Tally,
) -> None:
    error, times, responded = await send_one(session, spec)
    if not responded:
        tally.no_response += 1
    tally.add(start, error, measured, times)


async def run_schedule(
    session: aiohttp.ClientSession,
    spec: Spec,
    rate: float,
    warmup: float,
    seconds: float,
    tally: Tally,
) -> set[asyncio.Task[None]]:
    """Start every scheduled request; return the tasks still running."""
    begin = time.perf_counter() + 0.01
    measure_from = begin + warmup
    total = round((warmup + seconds) * rate)
    running: set[asyncio.Task[None]] = set()
    for index in range(total):
        due = begin + index / rate
        # Timers have millisecond resolution, so wake up a little early.
        while (wait := due - time.perf_counter()) > EARLY_START_SECONDS:  # noqa: ASYNC110
            await asyncio.sleep(wait - EARLY_START_SECONDS / 2)
        now = time.perf_counter()
        # Late: from the scheduled start. Early: from the real one.
        start = min(due, now)
        if due >= measure_from:
            tally.start_lags.append(max(0.0, now - due))
        task = asyncio.create_task(
            request(session, spec, start, due >= measure_from, tally)
        )
        running.add(task)
        task.add_done_callback(running.discard)
    return running


async def run_load(
    spec: Spec,
    rate: float,
    warmup: float,
    seconds: float,
    request_timeout: float,
    max_connections: int,
) -> dict[str, object]:
    tally = Tally()
    connections = Counter[str]()

    async def on_connection(*_args: object) -> None:
        connections["opened"] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connection)
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    connector = aiohttp.TCPConnector(limit=max_connections)
    async with aiohttp.ClientSession(
        timeout=client_timeout, connector=connector, trace_configs=[trace]
    ) as session:
        running = await run_schedule(session, spec, rate, warmup, seconds, tally)
        if running:
            _done, late = await asyncio.wait(running, timeout=request_timeout + 1)
            for task in late:
                task.cancel()
            if late:
                tally.errors["unfinished at the end"] += len(late)
                tally.sent += len(late)
                tally.no_response += len(late)
    return summarize(tally, rate, seconds, connections["opened"])


def milliseconds(values: list[float], fractions: dict[str, float]) -> dict[str, float]:
    ordered = sorted(values)
    summary = {
        name: round(percentile(ordered, fraction) * 1000, 3)
        for name, fraction in fractions.items()
    }
    summary["max"] = round((ordered[-1] if ordered else 0.0) * 1000, 3)
    return summary


LATENCY_FRACTIONS = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
GAP_FRACTIONS = {"p1": 0.01, "p50": 0.50, "p99": 0.99}


def summarize(
    tally: Tally, rate: float, seconds: float, connections: int
) -> dict[str, object]:
    """Return the result; ``sent``, ``ok`` and ``errors`` include the warm-up."""
    result: dict[str, object] = {
        "offered_rate": rate,
        "sent": tally.sent,
        "ok": tally.ok,
        "errors": dict(tally.errors),
        "no_response": tally.no_response,
        "measured": tally.measured,
        "measured_ok": tally.measured_ok,
        "measured_errors": tally.measured - tally.measured_ok,
        "achieved_rate": round(tally.measured_ok / seconds, 1),
        "connections_opened": connections,
        "start_lag_ms": milliseconds(tally.start_lags, {"p50": 0.5, "p99": 0.99}),
        "latency_ms": milliseconds(tally.latencies, LATENCY_FRACTIONS),
    }
    if tally.first_chunk:
        result["first_chunk_ms"] = milliseconds(tally.first_chunk, LATENCY_FRACTIONS)
        result["last_chunk_ms"] = milliseconds(tally.last_chunk, LATENCY_FRACTIONS)
        result["gap_ms"] = milliseconds(tally.gaps, GAP_FRACTIONS)
        coalesced = sum(1 for gap in tally.gaps if gap < COALESCED_GAP_SECONDS)
        result["gaps"] = len(tally.gaps)
        result["coalesced_gaps"] = coalesced
    return result


def parse_header(text: str) -> tuple[str, str]:
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(
            f"invalid header {text!r}: expected Name: value"
        )
    return name.strip(), value.strip()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="URL on a loopback address")
    parser.add_argument("--body-file", type=Path, required=True, help="request body")
    parser.add_argument(
        "--header",
        type=parse_header,
        action="append",
        default=[],
        help="extra request header, 'Name: value'; repeatable",
    )

    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--stream", action="store_true", help="read event streams")
    parser.add_argument(
        "--expect-chunks", type=int, help="content chunks every stream must carry"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds allowed per request"
    )
    parser.add_argument(
        "--max-connections", type=int, default=1024, help="connection pool size"
    )

    args = parser.parse_args(argv)
    if not is_loopback_url(args.url):
        parser.error(f"invalid --url {args.url!r}: expected a loopback address")
    if not 0 < args.rate <= 20000:
        parser.error(f"invalid --rate {args.rate}: expected above 0, at most 20000")
    if not 0.1 <= args.seconds <= 600:
        parser.error(f"invalid --seconds {args.seconds}: expected 0.1 to 600")
    if not 0 <= args.warmup <= 120:
        parser.error(f"invalid --warmup {args.warmup}: expected 0 to 120")
    if not 0.1 <= args.timeout <= 120:
        parser.error(f"invalid --timeout {args.timeout}: expected 0.1 to 120")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])
    headers = {"Content-Type": "application/json", **dict(args.header)}
    spec = Spec(
        args.url, headers, args.body_file.read_bytes(), args.stream, args.expect_chunks
    )
    loop = new_event_loop()
    try:
        result = loop.run_until_complete(
            run_load(
                spec,
                args.rate,
                args.warmup,
                args.seconds,
                args.timeout,
                args.max_connections,
            )
        )
    finally:
        loop.close()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
