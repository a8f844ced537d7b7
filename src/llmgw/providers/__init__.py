"""Upstream providers, one module per wire format."""

from __future__ import annotations

import aiohttp

from llmgw.config import ProviderConfig
from llmgw.providers.openai import OpenAIProvider

SUPPORTED_KINDS = frozenset({"openai", "openai-compatible"})


def build_providers(
    configs: tuple[ProviderConfig, ...], session: aiohttp.ClientSession
) -> dict[str, OpenAIProvider]:
    return {config.name: OpenAIProvider(config, session) for config in configs}
