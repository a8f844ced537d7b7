"""Provider kinds in the configuration, the embedded default, and building
the provider objects from them (no network involved)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from llmgw.config import (
    ConfigError,
    ModelConfig,
    ProviderConfig,
    Secret,
    default_config,
    parse_config,
)
from llmgw.providers import PROVIDER_CLASSES, build_providers
from llmgw.providers.azure import AzureOpenAIProvider
from llmgw.providers.bedrock import BedrockProvider

AWS_VARIABLES = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in AWS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def providers(entry: str) -> tuple[ProviderConfig, ...]:
    return parse_config(f"providers:\n  - {entry}\n", "test.yaml", {}).providers


def config_error(entry: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        providers(entry)
    return caught.value


@pytest.mark.parametrize(
    ("kind", "base_url"),
    [
        ("anthropic", "https://api.anthropic.com"),
        ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
        ("mistral", "https://api.mistral.ai/v1"),
        ("bedrock", ""),
    ],
)
def test_kind_default_base_url(kind: str, base_url: str) -> None:
    [provider] = providers(f"{{name: p, kind: {kind}}}")
    assert provider.kind == kind
    assert provider.base_url == base_url


@pytest.mark.parametrize("kind", ["vllm", "ollama", "azure-openai"])
def test_self_hosted_kind_needs_base_url(kind: str) -> None:
    error = config_error(f"{{name: p, kind: {kind}, api_version: '2024-10-21'}}")
    assert error.path == "providers[0].base_url"
    assert error.reason == (
        "missing required key (this provider kind has no default base_url)"
    )


def test_every_supported_kind_has_a_class() -> None:
    from llmgw.config import SUPPORTED_PROVIDER_KINDS

    assert set(SUPPORTED_PROVIDER_KINDS) == set(PROVIDER_CLASSES)


@pytest.mark.parametrize(
    ("entry", "key", "kinds"),
    [
        ("{name: p, kind: anthropic, region: us-east-1}", "region", "bedrock"),
        ("{name: p, kind: gemini, api_version: v1}", "api_version", "anthropic or"),
        (
            "{name: p, kind: openai, aws_secret_access_key: x}",
            "aws_secret_access_key",
            "bedrock",
        ),
        ("{name: p, kind: bedrock, url_form: v1}", "url_form", "azure-openai"),
    ],
)
def test_key_of_another_kind_rejected(entry: str, key: str, kinds: str) -> None:
    error = config_error(entry)
    assert error.path == f"providers[0].{key}"
    assert error.reason.startswith("applies only to providers of kind")
    assert kinds in error.reason
    assert error.line == 2


def test_azure_deployment_form_needs_api_version() -> None:
    error = config_error("{name: p, kind: azure-openai, base_url: 'https://x.test'}")
    assert error.path == "providers[0].api_version"
    assert "url_form: v1" in error.reason

    [v1] = providers(
        "{name: p, kind: azure-openai, base_url: 'https://x.test', url_form: v1}"
    )
    assert v1.url_form == "v1"
    assert v1.api_version is None


def test_azure_url_form_must_be_known() -> None:
    error = config_error(
        "{name: p, kind: azure-openai, base_url: 'https://x.test', url_form: v2}"
    )
    assert error.path == "providers[0].url_form"
    assert error.reason == "must be one of deployment, v1, got string 'v2'"


def test_bedrock_secrets_hidden() -> None:
    [provider] = providers(
        "{name: p, kind: bedrock, region: eu-west-1, aws_access_key_id: AKIDX,"
        " aws_secret_access_key: top-secret-key, aws_session_token: secret-token}"
    )
    assert provider.region == "eu-west-1"
    assert provider.aws_access_key_id == "AKIDX"
    assert provider.aws_secret_access_key == Secret("top-secret-key")
    assert "top-secret-key" not in repr(provider)
    assert "secret-token" not in repr(provider)


def test_default_config_adds_anthropic_and_gemini() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant",
        "GEMINI_API_KEY": "g-key",
        "OPENAI_API_KEY": "sk-openai",
    }
    result = default_config(environ)
    config = result.config

    assert [(p.name, p.kind) for p in config.providers] == [
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
        ("openai", "openai"),
    ]
    assert config.providers[0].api_key == Secret("sk-ant")
    assert config.providers[0].base_url == "https://api.anthropic.com"
    # The specific routes come first: "*" would take every name.
    assert config.models == (
        ModelConfig(name="claude-*", provider="anthropic"),
        ModelConfig(name="gemini-*", provider="gemini"),
        ModelConfig(name="*", provider="openai"),
    )
    assert result.skipped_variables == ()


def test_default_config_anthropic_alone() -> None:
    config = default_config({"ANTHROPIC_API_KEY": "sk-ant"}).config
    assert [p.name for p in config.providers] == ["anthropic"]
    assert [m.name for m in config.models] == ["claude-*"]


async def test_bedrock_region_and_credentials_from_environment(
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    no_aws_environment: None,
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    config = ProviderConfig(name="b", kind="bedrock", base_url="")
    [(name, provider)] = build_providers((config,), session).items()

    assert name == "b"
    assert isinstance(provider, BedrockProvider)
    assert provider.region == "us-west-2"
    call = provider.signed_request(
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/m/converse",
        b"{}",
        "application/json",
    )
    assert call.headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDENV/"
    )
    assert "/us-west-2/bedrock/aws4_request" in call.headers["Authorization"]
    assert "X-Amz-Security-Token" not in call.headers
    assert provider.scrub(b"echo env-secret") == b"echo <redacted>"


async def test_bedrock_without_region_fails_at_start(
    session: aiohttp.ClientSession, no_aws_environment: None
) -> None:
    config = ProviderConfig(name="b", kind="bedrock", base_url="")
    with pytest.raises(ValueError, match="has no AWS region"):
        build_providers((config,), session)


async def test_bedrock_without_credentials_fails_at_start(
    session: aiohttp.ClientSession, no_aws_environment: None
) -> None:
    config = ProviderConfig(name="b", kind="bedrock", base_url="", region="us-east-1")
    with pytest.raises(ValueError, match="has no AWS credentials"):
        build_providers((config,), session)


async def test_bedrock_api_key_is_bearer_token(
    session: aiohttp.ClientSession, no_aws_environment: None
) -> None:
    config = ProviderConfig(
        name="b",
        kind="bedrock",
        base_url="",
        region="us-east-1",
        api_key=Secret("bedrock-api-key"),
    )
    provider = build_providers((config,), session)["b"]
    assert isinstance(provider, BedrockProvider)
    call = provider.signed_request("https://x.test/model/m/converse", b"{}", "a/b")
    assert call.headers["Authorization"] == "Bearer bedrock-api-key"


async def test_bedrock_region_must_look_like_one(
    session: aiohttp.ClientSession, no_aws_environment: None
) -> None:
    config = ProviderConfig(
        name="b",
        kind="bedrock",
        base_url="",
        region="evil.example.com/x",
        api_key=Secret("k"),
    )
    with pytest.raises(ValueError, match="invalid AWS region"):
        build_providers((config,), session)


async def test_azure_provider_checks_its_settings(
    session: aiohttp.ClientSession,
) -> None:
    missing_version = ProviderConfig(
        name="a", kind="azure-openai", base_url="https://r.openai.azure.com"
    )
    with pytest.raises(ValueError, match="need api_version"):
        build_providers((missing_version,), session)

    bad_endpoint = ProviderConfig(
        name="a", kind="azure-openai", base_url="https://r.test/?x=1", url_form="v1"
    )
    with pytest.raises(ValueError, match="remove the query"):
        build_providers((bad_endpoint,), session)

    good = ProviderConfig(
        name="a",
        kind="azure-openai",
        base_url="https://r.openai.azure.com/openai",
        api_version="2024-10-21",
    )
    provider = build_providers((good,), session)["a"]
    assert isinstance(provider, AzureOpenAIProvider)
    assert provider.operation_url("chat/completions", "dep") == (
        "https://r.openai.azure.com/openai/deployments/dep/chat/completions"
        "?api-version=2024-10-21"
    )
