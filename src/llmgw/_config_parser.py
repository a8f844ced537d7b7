"""Parse and validate the YAML configuration for ``llmgw.config``.

This private module contains the parser behind ``parse_config``. It imports the
dataclasses, ``ConfigError`` and the checks of single values from
``llmgw.config``. To avoid an import cycle, ``llmgw.config`` imports this
module inside ``parse_config``, never at the top.
"""

from __future__ import annotations

import difflib
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llmgw.config import (
    AZURE_URL_FORMS,
    DEFAULT_BASE_URLS,
    JWT_ALGORITHMS,
    LOG_LEVELS,
    MIN_ADMIN_KEY_LENGTH,
    ON_UNAVAILABLE,
    PERIODS,
    PLANNED_PROVIDER_KINDS,
    PROVIDER_KIND_KEYS,
    SCOPE_NAME,
    SCOPE_NAME_RULE,
    SUPPORTED_PROVIDER_KINDS,
    TOKEN_COUNTS,
    TOKENIZERS,
    AdminConfig,
    AuthConfig,
    Config,
    ConfigError,
    JWTClaims,
    JWTConfig,
    KeyConfig,
    LedgerConfig,
    LoggingConfig,
    ModelConfig,
    OnUnavailable,
    PolicyConfig,
    ProviderConfig,
    RedisConfig,
    Secret,
    ServerConfig,
    TeamConfig,
    TenantConfig,
    Timeouts,
    _check_http_url,
    _check_redis_url,
    _check_sink,
    _describe,
    _is_secret,
    _quote,
    _split_listen,
    check_cluster_url,
    hash_key,
    split_node_address,
)
from llmgw.ledger.sink import validate_table
from llmgw.limits.spec import LimitSpec, Period, Price, TokenCount

_TOP_KEYS = (
    "server",
    "redis",
    "ledger",
    "logging",
    "providers",
    "models",
    "keys",
    "policies",
    "tenants",
    "admin",
    "auth",
)
_SERVER_KEYS = (
    "listen",
    "workers",
    "max_body_bytes",
    "read_timeout",
    "shutdown_timeout",
)
_REDIS_KEYS = ("url", "key_prefix", "on_unavailable", "cluster", "cluster_nodes")
MIN_BUDGET_USD = 0.000001
_LEDGER_KEYS = ("sink", "table", "claim_idle_seconds")
_LOGGING_KEYS = ("level", "log_prompts")
_PROVIDER_KEYS = (
    "name",
    "kind",
    "base_url",
    "api_key",
    "timeouts",
    "api_version",
    "url_form",
    "region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)
_TIMEOUT_KEYS = ("connect", "first_byte", "idle", "total")
_MODEL_KEYS = (
    "name",
    "provider",
    "upstream_model",
    "max_input_tokens",
    "max_output_tokens",
    "tokenizer",
    "price",
)
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
_KEY_KEYS = (
    "name",
    "key",
    "key_sha256",
    "tenant",
    "models",
    "limits",
    "max_input_tokens",
    "max_output_tokens",
    "team",
)
# The limits within ``limits.models`` take every key but ``models``.
_MODEL_LIMIT_KEYS = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_minute_counts",
    "max_concurrent_requests",
    "token_quotas",
    "budgets_usd",
)
_LIMIT_KEYS = (*_MODEL_LIMIT_KEYS, "models")
_POLICY_KEYS = ("max_input_tokens", "max_output_tokens", "timezone")
_TENANT_KEYS = ("name", "models", "limits", "teams")
_TEAM_KEYS = ("name", "models", "limits")
_ADMIN_KEYS = ("keys", "store")
_ADMIN_KEY_ENTRY_KEYS = ("key", "key_sha256")
_AUTH_KEYS = ("jwt",)
_JWT_KEYS = (
    "issuer",
    "audience",
    "jwks_url",
    "public_key",
    "algorithms",
    "claims",
    "jwks_refresh_seconds",
    "leeway_seconds",
)
_JWT_CLAIM_KEYS = ("user", "team", "tenant")

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# "$$", a complete "${...}", or an unclosed "${".
_DOLLAR = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|\{)")
_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.S)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

_T = TypeVar("_T")


def _compose(text: str, source: str) -> Node | None:
    # The YAML errors are raised "from None" because their text quotes the
    # offending line, which may contain a secret.
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark is not None:
            reason += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ConfigError(source, line, "", reason) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        reason = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise ConfigError(source, line, "", reason) from None


def _describe_node(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a scalar"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _or_default(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _unknown_key_reason(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    return f"unknown key, expected one of: {', '.join(allowed)}"


@dataclass(frozen=True)
class _Section:
    """A mapping whose keys passed the schema check."""

    path: str
    node: MappingNode | None  # None when the section is absent
    values: dict[str, Node]

    def child(self, name: str) -> str:
        return _join(self.path, name)


@dataclass(frozen=True)
class _Scalar:
    """A constructed value and the node, path and key it came from."""

    node: Node
    path: str
    name: str  # the key it sits under, which decides whether it is secret
    value: object  # a Node when the YAML held a list or a mapping
    # True when the text contained ${...}, so a string may be converted.
    interpolated: bool
    # The environment variables whose values are in the text. Error messages
    # name them in place of the value. A ${NAME:-default} that took its
    # default is not listed.
    variables: tuple[str, ...] = ()


class _Parser:
    """Convert a composed YAML document into a ``Config``, checking every key."""

    def __init__(self, source: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.environ = environ
        self.constructor = SafeConstructor()

    # Sections of the document

    def config(self, root: MappingNode) -> Config:
        top = self.section(root, "", _TOP_KEYS)
        providers = self.providers(top)
        tenants = self.tenants(top)
        keys = self.keys(top, tenants)
        return Config(
            server=self.server(self.subsection(top, "server", _SERVER_KEYS)),
            redis=self.redis(top),
            ledger=self.ledger(self.subsection(top, "ledger", _LEDGER_KEYS)),
            logging=self.logging(self.subsection(top, "logging", _LOGGING_KEYS)),
            providers=providers,
            models=self.models(top, {provider.name for provider in providers}),
            keys=keys,
            policies=self.policies(self.subsection(top, "policies", _POLICY_KEYS)),
            source=self.source,
            tenants=tenants,
            admin=self.admin(self.subsection(top, "admin", _ADMIN_KEYS), keys),
            auth=self.auth(self.subsection(top, "auth", _AUTH_KEYS)),
        )

    def server(self, section: _Section) -> ServerConfig:
        default = ServerConfig()
        host, port = self.listen(section) or (default.host, default.port)
        workers = self.positive_int(section, "workers")
        max_body_bytes = self.positive_int(section, "max_body_bytes")
        read_timeout = self.positive_number(section, "read_timeout")
        shutdown_timeout = self.positive_number(section, "shutdown_timeout")
        return ServerConfig(
            host=host,
            port=port,
            workers=_or_default(workers, default.workers),
            max_body_bytes=_or_default(max_body_bytes, default.max_body_bytes),
            read_timeout=_or_default(read_timeout, default.read_timeout),
            shutdown_timeout=_or_default(shutdown_timeout, default.shutdown_timeout),
        )

    def listen(self, section: _Section) -> tuple[str, int] | None:
        item = self.lookup(section, "listen")
        if item is None or item.value is None:
            return None
        expected = "host:port such as 127.0.0.1:4000 or [::1]:4000"
        if not isinstance(item.value, str):
            raise self.invalid(item, expected)
        try:
            return _split_listen(item.value)
        except ValueError as exc:
            got = _describe(item.value, "listen", item.variables)
            reason = f"must be {expected}, got {got} ({exc})"
            raise self.error(item.node, item.path, reason) from None

    def redis(self, top: _Section) -> RedisConfig | None:
        node = top.values.get("redis")
        if node is None or self.is_null(node):
            return None

        section = self.section(node, "redis", _REDIS_KEYS, required=("url",))
        item = self.string_item(section, "url", required=True)
        assert item is not None and isinstance(item.value, str)
        url = item.value
        reason = _check_redis_url(url, item.variables)
        if reason is not None:
            raise self.error(item.node, item.path, reason)

        key_prefix = self.string(section, "key_prefix", allow_empty=True)
        on_unavailable = self.choice(section, "on_unavailable", ON_UNAVAILABLE)
        cluster = bool(self.boolean(section, "cluster"))
        if cluster:
            reason = check_cluster_url(url)
            if reason is not None:
                raise self.error(item.node, item.path, reason)
        nodes: list[str] = []
        for node, path in self.items(section, "cluster_nodes"):
            address = self.scalar(node, path, "cluster_nodes")
            if not isinstance(address.value, str):
                raise self.invalid(address, "a host:port string")
            try:
                split_node_address(address.value)
            except ValueError as exc:
                raise self.error(node, path, str(exc)) from None
            nodes.append(address.value)
        if nodes and not cluster:
            node = section.values["cluster_nodes"]
            reason = "needs cluster: true, because only a Redis Cluster has more nodes"
            raise self.error(node, section.child("cluster_nodes"), reason)
        return RedisConfig(
            url=url,
            key_prefix=_or_default(key_prefix, "llmgw:"),
            on_unavailable=cast(OnUnavailable, on_unavailable or "fail_closed"),
            cluster=cluster,
            cluster_nodes=tuple(nodes),
        )

    def ledger(self, section: _Section) -> LedgerConfig:
        default = LedgerConfig()
        sink = default.sink
        item = self.string_item(section, "sink")
        if item is not None:
            assert isinstance(item.value, str)
            reason = _check_sink(item.value, item.variables)
            if reason is not None:
                raise self.error(item.node, item.path, reason)
            sink = item.value

        table = default.table
        table_item = self.string_item(section, "table")
        if table_item is not None:
            assert isinstance(table_item.value, str)
            try:
                table = validate_table(table_item.value)
            except ValueError as exc:
                raise self.error(table_item.node, table_item.path, str(exc)) from None

        claim_idle = self.positive_number(section, "claim_idle_seconds")
        return LedgerConfig(
            sink=sink,
            table=table,
            claim_idle_seconds=_or_default(claim_idle, default.claim_idle_seconds),
        )

    def logging(self, section: _Section) -> LoggingConfig:
        level = self.choice(section, "level", LOG_LEVELS, ignore_case=True)
        log_prompts = self.boolean(section, "log_prompts")
        return LoggingConfig(
            level=_or_default(level, "info"),
            log_prompts=_or_default(log_prompts, False),
        )

    def policies(self, section: _Section) -> PolicyConfig:
        return PolicyConfig(
            max_input_tokens=self.positive_int(section, "max_input_tokens"),
            max_output_tokens=self.positive_int(section, "max_output_tokens"),
            timezone=self.timezone(section),
        )

    def timezone(self, section: _Section) -> str:
        item = self.string_item(section, "timezone")
        if item is None:
            return PolicyConfig().timezone
        assert isinstance(item.value, str)
        try:
            zoneinfo.ZoneInfo(item.value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            got = _describe(item.value, "timezone", item.variables)
            reason = (
                "must be an IANA time zone name such as UTC or Europe/Berlin, "
                f"got {got}"
            )
            raise self.error(item.node, item.path, reason) from None
        return item.value

    def admin(self, section: _Section, keys: tuple[KeyConfig, ...]) -> AdminConfig:
        gateway_hashes = {key.key_sha256: key.name for key in keys}
        digests: list[str] = []
        for node, path in self.items(section, "keys"):
            digest = self.admin_key(node, path)
            if digest is None:
                continue
            if digest in gateway_hashes:
                reason = (
                    f"is the same key as the gateway key {gateway_hashes[digest]!r}. "
                    "Give the admin API a key of its own"
                )
                raise self.error(node, path, reason)
            digests.append(digest)

        store = self.string_item(section, "store")
        if store is not None:
            assert isinstance(store.value, str)
            if not store.value.startswith("sqlite:///") or store.value == "sqlite:///":
                got = _describe(store.value, "store", store.variables)
                reason = (
                    "must be sqlite:///relative/path or sqlite:////absolute/path, "
                    f"got {got}"
                )
                raise self.error(store.node, store.path, reason)
        return AdminConfig(
            key_sha256=tuple(digests),
            store=None if store is None else str(store.value),
        )

    def admin_key(self, node: Node, path: str) -> str | None:
        """Return the SHA-256 of one ``admin.keys`` entry, None for an empty one.

        An entry is the key itself, or a mapping with ``key`` or ``key_sha256``.
        An empty key is skipped, so ``${LLMGW_ADMIN_KEY:-}`` leaves the admin
        API off while the variable is unset.
        """
        if isinstance(node, MappingNode):
            section = self.section(node, path, _ADMIN_KEY_ENTRY_KEYS)
            if "key" not in section.values:
                return self.key_sha256(section)
            item = self.string_item(section, "key", allow_empty=True)
        else:
            item = self.scalar(node, path, "key")
        if item is None or item.value == "":
            return None
        if not isinstance(item.value, str):
            raise self.invalid(item, "a string or a mapping with key or key_sha256")
        if len(item.value) < MIN_ADMIN_KEY_LENGTH:
            reason = (
                f"must be at least {MIN_ADMIN_KEY_LENGTH} characters, got "
                f"{len(item.value)} <hidden>. Generate one with: llmgw keys new"
            )
            raise self.error(item.node, item.path, reason)
        return hash_key(item.value)

    def auth(self, section: _Section) -> AuthConfig:
        node = section.values.get("jwt")
        if node is None or self.is_null(node):
            return AuthConfig()
        required = ("issuer", "audience")
        jwt = self.section(node, section.child("jwt"), _JWT_KEYS, required=required)
        return AuthConfig(jwt=self.jwt(jwt))

    def jwt(self, section: _Section) -> JWTConfig:
        issuer = self.string(section, "issuer", required=True)
        audience = self.string(section, "audience", required=True)
        assert issuer is not None and audience is not None

        jwks_url = self.http_url(section, "jwks_url")
        public_key = self.string(section, "public_key")
        if (jwks_url is None) == (public_key is None):
            found = "neither" if jwks_url is None else "both"
            reason = f"must set exactly one of jwks_url and public_key, found {found}"
            raise self.error(section.node, section.path, reason)
        if public_key is not None and "-----BEGIN" not in public_key:
            node = section.values["public_key"]
            reason = "must be a PEM public key starting with -----BEGIN PUBLIC KEY-----"
            raise self.error(node, section.child("public_key"), reason)

        default = JWTConfig(issuer="", audience="")
        refresh = self.positive_number(section, "jwks_refresh_seconds")
        leeway = self.non_negative_number(section, "leeway_seconds")
        claims = self.subsection(section, "claims", _JWT_CLAIM_KEYS)
        return JWTConfig(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            public_key=public_key,
            algorithms=self.jwt_algorithms(section) or default.algorithms,
            claims=JWTClaims(
                user=_or_default(self.string(claims, "user"), JWTClaims().user),
                team=self.string(claims, "team"),
                tenant=self.string(claims, "tenant"),
            ),
            jwks_refresh_seconds=_or_default(refresh, default.jwks_refresh_seconds),
            leeway_seconds=_or_default(leeway, default.leeway_seconds),
        )

    def jwt_algorithms(self, section: _Section) -> tuple[str, ...]:
        algorithms: list[str] = []
        for node, path in self.items(section, "algorithms"):
            item = self.scalar(node, path, "algorithms")
            if not isinstance(item.value, str) or item.value not in JWT_ALGORITHMS:
                supported = ", ".join(JWT_ALGORITHMS)
                got = _describe(item.value, "algorithms", item.variables)
                reason = f"must be one of {supported}, got {got}"
                raise self.error(item.node, item.path, reason)
            algorithms.append(item.value)
        return tuple(algorithms)

    # Lists of named entries

    def providers(self, top: _Section) -> tuple[ProviderConfig, ...]:
        providers = []
        first_paths: dict[str, str] = {}
        for node, path in self.items(top, "providers"):
            provider = self.provider(node, path)
            self.check_unique(first_paths, provider.name, node, path, "provider")
            providers.append(provider)
        return tuple(providers)

    def provider(self, node: Node, path: str) -> ProviderConfig:
        required = ("name", "kind")
        section = self.section(node, path, _PROVIDER_KEYS, required=required)
        name = self.name(section)
        kind = self.provider_kind(section)

        base_url = self.http_url(section, "base_url")
        if base_url is None and kind not in DEFAULT_BASE_URLS:
            # The kind may come from the environment, so it is not echoed.
            reason = "missing required key (this provider kind has no default base_url)"
            raise self.error(node, section.child("base_url"), reason)
        self.check_kind_keys(section, kind)

        api_key = self.string(section, "api_key", allow_empty=True)
        timeouts = self.timeouts(self.subsection(section, "timeouts", _TIMEOUT_KEYS))
        return ProviderConfig(
            name=name,
            kind=kind,
            base_url=_or_default(base_url, DEFAULT_BASE_URLS.get(kind, "")),
            api_key=Secret(_or_default(api_key, "")),
            timeouts=timeouts,
            api_version=self.string(section, "api_version"),
            url_form=self.azure_url_form(node, section, kind),
            region=self.string(section, "region"),
            aws_access_key_id=self.string(section, "aws_access_key_id"),
            aws_secret_access_key=Secret(
                _or_default(self.string(section, "aws_secret_access_key"), "")
            ),
            aws_session_token=Secret(
                _or_default(self.string(section, "aws_session_token"), "")
            ),
        )

    def check_kind_keys(self, section: _Section, kind: str) -> None:
        """Reject provider keys that do not apply to ``kind``."""
        for key, kinds in PROVIDER_KIND_KEYS.items():
            if key in section.values and kind not in kinds:
                reason = f"applies only to providers of kind {' or '.join(kinds)}"
                raise self.error(section.values[key], section.child(key), reason)

    def azure_url_form(self, node: Node, section: _Section, kind: str) -> str | None:
        """Read ``url_form``; the deployment form needs ``api_version``."""
        url_form = self.choice(section, "url_form", AZURE_URL_FORMS)
        if kind != "azure-openai" or url_form == "v1":
            return url_form
        if self.string(section, "api_version") is None:
            reason = (
                "missing required key (azure-openai deployment URLs need the"
                " Azure OpenAI API version, such as YYYY-MM-DD; or set"
                " url_form: v1)"
            )
            raise self.error(node, section.child("api_version"), reason)
        return url_form

    def provider_kind(self, section: _Section) -> str:
        item = self.string_item(section, "kind", required=True)
        assert item is not None and isinstance(item.value, str)
        kind = item.value
        if kind in SUPPORTED_PROVIDER_KINDS:
            return kind

        supported = ", ".join(SUPPORTED_PROVIDER_KINDS)
        if kind in PLANNED_PROVIDER_KINDS:
            quoted = _quote(kind, item.variables)
            reason = f"provider kind {quoted} is not supported yet (supported: "
            reason += f"{supported})"
        else:
            got = _describe(kind, "kind", item.variables)
            reason = f"must be one of {supported}, got {got}"
        raise self.error(item.node, item.path, reason)

    def timeouts(self, section: _Section) -> Timeouts:
        default = Timeouts()
        connect = self.positive_number(section, "connect")
        first_byte = self.positive_number(section, "first_byte")
        idle = self.positive_number(section, "idle")
        total = self.positive_number(section, "total")
        return Timeouts(
            connect=_or_default(connect, default.connect),
            first_byte=_or_default(first_byte, default.first_byte),
            idle=_or_default(idle, default.idle),
            total=_or_default(total, default.total),
        )

    def models(self, top: _Section, providers: set[str]) -> tuple[ModelConfig, ...]:
        models = []
        first_paths: dict[str, str] = {}
        for node, path in self.items(top, "models"):
            model = self.model(node, path, providers)
            self.check_unique(first_paths, model.name, node, path, "model")
            models.append(model)
        return tuple(models)

    def model(self, node: Node, path: str, providers: set[str]) -> ModelConfig:
        required = ("name", "provider")
        section = self.section(node, path, _MODEL_KEYS, required=required)
        name = self.name(section)

        item = self.string_item(section, "provider", required=True)
        assert item is not None and isinstance(item.value, str)
        provider = item.value
        if provider not in providers:
            quoted = _quote(provider, item.variables)
            reason = f"provider {quoted} is not defined under providers"
            if providers:
                reason += f" (defined: {', '.join(sorted(providers))})"
            raise self.error(item.node, item.path, reason)

        return ModelConfig(
            name=name,
            provider=provider,
            upstream_model=self.string(section, "upstream_model"),
            max_input_tokens=self.positive_int(section, "max_input_tokens"),
            max_output_tokens=self.positive_int(section, "max_output_tokens"),
            tokenizer=self.choice(section, "tokenizer", TOKENIZERS),
            price=self.price(section),
        )

    def price(self, parent: _Section) -> Price | None:
        node = parent.values.get("price")
        if node is None or self.is_null(node):
            return None
        path = parent.child("price")
        section = self.section(node, path, _PRICE_KEYS, required=("input", "output"))
        values: dict[str, float | None] = {}
        for name in _PRICE_KEYS:
            values[name] = self.non_negative_number(section, name)
        for name in ("input", "output"):
            if values[name] is None:
                reason = (
                    "must be a non-negative number of US dollars per million tokens"
                )
                raise self.error(section.values[name], section.child(name), reason)
        return Price(
            input=cast(float, values["input"]),
            output=cast(float, values["output"]),
            cache_read=values["cache_read"],
            cache_write=values["cache_write"],
            reasoning=values["reasoning"],
        )

    def keys(
        self, top: _Section, tenants: tuple[TenantConfig, ...]
    ) -> tuple[KeyConfig, ...]:
        keys = []
        first_paths: dict[str, str] = {}
        first_hash_paths: dict[str, str] = {}
        tenants_by_name = {tenant.name: tenant for tenant in tenants}
        for node, path in self.items(top, "keys"):
            key = self.key(node, path, tenants_by_name)
            self.check_unique(first_paths, key.name, node, path, "key")
            if key.key_sha256 in first_hash_paths:
                first = first_hash_paths[key.key_sha256]
                reason = f"has the same key as {first}. Give each entry its own key"
                raise self.error(node, path, reason)
            first_hash_paths[key.key_sha256] = path
            keys.append(key)
        return tuple(keys)

    def key(
        self, node: Node, path: str, tenants: Mapping[str, TenantConfig]
    ) -> KeyConfig:
        section = self.section(node, path, _KEY_KEYS, required=("name",))
        tenant = self.scope_name(section, "tenant")
        team = self.scope_name(section, "team")
        if team is not None:
            self.check_team(section, tenant, team, tenants)
        return KeyConfig(
            name=self.name(section),
            key_sha256=self.key_sha256(section),
            tenant=tenant,
            models=self.globs(section, "models"),
            limits=self.limits(section),
            max_input_tokens=self.positive_int(section, "max_input_tokens"),
            max_output_tokens=self.positive_int(section, "max_output_tokens"),
            team=team,
        )

    def check_team(
        self,
        section: _Section,
        tenant: str | None,
        team: str,
        tenants: Mapping[str, TenantConfig],
    ) -> None:
        """Reject a key's team without a tenant, or missing from its tenant.

        A tenant not under ``tenants`` may be created through the admin API,
        so its teams cannot be checked here.
        """
        node = section.values["team"]
        if tenant is None:
            reason = "needs tenant: a team belongs to a tenant"
            raise self.error(node, section.child("team"), reason)
        config_tenant = tenants.get(tenant)
        if config_tenant is not None and config_tenant.team(team) is None:
            defined = ", ".join(t.name for t in config_tenant.teams) or "none"
            reason = (
                f"team {team!r} is not defined under tenant {tenant!r} "
                f"(defined: {defined})"
            )
            raise self.error(node, section.child("team"), reason)

    # Tenants, teams and their limits

    def tenants(self, top: _Section) -> tuple[TenantConfig, ...]:
        tenants = []
        first_paths: dict[str, str] = {}
        for node, path in self.items(top, "tenants"):
            section = self.section(node, path, _TENANT_KEYS, required=("name",))
            name = self.scope_name(section, "name", required=True)
            assert name is not None
            self.check_unique(first_paths, name, node, path, "tenant")
            tenants.append(
                TenantConfig(
                    name=name,
                    models=self.globs(section, "models"),
                    limits=self.limits(section),
                    teams=self.teams(section),
                )
            )
        return tuple(tenants)

    def teams(self, tenant: _Section) -> tuple[TeamConfig, ...]:
        teams = []
        first_paths: dict[str, str] = {}
        for node, path in self.items(tenant, "teams"):
            section = self.section(node, path, _TEAM_KEYS, required=("name",))
            name = self.scope_name(section, "name", required=True)
            assert name is not None
            self.check_unique(first_paths, name, node, path, "team")
            teams.append(
                TeamConfig(
                    name=name,
                    models=self.globs(section, "models"),
                    limits=self.limits(section),
                )
            )
        return tuple(teams)

    def scope_name(
        self, section: _Section, name: str, *, required: bool = False
    ) -> str | None:
        """Read a tenant or team name, which Redis keys and scope ids contain."""
        item = self.string_item(section, name, required=required)
        if item is None:
            return None
        assert isinstance(item.value, str)
        if not SCOPE_NAME.fullmatch(item.value):
            got = _describe(item.value, name, item.variables)
            raise self.error(
                item.node, item.path, f"must be {SCOPE_NAME_RULE}, got {got}"
            )
        return item.value

    def limits(self, parent: _Section) -> LimitSpec:
        section = self.subsection(parent, "limits", _LIMIT_KEYS)
        return self.limit_spec(section, self.model_limits(section))

    def limit_spec(
        self, section: _Section, models: tuple[tuple[str, LimitSpec], ...] = ()
    ) -> LimitSpec:
        counts = self.choice(section, "tokens_per_minute_counts", TOKEN_COUNTS)
        return LimitSpec(
            requests_per_minute=self.positive_int(section, "requests_per_minute"),
            tokens_per_minute=self.positive_int(section, "tokens_per_minute"),
            tokens_per_minute_counts=cast(TokenCount, counts or "total"),
            max_concurrent_requests=self.positive_int(
                section, "max_concurrent_requests"
            ),
            token_quotas=self.token_quotas(section),
            budgets_usd=self.budgets(section),
            models=models,
        )

    def token_quotas(self, parent: _Section) -> tuple[tuple[Period, int], ...]:
        section = self.subsection(parent, "token_quotas", PERIODS)
        quotas: list[tuple[Period, int]] = []
        for period in PERIODS:
            value = self.positive_int(section, period)
            if value is not None:
                quotas.append((period, value))
        return tuple(quotas)

    def budgets(self, parent: _Section) -> tuple[tuple[Period, float], ...]:
        section = self.subsection(parent, "budgets_usd", PERIODS)
        budgets: list[tuple[Period, float]] = []
        for period in PERIODS:
            value = self.positive_number(section, period)
            if value is None:
                continue
            # Budgets are kept in whole micro-dollars, so a smaller one would
            # round to zero and reject every request.
            if value < MIN_BUDGET_USD:
                node = section.values[period]
                reason = (
                    f"must be at least {MIN_BUDGET_USD} USD (one micro-dollar), "
                    f"got {value:g}"
                )
                raise self.error(node, section.child(period), reason)
            budgets.append((period, value))
        return tuple(budgets)

    def model_limits(self, section: _Section) -> tuple[tuple[str, LimitSpec], ...]:
        """Read ``limits.models``: model-name globs mapped to their limits."""
        node = section.values.get("models")
        path = section.child("models")
        if node is None or self.is_null(node):
            return ()
        if not isinstance(node, MappingNode):
            got = _describe_node(node)
            reason = f"must be a mapping of model-name globs to limits, got {got}"
            raise self.error(node, path, reason)

        entries: list[tuple[str, LimitSpec]] = []
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            glob = self.key_name(key_node, path)
            entry_path = f"{path}[{glob!r}]"
            if not glob:
                raise self.error(key_node, entry_path, "must not be empty")
            if glob in key_lines:
                reason = f"duplicate key, first defined on line {key_lines[glob]}"
                raise self.error(key_node, entry_path, reason)
            key_lines[glob] = key_node.start_mark.line + 1
            entry = self.section(value_node, entry_path, _MODEL_LIMIT_KEYS)
            entries.append((glob, self.limit_spec(entry)))
        return tuple(entries)

    def key_sha256(self, section: _Section) -> str:
        """Return the key's sha256 from exactly one of ``key`` and ``key_sha256``."""
        has_key = "key" in section.values
        has_hash = "key_sha256" in section.values
        if has_key == has_hash:
            found = "both" if has_key else "neither"
            reason = f"must set exactly one of key and key_sha256, found {found}"
            raise self.error(section.node, section.path, reason)

        if has_key:
            plaintext = self.string(section, "key", required=True)
            assert plaintext is not None
            return hash_key(plaintext)

        digest = self.string(section, "key_sha256", required=True)
        assert digest is not None
        if not _SHA256_HEX.fullmatch(digest):
            reason = (
                "must be 64 hexadecimal characters (the sha256 of the key), "
                f"got {len(digest)} characters <hidden>"
            )
            node = section.values["key_sha256"]
            raise self.error(node, section.child("key_sha256"), reason)
        return digest.lower()

    def globs(self, section: _Section, name: str) -> tuple[str, ...] | None:
        if name not in section.values or self.is_null(section.values[name]):
            return None
        globs = []
        for node, path in self.items(section, name):
            item = self.scalar(node, path, name)
            if not isinstance(item.value, str) or not item.value:
                raise self.invalid(item, "a non-empty string")
            globs.append(item.value)
        return tuple(globs)

    def check_unique(
        self, first_paths: dict[str, str], name: str, node: Node, path: str, what: str
    ) -> None:
        """Record ``name`` for the list entry at ``path``, rejecting a repeat."""
        if name in first_paths:
            name_node = _child_node(node, "name") or node
            name_path = _join(path, "name")
            # Construct the name again only to learn whether it came from
            # the environment, which decides whether the message shows it.
            item = self.scalar(name_node, name_path, "name")
            quoted = _quote(name, item.variables)
            reason = f"duplicate {what} name {quoted}, first used at "
            reason += first_paths[name]
            raise self.error(name_node, name_path, reason)
        first_paths[name] = path

    # Structure: mappings and lists

    def section(
        self,
        node: Node | None,
        path: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> _Section:
        """Check a mapping's keys against the schema.

        An absent or null mapping gives an empty section unless keys are required.
        """
        if node is None or (self.is_null(node) and not required):
            return _Section(path, None, {})
        if not isinstance(node, MappingNode):
            got = _describe_node(node) if not self.is_null(node) else "null"
            raise self.error(node, path, f"must be a mapping, got {got}")

        values: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = self.key_name(key_node, path)
            if name in values:
                reason = f"duplicate key, first defined on line {key_lines[name]}"
                raise self.error(key_node, _join(path, name), reason)
            if name not in allowed:
                reason = _unknown_key_reason(name, allowed)
                raise self.error(key_node, _join(path, name), reason)
            values[name] = value_node
            key_lines[name] = key_node.start_mark.line + 1

        for name in required:
            if name not in values:
                raise self.error(node, _join(path, name), "missing required key")
        return _Section(path, node, values)

    def subsection(
        self, parent: _Section, name: str, allowed: tuple[str, ...]
    ) -> _Section:
        return self.section(parent.values.get(name), parent.child(name), allowed)

    def key_name(self, key_node: Node, path: str) -> str:
        if isinstance(key_node, ScalarNode) and key_node.tag == _STR_TAG:
            return str(key_node.value)
        if key_node.tag == _MERGE_TAG:
            reason = "merge keys (<<) are not supported, repeat the keys instead"
            raise self.error(key_node, path, reason)
        got = _describe_node(key_node)
        if isinstance(key_node, ScalarNode):
            got = f"{key_node.value!r}"
        raise self.error(key_node, path, f"mapping keys must be strings, got {got}")

    def items(self, section: _Section, name: str) -> list[tuple[Node, str]]:
        """Return the nodes of a list and their paths. Absent or null is empty."""
        node = section.values.get(name)
        path = section.child(name)
        if node is None or self.is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise self.invalid(self.scalar(node, path, name), "a list")
        return [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]

    # Scalars

    def name(self, section: _Section) -> str:
        name = self.string(section, "name", required=True)
        assert name is not None
        return name

    def string(
        self,
        section: _Section,
        name: str,
        *,
        required: bool = False,
        allow_empty: bool = False,
    ) -> str | None:
        """Read a string. Absent or null gives None unless ``required``."""
        item = self.string_item(
            section, name, required=required, allow_empty=allow_empty
        )
        if item is None:
            return None
        assert isinstance(item.value, str)
        return item.value

    def string_item(
        self,
        section: _Section,
        name: str,
        *,
        required: bool = False,
        allow_empty: bool = False,
    ) -> _Scalar | None:
        """Read a string like ``string``, returning its ``_Scalar``."""
        item = self.lookup(section, name)
        if item is None or (item.value is None and not required):
            return None
        if not isinstance(item.value, str):
            raise self.invalid(item, "a string")
        if not item.value and not allow_empty:
            raise self.error(item.node, item.path, "must not be empty")
        return item

    def choice(
        self,
        section: _Section,
        name: str,
        options: tuple[str, ...],
        *,
        ignore_case: bool = False,
    ) -> str | None:
        item = self.string_item(section, name)
        if item is None:
            return None
        assert isinstance(item.value, str)
        value = item.value.lower() if ignore_case else item.value
        if value not in options:
            got = _describe(value, name, item.variables)
            reason = f"must be one of {', '.join(options)}, got {got}"
            raise self.error(item.node, item.path, reason)
        return value

    def http_url(self, section: _Section, name: str) -> str | None:
        item = self.string_item(section, name)
        if item is None:
            return None
        assert isinstance(item.value, str)
        reason = _check_http_url(item.value, item.variables)
        if reason is not None:
            raise self.error(item.node, item.path, reason)
        return item.value.rstrip("/")

    def positive_int(self, section: _Section, name: str) -> int | None:
        found = self.converted(section, name, _to_int)
        if found is None:
            return None
        item, value = found
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.invalid(item, "a positive integer", value)
        return value

    def positive_number(self, section: _Section, name: str) -> float | None:
        """Read a positive, finite number, integer or not."""
        found = self.converted(section, name, _to_float)
        if found is None:
            return None
        item, value = found
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(item, "a positive number", value)
        if not math.isfinite(value) or value <= 0:
            raise self.invalid(item, "a positive number", value)
        return float(value)

    def non_negative_number(self, section: _Section, name: str) -> float | None:
        found = self.converted(section, name, _to_float)
        if found is None:
            return None
        item, value = found
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(item, "a non-negative number", value)
        if not math.isfinite(value) or value < 0:
            raise self.invalid(item, "a non-negative number", value)
        return float(value)

    def boolean(self, section: _Section, name: str) -> bool | None:
        found = self.converted(section, name, _to_bool)
        if found is None:
            return None
        item, value = found
        if not isinstance(value, bool):
            raise self.invalid(item, "true or false", value)
        return value

    def converted(
        self, section: _Section, name: str, convert: Callable[[str], object]
    ) -> tuple[_Scalar, object] | None:
        """Look up a value, converting a string that came from ``${...}``.

        Returns None when the value is absent, null, or an empty string from
        ``${...}``, so that ``${VAR:-}`` with VAR unset gives the default.
        """
        item = self.lookup(section, name)
        if item is None:
            return None
        value = item.value
        if item.interpolated and isinstance(value, str):
            value = convert(value.strip()) if value.strip() else None
        if value is None:
            return None
        return item, value

    def lookup(self, section: _Section, name: str) -> _Scalar | None:
        node = section.values.get(name)
        if node is None:
            return None
        return self.scalar(node, section.child(name), name)

    def scalar(self, node: Node, path: str, name: str) -> _Scalar:
        """Construct a scalar's value and replace ``${...}`` in a string."""
        if not isinstance(node, ScalarNode):
            return _Scalar(node, path, name, node, interpolated=False)
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        try:
            value = self.constructor.construct_object(node)
        except ConstructorError:
            raise self.error(node, path, f"unsupported YAML tag {tag}") from None
        except ValueError:
            reason = f"invalid value for the YAML tag {tag}"
            raise self.error(node, path, reason) from None
        if isinstance(value, str) and "$" in value:
            return self.interpolate(_Scalar(node, path, name, value, False))
        return _Scalar(node, path, name, value, interpolated=False)

    def interpolate(self, item: _Scalar) -> _Scalar:
        assert isinstance(item.value, str)
        found_reference = False
        variables: list[str] = []

        def replace(match: re.Match[str]) -> str:
            nonlocal found_reference
            if match.group() == "$$":
                return "$"
            found_reference = True
            text, variable = self.resolve(item, match.group("body"))
            if variable is not None and variable not in variables:
                variables.append(variable)
            return text

        text = _DOLLAR.sub(replace, item.value)
        return _Scalar(
            item.node, item.path, item.name, text, found_reference, tuple(variables)
        )

    def resolve(self, item: _Scalar, body: str | None) -> tuple[str, str | None]:
        """Return the value of the reference ``${body}`` and its variable.

        The variable is None when the value is the default written in the file.
        """
        if body is None:
            reason = "unclosed '${'. Write ${NAME}, ${NAME:-default}, or $$ for '$'"
            raise self.error(item.node, item.path, reason)
        reference = _REFERENCE.fullmatch(body)
        if reference is None:
            text = "<hidden>" if _is_secret(item.name) else "${" + body + "}"
            reason = f"invalid reference {text}, expected ${{NAME}} or "
            reason += "${NAME:-default}"
            raise self.error(item.node, item.path, reason)

        variable = reference.group("name")
        default = reference.group("default")
        value = self.environ.get(variable)
        if default is not None and not value:
            return default, None
        if value is None:
            reason = f"environment variable {variable} is not set. Set it, or "
            reason += f"write ${{{variable}:-default}} to give a default"
            raise self.error(item.node, item.path, reason)
        return value, variable

    # Errors

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def invalid(
        self, item: _Scalar, expected: str, value: object | None = None
    ) -> ConfigError:
        """Build the error for a value of the wrong type or out of range."""
        shown = item.value if value is None else value
        if isinstance(shown, Node):
            got = _describe_node(shown)
        else:
            got = _describe(shown, item.name, item.variables)
        return self.error(item.node, item.path, f"must be {expected}, got {got}")

    def error(self, node: Node | None, path: str, reason: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.source, line, path, reason)


def _child_node(node: Node, name: str) -> Node | None:
    """Return the value node for ``name`` in a mapping, or None."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == name:
            return value_node  # type: ignore[no-any-return]
    return None


def _to_int(text: str) -> object:
    return int(text) if _INTEGER.fullmatch(text) else text


def _to_float(text: str) -> object:
    return float(text) if _NUMBER.fullmatch(text) else text


def _to_bool(text: str) -> object:
    return {"true": True, "false": False}.get(text.lower(), text)
