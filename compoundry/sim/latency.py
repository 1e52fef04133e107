"""What requests experienced: per-interval P95 of each pipeline, rebuilt from the engine's per-tick records.

Per SLO interval and pipeline, ``samples`` requests are drawn in proportion
to the interval's arrivals (the same draws for every policy: common random
numbers make the comparison fair). Each request walks its DAG: a step starts
when its dependencies finish, runs with its invocation ratio, and at its
component waits for

* a cold start (the component's first replica is ready ``ready_in`` after the tick start),
* the fluid queue ahead of it (``ahead_s``), and
* the random queueing of an M/G/c queue at the tick's utilisation
  (Sakasegawa's approximation, scaled by the arrival and service CVs),

then serves for a lognormal service time; a call the mode sends to the
serverless backend pays its overhead, the backend's throttling queue and, when
the tick needed concurrency the backend had not kept warm, its cold start
(ADR 0042; drawn from a second stream, so that an always-warm, unlimited
backend gives exactly the numbers it gave before). Vectorised over all samples at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compoundry.core.dag import topological_levels


@dataclass
class PipelineLatency:
    p95_s: np.ndarray  # per interval (NaN where the pipeline had no request)
    steady_p95_s: float  # the same pipeline with every component warm and unloaded
    sla_s: float
    cold_share: float  # sampled requests that waited for a cold start somewhere

    @property
    def breach_share(self) -> float:
        seen = ~np.isnan(self.p95_s)
        return float((self.p95_s[seen] > self.sla_s).mean()) if seen.any() else 0.0


def queue_wait_mean(servers: np.ndarray, calls: np.ndarray, tick_s: float, service_s: float, ca2: float,
                    cs2: float) -> np.ndarray:
    """Mean M/G/c wait per tick (Sakasegawa), for utilisations below 1 (the fluid queue covers the rest)."""
    m = np.maximum(servers, 1.0)
    rho = np.clip(calls * service_s / tick_s / m, 0.0, 0.98)
    return service_s * rho ** (np.sqrt(2 * (m + 1)) - 1) / (m * (1 - rho)) * (ca2 + cs2) / 2


def sample_times(counts: np.ndarray, tick_s: float, per_interval: int, samples: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times ``[intervals, samples]`` drawn in proportion to the per-tick counts, and which intervals had any."""
    n_int = len(counts) // per_interval
    cum = np.concatenate(([0], np.cumsum(counts[: n_int * per_interval])))
    lo, hi = cum[:-1:per_interval][:n_int], cum[per_interval::per_interval][:n_int]
    u = (np.arange(samples) + rng.uniform(size=(n_int, samples))) / samples
    target = lo[:, None] + u * (hi - lo)[:, None]
    tick = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(counts) - 1)
    return (tick + rng.uniform(size=tick.shape)) * tick_s, hi > lo


def pipeline_latency(scenario, name: str, counts: np.ndarray, result, calls: np.ndarray, trace_cv: float,
                     samples: int = 200, seed: int = 0) -> PipelineLatency:
    """Per-interval P95 of one pipeline under one policy's records."""
    rng, remote_rng = np.random.default_rng(seed), np.random.default_rng([seed, 42])
    pipeline, dt = scenario.pipelines[name], scenario.tick_s
    per_interval = max(1, int(round(scenario.interval_s / dt)))
    arrival, seen = sample_times(counts, dt, per_interval, samples, rng)
    rec, idx, n = result.records, {c: i for i, c in enumerate(result.components)}, calls.shape[0]
    finish: dict[str, np.ndarray] = {}
    cold = np.zeros(arrival.shape, dtype=bool)
    for level in topological_levels(pipeline.dependencies):
        for step in level:
            component = pipeline.steps[step].component
            i, model = idx[component], scenario.models[component]
            reach = arrival.copy()
            for dep in pipeline.steps[step].depends_on:
                np.maximum(reach, finish[dep], out=reach)
            k = (np.minimum(reach, (n - 1) * dt) // dt).astype(np.int64)  # inf: no replica was ever coming
            ratio = scenario.ratio(name, step)
            ca2 = 1 + ratio * (trace_cv ** 2 - 1)
            own = calls[:, i] * (1.0 - rec.external[:, i])  # spilled calls do not queue at the replicas
            wq = queue_wait_mean(rec.servers[:, i], own, dt, model.service_s, ca2, model.service_cv ** 2)
            cold_wait = np.maximum(0.0, k * dt + rec.ready_in[k, i] - reach)
            wait = cold_wait + rec.ahead_s[k, i] + wq[k] * rng.exponential(size=reach.shape)
            external = rng.uniform(size=reach.shape) < rec.external[k, i]
            remote_cold = _remote_cold_wait(model, rec.ext_cold[k, i], k * dt - reach, remote_rng)
            wait = np.where(external, model.serverless_overhead_s + rec.ext_wait_s[k, i] + remote_cold, wait)
            cold |= np.where(external, remote_cold > 0, cold_wait > 0)
            runs = rng.uniform(size=reach.shape) < ratio
            finish[step] = reach + runs * (wait + _service(model, reach.shape, rng))
    total = np.max(np.stack(list(finish.values())), axis=0) - arrival
    with np.errstate(invalid="ignore"):  # intervals without traffic may hold inf - inf; they are masked
        p95 = np.where(seen, np.percentile(total, 95, axis=1), np.nan)
    return PipelineLatency(p95, steady_p95(scenario, name, rng), pipeline.sla_ms / 1000,
                           float(cold[seen].mean()) if seen.any() else 0.0)


def _remote_cold_wait(model, share: np.ndarray, tick_offset: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cold-start wait of serverless calls: ``share`` of them wait until ``cold_start_s`` after their tick's start."""
    cold_s = model.serverless.cold_start_s
    if cold_s <= 0 or not share.any():
        return np.zeros(share.shape)
    return np.where(rng.uniform(size=share.shape) < share, np.maximum(0.0, tick_offset + cold_s), 0.0)


def steady_p95(scenario, name: str, rng: np.random.Generator, samples: int = 20_000) -> float:
    """P95 of the pipeline with every component warm and idle: service times along the DAG only."""
    pipeline = scenario.pipelines[name]
    finish: dict[str, np.ndarray] = {}
    for level in topological_levels(pipeline.dependencies):
        for step in level:
            model = scenario.models[pipeline.steps[step].component]
            start = np.zeros(samples)
            for dep in pipeline.steps[step].depends_on:
                np.maximum(start, finish[dep], out=start)
            runs = rng.uniform(size=samples) < scenario.ratio(name, step)
            finish[step] = start + runs * _service(model, (samples,), rng)
    return float(np.percentile(np.max(np.stack(list(finish.values())), axis=0), 95))


def _service(model, shape, rng: np.random.Generator) -> np.ndarray:
    """Lognormal service times of the model's mean and CV."""
    sigma2 = np.log1p(model.service_cv ** 2)
    return rng.lognormal(np.log(model.service_s) - sigma2 / 2, np.sqrt(sigma2), size=shape)
