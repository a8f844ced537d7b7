"""JWT verification with keys fetched from a JWKS server on loopback.

The server is a real aiohttp application whose document, status and delay
each test changes, and which counts the fetches it receives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structlog.testing import capture_logs

from llmgw.errors import AuthenticationFailed, BackendUnavailable
from llmgw.pipeline.jwt_auth import MAX_JWKS_BYTES, JWKSKeySource, JWTAuthenticator

ISSUER = "https://idp.example"
AUDIENCE = "llmgw"


def public_jwk(key: Any, kid: str | None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk: dict[str, Any] = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    else:
        jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    if kid is not None:
        jwk["kid"] = kid
    jwk["use"] = "sig"
    return jwk


def sign(key: Any, kid: str | None, algorithm: str = "RS256") -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"user-{kid}",
        "iat": now,
        "exp": now + 600,
    }
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


@dataclass
class JWKSServer:
    """A JWKS endpoint whose responses the test controls."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    delay: float = 0.0
    body: bytes | None = None  # sent instead of the document when set
    chunked: bool = False
    fetches: int = 0
    server: TestServer | None = None

    def publish(self, *entries: tuple[Any, str | None]) -> None:
        self.document = {"keys": [public_jwk(key, kid) for key, kid in entries]}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status in (301, 302):
            return web.Response(status=self.status, headers={"Location": "/other"})
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        body = self.body if self.body is not None else orjson.dumps(self.document)
        if not self.chunked:
            return web.Response(body=body, content_type="application/json")
        # Chunked transfer encoding, so the client learns no length up front.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start : start + 64 * 1024])
        await response.write_eof()
        return response

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/jwks.json"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rotated_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def jwks() -> AsyncIterator[JWKSServer]:
    state = JWKSServer()
    app = web.Application()
    app.router.add_get("/jwks.json", state.handle)
    state.server = TestServer(app, host="127.0.0.1")
    await state.server.start_server()
    yield state
    await state.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def sources() -> AsyncIterator[list[JWKSKeySource]]:
    """Key sources to close after the test."""
    created: list[JWKSKeySource] = []
    yield created
    for source in created:
        await source.close()


@pytest.fixture
def make_authenticator(
    jwks: JWKSServer,
    session: aiohttp.ClientSession,
    sources: list[JWKSKeySource],
) -> Any:
    def make(**options: Any) -> tuple[JWTAuthenticator, JWKSKeySource]:
        source = JWKSKeySource(jwks.url, session, **options)
        sources.append(source)
        auth = JWTAuthenticator(
            source, issuer=ISSUER, audience=AUDIENCE, algorithms=("RS256", "ES256")
        )
        return auth, source

    return make


async def wait_for_kid(source: JWKSKeySource, kid: str, within: float) -> None:
    """Wait until a finished fetch has stored the key ``kid``."""
    deadline = time.monotonic() + within
    while source.keys is None or kid not in source.keys.by_kid:
        assert time.monotonic() < deadline, f"key {kid!r} not loaded"
        await asyncio.sleep(0.01)


async def wait_for_fetches(server: JWKSServer, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while server.fetches < count:
        assert time.monotonic() < deadline, f"{server.fetches} fetches, not {count}"
        await asyncio.sleep(0.01)


async def test_jwks_keys_verify_rs256_and_es256(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    jwks.publish((rsa_key, "rsa-1"), (ec_key, "ec-1"))
    auth, _ = make_authenticator()
    auth.start()
    rsa_identity = await auth.authenticate(sign(rsa_key, "rsa-1"))
    ec_identity = await auth.authenticate(sign(ec_key, "ec-1", "ES256"))
    assert rsa_identity.subject == "user-rsa-1"
    assert ec_identity.subject == "user-ec-1"
    assert jwks.fetches == 1


async def test_first_request_waits_for_first_fetch(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Without start(): the request itself starts the first fetch.
    jwks.publish((rsa_key, "rsa-1"))
    auth, _ = make_authenticator()
    identity = await auth.authenticate(sign(rsa_key, "rsa-1"))
    assert identity.subject == "user-rsa-1"
    assert jwks.fetches == 1


async def test_unknown_kid_triggers_one_refetch(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    rotated_key: rsa.RSAPrivateKey,
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, source = make_authenticator(min_refetch_seconds=0.0)
    await source.refresh()
    jwks.publish((rsa_key, "rsa-1"), (rotated_key, "rsa-2"))
    token = sign(rotated_key, "rsa-2")
    results = await asyncio.gather(*(auth.authenticate(token) for _ in range(20)))
    assert {identity.subject for identity in results} == {"user-rsa-2"}
    assert jwks.fetches == 2


async def test_unknown_kid_refetch_rate_limited(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    rotated_key: rsa.RSAPrivateKey,
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, source = make_authenticator(min_refetch_seconds=0.5)
    await source.refresh()
    for kid in ("unknown-1", "unknown-2", "unknown-3"):
        with pytest.raises(AuthenticationFailed, match=f"'{kid}' is not one of"):
            await auth.authenticate(sign(rotated_key, kid))
    assert jwks.fetches == 1

    await asyncio.sleep(0.6)
    jwks.publish((rsa_key, "rsa-1"), (rotated_key, "rsa-2"))
    identity = await auth.authenticate(sign(rotated_key, "rsa-2"))
    assert identity.subject == "user-rsa-2"
    assert jwks.fetches == 2


async def test_server_down_keeps_old_keys(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, source = make_authenticator(min_refetch_seconds=0.0)
    assert await source.refresh()
    assert jwks.server is not None
    await jwks.server.close()

    with capture_logs() as logs:
        assert not await source.refresh()
        # An unknown kid cannot be found, but the known one still verifies.
        with pytest.raises(AuthenticationFailed, match="'rsa-9' is not one of"):
            await auth.authenticate(sign(rsa_key, "rsa-9"))
        identity = await auth.authenticate(sign(rsa_key, "rsa-1"))
    assert identity.subject == "user-rsa-1"
    failures = [entry for entry in logs if entry["event"] == "jwks_fetch_failed"]
    assert len(failures) == 2
    assert failures[0]["kept_keys"] == 1
    assert failures[0]["url"] == source.url
    assert "ClientConnectorError" in failures[0]["error"]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        pytest.param(500, None, "HTTP 500", id="http-500"),
        pytest.param(302, None, "HTTP 302 to /other", id="redirect"),
        pytest.param(200, b"<html>", "JSONDecodeError", id="not-json"),
        pytest.param(200, b'{"keys": []}', "no usable key", id="empty-set"),
        pytest.param(200, b" " * (MAX_JWKS_BYTES + 1), "larger than", id="oversized"),
    ],
)
async def test_failed_fetch_keeps_old_keys(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    status: int,
    body: bytes | None,
    error: str,
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, source = make_authenticator()
    assert await source.refresh()
    jwks.status = status
    jwks.body = body
    with capture_logs() as logs:
        assert not await source.refresh()
    assert logs[-1]["event"] == "jwks_fetch_failed"
    assert error in logs[-1]["error"]
    identity = await auth.authenticate(sign(rsa_key, "rsa-1"))
    assert identity.subject == "user-rsa-1"


async def test_oversized_chunked_jwks_rejected(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    jwks.chunked = True
    auth, source = make_authenticator()
    assert await source.refresh()
    jwks.body = b" " * (MAX_JWKS_BYTES + 1)
    with capture_logs() as logs:
        assert not await source.refresh()
    assert "larger than" in logs[-1]["error"]
    assert (await auth.authenticate(sign(rsa_key, "rsa-1"))).subject == "user-rsa-1"


async def test_rotation_picked_up_by_refresh(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    rotated_key: rsa.RSAPrivateKey,
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    # A long refetch interval, so only the background refresh fetches again.
    auth, source = make_authenticator(refresh_seconds=0.3, min_refetch_seconds=60)
    auth.start()
    await wait_for_fetches(jwks, 1, within=2)
    assert (await auth.authenticate(sign(rsa_key, "rsa-1"))).subject == "user-rsa-1"

    jwks.publish((rotated_key, "rsa-2"))
    await wait_for_kid(source, "rsa-2", within=2)
    identity = await auth.authenticate(sign(rotated_key, "rsa-2"))
    assert identity.subject == "user-rsa-2"
    # The retired key is gone, and the rate limit stops a refetch for it.
    with pytest.raises(AuthenticationFailed, match="'rsa-1' is not one of"):
        await auth.authenticate(sign(rsa_key, "rsa-1"))
    assert jwks.fetches == 2


async def test_refresh_retries_after_failure(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    jwks.status = 503
    auth, source = make_authenticator(refresh_seconds=60, min_refetch_seconds=0.2)
    auth.start()
    await wait_for_fetches(jwks, 1, within=2)
    jwks.status = 200
    # The retry comes after min_refetch_seconds, not after refresh_seconds.
    await wait_for_kid(source, "rsa-1", within=2)
    assert jwks.fetches == 2


async def test_stalled_server_bounds_first_request(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    jwks.delay = 5.0
    auth, _ = make_authenticator(wait_timeout=0.3, fetch_timeout=10)
    auth.start()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="signing keys are not available"):
        await auth.authenticate(sign(rsa_key, "rsa-1"))
    elapsed = time.monotonic() - started
    # Far below the server's 5 s delay, with room for a loaded machine.
    assert 0.25 < elapsed < 2.0


async def test_server_down_at_start_fails_fast(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, source = make_authenticator(min_refetch_seconds=0.5)
    assert jwks.server is not None
    await jwks.server.close()
    token = sign(rsa_key, "rsa-1")
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            await auth.authenticate(token)
    # The first request fetched, the next two fell within the rate limit.
    assert source.fetch_count == 1


async def test_token_without_kid_uses_only_key(
    jwks: JWKSServer,
    make_authenticator: Any,
    rsa_key: rsa.RSAPrivateKey,
    rotated_key: rsa.RSAPrivateKey,
) -> None:
    jwks.publish((rsa_key, None))
    auth, source = make_authenticator(min_refetch_seconds=60)
    await source.refresh()
    assert (await auth.authenticate(sign(rsa_key, None))).subject == "user-None"

    jwks.publish((rsa_key, "rsa-1"), (rotated_key, "rsa-2"))
    await source.refresh()
    with pytest.raises(AuthenticationFailed, match="no key id"):
        await auth.authenticate(sign(rsa_key, None))


async def test_close_stops_refresh(
    jwks: JWKSServer, make_authenticator: Any, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.publish((rsa_key, "rsa-1"))
    auth, _ = make_authenticator(refresh_seconds=0.1)
    auth.start()
    await wait_for_fetches(jwks, 1, within=2)
    await auth.close()
    fetches = jwks.fetches
    await asyncio.sleep(0.3)
    assert jwks.fetches == fetches
