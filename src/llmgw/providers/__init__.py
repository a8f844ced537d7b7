"""Upstream providers, one module per wire format.

``build_providers`` creates one provider per configured entry. Creating one
only reads its configuration and the environment: no provider connects
anywhere before a request routes to it.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from llmgw.config import ProviderConfig
from llmgw.providers.anthropic import AnthropicProvider
from llmgw.providers.azure import AzureOpenAIProvider
from llmgw.providers.base import Provider, TranslatingProvider
from llmgw.providers.bedrock import BedrockProvider
from llmgw.providers.compat import CompatProvider
from llmgw.providers.gemini import GeminiProvider
from llmgw.providers.openai import OpenAIProvider

PROVIDER_CLASSES: Final[dict[str, type[Provider]]] = {
    "openai": OpenAIProvider,
    "openai-compatible": OpenAIProvider,
    "azure-openai": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "bedrock": BedrockProvider,
    "mistral": CompatProvider,
    "vllm": CompatProvider,
    "ollama": CompatProvider,
}
SUPPORTED_KINDS = frozenset(PROVIDER_CLASSES)

__all__ = [
    "PROVIDER_CLASSES",
    "SUPPORTED_KINDS",
    "OpenAIProvider",
    "Provider",
    "TranslatingProvider",
    "build_providers",
]


def build_providers(
    configs: tuple[ProviderConfig, ...], session: aiohttp.ClientSession
) -> dict[str, Provider]:
    """Create the providers by name. Raises ValueError for a provider that
    lacks what it needs, such as a Bedrock region."""
    return {
        config.name: PROVIDER_CLASSES[config.kind](config, session)
        for config in configs
    }
