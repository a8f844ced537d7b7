"""An incremental Server-Sent Events parser, and a frame builder.

The parser follows the WHATWG HTML "Server-sent events" parsing rules, with
three differences that suit a gateway relaying a stream:

* Every block of lines that ends in a blank line yields an ``SSEEvent``,
  including blocks with no ``data`` field, such as keep-alive comments. A
  browser would dispatch nothing for those, and their ``has_data`` is False,
  but the gateway can still forward their bytes in time.
* ``id`` is the ``id`` field of that block only. The "last event ID" that a
  browser carries from one event to the next is not tracked.
* ``flush`` yields a final block that lacks its blank line, where a browser
  would drop it. Some Anthropic streams end that way.

Once ``flush`` has run, every byte fed in has landed in the ``raw`` of exactly
one event, so joining the ``raw`` of all events rebuilds the stream byte for
byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

_BOM: Final = b"\xef\xbb\xbf"
_CR: Final = 0x0D
_LF: Final = 0x0A
_SPLIT_LINES: Final = re.compile(r"\r\n|\r|\n")
_SPLIT_LINES_BYTES: Final = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One block of SSE lines, up to and including its blank line."""

    event: str | None
    """The ``event`` field, or None when the block has none."""
    data: str
    """The ``data`` fields joined with "\\n", or "" when there are none."""
    id: str | None
    """The ``id`` field of this block, or None."""
    raw: bytes
    """The block's bytes exactly as received, line endings included."""
    has_data: bool = True
    """False for a block without ``data`` fields, which a browser skips."""


class SSEParser:
    """Split a byte stream into ``SSEEvent``s, whatever the read boundaries.

    Lines may end in LF, CRLF or a lone CR. A line is decoded as UTF-8 only
    once complete, so a character split between reads decodes correctly.
    Invalid UTF-8 decodes to U+FFFD, as the SSE standard requires. A UTF-8
    byte order mark at the start of the stream is skipped but kept in ``raw``.

    The buffer keeps the bytes of the block being read, so each event's
    ``raw`` is one slice. Every byte is searched for a line end once, so the
    work is linear in the stream's length.

    NOTE: a block is buffered whole until its blank line, with no size limit,
    so a caller reading an untrusted stream should cap what it feeds.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # The current block starts at offset 0 of the buffer.
        self._buffer = bytearray()
        self._line_start = 0
        # Where to resume searching for a line end.
        self._scan_from = 0
        self._at_stream_start = True
        self._start_block()

    def _start_block(self) -> None:
        self._data_lines: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._has_data = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Add bytes read from the stream and return the events they complete."""
        self._buffer += data
        if self._at_stream_start and not self._skip_bom(final=False):
            return []

        return self._read_lines(final=False)

    def flush(self) -> list[SSEEvent]:
        """End the stream, returning any event still waiting for a blank line.

        The parser is then ready for a new stream.
        """
        if self._at_stream_start:
            self._skip_bom(final=True)
        events = self._read_lines(final=True)

        if self._line_start < len(self._buffer):
            # A last line with no line end.
            line = self._buffer[self._line_start :]
            self._apply_field(line.decode("utf-8", errors="replace"))
        if self._buffer:
            events.append(self._make_event(len(self._buffer)))

        self._reset()
        return events

    def _skip_bom(self, *, final: bool) -> bool:
        """Step past a BOM at the stream start; return False to wait for bytes."""
        prefix = bytes(self._buffer[:3])
        if len(prefix) < 3 and _BOM.startswith(prefix) and not final:
            return False

        if prefix == _BOM:
            self._line_start = self._scan_from = len(_BOM)
        self._at_stream_start = False
        return True

    def _read_lines(self, *, final: bool) -> list[SSEEvent]:
        """Apply every complete line in the buffer, then drop finished blocks.

        A CR as the buffer's last byte stays pending until the next byte
        shows whether it starts a CRLF, unless the stream has ended.
        """
        buffer = self._buffer
        events: list[SSEEvent] = []
        block_start = 0
        line_start = self._line_start
        scan_from = len(buffer)

        for end in _find_line_ends(buffer, self._scan_from):
            if end < line_start:
                continue  # the LF of a CRLF already taken

            stop = end + 1
            if buffer[end] == _CR:
                if stop == len(buffer) and not final:
                    scan_from = end
                    break
                if stop < len(buffer) and buffer[stop] == _LF:
                    stop += 1

            if end > line_start:
                line = buffer[line_start:end].decode("utf-8", errors="replace")
                self._apply_field(line)
            else:
                events.append(self._make_event(stop, block_start))
                self._start_block()
                block_start = stop
            line_start = stop

        # Deleting from the front of a bytearray is cheap in CPython: it
        # moves the start pointer instead of copying the rest.
        del buffer[:block_start]
        self._line_start = line_start - block_start
        self._scan_from = scan_from - block_start
        return events

    def _make_event(self, stop: int, start: int = 0) -> SSEEvent:
        return SSEEvent(
            event=self._event,
            data="\n".join(self._data_lines),
            id=self._id,
            raw=bytes(self._buffer[start:stop]),
            has_data=self._has_data,
        )

    def _apply_field(self, line: str) -> None:
        if line.startswith(":"):
            return

        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]

        if name == "data":
            self._data_lines.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # Other fields, "retry" among them, matter only to a browser's
        # reconnection logic and stay in raw.


def _find_line_ends(buffer: bytearray, start: int) -> Iterator[int]:
    """Yield the offset of every CR and LF from ``start`` on, in order.

    Two ``find`` calls, which run at memchr speed, beat a regex here.
    """
    next_cr = buffer.find(b"\r", start)
    next_lf = buffer.find(b"\n", start)
    while next_cr >= 0 or next_lf >= 0:
        if next_lf < 0 or 0 <= next_cr < next_lf:
            yield next_cr
            next_cr = buffer.find(b"\r", next_cr + 1)
        else:
            yield next_lf
            next_lf = buffer.find(b"\n", next_lf + 1)


def format_event(data: bytes | str, event: str | None = None) -> bytes:
    """Build one SSE frame: an optional ``event`` line, ``data`` lines, a blank line.

    Line breaks in ``data`` (LF, CRLF or CR) start a new ``data:`` line, so
    the receiver joins them back with LF. Raises ValueError if ``event``
    contains a line break, which would start a field of its own.
    """
    if isinstance(data, str):
        data = data.encode()

    frame = bytearray()
    if event is not None:
        if _SPLIT_LINES.search(event):
            raise ValueError(f"invalid SSE event name {event!r}: contains a line break")
        frame += b"event: " + event.encode() + b"\n"

    for line in _SPLIT_LINES_BYTES.split(data):
        frame += b"data: " + line + b"\n"

    frame += b"\n"
    return bytes(frame)
