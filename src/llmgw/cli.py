"""Command line: serve, check-config, usage, keys, tenants and teams.

This module only wires; the admin commands live in ``llmgw.admin.commands``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from llmgw.admin.commands import add_key_commands, add_scope_commands
from llmgw.config import (
    Config,
    ConfigError,
    default_config,
    generate_key,
    hash_key,
    load_config,
    price_warnings,
)
from llmgw.ledger.report import FORMATS, parse_time, render
from llmgw.ledger.sink import GROUP_COLUMNS, open_sink
from llmgw.observability.logging import configure_logging

log = structlog.get_logger("llmgw.cli")


def _run_loop(coro_factory: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux and macOS
        asyncio.run(coro_factory())  # type: ignore[operator]
        return
    uvloop.run(coro_factory())  # type: ignore[operator]


_stop_signals: list[int] = []


def _remember_signal(signum: int, _frame: FrameType | None) -> None:
    _stop_signals.append(signum)


def _worker_main(config: Config, reuse_port: bool) -> int:
    """Serve in this process until SIGTERM; return the exit code."""
    # Until the event loop takes over the signals, remember them instead of
    # letting SIGINT raise KeyboardInterrupt in the middle of start-up.
    signal.signal(signal.SIGTERM, _remember_signal)
    signal.signal(signal.SIGINT, _remember_signal)
    from llmgw.server import StartupError, serve

    configure_logging(config.logging.level)
    try:
        _run_loop(
            lambda: serve(
                config,
                reuse_port=reuse_port,
                stop_requested=lambda: bool(_stop_signals),
            )
        )
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _worker_process(config: Config) -> None:
    sys.exit(_worker_main(config, reuse_port=True))


# A worker that exits sooner than this after its start failed to start (a
# port in use, a sink that is down): restarting it would only loop.
_MIN_WORKER_LIFETIME = 5.0


class _Supervisor:
    """Run worker processes on one port with SO_REUSEPORT.

    SIGTERM and SIGINT are passed on to every worker. A worker that dies
    while the others serve is logged and replaced, unless it died right
    after its start, which stops them all.
    """

    def __init__(self, config: Config, workers: int) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, multiprocessing.process.BaseProcess] = {}
        self._started_at: dict[int, float] = {}
        self._workers = workers
        self._stopping = False
        self._failed = False

    def _start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_process, args=(self._config,), name=f"llmgw-worker-{index}"
        )
        process.start()
        self._processes[index] = process
        self._started_at[index] = time.monotonic()
        log.info("worker_started", worker=index, worker_pid=process.pid)

    def signal_all(self, signum: int, _frame: FrameType | None = None) -> None:
        self._stopping = True
        for process in self._processes.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signum)

    def _reap(self, index: int, process: multiprocessing.process.BaseProcess) -> None:
        code = process.exitcode
        if self._stopping:
            if code != 0:
                self._failed = True
                log.error(
                    "worker_failed",
                    worker=index,
                    worker_pid=process.pid,
                    exit_code=code,
                )
            return
        log.error("worker_exited", worker=index, worker_pid=process.pid, exit_code=code)
        if time.monotonic() - self._started_at[index] < _MIN_WORKER_LIFETIME:
            self._failed = True
            self.signal_all(signal.SIGTERM)
            return
        self._start(index)

    def run(self) -> int:
        """Start the workers and wait until all have exited."""
        for index in range(self._workers):
            if self._stopping:  # a signal came during start-up
                break
            self._start(index)
        reaped: set[int] = set()
        while len(reaped) < len(self._processes):
            running = [
                p.sentinel for i, p in self._processes.items() if i not in reaped
            ]
            multiprocessing.connection.wait(running, timeout=1.0)
            for index, process in list(self._processes.items()):
                if index in reaped or process.exitcode is None:
                    continue
                self._reap(index, process)
                if self._processes[index] is process:
                    reaped.add(index)
        return 1 if self._failed else 0


def _serve_workers(config: Config, workers: int) -> int:
    configure_logging(config.logging.level)
    supervisor = _Supervisor(config, workers)
    signal.signal(signal.SIGTERM, supervisor.signal_all)
    signal.signal(signal.SIGINT, supervisor.signal_all)
    return supervisor.run()


def _load(path: str | None) -> Config:
    if path is None:
        config, key, skipped = default_config()
        print(
            "No --config given: running the embedded default (in-process limits, "
            f"SQLite ledger). Gateway key, shown once: {key}",
            file=sys.stderr,
            flush=True,
        )
        for variable in skipped:
            print(
                f"note: {variable} is set, but that provider kind is not supported "
                "yet; it is ignored.",
                file=sys.stderr,
            )
        if not config.providers:
            print(
                "note: no provider configured: set OPENAI_API_KEY or OPENAI_BASE_URL "
                "to route models to OpenAI or an OpenAI-compatible server, "
                "ANTHROPIC_API_KEY to route claude-* to Anthropic, or "
                "GEMINI_API_KEY to route gemini-* to Google Gemini.",
                file=sys.stderr,
            )
        return config
    return load_config(path)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    workers = args.workers or config.server.workers
    if workers > 1 and config.redis is None:
        print(
            f"error: --workers {workers} needs a shared back end: set redis.url in the "
            "config. The embedded back end works in one process only.",
            file=sys.stderr,
        )
        return 2
    if workers == 1:
        return _worker_main(config, reuse_port=False)
    return _serve_workers(config, workers)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    counts = ", ".join(
        f"{count} {noun if count == 1 else noun + 's'}"
        for count, noun in (
            (len(config.providers), "provider"),
            (len(config.models), "model"),
            (len(config.keys), "key"),
            (len(config.tenants), "tenant"),
        )
    )
    print(f"{args.file}: OK ({counts})")
    for warning in price_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


async def _usage(config: Config, args: argparse.Namespace) -> str:
    sink = open_sink(config.ledger.sink, table=config.ledger.table)
    await sink.open()
    try:
        rows = await sink.totals(args.by, since=args.since, until=args.until)
    finally:
        await sink.close()
    return render(rows, args.format, group_label=args.by)


def _report_time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_usage(args: argparse.Namespace) -> int:
    if args.since is not None and args.until is not None and args.since >= args.until:
        print(
            "error: --since must be earlier than --until, which is exclusive",
            file=sys.stderr,
        )
        return 2
    config = load_config(args.config) if args.config else default_config().config
    sink = config.ledger.sink
    if sink.startswith("sqlite:///"):
        path = Path(sink.removeprefix("sqlite:///"))
        if not path.is_file():
            # Opening it would create an empty ledger and report nothing.
            print(
                f"error: no ledger at {path}: the sink is {sink} from "
                f"{config.source}; run from the gateway's folder or pass --config.",
                file=sys.stderr,
            )
            return 1
    try:
        print(asyncio.run(_usage(config, args)), end="")
    except Exception as exc:
        # A sink that is down or a database that does not exist: one line,
        # no traceback. The message names no password (drivers omit it).
        print(
            f"error: cannot read the ledger sink: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a new gateway key once, with the config entry that stores only
    its hash, so the plaintext never has to sit in the config file."""
    key = generate_key()
    print(f"key (shown once, give it to the caller): {key}")
    print("config entry:")
    print(f"  - name: {args.name}")
    print(f"    key_sha256: {hash_key(key)}")
    return 0


def cmd_keys_hash(args: argparse.Namespace) -> int:
    """Print the SHA-256 of a key read from standard input."""
    key = sys.stdin.readline().strip()
    if not key:
        print("error: no key on standard input", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmgw", description="LLM gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML configuration file (default: embedded)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default: config)",
    )
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    usage = commands.add_parser("usage", help="print usage totals from the ledger sink")
    usage.add_argument("--config", help="YAML configuration file naming the sink")
    usage.add_argument(
        "--by",
        choices=list(GROUP_COLUMNS),
        default="key",
        help=(
            "group by key name, team (as tenant/team), tenant, requested model "
            "or UTC day (default: key)"
        ),
    )
    usage.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="aligned columns, a JSON array of objects or CSV (default: table)",
    )
    usage.add_argument(
        "--since",
        type=_report_time,
        metavar="TIME",
        help="count requests that arrived at or after TIME: an ISO 8601 date "
        "or date and time, UTC unless it has an offset",
    )
    usage.add_argument(
        "--until",
        type=_report_time,
        metavar="TIME",
        help="count requests that arrived before TIME (exclusive), in the same form",
    )
    usage.set_defaults(func=cmd_usage)

    keys = commands.add_parser(
        "keys",
        help="create gateway keys and their hashes; manage keys on a running gateway",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    new = key_commands.add_parser("new", help="print a new key and its config entry")
    new.add_argument("--name", default="my-key", help="the key's name in the config")
    new.set_defaults(func=cmd_keys_new)
    hashed = key_commands.add_parser(
        "hash", help="print the key_sha256 of a key read from standard input"
    )
    hashed.set_defaults(func=cmd_keys_hash)
    add_key_commands(key_commands)
    add_scope_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve" and args.workers is not None and args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
