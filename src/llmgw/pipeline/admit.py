"""Admit: reserve a request against every limit of every scope that applies.

The limits are those of each scope of the principal (key, team, tenant) and
the per-model limits of those scopes whose glob matches the requested model.
Each becomes one admission item:

- requests per minute: one request from a token bucket;
- tokens per minute: the estimated input, the output limit or both
  (``tokens_per_minute_counts``) from a token bucket;
- max concurrent requests: a lease that settlement releases;
- token quotas: the estimated input plus the output limit, reserved on the
  current day, week or month;
- USD budgets: the cost of those tokens at the model's price, reserved the
  same way, in micro-dollars.

The back end takes every item or none in one step. Settlement later gives
back what the request did not use, or takes what it used beyond, and
replaces the reservations with the real usage.
"""

from __future__ import annotations

import asyncio
import functools
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Literal

import structlog

from llmgw.config import Timeouts
from llmgw.errors import BackendUnavailable, BudgetExceeded, QuotaExceeded, RateLimited
from llmgw.limits.base import (
    DEFAULT_LEASE_SECONDS,
    Admission,
    AdmitItem,
    Backend,
    Bucket,
    BucketState,
    Charge,
    Commit,
    ConcurrencyLimit,
    Lease,
    PeriodLimit,
    Reserve,
    SettleItem,
    Shortfall,
)
from llmgw.limits.buckets import item_limit
from llmgw.limits.periods import Calendar
from llmgw.limits.spec import LimitSpec, Price, Scope
from llmgw.pipeline.authenticate import Principal
from llmgw.pipeline.pricing import (
    MICRO_USD_PER_USD,
    budget_micro_usd,
    reservation_micro_usd,
)

log = structlog.get_logger("llmgw.admit")

# Extra time a lease lasts beyond the upstream timeouts. Settlement runs
# after the response, and a settlement delayed by a slow Redis must still
# find the lease in place.
LEASE_MARGIN_SECONDS = 60.0

# What a limit counts, which decides how settlement corrects it.
Measure = Literal["requests", "input", "output", "total", "cost", "slot"]

_UTC_CALENDAR = Calendar(UTC)


@dataclass(frozen=True)
class Reserved:
    """One admission item and what it means, for settlement and messages.

    ``scope`` reads like "tenant acme" or "key ci, model gpt-4o" and
    ``limit_text`` like "600 requests per minute".
    """

    item: AdmitItem
    measure: Measure
    scope: str
    limit_text: str


@dataclass(frozen=True)
class Reservation:
    """The items admission took for one request, until settlement corrects them.

    ``input_tokens`` and ``output_tokens`` are the estimate and the output
    limit that were reserved, and ``cost_micro_usd`` their cost at ``price``.
    """

    request_id: str
    items: tuple[Reserved, ...]
    headers: dict[str, str]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0
    price: Price | None = None


def lease_seconds_for(timeouts: Timeouts) -> float:
    """Return a lease time that outlives every request to an upstream.

    A request runs at most the first-byte timeout (which includes the
    connect) plus the total timeout of the body or stream.
    """
    return timeouts.first_byte + timeouts.total + LEASE_MARGIN_SECONDS


def _escape(part: str) -> str:
    """Escape the characters that separate or tag parts of a Redis key."""
    return (
        part.replace("%", "%25")
        .replace(":", "%3A")
        .replace("{", "%7B")
        .replace("}", "%7D")
    )


def scope_tag(scope: Scope) -> str:
    """Return the Redis Cluster hash tag of a scope's keys.

    Every scope under a tenant gets the tenant's name, so the keys of one
    request share a slot. A key without a tenant gets its own id.
    """
    if scope.tenant is not None:
        return f"t:{_escape(scope.tenant)}"
    return f"k:{_escape(scope.id)}"


def _applicable_specs(
    scope: Scope, model: str | None
) -> list[tuple[LimitSpec, str | None]]:
    """Return the scope's own limits and those of each model glob that matches."""
    specs: list[tuple[LimitSpec, str | None]] = [(scope.limits, None)]
    if model is not None:
        for pattern, spec in scope.limits.models:
            if fnmatchcase(model, pattern):
                specs.append((spec, pattern))
    return specs


def _plural(amount: float, noun: str) -> str:
    """Return ``noun`` for an amount of exactly 1, else its plural in -s."""
    return noun if amount == 1 else f"{noun}s"


def _format_usd(micro_usd: int | Decimal) -> str:
    value = Decimal(micro_usd) / MICRO_USD_PER_USD
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True)
class Estimate:
    """The amounts a request reserves: input estimate, output limit and cost."""

    input_tokens: int
    output_tokens: int
    cost_micro_usd: int


def _spec_items(
    spec: LimitSpec,
    base: str,
    tag: str,
    label: str,
    estimate: Estimate,
    calendar: Calendar,
) -> list[Reserved]:
    """Build the admission items of one scope's (or one model's) limits."""
    items: list[Reserved] = []
    if spec.requests_per_minute is not None:
        limit = spec.requests_per_minute
        bucket = Bucket.per_minute(f"{base}:requests", "requests", limit, tag)
        text = f"{limit} {_plural(limit, 'request')} per minute"
        items.append(Reserved(Charge(bucket, 1.0), "requests", label, text))
    if spec.tokens_per_minute is not None:
        limit = spec.tokens_per_minute
        counts = spec.tokens_per_minute_counts
        amount = {
            "input": estimate.input_tokens,
            "output": estimate.output_tokens,
            "total": estimate.input_tokens + estimate.output_tokens,
        }[counts]
        bucket = Bucket.per_minute(f"{base}:tokens", "tokens", limit, tag)
        tokens_text = f"{limit} {_plural(limit, 'token')}"
        if counts != "total":
            tokens_text = f"{limit} {counts} {_plural(limit, 'token')}"
        text = f"{tokens_text} per minute"
        items.append(Reserved(Charge(bucket, float(amount)), counts, label, text))
    if spec.max_concurrent_requests is not None:
        limit = spec.max_concurrent_requests
        concurrency = ConcurrencyLimit(f"concurrency:{base}", limit, tag)
        text = f"{limit} {_plural(limit, 'request')} in flight"
        items.append(Reserved(Lease(concurrency), "slot", label, text))
    for period, tokens in spec.token_quotas:
        window = calendar.window(period)
        quota = PeriodLimit(
            f"quota:{base}:{period}:{window.label}",
            "tokens",
            tokens,
            window.ends_at,
            tag,
        )
        amount = estimate.input_tokens + estimate.output_tokens
        text = f"{tokens} {_plural(tokens, 'token')} per {period}"
        items.append(Reserved(Reserve(quota, amount), "total", label, text))
    for period, usd in spec.budgets_usd:
        window = calendar.window(period)
        budget = PeriodLimit(
            f"budget:{base}:{period}:{window.label}",
            "micro_usd",
            budget_micro_usd(usd),
            window.ends_at,
            tag,
        )
        text = f"{_format_usd(budget.limit)} USD per {period}"
        items.append(
            Reserved(Reserve(budget, estimate.cost_micro_usd), "cost", label, text)
        )
    return items


def plan_limits(
    principal: Principal,
    model: str | None,
    estimate: Estimate,
    calendar: Calendar,
) -> list[Reserved]:
    """Build one admission item for every limit that applies to the request."""
    items: list[Reserved] = []
    for scope in principal.scopes:
        tag = scope_tag(scope)
        scope_base = f"{scope.kind}:{_escape(scope.id)}"
        scope_label = f"{scope.kind} {scope.id}"
        for spec, pattern in _applicable_specs(scope, model):
            base, label = scope_base, scope_label
            if pattern is not None:
                base = f"{scope_base}:model:{_escape(pattern)}"
                label = f"{scope_label}, model {pattern}"
            items += _spec_items(spec, base, tag, label, estimate, calendar)
    return items


def _spec_needs_input(spec: LimitSpec) -> bool:
    counts_input = (
        spec.tokens_per_minute is not None and spec.tokens_per_minute_counts != "output"
    )
    if counts_input or spec.token_quotas or spec.budgets_usd:
        return True
    return any(_spec_needs_input(model_spec) for _, model_spec in spec.models)


def needs_token_estimate(principal: Principal) -> bool:
    """Return whether a limit of the principal counts input tokens or cost.

    Per-model limits count whatever the model, so the prompt may be counted
    for a request that none of them ends up charging.
    """
    return any(_spec_needs_input(scope.limits) for scope in principal.scopes)


def format_duration(seconds: float) -> str:
    """Format like OpenAI's x-ratelimit-reset-* headers: 12ms, 1s, 6m0s, 2h0m0s."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(states: Sequence[BucketState]) -> dict[str, str]:
    """Build the x-ratelimit-* headers from the tightest bucket of each kind.

    The tightest bucket is the one with the fewest tokens left, because it
    is the one that rejects the next request first.
    """
    tightest: dict[str, BucketState] = {}
    for state in states:
        kind = state.bucket.kind
        current = tightest.get(kind)
        if current is None or state.remaining < current.remaining:
            tightest[kind] = state
    headers: dict[str, str] = {}
    for kind, state in tightest.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(int(state.bucket.capacity))
        headers[f"x-ratelimit-remaining-{kind}"] = str(
            max(0, math.floor(state.remaining))
        )
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(
            max(0.0, state.reset_seconds)
        )
    return headers


def _describe_amount(reserved: Reserved, amount: float) -> str:
    if reserved.measure == "cost":
        return f"{_format_usd(Decimal(amount))} USD"
    if reserved.measure == "requests":
        return f"{amount:g} {_plural(amount, 'request')}"
    if reserved.measure == "slot":
        return f"{amount:g} {_plural(amount, 'request')} in flight"
    # A bucket refills continuously, so only whole tokens are shown.
    tokens = math.floor(amount)
    return f"{tokens} {_plural(tokens, 'token')}"


def _reset_time(reserved: Reserved, calendar: Calendar) -> str:
    item = reserved.item
    assert isinstance(item, Reserve)
    return datetime.fromtimestamp(item.limit.ends_at, calendar.timezone).isoformat()


def _rejection(
    admission: Admission, shortfall: Shortfall, reserved: Reserved, calendar: Calendar
) -> RateLimited:
    headers = ratelimit_headers(admission.states)
    needed = _describe_amount(reserved, shortfall.requested)
    left = _describe_amount(reserved, max(0.0, shortfall.remaining))
    # The verb agrees with the amount as shown, which rounds tokens down.
    remain = "remains" if left.split(" ", 1)[0] == "1" else "remain"
    item = reserved.item
    if isinstance(item, Charge):
        limit_kind = item.bucket.kind
        error_class: type[RateLimited] = RateLimited
        title = f"Rate limit exceeded for {reserved.scope}"
    elif isinstance(item, Lease):
        limit_kind = "concurrency"
        error_class = RateLimited
        title = f"Concurrency limit exceeded for {reserved.scope}"
    elif item.limit.unit == "tokens":
        limit_kind = "quota"
        error_class = QuotaExceeded
        title = f"Token quota exceeded for {reserved.scope}"
    else:
        limit_kind = "budget"
        error_class = BudgetExceeded
        title = f"Budget exceeded for {reserved.scope}"

    if shortfall.retry_after is None:
        # The request alone is larger than the limit: waiting cannot help.
        headers["x-should-retry"] = "false"
        message = (
            f"Request too large for {reserved.scope}: it needs {needed} but the "
            f"limit is {reserved.limit_text}. Lower max_tokens or shorten the "
            "prompt."
        )
        return error_class(
            message, limit_kind=limit_kind, retry_after=None, headers=headers
        )

    retry_after = shortfall.retry_after
    headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    if isinstance(item, Reserve):
        message = (
            f"{title}: {reserved.limit_text}. The request needs {needed} and "
            f"{left} {remain}. The {limit_kind} resets at "
            f"{_reset_time(reserved, calendar)}."
        )
    elif isinstance(item, Lease) or reserved.measure == "requests":
        message = (
            f"{title}: {reserved.limit_text}. Please try again in "
            f"{format_duration(retry_after)}."
        )
    else:
        message = (
            f"{title}: {reserved.limit_text}. The request needs {needed} and "
            f"{left} {remain}. Please try again in {format_duration(retry_after)}."
        )
    return error_class(
        message, limit_kind=limit_kind, retry_after=retry_after, headers=headers
    )


# Releases of admissions whose caller was cancelled, kept so the tasks are
# not garbage-collected before they finish.
_orphan_releases: set[asyncio.Task[None]] = set()


def _release_if_admitted(
    backend: Backend,
    planned: list[Reserved],
    request_id: str,
    call: asyncio.Future[Admission],
) -> None:
    """Release what an admission took after its caller was cancelled."""
    if call.cancelled():
        return
    error = call.exception()
    if error is not None:
        # The script may or may not have run. Either way its leases and
        # reservations expire at their deadline.
        log.warning(
            "admission_failed_after_cancel", request_id=request_id, error=repr(error)
        )
        return
    if not call.result().admitted:
        return
    items = settlement_items(planned, input_tokens=0, output_tokens=0, cost_micro_usd=0)
    task = asyncio.get_running_loop().create_task(
        backend.settle(items, None, request_id=request_id)
    )
    _orphan_releases.add(task)
    task.add_done_callback(functools.partial(_orphan_release_done, request_id))


def _orphan_release_done(request_id: str, task: asyncio.Task[None]) -> None:
    _orphan_releases.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "admission_release_failed",
            request_id=request_id,
            error=repr(task.exception()),
        )


async def _admit_shielded(
    backend: Backend,
    planned: list[Reserved],
    request_id: str,
    lease_seconds: float,
) -> Admission:
    """Run the admission so that cancelling the caller cannot leak it.

    A client that disconnects cancels the handler, possibly after Redis ran
    the script but before the reply arrived, when no reservation has been
    stored yet for settlement to release. The admission then runs to its
    end, and what it took is released at once.
    """
    call = asyncio.ensure_future(
        backend.admit(
            [reserved.item for reserved in planned],
            request_id=request_id,
            lease_seconds=lease_seconds,
        )
    )
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        call.add_done_callback(
            functools.partial(_release_if_admitted, backend, planned, request_id)
        )
        raise


async def admit(
    backend: Backend,
    principal: Principal,
    input_tokens: int,
    output_tokens: int = 0,
    *,
    model: str | None = None,
    price: Price | None = None,
    request_id: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    calendar: Calendar = _UTC_CALENDAR,
    fail_open: bool = False,
) -> Reservation:
    """Reserve the request against every limit that applies, or raise 429.

    ``input_tokens`` is the estimated input and ``output_tokens`` the output
    limit (0 when nothing limits the output). ``price`` is the model's price
    for budgets, and without one the request costs nothing against them.
    Leases and
    reservations are held under ``request_id`` (a new id when None) for at
    most ``lease_seconds``. ``calendar`` picks the current quota and budget
    periods. When the back end is unreachable, ``fail_open`` admits the
    request with no limits instead of raising ``BackendUnavailable``.
    """
    request_id = request_id or uuid.uuid4().hex
    cost = reservation_micro_usd(price, input_tokens, output_tokens)
    estimate = Estimate(input_tokens, output_tokens, cost)
    planned = plan_limits(principal, model, estimate, calendar)
    if not planned:
        return Reservation(
            request_id=request_id,
            items=(),
            headers={},
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micro_usd=cost,
            price=price,
        )

    try:
        admission = await _admit_shielded(backend, planned, request_id, lease_seconds)
    except BackendUnavailable as exc:
        if not fail_open:
            raise
        log.warning("admission_failed_open", request_id=request_id, error=exc.message)
        return Reservation(
            request_id=request_id,
            items=(),
            headers={},
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micro_usd=cost,
            price=price,
        )

    if not admission.admitted:
        shortfall = admission.shortfall
        assert shortfall is not None
        culprit = next(
            reserved
            for reserved in planned
            if item_limit(reserved.item) == shortfall.limit
        )
        raise _rejection(admission, shortfall, culprit, calendar)
    return Reservation(
        request_id=request_id,
        items=tuple(planned),
        headers=ratelimit_headers(admission.states),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_micro_usd=cost,
        price=price,
    )


def settlement_items(
    planned: Sequence[Reserved],
    *,
    input_tokens: int,
    output_tokens: int,
    cost_micro_usd: int,
) -> list[SettleItem]:
    """Return what settles the reserved items given the real usage.

    Token buckets get back what was reserved beyond the usage (a negative
    amount when the request used more). Requests are never given back.
    Leases are released, and each quota or budget reservation is replaced
    by the tokens or micro-dollars used.
    """
    used_by_measure = {
        "input": input_tokens,
        "output": output_tokens,
        "total": input_tokens + output_tokens,
        "cost": cost_micro_usd,
    }
    items: list[SettleItem] = []
    for reserved in planned:
        item = reserved.item
        if isinstance(item, Charge):
            if reserved.measure == "requests":
                continue
            refund = item.amount - used_by_measure[reserved.measure]
            if refund != 0:
                items.append(Charge(item.bucket, refund))
        elif isinstance(item, Lease):
            items.append(item)
        else:
            items.append(Commit(item.limit, used_by_measure[reserved.measure]))
    return items


def settle_reservation(
    reservation: Reservation | None,
    *,
    input_tokens: int,
    output_tokens: int,
    cost_micro_usd: int,
) -> list[SettleItem]:
    """Return the settlement items of a reservation, or none without one."""
    if reservation is None:
        return []
    return settlement_items(
        reservation.items,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_micro_usd=cost_micro_usd,
    )
