"""Put the spooled metering of gateway processes that died (SIGKILL, OOM, power) into the database.

Run when a gateway starts, before it serves: every segment no live process holds is read, its records
that are not in the database yet are inserted (a segment may outlive the flush that wrote it: a
process can die between the insert and the delete), and the segment is deleted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa

from compoundry.core.costs.records import MeteringRecord, to_utc
from compoundry.metering.spool import orphaned_segments, read_segment
from compoundry.store.tables import metering_table

log = logging.getLogger(__name__)


def recover_spools(directory: Path, engine: sa.Engine) -> int:
    """Insert what dead processes spooled and did not write; returns how many records were recovered."""
    recovered = 0
    for path, fd in orphaned_segments(directory):
        try:
            records = read_segment(path)
            missing = _not_in_database(engine, records)
            if missing:
                with engine.begin() as conn:
                    conn.execute(metering_table.insert(), [_row(r) for r in missing])
            recovered += len(missing)
            path.unlink(missing_ok=True)
        except Exception:  # one unreadable segment must not stop a gateway from starting: keep it, say so
            log.exception("could not recover metering spool segment %s; it is kept", path)
        finally:
            os.close(fd)
    if recovered:
        log.warning("recovered %d metering record(s) a stopped gateway had not written", recovered)
    return recovered


def _key(request_id: str, component: str, step: str | None, timestamp) -> tuple:
    return request_id, component, step or "", to_utc(timestamp).isoformat(timespec="milliseconds")


def _not_in_database(engine: sa.Engine, records: list[MeteringRecord]) -> list[MeteringRecord]:
    if not records:
        return []
    t = metering_table
    ids = sorted({r.request_id for r in records})
    present = set()
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(sa.select(t.c.request_id, t.c.component, t.c.step, t.c.timestamp)
                                .where(t.c.request_id.in_(ids[start:start + 500])))
            present |= {_key(*row) for row in rows}
    return [r for r in records if _key(r.request_id, r.component, r.step, r.timestamp) not in present]


def _row(rec: MeteringRecord) -> dict:
    return {**asdict(rec), "timestamp": to_utc(rec.timestamp)}
