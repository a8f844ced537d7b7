"""Admit: reserve a request and its tokens against every bucket that applies.

The reservation is the estimated input plus the output limit; settlement
later returns what the request did not use, or takes what it used beyond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmgw.errors import RateLimited
from llmgw.limits.base import Admission, Backend, Bucket, BucketState, Charge
from llmgw.pipeline.authenticate import Principal


@dataclass(frozen=True)
class Reservation:
    charges: tuple[Charge, ...]
    headers: dict[str, str]

    @property
    def tokens(self) -> float:
        return sum(c.amount for c in self.charges if c.bucket.kind == "tokens")


def key_buckets(principal: Principal) -> tuple[Bucket | None, Bucket | None]:
    """Return the key's request and token buckets, None where no limit is set."""
    limits = principal.limits
    requests = tokens = None
    if limits.requests_per_minute is not None:
        requests = Bucket.per_minute(
            f"key:{principal.key_name}:requests", "requests", limits.requests_per_minute
        )
    if limits.tokens_per_minute is not None:
        tokens = Bucket.per_minute(
            f"key:{principal.key_name}:tokens", "tokens", limits.tokens_per_minute
        )
    return requests, tokens


def needs_token_estimate(principal: Principal) -> bool:
    return principal.limits.tokens_per_minute is not None


def format_duration(seconds: float) -> str:
    """Format like OpenAI's x-ratelimit-reset-* headers: 12ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(states: Sequence[BucketState]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for state in states:
        kind = state.bucket.kind
        headers[f"x-ratelimit-limit-{kind}"] = str(int(state.bucket.capacity))
        headers[f"x-ratelimit-remaining-{kind}"] = str(
            max(0, math.floor(state.remaining))
        )
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(
            max(0.0, state.reset_seconds)
        )
    return headers


def _rejection(admission: Admission, charges: Sequence[Charge]) -> RateLimited:
    bucket = admission.short_bucket
    if admission.retry_after is None:
        # Blame the bucket the request can never fit, not merely the first
        # one that happened to be short.
        bucket = next(
            (c.bucket for c in charges if c.amount > c.bucket.capacity), bucket
        )
    kind = bucket.kind if bucket else "requests"
    headers = ratelimit_headers(admission.states)
    limit = int(bucket.capacity) if bucket else 0
    requested = next((c.amount for c in charges if c.bucket == bucket), 0.0)
    if admission.retry_after is None:
        # The request alone is larger than the bucket: waiting cannot help.
        headers["x-should-retry"] = "false"
        return RateLimited(
            f"Request too large: it needs {requested:g} {kind} but the key's limit "
            f"is {limit} {kind} per minute. Lower max_tokens or shorten the prompt.",
            limit_kind=kind,
            retry_after=None,
            headers=headers,
        )
    retry_after = admission.retry_after
    headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return RateLimited(
        f"Rate limit reached on {kind} per minute: limit {limit}, requested "
        f"{requested:g}. Please try again in {format_duration(retry_after)}.",
        limit_kind=kind,
        retry_after=retry_after,
        headers=headers,
    )


async def admit(
    backend: Backend, principal: Principal, estimated_tokens: int
) -> Reservation:
    """Reserve one request and ``estimated_tokens`` tokens, or raise 429."""
    requests, tokens = key_buckets(principal)
    charges: list[Charge] = []
    if requests is not None:
        charges.append(Charge(requests, 1.0))
    if tokens is not None:
        charges.append(Charge(tokens, float(estimated_tokens)))
    if not charges:
        return Reservation(charges=(), headers={})

    admission = await backend.admit(charges)
    if not admission.admitted:
        raise _rejection(admission, charges)
    return Reservation(
        charges=tuple(charges), headers=ratelimit_headers(admission.states)
    )


def refunds(reservation: Reservation | None, used_tokens: int) -> list[Charge]:
    """Return the charges settlement gives back: unused reserved tokens,
    negative when the request used more than it reserved. Requests are
    never returned."""
    if reservation is None:
        return []
    return [
        Charge(c.bucket, c.amount - used_tokens)
        for c in reservation.charges
        if c.bucket.kind == "tokens" and c.amount != used_tokens
    ]
