"""Settle: return the unused reservation, append the usage record, log the
request line."""

from __future__ import annotations

from decimal import Decimal

import structlog

from llmgw.errors import GatewayError
from llmgw.gateway import Gateway
from llmgw.ledger.record import UsageRecord
from llmgw.limits.spec import Price
from llmgw.pipeline.admit import settle_reservation
from llmgw.pipeline.context import RequestContext
from llmgw.pipeline.pricing import cost_micro_usd, to_micro_usd, to_usd

log = structlog.get_logger("llmgw.request")


async def _local_input_count(gateway: Gateway, ctx: RequestContext) -> int:
    if ctx.input_tokens is not None:
        return ctx.input_tokens
    if ctx.prompt is None or ctx.deployment is None:
        return 0
    deployment = ctx.deployment
    if ctx.route == "/v1/embeddings":
        count = await gateway.tokens.count_embedding_input_async(
            ctx.prompt, deployment.upstream_model, deployment.route.tokenizer
        )
    else:
        count = await gateway.tokens.count_chat_async(
            ctx.prompt, deployment.upstream_model, deployment.route.tokenizer
        )
    ctx.input_tokens = count.tokens
    ctx.input_estimated = count.estimated
    return count.tokens


async def build_record(gateway: Gateway, ctx: RequestContext) -> UsageRecord:
    record, _ = await _record_and_cost(gateway, ctx)
    return record


async def _record_and_cost(
    gateway: Gateway, ctx: RequestContext
) -> tuple[UsageRecord, Decimal]:
    """Build the ledger record and its exact cost in micro-dollars."""
    input_tokens = output_tokens = cached = reasoning = cache_write = 0
    estimated = False
    if ctx.usage is not None:
        input_tokens = ctx.usage.input_tokens
        output_tokens = ctx.usage.output_tokens
        cached = ctx.usage.cached_tokens
        reasoning = ctx.usage.reasoning_tokens
        cache_write = ctx.usage.cache_write_tokens
    elif ctx.forwarded and ctx.status < 400:
        # The upstream reported nothing (or the stream was cut before it
        # did): bill the local prompt count and the chunk-by-chunk tally.
        # An upstream error status bills nothing, as providers do.
        input_tokens = await _local_input_count(gateway, ctx)
        output_tokens = ctx.output_tally
        estimated = True

    principal = ctx.principal
    deployment = ctx.deployment
    cost = cost_micro_usd(
        _price(ctx),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cache_write_tokens=cache_write,
    )
    record = UsageRecord(
        request_id=ctx.request_id,
        ts=ctx.ts,
        route=ctx.route,
        key_name=principal.key_name if principal else None,
        tenant=principal.tenant if principal else None,
        team=principal.team if principal else None,
        model=ctx.model,
        provider=deployment.provider.name if deployment else None,
        upstream_model=deployment.upstream_model if deployment else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cache_write_tokens=cache_write,
        estimated=estimated,
        status=ctx.status,
        error_type=ctx.error_type,
        latency_ms=round(ctx.latency_ms, 3),
        ttft_ms=round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None,
        streamed=ctx.streamed,
        client_aborted=ctx.client_aborted,
        cost_usd=to_usd(cost),
    )
    return record, cost


def _price(ctx: RequestContext) -> Price | None:
    """Return the price of the requested model, as admission used it."""
    if ctx.reservation is not None and ctx.reservation.price is not None:
        return ctx.reservation.price
    if ctx.deployment is not None:
        return ctx.deployment.route.price
    return None


async def settle(gateway: Gateway, ctx: RequestContext) -> None:
    """Settle the request's limits and append its ledger record, once.

    This runs on every path, errors, timeouts and client aborts included, so
    every lease is released here. If the back end is down, the leases and
    reservations expire at their deadline, and the record goes straight to
    the sink.
    """
    record, cost = await _record_and_cost(gateway, ctx)
    reservation = ctx.reservation
    items = settle_reservation(
        reservation,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cost_micro_usd=to_micro_usd(cost),
    )
    try:
        if reservation is not None and items:
            await gateway.backend.settle(
                items, record, request_id=reservation.request_id
            )
        else:
            await gateway.backend.append_record(record)
    except GatewayError as exc:
        log.warning(
            "ledger_stream_write_failed", request_id=ctx.request_id, error=exc.message
        )
        await _write_to_sink(gateway, record)
    _log_request(gateway, ctx, record)


async def _write_to_sink(gateway: Gateway, record: UsageRecord) -> None:
    """Write straight to the durable sink when the back end is down.

    The sink ignores a repeated request id, so a record that did reach the
    stream after all is not doubled. The unused reservation is not returned
    in this case, which errs towards limiting.
    """
    try:
        await gateway.sink.write([record])
    except Exception as exc:  # any sink failure: the log line is the last copy
        # NOTE: with both the back end and the sink down the record exists
        # only in this log line, because there is no local spool to replay.
        log.error(
            "ledger_write_failed",
            request_id=record.request_id,
            error=repr(exc),
            record=record.to_fields(),
        )


def _log_request(gateway: Gateway, ctx: RequestContext, record: UsageRecord) -> None:
    fields: dict[str, object] = {
        "request_id": record.request_id,
        "route": record.route,
        "model": record.model,
        "provider": record.provider,
        "key_name": record.key_name,
        "tenant": record.tenant,
        "status": record.status,
        "error_type": record.error_type,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "estimated": record.estimated,
        "streamed": record.streamed,
        "client_aborted": record.client_aborted,
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
    }
    if gateway.config.logging.log_prompts and ctx.prompt is not None:
        fields["prompt"] = ctx.prompt
    log.info("request", **fields)
