"""Run the single-measurement benchmark scripts as sections of the harness.

Each section is a module in this folder with a ``measure(**options) -> dict``
function and a ``format_report(dict) -> str`` function, run in this process
with the module's own defaults. A module that is missing, or has no
``measure`` yet, is reported as skipped. ``section_goals`` picks each
section's figures that have a target, for the harness's goals table.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
import traceback
from collections.abc import Callable
from typing import Any

# Section name: the module that measures it.
EXTRA_SECTIONS = {
    "memory": "memory",
    "redis_trips": "redis_trips",
    "ledger_drain": "ledger_drain",
    "token_count": "token_count",
}


def run_extra_section(section: str, problem: Callable[[str], None]) -> dict[str, Any]:
    """Run one section's ``measure()``; return its figures and printed report."""
    module_name = EXTRA_SECTIONS[section]
    if importlib.util.find_spec(module_name) is None:
        return _skip(section, f"benchmarks/{module_name}.py not found")
    print(f"{section} ...", flush=True)
    started = time.monotonic()
    try:
        module = importlib.import_module(module_name)
        if not callable(getattr(module, "measure", None)):
            return _skip(section, f"benchmarks/{module_name}.py has no measure()")
        figures: dict[str, Any] = module.measure()
        report = str(module.format_report(figures))
    except Exception as exc:  # any failure of a section is reported, not raised
        problem(f"{section} failed: {type(exc).__name__}: {exc}")
        return {
            "failed": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    seconds = round(time.monotonic() - started, 1)
    print(f"  done in {seconds} s", flush=True)
    return {"figures": figures, "report": report, "seconds": seconds}


def _skip(section: str, reason: str) -> dict[str, Any]:
    print(f"skipping {section}: {reason}", flush=True)
    return {"skipped": reason}


def _goal(
    name: str, value: float, limit: float, comparison: str, unit: str
) -> dict[str, Any]:
    met = {
        "<": value < limit,
        "<=": value <= limit,
        ">=": value >= limit,
    }[comparison]
    return {
        "goal": name,
        "figure": name,
        "limit": limit,
        "comparison": comparison,
        "unit": unit,
        "value": value,
        "met": met,
    }


def _memory_goals(figures: dict[str, Any]) -> list[dict[str, Any]]:
    targets = figures["targets"]
    goals = []
    if "idle" in figures:
        goals.append(
            _goal(
                "memory: idle RSS per worker",
                figures["idle"]["max_worker_mb"],
                targets["idle_mb_per_worker"],
                "<",
                " MB",
            )
        )
    if "streams" in figures:
        goals.append(
            _goal(
                "memory: RSS with the streams open",
                figures["streams"]["total_peak_mb"],
                targets["streams_total_mb"],
                "<",
                " MB",
            )
        )
    if "soak" in figures:
        goals.append(
            _goal(
                "memory: growth over the soak",
                figures["soak"]["growth_percent"],
                targets["soak_growth_percent"],
                "<",
                "%",
            )
        )
    return goals


def _redis_trips_goals(figures: dict[str, Any]) -> list[dict[str, Any]]:
    limit = figures["target_round_trips_per_request"]
    return [
        _goal(
            f"redis: round trips per {mode.replace('_', '-')} request",
            figures[mode]["round_trips_request_path"],
            limit,
            "<=",
            "",
        )
        for mode in ("non_stream", "stream")
        if mode in figures
    ]


def _ledger_drain_goals(figures: dict[str, Any]) -> list[dict[str, Any]]:
    if "postgres" not in figures:
        return []
    return [
        _goal(
            "ledger drain into PostgreSQL",
            figures["postgres"]["records_per_second"],
            figures["target_postgres_records_per_second"],
            ">=",
            " rec/s",
        )
    ]


GOAL_READERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "memory": _memory_goals,
    "redis_trips": _redis_trips_goals,
    "ledger_drain": _ledger_drain_goals,
}


def section_goals(section: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the goals of a finished section; none when its figures lack them.

    The sections' modules own their result layout. A figure that is not
    where this reader expects it leaves the goal out; the section's own
    report, printed beside, still shows it.
    """
    reader = GOAL_READERS.get(section)
    if reader is None or "figures" not in result:
        return []
    try:
        return reader(result["figures"])
    except (KeyError, TypeError):
        return []
