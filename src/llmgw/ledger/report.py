"""Render usage totals as an aligned table, JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from llmgw.ledger.sink import TOTALS_COLUMNS

FORMATS = ("table", "json", "csv")


def render(
    rows: Sequence[Mapping[str, Any]], fmt: str, *, group_label: str = "group"
) -> str:
    """Render totals rows (from ``Sink.totals``), ending with a newline.

    ``group_label`` names the group column in the table header, for example
    ``model``. JSON and CSV always call it ``group``, so their keys are fixed.
    """
    if fmt == "json":
        objects = [{column: row[column] for column in TOTALS_COLUMNS} for row in rows]
        return orjson.dumps(objects).decode() + "\n"
    if fmt == "csv":
        return _render_csv(rows)
    if fmt == "table":
        return _render_table(rows, group_label)
    raise ValueError(
        f"invalid report format {fmt!r}: expected one of {', '.join(FORMATS)}"
    )


def _render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TOTALS_COLUMNS)
    for row in rows:
        writer.writerow(
            ["" if row[column] is None else row[column] for column in TOTALS_COLUMNS]
        )
    return out.getvalue()


def _render_table(rows: Sequence[Mapping[str, Any]], group_label: str) -> str:
    header = [group_label, *TOTALS_COLUMNS[1:]]
    cells = [
        ["(none)" if row["group"] is None else str(row["group"])]
        + [str(row[column]) for column in TOTALS_COLUMNS[1:]]
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
