"""Usage records encoded as Redis Stream entries and read back."""

from __future__ import annotations

import orjson
import pytest

from llmgw.ledger.record import RECORD_FIELD, UsageRecord


def full_record() -> UsageRecord:
    return UsageRecord(
        request_id="req_1",
        ts=1796400000.25,
        route="/v1/chat/completions",
        key_name="ci",
        tenant="acme",
        model="gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini-2024-07-18",
        input_tokens=120,
        output_tokens=30,
        cached_tokens=64,
        reasoning_tokens=5,
        estimated=True,
        status=200,
        error_type=None,
        latency_ms=12.5,
        ttft_ms=3.25,
        streamed=True,
        client_aborted=False,
        cost_usd=0.000123,
    )


def test_record_round_trips_through_one_field() -> None:
    record = full_record()
    fields = record.to_fields()
    assert list(fields) == [RECORD_FIELD]
    assert UsageRecord.from_fields(fields) == record


def test_record_with_nulls_round_trips() -> None:
    record = UsageRecord(
        request_id="req_2",
        ts=1.0,
        route="/v1/embeddings",
        key_name=None,
        tenant=None,
        model=None,
        provider=None,
        upstream_model=None,
        status=401,
        error_type="invalid_api_key",
    )
    assert UsageRecord.from_fields(record.to_fields()) == record


def test_record_reads_bytes_keys() -> None:
    record = full_record()
    raw = {k.encode(): v.encode() for k, v in record.to_fields().items()}
    assert UsageRecord.from_fields(raw) == record


def test_record_reads_flat_entries_of_earlier_versions() -> None:
    flat = {
        "request_id": "req_3",
        "ts": "10.5",
        "route": "/v1/chat/completions",
        "key_name": "ci",
        "tenant": "",
        "model": "m",
        "provider": "p",
        "upstream_model": "u",
        "input_tokens": "7",
        "output_tokens": "3",
        "cached_tokens": "0",
        "reasoning_tokens": "0",
        "estimated": "1",
        "status": "200",
        "error_type": "",
        "latency_ms": "4.0",
        "ttft_ms": "",
        "streamed": "0",
        "client_aborted": "0",
    }
    record = UsageRecord.from_fields(flat)
    assert record.tenant is None
    assert record.input_tokens == 7
    assert record.estimated is True
    assert record.ttft_ms is None
    assert record.cost_usd == 0.0


def test_record_ignores_unknown_and_defaults_missing() -> None:
    data = {"request_id": "req_4", "ts": 5, "route": "/v1/x", "later_field": 1}
    record = UsageRecord.from_fields({RECORD_FIELD: orjson.dumps(data).decode()})
    assert record.ts == 5.0
    assert isinstance(record.ts, float)
    assert record.input_tokens == 0
    assert record.key_name is None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"input_tokens": "12"}, TypeError),
        ({"input_tokens": True}, TypeError),
        ({"estimated": 1}, TypeError),
        ({"request_id": None}, TypeError),
        ({"ttft_ms": "fast"}, TypeError),
    ],
)
def test_record_rejects_wrong_types(
    change: dict[str, object], error: type[Exception]
) -> None:
    data = orjson.loads(full_record().to_fields()[RECORD_FIELD])
    data.update(change)
    with pytest.raises(error):
        UsageRecord.from_fields({RECORD_FIELD: orjson.dumps(data).decode()})


def test_record_rejects_missing_request_id() -> None:
    data = {"ts": 1.0, "route": "/v1/x"}
    with pytest.raises(ValueError, match="request_id"):
        UsageRecord.from_fields({RECORD_FIELD: orjson.dumps(data).decode()})


def test_record_rejects_invalid_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        UsageRecord.from_fields({RECORD_FIELD: "{not json"})
    with pytest.raises(TypeError, match="object"):
        UsageRecord.from_fields({RECORD_FIELD: "[1, 2]"})
