"""Upstream errors that reject the gateway's own provider credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from llmgw.config import ProviderConfig, Secret
from llmgw.errors import Blame, UpstreamError
from llmgw.providers import build_providers
from llmgw.providers.base import (
    Provider,
    UpstreamAuthenticationFailed,
    upstream_error_message,
)

PROVIDER_KEY = "sk-provider-secret-0123456789"
INVALID_KEY_DETAIL = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def provider(session: aiohttp.ClientSession, kind: str, name: str) -> Provider:
    config = ProviderConfig(
        name=name,
        kind=kind,
        base_url="http://127.0.0.1:9/v1",
        api_key=Secret(PROVIDER_KEY),
    )
    return build_providers((config,), session)[name]


def gemini_error(status: str, details: list[object]) -> dict[str, object]:
    return {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": status,
            "details": details,
        }
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"error": {"message": "Incorrect API key", "type": "x"}}',
            "Incorrect API key",
            id="openai",
        ),
        pytest.param(b'{"error": "unauthorized"}', "unauthorized", id="string-error"),
        pytest.param(
            b'{"message": "The security token is invalid."}',
            "The security token is invalid.",
            id="top-level-message",
        ),
        pytest.param(
            b'{"error": {"message": "  "}, "message": "fallback"}',
            "fallback",
            id="blank-error-message",
        ),
        pytest.param(
            b"<html>401 Unauthorized</html>\n",
            "<html>401 Unauthorized</html>",
            id="html",
        ),
        pytest.param(b"", "", id="empty"),
    ],
)
def test_upstream_error_message_shapes(body: bytes, expected: str) -> None:
    assert upstream_error_message(body) == expected


def test_upstream_error_message_truncated() -> None:
    body = orjson.dumps({"error": {"message": "x" * 2000}})
    message = upstream_error_message(body)
    assert message == "x" * 500 + "..."


def test_authentication_failed_fields() -> None:
    error = UpstreamAuthenticationFailed("rejected", provider_status=403)
    assert isinstance(error, UpstreamError)
    assert error.http_status == 502
    assert error.kind == "upstream_http_403"
    assert error.blame is Blame.UPSTREAM
    assert error.retryable is False
    assert error.headers == {"x-should-retry": "false"}
    assert error.openai_body() == {
        "error": {
            "message": "rejected",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_authentication_failed",
        }
    }


@pytest.mark.parametrize(
    "kind", ["openai", "openai-compatible", "mistral", "anthropic", "gemini"]
)
@pytest.mark.parametrize(
    ("status", "rejected"),
    [(401, True), (403, True), (400, False), (429, False), (500, False)],
)
async def test_rejects_credentials_by_status(
    session: aiohttp.ClientSession, kind: str, status: int, rejected: bool
) -> None:
    upstream = provider(session, kind, "up")
    assert upstream.rejects_credentials(status, b"{}") is rejected


async def test_gemini_invalid_key_400_rejects_credentials(
    session: aiohttp.ClientSession,
) -> None:
    gemini = provider(session, "gemini", "g")
    body = gemini_error("INVALID_ARGUMENT", [INVALID_KEY_DETAIL])
    assert gemini.rejects_credentials(400, orjson.dumps(body))
    # streamGenerateContent wraps its error in a one-item array.
    assert gemini.rejects_credentials(400, orjson.dumps([body]))


@pytest.mark.parametrize(
    "details",
    [
        pytest.param([], id="no-details"),
        pytest.param(
            [{**INVALID_KEY_DETAIL, "reason": "BAD_REQUEST"}], id="other-reason"
        ),
        pytest.param(
            [{**INVALID_KEY_DETAIL, "@type": "type.googleapis.com/google.rpc.Help"}],
            id="other-type",
        ),
        pytest.param(["API_KEY_INVALID"], id="not-an-object"),
    ],
)
async def test_gemini_other_400_is_client_error(
    session: aiohttp.ClientSession, details: list[object]
) -> None:
    gemini = provider(session, "gemini", "g")
    body = orjson.dumps(gemini_error("INVALID_ARGUMENT", details))
    assert not gemini.rejects_credentials(400, body)


async def test_gemini_invalid_key_reason_needs_400(
    session: aiohttp.ClientSession,
) -> None:
    gemini = provider(session, "gemini", "g")
    body = orjson.dumps(gemini_error("INVALID_ARGUMENT", [INVALID_KEY_DETAIL]))
    assert not gemini.rejects_credentials(500, body)
    assert not provider(session, "openai", "o").rejects_credentials(400, body)


@pytest.mark.parametrize(
    ("kind", "body", "quoted"),
    [
        pytest.param(
            "openai",
            b'{"error": {"message": "Incorrect API key provided: <redacted>"}}',
            "Incorrect API key provided: <redacted>",
            id="openai",
        ),
        pytest.param(
            "anthropic",
            b'{"type": "error", "error": {"type": "authentication_error",'
            b' "message": "invalid x-api-key"}}',
            "invalid x-api-key",
            id="anthropic",
        ),
        pytest.param("openai-compatible", b"Unauthorized", "Unauthorized", id="text"),
    ],
)
async def test_credentials_error_message(
    session: aiohttp.ClientSession, kind: str, body: bytes, quoted: str
) -> None:
    upstream = provider(session, kind, "team-llm")
    error = upstream.credentials_error(401, body, {})
    assert error.provider_status == 401
    assert error.message.startswith(
        "Provider 'team-llm' rejected the gateway's credentials with HTTP 401."
    )
    assert error.message.endswith(f" Provider message: {quoted}")


async def test_credentials_error_without_body(session: aiohttp.ClientSession) -> None:
    error = provider(session, "openai", "o").credentials_error(403, b"", {})
    assert "HTTP 403" in error.message
    assert "Provider message" not in error.message
    assert error.message.endswith("the credentials of provider 'o'.")
