"""Three gateway processes behind nginx share one Redis: limits hold exactly.

The test runs on the Redis server and on a three-node Redis Cluster.

Each gateway is a separate ``llmgw serve`` process with its own ledger file,
all on the same Redis key prefix. nginx spreads requests over them round
robin with a new upstream connection per request, so a burst lands on every
process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.integration.conftest import STATE_PARAMS, SharedState, shared_state
from tests.integration.mock_upstream import MockUpstream

pytestmark = pytest.mark.redis

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
GATEWAYS = 3
KEY = "sk-fleet-test-key-0123456789"
REQUESTS_PER_MINUTE = 10
CHAT_BODY = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gateway_config(
    port: int,
    upstream: str,
    ledger: Path,
    prefix: str,
    requests_per_minute: int,
    state: SharedState,
) -> str:
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "shutdown_timeout": 5},
        "redis": {"url": state.url, "key_prefix": prefix, "cluster": state.cluster},
        "ledger": {"sink": f"sqlite:///{ledger}"},
        "providers": [
            {"name": "mock", "kind": "openai-compatible", "base_url": f"{upstream}/v1"}
        ],
        "models": [{"name": "small", "provider": "mock"}],
        "keys": [
            {
                "name": "fleet",
                "key": KEY,
                "limits": {"requests_per_minute": requests_per_minute},
            }
        ],
    }
    return yaml.safe_dump(config)


def _nginx_config(folder: Path, port: int, backends: list[int]) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{backend};" for backend in backends)
    return f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  upstream gateways {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_next_upstream off;
      proxy_read_timeout 30s;
    }}
  }}
}}
"""


@dataclass
class Fleet:
    url: str
    folder: Path
    ledgers: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ledger_rows(self) -> list[tuple[str, int]]:
        rows: list[tuple[str, int]] = []
        for path in self.ledgers:
            with sqlite3.connect(path) as db:
                query = "SELECT request_id, status FROM llmgw_usage"
                rows += db.execute(query).fetchall()
        return rows

    def stop(self) -> list[int]:
        codes: list[int] = []
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=30))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)


async def _wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited early:\n{_tail(log)}")
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 30 s:\n{_tail(log)}")


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    runner = web.AppRunner(MockUpstream().app())
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(params=STATE_PARAMS[1:])
async def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, upstream_url: str
) -> AsyncIterator[Fleet]:
    """Three gateways with a 10 requests-per-minute key, behind nginx."""
    state = shared_state(request)
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    prefix = f"llmgw-fleet-test-{uuid.uuid4().hex[:12]}:"
    nginx_port = _free_port()
    fleet = Fleet(url=f"http://127.0.0.1:{nginx_port}", folder=tmp_path)
    try:
        ports = [_free_port() for _ in range(GATEWAYS)]
        for index, port in enumerate(ports):
            ledger = tmp_path / f"ledger-{index}.db"
            config = tmp_path / f"gateway-{index}.yaml"
            config.write_text(
                _gateway_config(
                    port, upstream_url, ledger, prefix, REQUESTS_PER_MINUTE, state
                )
            )
            log = tmp_path / f"gateway-{index}.log"
            args = [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config)]
            process = _spawn(args, log)
            fleet.processes.append(process)
            fleet.ledgers.append(ledger)
            await _wait_for_http(f"http://127.0.0.1:{port}/healthz", process, log)

        nginx_config = tmp_path / "nginx.conf"
        nginx_config.write_text(_nginx_config(tmp_path, nginx_port, ports))
        nginx_log = tmp_path / "nginx-error.log"
        nginx = _spawn([NGINX, "-c", str(nginx_config), "-p", str(tmp_path)], nginx_log)
        fleet.processes.append(nginx)
        await _wait_for_http(f"{fleet.url}/healthz", nginx, nginx_log)
        yield fleet
    finally:
        fleet.stop()
        await state.delete_keys(prefix)


async def test_fleet_admits_exactly_the_limit(fleet: Fleet) -> None:
    burst = 3 * REQUESTS_PER_MINUTE
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=burst, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> tuple[int, str]:
            async with session.post(
                f"{fleet.url}/v1/chat/completions", json=CHAT_BODY, headers=headers
            ) as response:
                await response.read()
                return response.status, response.headers.get("x-request-id", "")

        started = time.monotonic()
        results = await asyncio.gather(*(send() for _ in range(burst)))
        elapsed = time.monotonic() - started

    statuses = Counter(status for status, _ in results)
    # The bucket refills one request every 60 / limit seconds; a burst that
    # took longer could rightly admit more.
    assert elapsed < 60 / REQUESTS_PER_MINUTE
    assert statuses[200] == REQUESTS_PER_MINUTE
    assert statuses[429] == burst - REQUESTS_PER_MINUTE

    codes = fleet.stop()
    assert codes[:GATEWAYS] == [0] * GATEWAYS
    rows = fleet.ledger_rows()
    # Every request has one row, written by whichever gateway served it, and
    # every gateway served some.
    assert sorted(request_id for request_id, _ in rows) == sorted(
        request_id for _, request_id in results
    )
    assert Counter(status for _, status in rows) == statuses
    served = [len(_rows_of(path)) for path in fleet.ledgers]
    assert all(count > 0 for count in served), served


def _rows_of(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT request_id FROM llmgw_usage").fetchall()
