"""The cost model of the cost report: pure functions over metering records and replica lifetimes.

Two tariffs, chosen by the mode a call ran in (docs/decisions/0020):

* **replica-billed** (``dedicated``, ``auto`` on own replicas): a deployment's
  replicas cost ``replica_hour`` for every second they ran inside the window,
  busy or idle. That cost is spread over the deployment's calls in proportion
  to their ``compute_ms`` (:func:`~compoundry.core.costs.records.share_replica_cost`);
  a deployment without calls keeps it as *idle* cost. The call's own
  ``cost`` (its would-be pay-per-use price) is not added: the instance already
  paid for that work.
* **usage-billed** (``serverless``, ``external``): each call costs what the
  gateway priced at call time (``per_call`` + ``per_1k_tokens``), in the
  record's ``cost``; their replicas, if any, are not billed by time.

A deployment's replicas are billed by time when its calls in the window ran
replica-billed, or, with no calls, when its component's configured mode is. Every figure is attributed to one ``(pipeline, component, variant,
mode, tenant)`` line; :func:`rollup` sums lines along any of those keys.

A component without a tariff (removed from the config before any history of
its prices was kept, docs/decisions/0031) is never an error: its calls cost
what the gateway priced them at call time (the record's ``cost``, whatever the
mode) and its replica time, whose price is unknown, is not billed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime

from compoundry.core.costs.records import (
    SHED,
    MeteringRecord,
    PriceList,
    price_call,
    share_replica_cost,
    to_utc,
)

REPLICA_BILLED = frozenset({"dedicated", "auto"})
DIMENSIONS = ("pipeline", "component", "variant", "mode", "tenant")
DIRECT = "(direct)"  # calls made outside any pipeline (no X-Pipeline-Id)
IDLE = "(idle)"      # replica time of a deployment that no call used


@dataclass(frozen=True)
class ReplicaInterval:
    """One replica's life: ``stopped_at`` None means still running."""

    replica_id: str
    deployment_id: str
    component: str
    started_at: datetime
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class Tariff:
    """What the cost model needs of a component's config."""

    mode: str
    prices: PriceList
    min_replicas: int = 0
    target_concurrency: float = 1.0

    @classmethod
    def of(cls, component) -> Tariff:
        """From a ``compoundry.config.models.Component``."""
        return cls(component.mode, component.prices, component.scaling.min_replicas,
                   component.scaling.target_concurrency)


@dataclass(frozen=True)
class CostLine:
    """Cost of one ``(pipeline, component, variant, mode, tenant)``; ``*`` in a rolled-up key."""

    pipeline: str
    component: str
    variant: str
    mode: str
    tenant: str
    calls: int = 0
    errors: int = 0
    tokens: int = 0
    compute_ms: float = 0.0
    replica_s: float = 0.0     # replica-seconds attributed to this line
    usage_cost: float = 0.0    # pay-per-use calls
    replica_cost: float = 0.0  # its share of replica-billed deployments

    @property
    def cost(self) -> float:
        return self.usage_cost + self.replica_cost

    def key(self, by: Sequence[str]) -> tuple[str, ...]:
        return tuple(getattr(self, d) for d in by)


@dataclass(frozen=True)
class Scenario:
    """Actual cost of a (pipeline, component) against the same traffic all-dedicated and all-serverless."""

    pipeline: str
    component: str
    actual: float
    all_dedicated: float
    all_serverless: float


def overlap_s(started: datetime, stopped: datetime | None, since: datetime, until: datetime) -> float:
    """Seconds of ``[started, stopped or until)`` inside ``[since, until)``."""
    start = max(to_utc(started), to_utc(since))
    end = min(to_utc(stopped) if stopped is not None else to_utc(until), to_utc(until))
    return max(0.0, (end - start).total_seconds())


def replica_seconds(intervals: Iterable[ReplicaInterval], since: datetime, until: datetime) -> dict[str, float]:
    """``deployment_id -> replica-seconds`` inside the window, summed over its replicas."""
    seconds: dict[str, float] = defaultdict(float)
    for i in intervals:
        seconds[i.deployment_id] += overlap_s(i.started_at, i.stopped_at, since, until)
    return dict(seconds)


def pipeline_of(record: MeteringRecord) -> str:
    return record.pipeline_id or DIRECT


def cost_lines(records: Iterable[MeteringRecord], intervals: Iterable[ReplicaInterval],
               tariffs: Mapping[str, Tariff], since: datetime, until: datetime) -> list[CostLine]:
    """Every cost of the window on its line; lines sorted by cost, highest first.

    Records should be those of ``[since, until)``; replica time is clipped to
    the window. A component missing from ``tariffs`` is priced as recorded (see the module docstring).
    """
    records = list(records)
    intervals = list(intervals)
    lines: dict[tuple[str, ...], dict] = defaultdict(lambda: defaultdict(float))
    by_deployment: dict[str, list[MeteringRecord]] = defaultdict(list)
    for r in records:
        acc = lines[(pipeline_of(r), r.component, r.variant, r.mode, r.tenant)]
        acc["calls"] += 1
        acc["errors"] += r.outcome.startswith("error:")
        acc["tokens"] += r.tokens
        acc["compute_ms"] += r.compute_ms
        if r.mode in REPLICA_BILLED and r.component in tariffs:
            by_deployment[r.deployment_id].append(r)
        elif r.outcome != SHED:
            acc["usage_cost"] += r.cost
    components = {i.deployment_id: i.component for i in intervals}
    for deployment, seconds in replica_seconds(intervals, since, until).items():
        tariff = tariffs.get(components[deployment])
        if tariff is None or seconds <= 0 or not (deployment in by_deployment or tariff.mode in REPLICA_BILLED):
            continue
        total = tariff.prices.replica_hour * seconds / 3600.0
        calls = [r for r in by_deployment.get(deployment, ()) if r.outcome != SHED]
        keys = {_line_key(r): 0.0 for r in calls}
        for r in calls:
            keys[_line_key(r)] += r.compute_ms
        shares = share_replica_cost(total, {"\x1f".join(k): w for k, w in keys.items()})
        if not shares:  # no call used it: idle capacity, still paid for
            shares = {"\x1f".join((IDLE, components[deployment], IDLE, tariff.mode, IDLE)): total}
        for joined, amount in shares.items():
            acc = lines[tuple(joined.split("\x1f"))]
            acc["replica_cost"] += amount
            acc["replica_s"] += seconds * amount / total if total else 0.0
    result = [CostLine(*key, calls=int(v["calls"]), errors=int(v["errors"]), tokens=int(v["tokens"]),
                       compute_ms=v["compute_ms"], replica_s=v["replica_s"], usage_cost=v["usage_cost"],
                       replica_cost=v["replica_cost"]) for key, v in lines.items()]
    return sorted(result, key=lambda line: (-line.cost, line.key(DIMENSIONS)))


def rollup(lines: Iterable[CostLine], by: Sequence[str]) -> list[CostLine]:
    """Sum lines over every dimension not in ``by`` (those read ``*``); costliest first."""
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; choose from {DIMENSIONS}")
    numeric = [f.name for f in fields(CostLine) if f.name not in DIMENSIONS]
    sums: dict[tuple[str, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in lines:
        acc = sums[line.key(by)]
        for name in numeric:
            acc[name] += getattr(line, name)
    blank = CostLine(*("*",) * len(DIMENSIONS))
    result = []
    for key, acc in sums.items():
        values = {n: (int(acc[n]) if isinstance(getattr(blank, n), int) else acc[n]) for n in numeric}
        result.append(replace(blank, **dict(zip(by, key)), **values))
    return sorted(result, key=lambda line: (-line.cost, line.key(by)))


def dedicated_replicas(records: Iterable[MeteringRecord], tariff: Tariff, since: datetime) -> int:
    """Replicas an all-dedicated setup would hold for this component's traffic.

    Little's law per hour of the window: mean calls in flight = busy seconds /
    3600; the busiest hour over ``target_concurrency`` replicas, rounded up, at
    least ``max(1, min_replicas)`` (an always-on component has one replica even when quiet).
    """
    busy: dict[int, float] = defaultdict(float)
    for r in records:
        if r.outcome != SHED:
            hour = int((to_utc(r.timestamp) - to_utc(since)).total_seconds() // 3600)
            busy[hour] += (r.queue_ms + r.cold_start_ms + r.compute_ms) / 1000.0
    peak = max(busy.values(), default=0.0) / 3600.0
    return max(1, tariff.min_replicas, math.ceil(peak / tariff.target_concurrency - 1e-9))


def scenarios(records: Iterable[MeteringRecord], lines: Iterable[CostLine], components: Iterable[str],
              tariffs: Mapping[str, Tariff], since: datetime, until: datetime) -> list[Scenario]:
    """What the window's traffic cost, per (pipeline, component), and what it would have cost
    all-dedicated (``dedicated_replicas`` held for the whole window, shared by compute time) or
    all-serverless (every call at ``per_call`` + ``per_1k_tokens`` of today's prices).

    ``components`` are those that existed in the window (had calls or replicas):
    each would have kept at least one dedicated replica. Shed calls cost nothing in any scenario.
    A component without a tariff counts at its recorded cost in both: there is no price to compare with.
    """
    records = list(records)
    window_h = max(0.0, (to_utc(until) - to_utc(since)).total_seconds()) / 3600.0
    actual: dict[tuple[str, str], float] = defaultdict(float)
    for line in rollup(lines, ("pipeline", "component")):
        actual[(line.pipeline, line.component)] += line.cost
    serverless: dict[tuple[str, str], float] = defaultdict(float)
    compute: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_component: dict[str, list[MeteringRecord]] = defaultdict(list)
    for r in records:
        by_component[r.component].append(r)
        tariff = tariffs.get(r.component)
        serverless[(pipeline_of(r), r.component)] += (r.cost if r.outcome != SHED else 0.0) if tariff is None \
            else price_call(tariff.prices, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                            outcome=r.outcome)
        if r.outcome != SHED:
            compute[r.component][pipeline_of(r)] += r.compute_ms
    dedicated: dict[tuple[str, str], float] = defaultdict(float)
    for component in set(components) | set(by_component):
        tariff = tariffs.get(component)
        if tariff is None:
            for (pipeline, name), amount in actual.items():
                if name == component:
                    dedicated[(pipeline, name)] += amount
            continue
        total = dedicated_replicas(by_component.get(component, ()), tariff, since) * window_h * \
            tariff.prices.replica_hour
        shares = share_replica_cost(total, compute.get(component, {})) or {IDLE: total}
        for pipeline, amount in shares.items():
            dedicated[(pipeline, component)] += amount
    keys = sorted(set(actual) | set(serverless) | set(dedicated))
    return [Scenario(p, c, actual.get((p, c), 0.0), dedicated.get((p, c), 0.0), serverless.get((p, c), 0.0))
            for p, c in keys]


def sum_scenarios(items: Iterable[Scenario], by: str | None) -> list[Scenario]:
    """Scenarios summed per ``"pipeline"``, per ``"component"``, or overall (``by=None``); ``*`` elsewhere."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for s in items:
        acc = sums[(s.pipeline if by == "pipeline" else "*", s.component if by == "component" else "*")]
        for i, value in enumerate((s.actual, s.all_dedicated, s.all_serverless)):
            acc[i] += value
    return sorted((Scenario(*key, *v) for key, v in sums.items()), key=lambda s: (-s.actual, s.pipeline, s.component))


def _line_key(r: MeteringRecord) -> tuple[str, ...]:
    return (pipeline_of(r), r.component, r.variant, r.mode, r.tenant)
