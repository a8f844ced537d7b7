"""Admission of requests against scopes on the memory back end: limits built
from the scopes, rejections, headers and settlement items."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from llmgw.config import Timeouts
from llmgw.errors import BudgetExceeded, QuotaExceeded, RateLimited
from llmgw.limits.base import Charge, Commit, Lease, Reserve
from llmgw.limits.memory import MemoryBackend
from llmgw.limits.periods import Calendar
from llmgw.limits.spec import LimitSpec, Price, Scope
from llmgw.pipeline.admit import (
    Estimate,
    Reservation,
    admit,
    format_duration,
    lease_seconds_for,
    needs_token_estimate,
    plan_limits,
    settle_reservation,
)
from llmgw.pipeline.authenticate import Principal

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()
PRICE = Price(input=2.5, output=10)


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def principal(*scopes: Scope) -> Principal:
    return Principal(
        key_name="ci",
        tenant="acme",
        models=None,
        max_input_tokens=None,
        max_output_tokens=None,
        scopes=scopes,
    )


def key_scope(**limits: object) -> Scope:
    return Scope(kind="key", id="ci", tenant="acme", limits=LimitSpec(**limits))  # type: ignore[arg-type]


def tenant_scope(**limits: object) -> Scope:
    return Scope(kind="tenant", id="acme", tenant="acme", limits=LimitSpec(**limits))  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def calendar(clock: FakeClock) -> Calendar:
    return Calendar(UTC, clock=clock)


def test_plan_keys_carry_tenant_tag(calendar: Calendar) -> None:
    caller = principal(
        key_scope(requests_per_minute=10, max_concurrent_requests=2),
        tenant_scope(token_quotas=(("month", 1000),), budgets_usd=(("day", 5.0),)),
    )
    planned = plan_limits(caller, "gpt-4o", Estimate(10, 5, 75), calendar)
    keys = [(type(r.item).__name__, r.item) for r in planned]

    assert [name for name, _ in keys] == ["Charge", "Lease", "Reserve", "Reserve"]
    charge, lease, quota, budget = (r.item for r in planned)
    assert isinstance(charge, Charge)
    assert charge.bucket.key == "key:ci:requests"
    assert charge.bucket.tag == "t:acme"
    assert isinstance(lease, Lease)
    assert lease.limit.key == "concurrency:key:ci"
    assert isinstance(quota, Reserve)
    assert quota.limit.key == "quota:tenant:acme:month:2026-12"
    assert quota.amount == 15
    assert isinstance(budget, Reserve)
    assert budget.limit.key == "budget:tenant:acme:day:2026-12-04"
    assert budget.limit.limit == 5_000_000
    assert budget.amount == 75
    assert {r.item.limit.tag for r in planned[1:]} == {"t:acme"}  # type: ignore[union-attr]


def test_plan_key_without_tenant_tags_key() -> None:
    scope = Scope(
        kind="key", id="solo:{x}", tenant=None, limits=LimitSpec(requests_per_minute=1)
    )
    (reserved,) = plan_limits(principal(scope), None, Estimate(0, 0, 0), Calendar())

    assert isinstance(reserved.item, Charge)
    assert reserved.item.bucket.tag == "k:solo%3A%7Bx%7D"
    assert reserved.item.bucket.key == "key:solo%3A%7Bx%7D:requests"


def test_plan_token_counts() -> None:
    amounts = {}
    for counts in ("input", "output", "total"):
        caller = principal(
            key_scope(tokens_per_minute=1000, tokens_per_minute_counts=counts)
        )
        (reserved,) = plan_limits(caller, None, Estimate(30, 20, 0), Calendar())
        assert isinstance(reserved.item, Charge)
        amounts[counts] = reserved.item.amount

    assert amounts == {"input": 30, "output": 20, "total": 50}


def test_needs_token_estimate() -> None:
    assert not needs_token_estimate(principal(key_scope(requests_per_minute=5)))
    assert not needs_token_estimate(
        principal(key_scope(tokens_per_minute=5, tokens_per_minute_counts="output"))
    )
    assert needs_token_estimate(principal(key_scope(tokens_per_minute=5)))
    assert needs_token_estimate(principal(tenant_scope(budgets_usd=(("day", 1),))))
    model_quota = LimitSpec(token_quotas=(("day", 100),))
    assert needs_token_estimate(
        principal(tenant_scope(models=(("gpt-*", model_quota),)))
    )


async def test_admit_without_limits_reserves_nothing(backend: MemoryBackend) -> None:
    reservation = await admit(backend, principal(key_scope()), 10, 5, price=PRICE)

    assert reservation.items == ()
    assert reservation.headers == {}
    assert reservation.cost_micro_usd == 10 * 2.5 + 5 * 10


async def test_request_rejection_names_scope(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(key_scope(), tenant_scope(requests_per_minute=1))
    await admit(backend, caller, 1, calendar=calendar)

    with pytest.raises(RateLimited) as rejected:
        await admit(backend, caller, 1, calendar=calendar)

    error = rejected.value
    assert type(error) is RateLimited
    assert error.code == "rate_limit_exceeded"
    assert error.limit_kind == "requests"
    assert error.message.startswith(
        "Rate limit exceeded for tenant acme: 1 request per minute."
    )
    assert error.retry_after == pytest.approx(60)
    assert error.headers["Retry-After"] == "60"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.openai_body()["error"]["type"] == "requests"


async def test_token_rejection_message(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(key_scope(tokens_per_minute=100))
    await admit(backend, caller, 80, calendar=calendar)

    with pytest.raises(RateLimited) as rejected:
        await admit(backend, caller, 20, 10, calendar=calendar)

    # 10 tokens short at 100 per minute: 6 s.
    assert rejected.value.message == (
        "Rate limit exceeded for key ci: 100 tokens per minute. The request "
        "needs 30 tokens and 20 tokens remain. Please try again in 6s."
    )
    assert rejected.value.limit_kind == "tokens"
    assert rejected.value.headers["retry-after-ms"] == "6000"


async def test_quota_rejection_message(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(tenant_scope(token_quotas=(("day", 10_000_000),)))
    await admit(backend, caller, 9_999_990, calendar=calendar, request_id="r1")

    with pytest.raises(QuotaExceeded) as rejected:
        await admit(backend, caller, 11, calendar=calendar, request_id="r2")

    error = rejected.value
    assert error.message.startswith(
        "Token quota exceeded for tenant acme: 10000000 tokens per day. "
        "The request needs 11 tokens and 10 tokens remain."
    )
    assert "2026-12-05T00:00:00+00:00" in error.message
    assert error.kind == "quota_exceeded"
    assert error.openai_body()["error"]["type"] == "quota_exceeded"
    assert error.openai_body()["error"]["code"] == "quota_exceeded"
    # Twelve hours until midnight UTC, on the back end's clock.
    assert error.headers["Retry-After"] == str(12 * 3600)


async def test_rejection_singular_amounts(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(tenant_scope(token_quotas=(("day", 1),)))

    with pytest.raises(QuotaExceeded) as rejected:
        await admit(backend, caller, 2, calendar=calendar)

    assert rejected.value.message.startswith(
        "Request too large for tenant acme: it needs 2 tokens but the limit is "
        "1 token per day."
    )

    caller = principal(
        key_scope(tokens_per_minute=12, tokens_per_minute_counts="input")
    )
    await admit(backend, caller, 11, calendar=calendar)
    with pytest.raises(RateLimited) as short:
        await admit(backend, caller, 2, calendar=calendar)

    assert short.value.message.startswith(
        "Rate limit exceeded for key ci: 12 input tokens per minute. The request "
        "needs 2 tokens and 1 token remains."
    )


async def test_budget_rejection_message(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(tenant_scope(budgets_usd=(("month", 0.01),)))
    # 1000 input tokens at 2.5 $/M and 500 output at 10 $/M: 7500 µ$.
    await admit(
        backend, caller, 1000, 500, price=PRICE, calendar=calendar, request_id="a"
    )

    with pytest.raises(BudgetExceeded) as rejected:
        await admit(
            backend, caller, 1000, 500, price=PRICE, calendar=calendar, request_id="b"
        )

    error = rejected.value
    assert error.message.startswith(
        "Budget exceeded for tenant acme: 0.01 USD per month. "
        "The request needs 0.0075 USD and 0.0025 USD remain."
    )
    assert error.code == "budget_exceeded"
    assert error.limit_kind == "budget"


async def test_concurrency_rejection_retries_soon(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(key_scope(max_concurrent_requests=1))
    await admit(backend, caller, 0, calendar=calendar, request_id="r1")

    with pytest.raises(RateLimited) as rejected:
        await admit(backend, caller, 0, calendar=calendar, request_id="r2")

    assert rejected.value.limit_kind == "concurrency"
    assert rejected.value.headers["Retry-After"] == "1"
    assert rejected.value.message.startswith(
        "Concurrency limit exceeded for key ci: 1 request in flight."
    )


async def test_model_rejection_names_model(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    per_model = LimitSpec(requests_per_minute=1)
    caller = principal(tenant_scope(models=(("gpt-4o*", per_model),)))
    await admit(backend, caller, 0, model="gpt-4o", calendar=calendar)
    other = await admit(backend, caller, 0, model="claude-3", calendar=calendar)

    with pytest.raises(RateLimited) as rejected:
        await admit(backend, caller, 0, model="gpt-4o-mini", calendar=calendar)

    assert other.items == ()
    assert "for tenant acme, model gpt-4o*: 1 request per minute" in (
        rejected.value.message
    )


async def test_request_larger_than_limit_never_retries(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(key_scope(requests_per_minute=1, tokens_per_minute=100))
    await admit(backend, caller, 10, calendar=calendar)

    # The request bucket is empty now, but the token charge can never fit,
    # so the error must blame the token bucket and rule out a retry.
    with pytest.raises(RateLimited) as rejected:
        await admit(backend, caller, 500, calendar=calendar)

    error = rejected.value
    assert error.limit_kind == "tokens"
    assert error.retry_after is None
    assert error.headers["x-should-retry"] == "false"
    assert "Retry-After" not in error.headers
    assert "500 tokens" in error.message
    assert error.status == 429


async def test_headers_from_tightest_bucket(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(
        key_scope(requests_per_minute=100, tokens_per_minute=1000),
        tenant_scope(requests_per_minute=5, tokens_per_minute=100_000),
    )

    reservation = await admit(backend, caller, 40, calendar=calendar)

    assert reservation.headers == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "960",
        # 40 tokens at 1000 per minute refill in 2.4 s, rounded up.
        "x-ratelimit-reset-tokens": "3s",
    }


async def test_all_or_nothing_across_scopes(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(
        key_scope(requests_per_minute=10, max_concurrent_requests=5),
        tenant_scope(token_quotas=(("day", 100),)),
    )
    await admit(backend, caller, 90, calendar=calendar, request_id="big")

    with pytest.raises(QuotaExceeded):
        await admit(backend, caller, 20, calendar=calendar, request_id="r2")

    level = backend.level("key:ci:requests")
    assert level is not None
    assert level.tokens == 9
    assert backend.leases("concurrency:key:ci") == 1


def test_settlement_items_follow_usage() -> None:
    caller = principal(
        key_scope(
            requests_per_minute=10,
            tokens_per_minute=1000,
            max_concurrent_requests=3,
            token_quotas=(("day", 1000),),
            budgets_usd=(("day", 1),),
        )
    )
    planned = plan_limits(caller, None, Estimate(100, 50, 750), Calendar())
    reservation = Reservation("r1", tuple(planned), {})
    items = settle_reservation(
        reservation, input_tokens=80, output_tokens=90, cost_micro_usd=1100
    )

    tokens, lease, quota, budget = items
    assert isinstance(tokens, Charge)
    assert tokens.amount == 150 - 170
    assert isinstance(lease, Lease)
    assert isinstance(quota, Commit)
    assert quota.used == 170
    assert isinstance(budget, Commit)
    assert budget.used == 1100
    assert (
        settle_reservation(None, input_tokens=1, output_tokens=1, cost_micro_usd=1)
        == []
    )


async def test_cancelled_admission_is_released(
    backend: MemoryBackend, calendar: Calendar
) -> None:
    caller = principal(key_scope(max_concurrent_requests=1))
    task = asyncio.ensure_future(admit(backend, caller, 0, calendar=calendar))
    # Cancel before the task runs its first step: the admission still runs
    # inside the shield, then is released.
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)

    assert backend.leases("concurrency:key:ci") == 0


def test_lease_seconds_cover_timeouts() -> None:
    assert lease_seconds_for(Timeouts(first_byte=120, total=600)) == 780


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.0123, "13ms", id="ms"),
        pytest.param(61, "1m1s", id="minutes"),
        pytest.param(12 * 3600 + 1, "12h0m1s", id="hours"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
