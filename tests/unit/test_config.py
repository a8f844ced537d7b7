"""Tests for the configuration loader: schema, interpolation and errors."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from redis.connection import ConnectionPool

from llmgw.config import (
    OPENAI_BASE_URL,
    AdminConfig,
    Config,
    ConfigError,
    JWTClaims,
    JWTConfig,
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
    TeamConfig,
    TenantConfig,
    Timeouts,
    default_config,
    hash_key,
    load_config,
    parse_config,
    price_warnings,
    redact_url,
)
from llmgw.limits.spec import LimitSpec, Price
from llmgw.pipeline.policy import Router

CI_KEY = "sk-ci-plaintext-0123456789"
# The provider kinds in the order an error message lists them.
PROVIDER_KINDS = (
    "openai, openai-compatible, anthropic, gemini, azure-openai, bedrock, "
    "mistral, vllm, ollama"
)
LOCAL_API_KEY = "sk-local-upstream-secret"
REDIS_PASSWORD = "redis-pass-4242"

FULL_CONFIG = """\
server:
  listen: 127.0.0.1:4000
  workers: 1
  max_body_bytes: 4194304
  read_timeout: 30
  shutdown_timeout: 12.5
redis:
  url: redis://127.0.0.1:6379/0
  key_prefix: "llmgw:"
ledger:
  sink: sqlite:///llmgw.db
logging:
  level: info
  log_prompts: false
providers:
  - name: local
    kind: openai-compatible
    base_url: http://127.0.0.1:8080/v1
    api_key: ${LOCAL_API_KEY:-}
    timeouts: {connect: 10, first_byte: 120, idle: 120, total: 600}
models:
  - name: smollm2
    provider: local
    upstream_model: smollm2
    max_input_tokens: 2000
    max_output_tokens: 256
    tokenizer: cl100k_base
keys:
  - name: ci-pipeline
    key: ${CI_PIPELINE_KEY}
    tenant: acme
    models: ["smollm2", "gpt-*"]
    limits: {requests_per_minute: 60, tokens_per_minute: 100000}
    max_input_tokens: 1000
    max_output_tokens: 100
policies:
  max_input_tokens: 10000
  max_output_tokens: 20000
"""

FULL_ENVIRON = {"CI_PIPELINE_KEY": CI_KEY, "LOCAL_API_KEY": LOCAL_API_KEY}

FULL_EXPECTED = Config(
    server=ServerConfig(
        host="127.0.0.1",
        port=4000,
        workers=1,
        max_body_bytes=4194304,
        read_timeout=30.0,
        shutdown_timeout=12.5,
    ),
    redis=RedisConfig(url="redis://127.0.0.1:6379/0", key_prefix="llmgw:"),
    ledger=LedgerConfig(sink="sqlite:///llmgw.db"),
    logging=LoggingConfig(level="info", log_prompts=False),
    providers=(
        ProviderConfig(
            name="local",
            kind="openai-compatible",
            base_url="http://127.0.0.1:8080/v1",
            api_key=Secret(LOCAL_API_KEY),
            timeouts=Timeouts(connect=10.0, first_byte=120.0, idle=120.0, total=600.0),
        ),
    ),
    models=(
        ModelConfig(
            name="smollm2",
            provider="local",
            upstream_model="smollm2",
            max_input_tokens=2000,
            max_output_tokens=256,
            tokenizer="cl100k_base",
        ),
    ),
    keys=(
        KeyConfig(
            name="ci-pipeline",
            key_sha256=hashlib.sha256(CI_KEY.encode()).hexdigest(),
            tenant="acme",
            models=("smollm2", "gpt-*"),
            limits=KeyLimits(requests_per_minute=60, tokens_per_minute=100000),
            max_input_tokens=1000,
            max_output_tokens=100,
        ),
    ),
    policies=PolicyConfig(max_input_tokens=10000, max_output_tokens=20000),
    source="config.yaml",
)

# A provider that error cases can refer to.
LOCAL_PROVIDER = """\
providers:
  - name: local
    kind: openai-compatible
    base_url: http://127.0.0.1:8080/v1
"""


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "config.yaml", environ or {})


def parse_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    return caught.value


def redis_url_options(url: str) -> dict[str, object]:
    """Return the connection options that redis-py reads from ``url``."""
    return dict(ConnectionPool.from_url(url).connection_kwargs)


# The full contract


def test_full_contract_parses_to_dataclasses() -> None:
    config = parse(FULL_CONFIG, FULL_ENVIRON)

    assert config.server == FULL_EXPECTED.server
    assert config.redis == FULL_EXPECTED.redis
    assert config.ledger == FULL_EXPECTED.ledger
    assert config.logging == FULL_EXPECTED.logging
    assert config.providers == FULL_EXPECTED.providers
    assert config.models == FULL_EXPECTED.models
    assert config.keys == FULL_EXPECTED.keys
    assert config.policies == FULL_EXPECTED.policies
    assert config == FULL_EXPECTED


def test_minimal_config_uses_defaults() -> None:
    config = parse("server: {}\n")

    assert config == Config(source="config.yaml")
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 4000
    assert config.redis is None
    assert config.ledger.sink == "sqlite:///llmgw.db"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("redis:\n", id="empty"),
        pytest.param("redis: null\n", id="null"),
        pytest.param("server: {}\n", id="absent"),
    ],
)
def test_redis_absent_means_embedded_backend(text: str) -> None:
    assert parse(text).redis is None


def test_null_sections_and_lists_are_empty() -> None:
    config = parse("server:\nlogging:\nproviders:\nmodels:\nkeys:\npolicies:\n")

    assert config == Config(source="config.yaml")


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        pytest.param("127.0.0.1:4000", "127.0.0.1", 4000, id="ipv4"),
        pytest.param("localhost:8080", "localhost", 8080, id="hostname"),
        pytest.param("0.0.0.0:1", "0.0.0.0", 1, id="all-interfaces"),
        pytest.param("'[::1]:4001'", "::1", 4001, id="ipv6"),
        pytest.param("'[::]:65535'", "::", 65535, id="ipv6-any"),
    ],
)
def test_listen_splits_into_host_and_port(listen: str, host: str, port: int) -> None:
    server = parse(f"server:\n  listen: {listen}\n").server

    assert server.host == host
    assert server.port == port


def test_openai_provider_defaults_base_url() -> None:
    config = parse(
        """\
        providers:
          - name: openai
            kind: openai
            api_key: sk-upstream
        """
    )

    assert config.providers[0].base_url == OPENAI_BASE_URL
    assert config.providers[0].api_key == Secret("sk-upstream")


def test_base_url_trailing_slash_is_removed() -> None:
    config = parse(LOCAL_PROVIDER.replace("/v1", "/v1/"))

    assert config.providers[0].base_url == "http://127.0.0.1:8080/v1"


def test_glob_model_leaves_upstream_model_unset() -> None:
    config = parse(LOCAL_PROVIDER + "models:\n  - {name: '*', provider: local}\n")

    assert config.models[0].name == "*"
    assert config.models[0].upstream_model is None


def test_key_sha256_is_stored_lowercase() -> None:
    digest = hash_key("some key").upper()
    config = parse(f"keys:\n  - {{name: a, key_sha256: {digest}}}\n")

    assert config.keys[0].key_sha256 == digest.lower()


def test_key_models_absent_allows_all() -> None:
    config = parse("keys:\n  - {name: a, key: k}\n")

    assert config.keys[0].models is None
    assert config.keys[0].limits == KeyLimits()


def test_logging_level_is_case_insensitive() -> None:
    assert parse("logging: {level: DEBUG}\n").logging.level == "debug"


def test_postgresql_sink_is_accepted() -> None:
    sink = "postgresql://llmgw@127.0.0.1/llmgw"

    assert parse(f"ledger: {{sink: '{sink}'}}\n").ledger.sink == sink


# Environment interpolation


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        pytest.param("${TENANT}", {"TENANT": "acme"}, "acme", id="set"),
        pytest.param("${TENANT}-eu", {"TENANT": "acme"}, "acme-eu", id="inside-text"),
        pytest.param("${TENANT:-fallback}", {}, "fallback", id="default-when-unset"),
        pytest.param(
            "${TENANT:-fallback}", {"TENANT": ""}, "fallback", id="default-when-empty"
        ),
        pytest.param(
            "${TENANT:-fallback}", {"TENANT": "acme"}, "acme", id="set-beats-default"
        ),
        pytest.param("${A}${B}", {"A": "x", "B": "y"}, "xy", id="two-references"),
        pytest.param("pa$$word", {}, "pa$word", id="double-dollar"),
        pytest.param("$${TENANT}", {"TENANT": "acme"}, "${TENANT}", id="escaped-ref"),
        pytest.param("a$b", {}, "a$b", id="lone-dollar-kept"),
        pytest.param("${T:-a:b c}", {}, "a:b c", id="default-with-colon"),
    ],
)
def test_interpolation_in_strings(
    value: str, environ: dict[str, str], expected: str
) -> None:
    text = f"redis:\n  url: redis://127.0.0.1:6379/0\n  key_prefix: '{value}'\n"
    config = parse(text, environ)

    assert config.redis is not None
    assert config.redis.key_prefix == expected


def test_reference_default_taken_literally() -> None:
    config = parse("redis: {url: 'redis://127.0.0.1/0', key_prefix: '${T:-$HOME}'}\n")

    assert config.redis is not None
    assert config.redis.key_prefix == "$HOME"


def test_interpolated_scalars_convert_to_schema_types() -> None:
    config = parse(
        """\
        server:
          listen: ${LISTEN:-127.0.0.1:4100}
          workers: ${WORKERS:-3}
          read_timeout: ${READ_TIMEOUT}
        logging:
          log_prompts: ${LOG_PROMPTS:-true}
        """,
        {"READ_TIMEOUT": "2.5"},
    )

    assert config.server.port == 4100
    assert config.server.workers == 3
    assert config.server.read_timeout == 2.5
    assert config.logging.log_prompts is True


def test_empty_interpolated_number_uses_default() -> None:
    config = parse("server:\n  workers: ${WORKERS:-}\n")

    assert config.server.workers == ServerConfig().workers


def test_empty_api_key_gives_empty_secret() -> None:
    config = parse(FULL_CONFIG, {"CI_PIPELINE_KEY": CI_KEY})

    assert config.providers[0].api_key == Secret("")


def test_quoted_number_is_rejected() -> None:
    error = parse_error("server:\n  workers: '3'\n")

    assert error.path == "server.workers"
    assert "got string '3'" in error.reason


# Errors: each names the file, the line and the key path


@pytest.mark.parametrize(
    ("text", "line", "path", "reason"),
    [
        pytest.param(
            "servre:\n  listen: 127.0.0.1:4000\n",
            1,
            "servre",
            "unknown key, did you mean 'server'?",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "server:\n  workers: 1\n  colour: blue\n",
            3,
            "server.colour",
            "unknown key, expected one of: listen, workers",
            id="unknown-nested-key",
        ),
        pytest.param(
            LOCAL_PROVIDER + "    timeouts:\n      conect: 5\n",
            6,
            "providers[0].timeouts.conect",
            "unknown key, did you mean 'connect'?",
            id="unknown-key-in-list-item",
        ),
        pytest.param(
            "server:\n  workers: many\n",
            2,
            "server.workers",
            "must be a positive integer, got string 'many'",
            id="wrong-type",
        ),
        pytest.param(
            "server:\n  workers: 0\n",
            2,
            "server.workers",
            "must be a positive integer, got 0",
            id="workers-zero",
        ),
        pytest.param(
            "server:\n  workers: true\n",
            2,
            "server.workers",
            "must be a positive integer, got true",
            id="bool-for-integer",
        ),
        pytest.param(
            "server:\n  read_timeout: .nan\n",
            2,
            "server.read_timeout",
            "must be a positive number, got nan",
            id="timeout-not-a-number",
        ),
        pytest.param(
            "server:\n  max_body_bytes: [1]\n",
            2,
            "server.max_body_bytes",
            "must be a positive integer, got a list",
            id="list-for-integer",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: k}\n  - name: b\n    key: k2\n"
            "    limits:\n      requests_per_minute: -5\n",
            6,
            "keys[1].limits.requests_per_minute",
            "must be a positive integer, got -5",
            id="negative-limit",
        ),
        pytest.param(
            "server: [1, 2]\n",
            1,
            "server",
            "must be a mapping, got a list",
            id="section-not-mapping",
        ),
        pytest.param(
            "keys: {name: a}\n",
            1,
            "keys",
            "must be a list, got a mapping",
            id="list-not-list",
        ),
        pytest.param(
            "providers:\n  - name: local\n    base_url: http://127.0.0.1:8080\n",
            2,
            "providers[0].kind",
            "missing required key",
            id="missing-required-key",
        ),
        pytest.param(
            "providers:\n  - name: local\n    kind: openai-compatible\n",
            2,
            "providers[0].base_url",
            "missing required key",
            id="missing-base-url",
        ),
        pytest.param(
            "providers:\n  - name: ''\n    kind: openai\n",
            2,
            "providers[0].name",
            "must not be empty",
            id="empty-name",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    key_sha256: " + "0" * 64 + "\n",
            2,
            "keys[0]",
            "must set exactly one of key and key_sha256, found both",
            id="both-key-and-key-sha256",
        ),
        pytest.param(
            "keys:\n  - name: a\n    tenant: acme\n",
            2,
            "keys[0]",
            "must set exactly one of key and key_sha256, found neither",
            id="neither-key-nor-key-sha256",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key_sha256: abc123\n",
            3,
            "keys[0].key_sha256",
            "must be 64 hexadecimal characters",
            id="bad-sha256",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key_sha256: " + "g" * 64 + "\n",
            3,
            "keys[0].key_sha256",
            "must be 64 hexadecimal characters",
            id="sha256-not-hex",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: ''\n",
            3,
            "keys[0].key",
            "must not be empty",
            id="empty-key",
        ),
        pytest.param(
            LOCAL_PROVIDER
            + "  - name: local\n    kind: openai\n    base_url: https://x.test\n",
            5,
            "providers[1].name",
            "duplicate provider name 'local', first used at providers[0]",
            id="duplicate-provider-name",
        ),
        pytest.param(
            LOCAL_PROVIDER
            + "models:\n  - {name: m, provider: local}\n"
            + "  - {name: m, provider: local}\n",
            7,
            "models[1].name",
            "duplicate model name 'm', first used at models[0]",
            id="duplicate-model-name",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: k1}\n  - {name: a, key: k2}\n",
            3,
            "keys[1].name",
            "duplicate key name 'a', first used at keys[0]",
            id="duplicate-key-name",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: same}\n"
            f"  - {{name: b, key_sha256: {hash_key('same')}}}\n",
            3,
            "keys[1]",
            "has the same key as keys[0]",
            id="duplicate-key-hash",
        ),
        pytest.param(
            LOCAL_PROVIDER + "models:\n  - name: m\n    provider: remote\n",
            7,
            "models[0].provider",
            "provider 'remote' is not defined under providers (defined: local)",
            id="unknown-provider-in-model",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: mystery\n",
            3,
            "providers[0].kind",
            f"must be one of {PROVIDER_KINDS}, got string 'mystery'",
            id="unknown-kind",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: openai\n    base_url: ftp://x.test\n",
            4,
            "providers[0].base_url",
            "must be an http or https URL",
            id="base-url-not-http",
        ),
        pytest.param(
            LOCAL_PROVIDER + "models:\n  - {name: m, provider: local, tokenizer: x}\n",
            6,
            "models[0].tokenizer",
            "must be one of cl100k_base, o200k_base, got string 'x'",
            id="unknown-tokenizer",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    models: [smollm2, 5]\n",
            4,
            "keys[0].models[1]",
            "must be a non-empty string, got 5",
            id="key-model-glob-not-string",
        ),
        pytest.param(
            "redis:\n  url: http://127.0.0.1:6379\n",
            2,
            "redis.url",
            "must start with redis://, rediss:// or unix://",
            id="redis-url-scheme",
        ),
        pytest.param(
            "redis:\n  key_prefix: 'x:'\n",
            2,
            "redis.url",
            "missing required key",
            id="redis-url-missing",
        ),
        pytest.param(
            "ledger:\n  sink: mysql://127.0.0.1/db\n",
            2,
            "ledger.sink",
            "must be sqlite:///relative/path",
            id="ledger-sink-scheme",
        ),
        pytest.param(
            "ledger:\n  sink: 'sqlite:///'\n",
            2,
            "ledger.sink",
            "must name a database file",
            id="ledger-sink-no-file",
        ),
        pytest.param(
            "logging:\n  level: loud\n",
            2,
            "logging.level",
            "must be one of debug, info, warning, error, got string 'loud'",
            id="log-level",
        ),
        pytest.param(
            "logging:\n  log_prompts: maybe\n",
            2,
            "logging.log_prompts",
            "must be true or false, got string 'maybe'",
            id="log-prompts-not-bool",
        ),
        pytest.param(
            "policies:\n  max_input_tokens: 1.5\n",
            2,
            "policies.max_input_tokens",
            "must be a positive integer, got 1.5",
            id="policy-not-integer",
        ),
        pytest.param(
            "server:\n  workers: 1\n  workers: 2\n",
            3,
            "server.workers",
            "duplicate key, first defined on line 2",
            id="duplicate-mapping-key",
        ),
        pytest.param(
            "server:\n  1: x\n",
            2,
            "server",
            "mapping keys must be strings, got '1'",
            id="non-string-mapping-key",
        ),
        pytest.param(
            "base: &base {workers: 2}\nserver:\n  <<: *base\n",
            1,
            "base",
            "unknown key",
            id="anchor-at-unknown-key",
        ),
        pytest.param(
            "server:\n  <<: {workers: 2}\n",
            2,
            "server",
            "merge keys (<<) are not supported",
            id="merge-key",
        ),
        pytest.param(
            "server:\n  workers: !custom 2\n",
            2,
            "server.workers",
            "unsupported YAML tag !custom",
            id="unknown-tag",
        ),
        pytest.param(
            "server:\n  workers: !!int many\n",
            2,
            "server.workers",
            "invalid value for the YAML tag !!int",
            id="invalid-tagged-value",
        ),
    ],
)
def test_error_names_file_line_and_path(
    text: str, line: int, path: str, reason: str
) -> None:
    error = parse_error(text)

    assert error.source == "config.yaml"
    assert error.line == line
    assert error.path == path
    assert reason in error.reason
    assert str(error).startswith(f"config.yaml:{line}: {path}: ")


@pytest.mark.parametrize(
    ("kind", "settings", "base_url"),
    [
        pytest.param("anthropic", "", "https://api.anthropic.com", id="anthropic"),
        pytest.param(
            "gemini",
            "",
            "https://generativelanguage.googleapis.com/v1beta",
            id="gemini",
        ),
        pytest.param(
            "azure-openai",
            "    base_url: http://127.0.0.1:8080/openai\n"
            "    api_version: '2024-10-21'\n",
            "http://127.0.0.1:8080/openai",
            id="azure-openai",
        ),
        # Bedrock derives its URL from the region when it starts.
        pytest.param("bedrock", "    region: us-east-1\n", "", id="bedrock"),
    ],
)
def test_provider_kind_is_supported(kind: str, settings: str, base_url: str) -> None:
    config = parse(f"providers:\n  - name: p\n    kind: {kind}\n{settings}")

    [provider] = config.providers
    assert provider.kind == kind
    assert provider.base_url == base_url


def test_kind_without_default_url_names_line() -> None:
    error = parse_error("providers:\n  - name: p\n    kind: azure-openai\n")

    # base_url is absent, so the error points at the provider's first line.
    assert error.line == 2
    assert error.path == "providers[0].base_url"
    assert error.reason == (
        "missing required key (this provider kind has no default base_url)"
    )


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        pytest.param("4000", "must be host:port", id="port-only"),
        pytest.param("'127.0.0.1'", "no host or no port", id="no-port"),
        pytest.param("':4000'", "no host or no port", id="no-host"),
        pytest.param("'::1:4000'", "an IPv6 host needs brackets", id="bare-ipv6"),
        pytest.param("'[::1]'", "no port after", id="bracketed-no-port"),
        pytest.param("'[nope]:80'", "is not an IPv6 address", id="bad-ipv6"),
        pytest.param("'host name:80'", "is not a host name", id="space-in-host"),
        pytest.param("'localhost:0'", "from 1 to 65535", id="port-zero"),
        pytest.param("'localhost:70000'", "from 1 to 65535", id="port-too-large"),
        pytest.param("'localhost:http'", "from 1 to 65535", id="port-not-number"),
    ],
)
def test_bad_listen_is_rejected(listen: str, reason: str) -> None:
    error = parse_error(f"server:\n  workers: 1\n  listen: {listen}\n")

    assert error.line == 3
    assert error.path == "server.listen"
    assert reason in error.reason


# Redis URLs


@pytest.mark.parametrize(
    ("url", "db", "host", "port"),
    [
        pytest.param("redis://127.0.0.1:6379/0", 0, "127.0.0.1", 6379, id="full"),
        pytest.param("redis://127.0.0.1", None, "127.0.0.1", None, id="host-only"),
        pytest.param(
            "redis://127.0.0.1:6379/", None, "127.0.0.1", 6379, id="trailing-slash"
        ),
        pytest.param("redis://localhost/15", 15, "localhost", None, id="no-port"),
        pytest.param(
            "rediss://:pw@cache.internal:6380/2", 2, "cache.internal", 6380, id="tls"
        ),
        pytest.param(
            "redis://redis_cache:6379/1", 1, "redis_cache", 6379, id="underscore-host"
        ),
        pytest.param("redis://[::1]:6379/3", 3, "::1", 6379, id="ipv6"),
        pytest.param("redis://127.0.0.1:6379?db=4", 4, "127.0.0.1", 6379, id="query"),
        pytest.param(
            "redis://u:pw@127.0.0.1:65535/0",
            0,
            "127.0.0.1",
            65535,
            id="user-and-password",
        ),
    ],
)
def test_redis_url_is_accepted(
    url: str, db: int | None, host: str, port: int | None
) -> None:
    config = parse(f"redis:\n  url: '{url}'\n")

    assert config.redis == RedisConfig(url=url)
    # redis-py must read the same database, host and port from the URL.
    options = redis_url_options(url)
    assert options.get("db") == db
    assert options.get("host") == host
    assert options.get("port") == port


def test_redis_cluster_nodes_are_split() -> None:
    config = parse(
        "redis:\n  url: redis://10.0.0.5:7000\n  cluster: true\n"
        "  cluster_nodes: ['10.0.0.6:7000', '[fd00::7]:7001', redis-3:7002]\n"
    )

    assert config.redis is not None
    assert config.redis.cluster_addresses == (
        ("10.0.0.6", 7000),
        ("fd00::7", 7001),
        ("redis-3", 7002),
    )


@pytest.mark.parametrize(
    "url", ["redis://10.0.0.5:7000", "redis://10.0.0.5:7000/0", "rediss://h:7000/"]
)
def test_redis_cluster_url_is_accepted(url: str) -> None:
    config = parse(f"redis:\n  url: '{url}'\n  cluster: true\n")

    assert config.redis == RedisConfig(url=url, cluster=True)
    assert "cluster=True" in repr(config.redis)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("unix:///run/redis/redis.sock", id="socket"),
        pytest.param("unix:///run/redis/redis.sock?db=3", id="socket-query-db"),
    ],
)
def test_redis_unix_url_is_accepted(url: str) -> None:
    config = parse(f"redis:\n  url: '{url}'\n")

    assert config.redis == RedisConfig(url=url)
    assert redis_url_options(url)["path"] == "/run/redis/redis.sock"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param(
            "redis://127.0.0.1:6379/x",
            "the database in the path must be a non-negative integer",
            id="db-not-number",
        ),
        pytest.param(
            "redis://127.0.0.1:6379/-1",
            "the database in the path must be a non-negative integer",
            id="db-negative",
        ),
        pytest.param(
            "redis://127.0.0.1:6379/1/2",
            "the database in the path must be a non-negative integer",
            id="db-two-segments",
        ),
        pytest.param(
            "redis://127.0.0.1:6379/0/",
            "the database in the path must be a non-negative integer",
            id="db-trailing-slash",
        ),
        pytest.param(
            "redis://127.0.0.1:6379?db=x",
            "?db= must be a non-negative integer",
            id="query-db-not-number",
        ),
        pytest.param(
            "redis://127.0.0.1:6379?db=",
            "?db= must be a non-negative integer",
            id="query-db-empty",
        ),
        pytest.param(
            "redis://127.0.0.1:6379/1?db=2",
            "the database is set both in the path and in ?db=",
            id="db-twice",
        ),
        pytest.param("redis:///0", "(no host)", id="no-host"),
        pytest.param("rediss://:pw@:6379/0", "(no host)", id="tls-no-host"),
        pytest.param("redis://", "(no host)", id="scheme-only"),
        pytest.param(
            "redis://127.0.0.1:0/0", "the port must be a number from 1", id="port-0"
        ),
        pytest.param(
            "redis://127.0.0.1:65536/0",
            "the port must be a number from 1",
            id="port-too-large",
        ),
        pytest.param(
            "redis://127.0.0.1:x/0",
            "the port must be a number from 1",
            id="port-not-number",
        ),
        pytest.param(
            "redis://127.0.0.1:-1/0",
            "the port must be a number from 1",
            id="port-negative",
        ),
        pytest.param(
            "redis://::1:6379/0", "an IPv6 host needs brackets", id="bare-ipv6"
        ),
        pytest.param(
            "redis://[::1:6379/0", "is not an IPv6 address", id="unclosed-bracket"
        ),
        pytest.param(
            "redis://[nope]:6379/0", "is not an IPv6 address", id="bracketed-not-ipv6"
        ),
        pytest.param(
            "redis://cache host:6379/0",
            "is not a host name or address",
            id="space-in-host",
        ),
        pytest.param("unix://", "no socket path after unix://", id="unix-empty"),
        pytest.param("unix:///", "no socket path after unix://", id="unix-root"),
        pytest.param("unix://redis.sock", "no socket path", id="unix-relative"),
        pytest.param(
            "unix:///run/redis.sock?db=a",
            "?db= must be a non-negative integer",
            id="unix-query-db",
        ),
        pytest.param(
            "redis://127.0.0.1:6379?db=1&db=x",
            "?db= must be a non-negative integer",
            id="query-db-repeated",
        ),
        pytest.param(
            "redis://:pa/ss@127.0.0.1:6379/0",
            "got <hidden> (percent-encode any '/', '?' or '#' in the user name",
            id="unencoded-password",
        ),
    ],
)
def test_bad_redis_url_is_rejected(url: str, reason: str) -> None:
    error = parse_error(f"server: {{}}\nredis:\n  url: '{url}'\n")

    assert error.line == 3
    assert error.path == "redis.url"
    assert reason in error.reason
    assert str(error).startswith("config.yaml:3: redis.url: must be a URL such as ")


def test_bad_redis_url_shows_value() -> None:
    error = parse_error("redis:\n  url: redis://127.0.0.1:6379/x\n")

    assert error.reason == (
        "must be a URL such as redis://127.0.0.1:6379/0, got string "
        "'redis://127.0.0.1:6379/x' (the database in the path must be a "
        "non-negative integer such as /0)"
    )


def test_missing_environment_variable_names_it() -> None:
    error = parse_error(FULL_CONFIG, {"LOCAL_API_KEY": "x"})

    assert error.line == 30
    assert error.path == "keys[0].key"
    assert "environment variable CI_PIPELINE_KEY is not set" in error.reason
    assert str(error).startswith("config.yaml:30: keys[0].key: ")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("${1ABC}", "invalid reference ${1ABC}", id="bad-name"),
        pytest.param("${A-b}", "invalid reference ${A-b}", id="dash-without-colon"),
        pytest.param("${}", "invalid reference ${}", id="empty"),
        pytest.param("${ABC", "unclosed '${'", id="unclosed"),
    ],
)
def test_malformed_reference_is_rejected(value: str, reason: str) -> None:
    error = parse_error(f"keys:\n  - name: a\n    key: k\n    tenant: '{value}'\n")

    assert error.line == 4
    assert error.path == "keys[0].tenant"
    assert reason in error.reason


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param("", 1, "contains no YAML document", id="empty"),
        pytest.param(
            "# only a comment\n", 1, "contains no YAML document", id="comment"
        ),
        pytest.param(
            "- a\n- b\n", 1, "top level must be a mapping, got a list", id="list"
        ),
        pytest.param("just text\n", 1, "top level must be a mapping", id="scalar"),
        pytest.param("server:\n  workers: [1\n", 3, "invalid YAML", id="unclosed-flow"),
        pytest.param("a: 1\n b: 2\n", 2, "invalid YAML", id="bad-indent"),
        pytest.param("a: 1\n---\nb: 2\n", 2, "invalid YAML", id="two-documents"),
        pytest.param("a: '\x01'\n", 1, "invalid YAML: character #x0001", id="control"),
    ],
)
def test_document_level_error(text: str, line: int, reason: str) -> None:
    error = parse_error(text)

    assert error.line == line
    assert error.path == ""
    assert reason in error.reason
    assert str(error).startswith(f"config.yaml:{line}: ")


# Secrets


def test_secrets_absent_from_repr() -> None:
    text = FULL_CONFIG.replace(
        "redis://127.0.0.1", f"redis://:{REDIS_PASSWORD}@127.0.0.1"
    )
    config = parse(text, FULL_ENVIRON)

    for rendered in (repr(config), str(config)):
        assert CI_KEY not in rendered
        assert LOCAL_API_KEY not in rendered
        assert REDIS_PASSWORD not in rendered
    assert "redis://:***@127.0.0.1:6379/0" in repr(config)
    assert config.redis is not None
    assert config.redis.url == f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param(
            "keys:\n  - name: a\n    key: 987654321\n", "987654321", id="key-as-int"
        ),
        pytest.param(
            "keys:\n  - name: a\n    key_sha256: sk-pasted-plaintext\n",
            "sk-pasted-plaintext",
            id="plaintext-in-key-sha256",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: openai\n    api_key: 13572468\n",
            "13572468",
            id="api-key-as-int",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: openai\n    api_key: ${sk-secret}\n",
            "sk-secret",
            id="api-key-bad-reference",
        ),
        pytest.param(
            f"redis:\n  url: 'http://:{REDIS_PASSWORD}@127.0.0.1'\n",
            REDIS_PASSWORD,
            id="redis-url-password",
        ),
        pytest.param(
            f"redis:\n  url: 'redis://:{REDIS_PASSWORD}@127.0.0.1:6379/x'\n",
            REDIS_PASSWORD,
            id="redis-url-password-bad-database",
        ),
        pytest.param(
            f"redis:\n  url: 'redis://:{REDIS_PASSWORD}/x@127.0.0.1:6379/0'\n",
            REDIS_PASSWORD,
            id="redis-url-unencoded-password",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: openai\n"
            f"    base_url: 'ftp://u:{REDIS_PASSWORD}#x@x.test'\n",
            REDIS_PASSWORD,
            id="base-url-unencoded-password",
        ),
        pytest.param(
            f"ledger:\n  sink: 'mysql://u:{REDIS_PASSWORD}@127.0.0.1/db'\n",
            REDIS_PASSWORD,
            id="sink-password",
        ),
        pytest.param(
            "providers:\n  - name: p\n    kind: openai\n"
            f"    base_url: 'ftp://u:{REDIS_PASSWORD}@x.test'\n",
            REDIS_PASSWORD,
            id="base-url-password",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: 'sk-secret-in-yaml-error\n",
            "sk-secret-in-yaml-error",
            id="yaml-syntax-error",
        ),
    ],
)
def test_secrets_absent_from_error_messages(text: str, secret: str) -> None:
    error = parse_error(text)

    assert secret not in str(error)
    assert secret not in repr(error)


SECRET_VALUE = "sk-live-verysecret-abc"


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        pytest.param(
            "server:\n  workers: ${SECRETX}\n",
            "server.workers",
            "must be a positive integer, got a string from ${SECRETX}",
            id="integer",
        ),
        pytest.param(
            "server:\n  read_timeout: ${SECRETX}\n",
            "server.read_timeout",
            "must be a positive number, got a string from ${SECRETX}",
            id="number",
        ),
        pytest.param(
            "server: {listen: '${SECRETX}/x:80'}\n",
            "server.listen",
            "got a string from ${SECRETX} (the host is not a host name or address)",
            id="listen",
        ),
        pytest.param(
            "server: {listen: '[${SECRETX}]:80'}\n",
            "server.listen",
            "got a string from ${SECRETX} (the host in brackets is not an IPv6",
            id="listen-ipv6",
        ),
        pytest.param(
            "logging:\n  level: ${SECRETX}\n",
            "logging.level",
            "must be one of debug, info, warning, error, got a string from ${SECRETX}",
            id="choice",
        ),
        pytest.param(
            "logging:\n  log_prompts: ${SECRETX}\n",
            "logging.log_prompts",
            "must be true or false, got a string from ${SECRETX}",
            id="boolean",
        ),
        pytest.param(
            "providers:\n  - {name: p, kind: '${SECRETX}'}\n",
            "providers[0].kind",
            f"must be one of {PROVIDER_KINDS}, got a string from ${{SECRETX}}",
            id="provider-kind",
        ),
        pytest.param(
            "providers:\n  - {name: p, kind: openai, base_url: '${SECRETX}'}\n",
            "providers[0].base_url",
            "must be an http or https URL such as http://127.0.0.1:8080/v1, "
            "got a string from ${SECRETX}",
            id="base-url",
        ),
        pytest.param(
            LOCAL_PROVIDER + "models:\n  - {name: m, provider: '${SECRETX}'}\n",
            "models[0].provider",
            "provider from ${SECRETX} is not defined under providers (defined: local)",
            id="model-provider",
        ),
        pytest.param(
            "keys:\n  - {name: '${SECRETX}', key: a}\n"
            "  - {name: '${SECRETX}', key: b}\n",
            "keys[1].name",
            "duplicate key name from ${SECRETX}, first used at keys[0]",
            id="duplicate-name",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: k, models: '${SECRETX}'}\n",
            "keys[0].models",
            "must be a list, got a string from ${SECRETX}",
            id="list",
        ),
        pytest.param(
            "redis: {url: '${SECRETX}'}\n",
            "redis.url",
            "must start with redis://, rediss:// or unix://, "
            "got a string from ${SECRETX}",
            id="redis-url-scheme",
        ),
        pytest.param(
            "redis: {url: 'redis://127.0.0.1:6379/${SECRETX}'}\n",
            "redis.url",
            "got a string from ${SECRETX} (the database in the path",
            id="redis-url-database",
        ),
        pytest.param(
            "ledger: {sink: '${SECRETX}'}\n",
            "ledger.sink",
            "postgresql://user@host/db, got a string from ${SECRETX}",
            id="ledger-sink",
        ),
        pytest.param(
            "server: {workers: '${SECRETX:-1}x${OTHER}'}\n",
            "server.workers",
            "must be a positive integer, got a string from ${SECRETX} and ${OTHER}",
            id="two-variables",
        ),
        pytest.param(
            "server: {workers: '${UNSET:-x}${SECRETX}'}\n",
            "server.workers",
            "must be a positive integer, got a string from ${SECRETX}",
            id="default-not-named",
        ),
    ],
)
def test_environment_value_absent_from_error(text: str, path: str, reason: str) -> None:
    environ = {"SECRETX": SECRET_VALUE, "OTHER": "other-secret"}
    error = parse_error(text, environ)

    assert error.path == path
    assert reason in error.reason
    assert SECRET_VALUE not in str(error)
    assert "other-secret" not in str(error)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        pytest.param(
            "workers",
            "-424242",
            "must be a positive integer, got an integer from ${V}",
            id="integer",
        ),
        pytest.param(
            "workers",
            "0.5",
            "must be a positive integer, got a string from ${V}",
            id="fraction-for-integer",
        ),
        pytest.param(
            "read_timeout",
            "-31.25",
            "must be a positive number, got a number from ${V}",
            id="number",
        ),
    ],
)
def test_environment_number_absent_from_error(
    key: str, value: str, reason: str
) -> None:
    error = parse_error(f"server:\n  {key}: ${{V}}\n", {"V": value})

    assert error.reason == reason
    assert value not in str(error)


def test_environment_provider_kind_not_shown() -> None:
    text = "providers:\n  - {name: p, kind: '${KIND}'}\n"
    accepted = parse(text, {"KIND": "anthropic"})
    error = parse_error(text, {"KIND": "claude"})

    assert accepted.providers[0].kind == "anthropic"
    assert error.reason.startswith("must be one of openai, ")
    assert error.reason.endswith("got a string from ${KIND}")
    assert "claude" not in str(error)


def test_environment_kind_not_shown_in_base_url_error() -> None:
    text = "providers:\n  - {name: p, kind: '${KIND}'}\n"
    error = parse_error(text, {"KIND": "azure-openai"})

    assert error.path == "providers[0].base_url"
    assert "azure-openai" not in str(error)


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="unset"),
        pytest.param({"W": ""}, id="empty"),
    ],
)
def test_file_default_shown_in_error(environ: dict[str, str]) -> None:
    error = parse_error("server: {workers: '${W:-many}'}\n", environ)

    assert error.reason == "must be a positive integer, got string 'many'"


def test_hidden_value_is_marked() -> None:
    error = parse_error("keys:\n  - name: a\n    key: 987654321\n")

    assert error.reason == "must be a string, got <hidden>"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///llmgw.db", "sqlite:///llmgw.db", id="sqlite-unchanged"),
        pytest.param(
            "redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0", id="redis"
        ),
        pytest.param(
            "postgresql://u:pw@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db", id="pg"
        ),
        pytest.param(
            "postgresql://127.0.0.1/db?sslmode=off&password=pw",
            "postgresql://127.0.0.1/db?sslmode=off&password=***",
            id="query-password",
        ),
        pytest.param("redis://user@127.0.0.1", "redis://user@127.0.0.1", id="no-pw"),
        pytest.param("http://u:pw@[::1", "http://***@[::1", id="unparsable"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# The embedded default


def test_default_config_without_provider_variables() -> None:
    config, _key, skipped = default_config({})

    assert config.server == ServerConfig(host="127.0.0.1", port=4000, workers=1)
    assert config.redis is None
    assert config.ledger.sink == "sqlite:///llmgw.db"
    assert config.providers == ()
    assert config.models == ()
    assert skipped == ()
    assert config.source == "<embedded default>"


def test_default_config_generates_one_gateway_key() -> None:
    first = default_config({})
    second = default_config({})

    assert first.key.startswith("sk-llmgw-")
    assert len(first.key) > len("sk-llmgw-") + 40
    assert first.key != second.key
    assert first.config.keys == (
        KeyConfig(name="default", key_sha256=hash_key(first.key)),
    )
    assert first.key not in repr(first.config)


def test_default_config_with_openai_api_key() -> None:
    config = default_config({"OPENAI_API_KEY": "sk-openai"}).config

    assert config.providers == (
        ProviderConfig(
            name="openai",
            kind="openai",
            base_url="https://api.openai.com/v1",
            api_key=Secret("sk-openai"),
        ),
    )
    assert config.models == (ModelConfig(name="*", provider="openai"),)


def test_default_config_with_openai_base_url() -> None:
    environ = {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1/"}
    config = default_config(environ).config

    assert config.providers == (
        ProviderConfig(
            name="openai",
            kind="openai-compatible",
            base_url="http://127.0.0.1:8080/v1",
            api_key=Secret(""),
        ),
    )
    assert config.models == (ModelConfig(name="*", provider="openai"),)


def test_default_config_ignores_empty_openai_variables() -> None:
    config = default_config({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}).config

    assert config.providers == ()


def test_default_config_adds_anthropic_and_gemini() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant",
        "GEMINI_API_KEY": "g-key",
        "OPENAI_API_KEY": "sk-openai",
    }
    result = default_config(environ)
    config = result.config

    assert result.skipped_variables == ()
    assert [(p.name, p.kind) for p in config.providers] == [
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
        ("openai", "openai"),
    ]
    assert config.providers[0] == ProviderConfig(
        name="anthropic",
        kind="anthropic",
        base_url="https://api.anthropic.com",
        api_key=Secret("sk-ant"),
    )
    assert config.providers[1] == ProviderConfig(
        name="gemini",
        kind="gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta",
        api_key=Secret("g-key"),
    )
    # The catch-all route of OpenAI comes last, so it does not take the
    # Claude and Gemini model names.
    assert config.models == (
        ModelConfig(name="claude-*", provider="anthropic"),
        ModelConfig(name="gemini-*", provider="gemini"),
        ModelConfig(name="*", provider="openai"),
    )
    router = Router(config)
    assert router.resolve("claude-sonnet-4-5").provider.name == "anthropic"
    assert router.resolve("gemini-2.5-flash").provider.name == "gemini"
    assert router.resolve("gpt-4o-mini").provider.name == "openai"


def test_default_config_skips_empty_provider_keys() -> None:
    environ = {"ANTHROPIC_API_KEY": "", "GEMINI_API_KEY": "g-key"}
    config = default_config(environ).config

    assert [p.name for p in config.providers] == ["gemini"]
    assert config.models == (ModelConfig(name="gemini-*", provider="gemini"),)


def test_default_config_rejects_bad_openai_base_url() -> None:
    with pytest.raises(ConfigError) as caught:
        default_config({"OPENAI_BASE_URL": "llm.internal:9999"})

    assert caught.value.path == "OPENAI_BASE_URL"
    assert caught.value.line is None
    assert str(caught.value).startswith("environment: OPENAI_BASE_URL: ")
    assert "got a string from ${OPENAI_BASE_URL}" in caught.value.reason
    assert "llm.internal:9999" not in str(caught.value)


def test_default_config_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-os-environ")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    config = default_config().config

    assert config.providers[0].api_key == Secret("sk-from-os-environ")


# Files


def test_load_config_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.yaml"
    path.write_text(FULL_CONFIG, encoding="utf-8")

    config = load_config(path, FULL_ENVIRON)

    assert config.source == str(path)
    assert config.keys == FULL_EXPECTED.keys


def test_load_config_reads_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMGW_TEST_TENANT", "from-os-environ")
    path = tmp_path / "llmgw.yaml"
    path.write_text("keys:\n  - {name: a, key: k, tenant: '${LLMGW_TEST_TENANT}'}\n")

    assert load_config(str(path)).keys[0].tenant == "from-os-environ"


def test_load_config_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.yaml"
    path.write_text("server:\n  workers: -1\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert str(caught.value).startswith(f"{path}:2: server.workers: ")


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.line is None
    assert str(caught.value).startswith(f"{path}: cannot read the file: ")


def test_load_config_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "llmgw.yaml"
    path.write_bytes(b"server:\n  listen: \xff\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.line == 2
    assert "invalid UTF-8" in caught.value.reason


def test_hash_key_is_sha256_hex() -> None:
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    assert hash_key("abc") == expected


# Governance: tenants, teams, limits, prices, admin keys and JWT

ADMIN_KEY = "admin-plaintext-0123456789"

GOVERNANCE_CONFIG = """\
redis:
  url: redis://127.0.0.1:6379/0
  on_unavailable: fail_open
policies:
  timezone: Europe/Berlin
admin:
  keys: ["${LLMGW_ADMIN_KEY}"]
auth:
  jwt:
    issuer: https://idp.example
    audience: llmgw
    jwks_url: http://127.0.0.1:9999/jwks.json
    algorithms: [RS256, ES256]
    claims: {user: sub, team: team, tenant: org}
providers:
  - {name: local, kind: openai-compatible, base_url: 'http://127.0.0.1:8080/v1'}
models:
  - name: gpt-4o
    provider: local
    price: {input: 2.5, output: 10, cache_read: 1.25, cache_write: 3.125, reasoning: 10}
  - {name: gpt-4o-mini, provider: local, price: {input: 0.15, output: 0.6}}
tenants:
  - name: acme
    models: ["gpt-*"]
    limits: &limits_example
      requests_per_minute: 600
      tokens_per_minute: 1000000
      tokens_per_minute_counts: input
      max_concurrent_requests: 50
      token_quotas: {day: 10000000, month: 200000000}
      budgets_usd: {day: 50, month: 1000}
      models:
        "gpt-4o": {requests_per_minute: 60, budgets_usd: {day: 10}}
    teams:
      - name: platform
        models: ["gpt-4o-mini"]
        limits: *limits_example
keys:
  - name: ci
    key: ${CI_KEY}
    tenant: acme
    team: platform
    limits: {requests_per_minute: 5, token_quotas: {week: 1000}}
"""

EXAMPLE_LIMITS = LimitSpec(
    requests_per_minute=600,
    tokens_per_minute=1000000,
    tokens_per_minute_counts="input",
    max_concurrent_requests=50,
    token_quotas=(("day", 10000000), ("month", 200000000)),
    budgets_usd=(("day", 50.0), ("month", 1000.0)),
    models=(
        ("gpt-4o", LimitSpec(requests_per_minute=60, budgets_usd=(("day", 10.0),))),
    ),
)

GOVERNANCE_ENVIRON = {"LLMGW_ADMIN_KEY": ADMIN_KEY, "CI_KEY": CI_KEY}


def test_governance_sections_parse() -> None:
    config = parse(GOVERNANCE_CONFIG, GOVERNANCE_ENVIRON)

    assert config.redis is not None
    assert config.redis.on_unavailable == "fail_open"
    assert config.policies.timezone == "Europe/Berlin"
    assert config.admin == AdminConfig(key_sha256=(hash_key(ADMIN_KEY),))
    assert config.models[0].price == Price(
        input=2.5, output=10.0, cache_read=1.25, cache_write=3.125, reasoning=10.0
    )
    assert config.models[1].price == Price(input=0.15, output=0.6)
    assert config.tenants == (
        TenantConfig(
            name="acme",
            models=("gpt-*",),
            limits=EXAMPLE_LIMITS,
            teams=(
                TeamConfig(
                    name="platform", models=("gpt-4o-mini",), limits=EXAMPLE_LIMITS
                ),
            ),
        ),
    )
    assert config.keys[0].team == "platform"
    assert config.keys[0].limits == LimitSpec(
        requests_per_minute=5, token_quotas=(("week", 1000),)
    )


def test_jwt_section_parses() -> None:
    config = parse(GOVERNANCE_CONFIG, GOVERNANCE_ENVIRON)

    assert config.auth.jwt == JWTConfig(
        issuer="https://idp.example",
        audience="llmgw",
        jwks_url="http://127.0.0.1:9999/jwks.json",
        algorithms=("RS256", "ES256"),
        claims=JWTClaims(user="sub", team="team", tenant="org"),
    )
    assert config.auth.jwt.jwks_refresh_seconds == 300.0
    assert config.auth.jwt.leeway_seconds == 30.0


def test_jwt_public_key_and_defaults() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\\nMFkw\\n-----END PUBLIC KEY-----"
    config = parse(
        "auth:\n  jwt:\n    issuer: i\n    audience: a\n"
        f'    public_key: "{pem}"\n    leeway_seconds: 0\n'
        "    jwks_refresh_seconds: 60\n"
    )

    assert config.auth.jwt is not None
    assert config.auth.jwt.public_key == pem.replace("\\n", "\n")
    assert config.auth.jwt.algorithms == ("RS256",)
    assert config.auth.jwt.claims == JWTClaims(user="sub", team=None, tenant=None)
    assert config.auth.jwt.leeway_seconds == 0.0
    assert config.auth.jwt.jwks_refresh_seconds == 60.0


def test_governance_defaults() -> None:
    config = parse("redis: {url: 'redis://127.0.0.1/0'}\n")

    assert config.redis is not None
    assert config.redis.on_unavailable == "fail_closed"
    assert config.policies.timezone == "UTC"
    assert config.admin == AdminConfig()
    assert config.auth.jwt is None
    assert config.tenants == ()


def test_key_limits_is_limit_spec() -> None:
    assert KeyLimits is LimitSpec
    config = parse("keys:\n  - {name: a, key: k, limits: {requests_per_minute: 3}}\n")

    assert config.keys[0].limits == LimitSpec(requests_per_minute=3)


def test_admin_key_entries() -> None:
    digest = hash_key("other-admin-key-0123456789")
    config = parse(
        "admin:\n  keys:\n"
        f"    - {ADMIN_KEY}\n"
        f"    - {{key_sha256: {digest.upper()}}}\n"
        f"    - {{key: {ADMIN_KEY}-2}}\n"
        "    - ${UNSET_ADMIN_KEY:-}\n"
        "  store: sqlite:///admin.db\n"
    )

    assert config.admin.key_sha256 == (
        hash_key(ADMIN_KEY),
        digest,
        hash_key(ADMIN_KEY + "-2"),
    )
    assert config.admin.store == "sqlite:///admin.db"


def test_key_tenant_outside_config_is_accepted() -> None:
    config = parse("keys:\n  - {name: a, key: k, tenant: managed, team: ml}\n")

    assert config.keys[0].tenant == "managed"
    assert config.keys[0].team == "ml"


@pytest.mark.parametrize(
    ("text", "line", "path", "reason"),
    [
        pytest.param(
            "redis: {url: 'redis://h/0', on_unavailable: open}\n",
            1,
            "redis.on_unavailable",
            "must be one of fail_closed, fail_open, got string 'open'",
            id="on-unavailable",
        ),
        pytest.param(
            "redis: {url: 'redis://h:7000/3', cluster: true}\n",
            1,
            "redis.url",
            "Redis Cluster has only database 0; remove the database from the URL",
            id="cluster-database",
        ),
        pytest.param(
            "redis: {url: 'redis://h:7000?db=2', cluster: true}\n",
            1,
            "redis.url",
            "Redis Cluster has only database 0",
            id="cluster-query-database",
        ),
        pytest.param(
            "redis: {url: 'unix:///run/redis.sock', cluster: true}\n",
            1,
            "redis.url",
            "Redis Cluster needs a redis:// or rediss:// URL, not a unix socket",
            id="cluster-socket",
        ),
        pytest.param(
            "redis: {url: 'redis://h:7000', cluster: true, cluster_nodes: ['h2']}\n",
            1,
            "redis.cluster_nodes[0]",
            "expected host:port, for example redis-1.internal:6379",
            id="cluster-node-without-port",
        ),
        pytest.param(
            "redis: {url: 'redis://h:7000', cluster: true, "
            "cluster_nodes: ['::1:7000']}\n",
            1,
            "redis.cluster_nodes[0]",
            "the host is not a host name or address (IPv6 in brackets)",
            id="cluster-node-ipv6-without-brackets",
        ),
        pytest.param(
            "redis: {url: 'redis://h:7000', cluster_nodes: ['h2:7000']}\n",
            1,
            "redis.cluster_nodes",
            "needs cluster: true",
            id="cluster-nodes-without-cluster",
        ),
        pytest.param(
            "redis: {url: 'redis://h/0', cluster: sometimes}\n",
            1,
            "redis.cluster",
            "must be true or false",
            id="cluster-not-boolean",
        ),
        pytest.param(
            "policies:\n  timezone: Mars/Olympus\n",
            2,
            "policies.timezone",
            "must be an IANA time zone name",
            id="timezone",
        ),
        pytest.param(
            LOCAL_PROVIDER + "models:\n  - name: m\n    provider: local\n"
            "    price: {input: 1}\n",
            8,
            "models[0].price.output",
            "missing required key",
            id="price-without-output",
        ),
        pytest.param(
            LOCAL_PROVIDER + "models:\n  - name: m\n    provider: local\n"
            "    price: {input: -1, output: 1}\n",
            8,
            "models[0].price.input",
            "must be a non-negative number, got -1",
            id="negative-price",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    limits:\n"
            "      tokens_per_minute_counts: both\n",
            5,
            "keys[0].limits.tokens_per_minute_counts",
            "must be one of input, output, total",
            id="token-counts",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    limits:\n"
            "      token_quotas: {year: 5}\n",
            5,
            "keys[0].limits.token_quotas.year",
            "unknown key, expected one of: day, week, month",
            id="quota-period",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    limits:\n"
            "      budgets_usd: {day: 0}\n",
            5,
            "keys[0].limits.budgets_usd.day",
            "must be a positive number, got 0",
            id="zero-budget",
        ),
        pytest.param(
            "keys:\n  - name: a\n    key: k\n    limits:\n      models: [gpt-4o]\n",
            5,
            "keys[0].limits.models",
            "must be a mapping of model-name globs to limits, got a list",
            id="model-limits-list",
        ),
        pytest.param(
            "tenants:\n  - name: t\n    limits:\n      models:\n"
            "        'gpt-4o':\n          models: {}\n",
            6,
            "tenants[0].limits.models['gpt-4o'].models",
            "unknown key",
            id="nested-model-limits",
        ),
        pytest.param(
            "tenants:\n  - name: t\n    teams:\n      - name: p\n        limits:\n"
            "          models: {'gpt-*': {budgets_usd: {week: -3}}}\n",
            6,
            "tenants[0].teams[0].limits.models['gpt-*'].budgets_usd.week",
            "must be a positive number, got -3",
            id="team-model-budget",
        ),
        pytest.param(
            "tenants:\n  - {name: t}\n  - {name: t}\n",
            3,
            "tenants[1].name",
            "duplicate tenant name 't', first used at tenants[0]",
            id="duplicate-tenant",
        ),
        pytest.param(
            "tenants:\n  - name: t\n    teams: [{name: p}, {name: p}]\n",
            3,
            "tenants[0].teams[1].name",
            "duplicate team name 'p'",
            id="duplicate-team",
        ),
        pytest.param(
            "tenants:\n  - {name: 'a/b'}\n",
            2,
            "tenants[0].name",
            "must be 1 to 64 letters, digits",
            id="tenant-name-slash",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: k, tenant: '{acme}'}\n",
            2,
            "keys[0].tenant",
            "must be 1 to 64 letters, digits",
            id="key-tenant-brace",
        ),
        pytest.param(
            "keys:\n  - {name: a, key: k, team: p}\n",
            2,
            "keys[0].team",
            "needs tenant",
            id="team-without-tenant",
        ),
        pytest.param(
            "tenants:\n  - {name: t, teams: [{name: p}]}\n"
            "keys:\n  - {name: a, key: k, tenant: t, team: q}\n",
            4,
            "keys[0].team",
            "team 'q' is not defined under tenant 't' (defined: p)",
            id="unknown-team",
        ),
        pytest.param(
            "admin: {keys: [short]}\n",
            1,
            "admin.keys[0]",
            "must be at least 16 characters, got 5 <hidden>",
            id="short-admin-key",
        ),
        pytest.param(
            f"admin:\n  keys: ['{CI_KEY}']\nkeys:\n  - {{name: ci, key: '{CI_KEY}'}}\n",
            2,
            "admin.keys[0]",
            "is the same key as the gateway key 'ci'",
            id="admin-key-is-gateway-key",
        ),
        pytest.param(
            "admin:\n  keys: [{key_sha256: abc}]\n",
            2,
            "admin.keys[0].key_sha256",
            "must be 64 hexadecimal characters",
            id="admin-key-sha256",
        ),
        pytest.param(
            "admin: {store: 'postgresql://h/db'}\n",
            1,
            "admin.store",
            "must be sqlite:///relative/path",
            id="admin-store",
        ),
        pytest.param(
            "auth:\n  jwt: {issuer: i, audience: a}\n",
            2,
            "auth.jwt",
            "must set exactly one of jwks_url and public_key, found neither",
            id="jwt-no-key",
        ),
        pytest.param(
            "auth:\n  jwt: {audience: a, jwks_url: 'http://127.0.0.1:1/j'}\n",
            2,
            "auth.jwt.issuer",
            "missing required key",
            id="jwt-no-issuer",
        ),
        pytest.param(
            "auth:\n  jwt:\n    issuer: i\n    audience: a\n"
            "    jwks_url: 'http://127.0.0.1:1/j'\n    algorithms: [HS256]\n",
            6,
            "auth.jwt.algorithms[0]",
            "must be one of RS256",
            id="jwt-hmac",
        ),
        pytest.param(
            "auth:\n  jwt:\n    issuer: i\n    audience: a\n    public_key: abc\n",
            5,
            "auth.jwt.public_key",
            "must be a PEM public key",
            id="jwt-not-pem",
        ),
        pytest.param(
            "auth:\n  jwt:\n    issuer: i\n    audience: a\n"
            "    jwks_url: 'http://127.0.0.1:1/j'\n    claims: {group: g}\n",
            6,
            "auth.jwt.claims.group",
            "unknown key",
            id="jwt-claim-name",
        ),
    ],
)
def test_governance_errors_name_line_and_path(
    text: str, line: int, path: str, reason: str
) -> None:
    error = parse_error(text)

    assert error.line == line
    assert error.path == path
    assert reason in error.reason


def test_admin_key_error_hides_value() -> None:
    error = parse_error("admin:\n  keys: ['${ADMIN}']\n", {"ADMIN": "secret-ish"})

    assert "secret-ish" not in str(error)


# Warnings for budgets that cannot count a model's cost

PRICED_MODELS = (
    LOCAL_PROVIDER
    + """\
models:
  - {name: priced, provider: local, price: {input: 1, output: 2}}
  - {name: free-local, provider: local}
  - {name: 'mock-*', provider: local}
"""
)


def test_budget_without_price_warns() -> None:
    config = parse(
        PRICED_MODELS + "tenants:\n  - name: acme\n    models: ['priced', 'free-*']\n"
        "    limits: {budgets_usd: {day: 5}}\n"
    )

    [warning] = price_warnings(config)

    assert warning.startswith("model 'free-local' has no price")
    assert "requests for it count no cost against the budget of tenant 'acme'" in (
        warning
    )


def test_budget_warnings_per_scope() -> None:
    config = parse(
        PRICED_MODELS + "tenants:\n  - name: acme\n    limits:\n"
        "      models: {'mock-*': {budgets_usd: {day: 1}}}\n"
        "    teams: [{name: p, models: [priced], limits: {budgets_usd: {day: 1}}}]\n"
        "keys:\n  - {name: k, key: k, limits: {budgets_usd: {month: 9}}}\n"
    )

    warnings = price_warnings(config)

    assert len(warnings) == 3
    assert "'mock-*'" in warnings[0]
    assert "tenant 'acme', limits.models['mock-*']" in warnings[0]
    assert "'free-local'" in warnings[1]
    assert "key 'k'" in warnings[1]
    assert "'mock-*'" in warnings[2]
    assert "key 'k'" in warnings[2]


def test_no_budget_no_warning() -> None:
    config = parse(
        PRICED_MODELS + "tenants:\n  - {name: a, limits: {requests_per_minute: 1}}\n"
    )

    assert price_warnings(config) == []


def test_budget_below_one_micro_dollar_rejected() -> None:
    text = (
        "keys:\n"
        "  - {name: a, key: sk-aaaaaaaaaaaa,"
        " limits: {budgets_usd: {day: 0.000000000001}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "llmgw.yaml", environ={})
    error = raised.value
    assert error.path == "keys[0].limits.budgets_usd.day"
    assert error.line == 2
    assert "one micro-dollar" in error.reason
