"""Experiment runs and feedback in the platform database.

Flows start and end runs; the gateway reads which experiments have ended (off
the request path, like routes) and records feedback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select

from compoundry.store.tables import ExperimentRun, Feedback, utcnow

RUNNING = "running"
ENDED = ("promoted", "rolled_back", "concluded", "stopped")


@dataclass(frozen=True)
class RunView:
    id: str
    experiment: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    winner: str | None
    reason: str | None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def started_utc(self) -> datetime:
        """SQLite hands back naive datetimes; they were written in UTC."""
        return self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=timezone.utc)

    def hours_running(self, now: datetime) -> float:
        return (now - self.started_utc).total_seconds() / 3600


def _view(row: ExperimentRun) -> RunView:
    return RunView(row.id, row.experiment, row.status, row.started_at, row.ended_at, row.winner, row.reason)


class ExperimentStore:
    def __init__(self, store):
        self._store = store

    def start_run(self, experiment: str, flow_run_id: str | None = None) -> RunView:
        """A new running run; a still-running earlier one is stopped (metrics restart from now)."""
        with self._store.transaction() as s:
            for old in s.scalars(select(ExperimentRun).filter_by(experiment=experiment, status=RUNNING)):
                old.status, old.ended_at, old.reason = "stopped", utcnow(), "restarted"
            row = ExperimentRun(id=uuid.uuid4().hex, experiment=experiment, status=RUNNING, flow_run_id=flow_run_id)
            s.add(row)
            s.flush()
            return _view(row)

    def end_run(self, run_id: str, status: str, reason: str, winner: str | None = None) -> RunView:
        if status not in ENDED:
            raise ValueError(f"an experiment run ends as one of {', '.join(ENDED)}, not {status!r}")
        with self._store.transaction() as s:
            row = s.get(ExperimentRun, run_id)
            if row is None:
                raise KeyError(f"no experiment run {run_id!r}")
            row.status, row.ended_at, row.reason, row.winner = status, utcnow(), reason, winner
            return _view(row)

    def latest(self, experiment: str) -> RunView | None:
        with self._store.session() as s:
            row = s.scalars(select(ExperimentRun).filter_by(experiment=experiment)
                            .order_by(ExperimentRun.started_at.desc()).limit(1)).first()
            return _view(row) if row else None

    def runs(self, experiment: str | None = None) -> list[RunView]:
        query = select(ExperimentRun).order_by(ExperimentRun.started_at.desc())
        if experiment is not None:
            query = query.filter_by(experiment=experiment)
        with self._store.session() as s:
            return [_view(r) for r in s.scalars(query)]

    def ended(self) -> frozenset[str]:
        """Experiments whose latest run has ended: the gateway stops splitting them."""
        latest = (select(ExperimentRun.experiment, func.max(ExperimentRun.started_at).label("started"))
                  .group_by(ExperimentRun.experiment).subquery())
        query = (select(ExperimentRun.experiment, ExperimentRun.status)
                 .join(latest, (ExperimentRun.experiment == latest.c.experiment)
                       & (ExperimentRun.started_at == latest.c.started)))
        with self._store.session() as s:
            return frozenset(name for name, status in s.execute(query) if status != RUNNING)

    # --- feedback -------------------------------------------------------------
    def add_feedback(self, request_id: str, tenant: str, name: str, value: float, comment: str | None = None) -> str:
        feedback_id = uuid.uuid4().hex
        with self._store.transaction() as s:
            s.add(Feedback(id=feedback_id, request_id=request_id, tenant=tenant, name=name, value=float(value),
                           comment=comment))
        return feedback_id
