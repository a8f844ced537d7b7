"""A gateway whose Redis is unreachable follows redis.on_unavailable.

Nothing listens on port 1 of 127.0.0.1, so every Redis call fails at once
with a refused connection.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.integration.gateway_harness import LIMITED_KEY, running_gateway

DEAD_REDIS = "redis://127.0.0.1:1/0"
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {
    "model": "small",
    "messages": [{"role": "user", "content": "Hi"}],
}


async def test_fail_closed_rejects_at_once(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, DEAD_REDIS, "unused:") as gw:
        started = time.monotonic()
        response = await gw.post(CHAT, BODY, key=LIMITED_KEY)
        elapsed = time.monotonic() - started
        body = await response.json()
        await gw.gateway.wait_background()
        rows = gw.sink_rows()

    assert response.status == 503
    assert body["error"]["code"] == "backend_unavailable"
    assert "Redis" in body["error"]["message"]
    assert elapsed < 5
    # The record went straight to the sink, because Redis is down.
    assert [row["status"] for row in rows] == [503]


async def test_fail_open_admits_without_limits(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, DEAD_REDIS, "unused:") as gw:
        config = gw.gateway.config
        assert config.redis is not None
        gw.gateway.config = replace(
            config, redis=replace(config.redis, on_unavailable="fail_open")
        )
        with capture_logs() as logs:
            statuses = [
                (await gw.post(CHAT, BODY, key=LIMITED_KEY)).status for _ in range(3)
            ]
        await gw.gateway.wait_background()
        rows = gw.sink_rows()

    # The key allows 2 requests a minute, which nothing can check now.
    assert statuses == [200, 200, 200]
    assert [row["status"] for row in rows] == [200, 200, 200]
    events = [entry["event"] for entry in logs]
    assert events.count("admission_failed_open") == 3


async def test_readiness_reports_redis_down(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, DEAD_REDIS, "unused:") as gw:
        response = await gw.session.get(gw.url("/readyz"))
    assert response.status == 503
