"""The ledger's cost_usd column and the other newer columns, in new tables
and in tables created before the record had the fields."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace

import asyncpg
import orjson

from llmgw.ledger.record import RECORD_FIELD, UsageRecord
from llmgw.ledger.sink import ADDED_COLUMNS, Sink, open_sink

from .conftest import POSTGRES_DSN


def make_record(request_id: str, cost_usd: float) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts=1_700_000_000.0,
        route="/v1/chat/completions",
        key_name="ci",
        tenant="acme",
        model="gpt-4o",
        provider="openai",
        upstream_model="gpt-4o",
        input_tokens=1000,
        output_tokens=200,
        cost_usd=cost_usd,
    )


def test_record_fields_round_trip_cost() -> None:
    record = make_record("r1", 0.0045)

    fields = record.to_fields()

    assert orjson.loads(fields[RECORD_FIELD])["cost_usd"] == 0.0045
    assert UsageRecord.from_fields(fields) == record


def test_record_without_cost_field_reads_zero() -> None:
    data = orjson.loads(make_record("r1", 0.0).to_fields()[RECORD_FIELD])
    del data["cost_usd"]
    fields = {RECORD_FIELD: orjson.dumps(data).decode()}

    assert UsageRecord.from_fields(fields).cost_usd == 0.0


async def _drop_columns(sink_url: str, table: str, columns: Sequence[str]) -> None:
    """Drop columns, as in a table created by an earlier version."""
    statements = [f"ALTER TABLE {table} DROP COLUMN {column}" for column in columns]
    if sink_url.startswith("sqlite:///"):
        with sqlite3.connect(sink_url.removeprefix("sqlite:///")) as db:
            for statement in statements:
                db.execute(statement)
        return
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_sink_stores_cost(sink: Sink) -> None:
    await sink.write([make_record("r1", 0.0045)])

    stored = await sink.fetch("r1")

    assert stored is not None
    assert stored.cost_usd == 0.0045


async def test_sink_adds_cost_to_old_table(
    sink: Sink, sink_url: str, ledger_table: str
) -> None:
    await sink.write([make_record("old", 0.0)])
    await sink.close()
    await _drop_columns(sink_url, ledger_table, ["cost_usd"])

    reopened = open_sink(sink_url, table=ledger_table)
    await reopened.open()
    try:
        await reopened.write([make_record("new", 0.25)])
        old = await reopened.fetch("old")
        new = await reopened.fetch("new")
    finally:
        await reopened.close()

    assert old is not None
    assert old.cost_usd == 0.0
    assert new is not None
    assert new.cost_usd == 0.25


async def test_sink_adds_every_newer_column(
    sink: Sink, sink_url: str, ledger_table: str
) -> None:
    # A table of the first release, before cost, cache writes and teams.
    await sink.write([make_record("old", 0.0)])
    await sink.close()
    await _drop_columns(sink_url, ledger_table, [c.name for c in ADDED_COLUMNS])

    reopened = open_sink(sink_url, table=ledger_table)
    await reopened.open()
    try:
        new = replace(make_record("new", 0.25), cache_write_tokens=7, team="platform")
        await reopened.write([new])
        stored_old = await reopened.fetch("old")
        stored_new = await reopened.fetch("new")
        by_team = await reopened.totals("team")
    finally:
        await reopened.close()

    assert stored_old is not None
    assert stored_old.cost_usd == 0.0
    assert stored_old.cache_write_tokens == 0
    assert stored_old.team is None
    assert stored_new == new
    assert [row["group"] for row in by_team] == ["acme/platform", None]
