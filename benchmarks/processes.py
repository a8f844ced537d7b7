"""Helpers for the single-measurement benchmarks (Redis trips, token counts,
ledger drain): an llmgw config and command, the mock upstream command,
request bodies, latency summaries and Redis key clean-up.

Every server listens on 127.0.0.1 only. Redis keys go to database 13 under a
prefix unique to the run.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis
from common import HOST, percentile

BENCH_DIR = Path(__file__).resolve().parent
REDIS_DB = 13
REDIS_URL = f"redis://{HOST}:6379/{REDIS_DB}"
POSTGRES_DSN = os.environ.get(
    "LLMGW_BENCH_POSTGRES_DSN", "postgresql://root@127.0.0.1:5432/test"
)
MODEL = "gpt-4o-mini"
STARTUP_TIMEOUT_SECONDS = 30.0
# llmgw waits up to server.shutdown_timeout (30 s by default) for in-flight
# requests, then drains the ledger, so allow more than that.
STOP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class GatewaySetup:
    """One llmgw process: where it listens, its upstream, ledger, key and Redis."""

    port: int
    upstream: str
    ledger: Path
    key: str
    redis_prefix: str
    redis_url: str = REDIS_URL
    max_input_tokens: int | None = None
    max_body_bytes: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def new_gateway_key() -> str:
    return f"sk-bench-{secrets.token_hex(16)}"


def new_redis_prefix(label: str) -> str:
    """Return a Redis key prefix unique to this run and ``label``."""
    return f"llmgw-bench-{label}-{os.getpid()}-{secrets.token_hex(4)}:"


def cleanup_redis(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; return how many there were."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def chat_body(stream: bool) -> bytes:
    """Return a small chat completion request for ``MODEL``."""
    return orjson.dumps(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Write one sentence about the sea."},
            ],
            "max_tokens": 64,
            "stream": stream,
        }
    )


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Return the count and the p50, p99 and maximum in milliseconds."""
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
    }


def mock_upstream_command(port: int) -> list[str]:
    """Return the command of a mock that streams for a body with "stream": true."""
    return [sys.executable, str(BENCH_DIR / "mock_upstream.py"), f"--port={port}"]


def llmgw_config(setup: GatewaySetup) -> str:
    """Return a config whose key limits are checked on every request, never reached."""
    server = f"listen: '{HOST}:{setup.port}'"
    if setup.max_body_bytes is not None:
        server += f", max_body_bytes: {setup.max_body_bytes}"
    policies = "max_output_tokens: 256"
    if setup.max_input_tokens is not None:
        policies += f", max_input_tokens: {setup.max_input_tokens}"
    return f"""\
server: {{{server}}}
redis: {{url: '{setup.redis_url}', key_prefix: '{setup.redis_prefix}'}}
ledger: {{sink: 'sqlite:///{setup.ledger}'}}
logging: {{level: info}}
providers:
  - name: mock
    kind: openai-compatible
    base_url: '{setup.upstream}/v1'
    api_key: sk-mock-upstream
models:
  - {{name: {MODEL}, provider: mock, upstream_model: mock-model}}
keys:
  - name: bench
    key: {setup.key}
    limits: {{requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}}
policies: {{{policies}}}
"""


def llmgw_serve_command(setup: GatewaySetup, workdir: Path) -> list[str]:
    """Write the config into ``workdir``; return the ``llmgw serve`` command."""
    script = Path(sys.executable).parent / "llmgw"
    if not script.exists():
        raise RuntimeError(f"llmgw not found at {script}: install llmgw in this venv")
    config_path = workdir / f"llmgw-{setup.port}.yaml"
    config_path.write_text(llmgw_config(setup))
    return [str(script), "serve", "--config", str(config_path)]


def _wait_ready(process: subprocess.Popen[bytes], name: str, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode} during startup"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} after {STARTUP_TIMEOUT_SECONDS} s")


@contextmanager
def running(
    name: str, command: list[str], workdir: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server for the duration of the block; stop it with SIGTERM on exit.

    Its stdout and stderr go to ``workdir/NAME.log``.
    """
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            _wait_ready(process, name, ready_url)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
