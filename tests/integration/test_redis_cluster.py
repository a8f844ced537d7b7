"""The Redis back end on a real Redis Cluster of three nodes on loopback.

The back-end, gateway and admin suites already run against the session's
cluster. These tests cover what only a cluster has: tenants spread over
nodes, a tenant's slot migrated to another node while requests run, and a
node that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.exceptions
from redis.crc import key_slot

from llmgw.admin.records import Tenant
from llmgw.admin.redis_store import RedisStore
from llmgw.errors import BackendUnavailable
from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import (
    AdmitItem,
    Bucket,
    Charge,
    Commit,
    ConcurrencyLimit,
    Lease,
    PeriodLimit,
    Reserve,
    SettleItem,
)
from llmgw.limits.cluster import ClusterPipelinedRedis, _redirect, command_slot
from llmgw.limits.redis import (
    RedisBackend,
    bucket_key,
    concurrency_key,
    period_keys,
)
from tests.integration.conftest import delete_cluster_keys
from tests.integration.redis_cluster import RedisClusterNodes, start_cluster

pytestmark = pytest.mark.redis

# Refills so slowly that no test gets a request back within its run.
SLOW = 0.001


def tenant_on_node(cluster: RedisClusterNodes, index: int, stem: str) -> str:
    """Return a tenant name whose hash tag lands on node ``index``."""
    for number in range(10_000):
        name = f"{stem}{number}"
        if cluster.node_of_slot(tag_slot(name)) == index:
            return name
    raise LookupError(f"no tenant name for node {index}")


def tag_slot(tenant: str) -> int:
    return key_slot(f"{{t:{tenant}}}".encode())


def tenant_items(tenant: str, requests: int) -> list[AdmitItem]:
    """A request bucket, a concurrency limit and a token quota of one tenant."""
    tag = f"t:{tenant}"
    return [
        Charge(Bucket(f"tenant:{tenant}:requests", "requests", requests, SLOW, tag), 1),
        Lease(ConcurrencyLimit(f"concurrency:tenant:{tenant}", 1000, tag)),
        Reserve(
            PeriodLimit(
                f"quota:tenant:{tenant}:day:x",
                "tokens",
                10_000,
                time.time() + 3600,
                tag,
            ),
            10,
        ),
    ]


def settlement(items: list[AdmitItem]) -> list[SettleItem]:
    """Settle ``tenant_items``: no refund, the lease freed, the 10 tokens used."""
    settled: list[SettleItem] = []
    for item in items:
        if isinstance(item, Charge):
            settled.append(Charge(item.bucket, 0))
        elif isinstance(item, Lease):
            settled.append(item)
        else:
            settled.append(Commit(item.limit, item.amount))
    return settled


def record(request_id: str, tenant: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts=time.time(),
        route="/v1/chat/completions",
        key_name="ci",
        tenant=tenant,
        model="small",
        provider="mock",
        upstream_model="small",
    )


@pytest.fixture
def prefix() -> str:
    return f"llmgw-cluster-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def shared(
    redis_cluster: RedisClusterNodes, prefix: str
) -> AsyncIterator[RedisClusterNodes]:
    """The session's cluster; the keys under the test's prefix are deleted."""
    yield redis_cluster
    await delete_cluster_keys(redis_cluster.url, prefix)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster for this test alone, for tests that move slots or kill nodes."""
    cluster = start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


async def test_tenants_on_every_node(shared: RedisClusterNodes, prefix: str) -> None:
    limit = 10
    tenants = [tenant_on_node(shared, index, "acme") for index in range(3)]
    workers = [
        RedisBackend.from_url(shared.url, prefix=prefix, cluster=True) for _ in range(2)
    ]
    admitted: Counter[str] = Counter()
    try:

        async def attempt(number: int, tenant: str) -> None:
            worker = workers[number % 2]
            request_id = f"{tenant}-{number}"
            items = tenant_items(tenant, limit)
            admission = await worker.admit(items, request_id=request_id)
            if admission.admitted:
                admitted[tenant] += 1
                await worker.settle(
                    settlement(items), record(request_id, tenant), request_id=request_id
                )

        await asyncio.gather(
            *(attempt(n, tenant) for tenant in tenants for n in range(3 * limit))
        )
        entries = await workers[0].read_ledger("drainer", 100, block_ms=0)
        await workers[0].ack_ledger([entry.entry_id for entry in entries])
    finally:
        for worker in workers:
            await worker.close()

    assert admitted == {tenant: limit for tenant in tenants}
    assert Counter(entry.record.tenant for entry in entries) == admitted
    # Each tenant's limits live on the node its tag names, all in one slot.
    for index, tenant in enumerate(tenants):
        bucket = tenant_items(tenant, limit)[0]
        assert isinstance(bucket, Charge)
        with shared.client(index) as node:
            assert node.exists(bucket_key(prefix, bucket.bucket)) == 1
            assert float(node.hget(bucket_key(prefix, bucket.bucket), "tokens")) < 1


def migrate_slot(
    cluster: RedisClusterNodes,
    slot: int,
    source: int,
    target: int,
    *,
    pause: float = 0.0,
) -> None:
    """Move a slot as ``redis-cli --cluster reshard`` does, one key at a time."""
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with cluster.client(source) as src, cluster.client(target) as dst:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        for key in src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000):
            time.sleep(pause)
            src.execute_command(
                "MIGRATE", "127.0.0.1", cluster.ports[target], key, 0, 5000
            )
    # The target first, as the cluster specification requires: a source that
    # already points at a target still importing would bounce clients
    # between the two.
    others = [i for i in range(len(cluster.ports)) if i not in (source, target)]
    for index in [target, source, *others]:
        with cluster.client(index) as node:
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


async def test_limits_hold_while_slot_migrates(
    own_cluster: RedisClusterNodes, prefix: str
) -> None:
    # A tenant's slot moves to another node, key by key, while two workers
    # keep admitting: the clients follow ASK, TRYAGAIN and MOVED, and the
    # limit stays exact across the move.
    limit = 40
    tenant = tenant_on_node(own_cluster, 0, "moving")
    slot = tag_slot(tenant)
    workers = [
        RedisBackend.from_url(own_cluster.url, prefix=prefix, cluster=True)
        for _ in range(2)
    ]
    items = tenant_items(tenant, limit)
    outcomes: list[bool] = []
    try:
        # Create every key of the tenant on the source node first.
        first = await workers[0].admit(items, request_id="first")
        outcomes.append(first.admitted)

        async def attempt(number: int) -> None:
            await asyncio.sleep(number * 0.004)
            worker = workers[number % 2]
            admission = await worker.admit(items, request_id=f"r{number}")
            outcomes.append(admission.admitted)

        migration = asyncio.to_thread(migrate_slot, own_cluster, slot, 0, 1, pause=0.05)
        await asyncio.gather(migration, *(attempt(n) for n in range(3 * limit)))
        # After the move, both workers' next commands are redirected once.
        late = [await worker.admit(items, request_id="late") for worker in workers]
    finally:
        for worker in workers:
            await worker.close()

    assert outcomes.count(True) == limit
    assert not any(admission.admitted for admission in late)
    assert own_cluster.node_of_slot(slot) == 1
    quota = items[2]
    assert isinstance(quota, Reserve)
    counter, _ = period_keys(prefix, quota.limit)
    with own_cluster.client(1) as node:
        # Every admission reserved 10 tokens, rejected ones none.
        assert int(node.hget(counter, "reserved")) == 10 * limit
    with own_cluster.client(0) as node:
        assert node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0


async def test_new_keys_during_migration(
    own_cluster: RedisClusterNodes, prefix: str
) -> None:
    # While a slot migrates, the source node replies ASK for keys it lacks.
    # A script on one new key then runs on the target after ASKING. A script
    # on several new keys gets TRYAGAIN from the target until the slot is
    # handed over, and the client retries until then.
    tenant = tenant_on_node(own_cluster, 0, "asking")
    slot = tag_slot(tenant)
    source_id, target_id = own_cluster.node_id(0), own_cluster.node_id(2)
    with own_cluster.client(0) as src, own_cluster.client(2) as dst:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
    backend = RedisBackend.from_url(own_cluster.url, prefix=prefix, cluster=True)
    lease = Lease(ConcurrencyLimit(f"concurrency:tenant:{tenant}", 5, f"t:{tenant}"))
    items = tenant_items(tenant, 5)

    def hand_over() -> None:
        time.sleep(0.3)
        for index in (2, 0, 1):
            with own_cluster.client(index) as node:
                node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

    try:
        single = await backend.admit([lease], request_id="single")
        with own_cluster.client(2) as node:
            keys_during = node.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
        started = time.monotonic()
        several, _ = await asyncio.gather(
            backend.admit(items, request_id="several"), asyncio.to_thread(hand_over)
        )
        waited = time.monotonic() - started
    finally:
        await backend.close()

    lease_key = f"{prefix}{{t:{tenant}}}:concurrency:tenant:{tenant}"
    assert single.admitted
    assert keys_during == [lease_key]
    assert several.admitted
    assert waited >= 0.3
    with own_cluster.client(0) as node:
        assert node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
    with own_cluster.client(2) as node:
        # The bucket, the quota and its reservations beside the lease's key,
        # which both admissions share.
        assert node.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 4


async def test_dead_node_fails_fast(
    own_cluster: RedisClusterNodes, prefix: str
) -> None:
    doomed = tenant_on_node(own_cluster, 2, "doomed")
    backend = RedisBackend.from_url(
        own_cluster.url, prefix=prefix, cluster=True, socket_timeout=2.0
    )
    try:
        assert (await backend.admit(tenant_items(doomed, 5), request_id="a")).admitted
        own_cluster.kill(2)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await backend.admit(tenant_items(doomed, 5), request_id="b")
        unavailable_after = time.monotonic() - started

        # Once the others mark it failed, the cluster refuses every slot
        # (CLUSTERDOWN), which the back end reports as unavailable too.
        survivor = tenant_on_node(own_cluster, 0, "survivor")
        deadline = time.monotonic() + 30
        while "cluster_state:fail" not in _cluster_info(own_cluster, 0):
            assert time.monotonic() < deadline, "the cluster never marked the node"
            await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await backend.admit(tenant_items(survivor, 5), request_id="c")
        down_after = time.monotonic() - started
    finally:
        await backend.close()

    assert unavailable_after < 2.0
    assert down_after < 2.0


def _cluster_info(cluster: RedisClusterNodes, index: int) -> str:
    with cluster.client(index) as node:
        info = node.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return "\n".join(f"{name}:{value}" for name, value in info.items())
    return str(info)


async def test_slot_map_read_once(shared: RedisClusterNodes, prefix: str) -> None:
    client = ClusterPipelinedRedis.from_url(shared.url)
    reads = 0
    original = client._refresh

    async def counted() -> None:
        nonlocal reads
        reads += 1
        await original()

    client._refresh = counted  # type: ignore[method-assign]
    try:
        replies = await asyncio.gather(
            *(client.execute(["SET", f"{prefix}{{k:{n}}}", n]) for n in range(50))
        )
    finally:
        await client.aclose()
    assert replies == ["OK"] * 50
    assert reads == 1


def test_command_slot_of_scripts() -> None:
    key = "llmgw:{t:acme}:bucket:tenant:acme:requests"
    assert command_slot(["EVALSHA", "0" * 40, 1, key, "arg"]) == key_slot(key.encode())
    assert command_slot(["XADD", "llmgw:ledger", "*", "a", "b"]) == key_slot(
        b"llmgw:ledger"
    )
    assert command_slot(["EVALSHA", "0" * 40, 0]) is None
    assert command_slot(["PING"]) is None


async def test_ledger_node_down_frees_leases(
    own_cluster: RedisClusterNodes, prefix: str
) -> None:
    # The record's XADD fails on the ledger's node, yet the settlement script
    # on the tenant's node still frees the lease and the reservation.
    ledger_node = own_cluster.node_of_slot(key_slot(f"{prefix}ledger".encode()))
    tenant_node = (ledger_node + 1) % 3
    tenant = tenant_on_node(own_cluster, tenant_node, "apart")
    backend = RedisBackend.from_url(
        _node_url(own_cluster, tenant_node),
        prefix=prefix,
        cluster=True,
        socket_timeout=2.0,
    )
    items = tenant_items(tenant, 5)
    try:
        assert (await backend.admit(items, request_id="r1")).admitted
        own_cluster.kill(ledger_node)
        with pytest.raises(BackendUnavailable):
            await backend.settle(
                settlement(items), record("r1", tenant), request_id="r1"
            )
    finally:
        await backend.close()

    lease = items[1]
    quota = items[2]
    assert isinstance(lease, Lease)
    assert isinstance(quota, Reserve)
    counter, reservations = period_keys(prefix, quota.limit)
    with own_cluster.client(tenant_node) as node:
        assert node.zcard(concurrency_key(prefix, lease.limit)) == 0
        assert node.hget(counter, "reserved") == "0"
        assert node.hget(counter, "used") == "10"
        assert node.zcard(reservations) == 0


def _node_url(cluster: RedisClusterNodes, index: int) -> str:
    return f"redis://127.0.0.1:{cluster.ports[index]}/0"


async def test_cluster_nodes_used_when_url_node_down(
    shared: RedisClusterNodes, prefix: str
) -> None:
    # The configured node does not reply (nothing listens on its port), so
    # every client finds the cluster through the other nodes.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    others = [("127.0.0.1", port) for port in shared.ports]
    url = f"redis://127.0.0.1:{dead_port}/0"
    backend = RedisBackend.from_url(
        url, prefix=prefix, cluster=True, cluster_nodes=others
    )
    store = RedisStore.from_url(url, prefix=prefix, cluster=True, cluster_nodes=others)
    tenant = tenant_on_node(shared, 1, "seeded")
    items = tenant_items(tenant, 5)
    try:
        await store.open()
        await store.create_tenant(
            Tenant(tenant, created=time.time(), updated=time.time())
        )
        stored = await store.get_tenant(tenant)
        admission = await backend.admit(items, request_id="r1")
        await backend.settle(settlement(items), record("r1", tenant), request_id="r1")
        entries = await backend.read_ledger("drainer", 10, block_ms=0)
    finally:
        await store.close()
        await backend.close()

    assert stored is not None
    assert admission.admitted
    assert [entry.record.request_id for entry in entries] == ["r1"]


async def test_standalone_config_on_cluster_node(
    shared: RedisClusterNodes, prefix: str
) -> None:
    # cluster: false pointed at a cluster node names the setting to change,
    # at start-up and on each request if Redis became a cluster since.
    tenant = tenant_on_node(shared, 1, "misconfigured")
    backend = RedisBackend.from_url(_node_url(shared, 0), prefix=prefix)
    try:
        with pytest.raises(ValueError, match=r"set redis\.cluster: true"):
            await backend.prepare()
        with pytest.raises(BackendUnavailable, match=r"set redis\.cluster: true"):
            await backend.admit(tenant_items(tenant, 5), request_id="r1")
    finally:
        await backend.close()


async def test_failover_to_replica(tmp_path: Path, prefix: str) -> None:
    # The primary of a tenant's slot dies and its replica takes over. A
    # settlement in between waits for the replica, requests meanwhile get
    # BackendUnavailable, and once the replica is promoted the same clients
    # admit again, on the state it replicated.
    cluster = start_cluster(tmp_path / "cluster", nodes=3, replicas=1)
    tenant = tenant_on_node(cluster, 0, "failover")
    backend = RedisBackend.from_url(
        _node_url(cluster, 1),
        prefix=prefix,
        cluster=True,
        cluster_nodes=[("127.0.0.1", port) for port in cluster.ports],
        socket_timeout=2.0,
    )
    items = tenant_items(tenant, 10)
    lease = items[1]
    assert isinstance(lease, Lease)
    lease_key = concurrency_key(prefix, lease.limit)
    outcomes: list[bool] = []
    try:
        for number in range(4):
            outcomes.append(
                (await backend.admit(items, request_id=f"before{number}")).admitted
            )
        with cluster.client(0) as primary:
            # The replica must hold the writes before its primary dies.
            primary.execute_command("WAIT", 1, 2000)
        cluster.kill(0)
        # A settlement sent while the slot has no primary is sent again
        # until the replica takes over, so it frees its lease.
        with contextlib.suppress(BackendUnavailable):
            await backend.settle(
                settlement(items), record("before0", tenant), request_id="before0"
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                admission = await backend.admit(items, request_id="after")
                break
            except BackendUnavailable:
                assert time.monotonic() < deadline, "no replica took over"
                await asyncio.sleep(0.2)
        outcomes.append(admission.admitted)
        assert isinstance(backend._hot_path, ClusterPipelinedRedis)
        leases = await backend._hot_path.execute(["ZCARD", lease_key])
        rest = [
            (await backend.admit(items, request_id=f"rest{n}")).admitted
            for n in range(10)
        ]
    finally:
        await backend.close()
        cluster.stop()

    assert outcomes == [True] * 5
    # Four admitted before the kill, one of them settled after it, and one
    # admitted after the failover.
    assert leases == 4
    # The bucket of 10 came through the failover with its 5 taken.
    assert rest.count(True) == 5


def test_redirect_address_gets_ipv6_brackets() -> None:
    moved = redis.exceptions.ResponseError("MOVED 3999 ::1:7001")
    asked = redis.exceptions.ResponseError("ASK 3999 127.0.0.1:7001")

    assert _redirect(moved) == ("MOVED", 3999, "[::1]:7001")
    assert _redirect(asked) == ("ASK", 3999, "127.0.0.1:7001")
    assert _redirect(redis.exceptions.ResponseError("NOSCRIPT x")) is None
