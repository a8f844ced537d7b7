"""The durable ledger: SQLite and PostgreSQL sinks, reports and the drainer."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from llmgw.errors import BackendUnavailable
from llmgw.ledger.drain import LedgerDrainer
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.report import parse_time, render
from llmgw.ledger.sink import TOTALS_COLUMNS, Sink, TotalsRow, open_sink
from llmgw.limits.base import Backend, LedgerEntry

from .conftest import CLAIM_IDLE_MS, drop_postgres_table

DAY_1 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY_2 = DAY_1 + 86_400.0


def make_record(request_id: str, **changes: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "ts": DAY_1,
        "route": "/v1/chat/completions",
        "key_name": "ci",
        "tenant": "acme",
        "model": "smollm2",
        "provider": "local",
        "upstream_model": "smollm2-upstream",
        "input_tokens": 10,
        "output_tokens": 5,
    }
    values.update(changes)
    return UsageRecord(**values)  # type: ignore[arg-type]


def totals_by_group(rows: Sequence[TotalsRow]) -> dict[str | None, TotalsRow]:
    return {row["group"]: row for row in rows}


class FailingSink:
    """Wrap a sink so its next ``failures`` writes raise before writing.

    ``written`` counts the records passed to the inner sink, duplicates too.
    """

    def __init__(self, inner: Sink, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.written = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, records: Sequence[UsageRecord]) -> int:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("sink connection reset (test)")
        self.written += len(records)
        return await self.inner.write(records)

    async def totals(
        self, by: str, *, since: float | None = None, until: float | None = None
    ) -> list[TotalsRow]:
        return await self.inner.totals(by, since=since, until=until)

    async def records(self) -> list[UsageRecord]:
        return await self.inner.records()

    async def fetch(self, request_id: str) -> UsageRecord | None:
        return await self.inner.fetch(request_id)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class GatedSink(FailingSink):
    """A sink whose first write waits until ``release`` is set.

    ``first_write_started`` is set when that write begins.
    """

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner, failures=0)
        self.first_write_started = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, records: Sequence[UsageRecord]) -> int:
        if not self.first_write_started.is_set():
            self.first_write_started.set()
            await self.release.wait()
        return await super().write(records)


class LedgerSpy:
    """Wrap a back end to record ledger reads and fail the next ``ack_failures``
    acknowledgements, after the sink has committed the batch."""

    def __init__(self, inner: Backend, ack_failures: int = 0) -> None:
        self.inner = inner
        self.ack_failures = ack_failures
        # Events by consumer name, each set once a read for it returned entries.
        self.entries_read: dict[str, asyncio.Event] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read_ledger(
        self, consumer: str, count: int, block_ms: int
    ) -> list[LedgerEntry]:
        entries = await self.inner.read_ledger(consumer, count, block_ms)
        if entries:
            self.read_event(consumer).set()
        return entries

    def read_event(self, consumer: str) -> asyncio.Event:
        return self.entries_read.setdefault(consumer, asyncio.Event())

    async def ack_ledger(self, entry_ids: Sequence[str]) -> None:
        if self.ack_failures > 0:
            self.ack_failures -= 1
            raise ConnectionResetError("back end connection reset before ack (test)")
        await self.inner.ack_ledger(entry_ids)

    def as_backend(self) -> Backend:
        # Every other Backend method is delegated by __getattr__.
        return cast(Backend, self)


async def wait_for_records(sink: Sink, count: int) -> None:
    """Poll the sink until it stores ``count`` records, for up to 10 s."""
    for _ in range(200):
        if len(await sink.records()) >= count:
            return
        await asyncio.sleep(0.05)


def request_ids(records: Sequence[UsageRecord]) -> list[str]:
    return sorted(record.request_id for record in records)


async def test_write_round_trips_every_field(sink: Sink) -> None:
    full = make_record(
        "r1",
        cached_tokens=3,
        reasoning_tokens=2,
        estimated=True,
        status=502,
        error_type="upstream_unreachable",
        latency_ms=812.5,
        ttft_ms=120.25,
        streamed=True,
        client_aborted=True,
    )
    sparse = make_record(
        "r2",
        ts=DAY_2,
        key_name=None,
        tenant=None,
        model=None,
        provider=None,
        upstream_model=None,
        ttft_ms=None,
    )

    inserted = await sink.write([full, sparse])

    assert inserted == 2
    assert await sink.records() == [full, sparse]
    assert await sink.fetch("r1") == full
    assert await sink.fetch("missing") is None


async def test_write_skips_stored_request_ids(sink: Sink) -> None:
    first = await sink.write([make_record("r1"), make_record("r2")])
    second = await sink.write([make_record("r2"), make_record("r3"), make_record("r3")])
    empty = await sink.write([])

    assert first == 2
    assert second == 1
    assert empty == 0
    assert [record.request_id for record in await sink.records()] == ["r1", "r2", "r3"]


async def test_open_twice_keeps_records(sink_url: str, ledger_table: str) -> None:
    first = open_sink(sink_url, table=ledger_table)
    await first.open()
    await first.write([make_record("r1")])
    await first.close()

    second = open_sink(sink_url, table=ledger_table)
    await second.open()
    try:
        records = await second.records()
    finally:
        await second.close()

    assert [record.request_id for record in records] == ["r1"]


async def test_concurrent_opens_of_new_file(tmp_path: Path) -> None:
    # As the workers of --workers N do: each opens the same new file.
    for round_number in range(5):
        url = f"sqlite:///{tmp_path}/ledger-{round_number}.db"
        sinks = [open_sink(url) for _ in range(8)]
        try:
            await asyncio.gather(*(sink.open() for sink in sinks))
            await sinks[0].write([make_record("r1")])
            stored = await sinks[7].fetch("r1")
        finally:
            for sink in sinks:
                await sink.close()
        assert stored is not None


async def test_two_writers_share_one_store(sink_url: str, ledger_table: str) -> None:
    # Two sinks, as two worker processes would open them, writing at once.
    writers = [open_sink(sink_url, table=ledger_table) for _ in range(2)]
    for writer in writers:
        await writer.open()
    try:
        counts = await asyncio.gather(
            *(
                writer.write([make_record(f"r{batch}-{i}") for i in range(50)])
                for batch in range(10)
                for writer in writers
            )
        )
        records = await writers[0].records()
    finally:
        for writer in writers:
            await writer.close()

    # Each batch id is written by both writers: exactly one insert wins.
    assert sum(counts) == 500
    assert len(records) == 500


async def test_totals_by_key_model_day(sink: Sink) -> None:
    await sink.write(
        [
            make_record(
                "r1",
                key_name="ci",
                model="smollm2",
                input_tokens=10,
                cache_write_tokens=6,
                cost_usd=0.0125,
            ),
            make_record(
                "r2",
                key_name="ci",
                model="gpt-4o",
                ts=DAY_2,
                status=429,
                cost_usd=0.000375,
            ),
            make_record(
                "r3",
                key_name="dev",
                team="platform",
                model="smollm2",
                estimated=True,
                cached_tokens=4,
                reasoning_tokens=3,
            ),
            make_record(
                "r4",
                key_name=None,
                tenant=None,
                model=None,
                status=401,
                input_tokens=0,
                output_tokens=0,
            ),
        ]
    )

    by_key = await sink.totals("key")
    by_model = totals_by_group(await sink.totals("model"))
    by_day = totals_by_group(await sink.totals("day"))
    by_tenant = totals_by_group(await sink.totals("tenant"))
    by_team = totals_by_group(await sink.totals("team"))

    assert [row["group"] for row in by_key] == ["ci", "dev", None]
    assert by_key[0] == TotalsRow(
        group="ci",
        requests=2,
        input_tokens=20,
        output_tokens=10,
        cached_tokens=0,
        reasoning_tokens=0,
        estimated_requests=0,
        errors=1,
        cache_write_tokens=6,
        cost_usd=Decimal("0.012875"),
    )
    assert by_key[1]["estimated_requests"] == 1
    assert by_key[1]["cached_tokens"] == 4
    assert by_key[1]["reasoning_tokens"] == 3
    assert by_key[2]["errors"] == 1
    assert by_key[2]["cost_usd"] == Decimal("0.000000")
    assert by_model["smollm2"]["requests"] == 2
    assert by_model["smollm2"]["cost_usd"] == Decimal("0.012500")
    assert by_model["gpt-4o"]["requests"] == 1
    assert by_day["2023-11-14"]["requests"] == 3
    assert by_day["2023-11-15"]["requests"] == 1
    assert by_tenant["acme"]["requests"] == 3
    assert by_tenant[None]["requests"] == 1
    # Teams are named inside their tenant.
    assert by_team["acme/platform"]["requests"] == 1
    assert by_team["acme/platform"]["cached_tokens"] == 4
    assert by_team[None]["requests"] == 3


async def test_ping_open_sink(sink: Sink) -> None:
    await sink.ping()


async def test_postgres_unreachable_raises_backend_unavailable(
    ledger_table: str,
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused.
    sink = open_sink("postgresql://root@127.0.0.1:1/test", table=ledger_table)

    with pytest.raises(BackendUnavailable, match="PostgreSQL ledger sink open failed"):
        await sink.open()


async def test_totals_time_bounds(sink: Sink) -> None:
    await sink.write([make_record("r1", ts=DAY_1), make_record("r2", ts=DAY_2)])

    since = await sink.totals("key", since=DAY_2)
    until = await sink.totals("key", until=DAY_2)

    assert since[0]["requests"] == 1
    assert until[0]["requests"] == 1


async def test_totals_time_bounds_cost(sink: Sink) -> None:
    await sink.write(
        [
            make_record("r1", ts=DAY_1, cost_usd=0.25),
            make_record("r2", ts=DAY_2, cost_usd=0.5, cache_write_tokens=7),
            make_record("r3", ts=DAY_2 + 10, cost_usd=1.0),
        ]
    )

    window = await sink.totals("key", since=DAY_2, until=DAY_2 + 10)
    empty = await sink.totals("key", since=DAY_2 + 20)

    assert len(window) == 1
    assert window[0]["requests"] == 1
    assert window[0]["cost_usd"] == Decimal("0.500000")
    assert window[0]["cache_write_tokens"] == 7
    assert empty == []


async def test_totals_cost_sums_exactly(sink: Sink) -> None:
    # 100 requests of one token at 0.125 USD per million tokens cost 12.5
    # micro-dollars, which rounds half up to 13. Summed as floats they give
    # 1.2499999999999977e-05, which would round to 12.
    cheap = [
        make_record(f"cheap-{i}", key_name="cheap", cost_usd=1.25e-7)
        for i in range(100)
    ]
    # Ten times 0.1 is 0.9999999999999999 in floats.
    tenths = [
        make_record(f"tenth-{i}", key_name="tenths", cost_usd=0.1) for i in range(10)
    ]
    await sink.write([*cheap, *tenths])

    by_key = totals_by_group(await sink.totals("key"))

    assert by_key["cheap"]["cost_usd"] == Decimal("0.000013")
    assert by_key["tenths"]["cost_usd"] == Decimal("1.000000")
    assert str(by_key["tenths"]["cost_usd"]) == "1.000000"


async def test_totals_cost_beyond_int64_picodollars(sink: Sink) -> None:
    # 9.3 million USD is more than 2**63 picodollars, so a single integer
    # SUM of picodollars would overflow in SQLite.
    await sink.write(
        [make_record(f"r{i}", cost_usd=3_100_000.123456) for i in range(3)]
    )

    (row,) = await sink.totals("key")

    assert row["cost_usd"] == Decimal("9300000.370368")


def test_parse_time_date_is_utc_midnight() -> None:
    assert parse_time("2023-11-14") == datetime(2023, 11, 14, tzinfo=UTC).timestamp()


def test_parse_time_without_offset_is_utc() -> None:
    assert parse_time("2023-11-14T22:13:20") == DAY_1


def test_parse_time_with_offset_or_z() -> None:
    assert parse_time("2023-11-14T23:13:20+01:00") == DAY_1
    assert parse_time("2023-11-14T22:13:20Z") == DAY_1
    assert parse_time("2023-11-14T17:13:20.000-05:00") == DAY_1


@pytest.mark.parametrize("text", ["", "yesterday", "2023-13-01", "14/11/2023"])
def test_parse_time_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid time {text!r}: expected an ISO"):
        parse_time(text)


async def test_totals_rejects_unknown_grouping(sink: Sink) -> None:
    with pytest.raises(ValueError, match="invalid totals grouping 'user'"):
        await sink.totals("user")


def test_open_sink_rejects_unknown_scheme() -> None:
    with pytest.raises(
        ValueError, match="unsupported ledger sink URL scheme 'mysql'"
    ) as error:
        open_sink("mysql://admin:hunter2@127.0.0.1/db")

    assert "hunter2" not in str(error.value)


def test_open_sink_rejects_bad_table() -> None:
    with pytest.raises(ValueError, match="invalid ledger table name"):
        open_sink("sqlite:///ledger.db", table="usage; DROP TABLE x")


ROWS = [
    TotalsRow(
        group="ci",
        requests=2,
        input_tokens=1200,
        output_tokens=30,
        cached_tokens=0,
        reasoning_tokens=0,
        estimated_requests=1,
        errors=0,
        cache_write_tokens=800,
        cost_usd=Decimal("0.012340"),
    ),
    TotalsRow(
        group=None,
        requests=1,
        input_tokens=0,
        output_tokens=0,
        cached_tokens=0,
        reasoning_tokens=0,
        estimated_requests=0,
        errors=1,
        cache_write_tokens=0,
        cost_usd=Decimal("0.000000"),
    ),
]

# The documented keys of ``llmgw usage --format json``, in order. Scripts
# read them, so a change here breaks them.
REPORT_KEYS = [
    "group",
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "errors",
    "cache_write_tokens",
    "cost_usd",
]


def test_render_json_has_exact_keys() -> None:
    parsed = orjson.loads(render(ROWS, "json"))

    assert list(TOTALS_COLUMNS) == REPORT_KEYS
    assert [list(row) for row in parsed] == [REPORT_KEYS] * 2
    assert parsed[0]["input_tokens"] == 1200
    assert parsed[0]["cache_write_tokens"] == 800
    assert parsed[0]["cost_usd"] == 0.01234
    assert parsed[1]["group"] is None
    assert parsed[1]["cost_usd"] == 0


def test_render_csv_header_and_rows() -> None:
    lines = list(csv.reader(io.StringIO(render(ROWS, "csv"))))

    assert lines[0] == REPORT_KEYS
    assert lines[1] == ["ci", "2", "1200", "30", "0", "0", "1", "0", "800", "0.012340"]
    assert lines[2][0] == ""
    assert lines[2][-1] == "0.000000"


def test_render_table_aligns_columns() -> None:
    lines = render(ROWS, "table", group_label="key").splitlines()

    assert lines[0].split() == ["key", *REPORT_KEYS[1:]]
    assert lines[1].split()[:3] == ["ci", "2", "1200"]
    assert lines[1].split()[-2:] == ["800", "0.012340"]
    assert lines[2].split()[0] == "(none)"
    # Counts are right-aligned under their header.
    header_end = lines[0].index("input_tokens") + len("input_tokens")
    assert lines[1][header_end - 4 : header_end] == "1200"
    assert lines[2][header_end - 1] == "0"
    assert lines[0].endswith("cost_usd")
    assert lines[1].endswith("0.012340")
    assert lines[2].endswith("0.000000")


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="invalid report format 'xml'"):
        render(ROWS, "xml")


async def test_drainer_moves_records(backend: Backend, sink: Sink) -> None:
    for i in range(7):
        await backend.settle([], make_record(f"r{i}"))
    drainer = LedgerDrainer(backend, sink, consumer="drainer-1", batch=3)

    moved = [await drainer.drain_once() for _ in range(4)]

    assert moved == [3, 3, 1, 0]
    assert len(await sink.records()) == 7
    assert await backend.read_ledger("drainer-1", 10, block_ms=0) == []


async def test_drainer_loop_and_final_drain(backend: Backend, sink: Sink) -> None:
    drainer = LedgerDrainer(backend, sink, consumer="drainer-1", block_ms=100)
    drainer.start()
    for i in range(5):
        await backend.settle([], make_record(f"r{i}"))
    for _ in range(100):
        if len(await sink.records()) == 5:
            break
        await asyncio.sleep(0.05)
    for i in range(5, 8):
        await backend.append_record(make_record(f"r{i}"))
    await drainer.stop()

    assert not drainer.running
    assert [record.request_id for record in await sink.records()] == [
        f"r{i}" for i in range(8)
    ]
    assert await backend.read_ledger("drainer-1", 10, block_ms=0) == []


async def test_crash_before_ack_stores_once(backend: Backend, sink: Sink) -> None:
    for i in range(3):
        await backend.settle([], make_record(f"r{i}"))
    # A drainer that committed to the sink and died before acknowledging.
    entries = await backend.read_ledger("drainer-1", 10, block_ms=0)
    await sink.write([entry.record for entry in entries])

    restarted = LedgerDrainer(backend, sink, consumer="drainer-1")
    moved = await restarted.drain_once()

    assert moved == 3
    assert [record.request_id for record in await sink.records()] == ["r0", "r1", "r2"]
    assert await restarted.drain_once() == 0


async def test_dead_consumer_taken_over(backend: Backend, sink: Sink) -> None:
    await backend.settle([], make_record("r1"))
    entries = await backend.read_ledger("dead-drainer", 10, block_ms=0)
    await sink.write([entry.record for entry in entries])

    survivor = LedgerDrainer(backend, sink, consumer="drainer-2")
    too_early = await survivor.drain_once()
    await asyncio.sleep(CLAIM_IDLE_MS / 1000 + 0.1)
    taken_over = await survivor.drain_once()

    assert too_early == 0
    assert taken_over == 1
    assert [record.request_id for record in await sink.records()] == ["r1"]
    assert await backend.read_ledger("dead-drainer", 10, block_ms=0) == []


async def test_drainer_retries_failed_write(backend: Backend, sink: Sink) -> None:
    failing = FailingSink(sink, failures=2)
    drainer = LedgerDrainer(
        backend, failing, consumer="drainer-1", block_ms=50, retry_delay=0.05
    )
    await backend.settle([], make_record("r1"))

    drainer.start()
    for _ in range(100):
        if await sink.fetch("r1") is not None:
            break
        await asyncio.sleep(0.05)
    await drainer.stop()

    assert failing.failures == 0
    assert [record.request_id for record in await sink.records()] == ["r1"]


async def test_drain_once_beside_loop_writes_once(backend: Backend, sink: Sink) -> None:
    counting = FailingSink(sink, failures=0)
    drainer = LedgerDrainer(backend, counting, consumer="drainer-1", block_ms=100)
    drainer.start()

    for i in range(20):
        await backend.settle([], make_record(f"r{i}"))
        if i % 5 == 0:
            await drainer.drain_once()
    while await drainer.drain_once():
        pass
    await drainer.stop()

    assert len(await sink.records()) == 20
    assert counting.written == 20


async def test_drain_once_raises_sink_error(backend: Backend, sink: Sink) -> None:
    drainer = LedgerDrainer(backend, FailingSink(sink, failures=1), consumer="d1")
    await backend.settle([], make_record("r1"))

    with pytest.raises(ConnectionResetError):
        await drainer.drain_once()
    moved = await drainer.drain_once()

    assert moved == 1
    assert [record.request_id for record in await sink.records()] == ["r1"]


async def test_drainer_rejects_zero_block(backend: Backend, sqlite_url: str) -> None:
    with pytest.raises(ValueError, match="block_ms 0"):
        LedgerDrainer(backend, open_sink(sqlite_url), consumer="d1", block_ms=0)


async def test_loop_reads_while_writing(backend: Backend, sink: Sink) -> None:
    spy = LedgerSpy(backend)
    gated = GatedSink(sink)
    drainer = LedgerDrainer(
        spy.as_backend(), gated, consumer="drainer-1", batch=5, block_ms=50
    )
    for i in range(10):
        await backend.append_record(make_record(f"r{i:02d}"))

    drainer.start()
    await asyncio.wait_for(gated.first_write_started.wait(), 5)
    # While the first write waits, the loop reads the second batch under its
    # second consumer name.
    await asyncio.wait_for(spy.read_event(drainer.consumers[1]).wait(), 5)
    stored_while_held = len(await sink.records())
    gated.release.set()
    await wait_for_records(sink, 10)
    await drainer.stop()

    assert stored_while_held == 0
    assert request_ids(await sink.records()) == [f"r{i:02d}" for i in range(10)]
    assert gated.written == 10


async def test_loop_many_batches_write_once(backend: Backend, sink: Sink) -> None:
    counting = FailingSink(sink, failures=0)
    drainer = LedgerDrainer(
        backend, counting, consumer="drainer-1", batch=7, block_ms=50, linger=0.01
    )
    drainer.start()
    for i in range(100):
        await backend.append_record(make_record(f"r{i:03d}"))
        if i % 30 == 0:
            await asyncio.sleep(0.02)
    await wait_for_records(sink, 100)
    await drainer.stop()

    assert request_ids(await sink.records()) == [f"r{i:03d}" for i in range(100)]
    assert counting.written == 100
    assert await backend.read_ledger("drainer-1", 10, block_ms=0) == []
    assert await backend.read_ledger(drainer.consumers[1], 10, block_ms=0) == []


async def test_loop_write_failure_loses_nothing(backend: Backend, sink: Sink) -> None:
    # The first write fails after the next batch was read. That batch is not
    # written then, and both batches are read again and written once.
    failing = FailingSink(sink, failures=1)
    drainer = LedgerDrainer(
        backend, failing, consumer="drainer-1", batch=5, block_ms=50, retry_delay=0.05
    )
    for i in range(30):
        await backend.append_record(make_record(f"r{i:02d}"))

    drainer.start()
    await wait_for_records(sink, 30)
    await drainer.stop()

    assert failing.failures == 0
    assert request_ids(await sink.records()) == [f"r{i:02d}" for i in range(30)]
    assert failing.written == 30


async def test_ack_failure_stores_once(backend: Backend, sink: Sink) -> None:
    # An ack that fails after the commit, as in a crash between the two,
    # delivers the batch again. The sink receives it twice and keeps one copy.
    spy = LedgerSpy(backend, ack_failures=1)
    counting = FailingSink(sink, failures=0)
    drainer = LedgerDrainer(
        spy.as_backend(),
        counting,
        consumer="drainer-1",
        batch=5,
        block_ms=50,
        retry_delay=0.05,
    )
    for i in range(20):
        await backend.append_record(make_record(f"r{i:02d}"))

    drainer.start()
    await wait_for_records(sink, 20)
    await drainer.stop()

    assert spy.ack_failures == 0
    assert request_ids(await sink.records()) == [f"r{i:02d}" for i in range(20)]
    assert counting.written == 25
    assert await backend.read_ledger("drainer-1", 10, block_ms=0) == []
    assert await backend.read_ledger(drainer.consumers[1], 10, block_ms=0) == []


class SlowFirstWriteSink(FailingSink):
    """A sink whose first write sleeps ``delay`` seconds before writing."""

    def __init__(self, inner: Sink, delay: float) -> None:
        super().__init__(inner, failures=0)
        self.delay = delay
        self.slow_write_started = asyncio.Event()

    async def write(self, records: Sequence[UsageRecord]) -> int:
        if not self.slow_write_started.is_set():
            self.slow_write_started.set()
            await asyncio.sleep(self.delay)
        return await super().write(records)


async def test_stop_cancels_slow_write(backend: Backend, sink: Sink) -> None:
    # stop() waits block_ms + 1 s for the loop, then cancels the loop and its
    # write. The final drain reads the cancelled batch again.
    slow = SlowFirstWriteSink(sink, delay=30.0)
    drainer = LedgerDrainer(backend, slow, consumer="drainer-1", batch=4, block_ms=50)
    for i in range(10):
        await backend.append_record(make_record(f"r{i}"))

    drainer.start()
    await asyncio.wait_for(slow.slow_write_started.wait(), 5)
    async with asyncio.timeout(10):
        await drainer.stop()

    assert not drainer.running
    assert request_ids(await sink.records()) == [f"r{i}" for i in range(10)]
    assert slow.written == 10


async def test_drain_once_reads_both_consumers(backend: Backend, sink: Sink) -> None:
    drainer = LedgerDrainer(backend, sink, consumer="drainer-1", batch=10)
    for i in range(3):
        await backend.append_record(make_record(f"r{i}"))
    # A batch read under the second name by a loop that then stopped.
    pending = await backend.read_ledger(drainer.consumers[1], 10, block_ms=0)

    moved = await drainer.drain_once()

    assert len(pending) == 3
    assert moved == 3
    assert request_ids(await sink.records()) == ["r0", "r1", "r2"]
    assert await drainer.drain_once() == 0


async def test_write_large_batch_counts_new(sink: Sink) -> None:
    stored = [make_record(f"r{i:05d}", ts=DAY_1 + i) for i in range(1000)]
    await sink.write(stored)
    fresh = [make_record(f"r{i:05d}", ts=DAY_1 + i) for i in range(1000, 3000)]
    # Every stored record again, and ten fresh ones twice in the same batch.
    batch = stored + fresh + fresh[:10]

    inserted = await sink.write(batch)

    assert inserted == 2000
    assert len(await sink.records()) == 3000
    assert await sink.fetch("r02999") == fresh[-1]


async def test_tables_keep_their_own_rows(sink_url: str, ledger_table: str) -> None:
    # Two sinks on one database with different tables, writing at once.
    other_table = f"{ledger_table}_other"
    first = open_sink(sink_url, table=ledger_table)
    second = open_sink(sink_url, table=other_table)
    await first.open()
    await second.open()
    try:
        await asyncio.gather(
            first.write([make_record(f"a{i}") for i in range(50)]),
            second.write([make_record(f"b{i}") for i in range(30)]),
        )
        first_ids = request_ids(await first.records())
        second_ids = request_ids(await second.records())
    finally:
        await first.close()
        await second.close()
        if sink_url.startswith("postgres"):
            await drop_postgres_table(other_table)

    assert first_ids == sorted(f"a{i}" for i in range(50))
    assert second_ids == sorted(f"b{i}" for i in range(30))
