"""Authentication, model routing, caps and rate-limit headers, without I/O."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from llmgw.config import (
    Config,
    KeyConfig,
    KeyLimits,
    ModelConfig,
    PolicyConfig,
    ProviderConfig,
)
from llmgw.errors import (
    AuthenticationFailed,
    ModelNotAllowed,
    ModelNotFound,
    RateLimited,
)
from llmgw.limits.base import Bucket, BucketState
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.spec import LimitSpec, Scope
from llmgw.pipeline.admit import admit, format_duration, ratelimit_headers
from llmgw.pipeline.authenticate import (
    KeyStore,
    Principal,
    authenticate,
    credential_from_headers,
)
from llmgw.pipeline.policy import (
    Router,
    apply_output_cap,
    check_allowed,
    effective_caps,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CONFIG = Config(
    providers=(
        ProviderConfig(name="p", kind="openai-compatible", base_url="http://x/v1"),
    ),
    models=(
        ModelConfig(
            name="small", provider="p", upstream_model="small-v2", max_output_tokens=50
        ),
        ModelConfig(name="gpt-*", provider="p"),
    ),
    keys=(
        KeyConfig(
            name="dev",
            key_sha256=sha("sk-dev"),
            models=("small",),
            max_output_tokens=30,
        ),
        KeyConfig(
            name="all",
            key_sha256=sha("sk-all"),
            limits=KeyLimits(requests_per_minute=5),
        ),
    ),
    policies=PolicyConfig(max_output_tokens=100, max_input_tokens=1000),
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Authorization": "Bearer sk-a"}, "sk-a", id="bearer"),
        pytest.param(
            {"Authorization": "bearer   sk-a "}, "sk-a", id="bearer-lowercase"
        ),
        pytest.param({"x-api-key": "sk-b"}, "sk-b", id="x-api-key"),
        pytest.param({"Authorization": "Basic abc"}, None, id="basic-ignored"),
        pytest.param({"Authorization": "Bearer "}, None, id="empty-bearer"),
        pytest.param({}, None, id="none"),
    ],
)
def test_credential_from_headers(headers: dict[str, str], expected: str | None) -> None:
    assert credential_from_headers(headers) == expected


def test_authenticate_by_hash() -> None:
    keys = KeyStore(CONFIG.keys)
    assert authenticate({"Authorization": "Bearer sk-dev"}, keys).key_name == "dev"
    with pytest.raises(AuthenticationFailed) as missing:
        authenticate({}, keys)
    assert "Missing API key" in missing.value.message
    with pytest.raises(AuthenticationFailed) as wrong:
        authenticate({"x-api-key": "sk-devx"}, keys)
    assert "sk-devx" not in wrong.value.message


def test_router_exact_then_glob() -> None:
    router = Router(CONFIG)
    small = router.resolve("small")
    assert small.upstream_model == "small-v2"
    gpt = router.resolve("gpt-4o-mini")
    assert gpt.upstream_model == "gpt-4o-mini"
    assert router.listed_names() == ["small"]
    with pytest.raises(ModelNotFound) as missing:
        router.resolve("claude")
    assert missing.value.param == "model"


def test_allow_list_globs() -> None:
    keys = KeyStore(CONFIG.keys)
    dev = keys.lookup("sk-dev")
    everyone = keys.lookup("sk-all")
    assert dev is not None and everyone is not None
    check_allowed(dev, "small")
    check_allowed(everyone, "gpt-4o")
    with pytest.raises(ModelNotAllowed):
        check_allowed(dev, "gpt-4o")


def test_smallest_cap_applies() -> None:
    keys = KeyStore(CONFIG.keys)
    dev = keys.lookup("sk-dev")
    everyone = keys.lookup("sk-all")
    assert dev is not None and everyone is not None
    router = Router(CONFIG)
    assert effective_caps(CONFIG, router.resolve("small"), dev).max_output_tokens == 30
    assert (
        effective_caps(CONFIG, router.resolve("small"), everyone).max_output_tokens
        == 50
    )
    caps = effective_caps(CONFIG, router.resolve("gpt-4o"), everyone)
    assert caps.max_output_tokens == 100
    assert caps.max_input_tokens == 1000


@pytest.mark.parametrize(
    ("body", "cap", "kind", "after", "limit"),
    [
        pytest.param(
            {}, 50, "openai-compatible", {"max_tokens": 50}, 50, id="set-max-tokens"
        ),
        pytest.param(
            {}, 50, "openai", {"max_completion_tokens": 50}, 50, id="set-completion"
        ),
        pytest.param(
            {"max_tokens": 80}, 50, "openai", {"max_tokens": 50}, 50, id="clamp"
        ),
        pytest.param(
            {"max_tokens": 8}, 50, "openai", {"max_tokens": 8}, 8, id="keep-smaller"
        ),
        pytest.param(
            {"max_tokens": 80, "max_completion_tokens": 60},
            50,
            "openai",
            {"max_tokens": 50, "max_completion_tokens": 50},
            50,
            id="clamp-both",
        ),
        pytest.param(
            {"max_tokens": 80}, None, "openai", {"max_tokens": 80}, 80, id="no-cap"
        ),
        pytest.param({}, None, "openai", {}, None, id="nothing"),
    ],
)
def test_apply_output_cap(
    body: dict[str, Any],
    cap: int | None,
    kind: str,
    after: dict[str, Any],
    limit: int | None,
) -> None:
    assert apply_output_cap(body, cap, kind) == limit
    assert body == after


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0123, "13ms", id="ms"),
        pytest.param(1.0, "1s", id="one-second"),
        pytest.param(12.2, "13s", id="rounds-up"),
        pytest.param(360, "6m0s", id="minutes"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_ratelimit_headers_per_kind() -> None:
    requests = Bucket.per_minute("k:r", "requests", 60)
    tokens = Bucket.per_minute("k:t", "tokens", 1000)
    headers = ratelimit_headers(
        [BucketState(requests, 59.6, 0.4), BucketState(tokens, -5.0, 63.0)]
    )
    assert headers == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "400ms",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m3s",
    }


async def test_too_large_request_blames_token_bucket() -> None:
    principal = Principal(
        key_name="both",
        tenant=None,
        models=None,
        max_input_tokens=None,
        max_output_tokens=None,
        scopes=(
            Scope(
                "key",
                "both",
                None,
                LimitSpec(requests_per_minute=1, tokens_per_minute=100),
            ),
        ),
    )
    backend = MemoryBackend()
    await admit(backend, principal, 10)

    # The request bucket is empty now, but the token charge could never fit:
    # the error must name tokens and say that retrying will not help.
    with pytest.raises(RateLimited) as rejected:
        await admit(backend, principal, 500)
    assert rejected.value.limit_kind == "tokens"
    assert rejected.value.retry_after is None
    assert rejected.value.headers["x-should-retry"] == "false"
    assert "500 tokens" in rejected.value.message
