"""Database adapter of the cost report: the window's metering rows and replica lifetimes as DataFrames
(what the gate validates) and as plain records (what the cost model reads).

Portable SQL only (SQLite and PostgreSQL). SQLite hands back naive
datetimes for timezone columns; they were written in UTC, so every
timestamp is made aware UTC here, once.
"""

from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from compoundry.core.costs.cost_model import ReplicaInterval
from compoundry.core.costs.records import RECORD_FIELDS, MeteringRecord, to_utc
from compoundry.store.tables import Deployment, Replica
from compoundry.store.tables import metering_table as m

LIVE = ("starting", "ready", "draining")


def metering_frame(engine: sa.Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Rows with ``since <= timestamp < until``, indexed by their row id (the gate names rows by it)."""
    query = (sa.select(m.c.id, *(m.c[name] for name in RECORD_FIELDS))
             .where(m.c.timestamp >= to_utc(since), m.c.timestamp < to_utc(until)).order_by(m.c.id))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    frame = pd.DataFrame(rows, columns=["id", *RECORD_FIELDS])
    frame["timestamp"] = _utc_column(frame["timestamp"])
    return frame.set_index("id", drop=False)


def replica_frame(engine: sa.Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Replicas alive at some point of ``[since, until)``, with their deployment's component, by replica id.

    A terminal replica without ``stopped_at`` (written before the column
    existed) is included when it started in the window, so the gate can name it.
    """
    r, d = Replica.__table__, Deployment.__table__
    since, until = to_utc(since), to_utc(until)
    alive = sa.or_(r.c.stopped_at > since, sa.and_(r.c.stopped_at.is_(None), r.c.status.in_(LIVE)),
                   sa.and_(r.c.stopped_at.is_(None), r.c.started_at >= since))
    query = (sa.select(r.c.id.label("replica_id"), r.c.deployment_id, d.c.component, r.c.status, r.c.started_at,
                       r.c.stopped_at)
             .join(d, r.c.deployment_id == d.c.id).where(r.c.started_at < until, alive).order_by(r.c.id))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    frame = pd.DataFrame(rows, columns=["replica_id", "deployment_id", "component", "status", "started_at",
                                        "stopped_at"])
    for column in ("started_at", "stopped_at"):
        frame[column] = _utc_column(frame[column])
    return frame.set_index("replica_id", drop=False)


def frame_records(frame: pd.DataFrame) -> list[MeteringRecord]:
    """Plain records from a validated metering frame."""
    return [MeteringRecord(**{name: _plain(row[name]) for name in RECORD_FIELDS} | {
        "timestamp": row["timestamp"].to_pydatetime(), "step": _plain(row["step"]),
        "shadow": bool(row["shadow"])}) for _, row in frame.iterrows()]


def frame_intervals(frame: pd.DataFrame) -> list[ReplicaInterval]:
    """Replica lifetimes from a validated replica frame."""
    return [ReplicaInterval(row["replica_id"], row["deployment_id"], row["component"],
                            row["started_at"].to_pydatetime(),
                            None if pd.isna(row["stopped_at"]) else row["stopped_at"].to_pydatetime())
            for _, row in frame.iterrows()]


def _utc_column(values: pd.Series) -> pd.Series:
    return pd.Series([pd.NaT if v is None else pd.Timestamp(to_utc(v)) for v in values], index=values.index,
                     dtype="datetime64[us, UTC]")


def _plain(value):
    """numpy/pandas scalars and NaN -> Python values (records are plain data)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
