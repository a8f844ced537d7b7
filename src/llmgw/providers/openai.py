"""OpenAI and OpenAI-compatible upstreams (OpenAI, vLLM, llama.cpp, Ollama).

The provider swaps credentials, drops hop-by-hop headers, applies the
connect and first-byte timeouts, and translates aiohttp's errors into the
gateway's own at this boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import orjson

from llmgw.config import ProviderConfig
from llmgw.errors import (
    UpstreamError,
    UpstreamHTTPError,
    UpstreamRedirect,
    UpstreamTimeout,
    UpstreamUnreachable,
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

_MAX_ERROR_BODY = 1024 * 1024
# Seconds a provider's model list is reused for /v1/models, how long a
# failed listing is remembered, and the most a listing may take: clients
# often call /v1/models at start-up and should not hang on one provider.
_MODEL_LIST_TTL = 60.0
_MODEL_LIST_FAILURE_TTL = 10.0
_MODEL_LIST_TIMEOUT = 5.0


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    """Header names listed in Connection, which are hop-by-hop too."""
    value = headers.get("Connection", "")
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def forwardable_response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    listed = _connection_tokens(headers)
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in _DROPPED_RESPONSE_HEADERS
        and name.lower() not in listed
        and not name.lower().startswith("x-ratelimit-")
    }


class OpenAIProvider:
    def __init__(self, config: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self._session = session
        self._base_url = config.base_url.rstrip("/")
        self._api_key = config.api_key.value
        # The first-byte, idle and total limits are applied around the calls.
        self._client_timeout = aiohttp.ClientTimeout(
            total=None, connect=config.timeouts.connect, sock_read=None
        )
        # (expiry on the monotonic clock, model ids); empty after a failure.
        self._model_list: tuple[float, list[str]] | None = None

    def request_headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        listed = _connection_tokens(incoming)
        headers = {
            name: value
            for name, value in incoming.items()
            if name.lower() not in _DROPPED_REQUEST_HEADERS
            and name.lower() not in listed
        }
        headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def scrub(self, data: bytes) -> bytes:
        """Remove the provider key from text an upstream echoed back."""
        if not self._api_key:
            return data
        return data.replace(self._api_key.encode(), b"<redacted>")

    async def list_models(self) -> list[str]:
        """Return the model ids the upstream's ``GET /models`` lists, cached
        for a minute. Raises the gateway's upstream errors on failure."""
        now = time.monotonic()
        if self._model_list is not None and now < self._model_list[0]:
            return self._model_list[1]
        try:
            ids = await self._fetch_model_list()
        except UpstreamError:
            self._model_list = (now + _MODEL_LIST_FAILURE_TTL, [])
            raise
        self._model_list = (now + _MODEL_LIST_TTL, ids)
        return ids

    async def _fetch_model_list(self) -> list[str]:
        headers = self.request_headers({})
        limit = min(self.config.timeouts.first_byte, _MODEL_LIST_TIMEOUT)
        try:
            async with asyncio.timeout(limit):
                async with self._session.get(
                    f"{self._base_url}/models", headers=headers, allow_redirects=False
                ) as response:
                    if 300 <= response.status < 400:
                        raise self._redirect_error(response)
                    if response.status >= 400:
                        raise await self._error_from(response)
                    body = orjson.loads(await response.read())
        except TimeoutError:
            raise UpstreamTimeout(
                f"Upstream '{self.name}' did not list its models within {limit:g} s."
            ) from None
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            raise UpstreamUnreachable(
                f"Upstream '{self.name}' failed to list its models: "
                f"{type(exc).__name__}."
            ) from exc
        data = body.get("data") if isinstance(body, dict) else None
        ids = [
            item["id"]
            for item in (data if isinstance(data, list) else [])
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
        return ids

    @asynccontextmanager
    async def post(
        self, path: str, body: bytes, incoming: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``body`` and yield the response once its headers arrived.

        Raises ``UpstreamHTTPError`` for an error status, with the body read
        and scrubbed, and the gateway's timeout and connection errors for
        failures before the headers.
        """
        timeouts = self.config.timeouts
        url = f"{self._base_url}{path}"
        try:
            async with asyncio.timeout(timeouts.first_byte):
                response = await self._session.post(
                    url,
                    data=body,
                    headers=self.request_headers(incoming),
                    timeout=self._client_timeout,
                    allow_redirects=False,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"Upstream '{self.name}' sent no response within "
                f"{timeouts.first_byte:g} s."
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"Upstream '{self.name}' is unreachable: {type(exc).__name__}."
            ) from exc

        try:
            if 300 <= response.status < 400:
                raise self._redirect_error(response)
            if response.status >= 400:
                raise await self._error_from(response)
            yield response
        except BaseException:
            # Closing, not releasing, so a half-read body never goes back to
            # the pool, and the dropped connection cancels the upstream request.
            response.close()
            raise
        response.release()

    def _redirect_error(self, response: aiohttp.ClientResponse) -> UpstreamRedirect:
        return UpstreamRedirect(
            f"Upstream '{self.name}' answered with HTTP {response.status} (a "
            "redirect), which the gateway does not follow: set the provider's "
            "base_url to the final address."
        )

    async def _error_from(self, response: aiohttp.ClientResponse) -> UpstreamHTTPError:
        try:
            async with asyncio.timeout(self.config.timeouts.idle):
                body = await response.content.read(_MAX_ERROR_BODY)
        except (TimeoutError, aiohttp.ClientError):
            body = b""
        return UpstreamHTTPError(
            status=response.status,
            body=self.scrub(body),
            content_type=response.headers.get("Content-Type", "application/json"),
            headers=forwardable_response_headers(response.headers),
        )
