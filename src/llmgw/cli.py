"""Command line: serve, check-config, usage. This module only wires."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import structlog

from llmgw.config import Config, ConfigError, default_config, load_config
from llmgw.ledger.report import render
from llmgw.ledger.sink import open_sink
from llmgw.observability.logging import configure_logging

log = structlog.get_logger("llmgw.cli")


def _run_loop(coro_factory: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux and macOS
        asyncio.run(coro_factory())  # type: ignore[operator]
        return
    uvloop.run(coro_factory())  # type: ignore[operator]


def _worker_main(config: Config, reuse_port: bool) -> None:
    from llmgw.server import serve

    configure_logging(config.logging.level)
    _run_loop(lambda: serve(config, reuse_port=reuse_port))


def _serve_workers(config: Config, workers: int) -> int:
    """Start ``workers`` processes on one port with SO_REUSEPORT; forward
    SIGTERM and SIGINT to them and wait for all to exit."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_main, args=(config, True), name=f"llmgw-worker-{i}"
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for process in processes:
        process.join()
    return max((process.exitcode or 0) for process in processes)


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
                "to route models to OpenAI or an OpenAI-compatible server.",
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
        _worker_main(config, reuse_port=False)
        return 0
    return _serve_workers(config, workers)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(
        f"{args.file}: OK ({len(config.providers)} providers, {len(config.models)} "
        f"models, {len(config.keys)} keys)"
    )
    return 0


async def _usage(config: Config, by: str, fmt: str) -> str:
    sink = open_sink(config.ledger.sink)
    await sink.open()
    try:
        rows = await sink.totals(by)
    finally:
        await sink.close()
    return render(rows, fmt)


def cmd_usage(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else default_config().config
    print(asyncio.run(_usage(config, args.by, args.format)))
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
    usage.add_argument("--by", choices=["key", "tenant", "model", "day"], default="key")
    usage.add_argument("--format", choices=["table", "json", "csv"], default="table")
    usage.set_defaults(func=cmd_usage)
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
