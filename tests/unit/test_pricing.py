"""Cost of requests from prices and usage, in exact micro-dollars."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmgw.limits.spec import Price
from llmgw.pipeline.pricing import (
    budget_micro_usd,
    cost_micro_usd,
    reservation_micro_usd,
    to_micro_usd,
    to_usd,
    usage_cost_micro_usd,
)
from llmgw.protocols.openai import Usage

GPT_4O = Price(input=2.5, output=10, cache_read=1.25, cache_write=3.125, reasoning=10)


def test_cost_plain_tokens() -> None:
    cost = cost_micro_usd(GPT_4O, input_tokens=1000, output_tokens=200)

    # 1000 * 2.5 + 200 * 10 micro-dollars.
    assert cost == Decimal(4500)


def test_cost_splits_cached_and_reasoning() -> None:
    cost = cost_micro_usd(
        Price(input=2, output=8, cache_read=0.5, reasoning=12),
        input_tokens=1000,
        output_tokens=300,
        cached_tokens=400,
        reasoning_tokens=100,
    )

    assert cost == Decimal(600 * 2 + 400 * 0.5 + 200 * 8 + 100 * 12)


def test_cost_cache_writes_at_their_price() -> None:
    cost = cost_micro_usd(
        GPT_4O,
        input_tokens=1000,
        output_tokens=0,
        cached_tokens=100,
        cache_write_tokens=300,
    )

    assert cost == Decimal("600") * Decimal("2.5") + Decimal("100") * Decimal(
        "1.25"
    ) + Decimal("300") * Decimal("3.125")


def test_cost_missing_prices_fall_back() -> None:
    price = Price(input=3, output=15)
    cost = cost_micro_usd(
        price,
        input_tokens=10,
        output_tokens=10,
        cached_tokens=4,
        reasoning_tokens=5,
    )

    assert cost == Decimal(10 * 3 + 10 * 15)


def test_cost_clamps_details_to_totals() -> None:
    cost = cost_micro_usd(
        Price(input=1, output=2, cache_read=0.5, reasoning=4),
        input_tokens=10,
        output_tokens=5,
        cached_tokens=50,
        reasoning_tokens=50,
    )

    assert cost == Decimal(10 * 0.5 + 5 * 4)


def test_cost_without_price_is_zero() -> None:
    assert cost_micro_usd(None, input_tokens=10**6, output_tokens=10**6) == 0
    assert reservation_micro_usd(None, 10**6, 10**6) == 0


def test_cost_has_no_float_drift() -> None:
    price = Price(input=0.1, output=0.2)
    total = sum(
        (cost_micro_usd(price, input_tokens=1, output_tokens=1) for _ in range(1000)),
        Decimal(0),
    )

    assert total == Decimal("300.0")


def test_usage_cost_reads_usage() -> None:
    usage = Usage(
        input_tokens=1000, output_tokens=500, cached_tokens=200, reasoning_tokens=100
    )

    assert usage_cost_micro_usd(GPT_4O, usage) == Decimal(
        800 * 2.5 + 200 * 1.25 + 400 * 10 + 100 * 10
    )


def test_reservation_covers_any_split() -> None:
    # The reservation prices input at the highest input-side price.
    price = Price(input=1, output=2, cache_read=0.5, cache_write=3, reasoning=5)
    reserved = reservation_micro_usd(price, 100, 50)
    worst = cost_micro_usd(
        price,
        input_tokens=100,
        output_tokens=50,
        cache_write_tokens=100,
        reasoning_tokens=50,
    )

    assert reserved == 100 * 3 + 50 * 5
    assert reserved >= worst


def test_reservation_rounds_up() -> None:
    assert reservation_micro_usd(Price(input=0.15, output=0.6), 1, 0) == 1
    assert reservation_micro_usd(Price(input=0.15, output=0.6), 10, 1) == 3


@pytest.mark.parametrize(
    ("cost", "micro"),
    [
        pytest.param(Decimal("0.4"), 0, id="down"),
        pytest.param(Decimal("0.5"), 1, id="half-up"),
        pytest.param(Decimal("2.5"), 3, id="half-up-even"),
        pytest.param(Decimal("7"), 7, id="whole"),
    ],
)
def test_to_micro_usd_rounds_half_up(cost: Decimal, micro: int) -> None:
    assert to_micro_usd(cost) == micro


def test_to_usd_and_budget_conversion() -> None:
    assert to_usd(Decimal(4500)) == 0.0045
    assert budget_micro_usd(50) == 50_000_000
    assert budget_micro_usd(0.1) == 100_000
    assert budget_micro_usd(12.345678) == 12_345_678
