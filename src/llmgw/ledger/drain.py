"""Move usage records from the back end's ledger stream to the durable sink.

Entries are acknowledged only after the sink has committed them. A drainer
that dies between the commit and the ack leaves them pending, so the next
read delivers them again. The sink skips request ids it already contains, so
nothing is lost and nothing is stored twice, as long as the stream itself
survives (a Redis restart without persistence empties it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    # Imported for annotations only: llmgw.limits imports llmgw.ledger.
    from llmgw.ledger.sink import Sink
    from llmgw.limits.base import Backend

log = structlog.get_logger()

# Error lines list at most this many entry ids, then the total count.
_MAX_LOGGED_IDS = 20


# A consumer idle this long with nothing pending belongs to a stopped
# worker: every live drainer reads at least once per block_ms.
_PRUNE_IDLE_MS = 10 * 60 * 1000


class LedgerDrainer:
    """A background task that copies the ledger stream into the sink.

    ``consumer`` must be unique per process (for example host and pid) but
    stable across restarts of the drain loop, so a restarted loop gets its
    own pending entries back first. ``block_ms`` is how long one read waits
    for new entries. After a batch smaller than ``batch`` the loop waits
    ``linger`` seconds so that entries gather, because each batch costs one
    sink transaction (an fsync for SQLite). After an error the loop waits
    ``retry_delay`` seconds, doubling up to ``max_retry_delay``.
    """

    def __init__(
        self,
        backend: Backend,
        sink: Sink,
        consumer: str,
        batch: int = 500,
        block_ms: int = 1000,
        *,
        linger: float = 0.2,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        if batch < 1:
            raise ValueError(f"invalid ledger drain batch {batch}: expected >= 1")
        if block_ms < 1:
            # With 0 the loop would poll the back end without pausing.
            raise ValueError(f"invalid ledger drain block_ms {block_ms}: expected >= 1")
        self.backend = backend
        self.sink = sink
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.linger = linger
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Calls for one consumer take turns: concurrent ones would each read
        # the same pending entries and write them twice.
        self._drain_lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the drain loop as a task on the running event loop."""
        if self.running:
            raise RuntimeError(f"ledger drainer {self.consumer!r} is already running")
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(
            self._run(), name=f"ledger-drainer-{self.consumer}"
        )
        log.info("ledger_drainer_started", consumer=self.consumer)

    async def stop(self) -> None:
        """Stop the loop, then drain every entry still readable.

        Call it after the workers stop settling requests: the final drain
        runs until a read returns nothing. An error in the final drain is
        logged, and the entries it left stay in a Redis stream for the next start.
        """
        await self._stop_loop()
        drained = 0
        try:
            while moved := await self.drain_once():
                drained += moved
        except Exception as exc:
            # Shutdown goes on: with Redis the entries stay pending for the
            # next drainer, with the memory back end they are lost.
            log.error(
                "ledger_final_drain_failed",
                consumer=self.consumer,
                drained=drained,
                error=repr(exc),
            )
            return
        log.info("ledger_drainer_stopped", consumer=self.consumer, drained=drained)

    async def drain_once(self, *, block_ms: int = 0) -> int:
        """Move one batch to the sink and acknowledge it.

        Returns the number of entries acknowledged, 0 when none were readable
        within ``block_ms`` (0 does not wait). While the loop runs, a call
        first waits for the loop's current batch, which may take ``block_ms``.
        """
        async with self._drain_lock:
            return await self._drain_batch(block_ms)

    async def _drain_batch(self, block_ms: int) -> int:
        entries = await self.backend.read_ledger(self.consumer, self.batch, block_ms)
        if not entries:
            return 0
        entry_ids = [entry.entry_id for entry in entries]

        try:
            inserted = await self.sink.write([entry.record for entry in entries])
        except Exception as exc:
            self._log_failure("ledger_sink_write_failed", entry_ids, exc)
            raise

        try:
            await self.backend.ack_ledger(entry_ids)
        except Exception as exc:
            # The records are committed: a redelivery is skipped by the sink.
            self._log_failure("ledger_ack_failed", entry_ids, exc)
            raise

        if inserted < len(entries):
            log.info(
                "ledger_duplicates_skipped",
                consumer=self.consumer,
                entries=len(entries),
                inserted=inserted,
            )
        return len(entries)

    async def _prune_consumers(self) -> None:
        """Forget the consumers that stopped workers left in the group."""
        try:
            pruned = await self.backend.prune_consumers(_PRUNE_IDLE_MS)
        except Exception as exc:  # housekeeping only: the drain goes on
            log.warning("ledger_consumer_prune_failed", error=repr(exc))
            return
        if pruned:
            log.info("ledger_consumers_pruned", consumer=self.consumer, pruned=pruned)

    async def _run(self) -> None:
        await self._prune_consumers()
        delay = self._retry_delay
        while not self._stopping.is_set():
            try:
                moved = await self.drain_once(block_ms=self.block_ms)
            except Exception as exc:
                # Any failure of the sink or the back end: the entries stay in
                # the stream, so waiting and reading again loses nothing.
                log.warning(
                    "ledger_drain_retrying",
                    consumer=self.consumer,
                    retry_in_seconds=delay,
                    error=repr(exc),
                )
                await self._sleep_unless_stopping(delay)
                delay = min(delay * 2, self._max_retry_delay)
            else:
                delay = self._retry_delay
                if 0 < moved < self.batch:
                    await self._sleep_unless_stopping(self.linger)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _stop_loop(self) -> None:
        task = self._task
        if task is None:
            return
        self._task = None
        self._stopping.set()

        # The loop notices the flag after its current read, which blocks for
        # at most block_ms. Past that (a slow sink write), cancel it: an
        # unacknowledged batch is delivered again to the final drain.
        try:
            _done, pending = await asyncio.wait(
                {task}, timeout=self.block_ms / 1000 + 1
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        if pending:
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "ledger_drainer_crashed",
                consumer=self.consumer,
                error=repr(task.exception()),
            )

    def _log_failure(self, event: str, entry_ids: list[str], exc: Exception) -> None:
        log.error(
            event,
            consumer=self.consumer,
            entry_count=len(entry_ids),
            entry_ids=entry_ids[:_MAX_LOGGED_IDS],
            error=repr(exc),
        )
