"""The usage record: one per request, accepted or rejected."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

# The stream entry field that contains the record as JSON.
RECORD_FIELD: Final = "record"

_INT_FIELDS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "status",
        "cache_write_tokens",
    }
)
_FLOAT_FIELDS = frozenset({"ts", "latency_ms", "ttft_ms", "cost_usd"})
_BOOL_FIELDS = frozenset({"estimated", "streamed", "client_aborted"})


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    ts: float  # Unix time in seconds when the request arrived
    route: str
    key_name: str | None
    tenant: str | None
    model: str | None  # the name the client sent
    provider: str | None
    upstream_model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    status: int = 200
    error_type: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # time to first byte of the response body
    streamed: bool = False
    client_aborted: bool = False
    # US dollars at the model's price, or 0 for a model without a price.
    cost_usd: float = 0.0
    # Input tokens written to the provider's prompt cache (Anthropic's
    # cache_creation_input_tokens, Bedrock's cacheWriteInputTokens). Like
    # cached_tokens, they are part of input_tokens.
    cache_write_tokens: int = 0
    # The key's team inside its tenant, or the team claim of a JWT.
    team: str | None = None

    def to_fields(self) -> dict[str, str]:
        """Encode as a Redis Stream entry: one field holding the record as JSON.

        One field instead of one per attribute keeps the XADD, the stream
        entry and its parsing small.
        """
        return {RECORD_FIELD: orjson.dumps(self).decode()}

    @classmethod
    def from_fields(cls, raw: dict[str, str] | dict[bytes, bytes]) -> UsageRecord:
        """Rebuild a record from a stream entry (str or bytes keys).

        Reads the JSON field of ``to_fields``, and also the one-field-per-
        attribute entries that earlier versions wrote. Raises ``ValueError``
        or ``TypeError`` for an entry that is not a valid record.
        """
        text = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode() if isinstance(v, bytes) else v
            )
            for k, v in raw.items()
        }
        encoded = text.get(RECORD_FIELD)
        if encoded is not None:
            return cls._from_json(encoded)
        return cls._from_flat_fields(text)

    @classmethod
    def _from_json(cls, encoded: str) -> UsageRecord:
        try:
            data = orjson.loads(encoded)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid ledger record JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise TypeError("invalid ledger record: expected a JSON object")
        values: dict[str, Any] = {}
        for name, value in data.items():
            allowed = _FIELD_TYPES.get(name)
            if allowed is None:
                continue  # written by a newer version: not stored here
            # Exact types: bool, a subclass of int, must not pass for an int.
            if type(value) not in allowed:
                raise TypeError(
                    f"invalid ledger record field {name!r}: "
                    f"{type(value).__name__} {value!r}"
                )
            values[name] = value
        # A float field may hold a JSON integer.
        for name in _FLOAT_FIELDS.intersection(values):
            if type(values[name]) is int:
                values[name] = float(values[name])
        for required in ("request_id", "ts", "route"):
            if required not in values:
                raise ValueError(f"invalid ledger record: missing {required!r}")
        for optional in ("key_name", "tenant", "model", "provider", "upstream_model"):
            values.setdefault(optional, None)
        return cls(**values)

    @classmethod
    def _from_flat_fields(cls, text: dict[str, str]) -> UsageRecord:
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = text.get(f.name, "")
            if f.name in _BOOL_FIELDS:
                values[f.name] = value == "1"
            elif f.name in _INT_FIELDS:
                values[f.name] = int(value or 0)
            elif f.name in _FLOAT_FIELDS:
                values[f.name] = float(value) if value else None
            else:
                values[f.name] = value or None
        if values["ts"] is None:
            values["ts"] = 0.0
        if values["latency_ms"] is None:
            values["latency_ms"] = 0.0
        if values["cost_usd"] is None:
            values["cost_usd"] = 0.0
        if values["request_id"] is None:
            values["request_id"] = ""
        if values["route"] is None:
            values["route"] = ""
        return cls(**values)


def _field_types() -> dict[str, tuple[type, ...]]:
    """Return the exact JSON value types each record attribute accepts."""
    types: dict[str, tuple[type, ...]] = {}
    for f in fields(UsageRecord):
        if f.name in _BOOL_FIELDS:
            types[f.name] = (bool,)
        elif f.name in _INT_FIELDS:
            types[f.name] = (int,)
        elif f.name == "ttft_ms":
            types[f.name] = (float, int, type(None))
        elif f.name in _FLOAT_FIELDS:
            types[f.name] = (float, int)
        elif f.name in ("request_id", "route"):
            types[f.name] = (str,)
        else:
            types[f.name] = (str, type(None))
    return types


_FIELD_TYPES = _field_types()
