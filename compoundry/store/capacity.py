"""Capacity rows: temporary replica floors (scheduled warm-ups) and the replica facts scaling reads.

Flows write floors; the gateway's autoscaler reads them with the replicas of
routed deployments, off the request path, once per tick.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select

from compoundry.store.tables import (
    CapacityFloor,
    Deployment,
    DeploymentStatus,
    Replica,
    utcnow,
)

LIVE = (DeploymentStatus.STARTING.value, DeploymentStatus.READY.value)


@dataclass(frozen=True)
class Floor:
    id: str
    component: str
    min_replicas: int
    starts_at: datetime
    ends_at: datetime
    source: str


@dataclass(frozen=True)
class ReplicaRow:
    id: str
    deployment_id: str
    url: str
    pid: int | None
    status: str
    ready_s: float | None


class CapacityStore:
    def __init__(self, store):
        self._store = store

    # --- floors ----------------------------------------------------------------
    def add_floor(self, component: str, min_replicas: int, hold: timedelta, source: str = "",
                  starts_at: datetime | None = None) -> Floor:
        if min_replicas < 0:
            raise ValueError("min_replicas must be >= 0")
        start = starts_at or utcnow()
        row = CapacityFloor(id=uuid.uuid4().hex[:16], component=component, min_replicas=min_replicas,
                            starts_at=start, ends_at=start + hold, source=source[:200])
        with self._store.transaction() as s:
            s.add(row)
        return _floor(row)

    def release(self, floor_id: str) -> bool:
        """End a floor now (the autoscaler then scales down on its usual idle rules)."""
        with self._store.transaction() as s:
            row = s.get(CapacityFloor, floor_id)
            if row is None or _aware(row.ends_at) <= utcnow():
                return False
            row.ends_at = utcnow()
            return True

    def floors(self, now: datetime | None = None, include_ended: bool = False) -> list[Floor]:
        now = now or utcnow()
        with self._store.session() as s:
            rows = [_floor(r) for r in s.scalars(select(CapacityFloor).order_by(CapacityFloor.starts_at))]
        return [f for f in rows if include_ended or (f.starts_at <= now < f.ends_at)]

    def active_floors(self, now: datetime | None = None) -> dict[str, int]:
        """``component -> min replicas`` of the floors in force now (the highest when several overlap)."""
        active: dict[str, int] = {}
        for f in self.floors(now):
            active[f.component] = max(active.get(f.component, 0), f.min_replicas)
        return active

    def purge_ended(self, older_than: timedelta = timedelta(days=30)) -> int:
        with self._store.transaction() as s:
            return s.execute(delete(CapacityFloor).where(CapacityFloor.ends_at < utcnow() - older_than)).rowcount

    # --- replicas ----------------------------------------------------------------
    def live_replicas(self, deployment_ids: list[str]) -> dict[str, list[ReplicaRow]]:
        """Starting and ready replicas of these deployments."""
        if not deployment_ids:
            return {}
        query = (select(Replica).where(Replica.deployment_id.in_(deployment_ids), Replica.status.in_(LIVE))
                 .order_by(Replica.id))
        grouped: dict[str, list[ReplicaRow]] = {d: [] for d in deployment_ids}
        with self._store.session() as s:
            for r in s.scalars(query):
                grouped[r.deployment_id].append(ReplicaRow(r.id, r.deployment_id, r.url, r.pid, r.status, r.ready_s))
        return grouped

    def bento_tags(self, deployment_ids: list[str]) -> dict[str, str | None]:
        if not deployment_ids:
            return {}
        with self._store.session() as s:
            rows = s.execute(select(Deployment.id, Deployment.bento_tag).where(Deployment.id.in_(deployment_ids)))
            return {d: tag for d, tag in rows}

    def record_ready(self, replica_id: str, ready_s: float) -> None:
        with self._store.transaction() as s:
            row = s.get(Replica, replica_id)
            if row is not None:
                row.ready_s = ready_s

    def cold_start_estimates(self, last: int = 5) -> dict[str, float]:
        """``component -> median seconds to ready`` over its last replicas that measured one."""
        query = (select(Deployment.component, Replica.ready_s).join(Deployment, Replica.deployment_id == Deployment.id)
                 .where(Replica.ready_s.is_not(None)).order_by(Replica.started_at.desc()))
        samples: dict[str, list[float]] = {}
        with self._store.session() as s:
            for component, ready_s in s.execute(query):
                if len(samples.setdefault(component, [])) < last:
                    samples[component].append(ready_s)
        return {c: round(statistics.median(v), 3) for c, v in samples.items()}


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone columns; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _floor(r: CapacityFloor) -> Floor:
    return Floor(r.id, r.component, r.min_replicas, _aware(r.starts_at), _aware(r.ends_at), r.source)
