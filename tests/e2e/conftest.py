"""Fixtures for end-to-end tests: a real model behind a real gateway process.

The session starts one llama-cpp-python server with SmolLM2-135M-Instruct.
Each test starts its own `llmgw serve` subprocess (with its own config, SQLite
ledger and Redis key prefix) through the ``start_gateway`` factory.

The model comes from ``$LLMGW_E2E_MODEL`` or
``.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf``, which ``scripts/test``
downloads. Without the model, llama-cpp-python or Redis the tests are skipped,
except when ``$CI`` is set: then they fail, so that CI cannot pass by running
nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import openai
import pytest
import redis
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_PATH = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ENV = "LLMGW_E2E_MODEL"
REDIS_URL = "redis://127.0.0.1:6379/0"

# The name the llama server and the gateway give the model.
MODEL_NAME = "smollm2"
# A second public name on the same upstream model, so that allow-lists and
# /v1/models have two models to choose from.
OTHER_MODEL_NAME = "gpt-smol"
MAX_INPUT_TOKENS = 300
MAX_OUTPUT_TOKENS = 32

# Seconds to wait for a server to become ready after it starts, and for a
# gateway to exit after SIGTERM.
LLAMA_STARTUP_TIMEOUT = 120.0
GATEWAY_STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 60.0
# Lines of a log file shown in the report of a failed test.
LOG_TAIL_LINES = 60

# Proxy settings from the environment must not apply to loopback requests.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

LLAMA_LOG_KEY = pytest.StashKey[Path]()
GATEWAYS_KEY = pytest.StashKey[list["Gateway"]]()


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it when running under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (tests are not skipped when CI is set)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str) -> int | None:
    """Return the status of a GET to ``url``, or None if the connection fails."""
    try:
        with _DIRECT_OPENER.open(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_for_ok(
    url: str,
    process: subprocess.Popen[Any],
    log_paths: list[Path],
    timeout: float,
) -> None:
    """Poll ``url`` until it returns 200, and fail if the process exits first."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = "\n\n".join(f"--- {path}\n{tail(path)}" for path in log_paths)
            pytest.fail(
                f"{process.args!r} exited with code {process.returncode} before"
                f" {url} returned 200\n{logs}",
                pytrace=False,
            )
        status = http_status(url)
        if status == 200:
            return
        time.sleep(0.1)
    logs = "\n\n".join(f"--- {path}\n{tail(path)}" for path in log_paths)
    pytest.fail(
        f"{url} did not return 200 within {timeout:.0f} s (last status: {status})"
        f"\n{logs}",
        pytrace=False,
    )


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """Send ``sig``, wait for the exit, and kill the process if it hangs."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(
                f"{process.args!r} did not exit within {SHUTDOWN_TIMEOUT:.0f} s"
                f" of signal {sig}, so it was killed",
                pytrace=False,
            )
    return process.returncode


# --- the model and the llama-cpp-python server ---------------------------


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # ends in /v1, as OpenAI clients expect
    log_path: Path


@pytest.fixture(scope="session")
def model_path() -> Path:
    configured = os.environ.get(MODEL_ENV)
    path = Path(configured) if configured else DEFAULT_MODEL_PATH
    if not path.is_file():
        skip_or_fail(
            f"model file {path} not found: run scripts/test, which downloads it,"
            f" or set {MODEL_ENV} to a GGUF file"
        )
    return path


@pytest.fixture(scope="session")
def llama_server(
    model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[LlamaServer]:
    """Run llama-cpp-python's OpenAI-compatible server for the whole session."""
    if importlib.util.find_spec("llama_cpp") is None:
        skip_or_fail(
            "llama-cpp-python is not installed: run pip install -e '.[e2e]'"
            " (or scripts/test)"
        )

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    pytestconfig.stash[LLAMA_LOG_KEY] = log_path
    threads = str(min(2, os.cpu_count() or 1))
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
        # A fixed seed. The tests also send temperature 0.
        "--seed",
        "0",
        # Logits for the last token only: the server's default computes them
        # for every prompt token, which slows prompt processing.
        "--logits_all",
        "False",
        # mlock fails when RLIMIT_MEMLOCK is below the model's size (98 MB).
        "--use_mlock",
        "False",
        # Without llama.cpp's model-loading and timing output, the log tail in
        # failure reports shows the requests and errors.
        "--verbose",
        "False",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_ok(f"{base_url}/models", process, [log_path], LLAMA_STARTUP_TIMEOUT)
        yield LlamaServer(base_url=base_url, log_path=log_path)
    finally:
        stop_process(process)


# --- Redis ---------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_available() -> bool:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis at {REDIS_URL} does not answer: {exc}")
    finally:
        client.close()
    return True


def delete_redis_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param("embedded"),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The gateway's shared-state back end: in-process, or Redis."""
    name: str = request.param
    if name == "redis":
        request.getfixturevalue("redis_available")
    return name


# --- the gateway ---------------------------------------------------------


def llmgw_executable() -> str:
    beside_python = Path(sys.executable).parent / "llmgw"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("llmgw")
    if on_path is None:
        pytest.fail("the llmgw command is not installed: run pip install -e .")
    return on_path


@dataclass
class Gateway:
    """A running `llmgw serve` subprocess and what a test needs to check it."""

    base_url: str  # http://127.0.0.1:PORT, without /v1
    keys: dict[str, str]  # key name to the secret clients send
    config_path: Path
    sink_path: Path
    stdout_path: Path
    stderr_path: Path
    process: subprocess.Popen[str]
    redis_prefix: str | None
    stdout_lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    def client(self, key_name: str) -> openai.OpenAI:
        """Return an OpenAI client that sends the secret of key ``key_name``."""
        return self.client_with_secret(self.keys[key_name])

    def client_with_secret(self, secret: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.api_base,
            api_key=secret,
            max_retries=0,
            timeout=60.0,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )

    def start_reading_stdout(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            with self.stdout_path.open("w") as copy:
                for line in self.process.stdout:
                    self.stdout_lines.append(line)
                    copy.write(line)
                    copy.flush()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def log_events(self, event: str = "request") -> list[dict[str, Any]]:
        """Return the JSON log lines whose ``event`` field equals ``event``."""
        events = []
        for line in list(self.stdout_lines):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and parsed.get("event") == event:
                events.append(parsed)
        return events

    def malformed_stdout_lines(self) -> list[str]:
        """Return the stdout lines that are not one JSON object each."""
        malformed = []
        for line in list(self.stdout_lines):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                malformed.append(line)
                continue
            if not isinstance(parsed, dict):
                malformed.append(line)
        return malformed

    def wait_for_listening_workers(self, workers: int) -> None:
        """Wait until ``workers`` distinct pids have logged event="listening"."""
        deadline = time.monotonic() + GATEWAY_STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            pids = {event["pid"] for event in self.log_events("listening")}
            if len(pids) >= workers:
                return
            time.sleep(0.1)
        pytest.fail(
            f"{len(pids)} of {workers} workers logged event=listening within"
            f" {GATEWAY_STARTUP_TIMEOUT:.0f} s\n{tail(self.stdout_path)}",
            pytrace=False,
        )

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit, and return the exit code."""
        returncode = stop_process(self.process)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return returncode

    def ledger_rows(self) -> list[dict[str, Any]]:
        """Return every row of the SQLite ledger, oldest first."""
        if not self.sink_path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.sink_path}?mode=ro", uri=True)
        try:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(
                "SELECT * FROM llmgw_usage ORDER BY ts, request_id"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            # The drainer creates the table with its first batch.
            if "no such table" in str(exc):
                return []
            raise
        finally:
            connection.close()
        return [dict(row) for row in rows]

    def wait_for_ledger_rows(
        self, count: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Poll the ledger while the gateway runs until it has ``count`` rows."""
        deadline = time.monotonic() + timeout
        rows = self.ledger_rows()
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            rows = self.ledger_rows()
        return rows

    def usage(self, by: str) -> list[dict[str, Any]]:
        """Run `llmgw usage --format json` on this gateway's config."""
        result = subprocess.run(
            [
                llmgw_executable(),
                "usage",
                "--config",
                str(self.config_path),
                "--by",
                by,
                "--format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (
            f"llmgw usage exited with {result.returncode}: {result.stderr}"
        )
        parsed: list[dict[str, Any]] = json.loads(result.stdout)
        return parsed


class StartGateway(Protocol):
    def __call__(
        self,
        *,
        backend: str = "embedded",
        workers: int = 1,
        limited_requests_per_minute: int = 2,
    ) -> Gateway: ...


def gateway_config(
    *,
    port: int,
    sink_path: Path,
    llama_base_url: str,
    keys: dict[str, str],
    limited_requests_per_minute: int,
    workers: int,
    redis_prefix: str | None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": workers},
        "ledger": {"sink": f"sqlite:///{sink_path}"},
        "providers": [
            {"name": "local", "kind": "openai-compatible", "base_url": llama_base_url}
        ],
        "models": [
            {
                "name": MODEL_NAME,
                "provider": "local",
                "upstream_model": MODEL_NAME,
                "max_output_tokens": MAX_OUTPUT_TOKENS,
                "max_input_tokens": MAX_INPUT_TOKENS,
            },
            {
                "name": OTHER_MODEL_NAME,
                "provider": "local",
                "upstream_model": MODEL_NAME,
                "max_output_tokens": MAX_OUTPUT_TOKENS,
                "max_input_tokens": MAX_INPUT_TOKENS,
            },
        ],
        "keys": [
            {"name": "dev", "key": keys["dev"], "models": [MODEL_NAME]},
            {"name": "other-models", "key": keys["other-models"], "models": ["gpt-*"]},
            {
                "name": "limited",
                "key": keys["limited"],
                "models": [MODEL_NAME],
                "limits": {"requests_per_minute": limited_requests_per_minute},
            },
        ],
        "policies": {"max_output_tokens": 64},
    }
    if redis_prefix is not None:
        config["redis"] = {"url": REDIS_URL, "key_prefix": redis_prefix}
    return config


@pytest.fixture
def start_gateway(
    request: pytest.FixtureRequest,
    llama_server: LlamaServer,
    tmp_path: Path,
) -> Iterator[StartGateway]:
    """Return a function that starts `llmgw serve` and waits for /readyz.

    At teardown every gateway still running gets SIGTERM, must exit with code
    0, and its Redis keys are deleted.
    """
    gateways: list[Gateway] = []
    request.node.stash[GATEWAYS_KEY] = gateways

    def start(
        *,
        backend: str = "embedded",
        workers: int = 1,
        limited_requests_per_minute: int = 2,
    ) -> Gateway:
        if backend == "redis" or workers > 1:
            request.getfixturevalue("redis_available")
            redis_prefix: str | None = f"llmgw-e2e-{secrets.token_hex(6)}:"
        else:
            redis_prefix = None

        index = len(gateways)
        folder = tmp_path / f"gateway{index}"
        folder.mkdir()
        port = free_port()
        keys = {
            name: f"sk-{name}-{secrets.token_urlsafe(16)}"
            for name in ("dev", "other-models", "limited")
        }
        sink_path = folder / "ledger.db"
        config_path = folder / "llmgw.yaml"
        config = gateway_config(
            port=port,
            sink_path=sink_path,
            llama_base_url=llama_server.base_url,
            keys=keys,
            limited_requests_per_minute=limited_requests_per_minute,
            workers=workers,
            redis_prefix=redis_prefix,
        )
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        stdout_path = folder / "stdout.log"
        stderr_path = folder / "stderr.log"
        # Container images often set PYTHONUNBUFFERED=1, and with it Python
        # writes a print()ed line and its newline separately. Log lines from
        # several workers sharing stdout must stay whole under it too.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [
            llmgw_executable(),
            "serve",
            "--config",
            str(config_path),
            "--workers",
            str(workers),
        ]
        with stderr_path.open("w") as stderr_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
                env=env,
                cwd=folder,
            )
        gateway = Gateway(
            base_url=f"http://127.0.0.1:{port}",
            keys=keys,
            config_path=config_path,
            sink_path=sink_path,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            process=process,
            redis_prefix=redis_prefix,
        )
        gateways.append(gateway)
        gateway.start_reading_stdout()
        wait_for_ok(
            f"{gateway.base_url}/readyz",
            process,
            [stdout_path, stderr_path],
            GATEWAY_STARTUP_TIMEOUT,
        )
        # /readyz returns 200 as soon as one worker listens, and the kernel
        # sends connections only to workers that already listen.
        gateway.wait_for_listening_workers(workers)
        return gateway

    yield start

    exit_codes = []
    for gateway in gateways:
        try:
            exit_codes.append(gateway.stop())
        finally:
            if gateway.redis_prefix is not None:
                delete_redis_keys(gateway.redis_prefix)
    for gateway, code in zip(gateways, exit_codes, strict=True):
        assert code == 0, f"{gateway.process.args!r} exited with code {code}"


# --- logs in the reports of failed tests ---------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tails of the gateway and llama server logs to failures."""
    report = yield
    if not report.failed:
        return report

    gateways = item.stash.get(GATEWAYS_KEY, None) or []
    for index, gateway in enumerate(gateways):
        report.sections.append(
            (f"gateway {index} stdout (tail)", tail(gateway.stdout_path))
        )
        report.sections.append(
            (f"gateway {index} stderr (tail)", tail(gateway.stderr_path))
        )
    llama_log = item.config.stash.get(LLAMA_LOG_KEY, None)
    if llama_log is not None:
        report.sections.append(("llama server log (tail)", tail(llama_log)))
    return report
