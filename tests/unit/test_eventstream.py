"""The AWS event-stream codec: framing, CRCs, header types, limits."""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmgw.protocols.eventstream import (
    MAX_HEADERS_BYTES,
    MAX_PAYLOAD_BYTES,
    EventStreamDecoder,
    EventStreamError,
    EventStreamMessage,
    Header,
    HeaderType,
    HeaderValue,
    decode_all,
    encode_event,
    encode_exception,
    encode_message,
)
from tests.unit.translation_helpers import fixture_dir

RECORDING = "pydantic-bedrock-converse-stream-nova-micro.eventstream.bin"

EVERY_TYPE: dict[str, HeaderValue | Header] = {
    "true": True,
    "false": False,
    "byte": Header(HeaderType.BYTE, -7),
    "short": Header(HeaderType.SHORT, 30_000),
    "integer": -(2**31),
    "long": 2**40,
    "bytes": b"\x00\xffraw",
    "string": "héllo",
    "timestamp": datetime(2024, 9, 26, 12, 30, 15, 123000, tzinfo=UTC),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def recording() -> bytes:
    return (fixture_dir("bedrock") / RECORDING).read_bytes()


def decode_pieces(*pieces: bytes) -> list[EventStreamMessage]:
    decoder = EventStreamDecoder()
    messages: list[EventStreamMessage] = []
    for piece in pieces:
        messages += decoder.feed(piece)
    decoder.close()
    return messages


def test_recording_decodes_33_messages() -> None:
    messages = decode_all(recording())
    assert len(messages) == 33
    assert [m.message_type for m in messages] == ["event"] * 33
    assert all(m.content_type == "application/json" for m in messages)

    event_types = [m.event_type for m in messages]
    assert event_types[0] == "messageStart"
    assert event_types[1:30] == ["contentBlockDelta"] * 29
    assert event_types[30:] == ["contentBlockStop", "messageStop", "metadata"]


def test_recording_payloads_are_json_with_padding() -> None:
    for message in decode_all(recording()):
        payload = json.loads(message.payload)
        assert isinstance(payload, dict)
        assert isinstance(payload["p"], str)


def test_recording_split_at_every_offset() -> None:
    data = recording()
    whole = decode_all(data)
    for offset in range(len(data) + 1):
        assert decode_pieces(data[:offset], data[offset:]) == whole, offset


def test_recording_fed_bytewise() -> None:
    data = recording()
    assert decode_pieces(*(data[i : i + 1] for i in range(len(data)))) == decode_all(
        data
    )


def test_recording_reencodes_byte_for_byte() -> None:
    data = recording()
    rebuilt = b"".join(
        encode_message(
            {
                name: Header(message.header_types[name], value)
                for name, value in message.headers.items()
            },
            message.payload,
        )
        for message in decode_all(data)
    )
    assert rebuilt == data


def test_recording_any_corrupted_byte_fails_crc() -> None:
    data = recording()
    for offset in range(len(data)):
        corrupted = bytearray(data)
        corrupted[offset] ^= 0x01
        with pytest.raises(EventStreamError, match="CRC32"):
            decode_all(bytes(corrupted))


def test_corrupted_payload_keeps_earlier_messages() -> None:
    first = encode_event("messageStart", b'{"role":"assistant"}')
    second = bytearray(encode_event("contentBlockDelta", b'{"delta":{"text":"x"}}'))
    second[-6] ^= 0xFF
    decoder = EventStreamDecoder()
    assert len(decoder.feed(first)) == 1
    with pytest.raises(EventStreamError, match="message CRC32 in the message at byte"):
        decoder.feed(bytes(second))


def test_decoder_unusable_after_error() -> None:
    data = bytearray(encode_event("messageStart", b"{}"))
    data[9] ^= 0x01
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError):
        decoder.feed(bytes(data))
    with pytest.raises(EventStreamError):
        decoder.feed(encode_event("messageStart", b"{}"))


def test_every_header_type_round_trips() -> None:
    message = encode_message(EVERY_TYPE, b"payload")
    (decoded,) = decode_all(message)
    assert decoded.payload == b"payload"
    assert decoded.headers == {
        name: value.value if isinstance(value, Header) else value
        for name, value in EVERY_TYPE.items()
    }
    assert decoded.header_types == {
        "true": HeaderType.BOOL_TRUE,
        "false": HeaderType.BOOL_FALSE,
        "byte": HeaderType.BYTE,
        "short": HeaderType.SHORT,
        "integer": HeaderType.INTEGER,
        "long": HeaderType.LONG,
        "bytes": HeaderType.BYTE_ARRAY,
        "string": HeaderType.STRING,
        "timestamp": HeaderType.TIMESTAMP,
        "uuid": HeaderType.UUID,
    }


def test_every_header_type_split_at_every_offset() -> None:
    data = encode_message(EVERY_TYPE, b"x" * 40) * 2
    whole = decode_all(data)
    assert len(whole) == 2
    for offset in range(len(data) + 1):
        assert decode_pieces(data[:offset], data[offset:]) == whole


def test_header_wire_layout() -> None:
    # A string header: name length, name, type 7, u16 length, value.
    message = encode_message({":event-type": "x"})
    headers = message[12:-4]
    assert headers == b"\x0b:event-type\x07\x00\x01x"
    total, headers_length, prelude_crc = struct.unpack(">III", message[:12])
    assert total == len(message)
    assert headers_length == len(headers)
    assert prelude_crc == zlib.crc32(message[:8])
    assert struct.unpack(">I", message[-4:])[0] == zlib.crc32(message[:-4])


def test_exception_message_properties() -> None:
    (message,) = decode_all(
        encode_exception("throttlingException", b'{"message":"slow down"}')
    )
    assert message.message_type == "exception"
    assert message.exception_type == "throttlingException"
    assert message.event_type is None


def test_error_message_properties() -> None:
    data = encode_message(
        {
            ":message-type": "error",
            ":error-code": "InternalFailure",
            ":error-message": "boom",
        }
    )
    (message,) = decode_all(data)
    assert message.error_code == "InternalFailure"
    assert message.error_message == "boom"
    assert message.payload == b""


def test_empty_stream_decodes_nothing() -> None:
    assert decode_all(b"") == []


def test_close_inside_message_fails() -> None:
    data = encode_event("messageStart", b"{}")
    decoder = EventStreamDecoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered_bytes == len(data) - 1
    with pytest.raises(EventStreamError, match="ended inside a message"):
        decoder.close()


def test_oversized_payload_rejected_from_prelude() -> None:
    decoder = EventStreamDecoder(max_payload_bytes=10)
    data = encode_event("messageStart", b"x" * 11)
    # Only the prelude is needed to reject the message.
    with pytest.raises(EventStreamError, match=r"payload is .* maximum of 10"):
        decoder.feed(data[:12])


def test_oversized_headers_rejected() -> None:
    decoder = EventStreamDecoder(max_headers_bytes=8)
    with pytest.raises(EventStreamError, match=r"headers are .* maximum of 8"):
        decoder.feed(encode_event("messageStart", b"{}"))


def test_default_limits() -> None:
    assert MAX_HEADERS_BYTES == 128 * 1024
    assert MAX_PAYLOAD_BYTES == 16 * 1024 * 1024


def test_length_too_short_for_headers() -> None:
    prelude = struct.pack(">II", 16, 10)
    data = prelude + struct.pack(">I", zlib.crc32(prelude)) + b"\x00" * 4
    with pytest.raises(EventStreamError, match="too short"):
        decode_all(data)


def with_headers(headers: bytes) -> bytes:
    """Frame raw header bytes with valid lengths and CRCs."""
    prelude = struct.pack(">II", 16 + len(headers), len(headers))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (b"\x01a\x0a", "invalid type 10"),
        (b"\x00\x00", "empty name"),
        (b"\x01a\x07\x00\x05ab", "needs 5 bytes"),
        (b"\x01a\x04\x00", "needs 4 bytes"),
        (b"\x01a\x07\x00\x01\xff", "invalid UTF-8"),
        (b"\x01a\x00\x01a\x01", "duplicate event stream header 'a'"),
    ],
    ids=["bad-type", "empty-name", "short-string", "short-int", "utf8", "duplicate"],
)
def test_malformed_headers(headers: bytes, error: str) -> None:
    with pytest.raises(EventStreamError, match=error):
        decode_all(with_headers(headers))


@pytest.mark.parametrize(
    "header",
    [
        Header(HeaderType.BYTE, 200),
        Header(HeaderType.SHORT, "x"),
        Header(HeaderType.BOOL_TRUE, False),
        Header(HeaderType.TIMESTAMP, datetime(2024, 1, 1)),
        Header(HeaderType.UUID, "not-a-uuid"),
        Header(HeaderType.STRING, b"bytes"),
    ],
    ids=["byte-range", "short-type", "bool-value", "naive-time", "uuid", "string"],
)
def test_encoder_rejects_bad_headers(header: Header) -> None:
    with pytest.raises(ValueError):
        encode_message({"h": header})


def test_encoder_rejects_long_name() -> None:
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        encode_message({"n" * 256: "x"})


def test_fixture_file_is_the_recording() -> None:
    path: Path = fixture_dir("bedrock") / RECORDING
    assert path.stat().st_size == 6616
