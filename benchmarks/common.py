"""Helpers shared by the benchmark's server and load generator scripts."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Create a uvloop loop when uvloop is installed, as ``llmgw serve`` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
