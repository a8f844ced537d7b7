"""Render usage totals as an aligned table, JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from llmgw.ledger.sink import TOTALS_COLUMNS

FORMATS = ("table", "json", "csv")


def parse_time(text: str) -> float:
    """Parse an ISO 8601 date or date and time into Unix seconds.

    A date alone means midnight at its start, and a time without an offset
    is UTC. Raises ``ValueError`` naming the value when it does not parse.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: expected an ISO 8601 date or date and time, "
            "for example 2026-01-31, 2026-01-31T09:30:00Z or "
            "2026-01-31T09:30:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def render(
    rows: Sequence[Mapping[str, Any]], fmt: str, *, group_label: str = "group"
) -> str:
    """Render totals rows (from ``Sink.totals``), ending with a newline.

    ``group_label`` names the group column in the table header, for example
    ``model``. JSON and CSV always call it ``group``, so their keys are fixed.
    ``cost_usd`` is a JSON number, and a fixed-point text with 6 decimals in
    CSV and the table.
    """
    if fmt == "json":
        objects = [
            {column: _json_value(row[column]) for column in TOTALS_COLUMNS}
            for row in rows
        ]
        return orjson.dumps(objects).decode() + "\n"
    if fmt == "csv":
        return _render_csv(rows)
    if fmt == "table":
        return _render_table(rows, group_label)
    raise ValueError(
        f"invalid report format {fmt!r}: expected one of {', '.join(FORMATS)}"
    )


def _json_value(value: object) -> object:
    # orjson does not encode Decimal. A float keeps every cost with 6
    # decimals below 1 billion USD, because any decimal of 15 significant
    # digits survives the round trip through a double. orjson writes the
    # shortest text that reads back as the same double.
    return float(value) if isinstance(value, Decimal) else value


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TOTALS_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                "" if row[column] is None else _text(row[column])
                for column in TOTALS_COLUMNS
            ]
        )
    return out.getvalue()


def _render_table(rows: Sequence[Mapping[str, Any]], group_label: str) -> str:
    header = [group_label, *TOTALS_COLUMNS[1:]]
    cells = [
        ["(none)" if row["group"] is None else str(row["group"])]
        + [_text(row[column]) for column in TOTALS_COLUMNS[1:]]
        for row in rows
    ]
    widths = [
        max(len(line[i]) for line in [header, *cells]) for i in range(len(header))
    ]

    def format_line(line: list[str]) -> str:
        # The group is text, left-aligned; the counts are right-aligned.
        parts = [line[0].ljust(widths[0])]
        parts += [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [format_line(header), *(format_line(line) for line in cells)]
    return "\n".join(lines) + "\n"
