"""The mock upstreams: nginx with fixed responses, or the Python mock.

One nginx process (Debian's nginx with the echo module) serves three
OpenAI-compatible mocks on three loopback ports, so the mock is never the
bottleneck:

- instant: ``return 200`` with a fixed completion and its usage;
- delay: the same body after a fixed delay (``echo_sleep``);
- stream: a stream of N content events at a fixed interval (``echo_sleep``
  and ``echo_flush`` between events), then a usage event and
  ``data: [DONE]``.

Without nginx or its echo module, ``mock_upstream.py`` serves the same bytes
on the same three kinds of port, at a far higher CPU cost per request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import HOST
from payloads import completion_body, stream_plan
from servers import free_port, running

BENCH_DIR = Path(__file__).resolve().parent
# Paths of the echo module as Debian's libnginx-mod-http-echo installs it.
ECHO_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/share/nginx/modules/ngx_http_echo_module.so"),
)


@dataclass(frozen=True)
class MockSettings:
    delay_ms: float
    chunks: int
    interval_ms: float


MOCKS = ("instant", "delay", "stream")


@dataclass(frozen=True)
class Upstreams:
    """Base URLs (without ``/v1``) of the three mocks, and what serves them."""

    kind: str  # "nginx" or "python"
    note: str
    instant: str
    delay: str
    stream: str

    @property
    def urls(self) -> dict[str, str]:
        """Return each mock's base URL by its name in ``MOCKS``."""
        return {"instant": self.instant, "delay": self.delay, "stream": self.stream}


def find_nginx() -> tuple[str | None, str]:
    """Return the nginx binary, or None, and why it cannot serve the mocks."""
    binary = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None
    )
    if binary is None:
        return None, "nginx is not installed (benchmarks/install_peers.sh debian)"
    return binary, ""


def find_echo_module(nginx: str) -> tuple[Path | None, bool]:
    """Return the echo module to load, or None, and whether nginx has echo at all."""
    for path in ECHO_MODULE_PATHS:
        if path.exists():
            return path, True
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False)
    return None, "echo-nginx-module" in built.stderr


def nginx_version(nginx: str) -> str:
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\S+)", result.stderr)
    return match.group(1) if match else "unknown"


def nginx_string(text: bytes) -> str:
    """Quote bytes as an nginx config string that ``echo`` and ``return`` send.

    nginx turns ``\\n`` back into a newline and ``\\'`` into a quote. A ``$``
    would start a variable, and the mock bodies have none.
    """
    decoded = text.decode()
    if "$" in decoded:
        raise ValueError("a mock body must not contain '$' (nginx variables)")
    escaped = decoded.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def nginx_common(workdir: Path, name: str) -> str:
    """Return the main and events blocks and the http settings of one instance."""
    temp = workdir / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)  # the worker runs as nobody when nginx starts as root
    temp_paths = "\n".join(
        f"    {kind}_temp_path {temp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    server_tokens off;
    # The default of 1000 would close the load generator's and the
    # targets' keep-alive connections every 1000 requests.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{temp_paths}
"""


def mock_nginx_config(
    workdir: Path,
    echo_module: Path | None,
    ports: tuple[int, int, int],
    settings: MockSettings,
) -> str:
    """Return the config of the nginx mock with its three servers."""
    body = nginx_string(completion_body())

    # The stream: the first events at once, then each one after a pause.
    plan = stream_plan(settings.chunks)
    interval = f"{settings.interval_ms / 1000:.3f}"
    stream_steps = [f"echo -n {nginx_string(plan.first)};", "echo_flush;"]
    for event in plan.later:
        stream_steps += [f"echo_sleep {interval};", f"echo -n {nginx_string(event)};"]
        stream_steps.append("echo_flush;")
    stream_steps.append(f"echo -n {nginx_string(plan.tail)};")
    stream_body = "\n            ".join(stream_steps)

    load = f"load_module {echo_module};\n" if echo_module else ""
    health = 'location = /healthz { return 200 \'{"status":"ok"}\'; }'
    instant, delay, stream = ports
    return f"""{load}{nginx_common(workdir, "mock")}
    server {{
        listen {HOST}:{instant};
        {health}
        location / {{
            default_type application/json;
            return 200 {body};
        }}
    }}
    server {{
        listen {HOST}:{delay};
        {health}
        location / {{
            default_type application/json;
            echo_sleep {settings.delay_ms / 1000:.3f};
            echo -n {body};
        }}
    }}
    server {{
        listen {HOST}:{stream};
        {health}
        location / {{
            default_type text/event-stream;
            {stream_body}
        }}
    }}
}}
"""


def nginx_command(nginx: str, workdir: Path, config: Path, name: str) -> list[str]:
    """Return the command that runs nginx in the foreground with its own files."""
    return [
        nginx,
        "-p",
        str(workdir),
        "-c",
        str(config),
        "-e",
        str(workdir / f"{name}-error.log"),
    ]


@contextmanager
def mock_upstreams(
    workdir: Path, settings: MockSettings, use_nginx: bool = True
) -> Iterator[Upstreams]:
    """Run the three mocks for the duration of the block."""
    ports = (free_port(), free_port(), free_port())
    urls = [f"http://{HOST}:{port}" for port in ports]
    nginx, reason = find_nginx() if use_nginx else (None, "--python-mock given")
    echo_module, has_echo = (None, False)
    if nginx is not None:
        echo_module, has_echo = find_echo_module(nginx)
        if not has_echo:
            reason = "nginx has no echo module (install libnginx-mod-http-echo)"
    if nginx is not None and has_echo:
        config = workdir / "mock-nginx.conf"
        config.write_text(mock_nginx_config(workdir, echo_module, ports, settings))
        command = nginx_command(nginx, workdir, config, "mock")
        note = f"nginx {nginx_version(nginx)} with the echo module"
        with running("mock-nginx", command, workdir, f"{urls[0]}/healthz"):
            yield Upstreams("nginx", note, *urls)
        return

    command = [
        sys.executable,
        str(BENCH_DIR / "mock_upstream.py"),
        f"--instant-port={ports[0]}",
        f"--delay-port={ports[1]}",
        f"--stream-port={ports[2]}",
        f"--delay-ms={settings.delay_ms}",
        f"--chunks={settings.chunks}",
        f"--interval-ms={settings.interval_ms}",
    ]
    note = f"Python mock ({reason})"
    with running("mock-python", command, workdir, f"{urls[0]}/healthz"):
        yield Upstreams("python", note, *urls)
