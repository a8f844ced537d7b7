"""JWT verification, key loading, claim mapping and JWT detection, without I/O.

Key sets fetched from a JWKS server are tested in
tests/integration/test_jwt_jwks.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from llmgw.config import JWTClaims, JWTConfig, Secret
from llmgw.errors import AuthenticationFailed
from llmgw.pipeline.jwt_auth import (
    JWKSKeySource,
    JWTAuthenticator,
    JWTIdentity,
    StaticKeySource,
    VerificationKey,
    load_pem_public_key,
    looks_like_jwt,
    parse_jwks,
    resolve_claim,
)

ISSUER = "https://idp.example"
AUDIENCE = "llmgw"


def public_pem(key: Any) -> str:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def private_pem(key: Any) -> str:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(
    key: Any,
    algorithm: str = "RS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


RS256_HEADER = b64url(b'{"alg":"RS256"}')
FAKE_SIGNATURE = b64url(b"x" * 256)


def unsigned_token(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """Build ``header.payload.`` by hand, as an attacker would."""
    return f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(payload))}."


def authenticator(
    key: Any,
    algorithms: Sequence[str] = ("RS256",),
    claim_names: JWTClaims | None = None,
    leeway_seconds: float = 30.0,
) -> JWTAuthenticator:
    return JWTAuthenticator(
        StaticKeySource(public_pem(key)),
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=algorithms,
        claims=claim_names or JWTClaims(),
        leeway_seconds=leeway_seconds,
    )


async def rejection(auth: JWTAuthenticator, token: str) -> str:
    """Return the message of the AuthenticationFailed that ``token`` raises."""
    with pytest.raises(AuthenticationFailed) as caught:
        await auth.authenticate(token)
    message = caught.value.message
    assert token not in message
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in message
    return message


# Detection


def test_looks_like_jwt_accepts_signed_token(rsa_key: rsa.RSAPrivateKey) -> None:
    assert looks_like_jwt(sign(rsa_key))


def test_looks_like_jwt_accepts_unsigned_token() -> None:
    assert looks_like_jwt(unsigned_token({"alg": "none"}, claims()))


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param("sk-llmgw-3q2-8ZpWc_1xYfGk0aL9bT7uVn4mRr", id="gateway-key"),
        pytest.param("sk-proj-abcdef", id="provider-key"),
        pytest.param("abc.def.ghi", id="header-not-json"),
        pytest.param(f"{b64url(b'[1]')}.e30.sig", id="header-json-array"),
        pytest.param(f"{b64url(b'{}')}.e30", id="two-segments"),
        pytest.param(f"{b64url(b'{}')}.e30.sig.extra", id="four-segments"),
        pytest.param(f"{b64url(b'{}')}..sig", id="empty-payload"),
        pytest.param(f"{b64url(b'{}')}.e30.s+g", id="non-base64url-signature"),
        pytest.param("", id="empty"),
    ],
)
def test_looks_like_jwt_rejects_other_credentials(credential: str) -> None:
    assert not looks_like_jwt(credential)


# Valid tokens


async def test_rs256_token_verified(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    identity = await auth.authenticate(sign(rsa_key, headers={"kid": "any"}))
    assert identity.subject == "user-123"
    assert identity.user == "user-123"
    assert identity.team is None
    assert identity.tenant is None
    assert identity.claims["iss"] == ISSUER


async def test_es256_token_verified(ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = authenticator(ec_key, algorithms=("RS256", "ES256"))
    identity = await auth.authenticate(sign(ec_key, "ES256"))
    assert identity.subject == "user-123"


async def test_eddsa_token_verified(ed_key: ed25519.Ed25519PrivateKey) -> None:
    auth = authenticator(ed_key, algorithms=("EdDSA",))
    identity = await auth.authenticate(sign(ed_key, "EdDSA"))
    assert identity.subject == "user-123"


async def test_ps256_token_verified(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key, algorithms=("PS256",))
    identity = await auth.authenticate(sign(rsa_key, "PS256"))
    assert identity.subject == "user-123"


async def test_audience_list_in_token_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = sign(rsa_key, aud=["other-service", AUDIENCE])
    assert (await auth.authenticate(token)).subject == "user-123"


async def test_certificate_pem_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    auth = JWTAuthenticator(
        StaticKeySource(pem), issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"]
    )
    assert (await auth.authenticate(sign(rsa_key))).subject == "user-123"


# Time claims


async def test_expired_token_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = sign(rsa_key, exp=int(time.time()) - 120, iat=int(time.time()) - 900)
    assert "expired" in await rejection(auth, token)


async def test_expired_within_leeway_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key, leeway_seconds=30)
    token = sign(rsa_key, exp=int(time.time()) - 10, iat=int(time.time()) - 900)
    assert (await auth.authenticate(token)).subject == "user-123"


async def test_nbf_in_future_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = sign(rsa_key, nbf=int(time.time()) + 300)
    assert "not valid yet" in await rejection(auth, token)


async def test_nbf_within_leeway_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key, leeway_seconds=30)
    token = sign(rsa_key, nbf=int(time.time()) + 10, iat=int(time.time()) + 10)
    assert (await auth.authenticate(token)).subject == "user-123"


async def test_iat_in_future_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = sign(rsa_key, iat=int(time.time()) + 300, nbf=None)
    assert "not valid yet" in await rejection(auth, token)


async def test_missing_exp_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    assert "'exp'" in await rejection(auth, sign(rsa_key, exp=None))


async def test_non_numeric_exp_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    message = await rejection(auth, sign(rsa_key, exp="tomorrow"))
    assert "invalid" in message


# Issuer, audience and subject


async def test_wrong_audience_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    message = await rejection(auth, sign(rsa_key, aud="another-api"))
    assert "audience" in message
    assert "'llmgw'" in message


async def test_missing_audience_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    assert "'aud'" in await rejection(auth, sign(rsa_key, aud=None))


async def test_wrong_issuer_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    message = await rejection(auth, sign(rsa_key, iss="https://evil.example"))
    assert "issuer" in message
    assert "evil" not in message


async def test_missing_issuer_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    assert "'iss'" in await rejection(auth, sign(rsa_key, iss=None))


async def test_missing_subject_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    assert "'sub'" in await rejection(auth, sign(rsa_key, sub=None))


# Signatures and algorithm confusion


async def test_alg_none_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = unsigned_token({"alg": "none", "typ": "JWT"}, claims())
    message = await rejection(auth, token)
    assert "'none' is not accepted" in message


async def test_hs256_with_public_key_secret_rejected(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # The classic confusion attack: HMAC keyed with the verifier's public PEM.
    auth = authenticator(rsa_key, algorithms=("RS256", "ES256"))
    signing_input = unsigned_token({"alg": "HS256", "typ": "JWT"}, claims())[:-1]
    secret = public_pem(rsa_key).encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    message = await rejection(auth, token)
    assert "'HS256' is not accepted" in message


def test_hmac_algorithm_cannot_be_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="unsupported JWT algorithm 'HS256'"):
        authenticator(rsa_key, algorithms=("RS256", "HS256"))


def test_none_algorithm_cannot_be_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="unsupported JWT algorithm 'none'"):
        authenticator(rsa_key, algorithms=("none",))


async def test_alg_not_matching_key_type_rejected(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    # The verifier has an EC key, and the token claims RS256.
    auth = authenticator(ec_key, algorithms=("RS256", "ES256"))
    message = await rejection(auth, sign(rsa_key, "RS256"))
    assert "does not match the type of its signing key" in message


async def test_es256_with_p384_key_rejected() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    auth = authenticator(p384, algorithms=("ES256", "ES384"))
    header = {"alg": "ES256", "typ": "JWT"}
    token = unsigned_token(header, claims()) + b64url(b"\x00" * 64)
    message = await rejection(auth, token)
    assert "does not match" in message


class PublishedKeys:
    """A key source with one key that its JWK restricts to ``algorithm``."""

    def __init__(self, key: Any, algorithm: str) -> None:
        self.key = VerificationKey(key.public_key(), algorithm)

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get_key(self, kid: str | None) -> VerificationKey:
        return self.key


async def test_alg_not_matching_jwk_alg_rejected(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth = JWTAuthenticator(
        PublishedKeys(rsa_key, "PS256"),
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=("RS256", "PS256"),
    )
    message = await rejection(auth, sign(rsa_key, "RS256"))
    assert "published for (PS256)" in message
    assert (await auth.authenticate(sign(rsa_key, "PS256"))).subject == "user-123"


async def test_foreign_key_signature_rejected(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = authenticator(rsa_key)
    message = await rejection(auth, sign(other_rsa_key))
    assert message == "The bearer token's signature is invalid."


async def test_tampered_payload_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    header, _, signature = sign(rsa_key).split(".")
    forged = b64url(orjson.dumps(claims(sub="admin")))
    message = await rejection(auth, f"{header}.{forged}.{signature}")
    assert "signature is invalid" in message


async def test_crit_header_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = sign(rsa_key, headers={"crit": ["exp"]})
    assert "'crit'" in await rejection(auth, token)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("abc.def.ghi", id="header-not-json"),
        pytest.param("eyJhbGciOiJSUzI1NiJ9.e30", id="two-segments"),
        pytest.param(f"{RS256_HEADER}.%%%.{FAKE_SIGNATURE}", id="payload-symbols"),
        pytest.param(f"{RS256_HEADER}.abcde.{FAKE_SIGNATURE}", id="payload-length"),
        pytest.param(
            f"{RS256_HEADER}.{b64url(b'[1]')}.{FAKE_SIGNATURE}",
            id="payload-json-array",
        ),
        pytest.param(
            f"{RS256_HEADER}.{b64url(b'{')}.{FAKE_SIGNATURE}", id="payload-not-json"
        ),
    ],
)
async def test_malformed_token_rejected(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    auth = authenticator(rsa_key)
    message = await rejection(auth, token)
    assert "well-formed" in message or "invalid" in message


async def test_signed_non_object_payload_rejected(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth = authenticator(rsa_key)
    token = jwt.api_jws.encode(b"[1]", rsa_key, "RS256")
    message = await rejection(auth, token)
    assert "must be a json object" in message


async def test_header_without_alg_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = unsigned_token({"typ": "JWT"}, claims()) + "c2ln"
    assert "no 'alg'" in await rejection(auth, token)


async def test_non_string_kid_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key)
    token = unsigned_token({"alg": "RS256", "kid": 7}, claims()) + FAKE_SIGNATURE
    assert "kid" in await rejection(auth, token)


# Claim mapping


async def test_claims_mapped_from_paths(rsa_key: rsa.RSAPrivateKey) -> None:
    names = JWTClaims(user="email", team="https://idp.example/team", tenant="org.id")
    auth = authenticator(rsa_key, claim_names=names)
    payload = claims(email="ada@example.com", org={"id": "acme", "name": "ACME"})
    payload["https://idp.example/team"] = "platform"
    identity = await auth.authenticate(jwt.encode(payload, rsa_key, "RS256"))
    assert identity.subject == "user-123"
    assert identity.user == "ada@example.com"
    assert identity.team == "platform"
    assert identity.tenant == "acme"
    assert identity.claims["org"] == {"id": "acme", "name": "ACME"}


async def test_missing_claims_map_to_none(rsa_key: rsa.RSAPrivateKey) -> None:
    names = JWTClaims(user="email", team="groups.primary", tenant="org.id")
    auth = authenticator(rsa_key, claim_names=names)
    identity = await auth.authenticate(sign(rsa_key, org={"name": "ACME"}))
    assert identity.subject == "user-123"
    assert identity.user is None
    assert identity.team is None
    assert identity.tenant is None


async def test_empty_and_null_claims_map_to_none(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    auth = authenticator(rsa_key, claim_names=JWTClaims(team="team", tenant="org"))
    payload = dict(claims(), team="", org=None)
    identity = await auth.authenticate(jwt.encode(payload, rsa_key, "RS256"))
    assert identity.team is None
    assert identity.tenant is None


async def test_integer_claim_mapped_as_text(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key, claim_names=JWTClaims(tenant="org.number"))
    identity = await auth.authenticate(sign(rsa_key, org={"number": 42}))
    assert identity.tenant == "42"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param(["a", "b"], "list", id="list"),
        pytest.param({"id": "x"}, "dict", id="object"),
        pytest.param(True, "bool", id="boolean"),
        pytest.param(1.5, "float", id="float"),
    ],
)
async def test_non_text_claim_rejected(
    rsa_key: rsa.RSAPrivateKey, value: Any, type_name: str
) -> None:
    auth = authenticator(rsa_key, claim_names=JWTClaims(team="groups"))
    message = await rejection(auth, sign(rsa_key, groups=value))
    assert "'groups'" in message
    assert "team" in message
    assert f"got {type_name}" in message


async def test_overlong_claim_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = authenticator(rsa_key, claim_names=JWTClaims(tenant="org"))
    message = await rejection(auth, sign(rsa_key, org="x" * 300))
    assert "longer than 256 characters" in message


def test_resolve_claim_prefers_whole_name() -> None:
    payload = {"org.id": "flat", "org": {"id": "nested"}}
    assert resolve_claim(payload, "org.id") == "flat"
    assert resolve_claim({"org": {"id": "nested"}}, "org.id") == "nested"
    assert resolve_claim({"org": "acme"}, "org.id") is None
    assert resolve_claim({}, "org") is None


# Keys and configuration


def test_private_key_pem_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="private key"):
        load_pem_public_key(private_pem(rsa_key))


def test_short_rsa_key_rejected() -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits"):
        load_pem_public_key(public_pem(short))


def test_garbage_pem_rejected() -> None:
    with pytest.raises(ValueError):
        load_pem_public_key("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"issuer": ""}, "issuer is required", id="no-issuer"),
        pytest.param({"audience": ""}, "audience is required", id="no-audience"),
        pytest.param({"algorithms": ()}, "algorithm is required", id="no-algs"),
        pytest.param({"leeway_seconds": -1}, "invalid JWT leeway", id="leeway"),
    ],
)
def test_authenticator_settings_validated(
    rsa_key: rsa.RSAPrivateKey, changes: dict[str, Any], message: str
) -> None:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ("RS256",),
        "leeway_seconds": 30.0,
    }
    settings.update(changes)
    with pytest.raises(ValueError, match=message):
        JWTAuthenticator(StaticKeySource(public_pem(rsa_key)), **settings)


async def test_from_config_with_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    config = JWTConfig(
        issuer=ISSUER,
        audience=AUDIENCE,
        public_key=Secret(public_pem(rsa_key)),
        algorithms=("RS256",),
        claims=JWTClaims(user="sub", tenant="org"),
        leeway_seconds=5,
    )
    auth = JWTAuthenticator.from_config(config, session=None)  # type: ignore[arg-type]
    identity: JWTIdentity = await auth.authenticate(sign(rsa_key, org="acme"))
    assert identity.tenant == "acme"
    assert auth.leeway_seconds == 5


def test_from_config_with_jwks_url() -> None:
    config = JWTConfig(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url="http://127.0.0.1:9/jwks.json",
        jwks_refresh_seconds=60,
    )
    auth = JWTAuthenticator.from_config(config, session=None)  # type: ignore[arg-type]
    assert isinstance(auth.keys, JWKSKeySource)
    assert auth.keys.url == "http://127.0.0.1:9/jwks.json"
    assert auth.keys.refresh_seconds == 60
    assert auth.algorithms == ("RS256",)


@pytest.mark.parametrize(
    ("jwks_url", "public_key", "message"),
    [
        pytest.param(None, None, "either jwks_url or public_key", id="neither"),
        pytest.param("http://127.0.0.1:9/jwks.json", "pem", "not both", id="both"),
    ],
)
def test_from_config_needs_one_key_source(
    jwks_url: str | None, public_key: str | None, message: str
) -> None:
    config = JWTConfig(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url, public_key=public_key
    )
    with pytest.raises(ValueError, match=message):
        JWTAuthenticator.from_config(config, session=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("refresh_seconds", 0, id="refresh"),
        pytest.param("fetch_timeout", 0, id="fetch-timeout"),
        pytest.param("wait_timeout", -1, id="wait-timeout"),
        pytest.param("min_refetch_seconds", -1, id="min-refetch"),
    ],
)
def test_jwks_source_settings_validated(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=f"invalid JWKS {option}"):
        JWKSKeySource(
            "http://127.0.0.1:9/jwks.json",
            None,  # type: ignore[arg-type]
            **options,
        )


def test_parse_jwks_skips_unusable_keys(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    signing = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    encryption = dict(signing, use="enc", kid="enc-1")
    private = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key))
    private["kid"] = "private-1"
    hmac_key = {"kty": "oct", "k": b64url(b"secret"), "kid": "oct-1"}
    restricted = dict(signing, kid="ps-1", alg="PS256")
    entries = [dict(signing, kid="sig-1"), restricted, encryption, private, hmac_key]
    document = orjson.dumps({"keys": [*entries, "x"]})
    keys = parse_jwks(document)
    assert set(keys.by_kid) == {"sig-1", "ps-1"}
    assert keys.by_kid["sig-1"].algorithm is None
    assert keys.by_kid["ps-1"].algorithm == "PS256"
    assert keys.unnamed == ()


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"{}", id="no-keys"),
        pytest.param(b'{"keys": []}', id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', id="hmac-only"),
    ],
)
def test_parse_jwks_rejects_unusable_document(document: bytes) -> None:
    with pytest.raises(ValueError):
        parse_jwks(document)
