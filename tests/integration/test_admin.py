"""The admin API, managed keys, tenants and teams, against a running gateway.

Every test that can runs twice: with the embedded store (a SQLite file beside
the ledger) and with Redis database 15 under a key prefix unique to the test.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from llmgw.admin.api import ROUTES
from llmgw.admin.records import KeySecret, ManagedKey, Tenant, new_key_id
from llmgw.admin.redis_store import RedisStore
from llmgw.admin.store import Conflict
from llmgw.config import hash_key, parse_config
from llmgw.errors import AuthenticationFailed, BackendUnavailable
from llmgw.handlers import GATEWAY
from llmgw.limits.spec import LimitSpec, Scope
from llmgw.pipeline.authenticate import Authenticator, Principal
from llmgw.server import create_app
from tests.integration.conftest import STATE_PARAMS, SharedState, shared_state
from tests.integration.gateway_harness import (
    DEV_KEY,
    Harness,
    gateway_config,
    running_gateway,
)

REDIS_URL = "redis://127.0.0.1:6379/15"
ADMIN_KEY = "admin-test-key-0123456789abcdef"
OTHER_ADMIN_KEY = "admin-test-key-other-0123456789"

# The config file's tenant "acme" contains the harness's key "dev". Tenants
# created through the API in these tests have other names.
ADMIN_CONFIG = f"""\
admin: {{keys: ['{ADMIN_KEY}', {{key_sha256: {hash_key(OTHER_ADMIN_KEY)}}}]}}
tenants:
  - name: acme
    models: ['small', 'gpt-*', 'embed']
    limits: {{requests_per_minute: 1000}}
    teams:
      - {{name: platform, models: ['small'], limits: {{tokens_per_minute: 5000}}}}
"""


async def _delete_prefix(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=STATE_PARAMS)
def backend(request: pytest.FixtureRequest) -> SharedState:
    return shared_state(request)


@pytest.fixture(params=STATE_PARAMS[1:])
def redis_state(request: pytest.FixtureRequest) -> SharedState:
    """Redis or Redis Cluster, for tests of several workers."""
    return shared_state(request)


@pytest.fixture
async def prefix(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    prefix = f"llmgw-admin-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    await _delete_prefix(prefix)
    for name in ("backend", "redis_state"):
        if name in request.fixturenames:
            state: SharedState = request.getfixturevalue(name)
            if state.cluster:
                await state.delete_keys(prefix)


@asynccontextmanager
async def gateway(
    tmp_path: Path, backend: SharedState, prefix: str, extra: str = ADMIN_CONFIG
) -> AsyncIterator[Harness]:
    # The harness dedents its template after inserting ``extra`` at an
    # indentation of eight spaces, so every later line needs them too.
    extra = textwrap.indent(extra, " " * 8).lstrip()
    async with running_gateway(
        tmp_path, backend.url, prefix, extra, cluster=backend.cluster
    ) as harness:
        yield harness


@pytest.fixture
async def gw(
    tmp_path: Path, backend: SharedState, prefix: str
) -> AsyncIterator[Harness]:
    async with gateway(tmp_path, backend, prefix) as harness:
        yield harness


async def call(
    h: Harness,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = ADMIN_KEY,
) -> tuple[int, Any]:
    """Send an admin request and return the status and the decoded body."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    data = None if body is None else orjson.dumps(body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with h.session.request(
        method, h.url(path), data=data, headers=headers
    ) as response:
        return response.status, orjson.loads(await response.read())


async def model_status(h: Harness, secret: str, model: str = "small") -> int:
    """Return the status of GET /v1/models/{model} with a gateway key."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with h.session.get(h.url(f"/v1/models/{model}"), headers=headers) as r:
        await r.read()
        return r.status


async def client_error(h: Harness, secret: str, header: str = "Authorization") -> Any:
    value = f"Bearer {secret}" if header == "Authorization" else secret
    async with h.session.get(h.url("/v1/models/small"), headers={header: value}) as r:
        return r.status, await r.json()


async def create_key(h: Harness, **fields: Any) -> dict[str, Any]:
    status, body = await call(h, "POST", "/admin/keys", {"name": "ci", **fields})
    assert status == 201, body
    return dict(body)


# Admin authentication


async def test_admin_disabled_without_admin_keys(
    tmp_path: Path, backend: SharedState, prefix: str
) -> None:
    async with gateway(tmp_path, backend, prefix, extra="") as h:
        status, body = await call(h, "GET", "/admin/keys")

    assert status == 404
    assert body["error"]["code"] == "admin_disabled"
    assert "admin.keys" in body["error"]["message"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        pytest.param(None, "Missing admin key", id="no-key"),
        pytest.param("wrong-admin-key-0123456789", "Invalid admin key", id="wrong"),
        pytest.param(DEV_KEY, "Invalid admin key", id="gateway-key"),
    ],
)
async def test_admin_rejects_non_admin_keys(
    gw: Harness, key: str | None, reason: str
) -> None:
    status, body = await call(gw, "GET", "/admin/keys", key=key)

    assert status == 401
    assert reason in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


async def test_admin_accepts_key_sha256_entry(gw: Harness) -> None:
    status, body = await call(gw, "GET", "/admin/keys", key=OTHER_ADMIN_KEY)

    assert status == 200
    assert body == {"object": "list", "data": []}


async def test_admin_keys_do_not_open_client_api(gw: Harness) -> None:
    assert await model_status(gw, ADMIN_KEY) == 401


# Managed keys


async def test_key_lifecycle(gw: Harness) -> None:
    created = await create_key(
        gw,
        owner="ci@example.com",
        models=["small"],
        limits={"requests_per_minute": 100},
        metadata={"cost_center": "42"},
    )
    key_id, secret = created["id"], created["secret"]
    assert secret.startswith("sk-llmgw-")
    assert created["status"] == "active"
    assert created["limits"] == {"requests_per_minute": 100}
    assert await model_status(gw, secret) == 200
    assert await model_status(gw, secret, "gpt-4o") == 403

    status, listed = await call(gw, "GET", "/admin/keys")
    assert status == 200
    assert [k["id"] for k in listed["data"]] == [key_id]
    status, shown = await call(gw, "GET", f"/admin/keys/{key_id}")
    assert status == 200
    assert shown["metadata"] == {"cost_center": "42"}
    for record in (shown, listed["data"][0]):
        assert "secret" not in record
        assert "secrets" not in record
        assert hash_key(secret) not in orjson.dumps(record).decode()

    status, updated = await call(
        gw, "PATCH", f"/admin/keys/{key_id}", {"name": "ci-2", "models": ["gpt-*"]}
    )
    assert status == 200
    assert updated["name"] == "ci-2"
    assert await model_status(gw, secret, "gpt-4o") == 200
    assert await model_status(gw, secret, "small") == 403

    status, revoked = await call(gw, "DELETE", f"/admin/keys/{key_id}")
    assert status == 200
    assert revoked["status"] == "revoked"
    status, error = await client_error(gw, secret)
    assert status == 401
    assert error["error"]["message"] == "API key revoked."
    assert error["error"]["code"] == "invalid_api_key"


async def test_revoked_key_frees_its_name(gw: Harness) -> None:
    first = await create_key(gw)
    status, body = await call(gw, "POST", "/admin/keys", {"name": "ci"})
    assert status == 409
    assert first["id"] in body["error"]["message"]

    await call(gw, "DELETE", f"/admin/keys/{first['id']}")
    second = await create_key(gw)

    assert second["id"] != first["id"]


async def test_revoked_key_cannot_change(gw: Harness) -> None:
    key = await create_key(gw)
    await call(gw, "DELETE", f"/admin/keys/{key['id']}")

    patched, _ = await call(gw, "PATCH", f"/admin/keys/{key['id']}", {"owner": "x"})
    rotated, _ = await call(gw, "POST", f"/admin/keys/{key['id']}/rotate", {})

    assert patched == 409
    assert rotated == 409


@pytest.mark.parametrize(
    "header", ["Authorization", "x-api-key", "x-goog-api-key"], ids=str.lower
)
async def test_managed_key_in_every_header(gw: Harness, header: str) -> None:
    key = await create_key(gw)

    status, _ = await client_error(gw, key["secret"], header)

    assert status == 200


async def test_config_keys_work_beside_managed(gw: Harness) -> None:
    key = await create_key(gw)

    assert await model_status(gw, DEV_KEY) == 200
    assert await model_status(gw, key["secret"]) == 200
    assert await model_status(gw, "sk-llmgw-not-a-key") == 401


async def test_managed_key_chat_writes_ledger(gw: Harness) -> None:
    key = await create_key(gw, tenant="acme", team="platform")
    body = {"model": "small", "messages": [{"role": "user", "content": "Hi"}]}

    response = await gw.post("/v1/chat/completions", body, key=key["secret"])
    await response.read()
    rows = await gw.ledger_rows()

    assert response.status == 200
    assert [row["key_name"] for row in rows] == ["ci"]
    assert [row["tenant"] for row in rows] == ["acme"]
    assert [row["team"] for row in rows] == ["platform"]


async def test_key_expiry(gw: Harness) -> None:
    soon = await create_key(gw, name="soon", expires_in_seconds=1.0)

    assert soon["expired"] is False
    assert await model_status(gw, soon["secret"]) == 200

    await asyncio.sleep(1.1)
    status, error = await client_error(gw, soon["secret"])
    assert status == 401
    assert error["error"]["message"] == "API key expired."

    status, renewed = await call(
        gw, "PATCH", f"/admin/keys/{soon['id']}", {"expires": None}
    )
    assert status == 200
    assert renewed["expires"] is None
    assert await model_status(gw, soon["secret"]) == 200


async def test_rotation_grace(gw: Harness) -> None:
    key = await create_key(gw)
    old = key["secret"]
    assert await model_status(gw, old) == 200

    status, rotated = await call(
        gw, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_seconds": 1}
    )
    assert status == 200
    new = rotated["secret"]
    assert new != old
    assert rotated["id"] == key["id"]
    assert len(rotated["previous_secrets_valid_until"]) == 1
    assert await model_status(gw, new) == 200
    assert await model_status(gw, old) == 200

    await asyncio.sleep(1.1)
    assert await model_status(gw, old) == 401
    assert await model_status(gw, new) == 200


async def test_rotation_without_grace(gw: Harness) -> None:
    key = await create_key(gw)

    status, rotated = await call(
        gw, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_seconds": 0}
    )

    assert status == 200
    assert await model_status(gw, key["secret"]) == 401
    assert await model_status(gw, rotated["secret"]) == 200


async def test_rotation_default_grace(gw: Harness) -> None:
    key = await create_key(gw)
    before = time.time()

    status, rotated = await call(gw, "POST", f"/admin/keys/{key['id']}/rotate")

    assert status == 200
    [until] = rotated["previous_secrets_valid_until"]
    from datetime import datetime

    grace = datetime.fromisoformat(until).timestamp() - before
    assert 24 * 3600 - 5 <= grace <= 24 * 3600 + 5
    assert await model_status(gw, key["secret"]) == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({}, "name", id="missing-name"),
        pytest.param({"name": "a b"}, "name", id="bad-name"),
        pytest.param({"name": "k", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param(
            {"name": "k", "limits": {"requests_per_minute": -1}},
            "limits.requests_per_minute",
            id="negative-limit",
        ),
        pytest.param(
            {"name": "k", "limits": {"budgets_usd": {"year": 5}}},
            "limits.budgets_usd.year",
            id="unknown-period",
        ),
        pytest.param(
            {"name": "k", "limits": {"models": {"gpt-4o": {"models": {}}}}},
            "limits.models['gpt-4o'].models",
            id="nested-model-limits",
        ),
        pytest.param({"name": "k", "expires": "tomorrow"}, "expires", id="bad-time"),
        pytest.param(
            {"name": "k", "expires": "2030-01-01T00:00:00"}, "expires", id="no-offset"
        ),
        pytest.param({"name": "k", "models": "small"}, "models", id="models-string"),
        pytest.param({"name": "k", "metadata": {"a": 1}}, "metadata.a", id="metadata"),
        pytest.param({"name": "k", "tenant": "nobody"}, "tenant", id="unknown-tenant"),
        pytest.param({"name": "k", "team": "platform"}, "team", id="team-no-tenant"),
        pytest.param(
            {"name": "k", "tenant": "acme", "team": "nobody"}, "team", id="unknown-team"
        ),
    ],
)
async def test_invalid_key_input_names_field(
    gw: Harness, body: dict[str, Any], param: str
) -> None:
    status, error = await call(gw, "POST", "/admin/keys", body)

    assert status == 400
    assert error["error"]["param"] == param
    assert param.split(".")[0] in error["error"]["message"]


async def test_invalid_json_body(gw: Harness) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with gw.session.post(
        gw.url("/admin/keys"), data=b"{not json", headers=headers
    ) as response:
        body = await response.json()

    assert response.status == 400
    assert "JSON" in body["error"]["message"]


async def test_unknown_key_id_is_404(gw: Harness) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        status, body = await call(gw, method, "/admin/keys/key_nothing", {})
        assert status == 404, method
        assert body["error"]["code"] == "not_found"


async def test_config_key_name_is_taken(gw: Harness) -> None:
    status, body = await call(gw, "POST", "/admin/keys", {"name": "dev"})

    assert status == 409
    assert "config file" in body["error"]["message"]


async def test_tenant_cannot_change(gw: Harness) -> None:
    key = await create_key(gw, tenant="acme")

    status, body = await call(
        gw, "PATCH", f"/admin/keys/{key['id']}", {"tenant": "other"}
    )

    assert status == 400
    assert body["error"]["param"] == "tenant"


async def test_list_keys_filters(gw: Harness) -> None:
    in_acme = await create_key(gw, tenant="acme", team="platform")
    other = await create_key(gw, name="other")
    await call(gw, "DELETE", f"/admin/keys/{other['id']}")

    _, by_tenant = await call(gw, "GET", "/admin/keys?tenant=acme")
    _, by_team = await call(gw, "GET", "/admin/keys?team=platform")
    _, revoked = await call(gw, "GET", "/admin/keys?status=revoked")
    status, bad = await call(gw, "GET", "/admin/keys?colour=red")

    assert [k["id"] for k in by_tenant["data"]] == [in_acme["id"]]
    assert [k["id"] for k in by_team["data"]] == [in_acme["id"]]
    assert [k["id"] for k in revoked["data"]] == [other["id"]]
    assert status == 400
    assert bad["error"]["param"] == "colour"


# Time fields

# The bounds the admin API states: an expiry at most 3650 days ahead, and a
# rotation grace of at most 30 days.
MAX_EXPIRY_SECONDS = 3650 * 86400
MAX_GRACE_SECONDS = 30 * 86400


@pytest.mark.parametrize(
    ("fields", "param", "reason"),
    [
        pytest.param(
            {"expires_in_seconds": 1e15},
            "expires_in_seconds",
            f"at most {MAX_EXPIRY_SECONDS}",
            id="seconds-1e15",
        ),
        pytest.param(
            {"expires_in_seconds": 1e300},
            "expires_in_seconds",
            f"at most {MAX_EXPIRY_SECONDS}",
            id="seconds-1e300",
        ),
        pytest.param(
            {"expires_in_seconds": MAX_EXPIRY_SECONDS + 1},
            "expires_in_seconds",
            f"at most {MAX_EXPIRY_SECONDS}",
            id="seconds-above-bound",
        ),
        pytest.param(
            {"expires_in_seconds": 0},
            "expires_in_seconds",
            "above 0",
            id="seconds-zero",
        ),
        pytest.param(
            {"expires": "0001-01-01T00:00:00+14:00"},
            "expires",
            "in the future",
            id="year-1",
        ),
        pytest.param(
            {"expires": "9999-12-31T23:59:59-14:00"},
            "expires",
            "at most 3650 days",
            id="year-9999",
        ),
        pytest.param(
            {"expires": "2020-01-01T00:00:00Z"},
            "expires",
            "in the future",
            id="past",
        ),
    ],
)
async def test_expiry_out_of_range_rejected(
    gw: Harness, fields: dict[str, Any], param: str, reason: str
) -> None:
    status, error = await call(gw, "POST", "/admin/keys", {"name": "k", **fields})
    listed_status, listed = await call(gw, "GET", "/admin/keys")

    assert status == 400
    assert error["error"]["param"] == param
    assert reason in error["error"]["message"]
    assert listed_status == 200
    assert listed["data"] == []


async def test_expiry_at_bound_accepted(gw: Harness) -> None:
    key = await create_key(gw, expires_in_seconds=MAX_EXPIRY_SECONDS)
    from datetime import datetime

    expires = datetime.fromisoformat(key["expires"]).timestamp()
    assert abs(expires - time.time() - MAX_EXPIRY_SECONDS) < 5


async def test_update_rejects_bad_expiry(gw: Harness) -> None:
    key = await create_key(gw)

    huge, huge_error = await call(
        gw, "PATCH", f"/admin/keys/{key['id']}", {"expires_in_seconds": 1e15}
    )
    past, past_error = await call(
        gw, "PATCH", f"/admin/keys/{key['id']}", {"expires": "2020-01-01T00:00:00Z"}
    )
    shown_status, shown = await call(gw, "GET", f"/admin/keys/{key['id']}")

    assert huge == 400
    assert huge_error["error"]["param"] == "expires_in_seconds"
    assert past == 400
    assert past_error["error"]["param"] == "expires"
    assert shown_status == 200
    assert shown["expires"] is None


@pytest.mark.parametrize(
    "grace", [1e14, MAX_GRACE_SECONDS + 1, -1], ids=["1e14", "above-bound", "negative"]
)
async def test_rotation_rejects_bad_grace(gw: Harness, grace: float) -> None:
    key = await create_key(gw)

    status, error = await call(
        gw, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_seconds": grace}
    )
    shown_status, shown = await call(gw, "GET", f"/admin/keys/{key['id']}")

    assert status == 400
    assert error["error"]["param"] == "grace_seconds"
    assert f"at most {MAX_GRACE_SECONDS}" in error["error"]["message"]
    assert shown_status == 200
    assert shown["previous_secrets_valid_until"] == []
    assert await model_status(gw, key["secret"]) == 200


async def test_rotation_grace_at_bound_accepted(gw: Harness) -> None:
    key = await create_key(gw)

    status, rotated = await call(
        gw,
        "POST",
        f"/admin/keys/{key['id']}/rotate",
        {"grace_seconds": MAX_GRACE_SECONDS},
    )

    assert status == 200
    assert len(rotated["previous_secrets_valid_until"]) == 1


async def test_list_survives_unrenderable_times(gw: Harness) -> None:
    # Records that an older gateway stored without bounds on their times.
    good = await create_key(gw)
    now = time.time()
    far_expiry = ManagedKey(
        id=new_key_id(),
        name="far-expiry",
        secrets=(KeySecret("a" * 64),),
        created=now,
        updated=now,
        expires=1e15,
    )
    long_grace = ManagedKey(
        id=new_key_id(),
        name="long-grace",
        secrets=(KeySecret("b" * 64), KeySecret("c" * 64, valid_until=1e14)),
        created=now + 1,
        updated=now + 1,
        expires=-1e13,
    )
    store = gw.gateway.store
    await store.create_key(far_expiry)
    await store.create_key(long_grace)
    revoked = replace(far_expiry, status="revoked", revoked=1e15)
    await store.save_key(far_expiry, revoked)

    with capture_logs() as logs:
        status, listed = await call(gw, "GET", "/admin/keys")
        revoked_status, revoked_list = await call(
            gw, "GET", "/admin/keys?status=revoked"
        )
        shown_status, shown = await call(gw, "GET", f"/admin/keys/{long_grace.id}")

    assert status == 200
    assert [k["id"] for k in listed["data"]] == [
        good["id"],
        far_expiry.id,
        long_grace.id,
    ]
    far, grace = listed["data"][1], listed["data"][2]
    assert far["expires"] is None
    assert far["revoked"] is None
    assert far["created"] is not None
    assert far["expired"] is False
    assert grace["expires"] is None
    assert grace["expired"] is True
    assert grace["previous_secrets_valid_until"] == [None]
    assert revoked_status == 200
    assert [k["id"] for k in revoked_list["data"]] == [far_expiry.id]
    assert shown_status == 200
    assert shown["name"] == "long-grace"
    unrenderable = {
        entry["key_id"]: entry["fields"]
        for entry in logs
        if entry["event"] == "admin_time_unrenderable"
    }
    assert unrenderable[far_expiry.id] == ["expires", "revoked"]
    assert unrenderable[long_grace.id] == ["expires", "previous_secrets_valid_until"]
    assert good["id"] not in unrenderable


async def test_list_rejects_unknown_status(gw: Harness) -> None:
    status, error = await call(gw, "GET", "/admin/keys?status=bogus")

    assert status == 400
    assert error["error"]["param"] == "status"
    assert "active, revoked" in error["error"]["message"]


# Name claims under concurrency

# How long each record write waits before it starts in the concurrency
# tests. It widens the window between a name claim and the write of the
# record, as a slow Redis or a paused worker would.
WRITE_DELAY_SECONDS = 0.05


def delay_record_writes(store: object) -> None:
    """Make every record write of ``store`` wait ``WRITE_DELAY_SECONDS`` first."""
    name = "_write_key" if isinstance(store, RedisStore) else "_write"
    write = getattr(store, name)

    async def delayed_write(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(WRITE_DELAY_SECONDS)
        await write(*args, **kwargs)

    setattr(store, name, delayed_write)


async def test_concurrent_creates_claim_name_once(
    tmp_path: Path, backend: SharedState, prefix: str
) -> None:
    rounds = 5
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(gateway(tmp_path, backend, prefix))
        workers = [first]
        if backend.url is not None:
            # A second worker on the same Redis prefix, as with --workers 2.
            workers.append(
                await stack.enter_async_context(
                    second_worker(first, tmp_path, prefix, backend)
                )
            )
        for worker in workers:
            delay_record_writes(worker.gateway.store)
        for round_number in range(rounds):
            name = f"dup-{round_number}"
            results = await asyncio.gather(
                *(
                    call(
                        workers[i % len(workers)], "POST", "/admin/keys", {"name": name}
                    )
                    for i in range(50)
                )
            )
            statuses = [status for status, _ in results]
            assert statuses.count(201) == 1, (name, sorted(statuses))
            assert statuses.count(409) == 49, (name, sorted(statuses))
        _, active = await call(first, "GET", "/admin/keys?status=active")

    names = sorted(key["name"] for key in active["data"])
    assert names == [f"dup-{i}" for i in range(rounds)]


async def test_concurrent_renames_claim_name_once(gw: Harness) -> None:
    keys = [await create_key(gw, name=f"rename-{i}") for i in range(50)]
    delay_record_writes(gw.gateway.store)

    results = await asyncio.gather(
        *(
            call(gw, "PATCH", f"/admin/keys/{key['id']}", {"name": "same"})
            for key in keys
        )
    )
    _, active = await call(gw, "GET", "/admin/keys?status=active")

    statuses = [status for status, _ in results]
    assert statuses.count(200) == 1
    assert statuses.count(409) == 49
    names = [key["name"] for key in active["data"]]
    assert names.count("same") == 1
    assert len(names) == 50


# Budgets


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        pytest.param(
            "/admin/keys",
            {"name": "k", "limits": {"budgets_usd": {"day": 1e-12}}},
            "limits.budgets_usd.day",
            id="key",
        ),
        pytest.param(
            "/admin/tenants",
            {"name": "globex", "limits": {"budgets_usd": {"month": 0.0000009}}},
            "limits.budgets_usd.month",
            id="tenant",
        ),
        pytest.param(
            "/admin/keys",
            {
                "name": "k",
                "limits": {"models": {"gpt-*": {"budgets_usd": {"week": 1e-7}}}},
            },
            "limits.models['gpt-*'].budgets_usd.week",
            id="per-model",
        ),
    ],
)
async def test_budget_below_micro_dollar_rejected(
    gw: Harness, path: str, body: dict[str, Any], param: str
) -> None:
    status, error = await call(gw, "POST", path, body)

    assert status == 400
    assert error["error"]["param"] == param
    assert "at least 0.000001" in error["error"]["message"]


async def test_budget_of_one_micro_dollar_accepted(gw: Harness) -> None:
    key = await create_key(gw, limits={"budgets_usd": {"day": 0.000001}})

    assert key["limits"] == {"budgets_usd": {"day": 0.000001}}


async def test_stored_tiny_budget_still_loads(gw: Harness) -> None:
    # A tenant that an older gateway stored before budgets had a minimum.
    now = time.time()
    tenant = Tenant(
        name="legacy",
        created=now,
        updated=now,
        limits=LimitSpec(budgets_usd=(("day", 1e-12),)),
    )
    await gw.gateway.store.create_tenant(tenant)

    status, shown = await call(gw, "GET", "/admin/tenants/legacy")

    assert status == 200
    assert shown["limits"] == {"budgets_usd": {"day": 1e-12}}


# Tenants, teams and scopes


async def test_tenant_and_team_crud(gw: Harness) -> None:
    status, tenant = await call(
        gw,
        "POST",
        "/admin/tenants",
        {
            "name": "globex",
            "models": ["small", "gpt-*"],
            "limits": {"budgets_usd": {"day": 5}},
        },
    )
    assert status == 201
    assert tenant["source"] == "api"
    assert tenant["limits"] == {"budgets_usd": {"day": 5.0}}

    status, team = await call(
        gw, "POST", "/admin/tenants/globex/teams", {"name": "ml", "models": ["gpt-*"]}
    )
    assert status == 201
    assert team["tenant"] == "globex"

    _, tenants = await call(gw, "GET", "/admin/tenants")
    assert [(t["name"], t["source"]) for t in tenants["data"]] == [
        ("acme", "config"),
        ("globex", "api"),
    ]
    _, teams = await call(gw, "GET", "/admin/tenants/globex/teams")
    assert [t["name"] for t in teams["data"]] == ["ml"]

    status, changed = await call(
        gw, "PATCH", "/admin/tenants/globex", {"limits": {"requests_per_minute": 9}}
    )
    assert status == 200
    assert changed["limits"] == {"requests_per_minute": 9}
    status, changed_team = await call(
        gw, "PATCH", "/admin/tenants/globex/teams/ml", {"metadata": {"a": "b"}}
    )
    assert status == 200
    assert changed_team["metadata"] == {"a": "b"}

    status, _ = await call(gw, "DELETE", "/admin/tenants/globex/teams/ml")
    assert status == 200
    status, _ = await call(gw, "GET", "/admin/tenants/globex/teams/ml")
    assert status == 404
    status, _ = await call(gw, "DELETE", "/admin/tenants/globex")
    assert status == 200
    status, _ = await call(gw, "GET", "/admin/tenants/globex")
    assert status == 404


async def test_tenant_duplicates_conflict(gw: Harness) -> None:
    await call(gw, "POST", "/admin/tenants", {"name": "globex"})
    await call(gw, "POST", "/admin/tenants/globex/teams", {"name": "ml"})

    tenant, _ = await call(gw, "POST", "/admin/tenants", {"name": "globex"})
    config_tenant, _ = await call(gw, "POST", "/admin/tenants", {"name": "acme"})
    team, _ = await call(gw, "POST", "/admin/tenants/globex/teams", {"name": "ml"})

    assert tenant == 409
    assert config_tenant == 409
    assert team == 409


async def test_config_tenant_is_read_only(gw: Harness) -> None:
    shown, tenant = await call(gw, "GET", "/admin/tenants/acme")
    patched, _ = await call(gw, "PATCH", "/admin/tenants/acme", {"models": None})
    deleted, _ = await call(gw, "DELETE", "/admin/tenants/acme")
    team_created, _ = await call(
        gw, "POST", "/admin/tenants/acme/teams", {"name": "new"}
    )
    team_shown, team = await call(gw, "GET", "/admin/tenants/acme/teams/platform")

    assert shown == 200
    assert tenant["source"] == "config"
    assert tenant["limits"] == {"requests_per_minute": 1000}
    assert patched == 409
    assert deleted == 409
    assert team_created == 409
    assert team_shown == 200
    assert team["models"] == ["small"]


async def test_tenant_with_active_keys_is_kept(gw: Harness) -> None:
    await call(gw, "POST", "/admin/tenants", {"name": "globex"})
    await call(gw, "POST", "/admin/tenants/globex/teams", {"name": "ml"})
    key = await create_key(gw, tenant="globex", team="ml")

    team_status, team_error = await call(gw, "DELETE", "/admin/tenants/globex/teams/ml")
    tenant_status, _ = await call(gw, "DELETE", "/admin/tenants/globex")
    await call(gw, "DELETE", f"/admin/keys/{key['id']}")
    after_revoke, _ = await call(gw, "DELETE", "/admin/tenants/globex")

    assert team_status == 409
    assert "has 1 active key." in team_error["error"]["message"]
    assert tenant_status == 409
    assert after_revoke == 200


async def test_invalid_tenant_input_names_field(gw: Harness) -> None:
    bad_name, name_error = await call(gw, "POST", "/admin/tenants", {"name": "a/b"})
    bad_limit, limit_error = await call(
        gw,
        "POST",
        "/admin/tenants",
        {"name": "ok", "limits": {"tokens_per_minute_counts": "some"}},
    )

    assert bad_name == 400
    assert name_error["error"]["param"] == "name"
    assert bad_limit == 400
    assert limit_error["error"]["param"] == "limits.tokens_per_minute_counts"


async def test_key_scopes_in_config_tenant(gw: Harness) -> None:
    key = await create_key(
        gw, tenant="acme", team="platform", limits={"requests_per_minute": 7}
    )

    principal = await gw.gateway.auth.authenticate(
        {"Authorization": f"Bearer {key['secret']}"}
    )

    assert [(s.kind, s.id, s.tenant) for s in principal.scopes] == [
        ("key", key["id"], "acme"),
        ("team", "acme/platform", "acme"),
        ("tenant", "acme", "acme"),
    ]
    assert principal.scopes[0].limits == LimitSpec(requests_per_minute=7)
    assert principal.scopes[1].limits == LimitSpec(tokens_per_minute=5000)
    assert principal.scopes[2].limits == LimitSpec(requests_per_minute=1000)
    assert principal.limits == LimitSpec(requests_per_minute=7)
    assert principal.key_id == key["id"]
    assert principal.team == "platform"
    # The team allows only "small", the tenant "small", "gpt-*" and "embed".
    assert await model_status(gw, key["secret"], "small") == 200
    assert await model_status(gw, key["secret"], "gpt-4o") == 403


async def test_key_scopes_in_api_tenant(gw: Harness) -> None:
    await call(
        gw,
        "POST",
        "/admin/tenants",
        {
            "name": "globex",
            "models": ["gpt-*", "small"],
            "limits": {"max_concurrent_requests": 3},
        },
    )
    await call(
        gw,
        "POST",
        "/admin/tenants/globex/teams",
        {"name": "ml", "limits": {"token_quotas": {"day": 1000}}},
    )
    key = await create_key(gw, tenant="globex", team="ml", models=["gpt-*", "embed"])
    headers = {"Authorization": f"Bearer {key['secret']}"}

    principal = await gw.gateway.auth.authenticate(headers)
    assert [s.kind for s in principal.scopes] == ["key", "team", "tenant"]
    assert principal.scopes[1].limits == LimitSpec(token_quotas=(("day", 1000),))
    assert principal.scopes[2].limits == LimitSpec(max_concurrent_requests=3)
    # Key "gpt-*" and "embed", tenant "gpt-*" and "small": only gpt-* is left.
    assert await model_status(gw, key["secret"], "gpt-4o") == 200
    assert await model_status(gw, key["secret"], "embed") == 403
    assert await model_status(gw, key["secret"], "small") == 403

    # A change to the tenant reaches the cached principal at once.
    await call(
        gw, "PATCH", "/admin/tenants/globex", {"limits": {"requests_per_minute": 5}}
    )
    changed = await gw.gateway.auth.authenticate(headers)
    assert changed.scopes[2].limits == LimitSpec(requests_per_minute=5)


async def test_config_key_in_api_tenant(
    tmp_path: Path, backend: SharedState, prefix: str
) -> None:
    # The harness's key "dev" names tenant "acme", which here is not in the
    # config file, so its tenant scope comes from the admin store.
    extra = f"admin: {{keys: ['{ADMIN_KEY}']}}\n"
    async with gateway(tmp_path, backend, prefix, extra) as h:
        headers = {"Authorization": f"Bearer {DEV_KEY}"}
        before = await h.gateway.auth.authenticate(headers)
        await call(h, "POST", "/admin/tenants", {"name": "acme", "models": ["gpt-*"]})
        after = await h.gateway.auth.authenticate(headers)
        small = await model_status(h, DEV_KEY, "small")

    assert [s.kind for s in before.scopes] == ["key"]
    assert [s.kind for s in after.scopes] == ["key", "tenant"]
    assert small == 403


async def test_budget_without_price_warns(gw: Harness) -> None:
    status, tenant = await call(
        gw,
        "POST",
        "/admin/tenants",
        {
            "name": "globex",
            "models": ["small"],
            "limits": {"budgets_usd": {"month": 100}},
        },
    )

    assert status == 201
    [warning] = tenant["warnings"]
    assert "'small' has no price" in warning
    assert "tenant 'globex'" in warning


# Logs, caching, persistence


async def test_admin_actions_logged_without_secrets(gw: Harness) -> None:
    with capture_logs() as logs:
        key = await create_key(gw)
        _, rotated = await call(gw, "POST", f"/admin/keys/{key['id']}/rotate", {})
        await call(gw, "DELETE", f"/admin/keys/{key['id']}")

    actions = [entry for entry in logs if entry["event"] == "admin_action"]
    assert [entry["action"] for entry in actions] == [
        "key.create",
        "key.rotate",
        "key.revoke",
    ]
    for entry in actions:
        assert entry["admin"] == hash_key(ADMIN_KEY)[:12]
        assert entry["key_id"] == key["id"]
    text = repr(logs)
    for secret in (key["secret"], rotated["secret"], ADMIN_KEY):
        assert secret not in text
        assert hash_key(secret) not in text


async def test_invalid_key_flood_is_cached(gw: Harness) -> None:
    store = gw.gateway.store
    lookups = 0
    find_key = store.find_key

    async def counting_find_key(digest: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await find_key(digest)

    store.find_key = counting_find_key  # type: ignore[method-assign]
    statuses = await asyncio.gather(
        *(model_status(gw, "sk-llmgw-flood") for _ in range(100))
    )

    assert set(statuses) == {401}
    # One lookup, or two if the one-second miss TTL ran out mid-test.
    assert lookups <= 2


async def test_valid_key_cached(gw: Harness) -> None:
    key = await create_key(gw)
    # Let the Redis change feed see the creation, which clears the cache.
    await asyncio.sleep(0.5)
    store = gw.gateway.store
    lookups = 0
    find_key = store.find_key

    async def counting_find_key(digest: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await find_key(digest)

    store.find_key = counting_find_key  # type: ignore[method-assign]
    for _ in range(20):
        assert await model_status(gw, key["secret"]) == 200

    assert lookups == 1


async def test_store_survives_restart(
    tmp_path: Path, backend: SharedState, prefix: str
) -> None:
    async with gateway(tmp_path, backend, prefix) as first:
        key = await create_key(first, tenant="acme")
        await call(first, "POST", "/admin/tenants", {"name": "globex"})
        revoked = await create_key(first, name="gone")
        await call(first, "DELETE", f"/admin/keys/{revoked['id']}")

    async with gateway(tmp_path, backend, prefix) as second:
        works = await model_status(second, key["secret"])
        status, error = await client_error(second, revoked["secret"])
        _, tenants = await call(second, "GET", "/admin/tenants")

    assert works == 200
    assert status == 401
    assert error["error"]["message"] == "API key revoked."
    assert "globex" in [t["name"] for t in tenants["data"]]


@asynccontextmanager
async def second_worker(
    first: Harness, tmp_path: Path, prefix: str, state: SharedState
) -> AsyncIterator[Harness]:
    """Run another gateway on the same Redis prefix, as another worker would.

    It runs without the harness's event loop watchdog, because its start-up
    loads the token encodings on the loop that the first gateway's
    watchdog watches.
    """
    extra = textwrap.indent(ADMIN_CONFIG, " " * 8).lstrip()
    config = gateway_config(
        "http://127.0.0.1:9",
        tmp_path / "second.db",
        state.url,
        prefix,
        extra,
        cluster=state.cluster,
    )
    app = create_app(config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield replace(
            first,
            base_url=str(server.make_url("")).rstrip("/"),
            gateway=app[GATEWAY],
            server=server,
        )
    finally:
        await server.close()


async def test_revocation_reaches_second_worker(
    tmp_path: Path, redis_state: SharedState, prefix: str
) -> None:
    async with (
        gateway(tmp_path, redis_state, prefix) as first,
        second_worker(first, tmp_path, prefix, redis_state) as second,
    ):
        key = await create_key(first)
        # Created on one worker, the key works on the other at once.
        assert await model_status(second, key["secret"]) == 200

        status, _ = await call(first, "DELETE", f"/admin/keys/{key['id']}")
        revoked_at = time.monotonic()
        assert status == 200
        while await model_status(second, key["secret"]) == 200:
            assert time.monotonic() - revoked_at < 1.0, "still accepted after 1 s"
            await asyncio.sleep(0.02)
        seen_after = time.monotonic() - revoked_at

    assert seen_after < 1.0


async def test_rotation_reaches_second_worker(
    tmp_path: Path, redis_state: SharedState, prefix: str
) -> None:
    async with (
        gateway(tmp_path, redis_state, prefix) as first,
        second_worker(first, tmp_path, prefix, redis_state) as second,
    ):
        key = await create_key(first)
        assert await model_status(second, key["secret"]) == 200
        _, rotated = await call(
            first, "POST", f"/admin/keys/{key['id']}/rotate", {"grace_seconds": 0}
        )
        await asyncio.sleep(1.0)

        old = await model_status(second, key["secret"])
        new = await model_status(second, rotated["secret"])

    assert old == 401
    assert new == 200


# The Redis change feed


@pytest.mark.redis
async def test_change_feed_without_pubsub(prefix: str) -> None:
    # A change whose pub/sub message is lost still reaches other workers
    # through the version counter.
    store = RedisStore.from_url(REDIS_URL, prefix=prefix)
    changed = asyncio.Event()
    store.add_listener(changed.set)
    await store.open()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.incr(f"{prefix}admin:version")
        started = time.monotonic()
        await asyncio.wait_for(changed.wait(), timeout=1.0)
        elapsed = time.monotonic() - started
        fresh = store.fresh
    finally:
        await client.aclose()
        await store.close()

    assert elapsed < 1.0
    assert fresh


async def test_unreachable_redis_fails_closed() -> None:
    # Nothing listens on port 1, so the store is never fresh.
    config = parse_config("redis: {url: 'redis://127.0.0.1:1/0'}\n", "test.yaml")
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="unused:")
    await store.open()
    authenticator = Authenticator(config, store)
    try:
        with pytest.raises(BackendUnavailable):
            await authenticator.authenticate({"x-api-key": "sk-llmgw-anything"})
        with pytest.raises(AuthenticationFailed):
            await authenticator.authenticate({})
    finally:
        await store.close()

    assert not store.fresh


async def test_unreachable_redis_fail_open() -> None:
    # A config key whose tenant would come from the store keeps working,
    # counted at the key only.
    config = parse_config(
        "redis: {url: 'redis://127.0.0.1:1/0', on_unavailable: fail_open}\n"
        "keys:\n  - {name: dev, key: sk-dev, tenant: managed}\n",
        "test.yaml",
    )
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="unused:")
    await store.open()
    authenticator = Authenticator(config, store)
    try:
        principal = await authenticator.authenticate({"x-api-key": "sk-dev"})
        with pytest.raises(BackendUnavailable):
            await authenticator.authenticate({"x-api-key": "sk-llmgw-unknown"})
    finally:
        await store.close()

    assert principal.key_name == "dev"
    assert principal.tenant == "managed"
    assert [s.kind for s in principal.scopes] == ["key"]


# Principal


def test_principal_allows_intersection() -> None:
    principal = Principal(
        key_name="k",
        tenant="t",
        models=("gpt-*", "small"),
        max_input_tokens=None,
        max_output_tokens=None,
        scopes=(Scope("key", "k", "t", LimitSpec(requests_per_minute=3)),),
        scope_models=(("gpt-4o*", "small"), ("gpt-*",)),
    )

    assert principal.allows_model("gpt-4o-mini")
    assert not principal.allows_model("small")
    assert not principal.allows_model("gpt-5")
    assert principal.limits == LimitSpec(requests_per_minute=3)


# The OpenAPI document


async def test_openapi_lists_every_admin_route(gw: Harness) -> None:
    status, document = await call(gw, "GET", "/admin/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")

    app_routes: set[tuple[str, str]] = set()
    for route in gw.server.app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if info.startswith("/admin") and route.method != "HEAD":
            app_routes.add((route.method.lower(), info))
    documented = {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
    }

    assert app_routes == documented
    assert len(app_routes) == len(ROUTES)


def _schema_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref":
                yield value
            else:
                yield from _schema_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schema_refs(item)


async def test_openapi_refs_resolve(gw: Harness) -> None:
    _, document = await call(gw, "GET", "/admin/openapi.json")

    for ref in _schema_refs(document):
        section, name = ref.removeprefix("#/components/").split("/")
        assert name in document["components"][section], ref


async def test_admin_route_methods_are_enforced(gw: Harness) -> None:
    status, body = await call(gw, "PUT", "/admin/keys")

    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"


# Name claims in Redis


def _store_key(name: str) -> ManagedKey:
    now = time.time()
    return ManagedKey(
        id=new_key_id(),
        name=name,
        secrets=(KeySecret(uuid.uuid4().hex * 2),),
        created=now,
        updated=now,
    )


@pytest.mark.redis
async def test_crashed_claim_blocks_until_timeout(prefix: str) -> None:
    # A claim whose creator died before writing the record: it blocks the
    # name until it times out, then the name is free.
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStore(client, prefix=prefix, name_claim_seconds=0.5)
    try:
        await client.set(f"{prefix}admin:key-name:ci", "key_crashed", px=500)
        with pytest.raises(Conflict):
            await store.create_key(_store_key("ci"))
        await asyncio.sleep(0.6)
        created = _store_key("ci")
        await store.create_key(created)
        holder = await client.get(f"{prefix}admin:key-name:ci")
        ttl = await client.pttl(f"{prefix}admin:key-name:ci")
    finally:
        await client.aclose()

    assert holder == created.id
    # A key that exists keeps its name claimed for good.
    assert ttl == -1


@pytest.mark.redis
async def test_stale_claims_taken_over(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    store = RedisStore(client, prefix=prefix)
    try:
        # A claim whose key record is gone.
        await client.set(f"{prefix}admin:key-name:gone", "key_missing")
        replacement = _store_key("gone")
        await store.create_key(replacement)

        # A claim left by a revocation that stopped before it released it.
        revoked = _store_key("left")
        await store.create_key(revoked)
        await store.save_key(revoked, replace(revoked, status="revoked"))
        await client.set(f"{prefix}admin:key-name:left", revoked.id)
        successor = _store_key("left")
        await store.create_key(successor)

        # A claim left by a rename that stopped before it released the old
        # name.
        renamed = _store_key("before")
        await store.create_key(renamed)
        await store.save_key(renamed, replace(renamed, name="after"))
        await client.set(f"{prefix}admin:key-name:before", renamed.id)
        reuser = _store_key("before")
        await store.create_key(reuser)

        # An active key keeps its name claimed.
        with pytest.raises(Conflict):
            await store.create_key(_store_key("left"))
        holders = [
            await client.get(f"{prefix}admin:key-name:{name}")
            for name in ("gone", "left", "before", "after")
        ]
    finally:
        await client.aclose()

    assert holders == [replacement.id, successor.id, reuser.id, renamed.id]


@pytest.mark.redis
async def test_concurrent_store_creates(prefix: str) -> None:
    # Five stores with their own connections, as five workers would have.
    clients = [
        redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True) for _ in range(5)
    ]
    stores = [RedisStore(client, prefix=prefix) for client in clients]
    for store in stores:
        delay_record_writes(store)
    try:
        for round_number in range(5):
            name = f"race-{round_number}"
            results = await asyncio.gather(
                *(stores[i % 5].create_key(_store_key(name)) for i in range(50)),
                return_exceptions=True,
            )
            created = [result for result in results if result is None]
            conflicts = [r for r in results if isinstance(r, Conflict)]
            assert len(created) == 1, (name, results)
            assert len(conflicts) == 49, (name, results)
        keys = await stores[0].list_keys()
    finally:
        for client in clients:
            await client.aclose()

    assert sorted(key.name for key in keys) == [f"race-{i}" for i in range(5)]
