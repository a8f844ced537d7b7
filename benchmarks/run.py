"""Benchmark llmgw side by side with a bare aiohttp pass-through proxy.

Every process listens on 127.0.0.1 only. The script starts an instant mock
upstream (``mock_upstream.py``), then one target at a time: the mock itself,
the pass-through proxy (``passthrough.py``), ``llmgw serve`` with the embedded
back end and ``llmgw serve`` with Redis. A load generator in its own process
(``loadgen.py``) drives each target with non-streaming, then streaming
requests. The script prints a table, the ratios of llmgw to the pass-through,
and for each llmgw run whether the SQLite ledger contains one row per request
sent. It stops every process it started and removes its temporary folder and
its Redis keys.

Usage: ``.venv/bin/python benchmarks/run.py [--seconds N] [--concurrency C]``
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import redis

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
REDIS_URL = "redis://127.0.0.1:6379/13"
MODEL = "gpt-4o-mini"
STARTUP_TIMEOUT_SECONDS = 30.0
# llmgw waits up to server.shutdown_timeout (30 s by default) for in-flight
# requests, then drains the ledger, so allow more than that.
STOP_TIMEOUT_SECONDS = 60.0
MODES = ("non-stream", "stream")
PASSTHROUGH = "pass-through"
LLMGW_TARGETS = ("llmgw embedded", "llmgw redis")


@dataclass(frozen=True)
class Options:
    seconds: float
    concurrency: int
    warmup: float


@dataclass
class TargetResult:
    """Load results of one target by mode, and its ledger check if any."""

    name: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger_note: str | None = None
    failure: str | None = None


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(name: str, command: list[str], workdir: Path) -> Server:
    """Start ``command`` with its stdout and stderr in a log file in ``workdir``."""
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
    )
    return Server(name, process, log_path, log_file)


def log_tail(server: Server, lines: int = 15) -> str:
    text = server.log_path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_ready(server: Server, url: str) -> None:
    """Poll ``url`` until it returns 200.

    Raise RuntimeError if the server exits first or the startup timeout passes.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.process.returncode} "
                f"during startup. Last log lines:\n{log_tail(server)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} not ready at {url} after {STARTUP_TIMEOUT_SECONDS} s"
    )


def stop_server(server: Server) -> int | None:
    """Stop the server with SIGTERM (SIGKILL after the timeout); return its code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"WARNING: {server.name} ignored SIGTERM; killing it", flush=True)
            server.process.kill()
            server.process.wait()
    server.log_file.close()
    return server.process.returncode


@contextmanager
def running(
    name: str, command: list[str], workdir: Path, ready_url: str
) -> Iterator[Server]:
    """Run a server for the duration of the block; stop it on any exit."""
    server = start_server(name, command, workdir)
    try:
        wait_ready(server, ready_url)
        yield server
    finally:
        stop_server(server)


def llmgw_command() -> list[str]:
    """Return the ``llmgw`` entry point of the running interpreter's environment."""
    script = Path(sys.executable).parent / "llmgw"
    if not script.exists():
        raise RuntimeError(f"llmgw not found at {script}: install llmgw in this venv")
    return [str(script)]


def llmgw_config(
    port: int, upstream: str, ledger: Path, key: str, redis_prefix: str | None
) -> str:
    """Return a config whose key limits are checked on every request, never reached."""
    redis_line = ""
    if redis_prefix is not None:
        redis_line = f"redis: {{url: '{REDIS_URL}', key_prefix: '{redis_prefix}'}}"
    return f"""\
server: {{listen: '{HOST}:{port}'}}
{redis_line}
ledger: {{sink: 'sqlite:///{ledger}'}}
logging: {{level: info}}
providers:
  - name: mock
    kind: openai-compatible
    base_url: '{upstream}/v1'
    api_key: sk-mock-upstream
models:
  - {{name: {MODEL}, provider: mock, upstream_model: mock-model}}
keys:
  - name: bench
    key: {key}
    limits: {{requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}}
policies: {{max_output_tokens: 256, max_input_tokens: 4000}}
"""


def count_ledger_rows(ledger: Path) -> int:
    with sqlite3.connect(ledger) as connection:
        row = connection.execute("SELECT COUNT(*) FROM llmgw_usage").fetchone()
    return int(row[0])


def check_ledger(ledger: Path, runs: dict[str, dict[str, Any]]) -> str:
    """Compare the ledger row count with every request the generator sent."""
    sent = sum(int(run["sent"]) for run in runs.values())
    ok = sum(int(run["ok"]) for run in runs.values())
    rows = count_ledger_rows(ledger)
    counts = f"{rows} ledger rows, {sent} requests sent ({ok} ok, {sent - ok} failed)"
    if rows == sent:
        return f"ledger OK: {counts}"
    return f"LEDGER MISMATCH ({rows - sent:+d}): {counts}"


def delete_redis_keys(client: redis.Redis, prefix: str) -> int:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


def run_load(url: str, key: str, stream: bool, options: Options) -> dict[str, Any]:
    """Run the load generator once against ``url`` and return its result."""
    command = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        f"--url={url}",
        f"--key={key}",
        f"--model={MODEL}",
        f"--concurrency={options.concurrency}",
        f"--warmup={options.warmup}",
        f"--seconds={options.seconds}",
    ]
    if stream:
        command.append("--stream")
    # The generator stops by itself; the margin covers requests in flight.
    limit = options.warmup + options.seconds + 60
    completed = subprocess.run(command, capture_output=True, timeout=limit, check=False)
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace")
        raise RuntimeError(
            f"load generator failed with exit code {completed.returncode}: {stderr}"
        )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def drive(name: str, url: str, key: str, options: Options) -> TargetResult:
    result = TargetResult(name)
    for mode in MODES:
        print(f"  {name}: {mode} ...", flush=True)
        run = run_load(url, key, mode == "stream", options)
        result.runs[mode] = run
        if run["errors"]:
            print(f"  ERRORS in {name} {mode}: {run['errors']}", flush=True)
    return result


@dataclass(frozen=True)
class Context:
    workdir: Path
    upstream: str
    key: str
    options: Options
    redis_prefix: str


def bench_mock(context: Context) -> TargetResult:
    url = f"{context.upstream}/v1/chat/completions"
    return drive("mock (direct)", url, context.key, context.options)


def bench_passthrough(context: Context) -> TargetResult:
    port = free_port()
    command = [
        sys.executable,
        str(BENCH_DIR / "passthrough.py"),
        f"--port={port}",
        f"--upstream={context.upstream}",
    ]
    base = f"http://{HOST}:{port}"
    with running(PASSTHROUGH, command, context.workdir, f"{base}/healthz"):
        return drive(
            PASSTHROUGH, f"{base}/v1/chat/completions", context.key, context.options
        )


def bench_llmgw(context: Context, name: str, use_redis: bool) -> TargetResult:
    """Benchmark one llmgw process, stop it, then check its ledger."""
    slug = name.replace(" ", "-")
    port = free_port()
    ledger = context.workdir / f"{slug}.db"
    config_path = context.workdir / f"{slug}.yaml"
    prefix = context.redis_prefix if use_redis else None
    config = llmgw_config(port, context.upstream, ledger, context.key, prefix)
    config_path.write_text(config)

    command = [*llmgw_command(), "serve", "--config", str(config_path)]
    base = f"http://{HOST}:{port}"
    server = start_server(name, command, context.workdir)
    try:
        wait_ready(server, f"{base}/readyz")
        result = drive(
            name, f"{base}/v1/chat/completions", context.key, context.options
        )
    finally:
        code = stop_server(server)
    if code != 0:
        print(f"WARNING: {name} exited with code {code}:\n{log_tail(server)}")
    result.ledger_note = check_ledger(ledger, result.runs)
    return result


def run_target(
    label: str, bench: Callable[[Context], TargetResult], context: Context
) -> TargetResult:
    """Run one benchmark, or report its failure so the other targets still run."""
    print(f"{label} ...", flush=True)
    try:
        result = bench(context)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"FAILED: {label}: {exc}", flush=True)
        return TargetResult(label, failure=str(exc))
    return result


def format_table(results: list[TargetResult]) -> str:
    header = f"{'target':<16} {'mode':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    lines = [header + f" {'errors':>7}", "-" * (len(header) + 8)]
    for result in results:
        if result.failure is not None:
            lines.append(f"{result.name:<16} FAILED: {result.failure.splitlines()[0]}")
            continue
        for mode, run in result.runs.items():
            errors = int(run["measured_errors"])
            lines.append(
                f"{result.name:<16} {mode:<10} {run['rps']:>9.0f} "
                f"{run['p50_ms']:>8.2f} {run['p99_ms']:>8.2f} {errors:>7d}"
            )
    return "\n".join(lines)


def format_ratios(results: list[TargetResult]) -> str:
    """Return llmgw's throughput and p50 latency relative to the pass-through."""
    by_name = {result.name: result for result in results if result.failure is None}
    baseline = by_name.get(PASSTHROUGH)
    if baseline is None:
        return "No ratios: the pass-through run failed."
    lines = ["Ratios against the pass-through (req/s ratio, p50 latency ratio):"]
    for name in LLMGW_TARGETS:
        target = by_name.get(name)
        if target is None:
            continue
        for mode in MODES:
            ours, base = target.runs[mode], baseline.runs[mode]
            rps_ratio = ours["rps"] / base["rps"] if base["rps"] else float("nan")
            p50_ratio = ours["p50_ms"] / base["p50_ms"] if base["p50_ms"] else 0.0
            lines.append(
                f"  {name} / {PASSTHROUGH}, {mode}: "
                f"req/s x{rps_ratio:.2f}, p50 x{p50_ratio:.2f}"
            )
    if len(lines) == 1:
        lines.append("  none: no llmgw run finished")
    return "\n".join(lines)


def format_problems(results: list[TargetResult]) -> list[str]:
    problems = []
    for result in results:
        if result.failure is not None:
            problems.append(f"{result.name} failed to run")
        for mode, run in result.runs.items():
            if run["errors"]:
                problems.append(f"{result.name} {mode}: errors {run['errors']}")
        if result.ledger_note and not result.ledger_note.startswith("ledger OK"):
            problems.append(f"{result.name}: {result.ledger_note}")
    return problems


def print_report(results: list[TargetResult], options: Options) -> bool:
    """Print the figures and return False when any run had errors or a mismatch."""
    print()
    print(
        f"{options.concurrency} concurrent requests, {options.warmup:g} s warm-up, "
        f"{options.seconds:g} s measured per mode, {os.cpu_count()} CPUs"
    )
    print(format_table(results))
    print()
    print(format_ratios(results))
    print()
    for result in results:
        if result.ledger_note:
            print(f"{result.name}: {result.ledger_note}")
    problems = format_problems(results)
    if problems:
        print()
        print("!" * 72)
        print("THIS RUN HAD ERRORS; its figures are not comparable:")
        for problem in problems:
            print(f"  - {problem}")
        print("!" * 72)
    return not problems


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per run (1-300)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (1-1024)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds before each run"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 300:
        parser.error(f"invalid --seconds {args.seconds}: expected 1 to 300")
    if not 1 <= args.concurrency <= 1024:
        parser.error(f"invalid --concurrency {args.concurrency}: expected 1 to 1024")
    if not 0 <= args.warmup <= 60:
        parser.error(f"invalid --warmup {args.warmup}: expected 0 to 60")
    return Options(args.seconds, args.concurrency, args.warmup)


def redis_available(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        print(f"WARNING: Redis at {REDIS_URL} unavailable ({exc}); skipping it")
        return False
    return True


def run_all(context: Context, client: redis.Redis) -> list[TargetResult]:
    port = int(context.upstream.rsplit(":", 1)[1])
    mock_command = [
        sys.executable,
        str(BENCH_DIR / "mock_upstream.py"),
        f"--port={port}",
    ]
    results = []
    with running("mock", mock_command, context.workdir, f"{context.upstream}/healthz"):
        results.append(run_target("mock (direct)", bench_mock, context))
        results.append(run_target(PASSTHROUGH, bench_passthrough, context))
        embedded = partial(bench_llmgw, name="llmgw embedded", use_redis=False)
        results.append(run_target("llmgw embedded", embedded, context))
        if redis_available(client):
            with_redis = partial(bench_llmgw, name="llmgw redis", use_redis=True)
            results.append(run_target("llmgw redis", with_redis, context))
    return results


def main() -> int:
    options = parse_args(sys.argv[1:])
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    prefix = f"llmgw-bench-{os.getpid()}-{secrets.token_hex(4)}:"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    context = Context(
        workdir=workdir,
        upstream=f"http://{HOST}:{free_port()}",
        key=f"sk-bench-{secrets.token_hex(16)}",
        options=options,
        redis_prefix=prefix,
    )
    try:
        results = run_all(context, client)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            deleted = delete_redis_keys(client, prefix)
            print(f"Deleted {deleted} Redis keys under {prefix!r} in database 13")
        except redis.exceptions.RedisError as exc:
            print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")
        client.close()
    return 0 if print_report(results, options) else 1


if __name__ == "__main__":
    sys.exit(main())
