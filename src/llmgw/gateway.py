"""The per-worker state every handler shares: config, keys, routes, back end,
token counter and the upstream session."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from llmgw.admin.store import Store
from llmgw.config import Config
from llmgw.ledger.drain import LedgerDrainer
from llmgw.ledger.sink import Sink
from llmgw.limits.base import Backend
from llmgw.pipeline.authenticate import Authenticator
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.policy import Router
from llmgw.providers.base import Provider
from llmgw.tokens import TokenCounter

log = structlog.get_logger("llmgw.gateway")


@dataclass
class Gateway:
    config: Config
    auth: Authenticator
    store: Store  # managed keys, tenants and teams
    router: Router
    tokens: TokenCounter
    backend: Backend
    sink: Sink
    drainer: LedgerDrainer
    providers: dict[str, Provider]
    # Set once shutdown begins, so requests cut at the end of the grace
    # period are recorded as cut by the server, not by the client.
    stopping: bool = False
    # Handler tasks of requests in flight, so that shutdown can end them
    # with an error response or event before aiohttp closes connections.
    in_flight: dict[asyncio.Task[Any], RequestContext] = field(default_factory=dict)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` to completion even if the request that started it is
        cancelled; shutdown waits for every such task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_failed", error=repr(task.exception()))

    def cut_requests(self) -> None:
        """Cancel every request still in flight. A stream sends the client an
        error event and ends, and any other request responds with 503."""
        for task, ctx in list(self.in_flight.items()):
            ctx.cut_by_shutdown = True
            task.cancel()

    async def wait_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
