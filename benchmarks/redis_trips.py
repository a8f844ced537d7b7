"""Count the Redis round trips and commands of each request through llmgw.

llmgw talks to Redis through a counting TCP proxy on 127.0.0.1. On each
connection the proxy starts a new round trip (a turn) when the client writes
after the server last wrote, and parses the client's RESP stream into
commands. A turn is classified by the commands it sends:

- ledger drain: any stream consumer command (XREADGROUP, XAUTOCLAIM, XACK,
  XDEL, XGROUP, XINFO), sent by the background ledger drainer;
- connection setup: only HELLO, CLIENT, SELECT, AUTH or SUBSCRIBE;
- ping: only PING;
- request path: anything else (the admit and settle scripts, XADD, GET).

The script counts an idle window with no requests first. Then it sends N
non-streaming and N streaming requests one at a time and 10 ms apart, which
gives the round trips of each request alone (the goal: at most 2), and
again with several in flight and no pause. Then one round trip may carry
the commands of several requests.
Per request it reports the request-path round trips and commands, every
round trip, and the calls in the server's ``INFO commandstats``, which
include the commands that Lua scripts run. Each figure has the idle
window's rate subtracted, which removes what llmgw sends without requests
(drain reads, periodic polls).

By default the script starts its own ``redis-server`` on a free loopback
port, without persistence, so that commandstats count llmgw's commands only.
With ``--shared-redis`` it uses 127.0.0.1:6379 (database 13, a key prefix
unique to the run, deleted afterwards), whose commandstats also count every
other client of that server.

Usage: ``.venv/bin/python benchmarks/redis_trips.py [--requests N]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from common import HOST, new_event_loop
from processes import (
    REDIS_DB,
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

SHARED_REDIS_PORT = 6379
TARGET_ROUND_TRIPS = 2.0
# Seconds between isolated requests: far longer than a settlement takes.
ISOLATION_SECONDS = 0.01
REDIS_START_TIMEOUT_SECONDS = 10.0

DRAIN = "ledger drain"
SETUP = "connection setup"
PING = "ping"
REQUEST_PATH = "request path"
CATEGORIES = (REQUEST_PATH, DRAIN, PING, SETUP)

_DRAIN_COMMANDS = frozenset({"XREADGROUP", "XAUTOCLAIM", "XACK", "XDEL"})
_DRAIN_CONTAINERS = frozenset({"XGROUP", "XINFO"})
_SETUP_COMMANDS = frozenset(
    {"HELLO", "CLIENT", "SELECT", "AUTH", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"}
)
# Commands whose first argument names the operation, as in SCRIPT LOAD.
_CONTAINER_COMMANDS = frozenset({"CLIENT", "SCRIPT", "XGROUP", "XINFO", "CONFIG"})


class CommandParser:
    """Split a client's RESP byte stream into commands and return their names.

    Container commands get their subcommand too (``SCRIPT LOAD``). A command
    split over several reads is returned once it is complete.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        names: list[str] = []
        position = 0
        while (parsed := self._parse_command(position)) is not None:
            name, position = parsed
            names.append(name)
        del self._buffer[:position]
        return names

    def _parse_command(self, start: int) -> tuple[str, int] | None:
        """Parse the command at ``start`` and return its name and end offset.

        Returns None when the command is not complete yet.
        """
        buffer = self._buffer
        if start >= len(buffer):
            return None
        line_end = buffer.find(b"\r\n", start)
        if line_end < 0:
            return None
        if buffer[start] != ord("*"):
            # An inline command: one line of words separated by spaces.
            inline = bytes(buffer[start:line_end]).split()
            name = inline[0].decode("ascii", "replace").upper() if inline else ""
            return name, line_end + 2

        count = int(buffer[start + 1 : line_end])
        position = line_end + 2
        words: list[str] = []
        for _ in range(count):
            if position >= len(buffer):
                return None
            if buffer[position] != ord("$"):
                raise ValueError(
                    f"invalid RESP request: expected a bulk string at byte "
                    f"{position}, got {bytes(buffer[position : position + 1])!r}"
                )
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            length = int(buffer[position + 1 : line_end])
            value_start = line_end + 2
            if len(buffer) < value_start + length + 2:
                return None
            if len(words) < 2:
                value = bytes(buffer[value_start : value_start + length])
                words.append(value.decode("ascii", "replace").upper())
            position = value_start + length + 2
        name = words[0] if words else ""
        if name in _CONTAINER_COMMANDS and len(words) > 1:
            name = f"{name} {words[1]}"
        return name, position


def classify_turn(commands: list[str]) -> str:
    """Return the category of a round trip from the commands it sent."""
    names = {command.split(" ", 1)[0] for command in commands}
    if names & _DRAIN_COMMANDS or names & _DRAIN_CONTAINERS:
        return DRAIN
    if names and names <= _SETUP_COMMANDS:
        return SETUP
    if names == {"PING"}:
        return PING
    return REQUEST_PATH


@dataclass
class Tally:
    """Round trips per category and commands per category and name."""

    turns: Counter[str] = field(default_factory=Counter)
    commands: dict[str, Counter[str]] = field(default_factory=dict)
    connections: int = 0

    def add_turn(self, commands: list[str]) -> None:
        category = classify_turn(commands)
        self.turns[category] += 1
        self.commands.setdefault(category, Counter()).update(commands)

    def copy(self) -> Tally:
        return Tally(
            Counter(self.turns),
            {name: Counter(counts) for name, counts in self.commands.items()},
            self.connections,
        )

    def since(self, earlier: Tally) -> Tally:
        """Return the counts added since ``earlier``, an older copy of this tally."""
        commands = {
            name: counts - earlier.commands.get(name, Counter())
            for name, counts in self.commands.items()
        }
        return Tally(
            self.turns - earlier.turns,
            {name: counts for name, counts in commands.items() if counts},
            self.connections - earlier.connections,
        )


class _Connection:
    """The state of one proxied connection: which side wrote last, and the
    commands of the open turn."""

    def __init__(self, proxy: CountingProxy) -> None:
        self.proxy = proxy
        self.parser = CommandParser()
        self.client_wrote_last = False
        self.turn_commands: list[str] = []

    def client_sent(self, data: bytes) -> None:
        if not self.client_wrote_last:
            self.client_wrote_last = True
            self.turn_commands = []
        self.turn_commands += self.parser.feed(data)

    def server_sent(self, _data: bytes) -> None:
        if self.client_wrote_last:
            # The reply starts, so the client's turn is over.
            self.client_wrote_last = False
            self.proxy.add_turn(self.turn_commands)


class CountingProxy:
    """A TCP proxy from 127.0.0.1 to Redis that counts round trips.

    It runs its own event loop in a thread, so the benchmark may block (for
    example while it waits for llmgw to start) without stalling llmgw's
    Redis traffic. ``snapshot`` may be called from any thread.
    """

    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self._tally = Tally()
        self._lock = threading.Lock()
        self._loop = new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="redis-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def start(self) -> None:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        started.result(timeout=10)

    def stop(self) -> None:
        if self._thread.is_alive():
            closed = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            closed.result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def snapshot(self) -> Tally:
        with self._lock:
            return self._tally.copy()

    def add_turn(self, commands: list[str]) -> None:
        with self._lock:
            self._tally.add_turn(commands)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            redis_reader, redis_writer = await asyncio.open_connection(
                HOST, self._redis_port
            )
        except OSError:
            client_writer.close()
            return
        with self._lock:
            self._tally.connections += 1
        connection = _Connection(self)
        to_redis = asyncio.create_task(
            self._pump(client_reader, redis_writer, connection.client_sent)
        )
        to_client = asyncio.create_task(
            self._pump(redis_reader, client_writer, connection.server_sent)
        )
        pumps = {to_redis, to_client}
        self._tasks |= pumps
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks -= pumps
            for writer in (client_writer, redis_writer):
                writer.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        observe: Callable[[bytes], None],
    ) -> None:
        while data := await reader.read(65536):
            observe(data)
            writer.write(data)
            await writer.drain()


def command_calls(client: redis.Redis) -> Counter[str]:
    """Return the server's total calls per command from INFO commandstats."""
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    calls: Counter[str] = Counter()
    for key, values in stats.items():
        name = key.removeprefix("cmdstat_")
        if name != "info":  # the benchmark's own INFO calls
            calls[name] = int(values["calls"])
    return calls


@dataclass(frozen=True)
class Window:
    """The counts of the proxy and of the server over one stretch of time."""

    seconds: float
    tally: Tally
    server_calls: Counter[str]


class Recorder:
    """A source of before-and-after snapshots of the proxy's tally and the
    server's commandstats."""

    def __init__(self, proxy: CountingProxy, client: redis.Redis) -> None:
        self._proxy = proxy
        self._client = client

    @contextmanager
    def window(self) -> Iterator[list[Window]]:
        """Count what happens in the block.

        The yielded list receives the Window when the block ends.
        """
        result: list[Window] = []
        tally = self._proxy.snapshot()
        calls = command_calls(self._client)
        started = time.perf_counter()
        yield result
        seconds = time.perf_counter() - started
        delta_calls = command_calls(self._client)
        delta_calls.subtract(calls)
        result.append(
            Window(seconds, self._proxy.snapshot().since(tally), +delta_calls)
        )


async def send_requests(
    url: str, key: str, count: int, concurrency: int, stream: bool, pause: float = 0.0
) -> Counter[str]:
    """Send ``count`` chat requests, ``concurrency`` at a time, and return the
    outcomes. Each worker waits ``pause`` seconds after each response."""
    body = chat_body(stream)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    outcomes: Counter[str] = Counter()
    remaining = count
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcomes[type(exc).__name__] += 1
                continue
            if response.status != 200:
                outcomes[f"HTTP {response.status}"] += 1
            elif stream and not payload.endswith(b"data: [DONE]\n\n"):
                outcomes["stream without [DONE]"] += 1
            else:
                outcomes["ok"] += 1
            if pause:
                await asyncio.sleep(pause)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return outcomes


def per_request(load: Window, background: Window, requests: int) -> dict[str, Any]:
    """Return a load window's counts per request, less the idle window's rates.

    Subtracting the idle rate removes what llmgw sends without requests,
    such as the drainer's reads and periodic polls, over the same time.
    """
    scale = load.seconds / background.seconds

    def net(count: float, idle_count: float) -> float:
        # Rounded to two decimals, because subtracting the idle rate leaves
        # noise in the third.
        return round((count - scale * idle_count) / requests, 2)

    idle_request_commands = background.tally.commands.get(REQUEST_PATH, Counter())
    request_commands = load.tally.commands.get(REQUEST_PATH, Counter())
    return {
        "requests": requests,
        "seconds": round(load.seconds, 3),
        "round_trips_request_path": net(
            load.tally.turns[REQUEST_PATH], background.tally.turns[REQUEST_PATH]
        ),
        "round_trips_all": net(
            sum(load.tally.turns.values()), sum(background.tally.turns.values())
        ),
        "round_trips_by_category": {
            name: net(load.tally.turns[name], background.tally.turns[name])
            for name in CATEGORIES
        },
        "commands_request_path": net(
            sum(request_commands.values()), sum(idle_request_commands.values())
        ),
        "commands_request_path_by_name": {
            name: net(calls, idle_request_commands[name])
            for name, calls in request_commands.most_common()
        },
        "server_commands": net(
            sum(load.server_calls.values()), sum(background.server_calls.values())
        ),
        "server_commands_by_name": {
            name: net(calls, background.server_calls[name])
            for name, calls in load.server_calls.most_common()
        },
        "new_connections": load.tally.connections,
    }


def background_rates(window: Window) -> dict[str, Any]:
    seconds = window.seconds
    return {
        "seconds": round(seconds, 3),
        "round_trips_per_second": {
            name: round(window.tally.turns[name] / seconds, 3) for name in CATEGORIES
        },
        "commands_per_second": {
            name: round(calls / seconds, 3)
            for counts in window.tally.commands.values()
            for name, calls in counts.most_common()
        },
        "server_commands_per_second": round(
            sum(window.server_calls.values()) / seconds, 3
        ),
    }


@contextmanager
def redis_server(workdir: Path, private: bool) -> Iterator[int]:
    """Yield the port of the Redis server to count against.

    With ``private``, run a ``redis-server`` of this benchmark's own on a
    free loopback port, without persistence, for the duration of the block.
    """
    if not private:
        yield SHARED_REDIS_PORT
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found on PATH: install Redis, or pass --shared-redis "
            "to count against the server on 127.0.0.1:6379"
        )
    port = free_port()
    command = [binary, "--port", str(port), "--bind", HOST, "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    with (workdir / "redis-server.log").open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_for_redis(process, port)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_redis(process: subprocess.Popen[bytes], port: int) -> None:
    client = redis.Redis(host=HOST, port=port, socket_timeout=1)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_SECONDS
    try:
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with code {process.returncode} "
                        f"while starting on port {port}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server not ready on port {port} after "
                        f"{REDIS_START_TIMEOUT_SECONDS:g} s"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


@dataclass(frozen=True)
class Options:
    requests: int
    concurrency: int
    idle_seconds: float
    warmup_requests: int


def _count_phases(
    url: str, key: str, recorder: Recorder, options: Options
) -> dict[str, Any]:
    """Warm up, count the idle window, then count each kind of request."""
    loop = new_event_loop()
    results: dict[str, Any] = {}
    try:
        # Open the connection pool and load both scripts before counting.
        for stream in (False, True):
            loop.run_until_complete(
                send_requests(
                    url, key, options.warmup_requests, options.concurrency, stream
                )
            )
        time.sleep(1.0)

        with recorder.window() as idle:
            time.sleep(options.idle_seconds)
        results["background"] = background_rates(idle[0])

        # Requests one at a time, ISOLATION_SECONDS apart, give the round
        # trips of each request alone: otherwise llmgw may send one request's
        # settlement and the next one's admission in the same round trip.
        results.update(
            _count_load(
                loop, url, key, recorder, idle[0], options, 1, ISOLATION_SECONDS
            )
        )
        concurrent = {"concurrency": options.concurrency}
        concurrent.update(
            _count_load(
                loop, url, key, recorder, idle[0], options, options.concurrency, 0.0
            )
        )
        results["concurrent"] = concurrent
    finally:
        loop.close()
    return results


def _count_load(
    loop: asyncio.AbstractEventLoop,
    url: str,
    key: str,
    recorder: Recorder,
    idle: Window,
    options: Options,
    concurrency: int,
    pause: float,
) -> dict[str, Any]:
    """Count non-streaming, then streaming requests with ``concurrency`` in
    flight and ``pause`` seconds between them; return the figures by mode."""
    results: dict[str, Any] = {}
    for mode, stream in (("non_stream", False), ("stream", True)):
        print(
            f"  {options.requests} {mode} requests, {concurrency} in flight ...",
            flush=True,
        )
        with recorder.window() as load:
            outcomes = loop.run_until_complete(
                send_requests(url, key, options.requests, concurrency, stream, pause)
            )
            # Settlement runs just after each response is sent.
            time.sleep(0.5)
        figures = per_request(load[0], idle, options.requests)
        figures["outcomes"] = dict(outcomes)
        results[mode] = figures
    return results


def _measure_through_proxy(
    workdir: Path, redis_port: int, proxy: CountingProxy, options: Options
) -> dict[str, Any]:
    upstream_port = free_port()
    upstream = f"http://{HOST}:{upstream_port}"
    prefix = new_redis_prefix("trips")
    setup = GatewaySetup(
        port=free_port(),
        upstream=upstream,
        ledger=workdir / "ledger.db",
        key=new_gateway_key(),
        redis_url=f"redis://{HOST}:{proxy.port}/{REDIS_DB}",
        redis_prefix=prefix,
        # Count every prompt, as run.py's configs do.
        max_input_tokens=4000,
    )
    direct_url = f"redis://{HOST}:{redis_port}/{REDIS_DB}"
    client = redis.Redis.from_url(direct_url, socket_timeout=5)
    try:
        with (
            running(
                "mock",
                mock_upstream_command(upstream_port),
                workdir,
                f"{upstream}/healthz",
            ),
            running(
                "llmgw",
                llmgw_serve_command(setup, workdir),
                workdir,
                f"{setup.base_url}/readyz",
            ),
        ):
            url = f"{setup.base_url}/v1/chat/completions"
            return _count_phases(url, setup.key, Recorder(proxy, client), options)
    finally:
        client.close()
        try:
            cleanup_redis(direct_url, prefix)
        except redis.exceptions.RedisError as exc:
            print(f"WARNING: could not delete Redis keys under {prefix!r}: {exc}")


def measure(
    *,
    requests: int = 1000,
    concurrency: int = 8,
    idle_seconds: float = 10.0,
    warmup_requests: int = 50,
    private_redis: bool = True,
) -> dict[str, Any]:
    """Count Redis round trips and commands per request and return the figures.

    ``requests`` of each kind (non-streaming, streaming) go through llmgw
    one at a time and 10 ms apart, then ``concurrency`` at a time, after
    ``warmup_requests`` of each that are not counted. The idle window lasts
    ``idle_seconds``. With ``private_redis`` the script runs its own
    redis-server (see the module documentation).
    """
    options = Options(requests, concurrency, idle_seconds, warmup_requests)
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-bench-trips-"))
    try:
        with redis_server(workdir, private_redis) as redis_port:
            proxy = CountingProxy(redis_port)
            proxy.start()
            try:
                results = _measure_through_proxy(workdir, redis_port, proxy, options)
            finally:
                proxy.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["redis_server"] = "private" if private_redis else "shared"
    results["target_round_trips_per_request"] = TARGET_ROUND_TRIPS
    return results


def _report_rows(
    figures_by_mode: dict[str, Any], concurrency: int, target: float
) -> list[str]:
    lines = []
    for mode in ("non_stream", "stream"):
        figures = figures_by_mode[mode]
        trips = figures["round_trips_request_path"]
        row = (
            f"{mode:<11} {concurrency:>9} {trips:>6.2f} "
            f"{figures['round_trips_all']:>6.2f} "
            f"{figures['commands_request_path']:>6.2f} "
            f"{figures['server_commands']:>7.2f}"
        )
        if concurrency == 1:
            # The goal applies to requests alone, one at a time.
            verdict = "met" if trips <= target else "NOT MET"
            row += f"  trips <= {target:g}: {verdict}"
        lines.append(row)
    return lines


def format_report(results: dict[str, Any]) -> str:
    background = results["background"]
    rates = background["round_trips_per_second"]
    target = results["target_round_trips_per_request"]
    concurrent = results["concurrent"]
    lines = [
        f"Redis server: {results['redis_server']}. Idle window of "
        f"{background['seconds']:.1f} s, round trips per second: "
        + ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items()),
        "",
        "Per request, less the idle rate:",
        f"{'mode':<11} {'in flight':>9} {'trips':>6} {'all':>6} {'cmds':>6} "
        f"{'server':>7}",
        *_report_rows(results, 1, target),
        *_report_rows(concurrent, concurrent["concurrency"], target),
        "",
        "trips: request-path round trips; all: every round trip, the drainer's "
        "included;",
        "cmds: request-path commands llmgw sent; server: INFO commandstats calls, "
        "Lua-internal calls included.",
        "1 in flight: requests 10 ms apart, each alone; with several in flight, one "
        "round trip may carry the commands of several requests.",
    ]
    for mode in ("non_stream", "stream"):
        figures = results[mode]
        lines.append(
            f"{mode}: commands {figures['commands_request_path_by_name']}; server "
            f"{figures['server_commands_by_name']}"
        )
    return "\n".join(lines)


def _outcomes_failed(results: dict[str, Any]) -> list[str]:
    failed = []
    for label, figures_by_mode in (
        ("1 in flight", results),
        ("concurrent", results["concurrent"]),
    ):
        for mode in ("non_stream", "stream"):
            outcomes = figures_by_mode[mode]["outcomes"]
            if set(outcomes) != {"ok"}:
                failed.append(f"{mode} ({label}): {outcomes}")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="counted requests of each kind and concurrency (1-100000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight in the second count (1-256)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="seconds of the idle window, with no requests (1-300)",
    )
    parser.add_argument(
        "--shared-redis",
        action="store_true",
        help="count against the Redis on 127.0.0.1:6379 instead of starting one",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if not 1 <= args.requests <= 100_000:
        parser.error(f"invalid --requests {args.requests}: expected 1 to 100000")
    if not 1 <= args.concurrency <= 256:
        parser.error(f"invalid --concurrency {args.concurrency}: expected 1 to 256")
    if not 1 <= args.idle_seconds <= 300:
        parser.error(f"invalid --idle-seconds {args.idle_seconds}: expected 1 to 300")

    results = measure(
        requests=args.requests,
        concurrency=args.concurrency,
        idle_seconds=args.idle_seconds,
        private_redis=not args.shared_redis,
    )
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print()
    else:
        print(format_report(results))
    failed = _outcomes_failed(results)
    for failure in failed:
        print(f"ERRORS in {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
