"""Run the gateway in-process on loopback in front of ``ProviderMock``.

Every provider kind points at its prefix of one mock server. Each model
route ``<provider>-<scenario>`` sends ``up-<scenario>`` upstream, so the
ledger's model and upstream model differ, and the mock picks its behaviour
from the upstream name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletionMessageParam

from llmgw.config import Config, parse_config
from llmgw.gateway import Gateway
from llmgw.handlers import GATEWAY
from llmgw.server import create_app
from tests.integration.gateway_harness import MAX_LOOP_STALL, LoopWatchdog
from tests.integration.provider_mock import (
    ANTHROPIC_KEY,
    AWS_ACCESS_KEY_ID,
    AWS_REGION,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AZURE_KEY,
    FIXTURES,
    GEMINI_KEY,
    MISTRAL_KEY,
    ProviderMock,
)

DEV_KEY = "sk-test-provider-dev-key"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]

# Scenarios routed for every provider; the mock ignores those it lacks.
SCENARIOS = (
    "text",
    "tool",
    "tool-no-args",
    "text-basic",
    "thinking",
    "truncated-tool",
    "reasoning",
    "crlf",
    "incremental-tool",
    "json-schema",
    "nova-micro-v1:0",
    "drip",
    "stall",
    "stall-mid",
    "reset",
    "cut",
    "corrupt",
    "cache",
    "overloaded-mid",
    "ignore-stream",
    "error-400",
    "error-401",
    "error-403",
    "error-429",
    "invalid-key",
    "error-500",
    "error-503",
    "error-529",
)

requires_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"the recorded provider fixtures are missing: expected them in {FIXTURES}",
)


def provider_config(mock_url: str, sink: Path, extra_models: str = "") -> Config:
    """Build the test configuration. ``extra_models`` are YAML lines added to
    the end of ``models``."""
    providers = f"""
providers:
  - name: anthropic
    kind: anthropic
    base_url: '{mock_url}/anthropic'
    api_key: {ANTHROPIC_KEY}
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: gemini
    kind: gemini
    base_url: '{mock_url}/gemini/v1beta'
    api_key: {GEMINI_KEY}
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: bedrock
    kind: bedrock
    base_url: '{mock_url}/bedrock'
    region: {AWS_REGION}
    aws_access_key_id: {AWS_ACCESS_KEY_ID}
    aws_secret_access_key: '{AWS_SECRET_ACCESS_KEY}'
    aws_session_token: {AWS_SESSION_TOKEN}
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: mistral
    kind: mistral
    base_url: '{mock_url}/mistral/v1'
    api_key: {MISTRAL_KEY}
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: vllm
    kind: vllm
    base_url: '{mock_url}/vllm/v1'
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: ollama
    kind: ollama
    base_url: '{mock_url}/ollama/v1'
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: azure
    kind: azure-openai
    base_url: '{mock_url}/azure'
    api_key: {AZURE_KEY}
    api_version: '2024-10-21'
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
  - name: azure-v1
    kind: azure-openai
    base_url: '{mock_url}/azure'
    api_key: {AZURE_KEY}
    url_form: v1
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 5}}
"""
    provider_names = [
        "anthropic",
        "gemini",
        "bedrock",
        "mistral",
        "vllm",
        "ollama",
        "azure",
        "azure-v1",
    ]
    models = ["models:"]
    for name in provider_names:
        for scenario in SCENARIOS:
            models.append(
                f"  - {{name: '{name}-{scenario}', provider: {name},"
                f" upstream_model: 'up-{scenario}'}}"
            )
    text = "\n".join(
        [
            "server: {listen: '127.0.0.1:4000', read_timeout: 2}",
            f"ledger: {{sink: 'sqlite:///{sink}'}}",
            providers,
            *models,
            extra_models,
            "keys:",
            f"  - {{name: dev, key: {DEV_KEY}, tenant: acme}}",
        ]
    )
    return parse_config(text, "providers-test.yaml")


@dataclass
class ProviderHarness:
    base_url: str
    mock: ProviderMock
    gateway: Gateway
    session: aiohttp.ClientSession
    server: TestServer
    sink_path: Path
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def client(self) -> openai.AsyncOpenAI:
        """An openai SDK client for the gateway, with retries off. The
        harness closes it at the end of the test."""
        client = openai.AsyncOpenAI(
            base_url=self.url("/v1"), api_key=DEV_KEY, max_retries=0, timeout=10
        )
        self.clients.append(client)
        return client

    async def post(self, path: str, body: Any) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {DEV_KEY}"}
        return await self.session.post(
            self.url(path), data=orjson.dumps(body), headers=headers
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


@asynccontextmanager
async def running_providers(
    tmp_path: Path, shutdown_timeout: float = 60.0, extra_models: str = ""
) -> AsyncIterator[ProviderHarness]:
    mock = ProviderMock()
    mock_server = TestServer(mock.app(), host="127.0.0.1")
    await mock_server.start_server()
    sink = tmp_path / "ledger.db"
    mock_url = str(mock_server.make_url("")).rstrip("/")
    config = provider_config(mock_url, sink, extra_models)
    app = create_app(config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(shutdown_timeout=shutdown_timeout)
    watchdog = LoopWatchdog()
    watchdog.start()
    try:
        async with aiohttp.ClientSession() as session:
            harness = ProviderHarness(
                base_url=str(server.make_url("")).rstrip("/"),
                mock=mock,
                gateway=app[GATEWAY],
                session=session,
                server=server,
                sink_path=sink,
            )
            try:
                yield harness
            finally:
                for client in harness.clients:
                    await client.close()
    finally:
        await watchdog.stop()
        await server.close()
        await mock_server.close()
    assert watchdog.worst < MAX_LOOP_STALL, (
        f"the event loop stalled for {watchdog.worst:.3f} s during the test"
    )
