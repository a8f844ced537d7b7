"""The CLI's admin commands: ``llmgw keys``, ``llmgw tenants`` and ``llmgw teams``.

Each command sends one request to the admin API of a running gateway and
prints the result as a table or, with ``--format json``, as the API's JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson

from llmgw.admin.client import (
    DEFAULT_URL,
    AdminClient,
    AdminClientError,
    is_loopback_url,
    parse_duration,
    render_json,
    render_record,
    render_table,
)

ADMIN_KEY_VARIABLE = "LLMGW_ADMIN_KEY"

_KEY_COLUMNS = ("id", "name", "tenant", "team", "status", "expires", "created")
_SCOPE_COLUMNS = ("name", "source", "models", "limits", "created")
_TEAM_COLUMNS = ("tenant", "name", "source", "models", "limits", "created")

Command = Callable[[argparse.Namespace, AdminClient], int]


class UsageError(Exception):
    """An invalid option value, reported before any request is sent."""


def _path(*parts: str) -> str:
    return "/admin/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)


def _client(args: argparse.Namespace) -> AdminClient:
    admin_key = os.environ.get(args.admin_key_env, "")
    if not admin_key:
        raise UsageError(
            f"no admin key: set {args.admin_key_env} to one of the admin keys in "
            "the gateway's admin.keys, or name another variable with --admin-key-env"
        )
    if not is_loopback_url(args.url) and args.url.startswith("http://"):
        print(
            f"warning: sending the admin key unencrypted to {args.url}; use https "
            "for a gateway on another machine",
            file=sys.stderr,
        )
    return AdminClient(args.url, admin_key)


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that its failures print one line and return 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args, _client(args))
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except AdminClientError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1

    return run


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(render_json(data) if args.format == "json" else text, end="")


def _print_warnings(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.format != "json":
        for warning in data.get("warnings") or []:
            print(f"warning: {warning}", file=sys.stderr)


def _print_created(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Print a key with its new secret, which the API shows only once."""
    if args.format == "json":
        print(render_json(data), end="")
        return
    record = {name: value for name, value in data.items() if name != "secret"}
    record.pop("warnings", None)
    print(render_record(record), end="")
    print(f"\nsecret (shown once, give it to the caller): {data['secret']}")
    _print_warnings(args, data)


# Option values


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    metadata = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise UsageError(f"invalid --metadata {pair!r}: expected NAME=VALUE")
        metadata[name] = value
    return metadata


def _limits(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        limits = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"invalid --limits: not JSON ({exc})") from None
    if not isinstance(limits, dict):
        raise UsageError("invalid --limits: expected a JSON object")
    return limits


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"invalid {option}: {exc}") from None


def _scope_body(args: argparse.Namespace) -> dict[str, Any]:
    """Build the models, limits and metadata fields the options set."""
    body: dict[str, Any] = {}
    if getattr(args, "all_models", False):
        body["models"] = None
    elif args.model is not None:
        body["models"] = args.model
    limits = _limits(args.limits)
    if limits is not None:
        body["limits"] = limits
    metadata = _metadata(args.metadata)
    if metadata is not None:
        body["metadata"] = metadata
    return body


def _key_body(args: argparse.Namespace) -> dict[str, Any]:
    body = _scope_body(args)
    for name in ("name", "owner", "team", "max_input_tokens", "max_output_tokens"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    if getattr(args, "tenant", None) is not None:
        body["tenant"] = args.tenant
    if getattr(args, "no_expiry", False):
        body["expires"] = None
    elif args.expires is not None:
        body["expires"] = args.expires
    elif args.expires_in is not None:
        body["expires_in_seconds"] = _duration("--expires-in", args.expires_in)
    return body


# Keys


def _keys_create(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("POST", _path("keys"), _key_body(args))
    _print_created(args, data)
    return 0


def _keys_list(args: argparse.Namespace, client: AdminClient) -> int:
    query = {
        name: getattr(args, name)
        for name in ("tenant", "team", "status")
        if getattr(args, name) is not None
    }
    data = client.request("GET", _path("keys"), query=query)
    _print(args, data, render_table(data["data"], _KEY_COLUMNS))
    return 0


def _keys_show(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("GET", _path("keys", args.key_id))
    _print(args, data, render_record(data))
    return 0


def _keys_update(args: argparse.Namespace, client: AdminClient) -> int:
    body = _key_body(args)
    if not body:
        raise UsageError("nothing to change: give at least one option to change")
    data = client.request("PATCH", _path("keys", args.key_id), body)
    _print(args, data, render_record(data))
    _print_warnings(args, data)
    return 0


def _keys_revoke(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("DELETE", _path("keys", args.key_id))
    _print(args, data, f"revoked {data['id']} ({data['name']})\n")
    return 0


def _keys_rotate(args: argparse.Namespace, client: AdminClient) -> int:
    body: dict[str, Any] = {}
    if args.grace is not None:
        body["grace_seconds"] = _duration("--grace", args.grace)
    data = client.request("POST", _path("keys", args.key_id, "rotate"), body)
    _print_created(args, data)
    return 0


# Tenants and teams


def _tenants_create(args: argparse.Namespace, client: AdminClient) -> int:
    body = {"name": args.name, **_scope_body(args)}
    data = client.request("POST", _path("tenants"), body)
    _print(args, data, render_record(_without_warnings(data)))
    _print_warnings(args, data)
    return 0


def _tenants_list(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("GET", _path("tenants"))
    _print(args, data, render_table(data["data"], _SCOPE_COLUMNS))
    return 0


def _tenants_show(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("GET", _path("tenants", args.name))
    _print(args, data, render_record(data))
    return 0


def _tenants_update(args: argparse.Namespace, client: AdminClient) -> int:
    body = _scope_body(args)
    if not body:
        raise UsageError("nothing to change: give --model, --limits or --metadata")
    data = client.request("PATCH", _path("tenants", args.name), body)
    _print(args, data, render_record(_without_warnings(data)))
    _print_warnings(args, data)
    return 0


def _tenants_delete(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("DELETE", _path("tenants", args.name))
    _print(args, data, f"deleted tenant {args.name}\n")
    return 0


def _teams_create(args: argparse.Namespace, client: AdminClient) -> int:
    body = {"name": args.name, **_scope_body(args)}
    data = client.request("POST", _path("tenants", args.tenant, "teams"), body)
    _print(args, data, render_record(_without_warnings(data)))
    _print_warnings(args, data)
    return 0


def _teams_list(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("GET", _path("tenants", args.tenant, "teams"))
    _print(args, data, render_table(data["data"], _TEAM_COLUMNS))
    return 0


def _teams_show(args: argparse.Namespace, client: AdminClient) -> int:
    data = client.request("GET", _path("tenants", args.tenant, "teams", args.name))
    _print(args, data, render_record(data))
    return 0


def _teams_update(args: argparse.Namespace, client: AdminClient) -> int:
    body = _scope_body(args)
    if not body:
        raise UsageError("nothing to change: give --model, --limits or --metadata")
    path = _path("tenants", args.tenant, "teams", args.name)
    data = client.request("PATCH", path, body)
    _print(args, data, render_record(_without_warnings(data)))
    _print_warnings(args, data)
    return 0


def _teams_delete(args: argparse.Namespace, client: AdminClient) -> int:
    path = _path("tenants", args.tenant, "teams", args.name)
    data = client.request("DELETE", path)
    _print(args, data, f"deleted team {args.tenant}/{args.name}\n")
    return 0


def _without_warnings(data: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in data.items() if name != "warnings"}


# Parsers


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"base URL of the running gateway (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--admin-key-env",
        default=ADMIN_KEY_VARIABLE,
        metavar="VARIABLE",
        help=f"environment variable that contains the admin key (default: "
        f"{ADMIN_KEY_VARIABLE})",
    )
    parser.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="output format (default: table)",
    )


def _scope_options(parser: argparse.ArgumentParser, *, update: bool) -> None:
    parser.add_argument(
        "--model",
        action="append",
        metavar="GLOB",
        help="allow models matching GLOB; repeat for several (default: all models)",
    )
    if update:
        parser.add_argument(
            "--all-models", action="store_true", help="allow every model again"
        )
    parser.add_argument(
        "--limits",
        metavar="JSON",
        help="limits as a JSON object in the config shape, such as "
        '\'{"requests_per_minute": 60, "budgets_usd": {"day": 5}}\'',
    )
    parser.add_argument(
        "--metadata",
        action="append",
        metavar="NAME=VALUE",
        help="a metadata entry; repeat for several (replaces all entries)",
    )


def _key_options(parser: argparse.ArgumentParser, *, update: bool) -> None:
    parser.add_argument(
        "--name", required=not update, help="the key's name, unique among active keys"
    )
    parser.add_argument("--owner", help="who owns the key, such as an email address")
    if not update:
        parser.add_argument("--tenant", help="the tenant the key belongs to")
    parser.add_argument("--team", help="a team of the key's tenant")
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires",
        metavar="TIME",
        help="expiry as ISO 8601, such as 2027-01-31T00:00Z",
    )
    expiry.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="expiry from now: seconds, or a number with s, m, h, d or w, such as 30d",
    )
    if update:
        expiry.add_argument(
            "--no-expiry", action="store_true", help="remove the expiry"
        )
    parser.add_argument(
        "--max-input-tokens", type=int, metavar="N", help="cap on input tokens"
    )
    parser.add_argument(
        "--max-output-tokens", type=int, metavar="N", help="cap on output tokens"
    )
    _scope_options(parser, update=update)


def _command(
    commands: Any, name: str, help_text: str, command: Command
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    _connection_options(parser)
    parser.set_defaults(func=_run(command))
    return parser


def add_key_commands(key_commands: Any) -> None:
    """Add create, list, show, update, revoke and rotate under ``llmgw keys``."""
    create = _command(
        key_commands,
        "create",
        "create a managed key on a running gateway",
        _keys_create,
    )
    _key_options(create, update=False)

    listing = _command(key_commands, "list", "list managed keys", _keys_list)
    listing.add_argument("--tenant", help="only keys of this tenant")
    listing.add_argument("--team", help="only keys of this team")
    listing.add_argument("--status", choices=["active", "revoked"])

    show = _command(key_commands, "show", "show a managed key", _keys_show)
    show.add_argument("key_id", help="the key's id, such as key_0123456789abcdef")

    update = _command(key_commands, "update", "change a managed key", _keys_update)
    update.add_argument("key_id")
    _key_options(update, update=True)

    revoke = _command(
        key_commands,
        "revoke",
        "revoke a managed key; every worker rejects it within one second",
        _keys_revoke,
    )
    revoke.add_argument("key_id")

    rotate = _command(
        key_commands,
        "rotate",
        "give a managed key a new secret; the old one works during a grace period",
        _keys_rotate,
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace",
        metavar="DURATION",
        help="how long the old secret keeps working, such as 0, 90m or 2d "
        "(default: 24h)",
    )


def add_scope_commands(commands: Any) -> None:
    """Add ``llmgw tenants`` and ``llmgw teams`` with their subcommands."""
    tenants = commands.add_parser("tenants", help="manage tenants on a running gateway")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True)
    create = _command(tenant_commands, "create", "create a tenant", _tenants_create)
    create.add_argument("name")
    _scope_options(create, update=False)
    _command(tenant_commands, "list", "list tenants", _tenants_list)
    show = _command(tenant_commands, "show", "show a tenant", _tenants_show)
    show.add_argument("name")
    update = _command(tenant_commands, "update", "change a tenant", _tenants_update)
    update.add_argument("name")
    _scope_options(update, update=True)
    delete = _command(
        tenant_commands, "delete", "delete a tenant and its teams", _tenants_delete
    )
    delete.add_argument("name")

    teams = commands.add_parser("teams", help="manage the teams of a tenant")
    team_commands = teams.add_subparsers(dest="teams_command", required=True)
    for name, help_text, command in (
        ("create", "create a team", _teams_create),
        ("list", "list a tenant's teams", _teams_list),
        ("show", "show a team", _teams_show),
        ("update", "change a team", _teams_update),
        ("delete", "delete a team", _teams_delete),
    ):
        parser = _command(team_commands, name, help_text, command)
        parser.add_argument("--tenant", required=True, help="the team's tenant")
        if name != "list":
            parser.add_argument("name")
        if name in ("create", "update"):
            _scope_options(parser, update=name == "update")
