"""The durable ledger: usage records in SQLite or PostgreSQL, for reports.

Both sinks keep one table (``llmgw_usage`` by default) with a column per
``UsageRecord`` field, ``request_id`` as primary key, plus ``day``, the UTC
date of ``ts`` as ``YYYY-MM-DD``. A batch is inserted in one transaction and
a record whose ``request_id`` is already stored is skipped, so a record
delivered twice by the ledger stream is stored once.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol, TypedDict

from llmgw.ledger.record import UsageRecord

DEFAULT_TABLE = "llmgw_usage"

# The ``by`` values of ``Sink.totals`` and the expression each one groups
# by. A team's name is unique only inside its tenant, so teams are grouped
# as "tenant/team" (NULL for records without a team).
GROUP_COLUMNS = {
    "key": "key_name",
    "team": "tenant || '/' || team",
    "tenant": "tenant",
    "model": "model",
    "day": "day",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class TotalsRow(TypedDict):
    """Usage summed over the records of one group.

    The keys are the columns of ``llmgw usage`` in every format. New keys go
    last, so that CSV columns keep their positions.
    """

    group: str | None  # None for records without a key, tenant or model
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    estimated_requests: int  # records whose token counts are estimates
    errors: int  # records with status >= 400
    cache_write_tokens: int
    # US dollars, summed exactly and then rounded half up to 6 decimals.
    cost_usd: Decimal


TOTALS_COLUMNS: tuple[str, ...] = tuple(TotalsRow.__annotations__)

# Each record's cost_usd is summed as whole picodollars (1e-12 USD). A whole
# number of picodollars is the exact cost of any token count at a price with
# up to 6 decimals in US dollars per million tokens. Reading it back from the
# stored double is exact below 1,000 USD per record, and above that off by
# less than 1e-15 of the record's cost. A float SUM would add rounding errors
# that grow with the number of records.
PICO_USD_PER_USD = 10**12
_PICO_USD_PER_MICRO_USD = 10**6
COST_DECIMALS = Decimal("0.000001")


class Sink(Protocol):
    async def open(self) -> None:
        """Connect and create the table if it does not exist."""
        ...

    async def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert records in one transaction, skipping stored request ids.

        Returns the number of records inserted.
        """
        ...

    async def totals(
        self, by: str, *, since: float | None = None, until: float | None = None
    ) -> list[TotalsRow]:
        """Sum usage per key, tenant, model or day, ordered by group.

        ``since`` and ``until`` bound ``ts`` (Unix seconds, until exclusive).
        """
        ...

    async def records(self) -> list[UsageRecord]:
        """Return every stored record, ordered by ``ts`` then ``request_id``."""
        ...

    async def fetch(self, request_id: str) -> UsageRecord | None: ...

    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` if the database cannot be reached."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Column:
    name: str
    python_type: type  # str, int, float or bool
    nullable: bool


def _record_columns() -> tuple[Column, ...]:
    """Derive one column per ``UsageRecord`` field from its type hints."""
    hints = typing.get_type_hints(UsageRecord)
    columns = []
    for field in fields(UsageRecord):
        hint = hints[field.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        if args:
            (python_type,) = (arg for arg in args if arg is not type(None))
            columns.append(Column(field.name, python_type, nullable=True))
        else:
            columns.append(Column(field.name, hint, nullable=False))
    return tuple(columns)


RECORD_COLUMNS = _record_columns()
# The columns added to the record after the ledger table was first released,
# in the order they were added. Opening a sink adds the missing ones to an
# existing table, filled with NULL where the column may be empty, else 0.
ADDED_COLUMNS = tuple(
    column
    for column in RECORD_COLUMNS
    if column.name in ("cost_usd", "cache_write_tokens", "team")
)
# The stored columns: the record's fields, then the derived ``day``.
COLUMN_NAMES: tuple[str, ...] = (*(column.name for column in RECORD_COLUMNS), "day")


def validate_table(table: str) -> str:
    """Return ``table`` if it is a plain SQL identifier, else raise ValueError.

    Table names are put into SQL text, so only identifiers are accepted.
    """
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(
            f"invalid ledger table name {table!r}: expected letters, digits and "
            "underscores, starting with a letter or underscore"
        )
    return table


def utc_day(ts: float) -> str:
    """Return the UTC date of a Unix time as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def record_row(record: UsageRecord) -> tuple[Any, ...]:
    """Return the column values of ``record`` in ``COLUMN_NAMES`` order."""
    values = [getattr(record, column.name) for column in RECORD_COLUMNS]
    return (*values, utc_day(record.ts))


def row_record(row: Sequence[Any]) -> UsageRecord:
    """Rebuild a record from its columns in ``COLUMN_NAMES`` order."""
    values: dict[str, Any] = {}
    for column, value in zip(RECORD_COLUMNS, row, strict=False):
        if value is not None and column.python_type is bool:
            value = bool(value)  # SQLite stores booleans as 0 and 1
        values[column.name] = value
    return UsageRecord(**values)


def group_column(by: str) -> str:
    try:
        return GROUP_COLUMNS[by]
    except KeyError:
        raise ValueError(
            f"invalid totals grouping {by!r}: expected one of "
            f"{', '.join(GROUP_COLUMNS)}"
        ) from None


def totals_query(
    table: str,
    by: str,
    placeholders: Sequence[str],
    since: float | None,
    until: float | None,
) -> tuple[str, list[float]]:
    """Build the totals SELECT for either dialect and its parameters.

    ``placeholders`` are the parameter markers to use in order (``?`` for
    SQLite, ``$1``, ``$2`` for PostgreSQL).
    """
    column = group_column(by)
    conditions: list[str] = []
    params: list[float] = []
    if since is not None:
        conditions.append(f"ts >= {placeholders[len(params)]}")
        params.append(since)
    if until is not None:
        conditions.append(f"ts < {placeholders[len(params)]}")
        params.append(until)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""

    def total(expression: str) -> str:
        # SUM of BIGINT is NUMERIC in PostgreSQL: cast back to an integer.
        return f"CAST(COALESCE(SUM({expression}), 0) AS BIGINT)"

    # Each record's cost in picodollars is split into whole micro-dollars
    # and the picodollars left over, and each part is summed on its own. A
    # single sum of picodollars would overflow SQLite's 64-bit integers above
    # 9.2 million USD. Both dialects truncate integer division toward zero,
    # so the two parts always add up to the record's cost.
    pico_usd = f"CAST(ROUND(cost_usd * {PICO_USD_PER_USD}) AS BIGINT)"
    query = f"""
        SELECT {column},
               COUNT(*),
               {total("input_tokens")},
               {total("output_tokens")},
               {total("cached_tokens")},
               {total("reasoning_tokens")},
               {total("CASE WHEN estimated THEN 1 ELSE 0 END")},
               {total("CASE WHEN status >= 400 THEN 1 ELSE 0 END")},
               {total("cache_write_tokens")},
               {total(f"{pico_usd} / {_PICO_USD_PER_MICRO_USD}")},
               {total(f"{pico_usd} % {_PICO_USD_PER_MICRO_USD}")}
        FROM {table}
        {where}
        GROUP BY {column}
    """
    return query, params


def totals_rows(rows: Sequence[Sequence[Any]]) -> list[TotalsRow]:
    """Turn totals query rows into dicts, ordered by group with None last.

    Sorting here rather than in SQL gives both databases the same order,
    because their text collations differ.
    """
    result = [
        TotalsRow(
            group=row[0],
            requests=int(row[1]),
            input_tokens=int(row[2]),
            output_tokens=int(row[3]),
            cached_tokens=int(row[4]),
            reasoning_tokens=int(row[5]),
            estimated_requests=int(row[6]),
            errors=int(row[7]),
            cache_write_tokens=int(row[8]),
            cost_usd=_usd(int(row[9]) * _PICO_USD_PER_MICRO_USD + int(row[10])),
        )
        for row in rows
    ]
    result.sort(key=lambda row: (row["group"] is None, row["group"] or ""))
    return result


def _usd(pico_usd: int) -> Decimal:
    """Convert picodollars to US dollars rounded half up to 6 decimals."""
    usd = Decimal(pico_usd) / PICO_USD_PER_USD
    return usd.quantize(COST_DECIMALS, ROUND_HALF_UP)


def open_sink(url: str, *, table: str = DEFAULT_TABLE) -> Sink:
    """Create the sink for a URL; call ``await sink.open()`` before use.

    ``sqlite:///llmgw.db`` is a path relative to the working directory and
    ``sqlite:////var/lib/llmgw.db`` an absolute one. ``postgresql://`` and
    ``postgres://`` URLs are passed to asyncpg.
    """
    validate_table(table)
    if url.startswith("sqlite:///"):
        from llmgw.ledger.sqlite import SQLiteSink

        path = url.removeprefix("sqlite:///")
        if not path:
            raise ValueError(
                "invalid ledger sink URL 'sqlite:///': missing the database path, "
                "for example sqlite:///llmgw.db"
            )
        return SQLiteSink(path, table=table)

    if url.startswith(("postgresql://", "postgres://")):
        from llmgw.ledger.postgres import PostgresSink

        return PostgresSink(url, table=table)

    # The URL may contain a password, so only its scheme is shown.
    scheme = url.split("://", 1)[0] if "://" in url else ""
    raise ValueError(
        f"unsupported ledger sink URL scheme {scheme!r}: expected sqlite:///PATH "
        "or postgresql://USER@HOST/DB"
    )
