"""structlog setup: one JSON line per event on stdout, ISO UTC timestamps.

Call ``configure_logging`` once per process. Request context (request id,
route) is bound with ``structlog.contextvars`` so every line logged while a
request runs carries it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Field names whose values are never written to the log, whatever logged them.
_SECRET_FIELDS = frozenset({"authorization", "api_key", "key", "x-api-key", "password"})


def _redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in _SECRET_FIELDS.intersection(event):
        event[name] = "<redacted>"
    return event


def _add_pid(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event["pid"] = os.getpid()
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_pid,
            _redact_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            _LEVELS.get(level, logging.INFO)
        ),
        # WriteLogger writes each line and its newline in one write(), so the
        # lines of several worker processes sharing stdout never interleave
        # (print() makes two writes when Python runs unbuffered).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
