"""The log writer that batches lines per event-loop iteration."""

from __future__ import annotations

import asyncio
import io

from llmgw.observability.logging import BatchingWriter


class CountingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_writer_without_loop_writes_at_once() -> None:
    file = CountingFile()
    writer = BatchingWriter(file)
    writer.write_line("one\n")
    assert file.getvalue() == "one\n"
    writer.write_line("two\n")
    assert file.writes == ["one\n", "two\n"]


async def test_writer_batches_one_loop_iteration() -> None:
    file = CountingFile()
    writer = BatchingWriter(file)
    for i in range(100):
        writer.write_line(f"line {i}\n")
    assert file.writes == []

    await asyncio.sleep(0)
    assert len(file.writes) == 1
    assert file.getvalue() == "".join(f"line {i}\n" for i in range(100))


async def test_writer_splits_batches_at_line_ends() -> None:
    file = CountingFile()
    writer = BatchingWriter(file)
    line = "x" * 999 + "\n"
    for _ in range(10):
        writer.write_line(line)
    await asyncio.sleep(0)

    assert file.getvalue() == line * 10
    assert all(len(write) <= 4096 for write in file.writes)
    assert all(len(write) % len(line) == 0 for write in file.writes)
    assert len(file.writes) == 3


async def test_writer_survives_closed_file() -> None:
    file = CountingFile()
    writer = BatchingWriter(file)
    file.close()
    writer.write_line("lost\n")
    await asyncio.sleep(0)
    writer.write_line("also lost\n")
    await asyncio.sleep(0)
