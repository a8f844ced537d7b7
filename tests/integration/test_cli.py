"""The `llmgw` command as an operator runs it: start-up failures, the worker
supervisor and the usage report, each in a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from llmgw.config import load_config
from llmgw.pipeline.authenticate import KeyStore

LLMGW = [sys.executable, "-m", "llmgw.cli"]
REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int, redis_prefix: str | None) -> Path:
    redis_line = (
        f"redis: {{url: '{REDIS_URL}', key_prefix: '{redis_prefix}'}}"
        if redis_prefix
        else ""
    )
    config = tmp_path / "llmgw.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server: {{listen: '127.0.0.1:{port}', shutdown_timeout: 5}}
            {redis_line}
            ledger: {{sink: 'sqlite:///{tmp_path / "ledger.db"}'}}
            providers:
              - {{name: p, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}}
            models:
              - {{name: m, provider: p}}
            keys:
              - {{name: dev, key: sk-cli-test}}
            """
        )
    )
    return config


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"llmgw-cli-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_for(predicate: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {seconds} s")


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("event") == event:
                events.append(entry)
    return events


@pytest.mark.parametrize(
    "use_redis",
    [False, pytest.param(True, marks=pytest.mark.redis)],
    ids=["memory", "redis"],
)
def test_port_in_use_fails_fast(
    tmp_path: Path, redis_prefix: str, use_redis: bool
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port, redis_prefix if use_redis else None)
        result = subprocess.run(
            [*LLMGW, "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_sink_fails_fast(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    text = config.read_text().replace(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        "postgresql://nobody@127.0.0.1:9/none",
    )
    config.write_text(text)
    result = subprocess.run(
        [*LLMGW, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: failed to start" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_without_ledger_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    result = subprocess.run(
        [*LLMGW, "usage", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "no ledger at" in result.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_check_config_names_line_and_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    line = len(config.read_text().splitlines()) + 1
    config.write_text(config.read_text() + "policies: {max_output_tokens: -1}\n")
    result = subprocess.run(
        [*LLMGW, "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{config}:{line}: policies.max_output_tokens" in result.stderr


@pytest.mark.redis
def test_supervisor_replaces_killed_worker(tmp_path: Path, redis_prefix: str) -> None:
    port = free_port()
    config = write_config(tmp_path, port, redis_prefix)
    stdout = tmp_path / "stdout.log"
    with stdout.open("wb") as out:
        parent = subprocess.Popen(
            [*LLMGW, "serve", "--config", str(config), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: len(log_events(stdout, "listening")) == 2)
            # Past the supervisor's start-up window, so a death is a crash to
            # recover from, not a failed start.
            time.sleep(5.5)
            first = log_events(stdout, "worker_started")[0]
            os.kill(int(str(first["worker_pid"])), signal.SIGKILL)

            wait_for(lambda: len(log_events(stdout, "worker_started")) == 3)
            wait_for(lambda: len(log_events(stdout, "listening")) == 3)
            assert ready(port)
            [exited] = log_events(stdout, "worker_exited")
            assert exited["worker_pid"] == first["worker_pid"]
            assert exited["exit_code"] == -signal.SIGKILL
        finally:
            parent.send_signal(signal.SIGTERM)
            code = parent.wait(timeout=30)
    assert code == 0
    assert len(log_events(stdout, "stopped")) == 2


# The delays fall after the imports (about 0.2 s here) and inside the
# start-up (about 1 s here), where a SIGINT used to leave the process hung.
@pytest.mark.parametrize("delay", [0.6, 0.8, 1.0, 1.5])
def test_sigint_during_startup_stops(tmp_path: Path, delay: float) -> None:
    config = write_config(tmp_path, free_port(), None)
    process = subprocess.Popen(
        [*LLMGW, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        _stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"llmgw serve hung after SIGINT at {delay} s") from None
    assert process.returncode == 0
    assert "Traceback" not in stderr


def test_keys_new_entry_authenticates_its_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [*LLMGW, "keys", "new", "--name", "ci"], capture_output=True, text=True
    )
    assert result.returncode == 0
    key = result.stdout.split("shown once, give it to the caller): ")[1].split()[0]
    entry = result.stdout.split("config entry:\n")[1]

    config = write_config(tmp_path, free_port(), None)
    text = config.read_text().replace("  - {name: dev, key: sk-cli-test}\n", entry)
    config.write_text(text)
    loaded = load_config(config)
    assert [k.name for k in loaded.keys] == ["ci"]
    assert KeyStore(loaded.keys).lookup(key) is not None
    assert key not in config.read_text()

    hashed = subprocess.run(
        [*LLMGW, "keys", "hash"], input=f"{key}\n", capture_output=True, text=True
    )
    assert hashed.stdout.strip() == loaded.keys[0].key_sha256
