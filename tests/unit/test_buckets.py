"""Limit arithmetic and the memory back end on a fake clock."""

from __future__ import annotations

import pytest

from llmgw.ledger.record import UsageRecord
from llmgw.limits.base import (
    CONCURRENCY_RETRY_SECONDS,
    PERIOD_KEY_GRACE_SECONDS,
    AdmitItem,
    Bucket,
    Charge,
    Commit,
    ConcurrencyLimit,
    Lease,
    PeriodLimit,
    Reserve,
)
from llmgw.limits.buckets import (
    Level,
    build_admission,
    full_after,
    is_admitted,
    refill,
    refund,
    validate_items,
    validate_settle_items,
)
from llmgw.limits.memory import MemoryBackend

# 10 tokens, refilled at 2 per second: empty to full in 5 seconds.
BUCKET = Bucket(key="key:test:tokens", kind="tokens", capacity=10, refill_per_second=2)
OTHER = Bucket(
    key="key:test:requests", kind="requests", capacity=3, refill_per_second=0.5
)
SLOTS = ConcurrencyLimit(key="concurrency:key:test", limit=2)
# A quota whose period ends 500 s after the fake clock's start.
QUOTA = PeriodLimit(key="quota:key:test:day:x", unit="tokens", limit=100, ends_at=1500)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_record(request_id: str = "req-1") -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        ts=1_700_000_000.0,
        route="/v1/chat/completions",
        key_name="test",
        tenant="acme",
        model="smollm2",
        provider="local",
        upstream_model="smollm2",
    )


def test_refill_new_bucket_starts_full() -> None:
    assert refill(BUCKET, None, now=5.0) == 10


def test_refill_adds_rate_times_elapsed() -> None:
    assert refill(BUCKET, Level(tokens=1.0, updated_at=100.0), now=102.5) == 6.0


def test_refill_caps_at_capacity() -> None:
    assert refill(BUCKET, Level(tokens=9.0, updated_at=100.0), now=200.0) == 10


def test_refill_ignores_clock_going_back() -> None:
    assert refill(BUCKET, Level(tokens=4.0, updated_at=100.0), now=90.0) == 4.0


def test_refill_pays_off_negative_tokens() -> None:
    assert refill(BUCKET, Level(tokens=-4.0, updated_at=100.0), now=101.0) == -2.0


@pytest.mark.parametrize(
    ("tokens", "amount", "expected"),
    [
        pytest.param(5.0, 3.0, 8.0, id="adds"),
        pytest.param(9.0, 3.0, 10.0, id="caps-at-capacity"),
        pytest.param(2.0, -5.0, -3.0, id="negative-goes-below-zero"),
        pytest.param(2.0, -500.0, -10.0, id="debt-stops-at-capacity"),
    ],
)
def test_refund(tokens: float, amount: float, expected: float) -> None:
    assert refund(BUCKET, tokens, amount) == expected


def test_full_after_is_deficit_over_rate() -> None:
    assert full_after(BUCKET, 4.0) == 3.0
    assert full_after(BUCKET, 10.0) == 0.0
    assert full_after(BUCKET, -2.0) == 6.0


def test_is_admitted_needs_every_bucket() -> None:
    charges = [Charge(BUCKET, 5), Charge(OTHER, 1)]
    assert is_admitted(charges, [5.0, 1.0])
    assert not is_admitted(charges, [5.0, 0.5])
    assert not is_admitted(charges, [4.9, 3.0])


def test_admission_admitted_states() -> None:
    charges = [Charge(BUCKET, 4), Charge(OTHER, 1)]
    admission = build_admission(charges, [10.0, 2.0], admitted=True, now=0)

    assert admission.admitted
    assert admission.retry_after is None
    assert admission.short_bucket is None
    assert [state.remaining for state in admission.states] == [6.0, 1.0]
    assert [state.reset_seconds for state in admission.states] == [2.0, 4.0]


def test_admission_rejected_takes_nothing() -> None:
    charges = [Charge(BUCKET, 4), Charge(OTHER, 1)]
    admission = build_admission(charges, [10.0, 0.25], admitted=False, now=0)

    assert not admission.admitted
    assert [state.remaining for state in admission.states] == [10.0, 0.25]
    assert admission.short_bucket == OTHER


def test_admission_retry_after_is_slowest_short_bucket() -> None:
    # BUCKET lacks 3 tokens at 2/s (1.5 s), OTHER lacks 1 at 0.5/s (2 s).
    charges = [Charge(BUCKET, 8), Charge(OTHER, 2)]
    admission = build_admission(charges, [5.0, 1.0], admitted=False, now=0)

    assert admission.retry_after == 2.0
    assert admission.short_bucket == OTHER


def test_admission_over_capacity_never_passes() -> None:
    charges = [Charge(BUCKET, 11), Charge(OTHER, 1)]
    admission = build_admission(charges, [10.0, 3.0], admitted=False, now=0)

    assert not admission.admitted
    assert admission.retry_after is None
    assert admission.short_bucket == BUCKET


def test_validate_items_rejects_negative() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        validate_items([Charge(BUCKET, -1)], "r1", 60)
    with pytest.raises(ValueError, match="must be >= 0"):
        validate_items([Reserve(QUOTA, -1)], "r1", 60)


def test_validate_items_rejects_duplicate_limit() -> None:
    with pytest.raises(ValueError, match="charged twice"):
        validate_items([Charge(BUCKET, 1), Charge(BUCKET, 2)], "r1", 60)


def test_validate_items_needs_request_id() -> None:
    with pytest.raises(ValueError, match="missing request_id"):
        validate_items([Lease(SLOTS)], "", 60)
    with pytest.raises(ValueError, match="missing request_id"):
        validate_settle_items([Commit(QUOTA, 3)], "")
    validate_items([Charge(BUCKET, 1)], "", 60)


@pytest.mark.parametrize("lease_seconds", [0, -1, 86_401])
def test_validate_items_rejects_lease_time(lease_seconds: float) -> None:
    with pytest.raises(ValueError, match="invalid lease_seconds"):
        validate_items([Lease(SLOTS)], "r1", lease_seconds)


def test_admission_lease_and_quota_levels() -> None:
    items: list[AdmitItem] = [Lease(SLOTS), Reserve(QUOTA, 30)]

    assert is_admitted(items, [1.0, 70.0])
    assert not is_admitted(items, [2.0, 0.0])
    assert not is_admitted(items, [0.0, 70.5])


def test_admission_lease_short_retries_soon() -> None:
    admission = build_admission([Lease(SLOTS)], [2.0], admitted=False, now=1000)

    assert admission.shortfall is not None
    assert admission.shortfall.limit == SLOTS
    assert admission.shortfall.remaining == 0
    assert admission.retry_after == CONCURRENCY_RETRY_SECONDS
    assert admission.states == ()


def test_admission_quota_short_waits_for_period_end() -> None:
    admission = build_admission([Reserve(QUOTA, 30)], [80.0], admitted=False, now=1000)

    assert admission.shortfall is not None
    assert admission.shortfall.remaining == 20
    assert admission.shortfall.requested == 30
    assert admission.retry_after == 500


def test_admission_blames_longest_wait() -> None:
    # The quota waits 500 s for its period to end, the bucket 1.5 s.
    items: list[AdmitItem] = [Charge(BUCKET, 8), Lease(SLOTS), Reserve(QUOTA, 30)]
    admission = build_admission(items, [5.0, 2.0, 80.0], admitted=False, now=1000)

    assert admission.shortfall is not None
    assert admission.shortfall.limit == QUOTA


def test_admission_blames_never_fitting_limit() -> None:
    items: list[AdmitItem] = [Reserve(QUOTA, 30), Charge(BUCKET, 11)]
    admission = build_admission(items, [80.0, 10.0], admitted=False, now=1000)

    assert admission.shortfall is not None
    assert admission.shortfall.limit == BUCKET
    assert admission.retry_after is None


@pytest.mark.parametrize(
    ("capacity", "rate"),
    [
        pytest.param(-1.0, 1.0, id="negative-capacity"),
        pytest.param(1.0, 0.0, id="zero-rate"),
    ],
)
def test_bucket_rejects_invalid_numbers(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Bucket(key="b", kind="tokens", capacity=capacity, refill_per_second=rate)


def test_bucket_per_minute_rate() -> None:
    bucket = Bucket.per_minute("key:k:requests", "requests", 120)
    assert bucket.capacity == 120
    assert bucket.refill_per_second == 2


async def test_memory_admit_refills_over_time() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)

    first = await backend.admit([Charge(BUCKET, 10)])
    rejected = await backend.admit([Charge(BUCKET, 1)])
    clock.now += 2.0
    later = await backend.admit([Charge(BUCKET, 4)])

    assert first.admitted
    assert first.states[0].remaining == 0
    assert not rejected.admitted
    assert rejected.retry_after == 0.5
    assert later.admitted
    assert later.states[0].remaining == 0


async def test_memory_rejection_takes_from_no_bucket() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)

    rejected = await backend.admit([Charge(BUCKET, 5), Charge(OTHER, 4)])

    assert not rejected.admitted
    assert rejected.retry_after is None
    assert backend.level(BUCKET.key) is None
    assert backend.level(OTHER.key) is None


async def test_memory_zero_charge_only_reads() -> None:
    backend = MemoryBackend(clock=FakeClock())

    admission = await backend.admit([Charge(BUCKET, 0)])

    assert admission.admitted
    assert admission.states[0].remaining == 10
    assert backend.level(BUCKET.key) is None


async def test_memory_negative_settle_delays_requests() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)

    await backend.admit([Charge(BUCKET, 10)])
    await backend.settle([Charge(BUCKET, -4)], make_record())
    rejected = await backend.admit([Charge(BUCKET, 2)])
    clock.now += 3.0
    admitted = await backend.admit([Charge(BUCKET, 2)])

    assert backend.level(BUCKET.key) == Level(tokens=0.0, updated_at=clock.now)
    assert not rejected.admitted
    assert rejected.states[0].remaining == -4
    assert rejected.retry_after == 3.0
    assert admitted.admitted


async def test_memory_settle_refund_caps_at_capacity() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)

    await backend.admit([Charge(BUCKET, 6)])
    clock.now += 1.0
    await backend.settle([Charge(BUCKET, 5)], make_record())

    assert backend.level(BUCKET.key) == Level(tokens=10.0, updated_at=clock.now)


async def test_memory_settle_appends_one_entry() -> None:
    backend = MemoryBackend(clock=FakeClock())

    await backend.settle([Charge(BUCKET, 1)], make_record("req-9"))
    entries = await backend.read_ledger("drainer", 10, block_ms=0)

    assert len(entries) == 1
    assert entries[0].record == make_record("req-9")


async def test_memory_claim_waits_for_idle_time() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock, claim_idle_ms=30_000)
    await backend.append_record(make_record())

    taken = await backend.read_ledger("dead", 10, block_ms=0)
    too_early = await backend.read_ledger("alive", 10, block_ms=0)
    clock.now += 30.0
    claimed = await backend.read_ledger("alive", 10, block_ms=0)
    await backend.ack_ledger([entry.entry_id for entry in claimed])

    assert len(taken) == 1
    assert too_early == []
    assert [entry.entry_id for entry in claimed] == [taken[0].entry_id]
    assert len(backend.ledger) == 0
    assert backend.ledger.pending_count == 0


async def test_memory_lease_limits_and_releases() -> None:
    backend = MemoryBackend(clock=FakeClock())

    first = await backend.admit([Lease(SLOTS)], request_id="r1", lease_seconds=60)
    second = await backend.admit([Lease(SLOTS)], request_id="r2", lease_seconds=60)
    third = await backend.admit([Lease(SLOTS)], request_id="r3", lease_seconds=60)
    await backend.settle([Lease(SLOTS)], None, request_id="r1")
    fourth = await backend.admit([Lease(SLOTS)], request_id="r4", lease_seconds=60)

    assert first.admitted
    assert second.admitted
    assert not third.admitted
    assert fourth.admitted
    assert backend.leases(SLOTS.key) == 2


async def test_memory_lease_expires_at_deadline() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    await backend.admit([Lease(SLOTS)], request_id="dead-1", lease_seconds=10)
    await backend.admit([Lease(SLOTS)], request_id="dead-2", lease_seconds=10)

    clock.now += 9.999
    before = await backend.admit([Lease(SLOTS)], request_id="r1", lease_seconds=10)
    clock.now += 0.001
    after = await backend.admit([Lease(SLOTS)], request_id="r2", lease_seconds=10)

    assert not before.admitted
    assert after.admitted
    assert backend.leases(SLOTS.key) == 1


async def test_memory_quota_commit_replaces_reservation() -> None:
    backend = MemoryBackend(clock=FakeClock())

    await backend.admit([Reserve(QUOTA, 60)], request_id="r1", lease_seconds=60)
    reserved = backend.period_state(QUOTA.key)
    rejected = await backend.admit([Reserve(QUOTA, 50)], request_id="r2")
    await backend.settle([Commit(QUOTA, 25)], make_record(), request_id="r1")
    settled = backend.period_state(QUOTA.key)
    admitted = await backend.admit([Reserve(QUOTA, 50)], request_id="r3")

    assert reserved == (0, 60)
    assert not rejected.admitted
    assert settled == (25, 0)
    assert admitted.admitted


async def test_memory_quota_reservation_expires() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    await backend.admit([Reserve(QUOTA, 100)], request_id="dead", lease_seconds=5)

    blocked = await backend.admit([Reserve(QUOTA, 1)], request_id="r1")
    clock.now += 5
    freed = await backend.admit([Reserve(QUOTA, 1)], request_id="r2")
    # The dead worker's request settles late: its usage still counts.
    await backend.settle([Commit(QUOTA, 40)], None, request_id="dead")

    assert not blocked.admitted
    assert freed.admitted
    assert backend.period_state(QUOTA.key) == (40, 1)


async def test_memory_period_counter_expires_after_grace() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    await backend.admit([Reserve(QUOTA, 10)], request_id="r1")
    await backend.settle([Commit(QUOTA, 10)], None, request_id="r1")

    clock.now = QUOTA.ends_at + PERIOD_KEY_GRACE_SECONDS - 1
    before_expiry = backend.period_state(QUOTA.key)
    clock.now += 1
    await backend.admit([Reserve(QUOTA, 1)], request_id="r2")

    assert before_expiry == (10, 0)
    assert backend.period_state(QUOTA.key) == (0, 1)
