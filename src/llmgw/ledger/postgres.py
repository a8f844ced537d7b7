"""The PostgreSQL ledger sink, shared by every gateway instance."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg

from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.sink import (
    ADDED_COLUMNS,
    COLUMN_NAMES,
    DEFAULT_TABLE,
    RECORD_COLUMNS,
    Column,
    TotalsRow,
    record_row,
    row_record,
    totals_query,
    totals_rows,
    validate_table,
)

_SQL_TYPES = {str: "text", int: "bigint", float: "double precision", bool: "boolean"}

# Errors that mean the server cannot be reached or dropped the connection.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
)


def _column_definition(column: Column) -> str:
    """Return the definition that adds ``column`` to an existing table."""
    definition = f"{column.name} {_SQL_TYPES[column.python_type]}"
    if not column.nullable:
        definition += " NOT NULL DEFAULT 0"
    return definition


def _create_table_sql(table: str) -> str:
    columns = []
    for column in RECORD_COLUMNS:
        definition = f"{column.name} {_SQL_TYPES[column.python_type]}"
        if column.name == "request_id":
            definition += " PRIMARY KEY"
        elif not column.nullable:
            definition += " NOT NULL"
        columns.append(definition)
    columns.append("day text NOT NULL")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"


def _staging_columns() -> str:
    columns = [
        f"{column.name} {_SQL_TYPES[column.python_type]}" for column in RECORD_COLUMNS
    ]
    columns.append("day text")
    return ", ".join(columns)


# A batch is copied into a temporary table with COPY, PostgreSQL's bulk-load
# command, then moved into the ledger table by one INSERT ... SELECT,
# because COPY has no ON CONFLICT. The table lives in the session's own
# schema (pg_temp) and is emptied at each commit. Its name carries a digest
# of its columns, so that a server session that still has the table of
# another llmgw version never uses it.
_STAGING_COLUMNS = _staging_columns()
_STAGING_TABLE = (
    "llmgw_ledger_staging_" + hashlib.sha256(_STAGING_COLUMNS.encode()).hexdigest()[:12]
)
_CREATE_STAGING_SQL = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING_TABLE} "
    f"({_STAGING_COLUMNS}) ON COMMIT DELETE ROWS"
)


def _insert_from_staging_sql(table: str) -> str:
    """Build the INSERT that moves the staged rows, skipping stored request ids.

    Its status line gives the number of rows inserted. A request id twice in
    one batch is inserted once, because DO NOTHING also skips a row that
    conflicts with one inserted earlier by the same statement.
    """
    columns = ", ".join(COLUMN_NAMES)
    return (
        f"INSERT INTO {table} ({columns}) "
        f"SELECT {columns} FROM pg_temp.{_STAGING_TABLE} "
        "ON CONFLICT (request_id) DO NOTHING"
    )


@contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except _CONNECTION_ERRORS as exc:
        # The message leaves out the DSN, which may contain a password.
        raise BackendUnavailable(
            f"PostgreSQL ledger sink {operation} failed: {type(exc).__name__}"
        ) from exc


class PostgresSink:
    """Usage records in PostgreSQL through an asyncpg pool.

    ``command_timeout`` (seconds) bounds every statement, so a hung server
    fails a write instead of stalling the drainer.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._table = validate_table(table)
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._pool: Any = None
        self._insert_sql = _insert_from_staging_sql(table)

    def __repr__(self) -> str:
        return f"PostgresSink(table={self._table!r})"

    async def open(self) -> None:
        with _translate_errors("open"):
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                command_timeout=self._command_timeout,
            )
            try:
                await self._create_table(pool)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def write(self, records: Sequence[UsageRecord]) -> int:
        if not records:
            return 0
        rows = [record_row(record) for record in records]
        with _translate_errors("write"):
            async with self._require_pool().acquire() as conn, conn.transaction():
                # Created in each transaction, not once per connection, so a
                # write never relies on session state from an earlier one
                # (which a pooler in transaction mode does not keep).
                await conn.execute(_CREATE_STAGING_SQL)
                await conn.copy_records_to_table(
                    _STAGING_TABLE,
                    records=rows,
                    columns=COLUMN_NAMES,
                    schema_name="pg_temp",
                )
                status: str = await conn.execute(self._insert_sql)
        # The status is "INSERT 0 <rows inserted>".
        return int(status.rsplit(" ", 1)[1])

    async def totals(
        self, by: str, *, since: float | None = None, until: float | None = None
    ) -> list[TotalsRow]:
        query, params = totals_query(self._table, by, ["$1", "$2"], since, until)
        with _translate_errors("totals query"):
            rows = await self._require_pool().fetch(query, *params)
        return totals_rows(rows)

    async def records(self) -> list[UsageRecord]:
        query = (
            f"SELECT {', '.join(COLUMN_NAMES)} FROM {self._table} "
            "ORDER BY ts, request_id"
        )
        with _translate_errors("records query"):
            rows = await self._require_pool().fetch(query)
        return [row_record(row) for row in rows]

    async def fetch(self, request_id: str) -> UsageRecord | None:
        query = (
            f"SELECT {', '.join(COLUMN_NAMES)} FROM {self._table} WHERE request_id = $1"
        )
        with _translate_errors("fetch"):
            row = await self._require_pool().fetchrow(query, request_id)
        return None if row is None else row_record(row)

    async def ping(self) -> None:
        with _translate_errors("ping"):
            await self._require_pool().fetchval("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _require_pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError(
                "the PostgreSQL ledger sink is not open: call open() first"
            )
        return self._pool

    async def _create_table(self, pool: Any) -> None:
        async with pool.acquire() as conn, conn.transaction():
            # Workers starting together would race on CREATE TABLE IF NOT
            # EXISTS (a unique violation in pg_type), so they take turns.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", self._table
            )
            await conn.execute(_create_table_sql(self._table))
            # A table created by an earlier version lacks the newer columns.
            for column in ADDED_COLUMNS:
                await conn.execute(
                    f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS "
                    f"{_column_definition(column)}"
                )
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._table}_ts ON {self._table} (ts)"
            )
