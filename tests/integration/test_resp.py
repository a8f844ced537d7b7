"""The pipelined Redis client against the real Redis and loopback fakes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
import redis.exceptions

from llmgw.limits.resp import NotExecuted, PipelinedRedis, encode_command
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
async def client() -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis.from_url(REDIS_URL, command_timeout=2.0)
    yield client
    await client.aclose()


def test_encode_command_types() -> None:
    encoded = encode_command(["SET", b"k", 12, 0.5])
    assert encoded == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n0.5\r\n"


async def test_commands_use_the_url_database(
    client: PipelinedRedis, redis_client: redis.asyncio.Redis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}plain"
    assert await client.execute(["SET", key, "value"]) == "OK"
    assert await redis_client.get(key) == "value"
    assert await client.execute(["GET", key]) == "value"


async def test_concurrent_replies_match_callers(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}counter"
    replies = await asyncio.gather(
        *(client.execute(["ECHO", f"call-{i}"]) for i in range(500)),
        *(client.execute(["INCR", key]) for _ in range(500)),
    )
    assert replies[:500] == [f"call-{i}" for i in range(500)]
    assert sorted(replies[500:]) == list(range(1, 501))


async def test_error_reply_raises_response_error(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}string"
    await client.execute(["SET", key, "x"])
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await client.execute(["HGET", key, "field"])
    # The connection stays usable after an error reply.
    assert await client.execute(["GET", key]) == "x"


async def test_script_loads_when_missing(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    # A source no other test uses, so Redis has never cached its SHA.
    source = f"-- {secrets.token_hex(8)}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    script = client.register_script(source)
    key = f"{redis_prefix}scripted"
    assert await script(keys=[key], args=[5]) == 5
    assert await script(keys=[key], args=[2]) == 7


async def test_cancelled_caller_keeps_replies_aligned(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    slow = asyncio.ensure_future(client.execute(["ECHO", "cancelled"]))
    await asyncio.sleep(0)
    slow.cancel()
    assert await client.execute(["ECHO", "next"]) == "next"


async def test_unreachable_redis_raises_connection_error() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()

    client = PipelinedRedis(port=port, connect_timeout=1.0)
    with pytest.raises(redis.exceptions.ConnectionError, match="unreachable"):
        await client.execute(["PING"])
    await client.aclose()


async def test_silent_server_times_out_then_reconnects() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis(port=port, command_timeout=0.2)
    try:
        with pytest.raises(redis.exceptions.TimeoutError, match="no reply"):
            await client.execute(["PING"])
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.execute(["PING"])
        # The timed-out connection was dropped, so the second call opened
        # a new one instead of reading the first call's late reply.
        assert len(connections) == 2
    finally:
        await client.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_dropped_connection_fails_waiting_callers() -> None:
    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis(port=port, command_timeout=2.0)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
            await client.execute(["PING"])
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_dropped_connection_tells_unsent_commands(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    # A command written before the drop may have run. One still waiting for
    # its deferred write did not run, and its error tells so, because a
    # caller may then send it again.
    blocking = ["BLPOP", f"{redis_prefix}empty", 0]
    written = asyncio.ensure_future(client.execute(blocking))
    await asyncio.sleep(0.05)
    deferred = asyncio.ensure_future(client.execute(["PING"], urgent=False))
    await asyncio.sleep(0)
    connection = client._connection
    assert connection is not None
    connection.close()

    with pytest.raises(redis.exceptions.ConnectionError) as sent_error:
        await written
    with pytest.raises(NotExecuted):
        await deferred
    assert not isinstance(sent_error.value, NotExecuted)


async def test_unreachable_redis_is_not_executed() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()

    client = PipelinedRedis(port=port, connect_timeout=1.0)
    with pytest.raises(NotExecuted):
        await client.execute(["PING"])
    await client.aclose()


async def test_group_is_sent_back_to_back(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}transaction"
    group = client.execute_many(
        [["MULTI"], ["INCR", key], ["INCR", key], ["EXEC"]], urgent=False
    )
    others = [client.execute(["ECHO", str(i)]) for i in range(20)]
    replies, *echoes = await asyncio.gather(group, *others)
    assert replies == ["OK", "QUEUED", "QUEUED", [1, 2]]
    assert echoes == [str(i) for i in range(20)]


async def test_group_raises_first_error_reply(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}mixed"
    await client.execute(["SET", key, "x"])
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await client.execute_many([["GET", key], ["HGET", key, "f"], ["GET", key]])
    assert await client.execute(["GET", key]) == "x"


async def test_deferred_command_goes_out_alone(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    key = f"{redis_prefix}deferred"
    assert await client.execute(["SET", key, "late"], urgent=False) == "OK"
    assert await client.execute(["GET", key]) == "late"
