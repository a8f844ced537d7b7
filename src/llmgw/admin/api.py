"""The admin API under /admin/: managed keys, tenants and teams.

Only the admin keys under ``admin.keys`` in the configuration are accepted,
compared by SHA-256 digest in constant time. Without admin keys every admin
route responds 404 with a message that explains how to enable the API.

Errors have the gateway's JSON shape ``{"error": {"message", "type",
"param", "code"}}``. ``param`` names the invalid field of a 400 response.
Every change is logged as ``admin_action`` with the admin key's fingerprint
(the first 12 hex digits of its SHA-256), the action and the record's id.
Secrets are never logged.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import structlog
from aiohttp import web

from llmgw.admin import schema
from llmgw.admin.openapi import openapi_document
from llmgw.admin.records import (
    KEY_STATUSES,
    KeySecret,
    ManagedKey,
    Team,
    Tenant,
    key_to_api,
    limits_to_json,
    new_key_id,
    scope_to_api,
)
from llmgw.admin.schema import InvalidField, parse_object
from llmgw.admin.store import Conflict, Store
from llmgw.config import (
    Config,
    TeamConfig,
    TenantConfig,
    generate_key,
    hash_key,
    unpriced_model_warnings,
)
from llmgw.errors import AuthenticationFailed, NotFound
from llmgw.handlers import GATEWAY
from llmgw.pipeline.authenticate import credential_from_headers
from llmgw.pipeline.ingress import parse_json, read_body

log = structlog.get_logger("llmgw.admin")

# How long the secret that a rotation replaces keeps working, by default.
DEFAULT_GRACE_SECONDS = 24 * 3600.0

_KEY_CREATE_FIELDS = (
    "name",
    "owner",
    "tenant",
    "team",
    "expires",
    "expires_in_seconds",
    "models",
    "limits",
    "metadata",
    "max_input_tokens",
    "max_output_tokens",
)
_KEY_UPDATE_FIELDS = tuple(name for name in _KEY_CREATE_FIELDS if name != "tenant")
_SCOPE_CREATE_FIELDS = ("name", "models", "limits", "metadata")
_SCOPE_UPDATE_FIELDS = ("models", "limits", "metadata")
_ROTATE_FIELDS = ("grace_seconds",)
_KEY_FILTERS = ("tenant", "team", "status")

Handler = Callable[[web.Request], Awaitable[web.Response]]


class AdminDisabled(NotFound):
    code = "admin_disabled"


class _Admin:
    """The configuration, store and admin key fingerprint of one admin request."""

    def __init__(self, request: web.Request, fingerprint: str) -> None:
        gateway = request.app[GATEWAY]
        self.request = request
        self.config: Config = gateway.config
        self.store: Store = gateway.store
        self.fingerprint = fingerprint

    def log(self, action: str, **ids: object) -> None:
        log.info("admin_action", admin=self.fingerprint, action=action, **ids)

    def warn_unpriced(
        self, scope: str, models: tuple[str, ...] | None, record: Any
    ) -> list[str]:
        """Log and return the models without a price that can spend a budget."""
        warnings = unpriced_model_warnings(
            self.config.models, scope, models, record.limits
        )
        for warning in warnings:
            log.warning("model_without_price", message=warning)
        return warnings


def _json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json"
    )


def _authorize(request: web.Request) -> str:
    """Check the admin key and return its fingerprint."""
    digests = request.app[GATEWAY].config.admin.key_sha256
    if not digests:
        raise AdminDisabled(
            "The admin API is disabled. Enable it by listing an admin key under "
            "admin.keys in the gateway configuration, for example "
            'admin: {keys: ["${LLMGW_ADMIN_KEY}"]}.'
        )
    credential = credential_from_headers(request.headers)
    if credential is None:
        raise AuthenticationFailed(
            "Missing admin key: send it as 'Authorization: Bearer <key>' or in "
            "the 'x-api-key' header."
        )
    digest = hash_key(credential)
    matched = False
    # Compare with every admin key, so the time taken does not reveal which
    # one matched or how far a guess got.
    for expected in digests:
        matched |= hmac.compare_digest(digest, expected)
    if not matched:
        raise AuthenticationFailed(
            "Invalid admin key. The admin API accepts only the keys under "
            "admin.keys in the configuration, not gateway keys."
        )
    return digest[:12]


def admin_route(handler: Callable[[_Admin], Awaitable[web.Response]]) -> Handler:
    """Wrap an admin handler with the admin key check."""

    async def wrapped(request: web.Request) -> web.Response:
        return await handler(_Admin(request, _authorize(request)))

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def _body(admin: _Admin, *, optional: bool = False) -> object:
    server = admin.config.server
    raw = await read_body(admin.request, server.max_body_bytes, server.read_timeout)
    if optional and not raw.strip():
        return {}
    return parse_json(raw)


# Keys


def _expiry(body: dict[str, Any], now: float) -> tuple[bool, float | None]:
    """Return whether the body sets the expiry, and the expiry."""
    if "expires" in body and "expires_in_seconds" in body:
        raise InvalidField(
            "expires_in_seconds", "set either expires or expires_in_seconds, not both"
        )
    if "expires_in_seconds" in body:
        seconds = schema.expiry_seconds(
            body["expires_in_seconds"], "expires_in_seconds"
        )
        return True, None if seconds is None else now + seconds
    if "expires" in body:
        return True, schema.expiry_time(body["expires"], "expires", now)
    return False, None


async def _check_team(admin: _Admin, tenant: str | None, team: str | None) -> None:
    """Raise 400 unless ``team`` is None or a team of ``tenant``."""
    if team is None:
        return
    if tenant is None:
        raise InvalidField("team", "a key with a team needs a tenant")
    config_tenant = admin.config.tenant(tenant)
    if config_tenant is not None:
        found = config_tenant.team(team) is not None
    else:
        found = await admin.store.get_team(tenant, team) is not None
    if not found:
        raise InvalidField("team", f"tenant {tenant!r} has no team {team!r}")


async def _check_tenant(admin: _Admin, tenant: str | None) -> None:
    if tenant is None or admin.config.tenant(tenant) is not None:
        return
    if await admin.store.get_tenant(tenant) is None:
        raise InvalidField("tenant", f"no tenant named {tenant!r}: create it first")


def _key_changes(body: dict[str, Any], now: float) -> dict[str, Any]:
    """Validate the key fields present in ``body`` into ``ManagedKey`` fields."""
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = schema.key_name(body["name"], "name")
    if "owner" in body:
        changes["owner"] = schema.optional_string(
            body["owner"], "owner", schema.MAX_OWNER_LENGTH
        )
    if "team" in body:
        changes["team"] = (
            None if body["team"] is None else schema.scope_name(body["team"], "team")
        )
    sets_expiry, expires = _expiry(body, now)
    if sets_expiry:
        changes["expires"] = expires
    if "models" in body:
        changes["models"] = schema.model_globs(body["models"], "models")
    if "limits" in body:
        changes["limits"] = schema.parse_limits(body["limits"], "limits")
    if "metadata" in body:
        changes["metadata"] = schema.metadata(body["metadata"], "metadata")
    for cap in ("max_input_tokens", "max_output_tokens"):
        if cap in body:
            changes[cap] = schema.positive_int(body[cap], cap)
    return changes


def _check_config_key_name(admin: _Admin, name: str) -> None:
    if any(key.name == name for key in admin.config.keys):
        raise Conflict(
            f"A key named {name!r} is defined in the config file. Choose another name."
        )


async def _get_key(admin: _Admin) -> ManagedKey:
    key_id = admin.request.match_info["key_id"]
    key = await admin.store.get_key(key_id)
    if key is None:
        raise NotFound(f"No key with id {key_id!r}.")
    return key


def _key_response(
    key: ManagedKey,
    status: int = 200,
    secret: str | None = None,
    warnings: list[str] | None = None,
) -> web.Response:
    data = key_to_api(key, time.time())
    if secret is not None:
        # Shown once: the store keeps only its SHA-256.
        data["secret"] = secret
    if warnings:
        data["warnings"] = warnings
    return _json_response(data, status)


@admin_route
async def create_key(admin: _Admin) -> web.Response:
    body = parse_object(await _body(admin), "", _KEY_CREATE_FIELDS, required=("name",))
    now = time.time()
    changes = _key_changes(body, now)
    tenant = body.get("tenant")
    if tenant is not None:
        tenant = schema.scope_name(tenant, "tenant")
    await _check_tenant(admin, tenant)
    await _check_team(admin, tenant, changes.get("team"))
    _check_config_key_name(admin, changes["name"])

    secret = generate_key()
    key = ManagedKey(
        id=new_key_id(),
        secrets=(KeySecret(hash_key(secret)),),
        created=now,
        updated=now,
        tenant=tenant,
        **changes,
    )
    await admin.store.create_key(key)
    admin.log("key.create", key_id=key.id, key_name=key.name, tenant=key.tenant)
    warnings = admin.warn_unpriced(f"key {key.name!r}", key.models, key)
    return _key_response(key, 201, secret=secret, warnings=warnings)


@admin_route
async def list_keys(admin: _Admin) -> web.Response:
    query = admin.request.query
    for name in query:
        if name not in _KEY_FILTERS:
            expected = ", ".join(_KEY_FILTERS)
            raise InvalidField(
                name, f"unknown query parameter, expected one of: {expected}"
            )
    status = query.get("status")
    if status is not None and status not in KEY_STATUSES:
        expected = ", ".join(KEY_STATUSES)
        raise InvalidField("status", f"must be one of {expected}, got {status!r}")
    keys = await admin.store.list_keys()
    for name in _KEY_FILTERS:
        if name in query:
            keys = [key for key in keys if getattr(key, name) == query[name]]
    now = time.time()
    return _json_response(
        {"object": "list", "data": [key_to_api(k, now) for k in keys]}
    )


@admin_route
async def get_key(admin: _Admin) -> web.Response:
    return _key_response(await _get_key(admin))


@admin_route
async def update_key(admin: _Admin) -> web.Response:
    body = parse_object(await _body(admin), "", (*_KEY_UPDATE_FIELDS, "tenant"))
    key = await _get_key(admin)
    if "tenant" in body and body["tenant"] != key.tenant:
        raise InvalidField(
            "tenant", "the tenant of a key cannot change: create a new key instead"
        )
    if key.status == "revoked":
        raise Conflict(f"Key {key.id!r} is revoked and can no longer change.")
    now = time.time()
    changes = _key_changes(body, now)
    if "team" in changes:
        await _check_team(admin, key.tenant, changes["team"])
    if "name" in changes and changes["name"] != key.name:
        _check_config_key_name(admin, changes["name"])

    updated = replace(key, updated=now, **changes)
    await admin.store.save_key(key, updated)
    admin.log("key.update", key_id=key.id, fields=sorted(changes))
    warnings = admin.warn_unpriced(f"key {updated.name!r}", updated.models, updated)
    return _key_response(updated, warnings=warnings)


@admin_route
async def revoke_key(admin: _Admin) -> web.Response:
    key = await _get_key(admin)
    if key.status == "revoked":
        return _key_response(key)
    now = time.time()
    revoked = replace(key, status="revoked", revoked=now, updated=now)
    await admin.store.save_key(key, revoked)
    admin.log("key.revoke", key_id=key.id, key_name=key.name)
    return _key_response(revoked)


@admin_route
async def rotate_key(admin: _Admin) -> web.Response:
    body = parse_object(await _body(admin, optional=True), "", _ROTATE_FIELDS)
    grace = schema.grace_seconds(body.get("grace_seconds"), "grace_seconds")
    grace = DEFAULT_GRACE_SECONDS if grace is None else grace
    key = await _get_key(admin)
    if key.status == "revoked":
        raise Conflict(f"Key {key.id!r} is revoked and cannot be rotated.")

    secret = generate_key()
    now = time.time()
    rotated = key.rotated(hash_key(secret), now + grace, now)
    await admin.store.save_key(key, rotated)
    admin.log("key.rotate", key_id=key.id, grace_seconds=grace)
    return _key_response(rotated, secret=secret)


# Tenants and teams


def _config_scope_to_api(
    record: TenantConfig | TeamConfig, tenant: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if tenant is not None:
        doc["tenant"] = tenant
    doc.update(
        name=record.name,
        created=None,
        updated=None,
        models=None if record.models is None else list(record.models),
        limits=limits_to_json(record.limits),
        metadata={},
        source="config",
    )
    return doc


def _scope_fields(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "models" in body:
        changes["models"] = schema.model_globs(body["models"], "models")
    if "limits" in body:
        changes["limits"] = schema.parse_limits(body["limits"], "limits")
    if "metadata" in body:
        changes["metadata"] = schema.metadata(body["metadata"], "metadata")
    return changes


def _in_config(kind: str, name: str) -> Conflict:
    return Conflict(
        f"The {kind} {name!r} is defined in the config file and cannot change "
        "through the admin API. Edit the config file instead."
    )


async def _active_keys(admin: _Admin, tenant: str, team: str | None = None) -> int:
    keys = await admin.store.list_keys()
    return sum(
        1
        for key in keys
        if key.status == "active"
        and key.tenant == tenant
        and (team is None or key.team == team)
    )


def _active_keys_text(count: int) -> str:
    return "1 active key" if count == 1 else f"{count} active keys"


async def _get_tenant(admin: _Admin) -> Tenant:
    """Return the store's tenant named in the path; 409 for a config tenant."""
    name = admin.request.match_info["tenant"]
    if admin.config.tenant(name) is not None:
        raise _in_config("tenant", name)
    tenant = await admin.store.get_tenant(name)
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.")
    return tenant


@admin_route
async def create_tenant(admin: _Admin) -> web.Response:
    body = parse_object(
        await _body(admin), "", _SCOPE_CREATE_FIELDS, required=("name",)
    )
    name = schema.scope_name(body["name"], "name")
    if admin.config.tenant(name) is not None:
        raise Conflict(f"A tenant named {name!r} is defined in the config file.")
    now = time.time()
    tenant = Tenant(name=name, created=now, updated=now, **_scope_fields(body))
    await admin.store.create_tenant(tenant)
    admin.log("tenant.create", tenant=name)
    data = scope_to_api(tenant, "api")
    data["warnings"] = admin.warn_unpriced(f"tenant {name!r}", tenant.models, tenant)
    return _json_response(data, 201)


@admin_route
async def list_tenants(admin: _Admin) -> web.Response:
    data = [_config_scope_to_api(t, None) for t in admin.config.tenants]
    data += [scope_to_api(t, "api") for t in await admin.store.list_tenants()]
    return _json_response({"object": "list", "data": data})


@admin_route
async def get_tenant(admin: _Admin) -> web.Response:
    name = admin.request.match_info["tenant"]
    config_tenant = admin.config.tenant(name)
    if config_tenant is not None:
        return _json_response(_config_scope_to_api(config_tenant, None))
    tenant = await admin.store.get_tenant(name)
    if tenant is None:
        raise NotFound(f"No tenant named {name!r}.")
    return _json_response(scope_to_api(tenant, "api"))


@admin_route
async def update_tenant(admin: _Admin) -> web.Response:
    body = parse_object(await _body(admin), "", _SCOPE_UPDATE_FIELDS)
    tenant = await _get_tenant(admin)
    changes = _scope_fields(body)
    updated = replace(tenant, updated=time.time(), **changes)
    await admin.store.save_tenant(updated)
    admin.log("tenant.update", tenant=tenant.name, fields=sorted(changes))
    data = scope_to_api(updated, "api")
    data["warnings"] = admin.warn_unpriced(
        f"tenant {tenant.name!r}", updated.models, updated
    )
    return _json_response(data)


@admin_route
async def delete_tenant(admin: _Admin) -> web.Response:
    tenant = await _get_tenant(admin)
    active = await _active_keys(admin, tenant.name)
    if active:
        raise Conflict(
            f"Tenant {tenant.name!r} has {_active_keys_text(active)}. "
            f"Revoke {'it' if active == 1 else 'them'} first."
        )
    await admin.store.delete_tenant(tenant.name)
    admin.log("tenant.delete", tenant=tenant.name)
    return _json_response({"name": tenant.name, "deleted": True})


async def _team_tenant(admin: _Admin, *, changing: bool) -> str:
    """Return the tenant named in the path, which must exist.

    Teams of a config file tenant are read-only, so ``changing`` rejects them.
    """
    name = admin.request.match_info["tenant"]
    if admin.config.tenant(name) is not None:
        if changing:
            raise _in_config("tenant", name)
        return name
    if await admin.store.get_tenant(name) is None:
        raise NotFound(f"No tenant named {name!r}.")
    return name


async def _get_team(admin: _Admin, tenant: str) -> Team:
    name = admin.request.match_info["team"]
    team = await admin.store.get_team(tenant, name)
    if team is None:
        raise NotFound(f"Tenant {tenant!r} has no team named {name!r}.")
    return team


@admin_route
async def create_team(admin: _Admin) -> web.Response:
    body = parse_object(
        await _body(admin), "", _SCOPE_CREATE_FIELDS, required=("name",)
    )
    tenant = await _team_tenant(admin, changing=True)
    name = schema.scope_name(body["name"], "name")
    now = time.time()
    team = Team(
        tenant=tenant, name=name, created=now, updated=now, **_scope_fields(body)
    )
    await admin.store.create_team(team)
    admin.log("team.create", tenant=tenant, team=name)
    data = scope_to_api(team, "api")
    data["warnings"] = admin.warn_unpriced(
        f"team {tenant + '/' + name!r}", team.models, team
    )
    return _json_response(data, 201)


@admin_route
async def list_teams(admin: _Admin) -> web.Response:
    tenant = await _team_tenant(admin, changing=False)
    config_tenant = admin.config.tenant(tenant)
    if config_tenant is not None:
        data = [_config_scope_to_api(team, tenant) for team in config_tenant.teams]
    else:
        data = [
            scope_to_api(team, "api") for team in await admin.store.list_teams(tenant)
        ]
    return _json_response({"object": "list", "data": data})


@admin_route
async def get_team(admin: _Admin) -> web.Response:
    tenant = await _team_tenant(admin, changing=False)
    config_tenant = admin.config.tenant(tenant)
    if config_tenant is not None:
        name = admin.request.match_info["team"]
        config_team = config_tenant.team(name)
        if config_team is None:
            raise NotFound(f"Tenant {tenant!r} has no team named {name!r}.")
        return _json_response(_config_scope_to_api(config_team, tenant))
    return _json_response(scope_to_api(await _get_team(admin, tenant), "api"))


@admin_route
async def update_team(admin: _Admin) -> web.Response:
    body = parse_object(await _body(admin), "", _SCOPE_UPDATE_FIELDS)
    tenant = await _team_tenant(admin, changing=True)
    team = await _get_team(admin, tenant)
    changes = _scope_fields(body)
    updated = replace(team, updated=time.time(), **changes)
    await admin.store.save_team(updated)
    admin.log("team.update", tenant=tenant, team=team.name, fields=sorted(changes))
    data = scope_to_api(updated, "api")
    data["warnings"] = admin.warn_unpriced(
        f"team {tenant + '/' + team.name!r}", updated.models, updated
    )
    return _json_response(data)


@admin_route
async def delete_team(admin: _Admin) -> web.Response:
    tenant = await _team_tenant(admin, changing=True)
    team = await _get_team(admin, tenant)
    active = await _active_keys(admin, tenant, team.name)
    if active:
        raise Conflict(
            f"Team {tenant + '/' + team.name!r} has {_active_keys_text(active)}. "
            f"Revoke or move {'it' if active == 1 else 'them'} to another team "
            "first."
        )
    await admin.store.delete_team(tenant, team.name)
    admin.log("team.delete", tenant=tenant, team=team.name)
    return _json_response({"tenant": tenant, "name": team.name, "deleted": True})


@admin_route
async def openapi(admin: _Admin) -> web.Response:
    return _json_response(openapi_document())


# (method, path, handler) of every admin route; openapi.py documents each.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/admin/openapi.json", openapi),
    ("POST", "/admin/keys", create_key),
    ("GET", "/admin/keys", list_keys),
    ("GET", "/admin/keys/{key_id}", get_key),
    ("PATCH", "/admin/keys/{key_id}", update_key),
    ("DELETE", "/admin/keys/{key_id}", revoke_key),
    ("POST", "/admin/keys/{key_id}/rotate", rotate_key),
    ("POST", "/admin/tenants", create_tenant),
    ("GET", "/admin/tenants", list_tenants),
    ("GET", "/admin/tenants/{tenant}", get_tenant),
    ("PATCH", "/admin/tenants/{tenant}", update_tenant),
    ("DELETE", "/admin/tenants/{tenant}", delete_tenant),
    ("POST", "/admin/tenants/{tenant}/teams", create_team),
    ("GET", "/admin/tenants/{tenant}/teams", list_teams),
    ("GET", "/admin/tenants/{tenant}/teams/{team}", get_team),
    ("PATCH", "/admin/tenants/{tenant}/teams/{team}", update_team),
    ("DELETE", "/admin/tenants/{tenant}/teams/{team}", delete_team),
)


def add_admin_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
