"""Authenticate: turn the caller's credential into a ``Principal``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llmgw.config import KeyConfig, KeyLimits
from llmgw.errors import AuthenticationFailed
from llmgw.limits.spec import LimitSpec, Scope


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the policies attached to its key."""

    key_name: str
    tenant: str | None
    models: tuple[str, ...] | None  # glob patterns; None allows every model
    limits: KeyLimits
    max_input_tokens: int | None
    max_output_tokens: int | None
    scopes: tuple[Scope, ...] = ()
    """The levels the request is counted at: key, then team, then tenant."""


def _key_scope(key: KeyConfig) -> Scope:
    limits = LimitSpec(
        requests_per_minute=key.limits.requests_per_minute,
        tokens_per_minute=key.limits.tokens_per_minute,
    )
    return Scope(kind="key", id=key.name, tenant=key.tenant, limits=limits)


class KeyStore:
    """Gateway keys by SHA-256 hex digest, so plaintext keys are never kept."""

    def __init__(self, keys: Iterable[KeyConfig]) -> None:
        self._by_hash: dict[str, Principal] = {
            key.key_sha256: Principal(
                key_name=key.name,
                tenant=key.tenant,
                models=key.models,
                limits=key.limits,
                max_input_tokens=key.max_input_tokens,
                max_output_tokens=key.max_output_tokens,
                scopes=(_key_scope(key),),
            )
            for key in keys
        }

    def lookup(self, plaintext: str) -> Principal | None:
        digest = hashlib.sha256(plaintext.encode()).hexdigest()
        return self._by_hash.get(digest)


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """Return the key from ``Authorization: Bearer`` or ``x-api-key``."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def authenticate(headers: Mapping[str, str], keys: KeyStore) -> Principal:
    credential = credential_from_headers(headers)
    if credential is None:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer <key>' "
            "or in the 'x-api-key' header."
        )
    principal = keys.lookup(credential)
    if principal is None:
        # The key itself is never echoed, not even in part.
        raise AuthenticationFailed("Invalid API key provided.")
    return principal
