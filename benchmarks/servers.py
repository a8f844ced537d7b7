"""Start, probe and stop the server processes of the side-by-side harness.

Each server runs in its own session (process group) with its stdout and
stderr in a log file, so that the harness can stop it and anything it
spawned by that group's id when a run ends or fails.

NOTE: a harness killed with SIGKILL stops nothing. ``mock_upstream.py`` and
``passthrough.py`` then exit by themselves, but nginx, llmgw and the peers
keep running until killed by hand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common import HOST

STARTUP_TIMEOUT_SECONDS = 60.0
# llmgw waits up to server.shutdown_timeout (30 s by default) for in-flight
# requests, then drains the ledger, so allow more than that.
STOP_TIMEOUT_SECONDS = 60.0
# Seconds the group's other processes get to exit after the main one did.
STRAGGLER_TIMEOUT_SECONDS = 5.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(
    name: str,
    command: list[str],
    workdir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Server:
    """Start ``command`` in a new session, logging to a file in ``workdir``."""
    log_path = workdir / f"{name.replace(' ', '-')}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=cwd or workdir,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    return Server(name, process, log_path, log_file)


def log_tail(server: Server, lines: int = 15) -> str:
    text = server.log_path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_ready(
    server: Server, url: str, timeout: float = STARTUP_TIMEOUT_SECONDS
) -> float:
    """Poll ``url`` until it returns 200; return the seconds that took.

    Raise RuntimeError if the server exits first or ``timeout`` passes.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.process.returncode} "
                f"during startup. Last log lines:\n{log_tail(server)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} not ready at {url} after {timeout:g} s. "
        f"Last log lines:\n{log_tail(server)}"
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _end_stragglers(server: Server) -> None:
    """SIGTERM, then SIGKILL, what is left in the server's process group."""
    pgid = server.process.pid  # start_new_session made it the group leader
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STRAGGLER_TIMEOUT_SECONDS
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        print(f"WARNING: killing what is left of {server.name}'s group", flush=True)
        _signal_group(pgid, signal.SIGKILL)


def stop_server(
    server: Server,
    signum: int = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT_SECONDS,
) -> int | None:
    """Stop the server with ``signum``, SIGKILL after ``timeout``; return its code."""
    if server.process.poll() is None:
        server.process.send_signal(signum)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"WARNING: {server.name} ignored signal {signum}; killing it")
            server.process.kill()
            server.process.wait()
    _end_stragglers(server)
    server.log_file.close()
    return server.process.returncode


@contextmanager
def running(
    name: str,
    command: list[str],
    workdir: Path,
    ready_url: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """Run a server for the duration of the block; stop it on any exit."""
    server = start_server(name, command, workdir, env=env, cwd=cwd)
    try:
        wait_ready(server, ready_url)
        yield server
    finally:
        stop_server(server)
