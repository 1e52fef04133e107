"""Traces from outside: a CSV file of requests, or the platform's own metering records (replay).

CSV: a header ``time,pipeline`` with an optional ``count`` column; ``time`` is
seconds from the start of the trace or an ISO 8601 timestamp (then seconds
from the first row). One row per request, or per (time, pipeline) with a count.
A bad row raises :class:`TraceError` naming the file and line.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from compoundry.sim.traffic import Trace


class TraceError(ValueError):
    """A trace that cannot be read; the message names file:line."""


def _seconds(value: str, origin: list) -> float:
    try:
        return float(value)
    except ValueError:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        if not origin:
            origin.append(moment)
        return moment - origin[0]


def read_trace(path: Path | str, tick_s: float, pipelines: set[str] | None = None) -> Trace:
    """Per-tick request counts of each pipeline from a CSV file."""
    path = Path(path)
    rows: list[tuple[float, str, int]] = []
    origin: list[float] = []
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"time", "pipeline"} <= set(reader.fieldnames):
                raise TraceError(f"{path}:1: the header must name the columns time,pipeline[,count]")
            for row in reader:
                line = reader.line_num
                try:
                    at, count = _seconds(row["time"], origin), int(row.get("count") or 1)
                except (TypeError, ValueError) as exc:
                    raise TraceError(f"{path}:{line}: {exc}") from None
                if at < 0 or count < 0 or not math.isfinite(at):
                    raise TraceError(f"{path}:{line}: time and count must be >= 0")
                if pipelines is not None and row["pipeline"] not in pipelines:
                    raise TraceError(f"{path}:{line}: unknown pipeline {row['pipeline']!r}; "
                                     f"known: {', '.join(sorted(pipelines))}")
                rows.append((at, row["pipeline"], count))
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror or exc}") from None
    if not rows:
        raise TraceError(f"{path}: no requests")
    return counts_trace(rows, tick_s)


def counts_trace(rows: list[tuple[float, str, int]], tick_s: float) -> Trace:
    """A trace from (seconds, pipeline, count) rows."""
    n = int(max(at for at, _, _ in rows) // tick_s) + 1
    counts: dict[str, np.ndarray] = {}
    for at, pipeline, count in rows:
        counts.setdefault(pipeline, np.zeros(n, dtype=np.int64))[int(at // tick_s)] += count
    return Trace(tick_s, counts)


def replay_metering(database_url: str, tick_s: float, since: datetime | None = None,
                    until: datetime | None = None) -> Trace:
    """The platform's recorded requests: one per request id (its first call), per pipeline."""
    import sqlalchemy as sa

    from compoundry.store.tables import metering_table as t

    query = sa.select(t.c.pipeline_id, sa.func.min(t.c.timestamp)).where(t.c.shadow.is_(False))
    if since is not None:
        query = query.where(t.c.timestamp >= since)
    if until is not None:
        query = query.where(t.c.timestamp < until)
    query = query.group_by(t.c.request_id, t.c.pipeline_id)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            found = [(p, ts) for p, ts in conn.execute(query) if p]
    finally:
        engine.dispose()
    if not found:
        raise TraceError(f"{database_url}: no metering records to replay")
    start = min(ts for _, ts in found)
    return counts_trace([((ts - start).total_seconds(), p, 1) for p, ts in found], tick_s)
