"""JWT callers through the gateway on loopback, beside gateway keys.

The gateway fetches its signing keys from a JWKS server started here on
127.0.0.1. Each test runs once with the embedded back end and once with the
Redis server on 127.0.0.1:6379, unless it builds its own gateway.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from llmgw.admin.records import Tenant
from llmgw.admin.redis_store import RedisStore
from llmgw.config import AuthConfig, JWTClaims, JWTConfig, parse_config
from llmgw.errors import BackendUnavailable
from llmgw.limits.spec import LimitSpec
from llmgw.pipeline.authenticate import Authenticator, Principal
from llmgw.pipeline.jwt_auth import JWTAuthenticator, StaticKeySource
from llmgw.server import StartupError, _start
from tests.integration.gateway_harness import (
    DEV_KEY,
    Harness,
    gateway_config,
    running_gateway,
)
from tests.integration.mock_upstream import PROVIDER_KEY

REDIS_URL = "redis://127.0.0.1:6379/15"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ISSUER = "https://idp.example"
AUDIENCE = "llmgw"
KID = "signing-1"
# Short, so that a test observes the refresh loop running and then stopped.
REFRESH_SECONDS = 0.3

# Tenants of the config file: acme has team ml, which allows 1 request a
# minute, and small-org allows 2 requests a minute for all its callers.
TENANTS = (
    "tenants: [{name: acme, teams: [{name: ml, limits: {requests_per_minute: 1}}]},"
    " {name: small-org, limits: {requests_per_minute: 2}}]"
)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class JWKSServer:
    """A JWKS endpoint on loopback that publishes one RSA public key."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    fetches: int = 0
    server: TestServer | None = None

    def publish(self, key: rsa.RSAPrivateKey, kid: str) -> None:
        jwk = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, use="sig", alg="RS256")
        self.document = {"keys": [jwk]}

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(self.document)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/jwks.json"))


@pytest.fixture
async def jwks(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[JWKSServer]:
    state = JWKSServer()
    state.publish(signing_key, KID)
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    state.server = TestServer(app, host="127.0.0.1")
    await state.server.start_server()
    yield state
    await state.server.close()


def config_lines(*lines: str) -> str:
    """Join top-level YAML lines for running_gateway, which dedents its
    config template by the template's own eight spaces."""
    return "\n        ".join(lines)


def jwt_section(jwks_url: str, claims: str = "{tenant: org, team: team}") -> str:
    return (
        f"auth: {{jwt: {{issuer: '{ISSUER}', audience: {AUDIENCE}, "
        f"jwks_url: '{jwks_url}', jwks_refresh_seconds: {REFRESH_SECONDS}, "
        f"claims: {claims}}}}}"
    )


def sign(
    key: rsa.RSAPrivateKey,
    *,
    subject: str = "alice",
    kid: str = KID,
    expires_in: int = 600,
    **claims: Any,
) -> str:
    """Sign an RS256 token for the gateway. ``claims`` add or replace claims."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + expires_in,
    }
    payload.update(claims)
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def chat_body() -> dict[str, Any]:
    return {"model": "small", "messages": [{"role": "user", "content": "Hi"}]}


async def delete_redis_keys(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def gw(
    request: pytest.FixtureRequest, tmp_path: Path, jwks: JWKSServer
) -> AsyncIterator[Harness]:
    """A gateway with the config tenants above and JWTs that map the claims
    ``org`` to the tenant and ``team`` to the team."""
    prefix = f"llmgw-jwt-test-{uuid.uuid4().hex[:8]}:"
    redis_url = REDIS_URL if request.param == "redis" else None
    extra = config_lines(TENANTS, jwt_section(jwks.url))
    async with running_gateway(tmp_path, redis_url, prefix, extra) as harness:
        yield harness
    if redis_url:
        await delete_redis_keys(prefix)


async def openai_error(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """Return the ``error`` object, checking that the body has OpenAI's shape."""
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_valid_token_served_and_recorded(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, org="acme")
    response = await gw.post(CHAT, chat_body(), key=token)
    assert response.status == 200
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Hello there!"

    [seen] = gw.upstream.requests
    assert seen.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert all(token not in value for value in seen.headers.values())

    [row] = await gw.ledger_rows()
    assert row["key_name"] == "jwt:alice"
    assert row["tenant"] == "acme"
    assert row["status"] == 200
    assert row["input_tokens"] == 11


async def test_token_in_x_api_key_accepted(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    headers = {"x-api-key": sign(signing_key, subject="bob", org="acme")}
    response = await gw.post(CHAT, chat_body(), key=None, headers=headers)
    assert response.status == 200
    [row] = await gw.ledger_rows()
    assert row["key_name"] == "jwt:bob"


async def test_gateway_key_works_beside_jwt(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    by_key = await gw.post(CHAT, chat_body(), key=DEV_KEY)
    by_token = await gw.post(CHAT, chat_body(), key=sign(signing_key, org="acme"))
    assert by_key.status == 200
    assert by_token.status == 200
    rows = await gw.ledger_rows()
    assert sorted(row["key_name"] for row in rows) == ["dev", "jwt:alice"]
    assert [row["tenant"] for row in rows] == ["acme", "acme"]


async def test_invalid_tokens_get_openai_401(
    gw: Harness,
    signing_key: rsa.RSAPrivateKey,
    other_key: rsa.RSAPrivateKey,
) -> None:
    cases = {
        "expired": (
            sign(signing_key, org="acme", expires_in=-3600),
            "has expired",
        ),
        "wrong audience": (
            sign(signing_key, org="acme", aud="another-service"),
            "audience (aud) is not this gateway",
        ),
        "wrong issuer": (
            sign(signing_key, org="acme", iss="https://evil.example"),
            "issuer (iss) is not",
        ),
        "other key, same kid": (
            sign(other_key, org="acme"),
            "signature is invalid",
        ),
        "other key, unknown kid": (
            sign(other_key, org="acme", kid="signing-2"),
            "is not one of the identity provider's signing keys",
        ),
    }
    for case, (token, expected) in cases.items():
        response = await gw.post(CHAT, chat_body(), key=token)
        assert response.status == 401, case
        error = await openai_error(response)
        assert error["type"] == "invalid_request_error", case
        assert error["code"] == "invalid_api_key", case
        assert expected in error["message"], (case, error["message"])
        assert token not in error["message"], case
    assert gw.upstream.requests == []


async def test_messages_route_anthropic_401(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    body = {
        "model": "small",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    headers = {"x-api-key": sign(signing_key, org="acme", expires_in=-3600)}
    response = await gw.post(MESSAGES, body, key=None, headers=headers)
    assert response.status == 401
    error = await response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "authentication_error"
    assert "has expired" in error["error"]["message"]


async def test_tenant_limit_counts_every_subject(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    # small-org allows 2 requests a minute, whichever of its callers sends them.
    statuses = []
    for subject in ("alice", "bob", "carol"):
        token = sign(signing_key, subject=subject, org="small-org")
        response = await gw.post(CHAT, chat_body(), key=token)
        statuses.append(response.status)
    assert statuses == [200, 200, 429]
    assert int(response.headers["Retry-After"]) >= 1
    error = await openai_error(response)
    assert error["code"] == "rate_limit_exceeded"

    rows = await gw.ledger_rows()
    assert [row["key_name"] for row in rows] == ["jwt:alice", "jwt:bob", "jwt:carol"]
    assert {row["tenant"] for row in rows} == {"small-org"}
    assert [row["status"] for row in rows] == [200, 200, 429]


async def test_team_limit_applies_to_team_only(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    # Team ml of acme allows 1 request a minute. acme itself has no limit.
    team_token = sign(signing_key, org="acme", team="ml")
    tenant_token = sign(signing_key, subject="bob", org="acme")
    first = await gw.post(CHAT, chat_body(), key=team_token)
    second = await gw.post(CHAT, chat_body(), key=team_token)
    outside_team = await gw.post(CHAT, chat_body(), key=tenant_token)
    assert first.status == 200
    assert second.status == 429
    assert "team acme/ml" in (await openai_error(second))["message"]
    assert outside_team.status == 200


async def test_store_tenant_limits_jwt_callers(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    now = time.time()
    tenant = Tenant(
        name="store-org",
        created=now,
        updated=now,
        limits=LimitSpec(requests_per_minute=1),
    )
    await gw.gateway.store.create_tenant(tenant)
    token = sign(signing_key, org="store-org")
    first = await gw.post(CHAT, chat_body(), key=token)
    second = await gw.post(CHAT, chat_body(), key=token)
    assert first.status == 200
    assert second.status == 429


async def test_token_without_tenant_rejected(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    for case, token in {
        "no claim": sign(signing_key),
        "empty claim": sign(signing_key, org=""),
        "team only": sign(signing_key, team="ml"),
    }.items():
        response = await gw.post(CHAT, chat_body(), key=token)
        assert response.status == 401, case
        error = await openai_error(response)
        assert "no tenant claim ('org')" in error["message"], (case, error)
    assert gw.upstream.requests == []


async def test_unknown_or_invalid_scope_rejected(
    gw: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    cases = {
        "unknown tenant": (
            sign(signing_key, org="nobody"),
            "tenant 'nobody' is not a tenant of this gateway",
        ),
        "unknown team": (
            sign(signing_key, org="acme", team="sales"),
            "team 'sales' is not a team of tenant 'acme'",
        ),
        "invalid tenant name": (
            sign(signing_key, org="{acme}"),
            "tenant '{acme}' is not a valid tenant name",
        ),
        "invalid team name": (
            sign(signing_key, org="acme", team="ml/x"),
            "team 'ml/x' is not a valid team name",
        ),
        "subject too long": (
            sign(signing_key, subject="s" * 257, org="acme"),
            "is longer than 256 characters",
        ),
    }
    for case, (token, expected) in cases.items():
        response = await gw.post(CHAT, chat_body(), key=token)
        assert response.status == 401, case
        error = await openai_error(response)
        assert expected in error["message"], (case, error["message"])
    assert gw.upstream.requests == []


async def test_tenantless_token_allowed_without_tenants(
    tmp_path: Path, jwks: JWKSServer, signing_key: rsa.RSAPrivateKey
) -> None:
    # No tenants in the config file and no tenant claim mapped: the caller
    # is counted at no tenant, and a team claim means nothing.
    extra = jwt_section(jwks.url, claims="{user: email, team: team}")
    async with running_gateway(tmp_path, None, "unused:", extra) as gw:
        token = sign(signing_key, team="ml", email="alice@example.com")
        response = await gw.post(CHAT, chat_body(), key=token)
        assert response.status == 200
        principal = await gw.gateway.auth.authenticate(
            {"Authorization": f"Bearer {token}"}
        )
        # With the user read from another claim, the subject's length is
        # checked by the gateway's own rule.
        long_subject = sign(signing_key, subject="s" * 257)
        rejected = await gw.post(CHAT, chat_body(), key=long_subject)
        assert rejected.status == 401
        error = await openai_error(rejected)
        assert "subject (sub) is longer than 256 characters" in error["message"]
        rows = await gw.ledger_rows()
    assert rows[0]["key_name"] == "jwt:alice"
    assert rows[0]["tenant"] is None
    assert principal.key_name == "jwt:alice"
    assert principal.user == "alice@example.com"
    assert principal.team is None
    assert [scope.kind for scope in principal.scopes] == ["key"]


async def test_tenants_without_claim_reject_tokens(
    tmp_path: Path, jwks: JWKSServer, signing_key: rsa.RSAPrivateKey
) -> None:
    # Tenants in the config file but no tenant claim mapped: no JWT caller
    # can be counted under a tenant, so every token is rejected.
    extra = config_lines(TENANTS, jwt_section(jwks.url, claims="{user: sub}"))
    with capture_logs() as logs:
        async with running_gateway(tmp_path, None, "unused:", extra) as gw:
            token = sign(signing_key, org="acme")
            response = await gw.post(CHAT, chat_body(), key=token)
            assert response.status == 401
            error = await openai_error(response)
            assert "auth.jwt.claims.tenant names no claim" in error["message"]
            by_key = await gw.post(CHAT, chat_body(), key=DEV_KEY)
            assert by_key.status == 200
    events = [entry["event"] for entry in logs]
    assert "jwt_rejected_without_tenant_claim" in events


async def wait_for_fetches(server: JWKSServer, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while server.fetches < count:
        assert time.monotonic() < deadline, f"{server.fetches} fetches, not {count}"
        await asyncio.sleep(0.02)


async def test_jwks_refresh_runs_until_shutdown(
    tmp_path: Path, jwks: JWKSServer
) -> None:
    extra = config_lines(TENANTS, jwt_section(jwks.url))
    async with running_gateway(tmp_path, None, "unused:", extra):
        # No request yet: start-up began the fetches, and they repeat.
        await wait_for_fetches(jwks, 1, within=5)
        await wait_for_fetches(jwks, 3, within=5)
    fetches_at_shutdown = jwks.fetches
    refreshes = [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("jwks-") and not task.done()
    ]
    assert refreshes == []
    await asyncio.sleep(REFRESH_SECONDS * 3)
    assert jwks.fetches == fetches_at_shutdown


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_private_key_pem_fails_startup(
    tmp_path: Path, signing_key: rsa.RSAPrivateKey
) -> None:
    config = gateway_config("http://127.0.0.1:9", tmp_path / "ledger.db", None, "")
    jwt_config = JWTConfig(
        issuer=ISSUER, audience=AUDIENCE, public_key=private_pem(signing_key)
    )
    # Port 0, so that a start-up that wrongly gets as far as listening takes
    # a free port.
    server = replace(config.server, port=0)
    config = replace(config, server=server, auth=AuthConfig(jwt=jwt_config))
    with pytest.raises(StartupError, match="is a private key"):
        await _start(config, reuse_port=False)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )


async def authenticate_without_store(
    signing_key: rsa.RSAPrivateKey, on_unavailable: str, tenant: str
) -> Principal | BackendUnavailable:
    """Authenticate a token for ``tenant`` while the Redis store is unreachable.

    Return the principal, or the exception that authentication raised.
    """
    # Nothing listens on port 1, so the store is never fresh.
    config = parse_config(
        f"redis: {{url: 'redis://127.0.0.1:1/0', on_unavailable: {on_unavailable}}}\n"
        + TENANTS
        + "\n",
        "test.yaml",
    )
    verifier = JWTAuthenticator(
        StaticKeySource(public_pem(signing_key)),
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=("RS256",),
        claims=JWTClaims(tenant="org"),
    )
    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix="unused:")
    await store.open()
    authenticator = Authenticator(config, store, jwt=verifier)
    headers = {"Authorization": f"Bearer {sign(signing_key, org=tenant)}"}
    try:
        return await authenticator.authenticate(headers)
    except BackendUnavailable as exc:
        return exc
    finally:
        await store.close()


async def test_store_down_fail_open_counts_no_tenant(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    principal = await authenticate_without_store(signing_key, "fail_open", "managed")
    assert isinstance(principal, Principal)
    assert principal.key_name == "jwt:alice"
    assert principal.tenant == "managed"
    assert [scope.kind for scope in principal.scopes] == ["key"]


async def test_store_down_fail_closed_rejects(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    # A tenant of the config file needs no store. Any other needs the store.
    config_tenant = await authenticate_without_store(
        signing_key, "fail_closed", "small-org"
    )
    store_tenant = await authenticate_without_store(
        signing_key, "fail_closed", "managed"
    )
    assert isinstance(config_tenant, Principal)
    assert [scope.kind for scope in config_tenant.scopes] == ["key", "tenant"]
    assert isinstance(store_tenant, BackendUnavailable)
