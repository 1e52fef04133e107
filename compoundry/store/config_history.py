"""The config history in the platform database: what each component and pipeline was configured as, over time.

Each cost report run notes the config in force (:func:`note`): only names whose
details changed since their latest row are appended, so the table grows with
config changes, not with runs. A report then prices a component removed since
from its last row (``compoundry.core.costs.history``, docs/decisions/0031).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from compoundry.core.costs.history import Key, changed
from compoundry.store.tables import ConfigHistoryRow

_table = ConfigHistoryRow.__table__


def latest(engine: sa.Engine) -> dict[Key, dict]:
    """``(kind, name) -> details`` of each name's latest row."""
    query = sa.select(_table.c.kind, _table.c.name, _table.c.details).order_by(_table.c.id)
    with engine.connect() as conn:
        return {(kind, name): json.loads(details) for kind, name, details in conn.execute(query)}


def note(engine: sa.Engine, current: Mapping[Key, dict], at: datetime) -> dict[Key, dict]:
    """Append the entries of ``current`` that changed; the history afterwards (latest row per name)."""
    history = latest(engine)
    new = changed(history, current)
    if new:
        rows = [{"kind": kind, "name": name, "details": json.dumps(details, sort_keys=True), "recorded_at": at}
                for (kind, name), details in new.items()]
        with engine.begin() as conn:
            conn.execute(sa.insert(_table), rows)
    return {**history, **new}
