"""The request path's Redis client on Redis Cluster: one pipelined connection per node.

Every command goes to the primary that serves its key's slot, over that
node's ``PipelinedRedis``, so commands to one node still share writes. The
slot map comes from ``CLUSTER SLOTS`` on the first command and again after
a redirect or a lost connection.

Redirects follow the cluster specification. ``MOVED`` means the slot now
lives on another node: the map is corrected at once, read again in the
background, and the command is sent to the new node. ``ASK`` means the slot
is being migrated and this key already moved: the command goes to the
target node once, after ``ASKING``, and the map is left alone. At most
``MAX_REDIRECTS`` redirects are followed per command.

A command whose connection fails is not sent again, because it may have run
before the connection dropped, and a script run twice would charge a
request twice. The caller gets the ``ConnectionError``, and the next
command finds the map read again, as after a failover.

``TRYAGAIN`` means a slot is being migrated and only some of a script's
keys have moved: nothing ran, so the command is sent again after
``TRYAGAIN_DELAY_SECONDS``, for at most ``TRYAGAIN_SECONDS``. After that, and
for ``CLUSTERDOWN``, the caller gets a ``ConnectionError``, so the gateway
applies ``redis.on_unavailable``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import redis.exceptions
import structlog
from redis.connection import parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from llmgw.limits.resp import Arg, NotExecuted, PipelinedRedis, Script

log = structlog.get_logger()

MAX_REDIRECTS = 5
TRYAGAIN_DELAY_SECONDS = 0.02
TRYAGAIN_SECONDS = 1.0

# Commands whose keys are not their first argument. EVAL and EVALSHA take
# the number of keys, then the keys.
_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"})


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    return str(arg).encode()


def command_slot(args: Sequence[Arg]) -> int | None:
    """Return the slot of a command's first key, or None for a keyless command."""
    name = str(args[0]).upper()
    if name in _SCRIPT_COMMANDS:
        if len(args) < 4 or int(str(args[2])) == 0:
            return None
        return key_slot(_encode(args[3]))
    if len(args) < 2:
        return None
    return key_slot(_encode(args[1]))


def _redirect(exc: redis.exceptions.ResponseError) -> tuple[str, int, str] | None:
    """Split ``MOVED <slot> <host>:<port>`` or ``ASK ...``; None for other errors.

    The address is returned as the slot map writes it: Redis sends an IPv6
    host without brackets.
    """
    parts = str(exc).split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    return parts[0], int(parts[1]), _join_address(*_split_address(parts[2]))


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _join_address(host: str, port: int | str) -> str:
    """Return ``host:port``, with an IPv6 host in brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClusterPipelinedRedis:
    """A client that sends each command to the node of its slot.

    It raises what ``PipelinedRedis`` raises.

    ``seeds`` are the ``host:port`` addresses asked for the slot map,
    together with the nodes learnt from the map.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
    ) -> None:
        if not seeds:
            raise ValueError("ClusterPipelinedRedis needs at least one seed address")
        self._seeds = list(seeds)
        self._username = username
        self._password = password
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._nodes: dict[str, PipelinedRedis] = {}
        # The primary's address for each slot; empty until the first read.
        self._slots: list[str | None] = []
        self._refreshing: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        cluster_nodes: Sequence[tuple[str, int]] = (),
        *,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
    ) -> ClusterPipelinedRedis:
        """Create a client seeded with the node a ``redis://`` URL names.

        ``cluster_nodes`` are (host, port) pairs of more nodes to try.
        """
        # NOTE: rediss:// was not tried on a cluster. Nodes are reached at the
        # addresses CLUSTER SLOTS returns, so their certificates must name them.
        options = parse_url(url)  # type: ignore[no-untyped-call]
        if options.get("path") is not None:
            raise ValueError("Redis Cluster needs a redis:// or rediss:// URL")
        ssl_context = None
        if options.get("connection_class") is redis.connection.SSLConnection:
            ssl_context = ssl.create_default_context()
        host = options.get("host", "127.0.0.1")
        port = int(options.get("port", 6379))
        seeds = [_join_address(host, port)]
        seeds += [_join_address(node, node_port) for node, node_port in cluster_nodes]
        return cls(
            seeds,
            username=options.get("username"),
            password=options.get("password"),
            ssl_context=ssl_context,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    async def execute(self, args: Sequence[Arg], *, urgent: bool = True) -> Any:
        """Send one command to the node of its key's slot and return its reply."""
        slot = command_slot(args)
        node = await self._node_for(slot)
        asking = False
        redirects = 0
        waited = 0.0
        while redirects <= MAX_REDIRECTS:
            try:
                if asking:
                    replies = await node.execute_many([["ASKING"], args], urgent=urgent)
                    return replies[1]
                return await node.execute(args, urgent=urgent)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                self._refresh_soon()
                raise
            except redis.exceptions.ResponseError as exc:
                message = str(exc)
                if message.startswith("TRYAGAIN") and waited < TRYAGAIN_SECONDS:
                    await asyncio.sleep(TRYAGAIN_DELAY_SECONDS)
                    waited += TRYAGAIN_DELAY_SECONDS
                    continue
                redirect = _redirect(exc)
                if redirect is None:
                    if message.startswith(("CLUSTERDOWN", "TRYAGAIN")):
                        raise NotExecuted(f"Redis Cluster cannot serve: {exc}") from exc
                    raise
                redirects += 1
                kind, moved_slot, address = redirect
                if kind == "MOVED":
                    if self._slots:
                        self._slots[moved_slot] = address
                    self._refresh_soon()
                node = self._node(address)
                asking = kind == "ASK"
        raise redis.exceptions.ConnectionError(
            f"Redis Cluster redirected a command more than {MAX_REDIRECTS} times"
        )

    async def prepare(self) -> None:
        """Read the slot map now, unless it is read already."""
        if not self._slots:
            await asyncio.shield(self._start_refresh())

    async def _node_for(self, slot: int | None) -> PipelinedRedis:
        if not self._slots:
            # Concurrent first commands share one read of the map.
            await asyncio.shield(self._start_refresh())
        address = self._slots[slot if slot is not None else 0]
        if address is None:
            raise NotExecuted(f"Redis Cluster has no node serving slot {slot}")
        return self._node(address)

    def _node(self, address: str) -> PipelinedRedis:
        node = self._nodes.get(address)
        if node is None:
            host, port = _split_address(address)
            node = PipelinedRedis(
                host=host,
                port=port,
                username=self._username,
                password=self._password,
                ssl_context=self._ssl,
                connect_timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
            self._nodes[address] = node
        return node

    def _start_refresh(self) -> asyncio.Task[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
            self._refreshing.add_done_callback(_retrieve_error)
        return self._refreshing

    def _refresh_soon(self) -> None:
        """Read the map again in the background; on failure the old one stays."""
        self._start_refresh()

    async def _refresh(self) -> None:
        """Read the slot map from the first node that replies.

        Every known node is asked at once, so a node that hangs delays
        nothing while another replies.
        """
        candidates = list(dict.fromkeys([*self._seeds, *self._nodes]))
        addresses = {
            asyncio.ensure_future(
                self._node(address).execute(["CLUSTER", "SLOTS"])
            ): address
            for address in candidates
        }
        error: BaseException | None = None
        pending = set(addresses)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, return_when=asyncio.FIRST_COMPLETED
                )
                for future in done:
                    error = future.exception()
                    if error is None:
                        host = _split_address(addresses[future])[0]
                        self._slots = _slot_map(future.result(), default_host=host)
                        return
        finally:
            for future in pending:
                future.cancel()
        raise NotExecuted(f"no Redis Cluster node replied to CLUSTER SLOTS: {error}")

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
        self._slots = []


def _slot_map(reply: list[Any], *, default_host: str) -> list[str | None]:
    """Turn a ``CLUSTER SLOTS`` reply into the primary's address for each slot.

    A node reported with an empty host is the node that sent the reply.
    """
    slots: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = str(primary[0]) or default_host
        address = _join_address(host, primary[1])
        for slot in range(start, end + 1):
            slots[slot] = address
    return slots


def _retrieve_error(task: asyncio.Task[None]) -> None:
    # A background read that failed is retried after the next redirect or
    # lost connection, so its error is only logged.
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("redis_cluster_slot_map_read_failed", error=str(error))
