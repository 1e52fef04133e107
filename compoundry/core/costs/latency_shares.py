"""Latency decomposition per pipeline: which component holds up the answer (study lesson 2).

Pure, over metering records. A request's steps are placed on its timeline
from their records (``timestamp`` is when a call started; it ended
``queue_ms + cold_start_ms + compute_ms`` later); the critical path is the
chain of steps the last one waited for (:func:`compoundry.core.dag.critical_path`,
the executor's own rule), and its length is the sum of those steps'
durations. A component's *share* is its time on critical paths over the sum
of the critical paths of the pipeline's requests: a fast model that is always
on the path can matter more than a slow one that runs beside it.

Only registered pipelines (whose step dependencies are known) are
decomposed; shadow calls are left out (nobody waited for them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from compoundry.core.costs.records import MeteringRecord, to_utc
from compoundry.core.dag import critical_path


@dataclass(frozen=True)
class ComponentShare:
    """One (pipeline, step, component) on the critical path."""

    pipeline: str
    step: str
    component: str
    requests: int         # requests in which the step ran
    on_path: int          # ... and was on the critical path
    path_ms: float        # time it contributed to critical paths, summed over requests
    share: float          # path_ms / the pipeline's summed critical-path ms
    cold_start_ms: float  # of path_ms: held for a cold start
    queue_ms: float       # of path_ms: waiting in the lane (when metered separately)


@dataclass(frozen=True)
class PipelineLatency:
    pipeline: str
    requests: int
    mean_path_ms: float
    p50_path_ms: float
    p95_path_ms: float
    bottleneck: str       # the component with the largest share


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of a non-empty sequence; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def decompose(records: Iterable[MeteringRecord], deps: Mapping[str, Mapping[str, Iterable[str]]]
              ) -> tuple[list[PipelineLatency], list[ComponentShare]]:
    """Per pipeline: critical-path percentiles and each (step, component)'s share of it.

    ``deps`` is ``pipeline -> step -> the steps it depends on`` (pipelines.yaml).
    """
    requests: dict[tuple[str, str], list[MeteringRecord]] = defaultdict(list)
    for r in records:
        if not r.shadow and r.step and r.pipeline_id in deps:
            requests[(r.pipeline_id, r.request_id)].append(r)
    paths: dict[str, list[float]] = defaultdict(list)
    acc: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0])
    for (pipeline, _), calls in requests.items():
        steps = _steps(calls)
        started = {s: v[0] for s, v in steps.items()}
        ended = {s: v[1] for s, v in steps.items()}
        path = set(critical_path(deps[pipeline], started, ended))
        paths[pipeline].append(sum(ended[s] - started[s] for s in path))
        for step, (start, end, parts) in steps.items():
            total = sum(d for _, d, _, _ in parts) or 1.0
            for component, duration, cold, queue in parts:
                row = acc[(pipeline, step, component)]
                row[0] += 1
                if step in path:
                    weight = duration / total  # a step that fell back to another component splits its span
                    row[1] += 1
                    row[2] += (end - start) * weight
                    row[3] += cold
                    row[4] += queue
    shares = [ComponentShare(p, s, c, int(v[0]), int(v[1]), round(v[2], 3),
                             round(v[2] / sum(paths[p]), 4) if sum(paths[p]) else 0.0, round(v[3], 3), round(v[4], 3))
              for (p, s, c), v in acc.items()]
    shares.sort(key=lambda x: (x.pipeline, -x.share, x.step))
    summary = []
    for pipeline, lengths in sorted(paths.items()):
        by_component: dict[str, float] = defaultdict(float)
        for x in shares:
            if x.pipeline == pipeline:
                by_component[x.component] += x.path_ms
        summary.append(PipelineLatency(
            pipeline, len(lengths), round(sum(lengths) / len(lengths), 3), round(percentile(lengths, 50), 3),
            round(percentile(lengths, 95), 3), max(sorted(by_component), key=by_component.get, default="")))
    return summary, shares


def _steps(calls: list[MeteringRecord]) -> dict[str, tuple[float, float, list[tuple[str, float, float, float]]]]:
    """``step -> (start ms, end ms, [(component, duration, cold, queue)])`` relative to the first call."""
    t0 = min(to_utc(r.timestamp) for r in calls)
    steps: dict[str, tuple[float, float, list]] = {}
    for r in calls:
        duration = r.queue_ms + r.cold_start_ms + r.compute_ms
        start = (to_utc(r.timestamp) - t0) / timedelta(milliseconds=1)
        end = start + duration
        if r.step in steps:
            s, e, parts = steps[r.step]
            steps[r.step] = (min(s, start), max(e, end), parts)
        else:
            steps[r.step] = (start, end, [])
        steps[r.step][2].append((r.component, duration, r.cold_start_ms, r.queue_ms))
    return steps
