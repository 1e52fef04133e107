"""Follower gateways' reports to the autoscaler leader, in the platform database (one row per gateway)."""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from compoundry.store.tables import GatewayReport


class GatewayReports:
    def __init__(self, store):
        self.store = store

    def publish(self, gateway_id: str, document: dict, at: float) -> None:
        """Replace this gateway's report."""
        with self.store.transaction() as s:
            s.merge(GatewayReport(gateway_id=gateway_id, reported_at=at, document=json.dumps(document)))

    def since(self, at: float) -> list[tuple[str, float, dict]]:
        """``(gateway, reported at, document)`` of every report newer than ``at``."""
        with self.store.session() as s:
            rows = s.scalars(select(GatewayReport).where(GatewayReport.reported_at > at)).all()
            return [(r.gateway_id, r.reported_at, json.loads(r.document)) for r in rows]

    def withdraw(self, gateway_id: str) -> None:
        """A gateway stopping (or taking the lead) takes its report back."""
        with self.store.transaction() as s:
            s.execute(delete(GatewayReport).where(GatewayReport.gateway_id == gateway_id))
