"""Managed keys, tenants and teams, and their JSON documents.

The admin store keeps each record as the JSON document ``*_to_doc`` builds.
Times are Unix seconds in documents and ISO 8601 UTC text in the admin API.
A key stores only the SHA-256 hex digests of its secrets.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from llmgw.limits.spec import LimitSpec

log = structlog.get_logger("llmgw.admin")

KeyStatus = Literal["active", "revoked"]
KEY_STATUSES: tuple[KeyStatus, ...] = ("active", "revoked")
KEY_ID_PREFIX = "key_"


def new_key_id() -> str:
    """Return a new key id: the prefix and 64 random bits in hex."""
    return KEY_ID_PREFIX + secrets.token_hex(8)


@dataclass(frozen=True)
class KeySecret:
    """The SHA-256 of one secret of a key.

    ``valid_until`` is None for the current secret. A secret replaced by a
    rotation keeps working until ``valid_until`` (Unix seconds).
    """

    sha256: str
    valid_until: float | None = None


@dataclass(frozen=True)
class ManagedKey:
    """A gateway key created through the admin API."""

    id: str
    name: str
    secrets: tuple[KeySecret, ...]  # the current secret first
    created: float
    updated: float
    owner: str | None = None
    tenant: str | None = None
    team: str | None = None
    expires: float | None = None
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: KeyStatus = "active"
    revoked: float | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None

    def secret_valid_until(self, digest: str) -> float | None:
        """Return when the secret with ``digest`` stops working, None for never."""
        for secret in self.secrets:
            if secret.sha256 == digest:
                return secret.valid_until
        raise KeyError(digest)

    def has_secret(self, digest: str, now: float) -> bool:
        """Return whether ``digest`` is a secret of the key that works at ``now``."""
        return any(
            secret.sha256 == digest
            and (secret.valid_until is None or now < secret.valid_until)
            for secret in self.secrets
        )

    def rotated(self, new_sha256: str, grace_until: float, now: float) -> ManagedKey:
        """Return the key with a new current secret.

        The old current secret works until ``grace_until``. Older secrets
        whose grace has ended are dropped, and one whose grace ends later
        than ``grace_until`` is cut to it.
        """
        secrets = [KeySecret(new_sha256)]
        for secret in self.secrets:
            until = grace_until
            if secret.valid_until is not None:
                until = min(secret.valid_until, grace_until)
            if until > now:
                secrets.append(KeySecret(secret.sha256, until))
        return replace(self, secrets=tuple(secrets), updated=now)


@dataclass(frozen=True)
class Tenant:
    name: str
    created: float
    updated: float
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Team:
    tenant: str
    name: str
    created: float
    updated: float
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyMatch:
    """A key found by the digest of a secret, with its tenant and team records
    from the store (None where the store has none)."""

    key: ManagedKey
    tenant: Tenant | None
    team: Team | None


# Limits


def limits_to_json(spec: LimitSpec) -> dict[str, Any]:
    """Return the limits as the JSON object the config file and API use.

    Limits that are not set are left out.
    """
    doc: dict[str, Any] = {}
    if spec.requests_per_minute is not None:
        doc["requests_per_minute"] = spec.requests_per_minute
    if spec.tokens_per_minute is not None:
        doc["tokens_per_minute"] = spec.tokens_per_minute
    if spec.tokens_per_minute_counts != "total":
        doc["tokens_per_minute_counts"] = spec.tokens_per_minute_counts
    if spec.max_concurrent_requests is not None:
        doc["max_concurrent_requests"] = spec.max_concurrent_requests
    if spec.token_quotas:
        doc["token_quotas"] = dict(spec.token_quotas)
    if spec.budgets_usd:
        doc["budgets_usd"] = dict(spec.budgets_usd)
    if spec.models:
        doc["models"] = {glob: limits_to_json(limits) for glob, limits in spec.models}
    return doc


# Documents in the store


def _models_doc(models: tuple[str, ...] | None) -> list[str] | None:
    return None if models is None else list(models)


def _models_from_doc(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def key_to_doc(key: ManagedKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "secrets": [
            {"sha256": secret.sha256, "valid_until": secret.valid_until}
            for secret in key.secrets
        ],
        "created": key.created,
        "updated": key.updated,
        "owner": key.owner,
        "tenant": key.tenant,
        "team": key.team,
        "expires": key.expires,
        "models": _models_doc(key.models),
        "limits": limits_to_json(key.limits),
        "metadata": dict(key.metadata),
        "status": key.status,
        "revoked": key.revoked,
        "max_input_tokens": key.max_input_tokens,
        "max_output_tokens": key.max_output_tokens,
    }


def key_from_doc(doc: Mapping[str, Any]) -> ManagedKey:
    from llmgw.admin.schema import parse_limits

    return ManagedKey(
        id=doc["id"],
        name=doc["name"],
        secrets=tuple(
            KeySecret(secret["sha256"], secret["valid_until"])
            for secret in doc["secrets"]
        ),
        created=doc["created"],
        updated=doc["updated"],
        owner=doc["owner"],
        tenant=doc["tenant"],
        team=doc["team"],
        expires=doc["expires"],
        models=_models_from_doc(doc["models"]),
        limits=parse_limits(doc["limits"], "limits", stored=True),
        metadata=dict(doc["metadata"]),
        status=doc["status"],
        revoked=doc["revoked"],
        max_input_tokens=doc["max_input_tokens"],
        max_output_tokens=doc["max_output_tokens"],
    )


def tenant_to_doc(tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "created": tenant.created,
        "updated": tenant.updated,
        "models": _models_doc(tenant.models),
        "limits": limits_to_json(tenant.limits),
        "metadata": dict(tenant.metadata),
    }


def tenant_from_doc(doc: Mapping[str, Any]) -> Tenant:
    from llmgw.admin.schema import parse_limits

    return Tenant(
        name=doc["name"],
        created=doc["created"],
        updated=doc["updated"],
        models=_models_from_doc(doc["models"]),
        limits=parse_limits(doc["limits"], "limits", stored=True),
        metadata=dict(doc["metadata"]),
    )


def team_to_doc(team: Team) -> dict[str, Any]:
    return {"tenant": team.tenant, **tenant_to_doc(_team_as_tenant(team))}


def team_from_doc(doc: Mapping[str, Any]) -> Team:
    tenant = tenant_from_doc(doc)
    return Team(
        tenant=doc["tenant"],
        name=tenant.name,
        created=tenant.created,
        updated=tenant.updated,
        models=tenant.models,
        limits=tenant.limits,
        metadata=tenant.metadata,
    )


def _team_as_tenant(team: Team) -> Tenant:
    return Tenant(
        name=team.name,
        created=team.created,
        updated=team.updated,
        models=team.models,
        limits=team.limits,
        metadata=team.metadata,
    )


# The admin API's view


def iso_time(ts: float | None) -> str | None:
    """Format Unix seconds as ISO 8601 UTC text, such as 2026-01-31T12:00:00Z.

    Returns None for None and for a time outside the years 1 to 9999, which
    this text form cannot represent.
    """
    if ts is None:
        return None
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def key_to_api(key: ManagedKey, now: float) -> dict[str, Any]:
    """Return the key as the admin API shows it: no secret and no digest.

    A time that ``iso_time`` cannot render, such as an expiry that a version
    without bounds stored, is shown as null and logged, so one such record
    does not break a whole listing.
    """
    doc = key_to_doc(key)
    del doc["secrets"]
    unrenderable: dict[str, float] = {}
    for name in ("created", "updated", "expires", "revoked"):
        value = doc[name]
        doc[name] = iso_time(value)
        if value is not None and doc[name] is None:
            unrenderable[name] = value
    doc["expired"] = key.expires is not None and now >= key.expires
    # When the secrets replaced by a rotation stop working.
    doc["previous_secrets_valid_until"] = []
    for secret in key.secrets:
        if secret.valid_until is None or secret.valid_until <= now:
            continue
        text = iso_time(secret.valid_until)
        if text is None:
            unrenderable["previous_secrets_valid_until"] = secret.valid_until
        doc["previous_secrets_valid_until"].append(text)
    if unrenderable:
        log.warning(
            "admin_time_unrenderable",
            key_id=key.id,
            fields=sorted(unrenderable),
            unix_seconds=unrenderable,
            message="shown as null. For an active key, set a new expiry or "
            "rotate the key to replace the stored time",
        )
    return doc


def scope_to_api(
    record: Tenant | Team, source: Literal["config", "api"]
) -> dict[str, Any]:
    """Return a tenant or a team as the admin API shows it.

    ``source`` is "config" for a record from the config file, which the API
    cannot change, and "api" for one the API created.
    """
    doc = team_to_doc(record) if isinstance(record, Team) else tenant_to_doc(record)
    doc["created"] = iso_time(record.created)
    doc["updated"] = iso_time(record.updated)
    doc["source"] = source
    return doc
