"""A blocking client for the admin API, and the tables the CLI prints.

The CLI runs one request per command, so the standard library's urllib is
enough and no event loop is needed.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

DEFAULT_URL = "http://127.0.0.1:4000"
DEFAULT_TIMEOUT_SECONDS = 30.0

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AdminClientError(Exception):
    """A request that failed: the gateway's error message, or why it could
    not be reached. ``status`` is the HTTP status, None without a response."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_duration(text: str) -> float:
    """Parse seconds written as 90, 90s, 15m, 12h, 30d or 2w."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use seconds or a number with s, m, h, d "
            "or w, such as 90m or 30d"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminClient:
    """Send admin API requests with an admin key as a bearer token."""

    def __init__(
        self, url: str, admin_key: str, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self._url = url.rstrip("/")
        self._admin_key = admin_key
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON response.

        Raises ``AdminClientError`` for an error response or a network failure.
        """
        url = self._url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._admin_key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AdminClientError(_error_message(exc), exc.code) from None
        except urllib.error.URLError as exc:
            raise AdminClientError(
                f"cannot reach the gateway at {self._url}: {exc.reason}. Is it "
                "running? Set its address with --url."
            ) from None
        except TimeoutError:
            raise AdminClientError(
                f"the gateway at {self._url} did not respond within {self._timeout:g} s"
            ) from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()
    try:
        message = orjson.loads(raw)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()[:200]
        message = text or exc.reason
    return f"{message} (HTTP {exc.code})"


# Output


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode() if value else "-"
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as a plain text table with one column per name."""
    header = [column.upper() for column in columns]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(len(line[index]) for line in [header, *cells])
        for index in range(len(columns))
    ]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in [header, *cells]
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_record(record: dict[str, Any]) -> str:
    """Render one record as lines of field and value."""
    width = max((len(name) for name in record), default=0)
    return "".join(
        f"{name.ljust(width)}  {_cell(value)}\n" for name, value in record.items()
    )


def render_json(data: object) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
