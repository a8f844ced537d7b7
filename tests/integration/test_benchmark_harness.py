"""Smoke tests of the side-by-side benchmark harness, benchmarks/run.py.

They run the harness with windows of half a second, so the figures mean
nothing about speed; the tests check that every part runs and reports
positive figures without errors. The harness uses nginx and wrk when they
are installed and falls back to its Python mock and load generator when
they are not; the second test forces that fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

RUN_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
REDIS_URL = "redis://127.0.0.1:6379/13"
TINY_WINDOWS = [
    "--seconds=0.5",
    "--warmup=0",
    "--rates=50",
    "--stream-rate=10",
    "--chunks=5",
]


def run_harness(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run the harness; return its JSON results after checking its exit code."""
    output = tmp_path / "results.json"
    command = [sys.executable, str(RUN_SCRIPT), *TINY_WINDOWS, f"--json={output}"]
    completed = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr
    results: dict[str, Any] = json.loads(output.read_text())
    return results


def require_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} does not answer: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {exc}")
    finally:
        client.close()


@pytest.mark.redis
def test_harness_direct_aiohttp_llmgw(tmp_path: Path) -> None:
    require_redis()
    targets = ("direct", "aiohttp", "llmgw")
    results = run_harness(
        tmp_path,
        f"--targets={','.join(targets)}",
        "--only=throughput,latency,streaming",
    )

    assert results["problems"] == []
    assert results["failed_requests"] == []
    for target in targets:
        assert results["targets"][target]["skipped"] is None
        assert results["targets"][target]["failed"] == []

        throughput = results["throughput"][target]
        assert throughput["rps"] > 0
        assert throughput["errors"] == {}

        latency = results["latency"]["50"][target]
        assert latency["measured_ok"] > 0
        assert latency["latency_ms"]["p50"] > 0
        assert latency["errors"] == {}

        streaming = results["streaming"][target]
        assert streaming["measured_ok"] > 0
        assert streaming["first_chunk_ms"]["p50"] > 0
        assert streaming["last_chunk_ms"]["p50"] > streaming["first_chunk_ms"]["p50"]
        assert streaming["gap_ms"]["p50"] > 0
        assert streaming["errors"] == {}

    [ledger] = results["ledger"]
    assert ledger["target"] == "llmgw"
    assert ledger["ok"] is True
    assert ledger["rows"] > 0
    assert results["figures"]["ratio llmgw/aiohttp"] > 0
    assert "added ttft p50 ms llmgw" in results["figures"]


def test_harness_python_fallbacks(tmp_path: Path) -> None:
    results = run_harness(
        tmp_path,
        "--targets=direct",
        "--only=throughput,streaming",
        "--python-mock",
        "--python-loadgen",
    )

    assert results["problems"] == []
    assert results["failed_requests"] == []
    assert results["mock"]["kind"] == "python"
    throughput = results["throughput"]["direct"]
    assert throughput["generator"] == "python"
    assert throughput["rps"] > 0
    assert throughput["errors"] == {}
    streaming = results["streaming"]["direct"]
    assert streaming["measured_ok"] > 0
    assert streaming["gap_ms"]["p50"] > 0
    assert streaming["errors"] == {}
