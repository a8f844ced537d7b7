"""Policy: resolve the public model name, check the allow-list, apply caps."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from llmgw.config import Config, ModelConfig, ProviderConfig
from llmgw.errors import ModelNotAllowed, ModelNotFound
from llmgw.pipeline.authenticate import Principal

_GLOB_CHARS = frozenset("*?[")


def is_glob(name: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(name)


@dataclass(frozen=True)
class Deployment:
    """The target of one request: the provider and its name for the model."""

    public_name: str
    provider: ProviderConfig
    upstream_model: str
    route: ModelConfig


class Router:
    """Public model names to deployments: exact names first, then globs in
    the order the configuration lists them."""

    def __init__(self, config: Config) -> None:
        providers = {p.name: p for p in config.providers}
        self._exact: dict[str, tuple[ModelConfig, ProviderConfig]] = {}
        self._globs: list[tuple[ModelConfig, ProviderConfig]] = []
        for model in config.models:
            entry = (model, providers[model.provider])
            if is_glob(model.name):
                self._globs.append(entry)
            else:
                self._exact[model.name] = entry

    def resolve(self, name: str) -> Deployment:
        entry = self._exact.get(name)
        if entry is None:
            entry = next((e for e in self._globs if fnmatchcase(name, e[0].name)), None)
        if entry is None:
            raise ModelNotFound(
                f"The model `{name}` does not exist or you do not have access to it.",
                param="model",
            )
        model, provider = entry
        return Deployment(
            public_name=name,
            provider=provider,
            upstream_model=model.upstream_model or name,
            route=model,
        )

    def listed_names(self) -> list[str]:
        """Return the model names configured one by one, without glob routes."""
        return list(self._exact)

    def glob_routes(self) -> list[tuple[str, str]]:
        """(pattern, provider name) of each glob route, in config order."""
        return [(model.name, provider.name) for model, provider in self._globs]


def is_allowed(principal: Principal, model: str) -> bool:
    return principal.allows_model(model)


def check_allowed(principal: Principal, model: str) -> None:
    if not is_allowed(principal, model):
        raise ModelNotAllowed(
            f"The key '{principal.key_name}' is not allowed to use the model "
            f"`{model}`.",
            param="model",
        )


def _smallest(*caps: int | None) -> int | None:
    present = [cap for cap in caps if cap is not None]
    return min(present) if present else None


@dataclass(frozen=True)
class Caps:
    max_input_tokens: int | None
    max_output_tokens: int | None


def effective_caps(
    config: Config, deployment: Deployment, principal: Principal
) -> Caps:
    """Return the smallest of the global, per-model and per-key caps."""
    return Caps(
        max_input_tokens=_smallest(
            config.policies.max_input_tokens,
            deployment.route.max_input_tokens,
            principal.max_input_tokens,
        ),
        max_output_tokens=_smallest(
            config.policies.max_output_tokens,
            deployment.route.max_output_tokens,
            principal.max_output_tokens,
        ),
    )


def apply_output_cap(
    body: dict[str, Any], cap: int | None, provider_kind: str
) -> int | None:
    """Clamp ``max_tokens`` and ``max_completion_tokens`` to ``cap`` in place,
    setting one when the request has neither, and return the output limit
    that now applies (None when nothing limits the output)."""
    fields = [
        f for f in ("max_completion_tokens", "max_tokens") if body.get(f) is not None
    ]
    if cap is None:
        return min((int(body[f]) for f in fields), default=None)
    if not fields:
        # OpenAI's o-series reject max_tokens; most OpenAI-compatible
        # servers (llama.cpp, vLLM, Ollama) know only max_tokens.
        field = "max_completion_tokens" if provider_kind == "openai" else "max_tokens"
        body[field] = cap
        return cap
    for f in fields:
        body[f] = min(int(body[f]), cap)
    return min(int(body[f]) for f in fields)
