"""A real Redis Cluster of redis-server processes on 127.0.0.1, for tests.

Each node listens on a free port whose cluster bus port (10000 higher) is
free too. The primaries split the 16384 slots evenly, all nodes meet, and
replicas follow their primaries. The cluster is ready once every node
reports ``cluster_state:ok`` and lists every primary and replica in its
slot map.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SLOTS = 16384
BUS_PORT_OFFSET = 10000
READY_SECONDS = 20.0


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_node_port() -> int:
    """Return a free port below 55536 whose bus port is free as well."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 65536 - BUS_PORT_OFFSET and _port_free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("found no free port pair for a Redis Cluster node")


@dataclass
class RedisClusterNodes:
    """The nodes of a running test cluster; ``stop`` ends them all."""

    folder: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL of the first node, as a user would configure it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self, index: int) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.ports[index], decode_responses=True
        )

    def node_of_slot(self, slot: int) -> int:
        """Return the index of the node that serves ``slot``."""
        with self.client(0) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.ports.index(int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def node_id(self, index: int) -> str:
        with self.client(index) as client:
            return str(client.execute_command("CLUSTER MYID"))

    def log(self, index: int) -> str:
        path = self.folder / str(self.ports[index]) / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self, index: int) -> None:
        process = self.processes[index]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_cluster(folder: Path, nodes: int = 3, replicas: int = 0) -> RedisClusterNodes:
    """Start ``nodes`` primaries and form a cluster of them.

    With ``replicas``, each primary gets that many replicas, which come after
    the primaries in ``ports``.
    """
    server = redis_server_path()
    if server is None:
        raise RuntimeError("redis-server is not installed (Debian package redis)")
    cluster = RedisClusterNodes(folder)
    try:
        for _ in range(nodes * (1 + replicas)):
            port = _free_node_port()
            node_folder = folder / str(port)
            node_folder.mkdir(parents=True)
            args = [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node_folder / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
                "--dir",
                str(node_folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(node_folder / "redis.log"),
            ]
            cluster.ports.append(port)
            cluster.processes.append(subprocess.Popen(args))
        _wait_for_ping(cluster)
        _form(cluster, nodes)
        _wait_until_ready(cluster, nodes, replicas)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_ping(cluster: RedisClusterNodes) -> None:
    deadline = time.monotonic() + READY_SECONDS
    for index in range(len(cluster.ports)):
        while True:
            try:
                with cluster.client(index) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Redis node {cluster.ports[index]} did not start:\n"
                        + cluster.log(index)
                    ) from None
                time.sleep(0.05)


def _form(cluster: RedisClusterNodes, primaries: int) -> None:
    for index in range(len(cluster.ports)):
        with cluster.client(index) as client:
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
            if index < primaries:
                start = SLOTS * index // primaries
                end = SLOTS * (index + 1) // primaries - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", start, end)
    with cluster.client(0) as first:
        for port in cluster.ports[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", port)
    primary_ids = [cluster.node_id(index) for index in range(primaries)]
    deadline = time.monotonic() + READY_SECONDS
    for index in range(primaries, len(cluster.ports)):
        primary_id = primary_ids[index % primaries]
        with cluster.client(index) as replica:
            # A replica can follow a primary only once the meeting has
            # reached it, so it is asked until it accepts.
            while True:
                try:
                    replica.execute_command("CLUSTER REPLICATE", primary_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def _wait_until_ready(
    cluster: RedisClusterNodes, primaries: int, replicas: int
) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        indexes = range(len(cluster.ports))
        if all(_node_ready(cluster, i, primaries, replicas) for i in indexes):
            return
        time.sleep(0.05)
    raise RuntimeError("the Redis Cluster did not become ready:\n" + cluster.log(0))


def _node_ready(
    cluster: RedisClusterNodes, index: int, primaries: int, replicas: int
) -> bool:
    """Return whether a node is ok and lists every primary with its replicas."""
    with cluster.client(index) as client:
        info = client.execute_command("CLUSTER INFO")
        ranges = client.execute_command("CLUSTER SLOTS")
    state = info.get("cluster_state") if isinstance(info, dict) else None
    if state is None:
        state = "ok" if "cluster_state:ok" in str(info) else "fail"
    # Each CLUSTER SLOTS entry is start, end, the primary, then its replicas.
    complete = all(len(entry) - 3 == replicas for entry in ranges)
    return state == "ok" and len(ranges) == primaries and complete
