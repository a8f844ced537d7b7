"""Describe the machine and the software versions of a harness run.

Benchmark figures mean something only beside the hardware, the load on it
and the versions that produced them, so every run records these.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from targets import LITELLM_BIN, PORTKEY_DIR, REDIS_URL

REPO_DIR = Path(__file__).resolve().parent.parent


def _command_output(command: list[str]) -> str:
    """Return a command's stdout and stderr, or "" when it cannot run."""
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        return ""
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return (completed.stdout + completed.stderr).strip()


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 1024 / 1024, 1) if match else None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _litellm_version() -> str | None:
    site_packages = LITELLM_BIN.parent.parent / "lib"
    for dist_info in site_packages.glob("python3*/site-packages/litellm-*.dist-info"):
        return dist_info.name.removeprefix("litellm-").removesuffix(".dist-info")
    return None


def _portkey_version() -> str | None:
    try:
        package = json.loads((PORTKEY_DIR / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = package.get("version")
    return str(version) if version else None


def _redis_version() -> str | None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        return str(client.info("server").get("redis_version"))
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()


def _git_state() -> dict[str, Any]:
    commit = _command_output(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]
    )
    changed = _command_output(
        ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"]
    )
    return {
        "commit": commit or None,
        "uncommitted_changes": len(changed.splitlines()) if commit else None,
    }


def describe_machine(options: Any, argv: list[str]) -> dict[str, Any]:
    """Return the machine, the load on it, the versions and the command line."""
    load = os.getloadavg()
    versions = {
        "python": platform.python_version(),
        "aiohttp": _package_version("aiohttp"),
        "uvloop": _package_version("uvloop"),
        "llmgw": _package_version("llmgw"),
        "redis_server": _redis_version(),
        "nginx": _command_output(["nginx", "-v"]).removeprefix("nginx version: ")
        or None,
        "wrk": (_command_output(["wrk", "--version"]).split(" [")[0] or None),
        "node": _command_output(["node", "--version"]) or None,
        "litellm": _litellm_version(),
        "portkey_gateway": _portkey_version(),
    }
    git = _git_state()
    meta: dict[str, Any] = {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(argv),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": [round(value, 2) for value in load],
        "versions": versions,
        "git": git,
        "options": {
            name: str(value) if isinstance(value, Path) else value
            for name, value in dataclasses.asdict(options).items()
        },
    }
    meta["summary"] = (
        f"{meta['cpus']} CPUs ({meta['cpu_model']}), {meta['memory_gib']} GiB, "
        f"load average {load[0]:.2f} at start; Python {versions['python']}, "
        f"llmgw {versions['llmgw']} at {git['commit']} "
        f"({git['uncommitted_changes']} files changed)"
    )
    return meta
