"""Route handlers of the Anthropic Messages API: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``.

Governance is that of ``/v1/chat/completions``: the same authentication,
model routes and allow-lists, output and input caps, admission and ledger
record. ``llmgw.pipeline.messages`` forwards the request, natively to an
Anthropic provider and translated to Chat Completions for any other.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Final

from aiohttp import web

from llmgw.errors import InvalidRequest
from llmgw.handlers import (
    GATEWAY,
    REQUEST_ID,
    _admit,
    _count_chat_input,
    _read_json,
    _resolve,
    request_scope,
)
from llmgw.pipeline.admit import needs_token_estimate
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.messages import (
    MESSAGES_PATH,
    count_tokens_native,
    plan_messages,
)
from llmgw.pipeline.policy import apply_output_cap, check_allowed, effective_caps
from llmgw.protocols.anthropic import (
    MIN_THINKING_BUDGET,
    MessagesRequest,
    parse_messages_request,
)
from llmgw.protocols.anthropic_prompt import prompt_messages

# A count_tokens body has no max_tokens, which parse_messages_request
# requires. This stand-in is above any thinking budget, so the check that
# max_tokens exceeds the budget always passes.
_COUNT_TOKENS_MAX_TOKENS: Final = sys.maxsize


async def messages(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ctx = RequestContext(route=MESSAGES_PATH, request_id=request[REQUEST_ID])
    async with request_scope(gateway, ctx):
        principal = await gateway.auth.authenticate(request.headers)
        ctx.principal = principal
        parsed = parse_messages_request(await _read_json(request, gateway))
        ctx.prompt = prompt_messages(parsed)
        deployment = _resolve(gateway, ctx, principal, parsed.model)
        caps = effective_caps(gateway.config, deployment, principal)
        provider = gateway.provider(deployment.provider.name)

        # Anthropic requires max_tokens, so a limit always applies.
        output_limit = apply_output_cap(
            parsed.body, caps.max_output_tokens, deployment.provider.kind
        )
        assert output_limit is not None
        if output_limit < parsed.max_tokens and deployment.provider.kind == "anthropic":
            _fit_thinking_budget(parsed.body, output_limit)
        parsed = dataclasses.replace(parsed, max_tokens=output_limit)
        forward = plan_messages(
            parsed, provider, deployment.upstream_model, request.headers
        )

        if caps.max_input_tokens is not None or needs_token_estimate(principal):
            await _count_chat_input(gateway, ctx, deployment, caps, parsed.tools)
        await _admit(gateway, ctx, principal, deployment, output_limit)
        return await forward.forward(request, ctx, gateway.tokens, deployment)


def _fit_thinking_budget(body: dict[str, Any], max_tokens: int) -> None:
    """Lower the thinking budget below a capped ``max_tokens``, as Anthropic
    requires, or reject the request when no valid budget fits."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking["budget_tokens"]
    if budget < max_tokens:
        return
    if max_tokens - 1 < MIN_THINKING_BUDGET:
        raise InvalidRequest(
            f"max_tokens: this model or key caps the output at {max_tokens}"
            f" tokens, which leaves no room for a thinking budget of at least"
            f" {MIN_THINKING_BUDGET} tokens. Disable thinking or use another"
            " model.",
            param="max_tokens",
        )
    body["thinking"] = {**thinking, "budget_tokens": max_tokens - 1}


async def count_tokens(request: web.Request) -> web.Response:
    """Return ``{"input_tokens": N}`` for a Messages body.

    An Anthropic provider counts the tokens itself, exactly. For any other
    provider the gateway counts locally, as it does for the input cap. The
    request is authenticated and checked against the key's allow-list, and
    it is neither admitted against limits nor recorded in the ledger,
    because it generates nothing.
    """
    gateway = request.app[GATEWAY]
    principal = await gateway.auth.authenticate(request.headers)
    body = await _read_json(request, gateway)
    parsed = _parse_count_tokens(body)
    deployment = gateway.router.resolve(parsed.model)
    check_allowed(principal, parsed.model)

    if deployment.provider.kind == "anthropic":
        assert isinstance(body, dict)  # parsing checked it
        upstream_body = {**body, "model": deployment.upstream_model}
        provider = gateway.provider(deployment.provider.name)
        return await count_tokens_native(request, provider, upstream_body)

    count = await gateway.tokens.count_chat_async(
        prompt_messages(parsed),
        deployment.upstream_model,
        deployment.route.tokenizer,
        tools=parsed.tools or None,
    )
    return web.json_response({"input_tokens": count.tokens})


def _parse_count_tokens(body: object) -> MessagesRequest:
    if isinstance(body, dict):
        body = {**body, "max_tokens": _COUNT_TOKENS_MAX_TOKENS}
    return parse_messages_request(body)
