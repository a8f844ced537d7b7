"""The SSE parser: read boundaries, line endings, comments, raw bytes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmgw.protocols.sse import SSEEvent, SSEParser, format_event
from tests.conftest import FIXTURES_DIR

OPENAI_STREAMS = sorted((FIXTURES_DIR / "openai").glob("*.sse"))
ANTHROPIC_STREAMS = sorted((FIXTURES_DIR / "anthropic").glob("*.sse"))
GEMINI_CRLF_STREAM = (
    FIXTURES_DIR / "gemini" / "pydantic-gemini-stream-generate-content-crlf.sse"
)
ALL_STREAMS = [*OPENAI_STREAMS, *ANTHROPIC_STREAMS, GEMINI_CRLF_STREAM]

# Splitting a stream at every offset parses it once per byte, which is
# quadratic. Above this size only offsets near line ends and non-ASCII bytes,
# plus every 61st offset, are tried.
EVERY_OFFSET_MAX_BYTES = 16 * 1024


def parse(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.flush()


def parse_bytewise(data: bytes) -> list[SSEEvent]:
    return parse(*(data[i : i + 1] for i in range(len(data))))


def split_offsets(data: bytes) -> list[int]:
    if len(data) <= EVERY_OFFSET_MAX_BYTES:
        return list(range(len(data) + 1))

    offsets = set(range(0, len(data) + 1, 61))
    for index, byte in enumerate(data):
        if byte in b"\r\n" or byte >= 0x80:
            offsets.update(range(max(0, index - 2), min(len(data), index + 3) + 1))
    return sorted(offsets)


def stream_id(path: Path) -> str:
    return path.stem


def to_crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def to_cr(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r")


def data_fields(events: list[SSEEvent]) -> list[tuple[str | None, str]]:
    return [(event.event, event.data) for event in events if event.has_data]


@pytest.mark.parametrize("path", ALL_STREAMS, ids=stream_id)
def test_fixture_raw_bytes_rebuild_stream(path: Path) -> None:
    data = path.read_bytes()
    events = parse(data)
    assert b"".join(event.raw for event in events) == data
    assert all(event.has_data for event in events)


@pytest.mark.parametrize("path", ALL_STREAMS, ids=stream_id)
@pytest.mark.parametrize("variant", [None, to_crlf], ids=["as-recorded", "crlf"])
def test_fixture_split_anywhere_matches_whole(path: Path, variant: object) -> None:
    data = path.read_bytes()
    if variant is to_crlf:
        data = to_crlf(data)
    whole = parse(data)

    for offset in split_offsets(data):
        assert parse(data[:offset], data[offset:]) == whole, f"split at {offset}"


@pytest.mark.parametrize("path", ALL_STREAMS, ids=stream_id)
@pytest.mark.parametrize(
    "variant", [None, to_crlf, to_cr], ids=["as-recorded", "crlf", "cr"]
)
def test_fixture_one_byte_at_a_time(path: Path, variant: object) -> None:
    data = path.read_bytes()
    if variant is to_crlf:
        data = to_crlf(data)
    elif variant is to_cr:
        data = to_cr(data)

    events = parse_bytewise(data)
    assert events == parse(data)
    assert b"".join(event.raw for event in events) == data


@pytest.mark.parametrize("path", [*OPENAI_STREAMS, *ANTHROPIC_STREAMS], ids=stream_id)
@pytest.mark.parametrize("variant", [to_crlf, to_cr], ids=["crlf", "cr"])
def test_fixture_line_endings_give_same_fields(path: Path, variant: object) -> None:
    data = path.read_bytes()
    converted = to_crlf(data) if variant is to_crlf else to_cr(data)
    assert data_fields(parse(converted)) == data_fields(parse(data))


@pytest.mark.parametrize("path", OPENAI_STREAMS, ids=stream_id)
def test_openai_fixture_events(path: Path) -> None:
    events = parse(path.read_bytes())
    assert events[-1].data == "[DONE]"
    for event in events[:-1]:
        assert event.event is None
        assert json.loads(event.data)["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("path", ANTHROPIC_STREAMS, ids=stream_id)
def test_anthropic_fixture_last_event_needs_flush(path: Path) -> None:
    data = path.read_bytes()
    parser = SSEParser()
    fed = parser.feed(data)
    flushed = parser.flush()

    if data.endswith(b"\n\n"):
        assert flushed == []
        events = fed
    else:
        assert len(flushed) == 1
        events = [*fed, *flushed]
    assert events[-1].event == "message_stop"
    for event in events:
        assert event.event == json.loads(event.data)["type"]


def test_gemini_crlf_fixture() -> None:
    data = GEMINI_CRLF_STREAM.read_bytes()
    events = parse(data)
    assert len(events) == 3
    for event in events:
        assert event.raw.endswith(b"\r\n\r\n")
        assert "candidates" in json.loads(event.data)
    last = json.loads(events[-1].data)
    assert last["usageMetadata"]["promptTokenCount"] == 13
    assert last["usageMetadata"]["candidatesTokenCount"] == 8


def test_multibyte_character_split_between_reads() -> None:
    data = "data: 25 °C ✓ 🚀\n\n".encode()
    whole = parse(data)
    assert whole[0].data == "25 °C ✓ 🚀"
    for offset in range(len(data) + 1):
        assert parse(data[:offset], data[offset:]) == whole


def test_invalid_utf8_becomes_replacement_character() -> None:
    events = parse(b"data: a\xffb\n\n")
    assert events[0].data == "a\ufffdb"
    assert events[0].raw == b"data: a\xffb\n\n"


def test_cr_at_chunk_end_then_lf() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r\n\r") == []
    events = parser.feed(b"\ndata: y\r\n\r\n")
    assert [event.data for event in events] == ["x", "y"]
    assert events[0].raw == b"data: x\r\n\r\n"
    assert parser.flush() == []


def test_lone_cr_line_endings() -> None:
    events = parse(b"event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r")
    assert [(event.event, event.data) for event in events] == [
        ("a", "1\n2"),
        (None, "3"),
    ]


def test_mixed_line_endings() -> None:
    events = parse(b"data: 1\r\ndata: 2\rdata: 3\n\r\n")
    assert len(events) == 1
    assert events[0].data == "1\n2\n3"


def test_pending_cr_is_line_end_at_flush() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r\r") == []
    events = parser.flush()
    assert [(event.data, event.raw) for event in events] == [("x", b"data: x\r\r")]


def test_comment_only_block_keeps_bytes() -> None:
    events = parse(b": keep-alive\n\ndata: x\n\n")
    assert events[0] == SSEEvent(
        event=None, data="", id=None, raw=b": keep-alive\n\n", has_data=False
    )
    assert events[1].data == "x"
    assert events[1].has_data is True


def test_comment_line_kept_in_raw() -> None:
    events = parse(b"data: a\n: note\ndata: b\n\n")
    assert events[0].data == "a\nb"
    assert events[0].raw == b"data: a\n: note\ndata: b\n\n"


def test_stray_blank_lines_keep_bytes() -> None:
    events = parse(b"\n\ndata: x\n\n\n")
    assert [event.raw for event in events] == [b"\n", b"\n", b"data: x\n\n", b"\n"]
    assert [event.has_data for event in events] == [False, False, True, False]


def test_event_without_data_is_not_dispatchable() -> None:
    events = parse(b"event: ping\nid: 7\n\n")
    assert events[0].event == "ping"
    assert events[0].id == "7"
    assert events[0].has_data is False


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(b"data: x", "x", id="one-space"),
        pytest.param(b"data:x", "x", id="no-space"),
        pytest.param(b"data:  x", " x", id="two-spaces"),
        pytest.param(b"data:", "", id="empty-value"),
        pytest.param(b"data", "", id="no-colon"),
        pytest.param(b"data: a:b", "a:b", id="colon-in-value"),
        pytest.param(b"data: [DONE]", "[DONE]", id="done"),
    ],
)
def test_data_field_value(line: bytes, expected: str) -> None:
    events = parse(line + b"\n\n")
    assert events[0].data == expected
    assert events[0].has_data is True


def test_multiple_data_lines_join_with_lf() -> None:
    assert parse(b"data: a\ndata:\ndata: c\n\n")[0].data == "a\n\nc"


def test_event_and_id_fields() -> None:
    events = parse(b"event: delta\nid: 42\nretry: 1000\nfoo: bar\ndata: {}\n\n")
    assert events[0] == SSEEvent(
        event="delta",
        data="{}",
        id="42",
        raw=b"event: delta\nid: 42\nretry: 1000\nfoo: bar\ndata: {}\n\n",
    )


def test_id_with_nul_is_ignored() -> None:
    assert parse(b"id: a\x00b\ndata: x\n\n")[0].id is None


def test_fields_do_not_carry_over_between_events() -> None:
    events = parse(b"event: a\nid: 1\ndata: x\n\ndata: y\n\n")
    assert (events[1].event, events[1].id) == (None, None)


def test_bom_at_stream_start_is_skipped() -> None:
    data = b"\xef\xbb\xbfdata: x\n\n"
    for offset in range(len(data) + 1):
        events = parse(data[:offset], data[offset:])
        assert [(event.data, event.raw) for event in events] == [("x", data)]


def test_bom_alone_is_kept_at_flush() -> None:
    events = parse(b"\xef\xbb")
    assert [(event.raw, event.has_data) for event in events] == [(b"\xef\xbb", False)]


def test_bom_after_start_is_not_skipped() -> None:
    events = parse(b"data: x\n\n\xef\xbb\xbfdata: y\n\n")
    assert [event.has_data for event in events] == [True, False]


def test_flush_emits_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\nevent: end\ndata: b") == [
        SSEEvent(event=None, data="a", id=None, raw=b"data: a\n\n")
    ]
    assert parser.flush() == [
        SSEEvent(event="end", data="b", id=None, raw=b"event: end\ndata: b")
    ]


def test_flush_resets_parser() -> None:
    parser = SSEParser()
    parser.feed(b"data: a")
    parser.flush()
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n")[0].data == "b"
    assert parser.flush() == []


def test_empty_stream() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.flush() == []


def test_long_line_in_small_reads_is_linear() -> None:
    """A quadratic parser would rescan megabytes on each of 8192 reads."""
    payload = b"x" * (8 * 1024 * 1024)
    parser = SSEParser()
    started = time.perf_counter()
    assert parser.feed(b"data: ") == []
    for offset in range(0, len(payload), 1024):
        assert parser.feed(payload[offset : offset + 1024]) == []
    events = parser.feed(b"\n\n")
    elapsed = time.perf_counter() - started

    assert len(events[0].data) == len(payload)
    assert elapsed < 2.0


@pytest.mark.parametrize(
    ("data", "event", "expected"),
    [
        pytest.param('{"a":1}', None, b'data: {"a":1}\n\n', id="text"),
        pytest.param(b"[DONE]", None, b"data: [DONE]\n\n", id="bytes"),
        pytest.param("", None, b"data: \n\n", id="empty"),
        pytest.param(
            "a\nb\r\nc\rd", None, b"data: a\ndata: b\ndata: c\ndata: d\n\n", id="lines"
        ),
        pytest.param("{}", "ping", b"event: ping\ndata: {}\n\n", id="event"),
        pytest.param("°", None, "data: °\n\n".encode(), id="non-ascii"),
    ],
)
def test_format_event(data: str | bytes, event: str | None, expected: bytes) -> None:
    assert format_event(data, event) == expected


@pytest.mark.parametrize("data", ["x", " leading space", "a\nb", "", "a\r\nb"])
def test_format_event_round_trips(data: str) -> None:
    events = parse(format_event(data, event="message"))
    assert [(event.event, event.data) for event in events] == [
        ("message", data.replace("\r\n", "\n"))
    ]


def test_format_event_rejects_line_break_in_name() -> None:
    with pytest.raises(ValueError, match="contains a line break"):
        format_event("{}", event="a\ndata: injected")
