"""Cost totals over metering records: the query the cost report builds on.

Portable SQL only (SQLite and PostgreSQL): sums and counts. No percentiles:
``percentile_cont`` exists on PostgreSQL but not SQLite; the report can fetch
compute times and use a pure percentile function if it needs p50.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from compoundry.metering.records import to_utc
from compoundry.metering.tables import metering_table as t

GroupBy = Literal["pipeline", "component", "tenant"]
_KEYS = {"pipeline": t.c.pipeline_id, "component": t.c.component, "tenant": t.c.tenant}


@dataclass(frozen=True)
class CostTotal:
    key: str
    calls: int
    errors: int
    cost: float
    prompt_tokens: int
    completion_tokens: int
    compute_ms: float  # summed: the weight for sharing replica-hour cost (records.share_replica_cost)


def cost_by(engine: sa.Engine, by: GroupBy, since: datetime, until: datetime) -> list[CostTotal]:
    """Totals per pipeline, component or tenant for calls in ``[since, until)``, costliest first."""
    if by not in _KEYS:
        raise ValueError(f"cost_by: by must be one of {sorted(_KEYS)}, not {by!r}")
    key = _KEYS[by]
    cost = sa.func.coalesce(sa.func.sum(t.c.cost), 0.0)
    query = (
        sa.select(
            key,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((t.c.outcome.like("error:%"), 1), else_=0)), 0),
            cost,
            sa.func.coalesce(sa.func.sum(t.c.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(t.c.completion_tokens), 0),
            sa.func.coalesce(sa.func.sum(t.c.compute_ms), 0.0),
        )
        .where(t.c.timestamp >= to_utc(since), t.c.timestamp < to_utc(until))
        .group_by(key)
        .order_by(cost.desc(), key)
    )
    with engine.connect() as conn:
        return [
            CostTotal(key=k, calls=int(n), errors=int(e), cost=float(c), prompt_tokens=int(p),
                      completion_tokens=int(o), compute_ms=float(ms))
            for k, n, e, c, p, o, ms in conn.execute(query)
        ]
