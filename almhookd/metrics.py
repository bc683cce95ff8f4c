"""Prometheus metrics (``GET /metrics``), with ``prometheus_client``.

One registry per daemon (not the library's global one), so tests and embedded uses
never share counters. Counters are incremented where things happen; gauges of state
(backlog, oldest pending age, webhooks by status) are read from the store at scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

#: Seconds from ingest to acknowledgement; real-time deliveries land in the low
#: buckets, batch deliveries wait for their flush.
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    86_400.0,
)


class BulkHistogram(Collector):
    """A histogram observed many values at a time: one request acknowledges up to a
    hundred events, and ``prometheus_client``'s Histogram takes a lock per value.

    Used from the event loop only (observing and scraping), so it needs no lock.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Iterable[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds = self._counts, self._bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # "le": the first bound >= value
            self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events_ingested = Counter(
            "almhookd_events_ingested",
            "Events accepted at ingest (duplicates excluded)",
            ["event_name"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "almhookd_events_duplicate",
            "Events refused at ingest as duplicates of a known eventId",
            registry=registry,
        )
        self.deliveries = Counter(
            "almhookd_deliveries",
            "Event deliveries by outcome (delivered, expired)",
            ["webhook_id", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "almhookd_attempts",
            "HTTP requests to receivers by status class (2xx, 3xx, 4xx, 5xx, error = no answer)",
            ["webhook_id", "status_class"],
            registry=registry,
        )
        self.delivery_latency = BulkHistogram(
            "almhookd_delivery_latency_seconds",
            "From ingest to acknowledgement by the receiver, per event",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.expired_events = Counter(
            "almhookd_expired_events",
            "Events not delivered within the retention",
            registry=registry,
        )
        self.webhooks_disabled = Counter(
            "almhookd_webhooks_disabled", "Webhooks disabled by the daemon", registry=registry
        )
        self.reminders = Counter(
            "almhookd_reminders",
            "Reminder e-mails by result (sent, logged, failed)",
            ["result"],
            registry=registry,
        )
        self.backlog = Gauge(
            "almhookd_backlog_events",
            "Deliveries not yet acknowledged, by kind (realtime, batch)",
            ["webhook_id", "kind"],
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "almhookd_oldest_pending_age_seconds",
            "Age of the oldest unacknowledged event",
            ["webhook_id"],
            registry=registry,
        )
        self.webhooks = Gauge(
            "almhookd_webhooks", "Webhooks by status", ["status"], registry=registry
        )
