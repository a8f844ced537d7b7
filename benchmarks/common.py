"""Helpers shared by the benchmark's servers, load generators and harness."""

from __future__ import annotations

import asyncio
import os
import signal
from urllib.parse import urlsplit

HOST = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Create a uvloop loop when uvloop is installed, as ``llmgw serve`` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def is_loopback_url(url: str) -> bool:
    """Return True when ``url`` names a loopback host."""
    return urlsplit(url).hostname in LOOPBACK_HOSTS


def percentile(ordered: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted values, or 0.0 when empty."""
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def stop_when_orphaned(parent_pid: int) -> None:
    """Send SIGTERM to this process once its parent has exited.

    A server that the harness started must not outlive a harness that was
    killed before it could stop its children.
    """
    # A parent's exit sets off no event in the child, so poll for it.
    while os.getppid() == parent_pid:  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
