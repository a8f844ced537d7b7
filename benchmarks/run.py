"""Benchmark llmgw side by side with other gateways, in one run on one machine.

Every target gets the same load from the same generators, against the same
mock upstreams, all on 127.0.0.1:

- throughput: closed loop, ``--connections`` in flight for ``--seconds``
  (wrk), against the instant mock;
- latency: open loop at each of ``--rates`` requests per second, against the
  mock that responds after ``--delay-ms``; figures are minus the direct run;
- streaming: open loop at ``--stream-rate`` streams per second against the
  mock that streams ``--chunks`` chunks ``--chunk-interval-ms`` apart: time
  to first and last token minus the direct run, and the gaps between chunks.

The targets are the mock itself (direct), a bare aiohttp pass-through,
``llmgw serve`` with governance on (1 and 2 workers), nginx, LiteLLM and
Portkey. A target that is not installed is skipped with the reason. The
sections memory, redis_trips, ledger_drain and token_count run the
single-measurement scripts of the same names. The script prints tables and
goals and writes every figure to a JSON file.

Usage: ``.venv/bin/python benchmarks/run.py [--only SECTIONS] [--skip SECTIONS]
[--targets NAMES] [--json PATH]``
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from drivers import ClosedLoop, run_closed_loop, run_open_loop
from environment import describe_machine
from extras import EXTRA_SECTIONS, run_extra_section, section_goals
from payloads import chat_request
from report import (
    evaluate_goals,
    format_goals,
    format_latency,
    format_streaming,
    format_throughput,
    latency_figures,
    streaming_figures,
    throughput_figures,
)
from targets import (
    REDIS_URL,
    TARGET_NAMES,
    TARGETS,
    Running,
    Target,
    Workspace,
    count_ledger_rows,
)
from upstreams import MockSettings, Upstreams, mock_upstreams

BENCH_DIR = Path(__file__).resolve().parent
CORE_SECTIONS = ("throughput", "latency", "streaming")
# The mock upstream that each core section loads through the target.
SECTION_MOCKS = {"throughput": "instant", "latency": "delay", "streaming": "stream"}
SECTIONS = CORE_SECTIONS + tuple(EXTRA_SECTIONS)


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    connections: int
    wrk_threads: int
    use_wrk: bool
    rates: tuple[float, ...]
    stream_rate: float
    chunks: int
    chunk_interval_ms: float
    delay_ms: float
    targets: tuple[str, ...]
    sections: tuple[str, ...]
    use_nginx_mock: bool
    json_path: Path
    keep_workdir: bool


class Run:
    """The results of one harness run and the problems found on the way.

    A problem makes the run's figures unusable: a target or generator that
    failed, a ledger that does not match. Failed requests are figures of the
    target (a target past its capacity times out), listed apart.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.results: dict[str, Any] = {
            "throughput": {},
            "latency": {_rate_key(rate): {} for rate in options.rates},
            "streaming": {},
            "ledger": [],
            "sections": {},
            "targets": {},
        }
        self.problems: list[str] = []
        self.failed_requests: list[str] = []

    def problem(self, text: str) -> None:
        print(f"  PROBLEM: {text}", flush=True)
        self.problems.append(text)


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _list_option(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in allowed]
    if unknown:
        invalid = ", ".join(unknown)
        expected = ", ".join(allowed)
        raise argparse.ArgumentTypeError(
            f"invalid {option} {invalid}: expected some of {expected}"
        )
    return names


def body_file(space: Workspace, model: str, stream: bool) -> Path:
    """Return the file with the request body for ``model``, writing it once."""
    path = space.workdir / f"body-{model}{'-stream' if stream else ''}.json"
    if not path.exists():
        path.write_bytes(chat_request(model, stream))
    return path


def load_section(
    run: Run, section: str, running: Running, space: Workspace
) -> list[dict[str, Any]]:
    """Run one section's loads on a started target; return their results."""
    options = run.options
    endpoint = running.endpoints[SECTION_MOCKS[section]]
    if section == "throughput":
        closed = ClosedLoop(
            options.connections,
            options.seconds,
            options.warmup,
            options.wrk_threads,
            options.use_wrk,
        )
        body = body_file(space, endpoint.model, stream=False)
        return [run_closed_loop(endpoint, body, closed)]
    if section == "latency":
        body = body_file(space, endpoint.model, stream=False)
        return [
            run_open_loop(endpoint, body, rate, options.seconds, options.warmup)
            for rate in options.rates
        ]
    body = body_file(space, endpoint.model, stream=True)
    result = run_open_loop(
        endpoint,
        body,
        options.stream_rate,
        options.seconds,
        options.warmup,
        expect_chunks=options.chunks,
    )
    return [result]


def store(run: Run, section: str, target: str, results: list[dict[str, Any]]) -> None:
    """Keep each result and report its errors as problems."""
    if section == "latency":
        for rate, result in zip(run.options.rates, results, strict=True):
            run.results["latency"][_rate_key(rate)][target] = result
    else:
        run.results[section][target] = results[0]
    for result in results:
        errors = {**result.get("warmup_errors", {}), **result.get("errors", {})}
        if errors:
            where = f"{target} {section}"
            if section == "latency":
                where += f" at {result['offered_rate']:g} req/s"
            run.failed_requests.append(f"{where}: {errors}")
            print(f"  failed requests: {errors}", flush=True)


def check_ledger(
    run: Run, target: str, ledger: Path, results: list[dict[str, Any]]
) -> None:
    """Compare the ledger's rows with the requests sent.

    Every request that got a response needs exactly one row. A request
    without one (cut when wrk stopped, timed out, refused) may have no row,
    because it can end before llmgw's handler starts.
    """
    sent = sum(int(result["sent"]) for result in results)
    cut = sum(
        int(result.get("cut_at_end", 0)) + int(result.get("no_response", 0))
        for result in results
    )
    try:
        rows = count_ledger_rows(ledger)
    except Exception as exc:  # sqlite3 or a missing file: reported, the run goes on
        run.problem(f"{target}: cannot read the ledger {ledger}: {exc}")
        return
    ok = sent - cut <= rows <= sent
    entry = {"target": target, "rows": rows, "sent": sent, "without_response": cut}
    run.results["ledger"].append({**entry, "ok": ok})
    counts = f"{rows} rows for {sent} requests sent"
    if cut:
        counts += f", {cut} of them without a response"
    if ok:
        print(f"  ledger OK: {counts}", flush=True)
    else:
        run.problem(f"{target}: ledger mismatch: {counts}")


def run_sections(
    run: Run, target: Target, running: Running, space: Workspace
) -> list[dict[str, Any]]:
    """Run every chosen core section on a started target; return all results."""
    everything = []
    for section in CORE_SECTIONS:
        if section not in run.options.sections:
            continue
        print(f"  {section} ...", flush=True)
        try:
            results = load_section(run, section, running, space)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            run.problem(f"{target.name} {section} failed: {exc}")
            run.results["targets"][target.name]["failed"].append(section)
            continue
        store(run, section, target.name, results)
        everything += results
    return everything


def run_target(
    run: Run, target: Target, upstreams: Upstreams, space: Workspace
) -> None:
    """Start one target, run the core sections on it, stop it, check its ledger."""
    print(f"{target.name}: {target.description}", flush=True)
    started = time.monotonic()
    try:
        with target.launch(upstreams, space) as running:
            run.results["targets"][target.name]["startup_seconds"] = round(
                running.startup_seconds, 2
            )
            results = run_sections(run, target, running, space)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
        run.problem(f"{target.name} failed: {exc}")
        run.results["targets"][target.name]["failed"].append("start")
        return
    for note in running.notes:
        run.problem(note)
    if running.ledger is not None:
        check_ledger(run, target.name, running.ledger, results)
    print(f"  done in {time.monotonic() - started:.1f} s", flush=True)


def run_core_sections(run: Run, space: Workspace, targets: list[Target]) -> None:
    options = run.options
    settings = MockSettings(options.delay_ms, options.chunks, options.chunk_interval_ms)
    with mock_upstreams(space.workdir, settings, options.use_nginx_mock) as upstreams:
        run.results["mock"] = {"kind": upstreams.kind, "note": upstreams.note}
        print(f"mock upstreams: {upstreams.note}", flush=True)
        for target in targets:
            run_target(run, target, upstreams, space)


def select_targets(run: Run) -> list[Target]:
    """Return the chosen targets that can run; record the others as skipped."""
    ready = []
    for target in TARGETS:
        if target.name not in run.options.targets:
            continue
        reason = target.unavailable()
        run.results["targets"][target.name] = {
            "description": target.description,
            "skipped": reason,
            "failed": [],
        }
        if reason is None:
            ready.append(target)
        else:
            print(f"skipping {target.name}: {reason}", flush=True)
    return ready


def derive(run: Run) -> None:
    results = run.results
    figures = throughput_figures(results["throughput"])
    figures.update(latency_figures(results["latency"]))
    figures.update(
        streaming_figures(results["streaming"], run.options.chunk_interval_ms)
    )
    results["figures"] = figures
    results["goals"] = evaluate_goals(figures)
    for section, result in results["sections"].items():
        results["goals"] += section_goals(section, result)


def delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        print(f"Deleted {len(keys)} Redis keys under {prefix!r} in database 13")
    except redis.exceptions.RedisError as exc:
        print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")
    finally:
        client.close()


def execute(run: Run) -> None:
    options = run.options
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-"))
    # nginx workers run as nobody when started as root and need to reach
    # their temporary folders inside.
    workdir.chmod(0o711)
    space = Workspace(
        workdir=workdir,
        key=f"sk-bench-{secrets.token_hex(16)}",
        redis_prefix=f"llmgw-bench-{secrets.token_hex(4)}:",
    )
    try:
        targets = select_targets(run)
        if any(section in options.sections for section in CORE_SECTIONS):
            run_core_sections(run, space, targets)
        for section in EXTRA_SECTIONS:
            if section in options.sections:
                run.results["sections"][section] = run_extra_section(
                    section, run.problem
                )
    finally:
        if options.keep_workdir:
            print(f"Kept the working folder {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if any(section in options.sections for section in CORE_SECTIONS):
            delete_redis_keys(space.redis_prefix)


def print_report(run: Run) -> None:
    results = run.results
    options = run.options
    sections = options.sections
    print()
    print(results["meta"]["summary"])
    if "throughput" in sections:
        print(
            f"\nThroughput: closed loop, {options.connections} connections, "
            f"{options.seconds:g} s measured after {options.warmup:g} s warm-up, "
            "instant mock"
        )
        print(format_throughput(results))
    for rate in options.rates if "latency" in sections else ():
        print(
            f"\nLatency: open loop at {rate:g} req/s for {options.seconds:g} s, "
            f"mock responds after {options.delay_ms:g} ms; + is minus direct, in ms"
        )
        print(format_latency(results, _rate_key(rate)))
    if "streaming" in sections:
        print(
            f"\nStreaming: open loop at {options.stream_rate:g} streams/s, "
            f"{options.chunks} chunks {options.chunk_interval_ms:g} ms apart; "
            "times in ms from the scheduled start, + is minus direct"
        )
        print(format_streaming(results, options.chunk_interval_ms))
    for name, section in results["sections"].items():
        print(f"\n{name}:\n{section.get('report', '')}")
    print("\nGoals (targets to compare with, not test assertions):")
    print(format_goals(results["goals"]))
    for name, target in results["targets"].items():
        if target["skipped"]:
            print(f"skipped {name}: {target['skipped']}")
    if run.failed_requests:
        print("\nFailed requests (errors of the targets, not of the harness):")
        for failed in run.failed_requests:
            print(f"  - {failed}")
    if run.problems:
        print("\n" + "!" * 72)
        print("THIS RUN HAD PROBLEMS; its figures are not comparable:")
        for problem in run.problems:
            print(f"  - {problem.splitlines()[0]}")
        print("!" * 72)


def write_json(run: Run) -> None:
    run.results["problems"] = run.problems
    run.results["failed_requests"] = run.failed_requests
    path = run.options.json_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(run.results, option=orjson.OPT_INDENT_2))
    print(f"\nWrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--seconds",
        type=float,
        default=10.0,
        help="measured seconds of each load run (default 10)",
    )
    add(
        "--warmup",
        type=float,
        default=2.0,
        help="warm-up seconds before each load run, not measured (default 2)",
    )
    add(
        "--connections",
        type=int,
        default=32,
        help="connections of the closed-loop throughput runs (default 32)",
    )
    add("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    add(
        "--python-loadgen",
        action="store_true",
        help="measure throughput with loadgen.py even when wrk is installed",
    )
    add(
        "--rates",
        default="200,1000",
        help="open-loop request rates per second, comma-separated (default 200,1000)",
    )
    add(
        "--stream-rate",
        type=float,
        default=50.0,
        help="streams started per second in the streaming runs (default 50)",
    )
    add("--chunks", type=int, default=50, help="content chunks per stream (default 50)")
    add(
        "--chunk-interval-ms",
        type=float,
        default=10.0,
        help="milliseconds between stream chunks (default 10)",
    )
    add(
        "--delay-ms",
        type=float,
        default=20.0,
        help="delay of the mock used by the latency runs, in ms (default 20)",
    )
    add(
        "--targets",
        default=",".join(TARGET_NAMES),
        help=f"targets to run, comma-separated (default: {','.join(TARGET_NAMES)})",
    )
    add("--only", help=f"sections to run, comma-separated, from {','.join(SECTIONS)}")
    add("--skip", help="sections to leave out, comma-separated")
    add(
        "--python-mock",
        action="store_true",
        help="use the Python mock upstream even when nginx is installed",
    )
    add(
        "--json",
        type=Path,
        help="JSON results file (default benchmarks/results/run-TIME.json)",
    )
    add(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary folder with configs and logs",
    )
    return parser


def parse_args(argv: list[str]) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        targets = _list_option(args.targets, TARGET_NAMES, "--targets")
        only = _list_option(args.only, SECTIONS, "--only") if args.only else SECTIONS
        skip = _list_option(args.skip, SECTIONS, "--skip") if args.skip else ()
        rates = tuple(float(rate) for rate in args.rates.split(","))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    checks = [
        (
            0.5 <= args.seconds <= 600,
            f"invalid --seconds {args.seconds}: expected 0.5 to 600",
        ),
        (0 <= args.warmup <= 120, f"invalid --warmup {args.warmup}: expected 0 to 120"),
        (
            1 <= args.connections <= 1024,
            f"invalid --connections {args.connections}: expected 1 to 1024",
        ),
        (
            1 <= args.wrk_threads <= 64,
            f"invalid --wrk-threads {args.wrk_threads}: expected 1 to 64",
        ),
        (
            all(0 < rate <= 20000 for rate in rates),
            f"invalid --rates {args.rates}: expected rates above 0, at most 20000",
        ),
        (
            0 < args.stream_rate <= 5000,
            f"invalid --stream-rate {args.stream_rate}: expected above 0, at most 5000",
        ),
        (
            1 <= args.chunks <= 10000,
            f"invalid --chunks {args.chunks}: expected 1 to 10000",
        ),
        (
            0 <= args.chunk_interval_ms <= 1000,
            f"invalid --chunk-interval-ms {args.chunk_interval_ms}: expected 0 to 1000",
        ),
        (
            0 <= args.delay_ms <= 10000,
            f"invalid --delay-ms {args.delay_ms}: expected 0 to 10000",
        ),
    ]
    for valid, message in checks:
        if not valid:
            parser.error(message)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        wrk_threads=args.wrk_threads,
        use_wrk=not args.python_loadgen,
        rates=rates,
        stream_rate=args.stream_rate,
        chunks=args.chunks,
        chunk_interval_ms=args.chunk_interval_ms,
        delay_ms=args.delay_ms,
        targets=targets,
        sections=tuple(section for section in only if section not in skip),
        use_nginx_mock=not args.python_mock,
        json_path=args.json or BENCH_DIR / "results" / f"run-{stamp}.json",
        keep_workdir=args.keep_workdir,
    )


def main() -> int:
    options = parse_args(sys.argv[1:])
    run = Run(options)
    started = time.monotonic()
    run.results["meta"] = describe_machine(options, sys.argv)
    try:
        execute(run)
    finally:
        run.results["meta"]["seconds"] = round(time.monotonic() - started, 1)
        derive(run)
        write_json(run)
    print_report(run)
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
