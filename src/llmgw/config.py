"""Configuration: the YAML schema as frozen dataclasses.

TODO(helper): the loader (``load_config``), ``${VAR}`` interpolation and
validation go below the types.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class LedgerConfig:
    sink: str = "sqlite:///llmgw.db"


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
