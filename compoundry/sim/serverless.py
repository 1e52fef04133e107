"""The hosted serverless backend on the virtual clock: cold starts after idling, a concurrency limit, throttling.

Before ADR 0042 the backend was always warm and unlimited, so ``hybrid``'s
spill-over absorbed any spike for free. A hosted endpoint (Lambda, SageMaker
Serverless, a scale-to-zero inference endpoint) is neither:

* **warm concurrency** is what the endpoint ran within the last
  ``keep_warm_s`` (providers reclaim idle instances); concurrency above it
  must start first, so the tick's share of calls that needs it waits for
  ``cold_start_s`` (from the tick's start, like an own replica);
* **a concurrency limit** caps calls in flight; the calls above it are
  **throttled** (429/503 + ``Retry-After``; the gateway passes the
  provider's throttle back and the caller retries). The retries are modelled
  as a FIFO queue, each throttled call losing half a ``retry_after_s`` on
  average to the retry interval. A retry comes back through the gateway, so in
  ``auto`` mode it takes the own replicas when they have room (the engine
  hands the queue back as ``retries`` and drains it at both rates).

Fluid per tick like the own replicas' queue (ADR 0025); pure and cheap.
"""

from __future__ import annotations

import math
from collections import deque


class ServerlessPool:
    """One component's serverless endpoint: warm concurrency, throttled backlog, and per-tick outcomes."""

    __slots__ = ("call_s", "cold_s", "limit", "retry_s", "window", "peaks", "backlog", "cold_calls",
                 "throttled_calls", "served")

    def __init__(self, model, tick_s: float):
        config = model.serverless
        self.call_s = model.service_s + model.serverless_overhead_s  # seconds one call holds a slot
        self.cold_s, self.retry_s = config.cold_start_s, config.retry_after_s
        self.limit = math.inf if config.concurrency_limit is None else float(config.concurrency_limit)
        self.window = max(1, math.ceil(config.keep_warm_s / tick_s))  # ticks a used slot stays warm
        self.peaks: deque[tuple[int, float]] = deque()  # (tick, concurrency), decreasing: sliding max
        self.backlog = self.cold_calls = self.throttled_calls = self.served = 0.0

    def warm(self, tick: int) -> float:
        """Concurrency kept warm at ``tick``: the most in flight over the keep-warm window before it."""
        while self.peaks and self.peaks[0][0] <= tick - 1 - self.window:
            self.peaks.popleft()
        return math.ceil(self.peaks[0][1]) if self.peaks else 0.0  # instances are whole: 0.2 in flight keeps one

    def take_retries(self) -> float:
        """The throttled calls, handed back to the gateway to retry (``auto`` mode); the queue is then empty."""
        retries, self.backlog = self.backlog, 0.0
        return retries

    def serve(self, calls: float, tick: int, dt: float, retries: float = 0.0, other_rate: float = 0.0
              ) -> tuple[float, float]:
        """Send ``calls`` this tick (``retries`` of them retried); returns (share of them that meet a cold start,
        queue wait from throttling). ``other_rate``: calls/s the retries can also take elsewhere (own replicas)."""
        warm = self.warm(tick)
        capacity = self.limit * dt / self.call_s  # calls the limit lets through in one tick
        prior, fresh = self.backlog + retries, calls - retries
        work = self.backlog + calls
        served = min(work, capacity)
        backlog = work - served
        in_flight = served * self.call_s / dt
        cold = (in_flight - warm) / in_flight if in_flight > warm and self.cold_s > 0 else 0.0
        wait = 0.0
        if prior > 0 or backlog > 0:
            wait = (prior + backlog) / 2 / (capacity / dt + other_rate) + self.retry_s / 2
            self.throttled_calls += fresh if prior > 0 else min(fresh, backlog)
        self.served += served
        self.cold_calls += cold * calls
        self.backlog = backlog
        while self.peaks and self.peaks[-1][1] <= in_flight:
            self.peaks.pop()
        self.peaks.append((tick, in_flight))
        return cold, wait
