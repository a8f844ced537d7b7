"""Run the gateway in-process on loopback against a mock upstream."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from llmgw.config import Config, parse_config
from llmgw.gateway import Gateway
from llmgw.handlers import GATEWAY
from llmgw.server import create_app
from tests.integration.mock_upstream import PROVIDER_KEY, MockUpstream

DEV_KEY = "sk-test-dev-key"
LIMITED_KEY = "sk-test-limited-key"
TOKENS_KEY = "sk-test-tokens-key"
GPT_ONLY_KEY = "sk-test-gpt-only"


def gateway_config(
    upstream_url: str,
    sink: Path,
    redis_url: str | None,
    prefix: str,
    extra: str = "",
    cluster: bool = False,
) -> Config:
    redis = ""
    if redis_url:
        redis = (
            f"redis: {{url: '{redis_url}', key_prefix: '{prefix}', "
            f"cluster: {str(cluster).lower()}}}"
        )
    text = textwrap.dedent(
        f"""\
        server: {{listen: '127.0.0.1:4000', max_body_bytes: 20000, read_timeout: 1}}
        {redis}
        ledger: {{sink: 'sqlite:///{sink}'}}
        providers:
          - name: mock
            kind: openai-compatible
            base_url: '{upstream_url}/v1'
            api_key: {PROVIDER_KEY}
            timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
        models:
          - name: small
            provider: mock
            upstream_model: small-v2
            max_output_tokens: 50
          - {{name: gpt-4o, provider: mock, max_input_tokens: 40}}
          - {{name: embed, provider: mock, upstream_model: text-embedding-3-small}}
          - {{name: 'mock-*', provider: mock}}
        keys:
          - {{name: dev, key: {DEV_KEY}, tenant: acme}}
          - name: limited
            key: {LIMITED_KEY}
            limits: {{requests_per_minute: 2}}
          - name: tokens
            key: {TOKENS_KEY}
            max_output_tokens: 20
            limits: {{tokens_per_minute: 200}}
          - {{name: gpt-only, key: {GPT_ONLY_KEY}, models: ['gpt-*']}}
        policies: {{max_output_tokens: 100}}
        {extra}
        """
    )
    return parse_config(text, "test.yaml")


@dataclass
class Harness:
    base_url: str
    upstream: MockUpstream
    gateway: Gateway
    session: aiohttp.ClientSession
    sink_path: Path
    server: TestServer

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def post(
        self, path: str, body: Any, key: str | None = DEV_KEY, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.session.post(
            self.url(path), json=body, headers=headers, **kwargs
        )

    async def ledger_rows(self) -> list[dict[str, Any]]:
        """Drain the back end's stream into the sink, then read the sink."""
        await self.gateway.wait_background()
        while await self.gateway.drainer.drain_once():
            pass
        return self.sink_rows()

    def sink_rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.sink_path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM llmgw_usage ORDER BY ts").fetchall()
        return [dict(row) for row in rows]


# The maximum time the event loop may go without running a ready task
# while a test runs. Far above normal scheduling noise, far below a blocking call
# such as a synchronous network read or a big prompt counted on the loop.
MAX_LOOP_STALL = 0.5


class LoopWatchdog:
    """Measure the longest stall of the event loop while it runs.

    The objects of the test session so far are left out of garbage
    collection while it runs. In a traced run, a full collection of pytest's
    whole heap stalled the loop for 0.45 s, which a gateway process, whose
    start-up objects ``serve`` freezes as well, does not see.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = time.perf_counter() - before - self.interval
            self.worst = max(self.worst, late)

    def start(self) -> None:
        gc.freeze()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            gc.unfreeze()


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    redis_url: str | None,
    prefix: str,
    extra: str = "",
    shutdown_timeout: float = 60.0,
    cluster: bool = False,
) -> AsyncIterator[Harness]:
    upstream = MockUpstream()
    upstream_server = TestServer(upstream.app(), host="127.0.0.1")
    await upstream_server.start_server()
    sink = tmp_path / "ledger.db"
    config = gateway_config(
        str(upstream_server.make_url("")).rstrip("/"),
        sink,
        redis_url,
        prefix,
        extra,
        cluster=cluster,
    )
    app = create_app(config)
    server = TestServer(app, host="127.0.0.1")
    # TestServer ignores runner options given to its constructor.
    await server.start_server(shutdown_timeout=shutdown_timeout)
    watchdog = LoopWatchdog()
    watchdog.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Harness(
                base_url=str(server.make_url("")).rstrip("/"),
                upstream=upstream,
                gateway=app[GATEWAY],
                session=session,
                sink_path=sink,
                server=server,
            )
    finally:
        await watchdog.stop()
        await server.close()
        await upstream_server.close()
    assert watchdog.worst < MAX_LOOP_STALL, (
        f"the event loop stalled for {watchdog.worst:.3f} s during the test"
    )
