"""Rate limits, concurrency, quotas, budgets and the ledger stream, in
process or in Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgw.limits.base import (
    Admission,
    Backend,
    Bucket,
    BucketState,
    Charge,
    Commit,
    ConcurrencyLimit,
    Lease,
    LedgerEntry,
    PeriodLimit,
    Reserve,
    Shortfall,
)
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.redis import RedisBackend

if TYPE_CHECKING:
    from llmgw.config import Config

__all__ = [
    "Admission",
    "Backend",
    "Bucket",
    "BucketState",
    "Charge",
    "Commit",
    "ConcurrencyLimit",
    "Lease",
    "LedgerEntry",
    "MemoryBackend",
    "PeriodLimit",
    "RedisBackend",
    "Reserve",
    "Shortfall",
    "open_backend",
]


async def open_backend(config: Config) -> Backend:
    """Create the back end the configuration names.

    Without a ``redis`` section this is the in-process ``MemoryBackend``,
    which limits one process only. A gateway starts while Redis is down and
    reports it through ``Backend.ping``. Raises ValueError when Redis is a
    cluster node but ``redis.cluster`` is off.
    """
    if config.redis is None:
        return MemoryBackend()
    backend = RedisBackend.from_url(
        config.redis.url,
        prefix=config.redis.key_prefix,
        claim_idle_ms=round(config.ledger.claim_idle_seconds * 1000),
        cluster=config.redis.cluster,
        cluster_nodes=config.redis.cluster_addresses,
    )
    try:
        await backend.prepare()
    except BaseException:
        await backend.close()
        raise
    return backend
