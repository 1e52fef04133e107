"""Prometheus ``/metrics`` for the Prediction Service.

Counters and latency histograms are updated once per component call (from the
dispatcher's call record); everything that is state (in-flight requests,
breaker state, ready replicas, metering backlog) is read at scrape time by a
collector, so the request path pays nothing for it. Each app has its own
registry, so several gateways in one test process do not collide.

With several worker processes (``gateway.workers`` > 1) a scrape reaches one of them, so counters and
histograms live in prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by the gateway
process for its workers) and every scrape sums all workers; the live-state gauges are the answering worker's
(ready replicas and breakers agree across workers; in-flight counts are that worker's share).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from compoundry.gateway.calls import CallRecord

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BREAKER_STATES = ("closed", "half_open", "open")


class GatewayMetrics:
    def __init__(self, components: Callable[[], dict]):
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client's own variable
        self._state: _StateCollector | None = None
        for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):  # memory, CPU, fds, GC pauses
            self.registry.register(standard)
        self.components = components
        self._children: dict[tuple[str, str, str, str], tuple] = {}  # label values -> (counter, histogram)
        self.calls = Counter("compoundry_component_calls", "Component calls by outcome",
                             ["component", "variant", "mode", "outcome"], registry=self.registry)
        self.latency = Histogram("compoundry_component_call_seconds", "Component call latency, cold-start hold "
                                 "included", ["component", "variant", "mode"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.cold_start = Histogram("compoundry_cold_start_hold_seconds", "Time requests were held for a cold "
                                    "start", ["component"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("compoundry_tokens", "Tokens of llm calls, as the replica or endpoint reported them",
                              ["component", "kind"], registry=self.registry)
        self.pipelines = Counter("compoundry_pipeline_requests", "Pipeline requests by status",
                                 ["pipeline", "status"], registry=self.registry)
        self.pipeline_latency = Histogram("compoundry_pipeline_seconds", "Pipeline latency", ["pipeline"],
                                          buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rate_limited = Counter("compoundry_rate_limited_requests", "Requests refused by a rate limit, by "
                                    "whose limit (tenant or key) and which (requests or tokens per minute)",
                                    ["scope", "limit"], registry=self.registry)

    def on_call(self, call: CallRecord) -> None:
        config = self.components().get(call.component)
        mode = config.mode if config is not None else ""
        key = (call.component, call.variant or call.model_version or "", mode, call.outcome)
        children = self._children.get(key)
        if children is None:  # .labels() takes a lock and builds a key on every call: look each set up once
            children = self._children[key] = (self.calls.labels(*key), self.latency.labels(*key[:3]))
        children[0].inc()
        children[1].observe((call.cold_start_ms + call.compute_ms) / 1000)
        if call.cold_start_ms:
            self.cold_start.labels(call.component).observe(call.cold_start_ms / 1000)
        if call.prompt_tokens or call.completion_tokens:
            self.tokens.labels(call.component, "prompt").inc(call.prompt_tokens)
            self.tokens.labels(call.component, "completion").inc(call.completion_tokens)

    def on_pipeline(self, pipeline: str, status: str, total_ms: float) -> None:
        self.pipelines.labels(pipeline, status).inc()
        self.pipeline_latency.labels(pipeline).observe(total_ms / 1000)

    def on_rate_limited(self, scope: str, limit: str) -> None:
        self.rate_limited.labels(scope, limit).inc()

    def watch_state(self, routes, load, breakers, sink=None) -> None:
        """Register the scrape-time collector over live state: the route table, the load board, the breakers
        and the metering sink."""
        self._state = _StateCollector(routes, load, breakers, sink)
        self.registry.register(self._state)

    def exposition(self) -> bytes:
        """What ``GET /metrics`` answers: this process's registry, or every worker's counters and histograms
        summed from the multiprocess files beside this worker's live state."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        if self._state is not None:
            registry.register(self._state)
        return generate_latest(registry)


class _StateCollector:
    def __init__(self, routes, load, breakers, sink):
        self.routes, self.load, self.breakers, self.sink = routes, load, breakers, sink

    def collect(self):
        routes = self.routes.routes
        replicas = GaugeMetricFamily("compoundry_ready_replicas", "Ready replicas of the routed deployment",
                                     labels=["component", "deployment"])
        in_flight = GaugeMetricFamily("compoundry_in_flight_requests", "Requests in flight per deployment",
                                      labels=["component", "deployment"])
        for name, route in sorted(routes.items()):
            replicas.add_metric([name, route.deployment_id], len(route.replicas))
            busy = self.load.in_flight(route.deployment_id, [r.url for r in route.replicas])
            in_flight.add_metric([name, route.deployment_id], busy)
        yield replicas
        yield in_flight
        breaker = GaugeMetricFamily("compoundry_breaker_state", "1 for the breaker's current state",
                                    labels=["deployment", "state"])
        for deployment, snapshot in self.breakers.snapshots().items():
            for state in BREAKER_STATES:
                breaker.add_metric([deployment, state], 1.0 if snapshot.state == state else 0.0)
        yield breaker
        if self.sink is not None:
            stats = self.sink.stats()
            yield CounterMetricFamily("compoundry_metering_records_written", "Metering records written to the "
                                      "platform database", value=float(stats.written))
            yield CounterMetricFamily("compoundry_metering_records_dropped", "Metering records dropped (the "
                                      "buffer was full; they stay in the spool for the next start)",
                                      value=float(stats.dropped))
            yield GaugeMetricFamily("compoundry_metering_records_pending", "Metering records waiting to be written",
                                    value=float(stats.pending))
