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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llmgw.config import (
    LOG_LEVELS,
    OPENAI_BASE_URL,
    PLANNED_PROVIDER_KINDS,
    SUPPORTED_PROVIDER_KINDS,
    TOKENIZERS,
    Config,
    ConfigError,
    KeyConfig,
    KeyLimits,
    LedgerConfig,
    LoggingConfig,
    ModelConfig,
    PolicyConfig,
    ProviderConfig,
    RedisConfig,
    Secret,
    ServerConfig,
    Timeouts,
    _check_http_url,
    _check_redis_url,
    _check_sink,
    _describe,
    _is_secret,
    _quote,
    _split_listen,
    hash_key,
)

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
        return RedisConfig(url=url, key_prefix=_or_default(key_prefix, "llmgw:"))

    def ledger(self, section: _Section) -> LedgerConfig:
        item = self.string_item(section, "sink")
        if item is None:
            return LedgerConfig()
        assert isinstance(item.value, str)
        reason = _check_sink(item.value, item.variables)
        if reason is not None:
            raise self.error(item.node, item.path, reason)
        return LedgerConfig(sink=item.value)

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
