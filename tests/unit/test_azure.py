"""Azure OpenAI URL, header and body building."""

from __future__ import annotations

import pytest

from llmgw.protocols.azure import (
    DEPLOYMENT_OPERATIONS,
    auth_headers,
    deployment_url,
    prepare_body,
    v1_url,
)

ENDPOINT = "https://my-resource.openai.azure.com"


@pytest.mark.parametrize(
    ("endpoint", "operation", "url"),
    [
        (
            ENDPOINT,
            "chat/completions",
            f"{ENDPOINT}/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            ENDPOINT + "/",
            "embeddings",
            f"{ENDPOINT}/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21",
        ),
        (
            ENDPOINT + "/openai/",
            "chat/completions",
            f"{ENDPOINT}/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
        (
            "http://127.0.0.1:8081",
            "chat/completions",
            "http://127.0.0.1:8081/openai/deployments/gpt-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
    ],
    ids=["plain", "trailing-slash", "openai-suffix", "loopback-mock"],
)
def test_deployment_url(endpoint: str, operation: str, url: str) -> None:
    assert (
        deployment_url(endpoint, "gpt-4o", operation, api_version="2024-10-21") == url
    )


def test_deployment_url_encodes_parts() -> None:
    url = deployment_url(
        ENDPOINT, "my deploy/1", "chat/completions", api_version="2025-01-01-preview"
    )
    assert url == (
        f"{ENDPOINT}/openai/deployments/my%20deploy%2F1/chat/completions"
        "?api-version=2025-01-01-preview"
    )


def test_deployment_operations_match_sdk() -> None:
    assert {
        "chat/completions",
        "completions",
        "embeddings",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
        "images/generations",
        "images/edits",
    } == DEPLOYMENT_OPERATIONS


@pytest.mark.parametrize(
    ("endpoint", "deployment", "operation", "api_version", "message"),
    [
        (ENDPOINT, "d", "models", "2024-10-21", "not served per deployment"),
        (ENDPOINT, "", "chat/completions", "2024-10-21", "deployment name is empty"),
        (ENDPOINT, "d", "chat/completions", "", "api-version is empty"),
        ("my-resource.openai.azure.com", "d", "embeddings", "v", "invalid Azure"),
        ("ftp://host", "d", "embeddings", "v", "invalid Azure"),
        (ENDPOINT + "?x=1", "d", "embeddings", "v", "remove the query"),
    ],
    ids=["operation", "deployment", "version", "no-scheme", "scheme", "query"],
)
def test_deployment_url_rejects(
    endpoint: str, deployment: str, operation: str, api_version: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        deployment_url(endpoint, deployment, operation, api_version=api_version)


def test_v1_url() -> None:
    assert v1_url(ENDPOINT, "chat/completions") == (
        f"{ENDPOINT}/openai/v1/chat/completions"
    )
    assert v1_url(ENDPOINT + "/openai/v1/", "/embeddings") == (
        f"{ENDPOINT}/openai/v1/embeddings"
    )
    assert v1_url(ENDPOINT, "responses", api_version="preview") == (
        f"{ENDPOINT}/openai/v1/responses?api-version=preview"
    )
    with pytest.raises(ValueError, match="operation is empty"):
        v1_url(ENDPOINT, "/")


def test_auth_headers() -> None:
    assert auth_headers(api_key="k1") == {"api-key": "k1"}
    assert auth_headers(entra_token="t1") == {"Authorization": "Bearer t1"}
    with pytest.raises(ValueError, match="exactly one"):
        auth_headers()
    with pytest.raises(ValueError, match="exactly one"):
        auth_headers(api_key="k", entra_token="t")


def test_prepare_body() -> None:
    body = {"model": "gpt-4o", "messages": []}
    assert prepare_body(body, deployment="prod-4o", url_form="deployment") is body
    v1 = prepare_body(body, deployment="prod-4o", url_form="v1")
    assert v1 == {"model": "prod-4o", "messages": []}
    assert body["model"] == "gpt-4o"
