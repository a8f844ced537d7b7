"""Authenticate: turn the caller's credential into a ``Principal``.

Keys from the config file are looked up in a dict. Managed keys, created
through the admin API, live in the admin store (SQLite or Redis). The
``Authenticator`` keeps what it found in a local cache, so the usual request
makes no store round trip. Every change in the store clears that cache at
once in the worker that made it, through the store's listeners. Every other
worker clears it within one second, through the Redis change feed (pub/sub
plus a polled version counter).

When ``auth.jwt`` is configured, a credential that has the form of a JWT is
verified as one, and any other credential is looked up as a gateway key. A
JWT caller's principal carries:

- ``key_name`` and ``key_id`` ``"jwt:<subject>"``, which the ledger records,
  and a key scope without limits. Only the team and tenant scopes limit it.
- the tenant and team of the mapped claims, with their limits and model
  globs. A claim that names a tenant or team the gateway does not know gets
  401, except in fail_open mode while the store is unreachable. A team
  claim is ignored when the token has no tenant.
- all models, within the team's and tenant's globs, and no token caps of
  its own, so the model's and the global caps apply.

A token without a tenant is rejected with 401 when the config file declares
tenants or ``auth.jwt.claims.tenant`` names a claim, because nothing else
would count the caller under a tenant. Otherwise the principal has no tenant
scope. Tenants that exist only in the admin store do not make a tenant
required.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

import structlog

from llmgw.config import SCOPE_NAME, SCOPE_NAME_RULE, Config, KeyConfig, TenantConfig
from llmgw.errors import AuthenticationFailed, BackendUnavailable
from llmgw.limits.spec import LimitSpec, Scope

if TYPE_CHECKING:
    # Imported when JWT authentication is configured: PyJWT and cryptography
    # take about 9 MB that a gateway without it does not need.
    from llmgw.admin.records import ManagedKey
    from llmgw.admin.store import Store
    from llmgw.pipeline.jwt_auth import JWTAuthenticator

log = structlog.get_logger("llmgw.authenticate")

# How long a failed lookup is remembered, so that a flood of one invalid key
# does not reach the store for every request. At most one second, because a
# key created meanwhile must start to work within that time.
MISS_TTL_SECONDS = 1.0
# Bounds on the cache, so a flood of distinct invalid keys cannot grow it
# without limit. The oldest entries go first.
MAX_CACHED_MISSES = 10_000
MAX_CACHED_KEYS = 100_000

CREDENTIAL_HEADERS = ("x-api-key", "x-goog-api-key")

# The prefix of a JWT caller's key name and key id, before the token's subject.
JWT_KEY_PREFIX = "jwt:"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, its scopes and the policies that apply."""

    key_name: str
    tenant: str | None
    models: tuple[str, ...] | None  # the key's model globs; None allows all
    max_input_tokens: int | None
    max_output_tokens: int | None
    scopes: tuple[Scope, ...] = ()
    """The levels the request is counted at: key, then team, then tenant,
    only those that exist."""
    key_id: str | None = None  # the managed key's id; the name for config keys
    team: str | None = None
    user: str | None = None
    scope_models: tuple[tuple[str, ...], ...] = ()
    """The model globs of the team and the tenant that set any. A model is
    allowed when it matches ``models`` and a glob of every entry here."""

    @property
    def limits(self) -> LimitSpec:
        """The limits of the key scope, empty when there is none."""
        for scope in self.scopes:
            if scope.kind == "key":
                return scope.limits
        return LimitSpec()

    def allows_model(self, model: str) -> bool:
        """Return whether the key, its team and its tenant all allow ``model``."""
        if self.models is not None and not _matches(model, self.models):
            return False
        return all(_matches(model, globs) for globs in self.scope_models)


def _matches(model: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(model, glob) for glob in globs)


class ScopeRecord(Protocol):
    """A tenant or a team, from the config file or the admin store."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> tuple[str, ...] | None: ...

    @property
    def limits(self) -> LimitSpec: ...


@dataclass(frozen=True)
class OrgScopes:
    """The tenant and team records a principal is counted under, if any."""

    tenant: ScopeRecord | None = None
    team: ScopeRecord | None = None


# The result of org_scopes in fail_open mode when the store is unreachable
# and nothing is cached. Compared by identity, to tell it from an unknown tenant.
_STORE_UNAVAILABLE = OrgScopes()


def build_principal(
    *,
    key_id: str,
    key_name: str,
    tenant_name: str | None,
    team_name: str | None,
    models: tuple[str, ...] | None,
    limits: LimitSpec,
    max_input_tokens: int | None,
    max_output_tokens: int | None,
    org: OrgScopes,
    user: str | None = None,
) -> Principal:
    """Build a key's principal from the key and its team and tenant records."""
    scopes = [Scope(kind="key", id=key_id, tenant=tenant_name, limits=limits)]
    scope_models: list[tuple[str, ...]] = []
    if org.team is not None and tenant_name is not None:
        team_id = f"{tenant_name}/{org.team.name}"
        scopes.append(
            Scope(kind="team", id=team_id, tenant=tenant_name, limits=org.team.limits)
        )
        if org.team.models is not None:
            scope_models.append(org.team.models)
    if org.tenant is not None:
        scopes.append(
            Scope(
                kind="tenant",
                id=org.tenant.name,
                tenant=org.tenant.name,
                limits=org.tenant.limits,
            )
        )
        if org.tenant.models is not None:
            scope_models.append(org.tenant.models)
    return Principal(
        key_name=key_name,
        tenant=tenant_name,
        models=models,
        max_input_tokens=max_input_tokens,
        max_output_tokens=max_output_tokens,
        scopes=tuple(scopes),
        key_id=key_id,
        team=team_name,
        user=user,
        scope_models=tuple(scope_models),
    )


def config_org_scopes(
    tenants: Mapping[str, TenantConfig], tenant: str | None, team: str | None
) -> OrgScopes | None:
    """Return the config file's records for a tenant and team.

    Returns None when the tenant is not in the config file, because it may
    be a tenant of the admin store.
    """
    if tenant is None:
        return OrgScopes()
    config_tenant = tenants.get(tenant)
    if config_tenant is None:
        return None
    config_team = config_tenant.team(team) if team is not None else None
    return OrgScopes(tenant=config_tenant, team=config_team)


def _config_key_principal(key: KeyConfig, org: OrgScopes) -> Principal:
    return build_principal(
        key_id=key.name,
        key_name=key.name,
        tenant_name=key.tenant,
        team_name=key.team,
        models=key.models,
        limits=key.limits,
        max_input_tokens=key.max_input_tokens,
        max_output_tokens=key.max_output_tokens,
        org=org,
    )


class KeyStore:
    """Gateway keys from the config file by SHA-256 hex digest, so plaintext
    keys are never kept.

    A key whose tenant is not under ``tenants`` gets no tenant or team scope
    here. ``Authenticator`` looks such tenants up in the admin store.
    """

    def __init__(
        self, keys: Iterable[KeyConfig], tenants: Iterable[TenantConfig] = ()
    ) -> None:
        tenants_by_name = {tenant.name: tenant for tenant in tenants}
        self._by_hash: dict[str, Principal] = {}
        self.store_scoped: dict[str, KeyConfig] = {}
        for key in keys:
            org = config_org_scopes(tenants_by_name, key.tenant, key.team)
            if org is None:
                self.store_scoped[key.key_sha256] = key
                org = OrgScopes()
            self._by_hash[key.key_sha256] = _config_key_principal(key, org)

    def lookup(self, plaintext: str) -> Principal | None:
        return self.lookup_digest(hash_secret(plaintext))

    def lookup_digest(self, digest: str) -> Principal | None:
        return self._by_hash.get(digest)


def hash_secret(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """Return the key from ``Authorization: Bearer``, ``x-api-key`` or
    ``x-goog-api-key``, in that order."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


def _missing_key() -> AuthenticationFailed:
    return AuthenticationFailed(
        "Missing API key: send it as 'Authorization: Bearer <key>' "
        "or in the 'x-api-key' header."
    )


def _invalid_key() -> AuthenticationFailed:
    # The key itself is never echoed, not even in part.
    return AuthenticationFailed("Invalid API key provided.")


def _no_tenant_claim(claim: str | None) -> AuthenticationFailed:
    if claim is None:
        return AuthenticationFailed(
            "The bearer token has no tenant claim: this gateway counts every JWT "
            "caller under a tenant, but auth.jwt.claims.tenant names no claim."
        )
    return AuthenticationFailed(
        f"The bearer token has no tenant claim ({claim!r}): this gateway counts "
        "every JWT caller under a tenant."
    )


def _claimed_scope_name(value: str | None, role: str) -> str | None:
    """Return a tenant or team name read from a token, None when absent.

    Raise ``AuthenticationFailed`` for a value that no tenant or team can
    have, since those names become parts of Redis keys.
    """
    if value is None:
        return None
    if not SCOPE_NAME.fullmatch(value):
        raise AuthenticationFailed(
            f"The bearer token's {role} {value!r} is not a valid {role} name: "
            f"expected {SCOPE_NAME_RULE}."
        )
    return value


def authenticate(headers: Mapping[str, str], keys: KeyStore) -> Principal:
    """Authenticate against the config file's keys only."""
    credential = credential_from_headers(headers)
    if credential is None:
        raise _missing_key()
    principal = keys.lookup(credential)
    if principal is None:
        raise _invalid_key()
    return principal


@dataclass
class _CachedKey:
    """A managed key found in the store, with what is needed to recheck it."""

    principal: Principal
    status: str
    expires: float | None  # Unix seconds
    valid_until: float | None  # end of the rotation grace of this secret


@dataclass
class _Cache:
    keys: dict[str, _CachedKey] = field(default_factory=dict)
    # Digest to the monotonic time the miss stops being trusted.
    misses: dict[str, float] = field(default_factory=dict)
    orgs: dict[tuple[str, str | None], OrgScopes] = field(default_factory=dict)


class Authenticator:
    """Authenticate config keys, managed keys and JWTs, caching managed keys
    locally.

    ``fail_open`` decides what happens to a cached managed key while the
    store's change feed is stale (Redis unreachable for over a second): True
    keeps accepting it, False rejects the request with 503.

    ``jwt`` verifies bearer JWTs. None, when ``auth.jwt`` is not configured,
    treats every credential as a gateway key.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        jwt: JWTAuthenticator | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwt = jwt
        self._jwt_requires_tenant = jwt is not None and (
            bool(config.tenants) or jwt.claims.tenant is not None
        )
        if jwt is not None and config.tenants and jwt.claims.tenant is None:
            log.warning(
                "jwt_rejected_without_tenant_claim",
                message=(
                    "The config declares tenants but auth.jwt.claims.tenant names "
                    "no claim, so every JWT is rejected for lack of a tenant. "
                    "Set auth.jwt.claims.tenant."
                ),
            )
        self._config_keys = KeyStore(config.keys, config.tenants)
        self._tenants = {tenant.name: tenant for tenant in config.tenants}
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._fail_open = (
            config.redis is not None and config.redis.on_unavailable == "fail_open"
        )
        self._cache = _Cache()
        # Bumped on every change in the store. A lookup that started under an
        # older generation does not fill the cache, because what it read may
        # predate the change.
        self._generation = 0
        self._pending: dict[str, asyncio.Future[_CachedKey | None]] = {}
        store.add_listener(self.invalidate)

    def invalidate(self) -> None:
        """Forget every cached managed key, miss, tenant and team."""
        self._generation += 1
        self._cache = _Cache()

    def start(self) -> None:
        """Start fetching JWT signing keys. Call it once the event loop runs."""
        if self.jwt is not None:
            self.jwt.start()

    async def close(self) -> None:
        """Stop fetching JWT signing keys, before the client session closes."""
        if self.jwt is not None:
            await self.jwt.close()

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Return the caller's principal or raise ``AuthenticationFailed``.

        Raises ``BackendUnavailable`` when the store is needed and cannot be
        reached, or when no JWT signing keys could be fetched yet.
        """
        credential = credential_from_headers(headers)
        if credential is None:
            raise _missing_key()
        # Generated gateway keys contain no dots, so for them this check ends
        # after one str.split. A config key that parses as a JWT header would
        # be sent to the verifier and rejected.
        if self.jwt is not None and self.jwt.looks_like_jwt(credential):
            return await self._authenticate_jwt(self.jwt, credential)
        return await self.lookup(hash_secret(credential))

    async def _authenticate_jwt(
        self, verifier: JWTAuthenticator, token: str
    ) -> Principal:
        from llmgw.pipeline.jwt_auth import MAX_CLAIM_VALUE_CHARS

        identity = await verifier.authenticate(token)
        if len(identity.subject) > MAX_CLAIM_VALUE_CHARS:
            raise AuthenticationFailed(
                "The bearer token's subject (sub) is longer than "
                f"{MAX_CLAIM_VALUE_CHARS} characters."
            )
        tenant = _claimed_scope_name(identity.tenant, "tenant")
        # A team is a team of a tenant, so it counts only with one.
        team = _claimed_scope_name(identity.team, "team") if tenant else None
        if tenant is None:
            if self._jwt_requires_tenant:
                raise _no_tenant_claim(verifier.claims.tenant)
            org = OrgScopes()
        else:
            org = await self._jwt_org_scopes(tenant, team)
        key_id = JWT_KEY_PREFIX + identity.subject
        return build_principal(
            key_id=key_id,
            key_name=key_id,
            tenant_name=tenant,
            team_name=team,
            models=None,
            limits=LimitSpec(),
            max_input_tokens=None,
            max_output_tokens=None,
            org=org,
            user=identity.user,
        )

    async def _jwt_org_scopes(self, tenant: str, team: str | None) -> OrgScopes:
        """Return the records of a token's tenant and team, or raise
        ``AuthenticationFailed`` when the gateway does not know one of them."""
        org = await self.org_scopes(tenant, team)
        if org is _STORE_UNAVAILABLE:
            # With fail_open and the store unreachable, the caller counts at no
            # tenant or team scope, as a config key with a store tenant does.
            return org
        if org.tenant is None:
            raise AuthenticationFailed(
                f"The bearer token's tenant {tenant!r} is not a tenant of this gateway."
            )
        if team is not None and org.team is None:
            raise AuthenticationFailed(
                f"The bearer token's team {team!r} is not a team of tenant {tenant!r}."
            )
        return org

    async def lookup(self, digest: str) -> Principal:
        principal = self._config_keys.lookup_digest(digest)
        if principal is not None:
            key = self._config_keys.store_scoped.get(digest)
            if key is None:
                return principal
            org = await self.org_scopes(key.tenant, key.team)
            return _config_key_principal(key, org)

        cached = await self._managed_key(digest)
        if cached is None:
            raise _invalid_key()
        return self._check(cached)

    async def org_scopes(self, tenant: str | None, team: str | None) -> OrgScopes:
        """Return the tenant and team records from the config file or the store.

        A JWT caller's tenant and team claims resolve through here too.
        """
        config_org = config_org_scopes(self._tenants, tenant, team)
        if config_org is not None:
            return config_org
        assert tenant is not None
        cache_key = (tenant, team)
        cached = self._cache.orgs.get(cache_key)
        if cached is not None and self._store.fresh:
            return cached
        generation = self._generation
        try:
            tenant_record, team_record = await self._store.get_org(tenant, team)
        except BackendUnavailable as exc:
            if not self._fail_open:
                raise
            # Without the store, fail_open counts the request at the key only.
            log.warning(
                "auth_store_unavailable_using_cache",
                tenant=tenant,
                team=team,
                cached=cached is not None,
                error=exc.message,
            )
            return cached or _STORE_UNAVAILABLE
        org = OrgScopes(tenant=tenant_record, team=team_record)
        if generation == self._generation:
            self._cache.orgs[cache_key] = org
        return org

    def _check(self, cached: _CachedKey) -> Principal:
        now = self._clock()
        if cached.status == "revoked":
            raise AuthenticationFailed("API key revoked.")
        if cached.expires is not None and now >= cached.expires:
            raise AuthenticationFailed("API key expired.")
        if cached.valid_until is not None and now >= cached.valid_until:
            # An old secret of a rotated key, past its grace period.
            raise _invalid_key()
        return cached.principal

    async def _managed_key(self, digest: str) -> _CachedKey | None:
        cache = self._cache
        if self._store.fresh:
            cached = cache.keys.get(digest)
            if cached is not None:
                return cached
            miss_until = cache.misses.get(digest)
            if miss_until is not None:
                if self._monotonic() < miss_until:
                    return None
                del cache.misses[digest]

        # Requests with the same key while a lookup runs wait for that one.
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_CachedKey | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[digest] = future
        try:
            found = await self._load(digest)
        except BaseException as exc:
            future.set_exception(exc)
            # Retrieve it so the event loop does not log it when no other
            # request was waiting.
            future.exception()
            raise
        finally:
            self._pending.pop(digest, None)
        future.set_result(found)
        return found

    async def _load(self, digest: str) -> _CachedKey | None:
        generation = self._generation
        stale = self._cache.keys.get(digest)
        try:
            match = await self._store.find_key(digest)
        except BackendUnavailable as exc:
            if self._fail_open and stale is not None:
                log.warning(
                    "auth_store_unavailable_using_cache",
                    key_id=stale.principal.key_id,
                    error=exc.message,
                )
                return stale
            raise
        found = None
        if match is not None:
            key = match.key
            org = config_org_scopes(self._tenants, key.tenant, key.team)
            if org is None:
                org = OrgScopes(tenant=match.tenant, team=match.team)
            found = _cached_key(key, digest, org)
        if generation == self._generation:
            self._remember(digest, found)
        return found

    def _remember(self, digest: str, found: _CachedKey | None) -> None:
        cache = self._cache
        if found is None:
            if len(cache.misses) >= MAX_CACHED_MISSES:
                cache.misses.pop(next(iter(cache.misses)))
            cache.misses[digest] = self._monotonic() + MISS_TTL_SECONDS
            return
        if len(cache.keys) >= MAX_CACHED_KEYS:
            cache.keys.pop(next(iter(cache.keys)))
        cache.keys[digest] = found


def _cached_key(key: ManagedKey, digest: str, org: OrgScopes) -> _CachedKey:
    principal = build_principal(
        key_id=key.id,
        key_name=key.name,
        tenant_name=key.tenant,
        team_name=key.team,
        models=key.models,
        limits=key.limits,
        max_input_tokens=key.max_input_tokens,
        max_output_tokens=key.max_output_tokens,
        org=org,
        user=key.owner,
    )
    return _CachedKey(
        principal=principal,
        status=key.status,
        expires=key.expires,
        valid_until=key.secret_valid_until(digest),
    )
