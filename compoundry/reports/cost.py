"""The cost report: gate the window's data, then cost it, as tables (DataFrames) ready to write.

The steps are separate so the flow can publish the gate before anything else
happens and the CLI can run the same thing without Prefect:

1. :func:`check` loads the window's metering rows and replica lifetimes and
   runs the metering gate (GE) on them; it returns the gate results and the
   frames. Its one write is the config history (the config in force now,
   appended when it changed): never a report file or artifact.
2. :func:`build` turns validated frames into a :class:`CostReport` with the
   pure cost model (``compoundry.core.costs.cost_model``) and latency decomposition
   (``compoundry.core.costs.latency_shares``).

The config changes under the data (docs/decisions/0031): a component or
pipeline no longer configured is *retired*, priced from its last history entry
(else at the cost recorded at call time) and flagged in a ``retired`` column of
every table; a pipeline id no pipeline ever had is ``(unregistered)``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from compoundry.core.costs.cost_model import (
    Tariff,
    cost_lines,
    rollup,
    scenarios,
    sum_scenarios,
)
from compoundry.core.costs.history import attributed_pipeline, config_entries, retired
from compoundry.core.costs.latency_shares import decompose
from compoundry.core.costs.records import to_utc
from compoundry.gates import GateResult, validate_frame
from compoundry.gates.metering_suite import metering_expectations, replica_expectations
from compoundry.reports.data import (
    frame_intervals,
    frame_records,
    metering_frame,
    replica_frame,
)
from compoundry.store import config_history

#: tables of a report, in the order they are written and shown
COST_VIEWS = {"by_pipeline": ("pipeline",), "by_component": ("component",), "by_variant": ("component", "variant"),
              "by_mode": ("mode",), "by_tenant": ("tenant",),
              "lines": ("pipeline", "component", "variant", "mode", "tenant")}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(ValueError):
    """Bad input to a report (a window, a format, an output location): a message for a person."""


def parse_moment(text: str, now: datetime, option: str = "--since") -> datetime:
    """``2026-11-01``, ``2026-11-01T08:00[:00][Z|+01:00]`` (naive = UTC) or a duration back from ``now``
    (``90m``, ``24h``, ``7d``, ``2w``); aware UTC."""
    value = text.strip()
    match = _RELATIVE.match(value.lower())
    if match:
        return to_utc(now) - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise ReportError(f"{option} {text!r}: expected an ISO date or time (2026-11-01, 2026-11-01T08:00Z) "
                          "or a duration back from now (90m, 24h, 7d, 2w)") from None


def window(since: str | None, until: str | None, now: datetime, default_hours: float = 24) -> tuple[datetime, datetime]:
    """The report window; ``until`` is capped at ``now`` (running replicas are billed up to now)."""
    end = min(parse_moment(until, now, "--until"), to_utc(now)) if until else to_utc(now)
    start = parse_moment(since, now) if since else end - timedelta(hours=default_hours)
    if start >= end:
        raise ReportError(f"empty window: since {start.isoformat()} is not before until {end.isoformat()}")
    return start, end


@dataclass(frozen=True)
class Checked:
    """What :func:`check` read, and the gate's verdict on it."""

    since: datetime
    until: datetime
    gates: tuple[GateResult, ...]
    metering: pd.DataFrame = field(repr=False)
    replicas: pd.DataFrame = field(repr=False)
    history: dict = field(default_factory=dict, repr=False)  # (kind, name) -> latest config history entry

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class CostReport:
    since: datetime
    until: datetime
    tables: dict[str, pd.DataFrame]
    totals: dict[str, float]
    retired: dict[str, frozenset[str]] = field(default_factory=dict)  # "component"/"pipeline" -> retired names

    @property
    def name(self) -> str:
        return f"cost-{self.since:%Y%m%dT%H%M}-{self.until:%Y%m%dT%H%M}"


def check(engine: sa.Engine, config, since: datetime, until: datetime) -> Checked:
    """Note the config in the history, load the window and run the metering gate; writes no report."""
    history = config_history.note(engine, config_entries(config.components, config.pipelines), now_utc())
    metering, replicas = metering_frame(engine, since, until), replica_frame(engine, since, until)
    gates = (validate_frame("metering-records", metering, metering_expectations(since, until)),
             validate_frame("replica-lifetimes", replicas, replica_expectations()))
    return Checked(since, until, gates, metering, replicas, history)


def build(checked: Checked, config) -> CostReport:
    """Cost and latency tables of a window that passed the gate."""
    if not checked.passed:
        raise ValueError("build() needs data that passed the metering gate")
    since, until = checked.since, checked.until
    gone = retired(checked.history, config_entries(config.components, config.pipelines))
    tariffs = {**gone.tariffs, **{name: Tariff.of(c) for name, c in config.components.items()}}
    deps = {**gone.pipelines,
            **{name: {s: list(step.depends_on) for s, step in p.steps.items()} for name, p in config.pipelines.items()}}
    records = [replace(r, pipeline_id=attributed_pipeline(r.pipeline_id, deps)) for r in frame_records(checked.metering)]
    intervals = frame_intervals(checked.replicas)
    present = {r.component for r in records} | {i.component for i in intervals}
    flags = {"component": frozenset(present - set(config.components)),
             "pipeline": frozenset({r.pipeline_id for r in records} & (set(gone.pipelines) - set(config.pipelines)))}
    lines = cost_lines(records, intervals, tariffs, since, until)
    tables = {name: _lines_frame(rollup(lines, by), by, flags) for name, by in COST_VIEWS.items()}
    what_if = scenarios(records, lines, present, tariffs, since, until)
    tables["counterfactual_by_pipeline"] = _scenario_frame(sum_scenarios(what_if, "pipeline"), "pipeline", flags)
    tables["counterfactual_by_component"] = _scenario_frame(sum_scenarios(what_if, "component"), "component", flags)
    summary, shares = decompose(records, deps)
    tables["latency_by_pipeline"] = _flagged(pd.DataFrame(
        [asdict(s) for s in summary], columns=["pipeline", "requests", "mean_path_ms", "p50_path_ms", "p95_path_ms",
                                               "bottleneck"]), flags)
    tables["critical_path_shares"] = _flagged(pd.DataFrame(
        [asdict(s) for s in shares], columns=["pipeline", "step", "component", "requests", "on_path", "path_ms",
                                              "share", "cold_start_ms", "queue_ms"]), flags)
    total = sum_scenarios(what_if, None)
    totals = {"calls": float(len(records)), "actual": round(sum(line.cost for line in lines), 6),
              "all_dedicated": round(total[0].all_dedicated, 6) if total else 0.0,
              "all_serverless": round(total[0].all_serverless, 6) if total else 0.0}
    return CostReport(since, until, tables, totals, flags)


def now_utc() -> datetime:
    return datetime.now(UTC)


def _flagged(frame: pd.DataFrame, flags: dict[str, frozenset[str]]) -> pd.DataFrame:
    """Add ``retired``: the row's component or pipeline is no longer in the config."""
    retired = pd.Series(False, index=frame.index, dtype=bool)
    for column, names in flags.items():
        if column in frame.columns and names:
            retired |= frame[column].isin(names)
    frame["retired"] = retired
    return frame


def _lines_frame(lines, by, flags) -> pd.DataFrame:
    rows = [{**{d: getattr(x, d) for d in by}, "calls": x.calls, "errors": x.errors, "tokens": x.tokens,
             "compute_s": round(x.compute_ms / 1000, 3), "replica_s": round(x.replica_s, 3),
             "usage_cost": round(x.usage_cost, 6), "replica_cost": round(x.replica_cost, 6), "cost": round(x.cost, 6)}
            for x in lines]
    return _flagged(pd.DataFrame(rows, columns=[*by, "calls", "errors", "tokens", "compute_s", "replica_s",
                                                "usage_cost", "replica_cost", "cost"]), flags)


def _scenario_frame(items, by: str, flags) -> pd.DataFrame:
    return _flagged(pd.DataFrame(
        [{by: getattr(s, by), "actual": round(s.actual, 6), "all_dedicated": round(s.all_dedicated, 6),
          "all_serverless": round(s.all_serverless, 6)} for s in items],
        columns=[by, "actual", "all_dedicated", "all_serverless"]), flags)
