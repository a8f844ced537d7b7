"""The AWS event-stream binary format (``application/vnd.amazon.eventstream``).

Bedrock's ConverseStream responds in this format. Each message is::

    [total length: u32][headers length: u32][prelude CRC32: u32]
    [headers][payload][message CRC32: u32]

All integers are big-endian. The prelude CRC32 covers the first 8 bytes, and
the message CRC32 covers everything before it, prelude CRC included. A header
is a name (u8 length, UTF-8), a type byte and a value whose layout the type
fixes (see ``HeaderType``).

botocore has a decoder, but it is not a dependency of llmgw, its
``botocore.eventstream`` module is not documented as a public API, and it has
no encoder, which the tests and the mock upstream need. The format is small
enough to implement here.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Final

PRELUDE_BYTES: Final = 12
MESSAGE_CRC_BYTES: Final = 4
MIN_MESSAGE_BYTES: Final = PRELUDE_BYTES + MESSAGE_CRC_BYTES

# The limits botocore enforces (botocore/eventstream.py). A prelude that
# declares more is rejected before its bytes are buffered, so a broken or
# hostile upstream cannot make the decoder hold an unbounded message.
MAX_HEADERS_BYTES: Final = 128 * 1024
MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024

_PRELUDE: Final = struct.Struct(">III")
_U32: Final = struct.Struct(">I")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class HeaderType(IntEnum):
    """The type byte of a header value."""

    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    SHORT = 3
    INTEGER = 4
    LONG = 5
    BYTE_ARRAY = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


HeaderValue = bool | int | bytes | str | datetime | uuid.UUID

# Struct formats of the fixed-size integer types, all signed.
_INT_FORMATS: Final = {
    HeaderType.BYTE: struct.Struct(">b"),
    HeaderType.SHORT: struct.Struct(">h"),
    HeaderType.INTEGER: struct.Struct(">i"),
    HeaderType.LONG: struct.Struct(">q"),
    HeaderType.TIMESTAMP: struct.Struct(">q"),
}
_LENGTH_PREFIX: Final = struct.Struct(">H")


class EventStreamError(ValueError):
    """The bytes are not a valid event stream, so the stream cannot continue."""


@dataclass(frozen=True, slots=True)
class Header:
    """A header value with an explicit type, for encoding.

    ``encode_message`` infers the type of a plain value (an ``int`` becomes
    INTEGER, or LONG when it does not fit in 32 bits). Use this to send a
    BYTE, SHORT or LONG on purpose.
    """

    type: HeaderType
    value: HeaderValue


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    """One decoded message."""

    headers: dict[str, HeaderValue]
    payload: bytes
    header_types: dict[str, HeaderType] = field(default_factory=dict, compare=False)
    """The wire type of each header, so a message can be re-encoded as sent."""

    def _string_header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str | None:
        """``:message-type``: ``event``, ``exception`` or ``error``."""
        return self._string_header(":message-type")

    @property
    def event_type(self) -> str | None:
        """``:event-type`` of an event, such as ``contentBlockDelta``."""
        return self._string_header(":event-type")

    @property
    def exception_type(self) -> str | None:
        """``:exception-type`` of an exception, such as ``throttlingException``."""
        return self._string_header(":exception-type")

    @property
    def content_type(self) -> str | None:
        return self._string_header(":content-type")

    @property
    def error_code(self) -> str | None:
        """``:error-code`` of an ``error`` message, whose payload is empty."""
        return self._string_header(":error-code")

    @property
    def error_message(self) -> str | None:
        return self._string_header(":error-message")


class EventStreamDecoder:
    """Split a byte stream into ``EventStreamMessage``s, whatever the read sizes.

    Both CRC32s are checked. A bad CRC, a length out of bounds or a malformed
    header raises ``EventStreamError``, after which the decoder is unusable,
    because the format has no way to find the next message boundary.
    """

    def __init__(
        self,
        *,
        max_headers_bytes: int = MAX_HEADERS_BYTES,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._buffer = bytearray()
        self._max_headers_bytes = max_headers_bytes
        self._max_payload_bytes = max_payload_bytes
        self._failure: EventStreamError | None = None
        # The stream offset of the buffer's first byte, for error messages.
        self._buffer_start = 0

    @property
    def buffered_bytes(self) -> int:
        """The bytes of an incomplete message waiting for the rest."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventStreamMessage]:
        """Add bytes read from the stream and return the messages they complete."""
        if self._failure is not None:
            raise self._failure

        self._buffer += data
        messages: list[EventStreamMessage] = []
        offset = 0
        try:
            while len(self._buffer) - offset >= PRELUDE_BYTES:
                total = self._check_prelude(offset)
                if len(self._buffer) - offset < total:
                    break
                messages.append(self._decode(offset, total))
                offset += total
        except EventStreamError as exc:
            self._failure = exc
            raise
        finally:
            del self._buffer[:offset]
            self._buffer_start += offset
        return messages

    def close(self) -> None:
        """End the stream. Raises ``EventStreamError`` if a message is incomplete."""
        if self._failure is None and self._buffer:
            self._failure = EventStreamError(
                f"event stream ended inside a message: {len(self._buffer)} bytes"
                " of an incomplete message were left"
            )
        if self._failure is not None:
            raise self._failure

    def _check_prelude(self, offset: int) -> int:
        """Validate the prelude at ``offset`` and return the message length."""
        total, headers_length, prelude_crc = _PRELUDE.unpack_from(self._buffer, offset)
        computed = zlib.crc32(self._buffer[offset : offset + 8])
        if computed != prelude_crc:
            raise EventStreamError(
                f"invalid event stream prelude CRC32 in the message at byte"
                f" {self._buffer_start + offset}: expected"
                f" 0x{prelude_crc:08x}, computed 0x{computed:08x}"
            )

        if headers_length > self._max_headers_bytes:
            raise EventStreamError(
                f"event stream message headers are {headers_length} bytes, more than"
                f" the maximum of {self._max_headers_bytes}"
            )
        payload_length = total - MIN_MESSAGE_BYTES - headers_length
        if payload_length < 0:
            raise EventStreamError(
                f"invalid event stream message length {total}: too short for"
                f" {headers_length} bytes of headers"
            )
        if payload_length > self._max_payload_bytes:
            raise EventStreamError(
                f"event stream message payload is {payload_length} bytes, more than"
                f" the maximum of {self._max_payload_bytes}"
            )
        return int(total)

    def _decode(self, offset: int, total: int) -> EventStreamMessage:
        message = bytes(self._buffer[offset : offset + total])
        (expected,) = _U32.unpack_from(message, total - MESSAGE_CRC_BYTES)
        computed = zlib.crc32(message[: total - MESSAGE_CRC_BYTES])
        if computed != expected:
            raise EventStreamError(
                f"invalid event stream message CRC32 in the message at byte"
                f" {self._buffer_start + offset}: expected"
                f" 0x{expected:08x}, computed 0x{computed:08x}"
            )

        (headers_length,) = _U32.unpack_from(message, 4)
        headers_end = PRELUDE_BYTES + headers_length
        view = memoryview(message)
        headers, header_types = _decode_headers(view[PRELUDE_BYTES:headers_end])
        payload = message[headers_end : total - MESSAGE_CRC_BYTES]
        return EventStreamMessage(headers, payload, header_types)


def decode_all(data: bytes) -> list[EventStreamMessage]:
    """Decode a complete stream. Raises ``EventStreamError`` if any of it is bad."""
    decoder = EventStreamDecoder()
    messages = decoder.feed(data)
    decoder.close()
    return messages


def _decode_headers(
    data: memoryview,
) -> tuple[dict[str, HeaderValue], dict[str, HeaderType]]:
    headers: dict[str, HeaderValue] = {}
    header_types: dict[str, HeaderType] = {}
    for name, header_type, value in _iter_headers(data):
        if name in headers:
            raise EventStreamError(f"duplicate event stream header {name!r}")
        headers[name] = value
        header_types[name] = header_type
    return headers, header_types


def _iter_headers(data: memoryview) -> Iterator[tuple[str, HeaderType, HeaderValue]]:
    position = 0
    while position < len(data):
        name_length = data[position]
        position += 1
        if name_length == 0:
            raise EventStreamError("invalid event stream header: empty name")
        name = _decode_utf8(_take(data, position, name_length), "header name")
        position += name_length

        type_byte = _take(data, position, 1)[0]
        position += 1
        try:
            header_type = HeaderType(type_byte)
        except ValueError:
            raise EventStreamError(
                f"invalid type {type_byte} for event stream header {name!r}"
            ) from None

        value, position = _decode_value(data, position, header_type, name)
        yield name, header_type, value


def _decode_value(
    data: memoryview, position: int, header_type: HeaderType, name: str
) -> tuple[HeaderValue, int]:
    if header_type is HeaderType.BOOL_TRUE:
        return True, position
    if header_type is HeaderType.BOOL_FALSE:
        return False, position

    if header_type in _INT_FORMATS:
        layout = _INT_FORMATS[header_type]
        (number,) = layout.unpack(_take(data, position, layout.size))
        position += layout.size
        if header_type is HeaderType.TIMESTAMP:
            # Milliseconds since the Unix epoch.
            return _EPOCH + timedelta(milliseconds=number), position
        return int(number), position

    if header_type is HeaderType.UUID:
        return uuid.UUID(bytes=bytes(_take(data, position, 16))), position + 16

    (length,) = _LENGTH_PREFIX.unpack(_take(data, position, 2))
    position += 2
    raw = _take(data, position, length)
    position += length
    if header_type is HeaderType.BYTE_ARRAY:
        return bytes(raw), position
    return _decode_utf8(raw, f"value of header {name!r}"), position


def _take(data: memoryview, position: int, length: int) -> memoryview:
    if position + length > len(data):
        raise EventStreamError(
            f"invalid event stream headers: a field needs {length} bytes at offset"
            f" {position}, but the headers end at {len(data)}"
        )
    return data[position : position + length]


def _decode_utf8(raw: memoryview, field_name: str) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise EventStreamError(f"invalid UTF-8 in event stream {field_name}") from None


def encode_message(
    headers: Mapping[str, HeaderValue | Header], payload: bytes = b""
) -> bytes:
    """Build one message with both CRC32s. Raises ValueError on a bad header."""
    encoded_headers = b"".join(
        _encode_header(name, value) for name, value in headers.items()
    )
    if len(encoded_headers) > MAX_HEADERS_BYTES:
        raise ValueError(
            f"event stream headers are {len(encoded_headers)} bytes, more than the"
            f" maximum of {MAX_HEADERS_BYTES}"
        )

    total = MIN_MESSAGE_BYTES + len(encoded_headers) + len(payload)
    prelude = _U32.pack(total) + _U32.pack(len(encoded_headers))
    body = prelude + _U32.pack(zlib.crc32(prelude)) + encoded_headers + payload
    return body + _U32.pack(zlib.crc32(body))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """Build an ``event`` message with a JSON payload, as Bedrock sends them."""
    return encode_message(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )


def encode_exception(exception_type: str, payload: bytes) -> bytes:
    """Build an ``exception`` message, as Bedrock sends mid-stream failures."""
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )


def _encode_header(name: str, value: HeaderValue | Header) -> bytes:
    raw_name = name.encode("utf-8")
    if not 1 <= len(raw_name) <= 255:
        raise ValueError(
            f"invalid event stream header name {name!r}: must be 1 to 255 bytes"
        )

    typed = value if isinstance(value, Header) else Header(_infer_type(value), value)
    return bytes([len(raw_name)]) + raw_name + _encode_value(name, typed)


def _infer_type(value: HeaderValue) -> HeaderType:
    # bool before int, because bool is a subclass of int.
    if isinstance(value, bool):
        return HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE
    if isinstance(value, int):
        return HeaderType.INTEGER if -(2**31) <= value < 2**31 else HeaderType.LONG
    if isinstance(value, bytes):
        return HeaderType.BYTE_ARRAY
    if isinstance(value, str):
        return HeaderType.STRING
    if isinstance(value, datetime):
        return HeaderType.TIMESTAMP
    return HeaderType.UUID


def _encode_value(name: str, header: Header) -> bytes:
    header_type, value = header.type, header.value
    type_byte = bytes([header_type])
    if header_type in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        if value is not (header_type is HeaderType.BOOL_TRUE):
            raise ValueError(f"header {name!r}: {header_type.name} needs {value!r}")
        return type_byte

    if header_type is HeaderType.TIMESTAMP:
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"header {name!r}: a timestamp must be an aware datetime")
        milliseconds = (value - _EPOCH) // timedelta(milliseconds=1)
        return type_byte + _INT_FORMATS[header_type].pack(milliseconds)

    if header_type in _INT_FORMATS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"header {name!r}: {header_type.name} needs an int")
        try:
            return type_byte + _INT_FORMATS[header_type].pack(value)
        except struct.error:
            raise ValueError(
                f"header {name!r}: {value} does not fit in {header_type.name}"
            ) from None

    if header_type is HeaderType.UUID:
        if not isinstance(value, uuid.UUID):
            raise ValueError(f"header {name!r}: UUID needs a uuid.UUID")
        return type_byte + value.bytes

    if header_type is HeaderType.STRING and isinstance(value, str):
        raw = value.encode("utf-8")
    elif header_type is HeaderType.BYTE_ARRAY and isinstance(value, bytes):
        raw = value
    else:
        raise ValueError(f"header {name!r}: {header_type.name} needs str or bytes")
    if len(raw) > 0xFFFF:
        raise ValueError(f"header {name!r}: value is longer than 65535 bytes")
    return type_byte + _LENGTH_PREFIX.pack(len(raw)) + raw
