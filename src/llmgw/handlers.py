"""Route handlers: each runs the pipeline phases in order for one route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase

import orjson
import structlog
from aiohttp import web

from llmgw.errors import (
    GatewayError,
    InputTooLong,
    InternalError,
    ModelNotFound,
    ShuttingDown,
)
from llmgw.gateway import Gateway
from llmgw.limits.periods import calendar_for
from llmgw.pipeline.admit import admit, lease_seconds_for, needs_token_estimate
from llmgw.pipeline.authenticate import Principal
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.forward import forward_chat, forward_embeddings
from llmgw.pipeline.ingress import parse_json, read_body
from llmgw.pipeline.policy import (
    Caps,
    Deployment,
    apply_output_cap,
    check_allowed,
    effective_caps,
    is_allowed,
    is_glob,
)
from llmgw.pipeline.settle import settle
from llmgw.protocols.openai import parse_chat_request, parse_embeddings_request
from llmgw.providers.base import unsupported_embeddings

GATEWAY = web.AppKey("gateway", Gateway)
# Set by the server's middleware before any handler runs.
REQUEST_ID = web.RequestKey("request_id", str)

log = structlog.get_logger("llmgw.handlers")


@asynccontextmanager
async def request_scope(gateway: Gateway, ctx: RequestContext) -> AsyncIterator[None]:
    """Record the outcome of the request in the ledger once.

    Settlement runs as its own task so that a client disconnect, which
    cancels the handler, cannot cut it short.
    """
    structlog.contextvars.bind_contextvars(request_id=ctx.request_id)
    task = asyncio.current_task()
    if task is not None:
        gateway.in_flight[task] = ctx
    try:
        yield
    except GatewayError as exc:
        ctx.fail(exc)
        if ctx.reservation is not None:
            # The client's limits after admission, on errors as on successes;
            # an upstream's own x-ratelimit-* headers take precedence.
            exc.headers = {**ctx.reservation.headers, **exc.headers}
        raise
    except asyncio.CancelledError:
        if ctx.stream_complete:
            raise
        if ctx.cut_by_shutdown and not ctx.streamed and task is not None:
            # The gateway itself cancelled this request just before aiohttp
            # would close the connection, so the client gets a 503 response.
            task.uncancel()
            error = ShuttingDown(
                "The gateway is shutting down and stopped this request; retry it."
            )
            ctx.fail(error)
            raise error from None
        if gateway.stopping:
            ctx.error_type = "server_shutdown"
            if not ctx.streamed:
                ctx.status = 503
        else:
            ctx.client_aborted = True
            if not ctx.streamed:
                ctx.status = 499  # nginx's "client closed request"
                ctx.error_type = "client_closed_request"
        raise
    except Exception as exc:
        ctx.fail(InternalError("internal error"))
        log.exception("unhandled_error", error=repr(exc))
        raise
    finally:
        if task is not None:
            gateway.in_flight.pop(task, None)
        structlog.contextvars.unbind_contextvars("request_id")
        # Not awaited: the response goes out without waiting for the settle
        # round trip, and shutdown waits for every settlement still running.
        gateway.spawn(settle(gateway, ctx))


async def _read_json(request: web.Request, gateway: Gateway) -> object:
    server = gateway.config.server
    body = await read_body(request, server.max_body_bytes, server.read_timeout)
    return parse_json(body)


def _resolve(
    gateway: Gateway, ctx: RequestContext, principal: Principal, model: str
) -> Deployment:
    ctx.model = model
    deployment = gateway.router.resolve(model)
    ctx.deployment = deployment
    check_allowed(principal, model)
    return deployment


async def _count_chat_input(
    gateway: Gateway,
    ctx: RequestContext,
    deployment: Deployment,
    caps: Caps,
    tools: object,
) -> None:
    count = await gateway.tokens.count_chat_async(
        ctx.prompt,
        deployment.upstream_model,
        deployment.route.tokenizer,
        tools=tools if isinstance(tools, list) else None,
    )
    ctx.input_tokens = count.tokens
    ctx.input_estimated = count.estimated
    cap = caps.max_input_tokens
    if cap is not None and count.tokens > cap:
        raise InputTooLong(
            f"This model's maximum input length is {cap} tokens. However, your "
            f"messages resulted in {count.tokens} tokens. Please reduce the length "
            "of the messages.",
            param="messages",
        )


async def _admit(
    gateway: Gateway,
    ctx: RequestContext,
    principal: Principal,
    deployment: Deployment,
    output_tokens: int,
) -> None:
    """Reserve the estimated input and ``output_tokens`` against every limit."""
    config = gateway.config
    ctx.reservation = await admit(
        gateway.backend,
        principal,
        ctx.input_tokens or 0,
        output_tokens,
        model=ctx.model,
        price=deployment.route.price,
        request_id=ctx.request_id,
        lease_seconds=lease_seconds_for(deployment.provider.timeouts),
        calendar=calendar_for(config.policies.timezone),
        fail_open=config.redis is not None
        and config.redis.on_unavailable == "fail_open",
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ctx = RequestContext(route="/v1/chat/completions", request_id=request[REQUEST_ID])
    async with request_scope(gateway, ctx):
        principal = await gateway.auth.authenticate(request.headers)
        ctx.principal = principal
        chat = parse_chat_request(await _read_json(request, gateway))
        ctx.prompt = chat.messages
        deployment = _resolve(gateway, ctx, principal, chat.model)
        caps = effective_caps(gateway.config, deployment, principal)

        body = chat.body
        output_limit = apply_output_cap(
            body, caps.max_output_tokens, deployment.provider.kind
        )
        if caps.max_input_tokens is not None or needs_token_estimate(principal):
            await _count_chat_input(gateway, ctx, deployment, caps, body.get("tools"))
        output_reserve = (output_limit or 0) * (chat.n or 1)
        await _admit(gateway, ctx, principal, deployment, output_reserve)

        provider = gateway.provider(deployment.provider.name)
        encoding, _ = gateway.tokens.encoding_for(
            deployment.upstream_model, deployment.route.tokenizer
        )
        return await forward_chat(
            request, ctx, provider, chat, deployment.upstream_model, encoding
        )


async def embeddings(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    ctx = RequestContext(route="/v1/embeddings", request_id=request[REQUEST_ID])
    async with request_scope(gateway, ctx):
        principal = await gateway.auth.authenticate(request.headers)
        ctx.principal = principal
        parsed = parse_embeddings_request(await _read_json(request, gateway))
        ctx.prompt = parsed.input
        deployment = _resolve(gateway, ctx, principal, parsed.model)
        provider = gateway.provider(deployment.provider.name)
        if not provider.supports_embeddings:
            raise unsupported_embeddings(parsed.model, provider)
        caps = effective_caps(gateway.config, deployment, principal)

        if caps.max_input_tokens is not None or needs_token_estimate(principal):
            count = await gateway.tokens.count_embedding_input_async(
                parsed.input, deployment.upstream_model, deployment.route.tokenizer
            )
            ctx.input_tokens = count.tokens
            ctx.input_estimated = count.estimated
            cap = caps.max_input_tokens
            if cap is not None and count.tokens > cap:
                raise InputTooLong(
                    f"This model's maximum input length is {cap} tokens. However, "
                    f"your input resulted in {count.tokens} tokens.",
                    param="input",
                )
        await _admit(gateway, ctx, principal, deployment, 0)

        return await forward_embeddings(
            request,
            ctx,
            provider,
            parsed,
            deployment.upstream_model,
            gateway.tokens,
            deployment.route.tokenizer,
        )


def _model_object(name: str, owner: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def _glob_route_models(
    gateway: Gateway, principal: Principal, seen: set[str]
) -> list[dict[str, object]]:
    """Models behind glob routes, as their providers list them."""
    found: list[dict[str, object]] = []
    for pattern, provider_name in gateway.router.glob_routes():
        try:
            upstream_ids = await gateway.provider(provider_name).list_models()
        except GatewayError as exc:
            log.warning("model_list_failed", provider=provider_name, error=exc.message)
            continue
        for name in upstream_ids:
            if name in seen or not fnmatchcase(name, pattern):
                continue
            # Only names that route here: an earlier route may claim them.
            if gateway.router.resolve(name).provider.name != provider_name:
                continue
            if is_allowed(principal, name):
                seen.add(name)
                found.append(_model_object(name, provider_name))
    return found


async def _check_listed(gateway: Gateway, deployment: Deployment) -> None:
    """Raise 404 for a glob-routed name its provider does not list.

    When the provider cannot list its models, the name is taken as valid.
    """
    provider = deployment.provider.name
    try:
        listed = await gateway.provider(provider).list_models()
    except GatewayError as exc:
        log.warning("model_list_failed", provider=provider, error=exc.message)
        return
    if listed and deployment.public_name not in listed:
        raise ModelNotFound(
            f"The model `{deployment.public_name}` does not exist or you do not "
            "have access to it.",
            param="model",
        )


async def list_models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    principal = await gateway.auth.authenticate(request.headers)
    data = []
    seen: set[str] = set()
    for name in gateway.router.listed_names():
        if is_allowed(principal, name):
            deployment = gateway.router.resolve(name)
            data.append(_model_object(name, deployment.provider.name))
            seen.add(name)
    data += await _glob_route_models(gateway, principal, seen)
    return web.json_response(
        {"object": "list", "data": data}, dumps=lambda obj: orjson.dumps(obj).decode()
    )


async def retrieve_model(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    principal = await gateway.auth.authenticate(request.headers)
    name = request.match_info["model"]
    deployment = gateway.router.resolve(name)
    check_allowed(principal, name)
    if is_glob(deployment.route.name):
        await _check_listed(gateway, deployment)
    return web.json_response(
        _model_object(name, deployment.provider.name),
        dumps=lambda obj: orjson.dumps(obj).decode(),
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    problems: dict[str, str] = {}
    try:
        await gateway.backend.ping()
    except GatewayError as exc:
        problems["backend"] = exc.message
    try:
        await gateway.sink.ping()
    except Exception as exc:  # any sink failure means not ready; reported, not raised
        problems["ledger"] = f"{type(exc).__name__}: {exc}"
    if problems:
        return web.json_response(
            {"status": "unavailable", "problems": problems}, status=503
        )
    return web.json_response({"status": "ready"})
