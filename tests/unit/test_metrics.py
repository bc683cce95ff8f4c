"""The bulk latency histogram renders exactly as prometheus_client's own Histogram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from almhookd.metrics import LATENCY_BUCKETS, BulkHistogram


def render(values: list[float], batch_sizes: list[int]) -> tuple[bytes, bytes]:
    reference_registry, bulk_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "latency_seconds", "doc", buckets=LATENCY_BUCKETS, registry=reference_registry
    )
    bulk = BulkHistogram("latency_seconds", "doc", buckets=LATENCY_BUCKETS, registry=bulk_registry)
    for value in values:
        reference.observe(value)
    start = 0
    for size in [*batch_sizes, len(values)]:
        bulk.observe_many(values[start : start + size])
        start += size
    return generate_latest(reference_registry), generate_latest(bulk_registry)


def without_created(text: bytes) -> bytes:
    return b"\n".join(line for line in text.splitlines() if b"_created" not in line)


@given(
    values=st.lists(st.floats(min_value=0, max_value=200_000, allow_nan=False), max_size=300),
    batch_sizes=st.lists(st.integers(min_value=0, max_value=100), max_size=5),
)
def test_bulk_observations_match_one_by_one_observations(
    values: list[float], batch_sizes: list[int]
) -> None:
    reference, bulk = render(values, batch_sizes)
    assert without_created(bulk) == without_created(reference)


@pytest.mark.parametrize("value", [0.0, *LATENCY_BUCKETS, 0.0051, 1e9])
def test_a_value_on_a_bucket_bound_counts_in_that_bucket(value: float) -> None:
    reference, bulk = render([value], [])
    assert without_created(bulk) == without_created(reference)
