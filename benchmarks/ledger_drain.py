"""Measure how many ledger records per second the drain moves into each sink.

The script appends realistic usage records to a Redis ledger stream through
``RedisBackend.append_record``, in database 13 under a key prefix unique to
the run. Then it starts ``LedgerDrainer`` with the gateway's settings and
times it until the stream is empty. It does so once into a fresh SQLite
file and once into a fresh table of the PostgreSQL database ``test`` on
127.0.0.1, and checks that each sink then contains exactly one row per
record. The Redis keys, the file and the table are removed afterwards.

Usage: ``.venv/bin/python benchmarks/ledger_drain.py [--records N] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis
import redis.asyncio
from common import is_loopback_url, new_event_loop
from processes import POSTGRES_DSN, REDIS_URL, cleanup_redis, new_redis_prefix

from llmgw.ledger.drain import LedgerDrainer
from llmgw.ledger.postgres import PostgresSink
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.sink import Sink
from llmgw.ledger.sqlite import SQLiteSink
from llmgw.limits.redis import RedisBackend

TARGET_POSTGRES_RECORDS_PER_SECOND = 20_000
SINKS = ("sqlite", "postgres")
# Appends in flight while the stream is filled.
FILL_CONCURRENCY = 64
# A drain that moves nothing for this long has stalled.
STALL_SECONDS = 60.0

_MODELS = (
    ("gpt-4o-mini", "openai", "gpt-4o-mini-2024-07-18"),
    ("gpt-4o", "openai", "gpt-4o-2024-08-06"),
    ("o3-mini", "openai", "o3-mini-2025-01-31"),
    ("claude-sonnet", "anthropic", "claude-sonnet-4-20250514"),
    ("smollm2", "local", "smollm2-135m-instruct"),
    ("text-embedding-3-small", "openai", "text-embedding-3-small"),
)
_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
_KEYS = tuple(
    f"{tenant}-{role}" for tenant in _TENANTS for role in ("ci", "dev", "bot")
)


def realistic_records(count: int, seed: int = 7) -> list[UsageRecord]:
    """Build ``count`` varied usage records with unique request ids.

    The mix (about 60% streams, 4% errors, some cached and reasoning tokens
    and estimates) resembles a gateway's traffic, so each record has the
    field sizes a real one has.
    """
    rng = random.Random(seed)
    start = time.time() - 86_400
    run_id = secrets.token_hex(4)
    records = []
    for index in range(count):
        model, provider, upstream_model = rng.choice(_MODELS)
        key_name = rng.choice(_KEYS)
        embedding = model.startswith("text-embedding")
        streamed = not embedding and rng.random() < 0.6
        roll = rng.random()
        status, error_type, aborted = 200, None, False
        if roll < 0.03:
            status, error_type = 429, "rate_limit_exceeded"
        elif roll < 0.04:
            status, error_type = 502, "upstream_unreachable"
        elif roll < 0.05 and streamed:
            status, error_type, aborted = 499, "client_closed_request", True
        ok = status == 200
        input_tokens = int(rng.lognormvariate(6.5, 1.2)) if status != 429 else 0
        output_tokens = 0 if embedding or not ok else int(rng.lognormvariate(5, 1))
        latency = rng.lognormvariate(6.8, 0.8)
        records.append(
            UsageRecord(
                request_id=f"req_{run_id}{index:012x}",
                ts=round(start + index * 0.8 + rng.random(), 6),
                route="/v1/embeddings" if embedding else "/v1/chat/completions",
                key_name=key_name,
                tenant=key_name.split("-", 1)[0],
                model=model,
                provider=provider,
                upstream_model=upstream_model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_tokens=input_tokens // 2 if rng.random() < 0.2 else 0,
                reasoning_tokens=output_tokens // 3 if model.startswith("o3") else 0,
                estimated=rng.random() < 0.05,
                status=status,
                error_type=error_type,
                latency_ms=round(latency, 3),
                ttft_ms=round(latency * rng.random(), 3) if streamed else None,
                streamed=streamed,
                client_aborted=aborted,
            )
        )
    return records


async def fill_stream(backend: RedisBackend, records: Sequence[UsageRecord]) -> float:
    """Append every record with ``append_record`` and return the seconds taken."""
    queue = iter(records)

    async def appender() -> None:
        for record in queue:
            await backend.append_record(record)

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(FILL_CONCURRENCY)))
    return time.perf_counter() - started


async def wait_until_empty(
    client: redis.asyncio.Redis, stream: str, drainer: LedgerDrainer
) -> None:
    """Wait until the ledger stream is empty.

    The drainer deletes each entry when it acknowledges it, after the commit.
    Raises RuntimeError when the drain stalls or the drainer stops.
    """
    last_length = -1
    last_change = time.monotonic()
    while True:
        length = await client.xlen(stream)
        if length == 0:
            return
        now = time.monotonic()
        if length != last_length:
            last_length, last_change = length, now
        elif now - last_change > STALL_SECONDS:
            raise RuntimeError(
                f"ledger drain stalled: {length} entries left for {STALL_SECONDS:g} s"
            )
        if not drainer.running:
            raise RuntimeError(f"ledger drainer stopped with {length} entries left")
        await asyncio.sleep(0.01)


async def count_rows(sink_name: str, location: str, table: str) -> int:
    if sink_name == "sqlite":
        with sqlite3.connect(location) as connection:
            row = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(row[0])
    conn = await asyncpg.connect(location)
    try:
        count: int = await conn.fetchval(f"SELECT COUNT(*) FROM {table}")
    finally:
        await conn.close()
    return count


async def drop_postgres_table(table: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await conn.close()


def open_bench_sink(sink_name: str, workdir: Path, table: str) -> tuple[Sink, str]:
    """Create a fresh sink and return it with its file path or DSN."""
    if sink_name == "sqlite":
        path = str(workdir / f"{table}.db")
        return SQLiteSink(path, table=table), path
    return PostgresSink(POSTGRES_DSN, table=table), POSTGRES_DSN


async def drain_into(
    sink_name: str,
    records: Sequence[UsageRecord],
    prefix: str,
    workdir: Path,
    profiler: cProfile.Profile | None,
) -> dict[str, Any]:
    """Fill the stream, drain it into a fresh sink and check the row count."""
    table = f"llmgw_bench_drain_{secrets.token_hex(6)}"
    backend = RedisBackend.from_url(REDIS_URL, prefix=prefix)
    inspector = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    sink, location = open_bench_sink(sink_name, workdir, table)
    try:
        fill_seconds = await fill_stream(backend, records)
        await sink.open()
        drainer = LedgerDrainer(backend, sink, consumer=f"bench-{sink_name}")

        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        drainer.start()
        try:
            await wait_until_empty(inspector, backend.ledger_key, drainer)
            seconds = time.perf_counter() - started
        finally:
            await drainer.stop()
            if profiler is not None:
                profiler.disable()
        await sink.close()

        rows = await count_rows(sink_name, location, table)
    finally:
        await sink.close()
        await inspector.aclose()
        await backend.close()
        if sink_name == "postgres":
            await drop_postgres_table(table)
    return {
        "records": len(records),
        "rows": rows,
        "rows_match": rows == len(records),
        "seconds": round(seconds, 3),
        "records_per_second": round(len(records) / seconds),
        "fill_seconds": round(fill_seconds, 3),
    }


async def _measure(
    count: int, sinks: Sequence[str], workdir: Path, profile: bool
) -> tuple[dict[str, Any], str | None]:
    records = realistic_records(count)
    profiler = cProfile.Profile() if profile else None
    results: dict[str, Any] = {}
    for sink_name in sinks:
        prefix = new_redis_prefix("drain")
        print(f"  {sink_name}: filling and draining {count} records ...", flush=True)
        try:
            results[sink_name] = await drain_into(
                sink_name, records, prefix, workdir, profiler
            )
        finally:
            try:
                cleanup_redis(REDIS_URL, prefix)
            except redis.exceptions.RedisError as exc:
                print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")
    report = None
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        report = text.getvalue()
    return results, report


def measure(
    *,
    records: int = 100_000,
    sinks: Sequence[str] = SINKS,
    profile: bool = False,
) -> dict[str, Any]:
    """Time the ledger drain into each sink and return records per second.

    With ``profile``, the result's ``profile`` entry is the text of a
    cProfile report over every drain, sorted by own time.
    """
    unknown = set(sinks) - set(SINKS)
    if unknown:
        raise ValueError(f"invalid sinks {sorted(unknown)}: expected {SINKS}")
    if "postgres" in sinks and not is_loopback_url(POSTGRES_DSN):
        raise ValueError(
            "invalid PostgreSQL DSN: the benchmark drops tables, so it connects "
            "to a server on a loopback address only"
        )
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-drain-"))
    loop = new_event_loop()
    try:
        results, report = loop.run_until_complete(
            _measure(records, sinks, workdir, profile)
        )
    finally:
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)
    results["target_postgres_records_per_second"] = TARGET_POSTGRES_RECORDS_PER_SECOND
    if report is not None:
        results["profile"] = report
    return results


def format_report(results: dict[str, Any]) -> str:
    lines = [f"{'sink':<9} {'records':>8} {'seconds':>8} {'rec/s':>8}  rows"]
    for sink_name in SINKS:
        figures = results.get(sink_name)
        if figures is None:
            continue
        rows = "match" if figures["rows_match"] else f"MISMATCH ({figures['rows']})"
        lines.append(
            f"{sink_name:<9} {figures['records']:>8} {figures['seconds']:>8.2f} "
            f"{figures['records_per_second']:>8}  {rows}"
        )
    postgres = results.get("postgres")
    if postgres is not None:
        target = results["target_postgres_records_per_second"]
        verdict = "met" if postgres["records_per_second"] >= target else "NOT MET"
        lines.append(f"Target: >= {target} records/s into PostgreSQL: {verdict}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records",
        type=int,
        default=100_000,
        help="records to append and drain per sink (1-2000000)",
    )
    parser.add_argument(
        "--sink",
        choices=SINKS,
        action="append",
        help="drain into this sink only; repeat for both (default: both)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile report of the drains, sorted by own time",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if not 1 <= args.records <= 2_000_000:
        parser.error(f"invalid --records {args.records}: expected 1 to 2000000")

    results = measure(
        records=args.records, sinks=args.sink or SINKS, profile=args.profile
    )
    report = results.pop("profile", None)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print()
    else:
        print(format_report(results))
    if report is not None:
        print(report)
    return 0 if all(results[name]["rows_match"] for name in args.sink or SINKS) else 1


if __name__ == "__main__":
    sys.exit(main())
