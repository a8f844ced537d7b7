"""What limits a scope (a key, a team or a tenant) carries, and prices.

The config parser and the admin API build these; admission turns them into
charges against the back end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Period = Literal["day", "week", "month"]
TokenCount = Literal["input", "output", "total"]
ScopeKind = Literal["key", "team", "tenant"]


@dataclass(frozen=True)
class Price:
    """Prices in US dollars per million tokens.

    A missing cache price falls back to ``input`` and a missing reasoning
    price to ``output``.
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None


@dataclass(frozen=True)
class LimitSpec:
    """The limits of one scope, and of each model within it.

    ``token_quotas`` and ``budgets_usd`` map a calendar period to its
    allowance in tokens and in US dollars. ``models`` pairs a model-name glob
    with the limits that apply to requests for matching models within this
    scope, in addition to the scope's own.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_minute_counts: TokenCount = "total"
    max_concurrent_requests: int | None = None
    token_quotas: tuple[tuple[Period, int], ...] = ()
    budgets_usd: tuple[tuple[Period, float], ...] = ()
    models: tuple[tuple[str, LimitSpec], ...] = field(default=())

    @property
    def is_empty(self) -> bool:
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.max_concurrent_requests is None
            and not self.token_quotas
            and not self.budgets_usd
            and not self.models
        )


@dataclass(frozen=True)
class Scope:
    """One level a request is counted at: its key, its team or its tenant.

    ``id`` is unique within its kind (a key's id, a tenant's name, or
    ``tenant/team`` for a team). ``tenant`` is the tenant the scope belongs
    to, used as the Redis Cluster hash tag so one request's keys share a
    slot; None for a key without a tenant.
    """

    kind: ScopeKind
    id: str
    tenant: str | None
    limits: LimitSpec
