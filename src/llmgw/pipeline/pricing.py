"""Cost in US dollars of a request, from the model's price and its usage.

Prices are US dollars per million tokens, so one token at price ``p`` costs
exactly ``p`` micro-dollars. Costs are computed in ``Decimal`` micro-dollars,
so no float rounding piles up. Budgets in Redis count whole micro-dollars:
the cost of a request is rounded half up there, and its reservation is
rounded up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from llmgw.limits.spec import Price
from llmgw.protocols.openai import Usage

MICRO_USD_PER_USD = 1_000_000


@dataclass(frozen=True)
class _Rates:
    """A price in micro-dollars per token, with every fallback resolved."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal


@lru_cache(maxsize=256)
def _rates(price: Price) -> _Rates:
    # str() first, so that 2.5 becomes Decimal("2.5") and not its binary value.
    input_rate = Decimal(str(price.input))
    output_rate = Decimal(str(price.output))

    def rate(value: float | None, fallback: Decimal) -> Decimal:
        return fallback if value is None else Decimal(str(value))

    return _Rates(
        input=input_rate,
        output=output_rate,
        cache_read=rate(price.cache_read, input_rate),
        cache_write=rate(price.cache_write, input_rate),
        reasoning=rate(price.reasoning, output_rate),
    )


def cost_micro_usd(
    price: Price | None,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> Decimal:
    """Return the exact cost in micro-dollars; 0 without a price.

    ``input_tokens`` includes the cached and the cache-write tokens and
    ``output_tokens`` includes the reasoning tokens, as in the OpenAI API.
    Each part is billed once at its own price: cached tokens at
    ``cache_read``, cache writes at ``cache_write``, the rest of the input at
    ``input``, reasoning at ``reasoning`` and the rest of the output at
    ``output``. Counts that exceed their total are clamped to it.
    """
    if price is None:
        return Decimal(0)
    rates = _rates(price)
    cached = min(cached_tokens, input_tokens)
    written = min(cache_write_tokens, input_tokens - cached)
    plain_input = input_tokens - cached - written
    reasoning = min(reasoning_tokens, output_tokens)
    plain_output = output_tokens - reasoning
    return (
        plain_input * rates.input
        + cached * rates.cache_read
        + written * rates.cache_write
        + plain_output * rates.output
        + reasoning * rates.reasoning
    )


def usage_cost_micro_usd(price: Price | None, usage: Usage) -> Decimal:
    """Return the exact cost of an upstream's usage report in micro-dollars."""
    return cost_micro_usd(
        price,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def reservation_micro_usd(
    price: Price | None, input_tokens: int, output_tokens: int
) -> int:
    """Return the cost to reserve for a request, in whole micro-dollars.

    Every input token is priced at the highest input-side price and every
    output token at the higher of the output and reasoning prices. The
    reservation then covers the actual cost whenever the request uses at
    most ``input_tokens`` and ``output_tokens``, however the tokens split
    into cached, cache-write and reasoning tokens.
    """
    if price is None:
        return 0
    rates = _rates(price)
    input_rate = max(rates.input, rates.cache_read, rates.cache_write)
    output_rate = max(rates.output, rates.reasoning)
    return math.ceil(input_tokens * input_rate + output_tokens * output_rate)


def to_micro_usd(cost: Decimal) -> int:
    """Round an exact cost to whole micro-dollars, half up."""
    return int(cost.to_integral_value(rounding=ROUND_HALF_UP))


def to_usd(cost: Decimal) -> float:
    """Convert an exact cost in micro-dollars to US dollars for the ledger."""
    return float(cost / MICRO_USD_PER_USD)


def budget_micro_usd(budget_usd: float) -> int:
    """Convert a configured budget in US dollars to whole micro-dollars."""
    return to_micro_usd(Decimal(str(budget_usd)) * MICRO_USD_PER_USD)
