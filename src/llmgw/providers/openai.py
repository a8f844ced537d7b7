"""OpenAI and OpenAI-compatible upstreams (OpenAI, vLLM, llama.cpp, Ollama).

The request body goes upstream as the client sent it, with the model
replaced, and the response comes back byte for byte: nothing on this path
parses or copies more than the relay in ``llmgw.pipeline.forward`` needs for
usage. The provider swaps credentials and drops hop-by-hop headers. Error
responses pass through with their status and body, the provider key
scrubbed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from llmgw.config import ProviderConfig
from llmgw.errors import UpstreamHTTPError
from llmgw.providers.base import (
    RATE_LIMIT_HEADER_PREFIX,
    Provider,
    UpstreamRequest,
)

# RFC 9110 section 7.6.1, plus the older Keep-Alive and Proxy-* names.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Client headers that never go upstream: credentials (the provider key is
# injected instead), headers aiohttp computes itself, and account selectors
# that belong to the caller's own provider account, not the gateway's.
_DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "host",
    "content-length",
    "content-type",
    # aiohttp has already decoded a compressed request body.
    "content-encoding",
    "accept-encoding",
    "openai-organization",
    "openai-project",
    "expect",
}

# Upstream headers that never reach the client: framing that the gateway
# redoes, and facts about the organisation's provider account.
_DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "set-cookie",
    "openai-organization",
    "openai-project",
    "x-request-id",
}


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    """Header names listed in Connection, which are hop-by-hop too."""
    value = headers.get("Connection", "")
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def forwardable_response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the upstream response headers a client may see.

    The upstream's ``x-ratelimit-*`` counters describe the organisation's
    account, so they stay behind, and the gateway sends its own.
    """
    listed = _connection_tokens(headers)
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in _DROPPED_RESPONSE_HEADERS
        and name.lower() not in listed
        and not name.lower().startswith(RATE_LIMIT_HEADER_PREFIX)
    }


def error_response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the headers a client sees with an upstream error.

    Unlike a success, an error keeps the upstream's ``x-ratelimit-*``
    headers, because after a 429 their reset times tell when to retry.
    """
    kept = forwardable_response_headers(headers)
    for name, value in headers.items():
        if name.lower().startswith(RATE_LIMIT_HEADER_PREFIX):
            kept[name] = value
    return kept


def forwardable_request_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """Return the client's request headers that may go upstream, without any
    credential."""
    listed = _connection_tokens(incoming)
    return {
        name: value
        for name, value in incoming.items()
        if name.lower() not in _DROPPED_REQUEST_HEADERS and name.lower() not in listed
    }


def openai_model_ids(body: object) -> list[str]:
    """Return the ids of an OpenAI ``GET /models`` body."""
    data = body.get("data") if isinstance(body, dict) else None
    return [
        item["id"]
        for item in (data if isinstance(data, list) else [])
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


class OpenAIProvider(Provider):
    """An OpenAI-format upstream, relayed without translation."""

    supports_embeddings = True

    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(config, session)
        self._base_url = config.base_url.rstrip("/")
        self._api_key = config.api_key.value

    def auth_headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        return {"Authorization": f"Bearer {self._api_key}"}

    def request_headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        headers = forwardable_request_headers(incoming)
        headers["Content-Type"] = "application/json"
        headers.update(self.auth_headers())
        return headers

    def operation_url(self, operation: str, upstream_model: str) -> str:
        """Return the URL of an operation such as ``chat/completions``."""
        return f"{self._base_url}/{operation}"

    def call(
        self,
        operation: str,
        body: dict[str, Any],
        upstream_model: str,
        incoming: Mapping[str, str],
    ) -> UpstreamRequest:
        """Build the request for ``operation`` with ``body``, whose ``model`` the
        caller has already set to ``upstream_model``."""
        return UpstreamRequest(
            url=self.operation_url(operation, upstream_model),
            headers=self.request_headers(incoming),
            body=orjson.dumps(body),
        )

    def translate_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        return UpstreamHTTPError(
            status=status,
            body=body,
            content_type=headers.get("Content-Type", "application/json"),
            headers=error_response_headers(headers),
        )

    def model_list_request(self) -> tuple[str, dict[str, str]] | None:
        return f"{self._base_url}/models", self.request_headers({})

    def parse_model_list(self, body: object) -> list[str]:
        return openai_model_ids(body)
