"""This gateway among the others: it leads the autoscaler, or it reports its demand to the one that does.

One row per follower in ``gateway_reports`` (``store/gateway_reports.py``), replaced every tick; the
leader merges the fresh ones (``core/autoscaling/demand_reports.py``) into its own view, so a request
held on any gateway scales its component up, and every gateway's load counts. Database calls run in the
autoscaler's worker thread; the report itself is built on the event loop, where the request path writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from compoundry.core.autoscaling.demand_reports import (
    Demand,
    DemandMerger,
    FollowerReport,
)
from compoundry.scaling.leadership import LEASE, Leadership
from compoundry.store.gateway_reports import GatewayReports

ACCESS = "access"  # a follower's request reached a component: the leader's pre-warming and variant wakes


class Peers:
    def __init__(self, leadership: Leadership, reports: GatewayReports, stale_s: float,
                 wall: Callable[[], float] = time.time):
        """``stale_s``: a report older than this is a dead follower's (a few ticks)."""
        self.leadership, self.reports, self.stale_s, self.wall = leadership, reports, stale_s, wall
        self.gateway = leadership.gateway
        self.report = FollowerReport()
        self._merger = DemandMerger()
        self._was_leading = False
        self.followers = 0  # fresh follower reports the leader saw at its last tick

    def document(self, load: dict[str, tuple[int, int]]) -> dict:
        """On the event loop: this tick's report (sent only if this gateway follows)."""
        now = self.wall()
        document = self.report.document(load, since=now - self.stale_s)
        self.report.forget_wakes_before(now - self.stale_s)
        return document

    def lead_or_report(self, document: dict) -> bool:
        """In a worker thread: renew or take the lease; a follower publishes ``document``."""
        leading = self.leadership.check()
        if leading and not self._was_leading:
            self.reports.withdraw(self.gateway)  # what it reported as a follower is its own load now
        elif not leading:
            self.reports.publish(self.gateway, document, self.wall())
        self._was_leading = leading
        return leading

    def followers_demand(self) -> Demand:
        """In a worker thread, as the leader: what the followers' fresh reports add."""
        now = self.wall()
        reports = [r for r in self.reports.since(now - self.stale_s) if r[0] != self.gateway]
        self.followers = len(reports)
        return self._merger.merge(reports, now, self.stale_s)

    def publish_state(self, state: dict) -> None:
        """In a worker thread, as the leader with followers: what ``GET /v1/scaling`` shows, for them to answer
        with (a gateway alone writes nothing)."""
        self.reports.publish(self.gateway, {"state": state}, self.wall())

    def leader_state(self) -> dict | None:
        """In a worker thread, as a follower: the leader's last published state (None: none yet)."""
        leader = self.leadership.leases.holder(LEASE)
        found = [doc for gateway, _, doc in self.reports.since(self.wall() - self.stale_s) if gateway == leader]
        return {**found[0].get("state", {}), "leader_gateway": leader} if found else None

    def leave(self) -> None:
        """Stopping: give the lease up and take the report back, so another gateway leads at its next tick."""
        self.leadership.resign()
        self.reports.withdraw(self.gateway)
