"""Run the load generators as child processes and return their results.

Closed loop (throughput): wrk with ``wrk_chat.lua``, which checks the status
and body of every response, or ``loadgen.py`` when wrk is not installed.
Open loop (latency and streams): ``open_loop.py``. Each generator runs in
its own process, so its CPU use shows up as such and not inside the harness.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from targets import Endpoint

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk_chat.lua"
WRK_RESULT_PREFIX = "wrk-result "
# Seconds a single request may take before it counts as an error.
REQUEST_TIMEOUT_SECONDS = 10.0
# Seconds a generator may run beyond its own windows before it is killed.
GENERATOR_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class ClosedLoop:
    connections: int
    seconds: float
    warmup: float
    threads: int
    use_wrk: bool


def header_args(endpoint: Endpoint) -> list[str]:
    return [f"{name}: {value}" for name, value in endpoint.headers.items()]


def run_json_command(command: list[str], limit: float, name: str) -> dict[str, Any]:
    """Run a generator that prints one JSON object; raise RuntimeError on failure."""
    completed = subprocess.run(command, capture_output=True, timeout=limit, check=False)
    if completed.returncode != 0:
        stderr = completed.stderr.decode(errors="replace").strip()
        raise RuntimeError(
            f"{name} failed with exit code {completed.returncode}: {stderr}"
        )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk_once(
    endpoint: Endpoint, body_file: Path, options: ClosedLoop, seconds: int
) -> dict[str, Any]:
    """Run wrk for whole ``seconds`` and return the counts that the script printed."""
    command = [
        "wrk",
        f"--threads={options.threads}",
        f"--connections={options.connections}",
        f"--duration={seconds}s",
        f"--timeout={REQUEST_TIMEOUT_SECONDS:g}s",
        f"--script={WRK_SCRIPT}",
        endpoint.url,
        "--",
        str(body_file),
        '"choices"',
        *header_args(endpoint),
    ]
    limit = seconds + GENERATOR_MARGIN_SECONDS
    completed = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    for line in completed.stdout.splitlines():
        if line.startswith(WRK_RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line.removeprefix(WRK_RESULT_PREFIX))
            return result
    raise RuntimeError(
        f"wrk printed no result (exit code {completed.returncode}): "
        f"{completed.stderr.strip() or completed.stdout.strip()}"
    )


def wrk_errors(raw: dict[str, Any]) -> dict[str, int]:
    counts = {
        "non-200 status": raw["bad_status"],
        "incomplete body": raw["incomplete"],
        "connect error": raw["connect_errors"],
        "read error": raw["read_errors"],
        "write error": raw["write_errors"],
        "timeout": raw["timeouts"],
    }
    return {name: int(count) for name, count in counts.items() if count}


def run_wrk(endpoint: Endpoint, body_file: Path, options: ClosedLoop) -> dict[str, Any]:
    """Run a warm-up and a measured wrk run; return requests per second and errors.

    wrk takes whole seconds, so both windows are rounded up to at least 1 s.
    """
    sent = 0
    completed = 0
    warmup_errors: dict[str, int] = {}
    if options.warmup > 0:
        warm = run_wrk_once(endpoint, body_file, options, math.ceil(options.warmup))
        sent += int(warm["sent"])
        completed += int(warm["completed"])
        warmup_errors = wrk_errors(warm)
    raw = run_wrk_once(endpoint, body_file, options, math.ceil(options.seconds))
    sent += int(raw["sent"])
    completed += int(raw["completed"])
    errors = wrk_errors(raw)
    good = int(raw["completed"]) - int(raw["bad_status"]) - int(raw["incomplete"])
    seconds = int(raw["duration_us"]) / 1e6
    return {
        "generator": "wrk",
        "rps": good / seconds,
        "completed": int(raw["completed"]),
        "seconds": seconds,
        "sent": sent,
        # wrk closes its connections when its time is up, cutting the
        # requests in flight: these have no response.
        "cut_at_end": sent - completed,
        "errors": errors,
        "warmup_errors": warmup_errors,
        "latency_ms": {"p50": raw["p50_us"] / 1000, "p99": raw["p99_us"] / 1000},
    }


def run_loadgen(
    endpoint: Endpoint, body_file: Path, options: ClosedLoop
) -> dict[str, Any]:
    """Run the Python closed-loop generator (``loadgen.py``)."""
    command = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        f"--url={endpoint.url}",
        f"--body-file={body_file}",
        f"--concurrency={options.connections}",
        f"--warmup={options.warmup}",
        f"--seconds={options.seconds}",
        *(f"--header={header}" for header in header_args(endpoint)),
    ]
    limit = options.warmup + options.seconds + GENERATOR_MARGIN_SECONDS
    raw = run_json_command(command, limit, "loadgen.py")
    return {
        "generator": "python",
        "rps": raw["rps"],
        "completed": int(raw["measured_ok"]) + int(raw["measured_errors"]),
        "seconds": raw["elapsed_seconds"],
        "sent": raw["sent"],
        # loadgen.py counts errors of the warm-up and the measured window together.
        "errors": raw["errors"],
        "warmup_errors": {},
        "latency_ms": {"p50": raw["p50_ms"], "p99": raw["p99_ms"]},
    }


def run_closed_loop(
    endpoint: Endpoint, body_file: Path, options: ClosedLoop
) -> dict[str, Any]:
    if options.use_wrk and wrk_available():
        return run_wrk(endpoint, body_file, options)
    return run_loadgen(endpoint, body_file, options)


def run_open_loop(
    endpoint: Endpoint,
    body_file: Path,
    rate: float,
    seconds: float,
    warmup: float,
    expect_chunks: int | None = None,
) -> dict[str, Any]:
    """Run ``open_loop.py`` at ``rate``; streams when ``expect_chunks`` is given."""
    command = [
        sys.executable,
        str(BENCH_DIR / "open_loop.py"),
        f"--url={endpoint.url}",
        f"--body-file={body_file}",
        f"--rate={rate}",
        f"--seconds={seconds}",
        f"--warmup={warmup}",
        f"--timeout={REQUEST_TIMEOUT_SECONDS}",
        *(f"--header={header}" for header in header_args(endpoint)),
    ]
    if expect_chunks is not None:
        command += ["--stream", f"--expect-chunks={expect_chunks}"]
    limit = warmup + seconds + REQUEST_TIMEOUT_SECONDS + GENERATOR_MARGIN_SECONDS
    result = run_json_command(command, limit, "open_loop.py")
    result["generator"] = "open_loop.py"
    return result
