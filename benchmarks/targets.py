"""The targets that the harness loads, each started once per run.

A target's ``launch`` runs it for the duration of a ``with`` block, in front
of all three mock upstreams at once, and yields a ``Running`` with one
``Endpoint`` per mock. Gateways pick the mock by the requested model name
(llmgw, LiteLLM, the aiohttp pass-through), by a header (Portkey) or by a
path prefix (nginx). Every target listens on 127.0.0.1 only. A target whose
software is missing reports why through ``unavailable`` and is skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from common import HOST
from payloads import MOCK_MODEL
from servers import free_port, log_tail, start_server, stop_server, wait_ready
from upstreams import MOCKS, Upstreams, find_nginx, nginx_command, nginx_common

BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / ".peers"
LITELLM_BIN = PEERS_DIR / "litellm" / "bin" / "litellm"
PORTKEY_DIR = PEERS_DIR / "portkey" / "node_modules" / "@portkey-ai" / "gateway"
PORTKEY_SCRIPT = PORTKEY_DIR / "build" / "start-server.js"
PORTKEY_PRELOAD = BENCH_DIR / "portkey_preload.mjs"
REDIS_URL = f"redis://{HOST}:6379/13"
CHAT_PATH = "/v1/chat/completions"
UPSTREAM_KEY = "sk-mock-upstream"
# The model name that clients send for each mock.
MODELS = {mock: f"bench-{mock}" for mock in MOCKS}


@dataclass(frozen=True)
class Endpoint:
    """The URL, headers and model name of a target's route to one mock."""

    url: str
    headers: dict[str, str]
    model: str


@dataclass
class Running:
    """A started target: its endpoint for each mock, and what it left behind."""

    endpoints: dict[str, Endpoint]
    # The SQLite ledger to compare with the requests sent, for llmgw.
    ledger: Path | None = None
    startup_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Workspace:
    """The working folder, key and Redis prefix that all targets of a run share."""

    workdir: Path
    key: str  # llmgw's gateway key and LiteLLM's master key
    redis_prefix: str  # prefix of every Redis key of the run


Launcher = Callable[[Upstreams, Workspace], AbstractContextManager[Running]]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    unavailable: Callable[[], str | None]
    launch: Launcher


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def always_available() -> str | None:
    return None


@contextmanager
def run_server(
    name: str,
    command: list[str],
    space: Workspace,
    ready_url: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    exit_codes: tuple[int, ...] = (0,),
) -> Iterator[Running]:
    """Run a target's server; yield a ``Running`` for the caller to fill in.

    An exit code after SIGTERM other than ``exit_codes`` is noted as a
    problem of the run.
    """
    server = start_server(name, command, space.workdir, env=env, cwd=cwd)
    running = Running(endpoints={})
    try:
        running.startup_seconds = wait_ready(server, ready_url)
        yield running
    finally:
        code = stop_server(server)
        if code not in exit_codes:
            running.notes.append(f"{name} exited with code {code}:\n{log_tail(server)}")


@contextmanager
def launch_direct(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
    endpoints = {
        mock: Endpoint(url + CHAT_PATH, bearer(UPSTREAM_KEY), MODELS[mock])
        for mock, url in upstreams.urls.items()
    }
    yield Running(endpoints=endpoints)


@contextmanager
def launch_aiohttp(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "passthrough.py"), f"--port={port}"]
    command += [
        f"--upstream={MODELS[mock]}={url}" for mock, url in upstreams.urls.items()
    ]
    base = f"http://{HOST}:{port}"
    with run_server("aiohttp", command, space, f"{base}/healthz") as running:
        running.endpoints = {
            mock: Endpoint(base + CHAT_PATH, bearer(UPSTREAM_KEY), model)
            for mock, model in MODELS.items()
        }
        yield running


def llmgw_unavailable() -> str | None:
    if not (Path(sys.executable).parent / "llmgw").exists():
        return f"llmgw is not installed in {Path(sys.executable).parent}"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer ({exc})"
    finally:
        client.close()
    return None


def llmgw_config(
    upstreams: Upstreams, port: int, ledger: Path, key: str, prefix: str
) -> str:
    """Return a config with every governance feature on.

    There is one openai-compatible provider and one model per mock. The key
    may use exactly those models, its output cap is checked on every
    request, and its rate limits are so high that they are checked but
    never reached.
    """
    providers = "\n".join(
        f"  - {{name: {mock}, kind: openai-compatible, base_url: '{url}/v1', "
        f"api_key: {UPSTREAM_KEY}}}"
        for mock, url in upstreams.urls.items()
    )
    models = "\n".join(
        f"  - {{name: {MODELS[mock]}, provider: {mock}, upstream_model: {MOCK_MODEL}}}"
        for mock in MOCKS
    )
    allowed = ", ".join(MODELS.values())
    return f"""\
server: {{listen: '{HOST}:{port}'}}
redis: {{url: '{REDIS_URL}', key_prefix: '{prefix}'}}
ledger: {{sink: 'sqlite:///{ledger}'}}
logging: {{level: info}}
providers:
{providers}
models:
{models}
keys:
  - name: bench
    key: {key}
    models: [{allowed}]
    max_output_tokens: 256
    limits: {{requests_per_minute: 1000000000, tokens_per_minute: 1000000000000}}
"""


def llmgw_launcher(workers: int) -> Launcher:
    @contextmanager
    def launch(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
        name = "llmgw" if workers == 1 else f"llmgw-w{workers}"
        port = free_port()
        ledger = space.workdir / f"{name}.db"
        config = space.workdir / f"{name}.yaml"
        prefix = f"{space.redis_prefix}{name}:"
        config.write_text(llmgw_config(upstreams, port, ledger, space.key, prefix))
        llmgw = str(Path(sys.executable).parent / "llmgw")
        command = [llmgw, "serve", "--config", str(config), f"--workers={workers}"]
        base = f"http://{HOST}:{port}"
        with run_server(name, command, space, f"{base}/readyz") as running:
            running.ledger = ledger
            running.endpoints = {
                mock: Endpoint(base + CHAT_PATH, bearer(space.key), model)
                for mock, model in MODELS.items()
            }
            yield running

    return launch


def count_ledger_rows(ledger: Path) -> int:
    with sqlite3.connect(ledger) as connection:
        row = connection.execute("SELECT COUNT(*) FROM llmgw_usage").fetchone()
    return int(row[0])


def nginx_unavailable() -> str | None:
    return find_nginx()[1] or None


def nginx_proxy_config(space: Workspace, port: int, upstreams: Upstreams) -> str:
    """Return a plain reverse proxy with a keep-alive connection pool per mock.

    ``/MOCK/...`` goes to that mock as ``/...``.
    """
    blocks = []
    for mock, url in upstreams.urls.items():
        blocks.append(f"""
    upstream {mock} {{
        server {url.removeprefix("http://")};
        keepalive 128;
    }}""")
    locations = []
    for mock in upstreams.urls:
        locations.append(f"""
        location /{mock}/ {{
            proxy_pass http://{mock}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Relay stream events as they arrive.
            proxy_buffering off;
        }}""")
    return f"""{nginx_common(space.workdir, "nginx")}{"".join(blocks)}
    server {{
        listen {HOST}:{port};{"".join(locations)}
    }}
}}
"""


@contextmanager
def launch_nginx(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
    nginx, reason = find_nginx()
    if nginx is None:
        raise RuntimeError(reason)
    port = free_port()
    config = space.workdir / "nginx.conf"
    config.write_text(nginx_proxy_config(space, port, upstreams))
    base = f"http://{HOST}:{port}"
    command = nginx_command(nginx, space.workdir, config, "nginx")
    with run_server("nginx", command, space, f"{base}/instant/healthz") as running:
        running.endpoints = {
            mock: Endpoint(f"{base}/{mock}{CHAT_PATH}", bearer(UPSTREAM_KEY), model)
            for mock, model in MODELS.items()
        }
        yield running


def litellm_unavailable() -> str | None:
    if not LITELLM_BIN.exists():
        return (
            f"LiteLLM is not installed at {LITELLM_BIN}: "
            "run benchmarks/install_peers.sh litellm"
        )
    return None


def litellm_config(upstreams: Upstreams, key: str) -> str:
    models = "\n".join(
        f"""\
  - model_name: {MODELS[mock]}
    litellm_params:
      model: openai/{MOCK_MODEL}
      api_base: {url}/v1
      api_key: {UPSTREAM_KEY}"""
        for mock, url in upstreams.urls.items()
    )
    return f"""\
model_list:
{models}
general_settings:
  master_key: {key}
litellm_settings:
  set_verbose: false
"""


@contextmanager
def launch_litellm(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
    port = free_port()
    config = space.workdir / "litellm.yaml"
    config.write_text(litellm_config(upstreams, space.key))
    command = [
        str(LITELLM_BIN),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        **os.environ,
        # Use the model cost map shipped in the package instead of fetching it.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    base = f"http://{HOST}:{port}"
    ready = f"{base}/health/liveliness"
    # The LiteLLM CLI (uvicorn) ends with the signal's own status.
    with run_server(
        "litellm", command, space, ready, env=env, exit_codes=(0, -signal.SIGTERM)
    ) as running:
        running.endpoints = {
            mock: Endpoint(base + CHAT_PATH, bearer(space.key), model)
            for mock, model in MODELS.items()
        }
        yield running


def portkey_unavailable() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not PORTKEY_SCRIPT.exists():
        return (
            f"the Portkey gateway is not installed at {PORTKEY_DIR}: "
            "run benchmarks/install_peers.sh portkey"
        )
    return None


@contextmanager
def launch_portkey(upstreams: Upstreams, space: Workspace) -> Iterator[Running]:
    port = free_port()
    node = shutil.which("node") or "node"
    command = [node, "--import", str(PORTKEY_PRELOAD), str(PORTKEY_SCRIPT)]
    command += ["--headless", f"--port={port}"]
    env = {**os.environ, "NODE_ENV": "production"}
    base = f"http://{HOST}:{port}"
    # Node.js sets no SIGTERM handler, so the process ends with the signal.
    with run_server(
        "portkey", command, space, f"{base}/", env, PORTKEY_DIR, (0, -signal.SIGTERM)
    ) as running:
        for mock, url in upstreams.urls.items():
            headers = {
                **bearer(UPSTREAM_KEY),
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"{url}/v1",
            }
            running.endpoints[mock] = Endpoint(base + CHAT_PATH, headers, MODELS[mock])
        yield running


TARGETS = (
    Target(
        "direct", "load generator straight to the mock", always_available, launch_direct
    ),
    Target(
        "aiohttp",
        "bare aiohttp pass-through (passthrough.py)",
        always_available,
        launch_aiohttp,
    ),
    Target(
        "llmgw",
        "llmgw serve, governance on, 1 worker",
        llmgw_unavailable,
        llmgw_launcher(1),
    ),
    Target(
        "llmgw-w2",
        "llmgw serve, governance on, --workers 2",
        llmgw_unavailable,
        llmgw_launcher(2),
    ),
    Target(
        "nginx",
        "nginx reverse proxy, keep-alive upstream pools",
        nginx_unavailable,
        launch_nginx,
    ),
    Target(
        "litellm",
        "LiteLLM proxy, 1 worker, master key",
        litellm_unavailable,
        launch_litellm,
    ),
    Target("portkey", "Portkey gateway, headless", portkey_unavailable, launch_portkey),
)
TARGET_NAMES = tuple(target.name for target in TARGETS)
