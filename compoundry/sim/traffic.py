"""Synthetic traffic: how many requests of each pipeline arrive in each tick, and which components they call.

The request rate follows a business-hours day (a ramp up to a plateau and
back down to a night level), a weekly cycle (weekends lower), random spikes
of 10-50x lasting minutes, and batch windows of another pipeline at night.
Arrivals inside that rate are a *renewal* process with gamma inter-arrival
times of a chosen coefficient of variation (CV 1 is Poisson; the study's
variance amplification doubles it), mapped onto the rate curve by time
rescaling. Only per-tick counts are kept: that is all the simulator needs,
and it keeps a month at the study's scale in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_S = 86_400.0
CHUNK = 2_000_000  # inter-arrival gaps drawn per batch (bounded memory)


@dataclass(frozen=True)
class Trace:
    """Requests per tick for each pipeline, and where the spikes were."""

    tick_s: float
    counts: dict[str, np.ndarray]  # pipeline -> int64[n_ticks]
    spikes: tuple[tuple[float, float, float], ...] = ()  # (start s, end s, factor)
    cv: float = 1.0  # CV of inter-arrival times the counts were drawn with
    start_weekday: int = 0  # 0 = Monday: the clock starts at midnight of that day

    @property
    def n_ticks(self) -> int:
        return len(next(iter(self.counts.values()))) if self.counts else 0

    @property
    def total(self) -> int:
        return int(sum(c.sum() for c in self.counts.values()))


def day_shape(t: np.ndarray, traffic, start_weekday: int = 0) -> np.ndarray:
    """Relative rate at seconds ``t`` (1.0 = weekday business hours) before spikes."""
    hour = (t % DAY_S) / 3600.0
    weekday = (start_weekday + (t // DAY_S).astype(np.int64)) % 7
    open_h, close_h = traffic.business_hours
    ramp = max(traffic.ramp_hours, 1e-9)
    rise = np.clip((hour - (open_h - ramp)) / ramp, 0.0, 1.0)
    fall = np.clip(((close_h + ramp) - hour) / ramp, 0.0, 1.0)
    busy = np.minimum(rise, fall)
    top = np.where(weekday >= 5, traffic.weekend_level, 1.0)
    return traffic.night_level + (top - traffic.night_level) * busy


def draw_spikes(traffic, seconds: float, rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    """Spike windows: Poisson many per week, uniform start, height and length within the configured ranges."""
    n = rng.poisson(traffic.spikes.per_week * seconds / (7 * DAY_S))
    starts = np.sort(rng.uniform(0, seconds, n))
    factors = rng.uniform(*traffic.spikes.factor, n)
    lengths = rng.uniform(*traffic.spikes.minutes, n) * 60
    return tuple((float(s), float(min(s + d, seconds)), float(f)) for s, d, f in zip(starts, lengths, factors))


def spike_multiplier(t: np.ndarray, spikes) -> np.ndarray:
    m = np.ones_like(t, dtype=float)
    for start, end, factor in spikes:
        m[(t >= start) & (t < end)] = factor
    return m


def renewal_counts(expected: np.ndarray, cv: float, rng: np.random.Generator) -> np.ndarray:
    """Arrivals per bin of a renewal process whose rate gives ``expected`` arrivals per bin.

    Gamma inter-arrival gaps of mean 1 and the given CV on the "operational
    time" axis (cumulative expected arrivals); a bin gets the gaps' sums that
    fall into its share of that axis. CV 1 gives Poisson counts.
    """
    edges = np.concatenate(([0.0], np.cumsum(expected, dtype=float)))
    total_time = edges[-1]
    counts = np.zeros(len(expected), dtype=np.int64)
    if total_time <= 0:
        return counts
    shape = 1.0 / (cv * cv)
    position = rng.uniform(0, 1) * rng.gamma(shape, 1.0 / shape)  # a stationary start, roughly
    below = np.zeros(len(edges), dtype=np.int64)  # arrivals before each edge, over all chunks
    while position < total_time:
        n = int(min(CHUNK, (total_time - position) * 1.05 + 100))
        gaps = rng.standard_gamma(shape, n, dtype=np.float32) / shape
        arrivals = position + np.cumsum(gaps, dtype=np.float64)
        lo, hi = np.searchsorted(edges, [position, arrivals[-1]], side="right")
        below[lo:hi] += np.searchsorted(arrivals, edges[lo:hi], side="left")
        below[hi:] += n
        position = float(arrivals[-1])
    counts[:] = np.diff(below)
    return counts


def expected_per_tick(traffic, tick_s: float, spikes, start_weekday: int = 0) -> dict[str, np.ndarray]:
    """Expected requests per tick of every pipeline (the rate curve, before arrival noise)."""
    n = int(round(traffic.days * DAY_S / tick_s))
    mid = (np.arange(n) + 0.5) * tick_s
    week = np.arange(0, 7 * DAY_S, 60.0) + 30.0
    scale = traffic.requests_per_day / (day_shape(week, traffic, start_weekday).mean() * DAY_S)
    rates = {traffic.pipeline: scale * day_shape(mid, traffic, start_weekday) * spike_multiplier(mid, spikes) * tick_s}
    for window in traffic.batch:
        hour = (mid % DAY_S) / 3600.0
        inside = ((hour - window.start_hour) % 24.0) < window.hours
        per_s = window.requests_per_day / (window.hours * 3600.0)
        rates[window.pipeline] = rates.get(window.pipeline, 0.0) + inside * per_s * tick_s
    return rates


def generate(traffic, tick_s: float, start_weekday: int = 0) -> Trace:
    """A whole trace from the generator's settings (deterministic under ``traffic.seed``)."""
    rng = np.random.default_rng(traffic.seed)
    spikes = draw_spikes(traffic, traffic.days * DAY_S, rng)
    cv = traffic.interarrival_cv * traffic.variance_amplification
    expected = expected_per_tick(traffic, tick_s, spikes, start_weekday)
    counts = {p: renewal_counts(e, cv, rng) for p, e in expected.items()}
    return Trace(tick_s, counts, spikes, cv, start_weekday)


def amplify(trace: Trace, factor: float, smooth_s: float, seed: int = 0) -> Trace:
    """The same traffic with its inter-arrival CV multiplied by ``factor`` (the study's replay).

    The rate is the trace's own, averaged over ``smooth_s``; arrivals are
    redrawn around it as a renewal process with CV ``trace.cv * factor``.
    """
    rng = np.random.default_rng(seed)
    per = max(1, int(round(smooth_s / trace.tick_s)))
    counts = {}
    for pipeline, c in trace.counts.items():
        padded = np.concatenate([c, np.zeros((-len(c)) % per, dtype=c.dtype)]).astype(float)
        rate = np.repeat(padded.reshape(-1, per).mean(axis=1), per)[: len(c)]
        counts[pipeline] = renewal_counts(rate, trace.cv * factor, rng)
    return Trace(trace.tick_s, counts, trace.spikes, trace.cv * factor, trace.start_weekday)


def component_calls(trace: Trace, scenario, components: list[str], seed: int = 0) -> np.ndarray:
    """Calls per tick of each component: every step of every request runs with its invocation ratio."""
    rng = np.random.default_rng(seed + 1)
    calls = np.zeros((trace.n_ticks, len(components)), dtype=np.int64)
    index = {c: i for i, c in enumerate(components)}
    for pipeline, counts in trace.counts.items():
        for step_name, step in scenario.pipelines[pipeline].steps.items():
            ratio = scenario.ratio(pipeline, step_name)
            drawn = counts if ratio >= 1 else rng.binomial(counts, ratio)
            calls[:, index[step.component]] += drawn
    return calls
