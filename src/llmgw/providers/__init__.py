"""Upstream providers, one module per wire format.

``build_providers`` creates one provider per configured entry. Creating one
only reads its configuration and the environment: no provider connects
anywhere before a request routes to it.
"""

from __future__ import annotations

import importlib
from typing import Final

import aiohttp

from llmgw.config import ProviderConfig
from llmgw.providers.base import Provider, TranslatingProvider
from llmgw.providers.openai import OpenAIProvider

# The module and class of each kind. Modules load only when a configured
# provider needs them, so a gateway without Bedrock never imports botocore
# (about 20 MB).
PROVIDER_CLASSES: Final[dict[str, tuple[str, str]]] = {
    "openai": ("llmgw.providers.openai", "OpenAIProvider"),
    "openai-compatible": ("llmgw.providers.openai", "OpenAIProvider"),
    "azure-openai": ("llmgw.providers.azure", "AzureOpenAIProvider"),
    "anthropic": ("llmgw.providers.anthropic", "AnthropicProvider"),
    "gemini": ("llmgw.providers.gemini", "GeminiProvider"),
    "bedrock": ("llmgw.providers.bedrock", "BedrockProvider"),
    "mistral": ("llmgw.providers.compat", "CompatProvider"),
    "vllm": ("llmgw.providers.compat", "CompatProvider"),
    "ollama": ("llmgw.providers.compat", "CompatProvider"),
}
SUPPORTED_KINDS = frozenset(PROVIDER_CLASSES)

__all__ = [
    "PROVIDER_CLASSES",
    "SUPPORTED_KINDS",
    "OpenAIProvider",
    "Provider",
    "TranslatingProvider",
    "build_providers",
    "provider_class",
]


def provider_class(kind: str) -> type[Provider]:
    """Import and return the provider class of ``kind``; KeyError if unknown."""
    module_name, class_name = PROVIDER_CLASSES[kind]
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_providers(
    configs: tuple[ProviderConfig, ...], session: aiohttp.ClientSession
) -> dict[str, Provider]:
    """Create the providers by name. Raises ValueError for a provider that
    lacks what it needs, such as a Bedrock region."""
    return {
        config.name: provider_class(config.kind)(config, session) for config in configs
    }
