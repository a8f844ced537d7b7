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

``default_config`` builds the configuration that ``llmgw serve`` uses when no
``--config`` is given.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


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


@dataclass(frozen=True)
class RedisConfig:
    url: str
    key_prefix: str = "llmgw:"

    def __repr__(self) -> str:
        url = redact_url(self.url)
        return f"RedisConfig(url={url!r}, key_prefix={self.key_prefix!r})"


@dataclass(frozen=True)
class LedgerConfig:
    # sqlite:///relative/path, sqlite:////absolute/path or postgresql://...
    sink: str = "sqlite:///llmgw.db"

    def __repr__(self) -> str:
        return f"LedgerConfig(sink={redact_url(self.sink)!r})"


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
    base_url: str
    api_key: Secret = Secret("")
    timeouts: Timeouts = Timeouts()


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


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class KeyConfig:
    name: str
    key_sha256: str  # lowercase hex; a plain `key` in YAML is hashed at load
    tenant: str | None = None
    models: tuple[str, ...] | None = None  # glob patterns; None allows all
    limits: KeyLimits = KeyLimits()
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class PolicyConfig:
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


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


DEFAULT_SOURCE = "<embedded default>"
OPENAI_BASE_URL = "https://api.openai.com/v1"
GATEWAY_KEY_PREFIX = "sk-llmgw-"

SUPPORTED_PROVIDER_KINDS = ("openai", "openai-compatible")
# Kinds planned in the schema whose provider adapters do not exist yet.
PLANNED_PROVIDER_KINDS = ("anthropic", "gemini", "azure-openai", "bedrock")
LOG_LEVELS = ("debug", "info", "warning", "error")
TOKENIZERS = ("cl100k_base", "o200k_base")

# Provider variables that default_config reads but cannot use yet.
_PLANNED_PROVIDER_VARIABLES = ("ANTHROPIC_API_KEY", "GEMINI_API_KEY")

_TOP_KEYS = (
    "server",
    "redis",
    "ledger",
    "logging",
    "providers",
    "models",
    "keys",
    "policies",
)
_SERVER_KEYS = (
    "listen",
    "workers",
    "max_body_bytes",
    "read_timeout",
    "shutdown_timeout",
)
_REDIS_KEYS = ("url", "key_prefix")
_LEDGER_KEYS = ("sink",)
_LOGGING_KEYS = ("level", "log_prompts")
_PROVIDER_KEYS = ("name", "kind", "base_url", "api_key", "timeouts")
_TIMEOUT_KEYS = ("connect", "first_byte", "idle", "total")
_MODEL_KEYS = (
    "name",
    "provider",
    "upstream_model",
    "max_input_tokens",
    "max_output_tokens",
    "tokenizer",
)
_KEY_KEYS = (
    "name",
    "key",
    "key_sha256",
    "tenant",
    "models",
    "limits",
    "max_input_tokens",
    "max_output_tokens",
)
_LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute")
_POLICY_KEYS = ("max_input_tokens", "max_output_tokens")

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# "$$", a complete "${...}", or an unclosed "${".
_DOLLAR = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|\{)")
_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.S)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# Error messages show values under these keys as <hidden>, except null and
# booleans.
_SECRET_NAMES = frozenset({"key", "api_key", "key_sha256", "password", "secret"})
_SECRET_SUFFIXES = ("_key", "_password", "_secret", "_token")
# URLs may carry a password, which error messages and repr() replace by ***.
_URL_NAMES = frozenset({"url", "base_url", "sink"})

_T = TypeVar("_T")


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
    One gateway key named "default" is generated, with no limits. Nothing here
    contacts the network.
    """
    environ = os.environ if environ is None else environ
    plaintext = generate_key()
    providers, models = _openai_from_environment(environ)
    skipped = tuple(name for name in _PLANNED_PROVIDER_VARIABLES if environ.get(name))
    config = Config(
        providers=providers,
        models=models,
        keys=(KeyConfig(name="default", key_sha256=hash_key(plaintext)),),
        source=DEFAULT_SOURCE,
    )
    return DefaultConfig(config=config, key=plaintext, skipped_variables=skipped)


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
        reason = _check_http_url(base_url)
        if reason is not None:
            raise ConfigError("environment", None, "OPENAI_BASE_URL", reason)

    provider = ProviderConfig(
        name="openai",
        kind=kind,
        base_url=base_url.rstrip("/") or OPENAI_BASE_URL,
        api_key=Secret(api_key),
    )
    return (provider,), (ModelConfig(name="*", provider="openai"),)


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


def _check_http_url(url: str) -> str | None:
    """Return why ``url`` is not an http or https URL with a host, or None."""
    expected = "must be an http or https URL such as http://127.0.0.1:8080/v1"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return f"{expected}, got {_describe(url, 'url')}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{expected}, got {_describe(url, 'url')}"
    return None


def _split_listen(listen: str) -> tuple[str, int]:
    """Split "host:port" or "[ipv6]:port", raising ValueError with the reason."""
    if listen.startswith("["):
        host, bracket, port = listen[1:].partition("]:")
        if not bracket:
            raise ValueError("no port after the bracketed IPv6 address")
        if not _is_ipv6(host):
            raise ValueError(f"{host!r} is not an IPv6 address")
    else:
        host, colon, port = listen.rpartition(":")
        if not colon or not host:
            raise ValueError("no host or no port")
        if ":" in host:
            raise ValueError("an IPv6 host needs brackets")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or address")

    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _check_sink(sink: str) -> str | None:
    """Return why ``sink`` is not a ledger sink URL, or None."""
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
        f"postgresql://user@host/db, got {_describe(sink, 'sink')}"
    )


def _is_secret(name: str) -> bool:
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def _describe(value: object, name: str) -> str:
    """Describe a value for an error message, hiding secrets."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_secret(name):
        return "<hidden>"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = redact_url(value) if name in _URL_NAMES else value
        if len(text) > 60:
            text = text[:57] + "..."
        return f"string {text!r}"
    return type(value).__name__


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
        return Config(
            server=self.server(self.subsection(top, "server", _SERVER_KEYS)),
            redis=self.redis(top),
            ledger=self.ledger(self.subsection(top, "ledger", _LEDGER_KEYS)),
            logging=self.logging(self.subsection(top, "logging", _LOGGING_KEYS)),
            providers=providers,
            models=self.models(top, {provider.name for provider in providers}),
            keys=self.keys(top),
            policies=self.policies(self.subsection(top, "policies", _POLICY_KEYS)),
            source=self.source,
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
            got = _describe(item.value, "listen")
            reason = f"must be {expected}, got {got} ({exc})"
            raise self.error(item.node, item.path, reason) from None

    def redis(self, top: _Section) -> RedisConfig | None:
        node = top.values.get("redis")
        if node is None or self.is_null(node):
            return None

        section = self.section(node, "redis", _REDIS_KEYS, required=("url",))
        url = self.string(section, "url", required=True)
        assert url is not None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            got = _describe(url, "url")
            reason = f"must start with redis://, rediss:// or unix://, got {got}"
            raise self.error(section.values["url"], section.child("url"), reason)

        key_prefix = self.string(section, "key_prefix", allow_empty=True)
        return RedisConfig(url=url, key_prefix=_or_default(key_prefix, "llmgw:"))

    def ledger(self, section: _Section) -> LedgerConfig:
        sink = self.string(section, "sink")
        if sink is None:
            return LedgerConfig()
        reason = _check_sink(sink)
        if reason is not None:
            raise self.error(section.values["sink"], section.child("sink"), reason)
        return LedgerConfig(sink=sink)

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
        )

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
        if base_url is None and kind != "openai":
            reason = f"missing required key (kind {kind} has no default base_url)"
            raise self.error(node, section.child("base_url"), reason)

        api_key = self.string(section, "api_key", allow_empty=True)
        timeouts = self.timeouts(self.subsection(section, "timeouts", _TIMEOUT_KEYS))
        return ProviderConfig(
            name=name,
            kind=kind,
            base_url=_or_default(base_url, OPENAI_BASE_URL),
            api_key=Secret(_or_default(api_key, "")),
            timeouts=timeouts,
        )

    def provider_kind(self, section: _Section) -> str:
        kind = self.string(section, "kind", required=True)
        assert kind is not None
        if kind in SUPPORTED_PROVIDER_KINDS:
            return kind

        supported = ", ".join(SUPPORTED_PROVIDER_KINDS)
        if kind in PLANNED_PROVIDER_KINDS:
            reason = f"provider kind {kind!r} is not supported yet (supported: "
            reason += f"{supported})"
        else:
            reason = f"must be one of {supported}, got {_describe(kind, 'kind')}"
        raise self.error(section.values["kind"], section.child("kind"), reason)

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

        provider = self.string(section, "provider", required=True)
        assert provider is not None
        if provider not in providers:
            reason = f"provider {provider!r} is not defined under providers"
            if providers:
                reason += f" (defined: {', '.join(sorted(providers))})"
            node = section.values["provider"]
            raise self.error(node, section.child("provider"), reason)

        return ModelConfig(
            name=name,
            provider=provider,
            upstream_model=self.string(section, "upstream_model"),
            max_input_tokens=self.positive_int(section, "max_input_tokens"),
            max_output_tokens=self.positive_int(section, "max_output_tokens"),
            tokenizer=self.choice(section, "tokenizer", TOKENIZERS),
        )

    def keys(self, top: _Section) -> tuple[KeyConfig, ...]:
        keys = []
        first_paths: dict[str, str] = {}
        first_hash_paths: dict[str, str] = {}
        for node, path in self.items(top, "keys"):
            key = self.key(node, path)
            self.check_unique(first_paths, key.name, node, path, "key")
            if key.key_sha256 in first_hash_paths:
                first = first_hash_paths[key.key_sha256]
                reason = f"has the same key as {first}. Give each entry its own key"
                raise self.error(node, path, reason)
            first_hash_paths[key.key_sha256] = path
            keys.append(key)
        return tuple(keys)

    def key(self, node: Node, path: str) -> KeyConfig:
        section = self.section(node, path, _KEY_KEYS, required=("name",))
        limits = self.subsection(section, "limits", _LIMIT_KEYS)
        return KeyConfig(
            name=self.name(section),
            key_sha256=self.key_sha256(section),
            tenant=self.string(section, "tenant"),
            models=self.globs(section, "models"),
            limits=KeyLimits(
                requests_per_minute=self.positive_int(limits, "requests_per_minute"),
                tokens_per_minute=self.positive_int(limits, "tokens_per_minute"),
            ),
            max_input_tokens=self.positive_int(section, "max_input_tokens"),
            max_output_tokens=self.positive_int(section, "max_output_tokens"),
        )

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
            reason = f"duplicate {what} name {name!r}, first used at "
            reason += first_paths[name]
            name_node = _child_node(node, "name") or node
            raise self.error(name_node, _join(path, "name"), reason)
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
        item = self.lookup(section, name)
        if item is None or (item.value is None and not required):
            return None
        if not isinstance(item.value, str):
            raise self.invalid(item, "a string")
        if not item.value and not allow_empty:
            raise self.error(item.node, item.path, "must not be empty")
        return item.value

    def choice(
        self,
        section: _Section,
        name: str,
        options: tuple[str, ...],
        *,
        ignore_case: bool = False,
    ) -> str | None:
        value = self.string(section, name)
        if value is None:
            return None
        if ignore_case:
            value = value.lower()
        if value not in options:
            got = _describe(value, name)
            reason = f"must be one of {', '.join(options)}, got {got}"
            raise self.error(section.values[name], section.child(name), reason)
        return value

    def http_url(self, section: _Section, name: str) -> str | None:
        url = self.string(section, name)
        if url is None:
            return None
        reason = _check_http_url(url)
        if reason is not None:
            raise self.error(section.values[name], section.child(name), reason)
        return url.rstrip("/")

    def positive_int(self, section: _Section, name: str) -> int | None:
        found = self.converted(section, name, _to_int)
        if found is None:
            return None
        item, value = found
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.invalid(item, "a positive integer", value)
        return value

    def positive_number(self, section: _Section, name: str) -> float | None:
        """Read a positive, finite number of seconds, integer or not."""
        found = self.converted(section, name, _to_float)
        if found is None:
            return None
        item, value = found
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.invalid(item, "a positive number", value)
        if not math.isfinite(value) or value <= 0:
            raise self.invalid(item, "a positive number", value)
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

        def replace(match: re.Match[str]) -> str:
            nonlocal found_reference
            if match.group() == "$$":
                return "$"
            found_reference = True
            return self.resolve(item, match.group("body"))

        text = _DOLLAR.sub(replace, item.value)
        return _Scalar(item.node, item.path, item.name, text, found_reference)

    def resolve(self, item: _Scalar, body: str | None) -> str:
        """Return the value of the reference ``${body}``."""
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
        if default is not None:
            return value or default
        if value is None:
            reason = f"environment variable {variable} is not set. Set it, or "
            reason += f"write ${{{variable}:-default}} to give a default"
            raise self.error(item.node, item.path, reason)
        return value

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
            got = _describe(shown, item.name)
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
