"""The usage record: one per request, accepted or rejected."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

_INT_FIELDS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "status",
    }
)
_FLOAT_FIELDS = frozenset({"ts", "latency_ms", "ttft_ms"})
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

    def to_fields(self) -> dict[str, str]:
        """Flatten to strings for a Redis Stream entry; None becomes ""."""
        out: dict[str, str] = {}
        for name, value in asdict(self).items():
            if value is None:
                out[name] = ""
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[str, str] | dict[bytes, bytes]) -> UsageRecord:
        """Rebuild a record from ``to_fields`` output (str or bytes keys)."""
        text = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode() if isinstance(v, bytes) else v
            )
            for k, v in raw.items()
        }
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
        if values["request_id"] is None:
            values["request_id"] = ""
        if values["route"] is None:
            values["route"] = ""
        return cls(**values)
