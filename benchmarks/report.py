"""Derived figures, goals and the printed tables of a harness run.

Every figure compares targets measured in the same run: throughput as a
ratio to a reference target, latency as the target's percentile minus the
direct run's percentile at the same rate ("added" latency).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Throughput ratios: (numerator, denominator).
THROUGHPUT_RATIOS = (
    ("llmgw", "aiohttp"),
    ("llmgw", "litellm"),
    ("llmgw", "portkey"),
    ("llmgw-w2", "llmgw"),
    ("llmgw", "nginx"),
)
# A target has held stream chunks back when its median gap strays from the mock's
# interval by more than this share, or when more than this share of gaps
# are coalesced (under 1 ms).
GAP_TOLERANCE = 0.2
COALESCED_LIMIT = 0.05


@dataclass(frozen=True)
class Goal:
    """A target figure: met when ``value`` compares with ``limit`` as stated."""

    name: str
    figure: str
    limit: float
    above: bool  # True: value >= limit; False: value < limit
    unit: str


GOALS = (
    Goal(
        "throughput with governance vs bare aiohttp",
        "ratio llmgw/aiohttp",
        0.8,
        True,
        "x",
    ),
    Goal("throughput vs LiteLLM", "ratio llmgw/litellm", 50.0, True, "x"),
    Goal("throughput vs Portkey", "ratio llmgw/portkey", 5.0, True, "x"),
    Goal("--workers 2 vs 1 worker", "ratio llmgw-w2/llmgw", 1.6, True, "x"),
    Goal(
        "added p99 latency at 200 req/s", "added p99 ms llmgw @200", 2.0, False, " ms"
    ),
    Goal(
        "added p99 latency at 200 req/s, 2 workers",
        "added p99 ms llmgw-w2 @200",
        2.0,
        False,
        " ms",
    ),
    Goal(
        "added time to first token, p50", "added ttft p50 ms llmgw", 1.0, False, " ms"
    ),
)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def throughput_figures(throughput: dict[str, Any]) -> dict[str, float | None]:
    # A target without one successful request has no figure, not 0.
    rps = {name: run.get("rps") or None for name, run in throughput.items()}
    figures: dict[str, float | None] = {}
    for top, bottom in THROUGHPUT_RATIOS:
        figures[f"ratio {top}/{bottom}"] = ratio(rps.get(top), rps.get(bottom))
    for name, value in rps.items():
        if name != "direct":
            figures[f"ratio {name}/direct"] = ratio(value, rps.get("direct"))
    return figures


def measured(run: dict[str, Any] | None) -> bool:
    """Return True when an open-loop run has a successful measured request."""
    return run is not None and int(run.get("measured_ok", 0)) > 0


def added(
    run: dict[str, Any], direct: dict[str, Any] | None, field: str, key: str
) -> float | None:
    """Return a run's percentile minus the direct run's, or None without both."""
    if not measured(run) or direct is None or not measured(direct):
        return None
    if field not in run or field not in direct:
        return None
    return float(run[field][key]) - float(direct[field][key])


def latency_figures(latency: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for rate, runs in latency.items():
        direct = runs.get("direct")
        for name, run in runs.items():
            if name == "direct":
                continue
            for key in ("p50", "p99"):
                figures[f"added {key} ms {name} @{rate}"] = added(
                    run, direct, "latency_ms", key
                )
    return figures


def held_back(run: dict[str, Any], interval_ms: float) -> bool:
    """Return True when a target's streams show chunks held back."""
    gap_p50 = float(run["gap_ms"]["p50"])
    coalesced_share = int(run["coalesced_gaps"]) / max(int(run["gaps"]), 1)
    off_interval = abs(gap_p50 - interval_ms) > GAP_TOLERANCE * interval_ms
    return off_interval or coalesced_share > COALESCED_LIMIT


def streaming_figures(
    streaming: dict[str, Any], interval_ms: float
) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    direct = streaming.get("direct")
    for name, run in streaming.items():
        if "gap_ms" not in run:
            continue
        figures[f"held back {name}"] = float(held_back(run, interval_ms))
        if name == "direct":
            continue
        for key in ("p50", "p99"):
            figures[f"added ttft {key} ms {name}"] = added(
                run, direct, "first_chunk_ms", key
            )
            figures[f"added ttlt {key} ms {name}"] = added(
                run, direct, "last_chunk_ms", key
            )
    return figures


def evaluate_goals(figures: dict[str, float | None]) -> list[dict[str, Any]]:
    """Return each goal with its value and met (None when the figure is missing)."""
    evaluated = []
    for goal in GOALS:
        value = figures.get(goal.figure)
        met = None
        if value is not None:
            met = value >= goal.limit if goal.above else value < goal.limit
        evaluated.append(
            {
                "goal": goal.name,
                "figure": goal.figure,
                "limit": goal.limit,
                "comparison": ">=" if goal.above else "<",
                "unit": goal.unit,
                "value": value,
                "met": met,
            }
        )
    streams = [name for name in figures if name.startswith("held back ")]
    for name in streams:
        target = name.removeprefix("held back ")
        evaluated.append(
            {
                "goal": f"{target}: stream chunks not held back",
                "figure": name,
                "limit": 0.0,
                "comparison": "==",
                "unit": "",
                "value": figures[name],
                "met": figures[name] == 0.0,
            }
        )
    return evaluated


def _number(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.{0 if abs(value) >= 1000 else digits}f}"
    return str(value)


def _errors(run: dict[str, Any]) -> str:
    errors = {**run.get("warmup_errors", {}), **run.get("errors", {})}
    return str(sum(errors.values())) if errors else "0"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Return a text table: the first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        return "  ".join([first, *rest])

    lines = [line(header), line(["-" * width for width in widths])]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def format_throughput(results: dict[str, Any]) -> str:
    runs = results.get("throughput", {})
    direct = runs.get("direct", {}).get("rps")
    rows = []
    for name, run in runs.items():
        vs_direct = ratio(run["rps"], direct)
        rows.append(
            [
                name,
                _number(run["rps"], 0),
                _number(vs_direct),
                run["generator"],
                _number(run["latency_ms"]["p50"]),
                _number(run["latency_ms"]["p99"]),
                _errors(run),
            ]
        )
    header = ["target", "req/s", "x direct", "generator", "p50 ms", "p99 ms", "errors"]
    return _table(header, rows)


def format_latency(results: dict[str, Any], rate: str) -> str:
    runs = results.get("latency", {}).get(rate, {})
    direct = runs.get("direct")
    rows = []
    for name, run in runs.items():
        latency = run["latency_ms"] if measured(run) else {}
        rows.append(
            [
                name,
                _number(run["achieved_rate"], 0),
                _number(latency.get("p50")),
                _number(latency.get("p99")),
                _number(latency.get("p999")),
                _number(added(run, direct, "latency_ms", "p50")),
                _number(added(run, direct, "latency_ms", "p99")),
                _number(run["start_lag_ms"]["p99"]),
                _errors(run),
            ]
        )
    header = [
        "target",
        "done/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "+p50 ms",
        "+p99 ms",
        "lag p99",
        "errors",
    ]
    return _table(header, rows)


def format_streaming(results: dict[str, Any], interval_ms: float) -> str:
    runs = results.get("streaming", {})
    direct = runs.get("direct")
    rows = []
    for name, run in runs.items():
        if "first_chunk_ms" not in run:
            rows.append([name] + ["-"] * 9 + [_errors(run)])
            continue
        first = run["first_chunk_ms"]
        last = run["last_chunk_ms"]
        share = int(run["coalesced_gaps"]) / max(int(run["gaps"]), 1)
        rows.append(
            [
                name,
                _number(first["p50"]),
                _number(first["p99"]),
                _number(added(run, direct, "first_chunk_ms", "p50")),
                _number(added(run, direct, "first_chunk_ms", "p99")),
                _number(last["p50"], 1),
                _number(added(run, direct, "last_chunk_ms", "p50")),
                _number(run["gap_ms"]["p50"]),
                _number(run["gap_ms"]["p99"]),
                f"{share:.1%}" + (" HELD" if held_back(run, interval_ms) else ""),
                _errors(run),
            ]
        )
    header = [
        "target",
        "ttft p50",
        "ttft p99",
        "+ttft p50",
        "+ttft p99",
        "ttlt p50",
        "+ttlt p50",
        "gap p50",
        "gap p99",
        "coalesced",
        "errors",
    ]
    return _table(header, rows)


def format_goals(goals: list[dict[str, Any]]) -> str:
    rows = []
    for goal in goals:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[goal["met"]]
        if goal["comparison"] == "==":  # the held-back check: 0 means not held
            limit, value = "not held", {0.0: "not held", 1.0: "held"}[goal["value"]]
        else:
            limit = f"{goal['comparison']} {goal['limit']:g}{goal['unit']}"
            value = _number(goal["value"])
        rows.append([goal["goal"], limit, value, verdict])
    return _table(["goal", "target", "value", "verdict"], rows)
