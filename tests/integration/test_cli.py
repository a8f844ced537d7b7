"""The `llmgw` command as an operator runs it: start-up failures, the worker
supervisor, the usage report and the admin commands against a running
gateway, each in a subprocess on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from llmgw.config import load_config
from llmgw.ledger.record import UsageRecord
from llmgw.ledger.sink import Sink
from llmgw.pipeline.authenticate import KeyStore

LLMGW = [sys.executable, "-m", "llmgw.cli"]
REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, port: int, redis_prefix: str | None) -> Path:
    redis_line = (
        f"redis: {{url: '{REDIS_URL}', key_prefix: '{redis_prefix}'}}"
        if redis_prefix
        else ""
    )
    config = tmp_path / "llmgw.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server: {{listen: '127.0.0.1:{port}', shutdown_timeout: 5}}
            {redis_line}
            ledger: {{sink: 'sqlite:///{tmp_path / "ledger.db"}'}}
            providers:
              - {{name: p, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}}
            models:
              - {{name: m, provider: p}}
            keys:
              - {{name: dev, key: sk-cli-test}}
            """
        )
    )
    return config


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"llmgw-cli-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_for(predicate: object, seconds: float = 20, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
    raise AssertionError(f"condition not met within {seconds} s\n{tail}")


def log_events(path: Path, event: str) -> list[dict[str, object]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("event") == event:
                events.append(entry)
    return events


@pytest.mark.parametrize(
    "use_redis",
    [False, pytest.param(True, marks=pytest.mark.redis)],
    ids=["memory", "redis"],
)
def test_port_in_use_fails_fast(
    tmp_path: Path, redis_prefix: str, use_redis: bool
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port, redis_prefix if use_redis else None)
        result = subprocess.run(
            [*LLMGW, "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_sink_fails_fast(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    text = config.read_text().replace(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        "postgresql://nobody@127.0.0.1:9/none",
    )
    config.write_text(text)
    result = subprocess.run(
        [*LLMGW, "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error: failed to start" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_without_ledger_is_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    result = subprocess.run(
        [*LLMGW, "usage", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "no ledger at" in result.stderr
    assert not (tmp_path / "ledger.db").exists()


USAGE_TS = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def usage_record(request_id: str, ts: float, **changes: object) -> UsageRecord:
    values: dict[str, object] = {
        "request_id": request_id,
        "ts": ts,
        "route": "/v1/chat/completions",
        "key_name": "ci",
        "tenant": "acme",
        "model": "smollm2",
        "provider": "local",
        "upstream_model": "smollm2",
        "input_tokens": 100,
        "output_tokens": 20,
    }
    values.update(changes)
    return UsageRecord(**values)  # type: ignore[arg-type]


def run_usage(
    tmp_path: Path, sink_url: str, table: str, *args: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "usage.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            ledger: {{sink: '{sink_url}', table: {table}}}
            providers:
              - {{name: p, kind: openai-compatible, base_url: 'http://127.0.0.1:9/v1'}}
            models:
              - {{name: m, provider: p}}
            """
        )
    )
    return subprocess.run(
        [*LLMGW, "usage", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_usage_reports_cost_in_every_format(
    tmp_path: Path, sink: Sink, sink_url: str, ledger_table: str
) -> None:
    await sink.write(
        [
            usage_record("r1", USAGE_TS, cost_usd=0.0125, cache_write_tokens=60),
            usage_record("r2", USAGE_TS + 3600, cost_usd=0.000375),
            usage_record("r3", USAGE_TS + 86_400, key_name="dev", cost_usd=1.25),
        ]
    )

    as_json = run_usage(tmp_path, sink_url, ledger_table, "--format", "json")
    as_csv = run_usage(tmp_path, sink_url, ledger_table, "--format", "csv")
    as_table = run_usage(tmp_path, sink_url, ledger_table)

    assert as_json.returncode == 0, as_json.stderr
    rows = orjson.loads(as_json.stdout)
    assert [row["group"] for row in rows] == ["ci", "dev"]
    assert rows[0] == {
        "group": "ci",
        "requests": 2,
        "input_tokens": 200,
        "output_tokens": 40,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "estimated_requests": 0,
        "errors": 0,
        "cache_write_tokens": 60,
        "cost_usd": 0.012875,
    }
    assert rows[1]["cost_usd"] == 1.25
    assert as_csv.returncode == 0, as_csv.stderr
    lines = as_csv.stdout.splitlines()
    assert lines[0].endswith(",errors,cache_write_tokens,cost_usd")
    assert lines[1] == "ci,2,200,40,0,0,0,0,60,0.012875"
    assert lines[2].endswith(",0,1.250000")
    assert as_table.returncode == 0, as_table.stderr
    header, first, second = as_table.stdout.splitlines()
    assert header.split()[0] == "key"
    assert header.split()[-2:] == ["cache_write_tokens", "cost_usd"]
    assert first.split()[-2:] == ["60", "0.012875"]
    assert second.split()[-1] == "1.250000"


async def test_usage_since_until_window(
    tmp_path: Path, sink: Sink, sink_url: str, ledger_table: str
) -> None:
    await sink.write(
        [
            usage_record("r1", USAGE_TS, cost_usd=0.0125),
            usage_record("r2", USAGE_TS + 3600, cost_usd=0.000375),
            usage_record("r3", USAGE_TS + 86_400, cost_usd=1.25),
        ]
    )

    def report(*window: str) -> list[dict[str, Any]]:
        result = run_usage(
            tmp_path, sink_url, ledger_table, "--format", "json", *window
        )
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = orjson.loads(result.stdout)
        return rows

    # 23:00+01:00 is 22:00 UTC, and a time without an offset is UTC.
    first_hour = report(
        "--since", "2023-11-14T23:00:00+01:00", "--until", "2023-11-14T23:00:00"
    )
    # A date is midnight UTC at its start, and --until is exclusive.
    first_day = report("--since", "2023-11-14", "--until", "2023-11-15")
    from_second_day = report("--since", "2023-11-15")
    until_r2 = report("--until", "2023-11-14T23:13:20Z")
    before_any = report("--until", "2023-11-14")

    assert first_hour[0]["requests"] == 1
    assert first_hour[0]["cost_usd"] == 0.0125
    assert first_day[0]["requests"] == 2
    assert first_day[0]["cost_usd"] == 0.012875
    assert from_second_day[0]["requests"] == 1
    assert from_second_day[0]["cost_usd"] == 1.25
    assert until_r2[0]["requests"] == 1
    assert before_any == []


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (["--since", "yesterday"], "argument --since: invalid time 'yesterday'"),
        (["--until", "2023-02-30"], "argument --until: invalid time '2023-02-30'"),
        (
            ["--since", "2023-11-15", "--until", "2023-11-15T00:00:00Z"],
            "--since must be earlier than --until",
        ),
    ],
)
def test_usage_rejects_bad_window(
    tmp_path: Path, window: list[str], message: str
) -> None:
    config = write_config(tmp_path, free_port(), None)
    result = subprocess.run(
        [*LLMGW, "usage", "--config", str(config), *window],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_names_line_and_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    line = len(config.read_text().splitlines()) + 1
    config.write_text(config.read_text() + "policies: {max_output_tokens: -1}\n")
    result = subprocess.run(
        [*LLMGW, "check-config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{config}:{line}: policies.max_output_tokens" in result.stderr


def test_check_config_counts_singular(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), None)
    result = subprocess.run(
        [*LLMGW, "check-config", str(config)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: OK (1 provider, 1 model, 1 key, 0 tenants)\n"


@pytest.mark.redis
def test_supervisor_replaces_killed_worker(tmp_path: Path, redis_prefix: str) -> None:
    port = free_port()
    config = write_config(tmp_path, port, redis_prefix)
    stdout = tmp_path / "stdout.log"
    with stdout.open("wb") as out:
        parent = subprocess.Popen(
            [*LLMGW, "serve", "--config", str(config), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            # Two CI runs failed here because the second worker could not
            # open the new SQLite ledger ("database is locked"). The log
            # stays in the failure message.
            wait_for(lambda: len(log_events(stdout, "listening")) == 2, 60, stdout)
            # Past the supervisor's start-up window, so a death is a crash to
            # recover from, not a failed start.
            time.sleep(5.5)
            first = log_events(stdout, "worker_started")[0]
            os.kill(int(str(first["worker_pid"])), signal.SIGKILL)

            wait_for(lambda: len(log_events(stdout, "worker_started")) == 3, 60, stdout)
            wait_for(lambda: len(log_events(stdout, "listening")) == 3, 60, stdout)
            assert ready(port)
            [exited] = log_events(stdout, "worker_exited")
            assert exited["worker_pid"] == first["worker_pid"]
            assert exited["exit_code"] == -signal.SIGKILL
        finally:
            parent.send_signal(signal.SIGTERM)
            code = parent.wait(timeout=30)
    assert code == 0
    assert len(log_events(stdout, "stopped")) == 2


# The delays fall after the imports (about 0.2 s here) and inside the
# start-up (about 1 s here), where a SIGINT used to leave the process hung.
@pytest.mark.parametrize("delay", [0.6, 0.8, 1.0, 1.5])
def test_sigint_during_startup_stops(tmp_path: Path, delay: float) -> None:
    config = write_config(tmp_path, free_port(), None)
    process = subprocess.Popen(
        [*LLMGW, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        _stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"llmgw serve hung after SIGINT at {delay} s") from None
    assert process.returncode == 0
    assert "Traceback" not in stderr


def test_keys_new_entry_authenticates_its_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [*LLMGW, "keys", "new", "--name", "ci"], capture_output=True, text=True
    )
    assert result.returncode == 0
    key = result.stdout.split("shown once, give it to the caller): ")[1].split()[0]
    entry = result.stdout.split("config entry:\n")[1]

    config = write_config(tmp_path, free_port(), None)
    text = config.read_text().replace("  - {name: dev, key: sk-cli-test}\n", entry)
    config.write_text(text)
    loaded = load_config(config)
    assert [k.name for k in loaded.keys] == ["ci"]
    assert KeyStore(loaded.keys).lookup(key) is not None
    assert key not in config.read_text()

    hashed = subprocess.run(
        [*LLMGW, "keys", "hash"], input=f"{key}\n", capture_output=True, text=True
    )
    assert hashed.stdout.strip() == loaded.keys[0].key_sha256


# The admin commands against a running gateway

ADMIN_KEY = "cli-admin-key-0123456789abcdef"
ADMIN_SECTIONS = f"""\
admin: {{keys: ['{ADMIN_KEY}']}}
tenants:
  - name: acme
    teams: [{{name: platform}}]
"""


@contextmanager
def serving(tmp_path: Path, redis_prefix: str | None) -> Iterator[int]:
    """Run `llmgw serve` with an admin key and yield its port."""
    port = free_port()
    config = write_config(tmp_path, port, redis_prefix)
    config.write_text(config.read_text() + ADMIN_SECTIONS)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*LLMGW, "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: ready(port))
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def admin_cli(
    port: int, *args: str, admin_key: str | None = ADMIN_KEY
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMGW_ADMIN_KEY"}
    if admin_key is not None:
        env["LLMGW_ADMIN_KEY"] = admin_key
    return subprocess.run(
        [*LLMGW, *args, "--url", f"http://127.0.0.1:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def admin_json(port: int, *args: str) -> Any:
    result = admin_cli(port, *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def model_status(port: int, secret: str) -> tuple[int, str]:
    """Return the status and body of GET /v1/models/m with a gateway key."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/m",
        headers={"Authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


backends = pytest.mark.parametrize(
    "use_redis",
    [False, pytest.param(True, marks=pytest.mark.redis)],
    ids=["memory", "redis"],
)


@backends
def test_keys_commands_end_to_end(
    tmp_path: Path, redis_prefix: str, use_redis: bool
) -> None:
    with serving(tmp_path, redis_prefix if use_redis else None) as port:
        created = admin_json(
            port,
            "keys",
            "create",
            "--name",
            "ci",
            "--tenant",
            "acme",
            "--team",
            "platform",
            "--model",
            "m",
            "--limits",
            '{"requests_per_minute": 100}',
            "--metadata",
            "cost_center=42",
        )
        key_id, secret = created["id"], created["secret"]
        assert created["team"] == "platform"
        assert created["limits"] == {"requests_per_minute": 100}
        assert model_status(port, secret)[0] == 200

        listed = admin_cli(port, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split("\n")[0].split() == [
            "ID",
            "NAME",
            "TENANT",
            "TEAM",
            "STATUS",
            "EXPIRES",
            "CREATED",
        ]
        assert f"{key_id}  ci" in listed.stdout
        assert secret not in listed.stdout

        shown = admin_cli(port, "keys", "show", key_id)
        assert shown.returncode == 0
        assert "cost_center" in shown.stdout

        renamed = admin_json(port, "keys", "update", key_id, "--name", "ci-2")
        assert renamed["name"] == "ci-2"

        rotated = admin_json(port, "keys", "rotate", key_id, "--grace", "0")
        assert rotated["id"] == key_id
        assert model_status(port, secret)[0] == 401
        assert model_status(port, rotated["secret"])[0] == 200

        revoked = admin_cli(port, "keys", "revoke", key_id)
        assert revoked.returncode == 0
        assert f"revoked {key_id} (ci-2)" in revoked.stdout
        status, body = model_status(port, rotated["secret"])
        assert status == 401
        assert "API key revoked" in body


@backends
def test_key_create_table_shows_secret_once(
    tmp_path: Path, redis_prefix: str, use_redis: bool
) -> None:
    with serving(tmp_path, redis_prefix if use_redis else None) as port:
        created = admin_cli(
            port, "keys", "create", "--name", "ci", "--expires-in", "1h"
        )
        assert created.returncode == 0, created.stderr
        line = next(
            line for line in created.stdout.splitlines() if line.startswith("secret")
        )
        secret = line.split(": ")[1]
        key_id = next(
            line.split()[1]
            for line in created.stdout.splitlines()
            if line.startswith("id ")
        )
        shown = admin_cli(port, "keys", "show", key_id)

    assert secret.startswith("sk-llmgw-")
    assert shown.returncode == 0
    assert secret not in shown.stdout
    assert "expires" in shown.stdout


@backends
def test_tenants_and_teams_commands(
    tmp_path: Path, redis_prefix: str, use_redis: bool
) -> None:
    with serving(tmp_path, redis_prefix if use_redis else None) as port:
        created = admin_cli(
            port,
            "tenants",
            "create",
            "globex",
            "--model",
            "m",
            "--limits",
            '{"budgets_usd": {"day": 5}}',
        )
        assert created.returncode == 0, created.stderr
        # Model "m" has no price, so the budget cannot count its cost.
        assert "warning: model 'm' has no price" in created.stderr

        tenants = admin_json(port, "tenants", "list")
        assert [(t["name"], t["source"]) for t in tenants["data"]] == [
            ("acme", "config"),
            ("globex", "api"),
        ]
        updated = admin_json(
            port,
            "tenants",
            "update",
            "globex",
            "--limits",
            '{"requests_per_minute": 5}',
        )
        assert updated["limits"] == {"requests_per_minute": 5}
        shown = admin_json(port, "tenants", "show", "globex")
        assert shown["models"] == ["m"]

        team = admin_json(port, "teams", "create", "--tenant", "globex", "ml")
        assert team["tenant"] == "globex"
        teams = admin_cli(port, "teams", "list", "--tenant", "globex")
        assert teams.returncode == 0
        assert "globex  ml" in teams.stdout
        config_teams = admin_json(port, "teams", "list", "--tenant", "acme")
        assert [t["name"] for t in config_teams["data"]] == ["platform"]

        deleted_team = admin_cli(port, "teams", "delete", "--tenant", "globex", "ml")
        assert deleted_team.returncode == 0
        deleted = admin_cli(port, "tenants", "delete", "globex")
        assert deleted.returncode == 0
        missing = admin_cli(port, "tenants", "show", "globex")
        assert missing.returncode == 1
        assert "No tenant named 'globex'" in missing.stderr


def test_admin_commands_report_errors(tmp_path: Path) -> None:
    with serving(tmp_path, None) as port:
        no_key = admin_cli(port, "keys", "list", admin_key=None)
        wrong_key = admin_cli(port, "keys", "list", admin_key="wrong-key-0123456789")
        unknown = admin_cli(port, "keys", "show", "key_missing")
        invalid = admin_cli(port, "keys", "create", "--name", "ci", "--limits", "[1]")
        rejected = admin_cli(
            port, "keys", "create", "--name", "ci", "--limits", '{"rpm": 1}'
        )
    unreachable = admin_cli(free_port(), "keys", "list")

    assert no_key.returncode == 2
    assert "set LLMGW_ADMIN_KEY" in no_key.stderr
    assert wrong_key.returncode == 1
    assert "Invalid admin key" in wrong_key.stderr
    assert unknown.returncode == 1
    assert "No key with id 'key_missing'. (HTTP 404)" in unknown.stderr
    assert invalid.returncode == 2
    assert "expected a JSON object" in invalid.stderr
    assert rejected.returncode == 1
    assert "Invalid 'limits.rpm': unknown field" in rejected.stderr
    assert unreachable.returncode == 1
    assert "cannot reach the gateway" in unreachable.stderr
    for result in (no_key, wrong_key, unknown, invalid, rejected, unreachable):
        assert "Traceback" not in result.stderr
