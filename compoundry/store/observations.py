"""Read what each variant of a running experiment did: metering rows, joined with feedback by request id.

The adapter between the platform database and :mod:`compoundry.core.experiments.decide`.
Shadow calls are left out (no user saw their answer); shed calls are left out
(they never reached a variant). A call counts as an error when its outcome is
``error:*`` or ``fallback``. Feedback counts only from the tenant that made the
request, once per request (the latest value wins).

Each value carries its *unit*, the key the variant was assigned by: the
request id for a request-keyed experiment (several calls of one pipeline
request to the component are one unit), the session or user key when the
metering rows record it (a ``unit_key`` column). Rows without it — the gateway
does not write one yet — fall back to the request id, and the observations say
so (``unit="request"``) so the evaluation artifact can warn.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa

from compoundry.core.costs.records import to_utc
from compoundry.core.experiments.decide import VariantObservations
from compoundry.store.tables import Feedback
from compoundry.store.tables import metering_table as m

f = Feedback.__table__


def _is_error(outcome: str) -> bool:
    return outcome.startswith("error:") or outcome == "fallback"


def observe(engine: sa.Engine, experiment, since: datetime, until: datetime) -> dict[str, VariantObservations]:
    """Per variant, the calls to the experiment's component in ``[since, until)``."""
    names = [v.name for v in experiment.variants]
    unit, unit_column = _unit(experiment)
    query = (sa.select(m.c.request_id, m.c.tenant, m.c.variant, m.c.outcome,
                       m.c.queue_ms + m.c.cold_start_ms + m.c.compute_ms, unit_column)
             .where(m.c.component == experiment.component, m.c.shadow.is_(False), m.c.variant.in_(names),
                    m.c.outcome != "shed", m.c.timestamp >= to_utc(since), m.c.timestamp < to_utc(until))
             .order_by(m.c.timestamp))
    calls: dict[str, list[tuple[str, str, bool, float, str]]] = defaultdict(list)
    with engine.connect() as conn:
        for request_id, tenant, variant, outcome, latency, key in conn.execute(query):
            calls[variant].append((request_id, tenant, _is_error(outcome), float(latency or 0.0),
                                   f"{tenant}/{key or request_id}"))
        feedback = _feedback(conn, experiment.metric.name, since) if experiment.metric.source == "feedback" else {}
    return {name: _observations(name, calls.get(name, []), experiment.metric, feedback, unit) for name in names}


def _unit(experiment) -> tuple[str, sa.ColumnElement]:
    """``(unit, column)``: the experiment's sticky key where the rows record it, else the request id."""
    if experiment.unit != "request" and "unit_key" in m.c:
        return experiment.unit, m.c["unit_key"]
    return "request", m.c.request_id


def _feedback(conn, name: str, since: datetime) -> dict[tuple[str, str], float]:
    """``(request_id, tenant) -> value``, the latest value per request."""
    query = (sa.select(f.c.request_id, f.c.tenant, f.c.value)
             .where(f.c.name == name, f.c.received_at >= to_utc(since)).order_by(f.c.received_at))
    return {(request_id, tenant): float(value) for request_id, tenant, value in conn.execute(query)}


def _observations(name: str, calls, metric, feedback, unit: str) -> VariantObservations:
    errors = sum(1 for _, _, error, _, _ in calls if error)
    latencies = tuple(latency for _, _, _, latency, _ in calls)
    if metric.source == "feedback":
        seen, values, keys = set(), [], []
        for request_id, tenant, _, _, key in calls:
            if (request_id, tenant) in feedback and request_id not in seen:
                seen.add(request_id)
                values.append(feedback[(request_id, tenant)])
                keys.append(key)
    elif metric.name == "success":
        values = [0.0 if error else 1.0 for _, _, error, _, _ in calls]
        keys = [key for *_, key in calls]
    else:  # latency_ms of the calls that answered
        values = [latency for _, _, error, latency, _ in calls if not error]
        keys = [key for _, _, error, _, key in calls if not error]
    return VariantObservations(name, len(calls), errors, latencies, tuple(values), tuple(keys), unit)
