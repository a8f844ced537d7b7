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
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    # Imported for annotations only: llmgw.limits imports llmgw.ledger.
    from llmgw.ledger.sink import Sink
    from llmgw.limits.base import Backend, LedgerEntry

log = structlog.get_logger()

# Error lines list at most this many entry ids, then the total count.
_MAX_LOGGED_IDS = 20


# A consumer idle this long with nothing pending belongs to a stopped
# worker. A running drain loop reads under each of its names again after at
# most two reads (block_ms each) and one sink write, far less than this.
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

    The loop reads the next batch while the sink commits the previous one.
    The two batches are read under two consumer names (``consumers``), the
    given one and the same with ``/2`` appended. A read returns the
    consumer's own pending entries first, so under a single name it would
    return the batch still being written. Each name reads again only after
    its previous batch has been committed and acknowledged, or has failed
    and stays pending for that name's next read.
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
        self.consumers = (consumer, f"{consumer}/2")
        self.batch = batch
        self.block_ms = block_ms
        self.linger = linger
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._task: asyncio.Task[None] | None = None
        # The loop's batch being written and acknowledged, if any.
        self._write_task: asyncio.Task[int] | None = None
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
        under either consumer name within ``block_ms`` (0 does not wait).
        While the loop runs, a call first waits for the loop's current read
        and write, and the read may take ``block_ms``.
        """
        async with self._drain_lock:
            write = self._write_task
            if write is not None:
                # A read of that batch's consumer name would return the batch
                # again. The loop handles the write's outcome.
                await asyncio.wait({write})
            for index, consumer in enumerate(self.consumers):
                last = index == len(self.consumers) - 1
                entries = await self.backend.read_ledger(
                    consumer, self.batch, block_ms if last else 0
                )
                if entries:
                    return await self._write_and_ack(entries)
            return 0

    async def _write_and_ack(self, entries: Sequence[LedgerEntry]) -> int:
        """Write entries to the sink, then acknowledge them.

        Returns the number of entries.
        """
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
        lane = 0
        try:
            while not self._stopping.is_set():
                try:
                    read = await self._read_while_writing(self.consumers[lane])
                except Exception as exc:
                    # After any failure of the sink or the back end the entries
                    # stay pending, so waiting and reading again loses nothing.
                    log.warning(
                        "ledger_drain_retrying",
                        consumer=self.consumer,
                        retry_in_seconds=delay,
                        error=repr(exc),
                    )
                    await self._sleep_unless_stopping(delay)
                    delay = min(delay * 2, self._max_retry_delay)
                    continue
                delay = self._retry_delay
                lane = 1 - lane
                if 0 < read < self.batch:
                    await self._sleep_unless_stopping(self.linger)
        finally:
            await self._finish_loop_write()

    async def _read_while_writing(self, consumer: str) -> int:
        """Read a batch for ``consumer`` while the previous batch is written,
        then start writing the new one. Returns the number of entries read.

        Raises the error of the read or of the previous batch's write. In
        that case the entries just read are not written, and they stay
        pending for ``consumer``, whose next read returns them first.
        """
        async with self._drain_lock:
            entries = await self.backend.read_ledger(
                consumer, self.batch, self.block_ms
            )
            previous = self._write_task
            if previous is not None:
                self._write_task = None
                await previous
            if entries:
                self._write_task = asyncio.create_task(self._write_and_ack(entries))
                self._write_task.add_done_callback(_retrieve_exception)
            return len(entries)

    async def _finish_loop_write(self) -> None:
        """Wait for the loop's last batch; log its error instead of raising."""
        write = self._write_task
        if write is None:
            return
        try:
            await write
        except Exception as exc:
            # _write_and_ack has logged the error with the entry ids. The
            # entries stay pending for the final drain or the next start.
            log.warning(
                "ledger_drain_last_batch_failed",
                consumer=self.consumer,
                error=repr(exc),
            )
        finally:
            if self._write_task is write:
                self._write_task = None

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
        # at most block_ms, and then waits for its last write. Past that, as
        # with a slow sink write, cancel both, because an unacknowledged
        # batch is delivered again to the final drain.
        try:
            _done, pending = await asyncio.wait(
                {task}, timeout=self.block_ms / 1000 + 1
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        if pending:
            write = self._write_task
            if write is not None:
                write.cancel()
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


def _retrieve_exception(task: asyncio.Task[int]) -> None:
    """Mark a write's error as retrieved, so that asyncio does not report it
    for a write that a stopped loop no longer awaits.

    ``_write_and_ack`` has logged the error already.
    """
    if not task.cancelled():
        task.exception()
