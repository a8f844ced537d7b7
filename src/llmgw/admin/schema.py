"""Validate admin API request bodies, naming the invalid field.

Every parser raises ``InvalidField``, a 400 error whose ``param`` is the
field's path, such as ``limits.budgets_usd.day``. The limits take the same
shape as in the config file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from llmgw.config import PERIODS, SCOPE_NAME, SCOPE_NAME_RULE, TOKEN_COUNTS
from llmgw.errors import InvalidRequest
from llmgw.limits.spec import LimitSpec, Period, TokenCount

# Key names appear in the ledger, logs and CLI tables.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
KEY_NAME_RULE = (
    "1 to 128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
)
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_LENGTH = 128
MAX_METADATA_VALUE_LENGTH = 1024
MAX_OWNER_LENGTH = 256
MAX_MODEL_GLOBS = 256

# How far ahead an expiry may be, and how long a secret replaced by a
# rotation may keep working. Both keep every stored time within the years
# that ISO 8601 text and Python's datetime can represent.
MAX_EXPIRY_SECONDS = 3650 * 86400
MAX_GRACE_SECONDS = 30 * 86400
# The gateway counts money in whole micro-dollars, so a smaller budget
# rounds to 0 and would reject every request.
MIN_BUDGET_USD = 0.000001

_MODEL_LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_minute_counts",
    "max_concurrent_requests",
    "token_quotas",
    "budgets_usd",
)
_LIMIT_FIELDS = (*_MODEL_LIMIT_FIELDS, "models")


class InvalidField(InvalidRequest):
    """An invalid value in an admin API request. ``param`` names the field."""

    code = "invalid_field"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Invalid '{path}': {reason}.", param=path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {text!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_object(
    value: object, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check that ``value`` is a JSON object with only the ``allowed`` fields."""
    if not isinstance(value, dict):
        raise InvalidField(
            path or "body", f"must be a JSON object, got {_describe(value)}"
        )
    for name in value:
        if name not in allowed:
            expected = ", ".join(allowed)
            raise InvalidField(
                _join(path, name), f"unknown field, expected one of: {expected}"
            )
    for name in required:
        if name not in value:
            raise InvalidField(_join(path, name), "missing required field")
    return cast(dict[str, Any], value)


def positive_int(value: object, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidField(path, f"must be a positive integer, got {_describe(value)}")
    return value


def _number(value: object, path: str, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    expected = "a non-negative number" if allow_zero else "a positive number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(path, f"must be {expected}, got {_describe(value)}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InvalidField(path, f"must be {expected}, got {_describe(value)}")
    return float(value)


def positive_number(value: object, path: str) -> float | None:
    return _number(value, path, allow_zero=False)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days"


def expiry_seconds(value: object, path: str) -> float | None:
    """Check a time to live in seconds: above 0 and at most MAX_EXPIRY_SECONDS."""
    if value is None:
        return None
    bound = f"{MAX_EXPIRY_SECONDS} ({_days(MAX_EXPIRY_SECONDS)})"
    reason = f"must be a number of seconds above 0 and at most {bound}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(path, f"{reason}, got {_describe(value)}")
    if not math.isfinite(value) or not 0 < value <= MAX_EXPIRY_SECONDS:
        raise InvalidField(path, f"{reason}, got {_describe(value)}")
    return float(value)


def grace_seconds(value: object, path: str) -> float | None:
    """Check a rotation grace in seconds: 0 to MAX_GRACE_SECONDS."""
    if value is None:
        return None
    bound = f"{MAX_GRACE_SECONDS} ({_days(MAX_GRACE_SECONDS)})"
    reason = f"must be a number of seconds from 0 to at most {bound}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField(path, f"{reason}, got {_describe(value)}")
    if not math.isfinite(value) or not 0 <= value <= MAX_GRACE_SECONDS:
        raise InvalidField(path, f"{reason}, got {_describe(value)}")
    return float(value)


def optional_string(value: object, path: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidField(path, f"must be a non-empty string, got {_describe(value)}")
    if len(value) > max_length:
        raise InvalidField(path, f"must be at most {max_length} characters")
    return value


def scope_name(value: object, path: str) -> str:
    """Check a tenant or team name."""
    if not isinstance(value, str) or not SCOPE_NAME.fullmatch(value):
        raise InvalidField(path, f"must be {SCOPE_NAME_RULE}, got {_describe(value)}")
    return value


def key_name(value: object, path: str) -> str:
    if not isinstance(value, str) or not KEY_NAME.fullmatch(value):
        raise InvalidField(path, f"must be {KEY_NAME_RULE}, got {_describe(value)}")
    return value


def model_globs(value: object, path: str) -> tuple[str, ...] | None:
    """Check a list of model-name globs. null allows every model."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidField(
            path, f"must be an array of strings or null, got {_describe(value)}"
        )
    if len(value) > MAX_MODEL_GLOBS:
        raise InvalidField(path, f"must have at most {MAX_MODEL_GLOBS} entries")
    for index, glob in enumerate(value):
        if not isinstance(glob, str) or not glob:
            reason = f"must be a non-empty string, got {_describe(glob)}"
            raise InvalidField(f"{path}[{index}]", reason)
    return tuple(value)


def metadata(value: object, path: str) -> dict[str, str]:
    """Check a map of strings to strings. null is an empty map."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidField(
            path, f"must be an object of strings, got {_describe(value)}"
        )
    if len(value) > MAX_METADATA_ENTRIES:
        raise InvalidField(path, f"must have at most {MAX_METADATA_ENTRIES} entries")
    for name, item in value.items():
        if not name or len(name) > MAX_METADATA_KEY_LENGTH:
            reason = f"names must be 1 to {MAX_METADATA_KEY_LENGTH} characters"
            raise InvalidField(path, reason)
        item_path = f"{path}.{name}"
        if not isinstance(item, str):
            raise InvalidField(item_path, f"must be a string, got {_describe(item)}")
        if len(item) > MAX_METADATA_VALUE_LENGTH:
            reason = f"must be at most {MAX_METADATA_VALUE_LENGTH} characters"
            raise InvalidField(item_path, reason)
    return dict(value)


def timestamp(value: object, path: str) -> float | None:
    """Parse an ISO 8601 date and time with a UTC offset into Unix seconds."""
    if value is None:
        return None
    expected = (
        "an ISO 8601 date and time with a UTC offset such as 2026-01-31T12:00:00Z"
    )
    if not isinstance(value, str):
        raise InvalidField(path, f"must be {expected}, got {_describe(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField(
            path, f"must be {expected}, got {_describe(value)}"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidField(path, f"must be {expected}: the UTC offset is missing")
    return parsed.timestamp()


def expiry_time(value: object, path: str, now: float) -> float | None:
    """Parse an expiry: a timestamp after ``now`` and at most
    MAX_EXPIRY_SECONDS later."""
    expires = timestamp(value, path)
    if expires is None:
        return None
    if expires <= now or expires - now > MAX_EXPIRY_SECONDS:
        latest = datetime.fromtimestamp(now + MAX_EXPIRY_SECONDS, UTC)
        latest_text = latest.isoformat(timespec="seconds").replace("+00:00", "Z")
        reason = (
            f"must be in the future and at most {_days(MAX_EXPIRY_SECONDS)} ahead "
            f"(no later than {latest_text}), got {_describe(value)}"
        )
        raise InvalidField(path, reason)
    return expires


def parse_limits(value: object, path: str, *, stored: bool = False) -> LimitSpec:
    """Parse limits in the config file's shape. null means no limits.

    ``stored`` is for records read back from the admin store: it accepts the
    budgets below MIN_BUDGET_USD that versions without the minimum stored,
    so that such a record still loads.
    """
    if value is None:
        return LimitSpec()
    data = parse_object(value, path, _LIMIT_FIELDS)
    min_budget = 0.0 if stored else MIN_BUDGET_USD
    models = _model_limits(data.get("models"), _join(path, "models"), min_budget)
    return _limit_spec(data, path, min_budget, models)


def _limit_spec(
    data: Mapping[str, Any],
    path: str,
    min_budget: float,
    models: tuple[tuple[str, LimitSpec], ...] = (),
) -> LimitSpec:
    counts = data.get("tokens_per_minute_counts")
    counts_path = _join(path, "tokens_per_minute_counts")
    if counts is not None and counts not in TOKEN_COUNTS:
        expected = ", ".join(TOKEN_COUNTS)
        raise InvalidField(
            counts_path, f"must be one of {expected}, got {_describe(counts)}"
        )
    return LimitSpec(
        requests_per_minute=positive_int(
            data.get("requests_per_minute"), _join(path, "requests_per_minute")
        ),
        tokens_per_minute=positive_int(
            data.get("tokens_per_minute"), _join(path, "tokens_per_minute")
        ),
        tokens_per_minute_counts=cast(TokenCount, counts or "total"),
        max_concurrent_requests=positive_int(
            data.get("max_concurrent_requests"), _join(path, "max_concurrent_requests")
        ),
        token_quotas=_token_quotas(
            data.get("token_quotas"), _join(path, "token_quotas")
        ),
        budgets_usd=_budgets(
            data.get("budgets_usd"), _join(path, "budgets_usd"), min_budget
        ),
        models=models,
    )


def _token_quotas(value: object, path: str) -> tuple[tuple[Period, int], ...]:
    if value is None:
        return ()
    data = parse_object(value, path, PERIODS)
    quotas: list[tuple[Period, int]] = []
    for period in PERIODS:
        quota = positive_int(data.get(period), _join(path, period))
        if quota is not None:
            quotas.append((period, quota))
    return tuple(quotas)


def _budgets(
    value: object, path: str, min_budget: float
) -> tuple[tuple[Period, float], ...]:
    if value is None:
        return ()
    data = parse_object(value, path, PERIODS)
    budgets: list[tuple[Period, float]] = []
    for period in PERIODS:
        period_path = _join(path, period)
        budget = positive_number(data.get(period), period_path)
        if budget is None:
            continue
        if budget < min_budget:
            reason = (
                f"must be at least {min_budget:f} USD (one micro-dollar, the "
                f"smallest amount the gateway counts), got {_describe(budget)}"
            )
            raise InvalidField(period_path, reason)
        budgets.append((period, budget))
    return tuple(budgets)


def _model_limits(
    value: object, path: str, min_budget: float
) -> tuple[tuple[str, LimitSpec], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        reason = (
            f"must be an object of model-name globs to limits, got {_describe(value)}"
        )
        raise InvalidField(path, reason)
    entries = []
    for glob, limits in value.items():
        entry_path = f"{path}[{glob!r}]"
        if not glob:
            raise InvalidField(entry_path, "the model-name glob must not be empty")
        data = parse_object(limits, entry_path, _MODEL_LIMIT_FIELDS)
        entries.append((glob, _limit_spec(data, entry_path, min_budget)))
    return tuple(entries)
