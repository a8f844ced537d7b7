"""The OpenAPI 3.1 document of the admin API, written by hand.

A test compares its paths and methods with the routes the application
registers under /admin, so a route cannot be added without documenting it.
"""

from __future__ import annotations

from typing import Any

from llmgw import __version__
from llmgw.admin.records import KEY_STATUSES
from llmgw.admin.schema import MAX_EXPIRY_SECONDS, MAX_GRACE_SECONDS, MIN_BUDGET_USD

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {_JSON: {"schema": _ref(schema)}}}


def _response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/InvalidInput"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
_CONFLICT = {"409": {"$ref": "#/components/responses/Conflict"}}


def _operation(
    summary: str,
    responses: dict[str, Any],
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query_parameter(
    name: str, description: str, values: tuple[str, ...] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if values is not None:
        schema["enum"] = list(values)
    return {"name": name, "in": "query", "description": description, "schema": schema}


_KEY_ID = _path_parameter("key_id", "The key's id, such as key_0123456789abcdef.")
_TENANT = _path_parameter("tenant", "The tenant's name.")
_TEAM = _path_parameter("team", "The team's name within the tenant.")

_PERIOD_MAP_INT = {
    "type": "object",
    "properties": {
        p: {"type": "integer", "minimum": 1} for p in ("day", "week", "month")
    },
    "additionalProperties": False,
}
_PERIOD_MAP_USD = {
    "type": "object",
    "properties": {
        p: {
            "type": "number",
            "minimum": MIN_BUDGET_USD,
            "description": "US dollars, at least one micro-dollar.",
        }
        for p in ("day", "week", "month")
    },
    "additionalProperties": False,
}
_MODEL_LIMIT_PROPERTIES: dict[str, Any] = {
    "requests_per_minute": {"type": "integer", "minimum": 1},
    "tokens_per_minute": {"type": "integer", "minimum": 1},
    "tokens_per_minute_counts": {"enum": ["input", "output", "total"]},
    "max_concurrent_requests": {"type": "integer", "minimum": 1},
    "token_quotas": _PERIOD_MAP_INT,
    "budgets_usd": _PERIOD_MAP_USD,
}
_MODEL_LIMITS = {
    "type": "object",
    "description": "Limits that apply to requests for matching models only.",
    "properties": _MODEL_LIMIT_PROPERTIES,
    "additionalProperties": False,
}
_LIMITS = {
    "type": "object",
    "description": "The limits of a key, team or tenant, as in the config file.",
    "properties": {
        **_MODEL_LIMIT_PROPERTIES,
        "models": {
            "type": "object",
            "description": "Model-name globs mapped to the limits for those models.",
            "additionalProperties": _MODEL_LIMITS,
        },
    },
    "additionalProperties": False,
}
_MODELS = _nullable(
    {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": "Model-name globs. null allows every model.",
    }
)
_METADATA = {"type": "object", "additionalProperties": {"type": "string"}}
_TIME = _nullable({"type": "string", "format": "date-time"})

_KEY_FIELDS = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"},
    "owner": _nullable({"type": "string"}),
    "team": _nullable({"type": "string"}),
    "expires": {
        **_TIME,
        "description": "After the current time and at most "
        f"{MAX_EXPIRY_SECONDS} seconds ({MAX_EXPIRY_SECONDS // 86400} days) ahead.",
    },
    "expires_in_seconds": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": MAX_EXPIRY_SECONDS,
    },
    "models": _MODELS,
    "limits": _nullable(_ref("Limits")),
    "metadata": _nullable(_METADATA),
    "max_input_tokens": _nullable({"type": "integer", "minimum": 1}),
    "max_output_tokens": _nullable({"type": "integer", "minimum": 1}),
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _nullable({"type": "string"}),
                    "code": _nullable({"type": "string"}),
                },
            }
        },
    },
    "Limits": _LIMITS,
    "Key": {
        "type": "object",
        "description": "A stored time outside the years 1 to 9999, which versions "
        "without bounds on time fields accepted, is shown as null.",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "owner": _nullable({"type": "string"}),
            "tenant": _nullable({"type": "string"}),
            "team": _nullable({"type": "string"}),
            "created": _TIME,
            "updated": _TIME,
            "expires": _TIME,
            "expired": {"type": "boolean"},
            "models": _MODELS,
            "limits": _ref("Limits"),
            "metadata": _METADATA,
            "status": {"enum": ["active", "revoked"]},
            "revoked": _TIME,
            "max_input_tokens": _nullable({"type": "integer"}),
            "max_output_tokens": _nullable({"type": "integer"}),
            "previous_secrets_valid_until": {
                "type": "array",
                "items": _TIME,
                "description": "When each secret replaced by a rotation stops working.",
            },
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "KeyWithSecret": {
        "allOf": [
            _ref("Key"),
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        "type": "string",
                        "description": "The key's secret, shown only in this response.",
                    }
                },
            },
        ]
    },
    "KeyCreate": {
        "type": "object",
        "required": ["name"],
        "properties": {**_KEY_FIELDS, "tenant": _nullable({"type": "string"})},
        "additionalProperties": False,
    },
    "KeyUpdate": {
        "type": "object",
        "properties": _KEY_FIELDS,
        "additionalProperties": False,
    },
    "Rotate": {
        "type": "object",
        "properties": {
            "grace_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_GRACE_SECONDS,
                "default": 86400,
                "description": "Seconds the replaced secret keeps working.",
            }
        },
        "additionalProperties": False,
    },
    "KeyList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Key")},
        },
    },
    "Scope": {
        "type": "object",
        "description": "A tenant, or a team (which also has tenant).",
        "properties": {
            "name": {"type": "string"},
            "tenant": {"type": "string"},
            "created": _TIME,
            "updated": _TIME,
            "models": _MODELS,
            "limits": _ref("Limits"),
            "metadata": _METADATA,
            "source": {
                "enum": ["config", "api"],
                "description": "config: defined in the config file and read-only here.",
            },
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ScopeCreate": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "models": _MODELS,
            "limits": _nullable(_ref("Limits")),
            "metadata": _nullable(_METADATA),
        },
        "additionalProperties": False,
    },
    "ScopeUpdate": {
        "type": "object",
        "properties": {
            "models": _MODELS,
            "limits": _nullable(_ref("Limits")),
            "metadata": _nullable(_METADATA),
        },
        "additionalProperties": False,
    },
    "ScopeList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Scope")},
        },
    },
    "Deleted": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tenant": {"type": "string"},
            "deleted": {"const": True},
        },
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return _response(description, "Error")


def openapi_document() -> dict[str, Any]:
    """Return the admin API's OpenAPI 3.1 document."""
    key_ops = {
        "get": _operation(
            "Show a key", {"200": _response("The key", "Key")}, parameters=[_KEY_ID]
        ),
        "patch": _operation(
            "Change a key's name, owner, team, expiry, models, limits or metadata",
            {"200": _response("The changed key", "Key"), **_CONFLICT},
            _body("KeyUpdate"),
            [_KEY_ID],
        ),
        "delete": _operation(
            "Revoke a key: every worker rejects it within one second",
            {"200": _response("The revoked key", "Key")},
            parameters=[_KEY_ID],
        ),
    }
    tenant_ops = {
        "get": _operation(
            "Show a tenant",
            {"200": _response("The tenant", "Scope")},
            parameters=[_TENANT],
        ),
        "patch": _operation(
            "Change a tenant's models, limits or metadata",
            {"200": _response("The changed tenant", "Scope"), **_CONFLICT},
            _body("ScopeUpdate"),
            [_TENANT],
        ),
        "delete": _operation(
            "Delete a tenant and its teams; it must have no active keys",
            {"200": _response("The deleted tenant's name", "Deleted"), **_CONFLICT},
            parameters=[_TENANT],
        ),
    }
    team_ops = {
        "get": _operation(
            "Show a team",
            {"200": _response("The team", "Scope")},
            parameters=[_TENANT, _TEAM],
        ),
        "patch": _operation(
            "Change a team's models, limits or metadata",
            {"200": _response("The changed team", "Scope"), **_CONFLICT},
            _body("ScopeUpdate"),
            [_TENANT, _TEAM],
        ),
        "delete": _operation(
            "Delete a team; it must have no active keys",
            {"200": _response("The deleted team's name", "Deleted"), **_CONFLICT},
            parameters=[_TENANT, _TEAM],
        ),
    }
    paths = {
        "/admin/openapi.json": {
            "get": _operation(
                "This document",
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document",
                        "content": {_JSON: {}},
                    }
                },
            )
        },
        "/admin/keys": {
            "post": _operation(
                "Create a key; the response shows its secret once",
                {
                    "201": _response("The new key and its secret", "KeyWithSecret"),
                    **_CONFLICT,
                },
                _body("KeyCreate"),
            ),
            "get": _operation(
                "List keys, revoked ones included",
                {"200": _response("The keys", "KeyList")},
                parameters=[
                    _query_parameter("tenant", "Only keys of this tenant."),
                    _query_parameter("team", "Only keys of this team."),
                    _query_parameter(
                        "status", "Only keys in this status.", KEY_STATUSES
                    ),
                ],
            ),
        },
        "/admin/keys/{key_id}": key_ops,
        "/admin/keys/{key_id}/rotate": {
            "post": _operation(
                "Give a key a new secret; the old one works until the grace ends",
                {
                    "200": _response("The key and its new secret", "KeyWithSecret"),
                    **_CONFLICT,
                },
                _body("Rotate", required=False),
                [_KEY_ID],
            )
        },
        "/admin/tenants": {
            "post": _operation(
                "Create a tenant",
                {"201": _response("The new tenant", "Scope"), **_CONFLICT},
                _body("ScopeCreate"),
            ),
            "get": _operation(
                "List tenants from the config file and the admin API",
                {"200": _response("The tenants", "ScopeList")},
            ),
        },
        "/admin/tenants/{tenant}": tenant_ops,
        "/admin/tenants/{tenant}/teams": {
            "post": _operation(
                "Create a team in a tenant created through the admin API",
                {"201": _response("The new team", "Scope"), **_CONFLICT},
                _body("ScopeCreate"),
                [_TENANT],
            ),
            "get": _operation(
                "List a tenant's teams",
                {"200": _response("The teams", "ScopeList")},
                parameters=[_TENANT],
            ),
        },
        "/admin/tenants/{tenant}/teams/{team}": team_ops,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llmgw admin API",
            "version": __version__,
            "description": (
                "Managed gateway keys, tenants and teams. Authenticate with an "
                "admin key from admin.keys in the gateway configuration."
            ),
        },
        "security": [{"adminKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer"},
            },
            "schemas": _SCHEMAS,
            "responses": {
                "InvalidInput": _error_response(
                    "Invalid input; error.param names the field"
                ),
                "Unauthorized": _error_response("Missing or invalid admin key"),
                "NotFound": _error_response(
                    "Unknown id or name, or the admin API is off (code admin_disabled)"
                ),
                "Conflict": _error_response(
                    "A name that is taken, or a change the record's state forbids"
                ),
            },
        },
    }
