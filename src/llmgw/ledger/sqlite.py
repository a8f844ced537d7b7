"""The SQLite ledger sink, for one machine.

The database runs in WAL mode with a busy timeout, so several worker
processes can write one file: a writer waits for the lock instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import aiosqlite

from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.sink import (
    ADDED_COLUMNS,
    COLUMN_NAMES,
    DEFAULT_TABLE,
    RECORD_COLUMNS,
    TotalsRow,
    record_row,
    row_record,
    totals_query,
    totals_rows,
    validate_table,
)

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}


def _create_table_sql(table: str) -> str:
    columns = []
    for column in RECORD_COLUMNS:
        definition = f"{column.name} {_SQL_TYPES[column.python_type]}"
        if column.name == "request_id":
            definition += " PRIMARY KEY"
        elif not column.nullable:
            definition += " NOT NULL"
        columns.append(definition)
    columns.append("day TEXT NOT NULL")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"


async def _add_missing_columns(conn: aiosqlite.Connection, table: str) -> None:
    """Add the columns that a table created by an earlier version lacks."""
    cursor = await conn.execute(f"PRAGMA table_info({table})")
    names = {row[1] for row in await cursor.fetchall()}
    for column in ADDED_COLUMNS:
        if column.name in names:
            continue
        definition = f"{column.name} {_SQL_TYPES[column.python_type]}"
        if not column.nullable:
            definition += " NOT NULL DEFAULT 0"
        try:
            await conn.execute(f"ALTER TABLE {table} ADD COLUMN {definition}")
        except sqlite3.OperationalError as exc:
            # Another process opening the same file added it first.
            if "duplicate column" not in str(exc):
                raise


class SQLiteSink:
    """Usage records in a SQLite file (or ``:memory:``).

    ``busy_timeout_ms`` is how long a write waits for another process's lock
    before it fails with ``BackendUnavailable``.
    """

    def __init__(
        self, path: str, *, table: str = DEFAULT_TABLE, busy_timeout_ms: int = 5000
    ) -> None:
        self._path = path
        self._table = validate_table(table)
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        # One connection runs one transaction at a time.
        self._write_lock = asyncio.Lock()
        columns = ", ".join(COLUMN_NAMES)
        markers = ", ".join("?" for _ in COLUMN_NAMES)
        self._insert_sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({markers}) "
            "ON CONFLICT (request_id) DO NOTHING"
        )

    async def open(self) -> None:
        with self._translate_errors("open"):
            # Autocommit mode: write() opens its transactions explicitly.
            conn = await aiosqlite.connect(self._path, isolation_level=None)
            try:
                # The busy timeout first, so the WAL switch itself waits for
                # another process that is opening the same file.
                # Both PRAGMAs return a row. An unread row keeps the
                # statement open, and with it a read lock on the file that
                # blocked the WAL switch of every other process opening it.
                await conn.execute_fetchall(
                    f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}"
                )
                await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                await conn.execute(_create_table_sql(self._table))
                await _add_missing_columns(conn, self._table)
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {self._table}_ts ON {self._table} (ts)"
                )
            except BaseException:
                await conn.close()
                raise
        self._conn = conn

    async def write(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        conn = self._connection()
        rows = [record_row(record) for record in records]
        with self._translate_errors("write"):
            async with self._write_lock:
                # IMMEDIATE takes the write lock now, under the busy timeout,
                # rather than failing on a lock upgrade halfway through.
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    # rowcount sums the rows each INSERT changed, so skipped
                    # duplicates count 0.
                    cursor = await conn.executemany(self._insert_sql, rows)
                    inserted = cursor.rowcount
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
        return inserted

    async def totals(
        self, by: str, *, since: float | None = None, until: float | None = None
    ) -> list[TotalsRow]:
        query, params = totals_query(self._table, by, ["?", "?"], since, until)
        with self._translate_errors("totals query"):
            cursor = await self._connection().execute(query, params)
            rows = await cursor.fetchall()
        return totals_rows(list(rows))

    async def records(self) -> list[UsageRecord]:
        query = (
            f"SELECT {', '.join(COLUMN_NAMES)} FROM {self._table} "
            "ORDER BY ts, request_id"
        )
        with self._translate_errors("records query"):
            cursor = await self._connection().execute(query)
            rows = await cursor.fetchall()
        return [row_record(row) for row in rows]

    async def fetch(self, request_id: str) -> UsageRecord | None:
        query = (
            f"SELECT {', '.join(COLUMN_NAMES)} FROM {self._table} WHERE request_id = ?"
        )
        with self._translate_errors("fetch"):
            cursor = await self._connection().execute(query, (request_id,))
            row = await cursor.fetchone()
        return None if row is None else row_record(row)

    async def ping(self) -> None:
        with self._translate_errors("ping"):
            await self._connection().execute("SELECT 1")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite ledger sink is not open: call open() first")
        return self._conn

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        # OperationalError covers a lock still held after the busy timeout, a
        # full disk and a file that cannot be opened.
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(
                f"SQLite ledger sink {operation} failed on {self._path}: {exc}"
            ) from exc
