"""Configuration: the YAML schema as frozen dataclasses, and its loader.

``load_config`` reads a YAML file and ``parse_config`` parses YAML text. Both
return a ``Config`` or raise ``ConfigError``, whose message names the file,
the line and the key path::

    config.yaml:7: server.workers: must be a positive integer, got 0

Unknown keys are rejected at every level. Scalar strings may refer to
environment variables: ``${VAR}`` (an error when VAR is unset),
``${VAR:-default}`` (the default when VAR is unset or empty) and ``$$`` for a
literal ``$``. Any other ``$`` is kept as it is. References are replaced after
YAML parsing, so line numbers stay right. A scalar that contained a reference
is converted to an integer, a number or a boolean where the schema expects
one, so ``workers: ${WORKERS:-2}`` gives the integer 2.

Error messages never show a value that came from an environment variable,
because any variable may hold a secret. They name the variable instead, as in
``got a string from ${WORKERS}``. A default written in the file may be shown.

``default_config`` builds the configuration that ``llmgw serve`` uses when no
``--config`` is given.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

from yaml.nodes import MappingNode

from llmgw.limits.spec import LimitSpec, Period, Price, TokenCount


def redact_url(url: str) -> str:
    """Replace the password in a URL's user info or ``password=`` query by ***."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # an unclosed "[" in the host, for example
        return re.sub(r"//[^/]*@", "//***@", url)
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        username = userinfo.split(":", 1)[0]
        url = url.replace(netloc, f"{username}:***@{hostport}", 1)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)


@dataclass(frozen=True)
class Secret:
    """A string that never shows in ``repr`` or ``str``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    # Seconds allowed for the client to send the whole request body.
    read_timeout: float = 30.0
    # Seconds that SIGTERM waits for in-flight requests before closing them.
    shutdown_timeout: float = 30.0


OnUnavailable = Literal["fail_closed", "fail_open"]


@dataclass(frozen=True)
class RedisConfig:
    url: str
    key_prefix: str = "llmgw:"
    # What a request gets when Redis cannot be reached: fail_closed rejects
    # it with 503, fail_open lets it through unlimited.
    on_unavailable: OnUnavailable = "fail_closed"
    # Whether url names one node of a Redis Cluster, from which the gateway
    # learns the others.
    cluster: bool = False
    # More "host:port" nodes of the cluster, asked for its layout beside the
    # node of url, so the gateway finds the cluster while that node is down.
    cluster_nodes: tuple[str, ...] = ()

    @property
    def cluster_addresses(self) -> tuple[tuple[str, int], ...]:
        """The hosts and ports of ``cluster_nodes``."""
        return tuple(split_node_address(node) for node in self.cluster_nodes)

    def __repr__(self) -> str:
        url = redact_url(self.url)
        return (
            f"RedisConfig(url={url!r}, key_prefix={self.key_prefix!r}, "
            f"on_unavailable={self.on_unavailable!r}, cluster={self.cluster!r}, "
            f"cluster_nodes={self.cluster_nodes!r})"
        )


@dataclass(frozen=True)
class LedgerConfig:
    # sqlite:///relative/path, sqlite:////absolute/path or postgresql://...
    sink: str = "sqlite:///llmgw.db"
    table: str = "llmgw_usage"
    # How long a record read by a worker may stay unacknowledged before
    # another worker takes it over, as after that worker died mid-batch.
    claim_idle_seconds: float = 60.0

    def __repr__(self) -> str:
        return (
            f"LedgerConfig(sink={redact_url(self.sink)!r}, table={self.table!r}, "
            f"claim_idle_seconds={self.claim_idle_seconds!r})"
        )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    # Log request and response bodies. Off by default because prompts may
    # hold personal data.
    log_prompts: bool = False


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts in seconds."""

    connect: float = 10.0
    first_byte: float = 120.0
    idle: float = 120.0
    total: float = 600.0


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    kind: str
    # "" only for bedrock without one: the region's endpoint is used.
    base_url: str
    api_key: Secret = Secret("")
    timeouts: Timeouts = Timeouts()
    # anthropic: the anthropic-version header (2023-06-01 when unset).
    # azure-openai: the api-version query parameter.
    api_version: str | None = None
    # azure-openai: "deployment" (the default) or "v1", the URL style.
    url_form: str | None = None
    # bedrock: the AWS region and credentials. Unset ones come from
    # AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID,
    # AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN when the gateway starts.
    region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret = Secret("")
    aws_session_token: Secret = Secret("")


@dataclass(frozen=True)
class ModelConfig:
    # The name clients send. A glob such as "*" routes any matching name to
    # the provider with upstream_model equal to the requested name.
    name: str
    provider: str
    upstream_model: str | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    # tiktoken encoding for input counts, for example "cl100k_base". None
    # picks one from the upstream model's name.
    tokenizer: str | None = None
    # None: requests for the model count no cost against money budgets.
    price: Price | None = None


# The former name of LimitSpec, kept so that code written against the first
# key schema still imports.
KeyLimits = LimitSpec


@dataclass(frozen=True)
class KeyConfig:
    name: str
    key_sha256: str  # lowercase hex; a plain `key` in YAML is hashed at load
    tenant: str | None = None
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    team: str | None = None  # a team of ``tenant``; needs ``tenant``


@dataclass(frozen=True)
class TeamConfig:
    name: str
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)


@dataclass(frozen=True)
class TenantConfig:
    name: str
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: LimitSpec = field(default_factory=LimitSpec)
    teams: tuple[TeamConfig, ...] = ()

    def team(self, name: str) -> TeamConfig | None:
        return next((team for team in self.teams if team.name == name), None)


@dataclass(frozen=True)
class AdminConfig:
    """The admin API's keys and the location of managed records.

    ``key_sha256`` lists the lowercase SHA-256 hex digests of the admin keys.
    Empty disables the admin API. ``store`` is the SQLite file that keeps
    managed keys, tenants and teams when no Redis is configured; None puts
    them in the ledger's SQLite file, or in ``llmgw-admin.db`` when the
    ledger is in PostgreSQL.
    """

    key_sha256: tuple[str, ...] = ()
    store: str | None = None


@dataclass(frozen=True)
class JWTClaims:
    """The JWT claim names that carry the caller's user, team and tenant."""

    user: str = "sub"
    team: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class JWTConfig:
    """Verification of JWT bearer tokens, accepted beside gateway keys.

    Exactly one of ``jwks_url`` and ``public_key`` (a PEM text) is set.
    ``jwks_refresh_seconds`` is how often the key set is fetched again, and
    ``leeway_seconds`` the clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    """

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: Secret | str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    claims: JWTClaims = JWTClaims()
    jwks_refresh_seconds: float = 300.0
    leeway_seconds: float = 30.0


@dataclass(frozen=True)
class AuthConfig:
    jwt: JWTConfig | None = None


@dataclass(frozen=True)
class PolicyConfig:
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    # IANA time zone in which daily, weekly and monthly quotas and budgets
    # reset, for example "Europe/Berlin".
    timezone: str = "UTC"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    redis: RedisConfig | None = None  # None: the embedded in-process back end
    ledger: LedgerConfig = LedgerConfig()
    logging: LoggingConfig = LoggingConfig()
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    keys: tuple[KeyConfig, ...] = ()
    policies: PolicyConfig = PolicyConfig()
    source: str = "<embedded default>"
    tenants: tuple[TenantConfig, ...] = ()
    admin: AdminConfig = AdminConfig()
    auth: AuthConfig = AuthConfig()

    def tenant(self, name: str) -> TenantConfig | None:
        return next((tenant for tenant in self.tenants if tenant.name == name), None)


DEFAULT_SOURCE = "<embedded default>"
OPENAI_BASE_URL = "https://api.openai.com/v1"
GATEWAY_KEY_PREFIX = "sk-llmgw-"

SUPPORTED_PROVIDER_KINDS = (
    "openai",
    "openai-compatible",
    "anthropic",
    "gemini",
    "azure-openai",
    "bedrock",
    "mistral",
    "vllm",
    "ollama",
)
# Kinds planned in the schema whose provider adapters do not exist yet.
PLANNED_PROVIDER_KINDS: tuple[str, ...] = ()
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
MISTRAL_BASE_URL = "https://api.mistral.ai/v1"
# The base_url of each kind whose public API has one address. The others
# (openai-compatible, vllm, ollama, azure-openai) need base_url in the
# config, and bedrock derives it from the region.
DEFAULT_BASE_URLS = {
    "openai": OPENAI_BASE_URL,
    "anthropic": ANTHROPIC_BASE_URL,
    "gemini": GEMINI_BASE_URL,
    "mistral": MISTRAL_BASE_URL,
    "bedrock": "",
}
# Provider keys that apply to some kinds only.
PROVIDER_KIND_KEYS = {
    "api_version": ("anthropic", "azure-openai"),
    "url_form": ("azure-openai",),
    "region": ("bedrock",),
    "aws_access_key_id": ("bedrock",),
    "aws_secret_access_key": ("bedrock",),
    "aws_session_token": ("bedrock",),
}
AZURE_URL_FORMS = ("deployment", "v1")
LOG_LEVELS = ("debug", "info", "warning", "error")
TOKENIZERS = ("cl100k_base", "o200k_base")
ON_UNAVAILABLE = ("fail_closed", "fail_open")
PERIODS: tuple[Period, ...] = ("day", "week", "month")
TOKEN_COUNTS: tuple[TokenCount, ...] = ("input", "output", "total")
# Asymmetric algorithms only: a shared HMAC secret would let every service
# that verifies tokens also mint them, and "none" signs nothing.
JWT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# A floor against typed passwords such as "admin". Sixteen random base64url
# characters carry 96 bits, but the length alone cannot prove randomness.
MIN_ADMIN_KEY_LENGTH = 16

# Tenant and team names. They appear in Redis keys, in Redis Cluster hash
# tags and in team scope ids ("tenant/team"), so braces, slashes, colons and
# spaces are excluded.
SCOPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SCOPE_NAME_RULE = (
    "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)

# Provider variables that default_config reads but cannot use yet.
_PLANNED_PROVIDER_VARIABLES: tuple[str, ...] = ()

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# Unlike _HOSTNAME, this allows "_", because Docker Compose service names such
# as redis_cache may contain it and resolve as host names.
_REDIS_HOST = re.compile(r"[A-Za-z0-9_.-]+")
# A Redis database number in the URL path. An empty path or "/" means 0.
_REDIS_DB_PATH = re.compile(r"/?|/[0-9]+")

# Error messages show values under these keys as <hidden>, except null and
# booleans.
_SECRET_NAMES = frozenset({"key", "api_key", "key_sha256", "password", "secret"})
_SECRET_SUFFIXES = ("_key", "_password", "_secret", "_token")
# URLs may carry a password, which error messages and repr() replace by ***.
_URL_NAMES = frozenset({"url", "base_url", "sink"})


class ConfigError(Exception):
    """An invalid configuration, located by file, line and key path.

    ``line`` is None when no line applies, as when the file cannot be read or
    the value came from an environment variable. ``path`` is "" when the error
    concerns the whole document.
    """

    def __init__(self, source: str, line: int | None, path: str, reason: str) -> None:
        super().__init__(source, line, path, reason)
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        location = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.path:
            return f"{location}: {self.path}: {self.reason}"
        return f"{location}: {self.reason}"


class DefaultConfig(NamedTuple):
    """The embedded default configuration and what the CLI reports about it."""

    config: Config
    # The generated gateway key in plain text. Only its sha256 is in config.
    key: str
    # Provider variables that are set but name kinds not implemented yet.
    skipped_variables: tuple[str, ...]


def hash_key(plaintext: str) -> str:
    """Return the lowercase sha256 hex digest under which a key is stored."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """Generate a new gateway key: the prefix and 256 random bits."""
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate a YAML configuration file.

    ``environ`` supplies the ``${VAR}`` values and defaults to ``os.environ``.
    Raises ``ConfigError`` when the file cannot be read or is invalid.
    """
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError(source, None, "", reason) from exc

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(source, line, "", "invalid UTF-8 text") from exc

    return parse_config(text, source, environ)


def parse_config(
    text: str, source: str, environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate YAML configuration text.

    ``source`` names the text in error messages and in ``Config.source``.
    ``environ`` supplies the ``${VAR}`` values and defaults to ``os.environ``.
    """
    from llmgw._config_parser import _compose, _describe_node, _Parser

    root = _compose(text, source)
    if root is None:
        raise ConfigError(source, 1, "", "the file contains no YAML document")
    if not isinstance(root, MappingNode):
        line = root.start_mark.line + 1
        reason = f"the top level must be a mapping, got {_describe_node(root)}"
        raise ConfigError(source, line, "", reason)

    parser = _Parser(source, os.environ if environ is None else environ)
    return parser.config(root)


def default_config(environ: Mapping[str, str] | None = None) -> DefaultConfig:
    """Build the configuration that ``llmgw serve`` uses without ``--config``.

    It listens on 127.0.0.1:4000 with one worker, keeps limits in process (no
    Redis) and writes the ledger to ``llmgw.db`` in the working folder.
    OPENAI_API_KEY or OPENAI_BASE_URL add a provider named "openai" and a
    model route "*" that sends every requested model name to it unchanged.
    ANTHROPIC_API_KEY adds a provider "anthropic" with the route "claude-*",
    and GEMINI_API_KEY a provider "gemini" with the route "gemini-*"; both
    routes come before "*".
    One gateway key named "default" is generated, with no limits. Nothing here
    contacts the network.
    """
    environ = os.environ if environ is None else environ
    plaintext = generate_key()
    providers, models = _keyed_providers_from_environment(environ)
    openai_providers, openai_models = _openai_from_environment(environ)
    providers += openai_providers
    models += openai_models
    skipped = tuple(name for name in _PLANNED_PROVIDER_VARIABLES if environ.get(name))
    config = Config(
        providers=providers,
        models=models,
        keys=(KeyConfig(name="default", key_sha256=hash_key(plaintext)),),
        source=DEFAULT_SOURCE,
    )
    return DefaultConfig(config=config, key=plaintext, skipped_variables=skipped)


# (variable, provider name and kind, base URL, model route) of the providers
# that the embedded default adds when their key variable is set.
_KEYED_PROVIDERS = (
    ("ANTHROPIC_API_KEY", "anthropic", ANTHROPIC_BASE_URL, "claude-*"),
    ("GEMINI_API_KEY", "gemini", GEMINI_BASE_URL, "gemini-*"),
)


def _keyed_providers_from_environment(
    environ: Mapping[str, str],
) -> tuple[tuple[ProviderConfig, ...], tuple[ModelConfig, ...]]:
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    for variable, name, base_url, route in _KEYED_PROVIDERS:
        api_key = environ.get(variable, "")
        if not api_key:
            continue
        providers.append(
            ProviderConfig(
                name=name, kind=name, base_url=base_url, api_key=Secret(api_key)
            )
        )
        models.append(ModelConfig(name=route, provider=name))
    return tuple(providers), tuple(models)


def _openai_from_environment(
    environ: Mapping[str, str],
) -> tuple[tuple[ProviderConfig, ...], tuple[ModelConfig, ...]]:
    # An empty variable counts as unset, so "OPENAI_BASE_URL=" in a shell
    # script does not produce a provider with an invalid URL.
    api_key = environ.get("OPENAI_API_KEY", "")
    base_url = environ.get("OPENAI_BASE_URL", "")
    if not api_key and not base_url:
        return (), ()

    kind = "openai"
    if base_url:
        kind = "openai-compatible"
        reason = _check_http_url(base_url, ("OPENAI_BASE_URL",))
        if reason is not None:
            raise ConfigError("environment", None, "OPENAI_BASE_URL", reason)

    provider = ProviderConfig(
        name="openai",
        kind=kind,
        base_url=base_url.rstrip("/") or OPENAI_BASE_URL,
        api_key=Secret(api_key),
    )
    return (provider,), (ModelConfig(name="*", provider="openai"),)


def unpriced_model_warnings(
    models: Sequence[ModelConfig],
    scope: str,
    allowed: tuple[str, ...] | None,
    limits: LimitSpec,
) -> list[str]:
    """List the models without a price that can spend a budget of ``scope``.

    ``scope`` describes the key, team or tenant in the messages, for example
    "tenant 'acme'". ``allowed`` is its model globs (None allows all). A
    model route counts when its name and a glob match either way round, so a
    route "*" counts for any scope.
    """
    warnings = []
    if limits.budgets_usd:
        for model in _unpriced_routes(models, allowed):
            warnings.append(_unpriced_message(model.name, scope))
    for glob, model_limits in limits.models:
        if not model_limits.budgets_usd:
            continue
        for model in _unpriced_routes(models, (glob,)):
            if allowed is None or _globs_overlap(model.name, allowed):
                where = f"{scope}, limits.models[{glob!r}]"
                warnings.append(_unpriced_message(model.name, where))
    return warnings


def price_warnings(config: Config) -> list[str]:
    """List every model without a price under a scope with a money budget."""
    warnings = []
    for tenant in config.tenants:
        scope = f"tenant {tenant.name!r}"
        warnings += unpriced_model_warnings(
            config.models, scope, tenant.models, tenant.limits
        )
        for team in tenant.teams:
            scope = f"team {tenant.name + '/' + team.name!r}"
            warnings += unpriced_model_warnings(
                config.models, scope, team.models, team.limits
            )
    for key in config.keys:
        scope = f"key {key.name!r}"
        warnings += unpriced_model_warnings(
            config.models, scope, key.models, key.limits
        )
    return warnings


def _unpriced_routes(
    models: Sequence[ModelConfig], allowed: tuple[str, ...] | None
) -> Iterator[ModelConfig]:
    for model in models:
        if model.price is None and (
            allowed is None or _globs_overlap(model.name, allowed)
        ):
            yield model


def _globs_overlap(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, glob) or fnmatchcase(glob, name) for glob in globs)


def _unpriced_message(model: str, scope: str) -> str:
    return (
        f"model {model!r} has no price, so requests for it count no cost against "
        f"the budget of {scope}. Set models[].price to count them"
    )


# Checks and descriptions of single values, used by default_config and by the
# parser in llmgw._config_parser.


def _check_http_url(url: str, variables: tuple[str, ...] = ()) -> str | None:
    """Return why ``url`` is not an http or https URL with a host, or None.

    ``variables`` names the environment variables that ``url`` came from.
    """
    expected = "must be an http or https URL such as http://127.0.0.1:8080/v1"
    got = _describe(url, "url", variables)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return f"{expected}, got {got}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{expected}, got {got}"
    return None


def _check_redis_url(url: str, variables: tuple[str, ...] = ()) -> str | None:
    """Return why redis-py would not connect to ``url`` as written, or None.

    redis-py 8.2 ignores a database path that is not a number and uses
    database 0, and connects to localhost when the host is missing, so both
    are rejected here. ``variables`` names the environment variables that
    ``url`` came from.
    """
    got = _describe(url, "url", variables)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return f"must start with redis://, rediss:// or unix://, got {got}"

    expected = "must be a URL such as redis://127.0.0.1:6379/0"
    if url.startswith("unix://"):
        expected = "must be a URL such as unix:///run/redis/redis.sock"
    problem = _redis_url_problem(url)
    if problem is not None:
        return f"{expected}, got {got} ({problem})"
    return None


def check_cluster_url(url: str) -> str | None:
    """Return why ``url`` cannot name a Redis Cluster node, or None.

    Call it on a URL that ``_check_redis_url`` accepted. A cluster has only
    database 0 and is reached over TCP.
    """
    if url.startswith("unix://"):
        return "Redis Cluster needs a redis:// or rediss:// URL, not a unix socket"
    parts = urlsplit(url)
    databases = [parts.path.strip("/"), *parse_qs(parts.query).get("db", [])]
    if any(database not in ("", "0") for database in databases):
        return "Redis Cluster has only database 0; remove the database from the URL"
    return None


def split_node_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port``; raise ValueError naming what is wrong."""
    host, separator, port_text = address.rpartition(":")
    if not separator or not port_text.isascii() or not port_text.isdigit():
        raise ValueError("expected host:port, for example redis-1.internal:6379")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]") and _is_ipv6(host[1:-1]):
        return host[1:-1], port
    if not _REDIS_HOST.fullmatch(host):
        raise ValueError("the host is not a host name or address (IPv6 in brackets)")
    return host, port


def _redis_url_problem(url: str) -> str | None:
    """Return what is wrong in a URL with a Redis scheme, without its text."""
    if _may_hide_password(url):
        return "percent-encode any '/', '?' or '#' in the user name and password"
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[" or an invalid address in brackets
        if "[" in url:
            return "the host in brackets is not an IPv6 address"
        return "the host is not a host name or address"

    # NOTE: redis-py also reads query options such as socket_timeout. Only db
    # is checked here. redis-py rejects a bad value of a known option when the
    # client is built, and an unknown option when it first connects.
    query = parse_qs(parts.query, keep_blank_values=True)
    query_db = query.get("db")
    if query_db is not None and not all(map(_is_database_number, query_db)):
        return "?db= must be a non-negative integer"

    if parts.scheme == "unix":
        if not parts.path.strip("/"):
            return "no socket path after unix://"
        return None

    host_port = parts.netloc.rpartition("@")[2]
    if host_port.count(":") > 1 and not host_port.startswith("["):
        return "an IPv6 host needs brackets"
    port_problem = "the port must be a number from 1 to 65535"
    try:
        if parts.port == 0:
            return port_problem
    except ValueError:  # not a number, or above 65535
        return port_problem
    host = parts.hostname
    if not host:
        return "no host"
    if not _REDIS_HOST.fullmatch(host) and not _is_ipv6(host):
        return "the host is not a host name or address"

    if not _REDIS_DB_PATH.fullmatch(parts.path):
        return "the database in the path must be a non-negative integer such as /0"
    if query_db is not None and parts.path.strip("/"):
        return "the database is set both in the path and in ?db="
    return None


def _is_database_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _may_hide_password(url: str) -> bool:
    """Return whether ``redact_url`` may miss a password in ``url``.

    A "/", "?" or "#" in an unencoded password ends the host part early, so
    the "@" after the password is not where ``redact_url`` looks for it.
    """
    rest = url.partition("://")[2]
    host_part = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return "@" in rest and "@" not in host_part


def _split_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" or "[ipv6]:port", raising ValueError with the reason."""
    if listen.startswith("["):
        host, bracket, port = listen[1:].partition("]:")
        if not bracket:
            raise ValueError("no port after the bracketed IPv6 address")
        if not _is_ipv6(host):
            raise ValueError("the host in brackets is not an IPv6 address")
    else:
        host, colon, port = listen.rpartition(":")
        if not colon or not host:
            raise ValueError("no host or no port")
        if ":" in host:
            raise ValueError("an IPv6 host needs brackets")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError("the host is not a host name or address")

    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _check_sink(sink: str, variables: tuple[str, ...] = ()) -> str | None:
    """Return why ``sink`` is not a ledger sink URL, or None.

    ``variables`` names the environment variables that ``sink`` came from.
    """
    if sink.startswith("sqlite:///"):
        if not sink.removeprefix("sqlite:///"):
            return "must name a database file after sqlite:///"
        return None
    if sink.startswith(("postgresql://", "postgres://")):
        if not sink.partition("://")[2]:
            return "must name a database after postgresql://"
        return None
    return (
        "must be sqlite:///relative/path, sqlite:////absolute/path or "
        f"postgresql://user@host/db, got {_describe(sink, 'sink', variables)}"
    )


def _is_secret(name: str) -> bool:
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def _describe(value: object, name: str, variables: tuple[str, ...] = ()) -> str:
    """Describe a value for an error message, hiding secrets.

    A value that came from the environment variables in ``variables`` is
    described by its type and those names, because any variable may hold a
    secret.
    """
    if variables:
        return f"{_type_name(value)} from {_references(variables)}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_secret(name):
        return "<hidden>"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if name in _URL_NAMES and _may_hide_password(value):
            return "<hidden>"
        text = redact_url(value) if name in _URL_NAMES else value
        if len(text) > 60:
            text = text[:57] + "..."
        return f"string {text!r}"
    return type(value).__name__


def _quote(value: str, variables: tuple[str, ...]) -> str:
    """Quote a string for an error message unless it came from ``variables``."""
    if variables:
        return f"from {_references(variables)}"
    return repr(value)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a value"


def _references(variables: tuple[str, ...]) -> str:
    return " and ".join("${" + variable + "}" for variable in variables)
