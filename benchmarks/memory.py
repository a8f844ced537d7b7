"""Measure the resident memory (RSS) of ``llmgw serve`` idle, under many open
streams, and over a soak at a steady request rate.

RSS is VmRSS from ``/proc/PID/status`` of every process that serves
requests: the one ``llmgw serve`` process, or each worker with
``--workers N`` (the supervisor is reported apart). llmgw runs with the Redis
back end (database 13, a key prefix unique to the run) and a SQLite ledger,
configured as in ``run.py``. Everything listens on 127.0.0.1.

1. Idle: RSS a few seconds after start-up, before any request.
2. Open streams: against an upstream that sends one chunk a second, this
   process opens ``--streams`` streaming requests (raising its own file
   descriptor limit first, which llmgw inherits) and samples RSS while all
   of them are open.
3. Soak: a fresh llmgw in front of the instant mock upstream gets streaming
   and non-streaming requests in turn at ``--soak-rate`` per second. After
   ``--warmup-seconds``, RSS is sampled every ``--sample-seconds`` for
   ``--soak-seconds``, and the growth is (end - start) / start.

Usage: ``.venv/bin/python benchmarks/memory.py [--workers N] [--soak-seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from common import HOST, new_event_loop
from processes import (
    BENCH_DIR,
    REDIS_URL,
    GatewaySetup,
    chat_body,
    cleanup_redis,
    free_port,
    llmgw_serve_command,
    mock_upstream_command,
    new_gateway_key,
    new_redis_prefix,
    running,
)

TARGET_IDLE_MB_PER_WORKER = 80.0
TARGET_STREAMS_MB = 400.0
TARGET_GROWTH_PERCENT = 5.0
PHASES = ("idle", "streams", "soak")
MB = 1024 * 1024
# Seconds between start-up and the idle sample, so start-up work settles.
IDLE_SETTLE_SECONDS = 3.0
STREAM_CHUNK_INTERVAL = 1.0
# Descriptors per open stream in llmgw: the client's and the upstream's socket.
FDS_PER_STREAM = 2
FD_MARGIN = 256
# Seconds allowed, after the last stream was started, for all to be open.
OPEN_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Options:
    workers: int = 1
    streams: int = 1000
    stream_open_rate: float = 200.0
    stream_seconds: float = 30.0
    hold_seconds: float = 5.0
    soak_seconds: float = 600.0
    warmup_seconds: float = 60.0
    soak_rate: float = 100.0
    sample_seconds: float = 5.0


def rss_bytes(pid: int) -> int:
    """Return the resident set size of a process, from VmRSS in /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                if unit != "kB":
                    raise RuntimeError(f"unexpected VmRSS unit {unit!r} for pid {pid}")
                return int(value) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status: process {pid} has exited")


def sample_rss(pids: Sequence[int]) -> dict[int, int]:
    """Return RSS in bytes per pid."""
    return {pid: rss_bytes(pid) for pid in pids}


def megabytes(value: float) -> float:
    return round(value / MB, 1)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def open_file_limit(pid: int) -> int | None:
    """Return the soft ``Max open files`` limit of a process, None if unlimited."""
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    raise RuntimeError(f"no 'Max open files' line in /proc/{pid}/limits")


def raise_open_file_limit(required: int) -> int:
    """Raise this process's soft file descriptor limit towards ``required``.

    Processes started afterwards inherit the new limit. Returns the soft
    limit now in force, which stays below ``required`` when the hard limit
    does.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < required:
        soft = required if hard == resource.RLIM_INFINITY else min(required, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return required if soft == resource.RLIM_INFINITY else soft


def child_pids(pid: int) -> list[int]:
    """Return the pids of the direct children of ``pid``, in ascending order."""
    children: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue  # the process exited while /proc was listed
        # The command name in parentheses may contain spaces, so split after it.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry))
    return sorted(children)


def is_spawned_worker(pid: int) -> bool:
    """Tell a multiprocessing "spawn" child from the resource tracker, which
    the supervisor may start as well."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"spawn_main" in cmdline.read()
    except OSError:
        return False


def serving_pids(pid: int, workers: int, timeout: float = 30.0) -> list[int]:
    """Return the pids that serve requests: ``pid``, or its worker children.

    With ``workers`` above 1, ``llmgw serve`` is a supervisor that starts the
    workers as child processes (multiprocessing with "spawn") and serves
    nothing itself. Waits until all of them have started.
    """
    if workers <= 1:
        return [pid]
    deadline = time.monotonic() + timeout
    while True:
        children = [child for child in child_pids(pid) if is_spawned_worker(child)]
        if len(children) >= workers:
            return children
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"llmgw started {len(children)} of {workers} workers in {timeout:g} s"
            )
        time.sleep(0.2)


def slow_upstream_command(port: int, chunks: int, interval: float) -> list[str]:
    """Return the command of a mock whose streams send a chunk every ``interval`` s."""
    return [
        sys.executable,
        str(BENCH_DIR / "mock_upstream.py"),
        f"--stream-port={port}",
        f"--chunks={chunks}",
        f"--interval-ms={interval * 1000:g}",
    ]


def delete_keys(prefix: str) -> None:
    """Delete the run's Redis keys, printing a failure instead of raising it."""
    try:
        cleanup_redis(REDIS_URL, prefix)
    except redis.exceptions.RedisError as exc:
        print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")


def _idle_figures(
    pids: list[int], supervisor: int | None, fd_limits: dict[int, int | None]
) -> dict[str, Any]:
    rss = sample_rss(pids)
    figures: dict[str, Any] = {
        "workers_mb": [megabytes(rss[pid]) for pid in pids],
        "max_worker_mb": megabytes(max(rss.values())),
        "total_mb": megabytes(sum(rss.values())),
        "worker_fd_limits": [fd_limits[pid] for pid in pids],
    }
    if supervisor is not None:
        figures["supervisor_mb"] = megabytes(rss_bytes(supervisor))
    return figures


class StreamCounter:
    """The number of streams open (first chunk received, not ended) and their
    outcomes.

    ``all_open`` is set once ``expected`` streams are open at the same time.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.opened = 0
        self.outcomes: Counter[str] = Counter()
        self.all_open = asyncio.Event()

    def open(self) -> None:
        self.opened += 1
        if self.opened >= self.expected:
            self.all_open.set()


async def _hold_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    counter: StreamCounter,
) -> None:
    opened = False
    tail = b""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                counter.outcomes[f"HTTP {response.status}"] += 1
                await response.read()
                return
            async for chunk in response.content.iter_any():
                if not opened:
                    opened = True
                    counter.open()
                tail = (tail + chunk)[-64:]
    except (aiohttp.ClientError, TimeoutError) as exc:
        counter.outcomes[type(exc).__name__] += 1
    else:
        done = tail.endswith(b"data: [DONE]\n\n")
        counter.outcomes["ok" if done else "stream without [DONE]"] += 1
    finally:
        if opened:
            counter.opened -= 1


async def _open_streams(
    base_url: str, key: str, pids: list[int], options: Options
) -> dict[str, Any]:
    """Open the streams at the configured rate and sample RSS while all are open."""
    url = f"{base_url}/v1/chat/completions"
    body = chat_body(stream=True)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    counter = StreamCounter(options.streams)
    timeout = aiohttp.ClientTimeout(total=options.stream_seconds + 60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        started = time.perf_counter()
        interval = 1.0 / options.stream_open_rate
        for index in range(options.streams):
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(_hold_stream(session, url, body, headers, counter))
            )

        # Every stream should get its first chunk within a few seconds.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.all_open.wait(), OPEN_TIMEOUT_SECONDS)
        all_open_after = time.perf_counter() - started
        opened_at_sampling = counter.opened

        peak = dict.fromkeys(pids, 0)
        peak_total = 0
        fds = dict.fromkeys(pids, 0)
        hold_until = time.perf_counter() + options.hold_seconds
        while time.perf_counter() < hold_until:
            rss = sample_rss(pids)
            for pid, value in rss.items():
                peak[pid] = max(peak[pid], value)
                fds[pid] = max(fds[pid], open_fds(pid))
            peak_total = max(peak_total, sum(rss.values()))
            await asyncio.sleep(1.0)
        open_at_end_of_hold = counter.opened

        await asyncio.gather(*tasks)

    return {
        "streams": options.streams,
        "open_when_sampling_began": opened_at_sampling,
        "open_when_sampling_ended": open_at_end_of_hold,
        "seconds_until_all_open": round(all_open_after, 2),
        "workers_peak_mb": [megabytes(peak[pid]) for pid in pids],
        "total_peak_mb": megabytes(peak_total),
        "worker_open_fds_peak": [fds[pid] for pid in pids],
        "outcomes": dict(counter.outcomes),
    }


def _gateway_setup(upstream: str, ledger: Path, prefix: str) -> GatewaySetup:
    # max_input_tokens makes llmgw count every prompt, as run.py's configs do.
    return GatewaySetup(
        port=free_port(),
        upstream=upstream,
        ledger=ledger,
        key=new_gateway_key(),
        redis_prefix=prefix,
        max_input_tokens=4000,
    )


def _serve_command(setup: GatewaySetup, workdir: Path, workers: int) -> list[str]:
    command = llmgw_serve_command(setup, workdir)
    if workers > 1:
        command.append(f"--workers={workers}")
    return command


def _warn_if_fd_limit_low(fd_limits: dict[int, int | None], streams: int) -> None:
    needed = FDS_PER_STREAM * streams + FD_MARGIN
    low = [
        limit for limit in fd_limits.values() if limit is not None and limit < needed
    ]
    if low:
        print(
            f"WARNING: an llmgw worker's open file limit {min(low)} is below the "
            f"{needed} that {streams} streams need on one worker",
            flush=True,
        )


def _measure_idle_and_streams(
    workdir: Path, options: Options, phases: Sequence[str]
) -> dict[str, Any]:
    # This process opens one socket per stream, and llmgw inherits the limit.
    own_limit = raise_open_file_limit(FDS_PER_STREAM * options.streams + FD_MARGIN)
    prefix = new_redis_prefix("memory")
    chunks = max(1, round(options.stream_seconds / STREAM_CHUNK_INTERVAL))
    upstream_port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    setup = _gateway_setup(upstream, workdir / "idle-streams.db", prefix)
    results: dict[str, Any] = {}
    try:
        with (
            running(
                "slow-mock",
                slow_upstream_command(upstream_port, chunks, STREAM_CHUNK_INTERVAL),
                workdir,
                f"{upstream}/healthz",
            ),
            running(
                "llmgw-streams",
                _serve_command(setup, workdir, options.workers),
                workdir,
                f"{setup.base_url}/readyz",
            ) as server,
        ):
            pids = serving_pids(server.pid, options.workers)
            supervisor = server.pid if options.workers > 1 else None
            time.sleep(IDLE_SETTLE_SECONDS)
            fd_limits = {pid: open_file_limit(pid) for pid in pids}
            if "idle" in phases:
                results["idle"] = _idle_figures(pids, supervisor, fd_limits)
            if "streams" in phases:
                _warn_if_fd_limit_low(fd_limits, options.streams)
                print(f"  opening {options.streams} streams ...", flush=True)
                loop = new_event_loop()
                try:
                    streams = loop.run_until_complete(
                        _open_streams(setup.base_url, setup.key, pids, options)
                    )
                finally:
                    loop.close()
                streams["benchmark_fd_limit"] = own_limit
                streams["worker_fd_limits"] = [fd_limits[pid] for pid in pids]
                results["streams"] = streams
    finally:
        delete_keys(prefix)
    return results


async def _steady_load(
    base_url: str, key: str, options: Options, pids: list[int]
) -> dict[str, Any]:
    """Send requests at the soak rate and sample RSS after the warm-up."""
    url = f"{base_url}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    bodies = (chat_body(stream=False), chat_body(stream=True))
    outcomes: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    samples: list[tuple[float, dict[int, int]]] = []
    late = 0

    async def one(body: bytes, stream: bool) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes[type(exc).__name__] += 1
            return
        if response.status != 200:
            outcomes[f"HTTP {response.status}"] += 1
        elif stream and not payload.endswith(b"data: [DONE]\n\n"):
            outcomes["stream without [DONE]"] += 1
        else:
            outcomes["ok"] += 1

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        soak_start = started + options.warmup_seconds
        stop_at = soak_start + options.soak_seconds
        next_sample = soak_start
        interval = 1.0 / options.soak_rate
        sent = 0
        while (now := time.perf_counter()) < stop_at:
            if now >= next_sample:
                samples.append((now - soak_start, sample_rss(pids)))
                next_sample += options.sample_seconds
            due = started + sent * interval
            if now < due:
                await asyncio.sleep(min(due, next_sample) - now)
                continue
            if now - due > 1.0:
                late += 1
            stream = sent % 2 == 1
            task = asyncio.create_task(one(bodies[stream], stream))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.gather(*in_flight)
        samples.append((time.perf_counter() - soak_start, sample_rss(pids)))

    totals = [sum(rss.values()) for _, rss in samples]
    first, last = totals[0], totals[-1]
    return {
        "rate": options.soak_rate,
        "warmup_seconds": options.warmup_seconds,
        "soak_seconds": options.soak_seconds,
        "requests_sent": sent,
        "requests_late_over_1s": late,
        "outcomes": dict(outcomes),
        "start_mb": megabytes(first),
        "end_mb": megabytes(last),
        "max_mb": megabytes(max(totals)),
        "growth_percent": round((last - first) / first * 100, 2),
        "workers_start_mb": [megabytes(samples[0][1][pid]) for pid in pids],
        "workers_end_mb": [megabytes(samples[-1][1][pid]) for pid in pids],
        "samples": [
            [round(at, 1), megabytes(sum(rss.values()))] for at, rss in samples
        ],
    }


def _measure_soak(workdir: Path, options: Options) -> dict[str, Any]:
    prefix = new_redis_prefix("soak")
    upstream_port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    setup = _gateway_setup(upstream, workdir / "soak.db", prefix)
    try:
        with (
            running(
                "mock",
                mock_upstream_command(upstream_port),
                workdir,
                f"{upstream}/healthz",
            ),
            running(
                "llmgw-soak",
                _serve_command(setup, workdir, options.workers),
                workdir,
                f"{setup.base_url}/readyz",
            ) as server,
        ):
            pids = serving_pids(server.pid, options.workers)
            total = options.warmup_seconds + options.soak_seconds
            print(f"  soak: {total:g} s at {options.soak_rate:g} req/s ...", flush=True)
            loop = new_event_loop()
            try:
                return loop.run_until_complete(
                    _steady_load(setup.base_url, setup.key, options, pids)
                )
            finally:
                loop.close()
    finally:
        delete_keys(prefix)


def measure(
    *,
    workers: int = 1,
    streams: int = 1000,
    stream_open_rate: float = 200.0,
    stream_seconds: float = 30.0,
    hold_seconds: float = 5.0,
    soak_seconds: float = 600.0,
    warmup_seconds: float = 60.0,
    soak_rate: float = 100.0,
    sample_seconds: float = 5.0,
    phases: Sequence[str] = PHASES,
) -> dict[str, Any]:
    """Measure llmgw's RSS in the chosen phases and return megabytes and targets.

    ``streams`` streams open at ``stream_open_rate`` per second; each lasts
    ``stream_seconds``, which must cover the opening, ``hold_seconds`` of
    sampling and a margin. The soak sends ``soak_rate`` requests per second.
    """
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise ValueError(f"invalid phases {sorted(unknown)}: expected {PHASES}")
    opening = streams / stream_open_rate
    if "streams" in phases and stream_seconds < opening + hold_seconds + 10:
        raise ValueError(
            f"invalid stream_seconds {stream_seconds}: opening {streams} streams "
            f"takes {opening:g} s, so streams must last at least "
            f"{opening + hold_seconds + 10:g} s to stay open while sampled"
        )
    options = Options(
        workers=workers,
        streams=streams,
        stream_open_rate=stream_open_rate,
        stream_seconds=stream_seconds,
        hold_seconds=hold_seconds,
        soak_seconds=soak_seconds,
        warmup_seconds=warmup_seconds,
        soak_rate=soak_rate,
        sample_seconds=sample_seconds,
    )
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-memory-"))
    results: dict[str, Any] = {"workers": workers}
    try:
        if "idle" in phases or "streams" in phases:
            results.update(_measure_idle_and_streams(workdir, options, phases))
        if "soak" in phases:
            results["soak"] = _measure_soak(workdir, options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = {
        "idle_mb_per_worker": TARGET_IDLE_MB_PER_WORKER,
        "streams_total_mb": TARGET_STREAMS_MB,
        "soak_growth_percent": TARGET_GROWTH_PERCENT,
    }
    return results


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def format_report(results: dict[str, Any]) -> str:
    lines = [f"llmgw serve, Redis back end, {results['workers']} worker(s)"]
    targets = results["targets"]
    idle = results.get("idle")
    if idle is not None:
        target = targets["idle_mb_per_worker"]
        line = (
            f"idle:    {idle['max_worker_mb']:.1f} MB per worker (max; all: "
            f"{idle['workers_mb']}), total {idle['total_mb']:.1f} MB"
        )
        if "supervisor_mb" in idle:
            line += f", supervisor {idle['supervisor_mb']:.1f} MB"
        lines.append(
            f"{line}  [target < {target:g} MB per worker: "
            f"{_verdict(idle['max_worker_mb'] < target)}]"
        )
    streams = results.get("streams")
    if streams is not None:
        target = targets["streams_total_mb"]
        lines.append(
            f"streams: {streams['total_peak_mb']:.1f} MB total with "
            f"{streams['open_when_sampling_began']} of {streams['streams']} streams "
            f"open (per worker {streams['workers_peak_mb']}, open fds "
            f"{streams['worker_open_fds_peak']})  [target < {target:g} MB: "
            f"{_verdict(streams['total_peak_mb'] < target)}]"
        )
        lines.append(
            f"         fd limits: benchmark {streams['benchmark_fd_limit']}, llmgw "
            f"{streams['worker_fd_limits']}; outcomes {streams['outcomes']}"
        )
    soak = results.get("soak")
    if soak is not None:
        target = targets["soak_growth_percent"]
        lines.append(
            f"soak:    {soak['soak_seconds']:g} s at {soak['rate']:g} req/s after "
            f"{soak['warmup_seconds']:g} s warm-up: start {soak['start_mb']:.1f} MB, "
            f"end {soak['end_mb']:.1f} MB, max {soak['max_mb']:.1f} MB, growth "
            f"{soak['growth_percent']:+.2f}%  [target < {target:g}%: "
            f"{_verdict(soak['growth_percent'] < target)}]"
        )
        lines.append(
            f"         {soak['requests_sent']} requests, outcomes {soak['outcomes']}, "
            f"{soak['requests_late_over_1s']} sent over 1 s late"
        )
    return "\n".join(lines)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}: expected > 0")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=1, help="llmgw worker processes (1-16)"
    )
    parser.add_argument(
        "--streams", type=int, default=1000, help="streams held open at once (1-20000)"
    )
    parser.add_argument(
        "--stream-open-rate",
        type=_positive,
        default=200.0,
        help="streams opened per second",
    )
    parser.add_argument(
        "--stream-seconds",
        type=_positive,
        default=30.0,
        help="seconds each stream lasts; the upstream sends one chunk a second",
    )
    parser.add_argument(
        "--soak-seconds",
        type=_positive,
        default=600.0,
        help="seconds of soak after the warm-up, sampled for growth",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=60.0,
        help="seconds of load before the soak's first sample",
    )
    parser.add_argument(
        "--soak-rate", type=_positive, default=100.0, help="soak requests per second"
    )
    parser.add_argument(
        "--sample-seconds",
        type=_positive,
        default=5.0,
        help="seconds between RSS samples during the soak",
    )
    parser.add_argument(
        "--phase",
        choices=PHASES,
        action="append",
        help="run this phase only; repeat for several (default: all three)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if not 1 <= args.workers <= 16:
        parser.error(f"invalid --workers {args.workers}: expected 1 to 16")
    if not 1 <= args.streams <= 20_000:
        parser.error(f"invalid --streams {args.streams}: expected 1 to 20000")
    if args.warmup_seconds < 0:
        parser.error(f"invalid --warmup-seconds {args.warmup_seconds}: expected >= 0")

    try:
        results = measure(
            workers=args.workers,
            streams=args.streams,
            stream_open_rate=args.stream_open_rate,
            stream_seconds=args.stream_seconds,
            soak_seconds=args.soak_seconds,
            warmup_seconds=args.warmup_seconds,
            soak_rate=args.soak_rate,
            sample_seconds=args.sample_seconds,
            phases=args.phase or PHASES,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print()
    else:
        print(format_report(results))
    failures = [
        phase
        for phase in ("streams", "soak")
        if phase in results and set(results[phase]["outcomes"]) != {"ok"}
    ]
    if failures:
        print(f"ERRORS in {', '.join(failures)}: see the outcomes above.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
