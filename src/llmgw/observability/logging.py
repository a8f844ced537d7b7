"""structlog setup: one JSON line per event on stdout, ISO UTC timestamps.

Call ``configure_logging`` once per process. Request context (request id,
route) is bound with ``structlog.contextvars`` so every line logged while a
request runs carries it.

Lines logged while an event loop runs are collected and written together
at the end of the loop iteration, so a busy gateway makes one write system
call per iteration instead of one per request.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

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


# A pipe write of at most PIPE_BUF bytes (4096 on Linux) is atomic, so the
# lines of worker processes sharing one stdout pipe never interleave.
_MAX_WRITE_BYTES = 4096


class BatchingWriter:
    """Write log lines to ``file``, one write per event-loop iteration.

    Without a running loop each line is written at once. A line is never
    split across writes, and a write contains whole lines only.
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self._lines: list[str] = []
        self._flush_scheduled = False
        atexit.register(self.flush)

    def write_line(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._lines.append(line)
            self.flush()
            return
        self._lines.append(line)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        lines, self._lines = self._lines, []
        batch: list[str] = []
        size = 0
        for line in lines:
            if batch and size + len(line) > _MAX_WRITE_BYTES:
                self._write(batch)
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write(batch)

    def _write(self, lines: list[str]) -> None:
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except (OSError, ValueError):
            # stdout closed or broken (the reader went away): the lines are
            # lost, and the gateway keeps serving.
            pass


class _BatchingLogger:
    """The structlog logger: each rendered event becomes one line."""

    def __init__(self, writer: BatchingWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message + "\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


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
        logger_factory=_logger_factory(BatchingWriter(sys.stdout)),
        cache_logger_on_first_use=True,
    )


def _logger_factory(writer: BatchingWriter) -> Any:
    logger = _BatchingLogger(writer)

    def factory(*_args: Any) -> _BatchingLogger:
        return logger

    return factory
