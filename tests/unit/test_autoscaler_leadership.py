"""Several gateways, one autoscaler leader: the lease, the followers' reports, failover — two autoscalers over
one real database (SQLite and PostgreSQL), with a recording target."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from compoundry.config.models import Component
from compoundry.core.autoscaling.demand_reports import DemandMerger, FollowerReport
from compoundry.core.routing.route_view import RouteView
from compoundry.scaling.autoscaler import Autoscaler
from compoundry.scaling.leadership import Leadership
from compoundry.scaling.peers import Peers
from compoundry.store.gateway_reports import GatewayReports
from compoundry.store.leases import Leases
from tests.scaling_fakes import MeasuredCapacity, MortalTarget


def test_the_leader_counts_each_completion_and_each_wake_once():
    report, merger = FollowerReport(), DemandMerger()
    report.completed("emb-v1", 0.2)
    report.completed("emb-v1", 0.4)
    report.woke("emb", None, "cold_start", at=100.0)
    first = merger.merge([("g2", 100.5, report.document({"emb-v1": (3, 1)}, since=90.0))], now=101, stale_s=5)
    assert first.load == {"emb-v1": (3, 1)} and first.wakes == [("emb", None, "cold_start")]
    assert first.completions["emb-v1"][0] == 2 and abs(first.completions["emb-v1"][1] - 0.6) < 1e-9
    report.completed("emb-v1", 0.1)
    again = merger.merge([("g2", 101.5, report.document({"emb-v1": (0, 0)}, since=90.0))], now=102, stale_s=5)
    assert again.wakes == [] and again.completions["emb-v1"][0] == 1  # only what is new since the last report
    stale = merger.merge([("g2", 101.5, report.document({"emb-v1": (9, 9)}, since=90.0))], now=200, stale_s=5)
    assert stale.load == {}  # a dead follower's last report counts for nothing


def _gateway(store, name: str, target, ttl_s: float = 0.3):
    components = {"emb": Component(model="m-emb", engine="pyfunc", scaling={"max_replicas": 3})}
    routes = SimpleNamespace(routes={"emb": RouteView("emb", "emb-v1", "m-emb", "1", "pyfunc", ())})

    async def refresh():
        return True

    routes.refresh = refresh
    board = SimpleNamespace(load_of=lambda component, deployment: (0, 0), processes=1)
    board.share_among = lambda processes: setattr(board, "processes", processes)
    config = SimpleNamespace(components=components, pipelines={})
    settings = SimpleNamespace(tick_s=0.05, window_s=10.0, up_stabilization_s=0.0, down_stabilization_s=30.0)
    peers = Peers(Leadership(Leases(store), name, ttl_s), GatewayReports(store), stale_s=1.0)
    return Autoscaler(routes, board, lambda: config, target, MeasuredCapacity(), settings, peers=peers)


def test_one_leader_scales_for_a_request_held_on_a_follower_and_another_takes_over(store):
    async def scenario():
        target = MortalTarget()
        leader, follower = _gateway(store, "g1", target), _gateway(store, "g2", target)
        await leader.tick()
        await follower.tick()
        assert (leader.leading, follower.leading) == (True, False)
        follower.request_capacity("emb", "cold_start")  # a request held on the follower...
        await follower.tick()                          # ... reported ...
        await leader.tick()                            # ... and acted on by the leader, once
        await asyncio.sleep(0.05)
        await leader.tick()
        assert target.calls == [("emb-v1", 1)]
        assert follower.describe()["leader"] is False and leader.describe()["deployments"]["emb-v1"]["replicas"] == 1
        await follower.tick()  # the leader counted two processes on these replicas: each takes half their limits
        assert (leader.load.processes, follower.load.processes) == (2, 2)
        await leader.stop()                            # a clean stop hands over at the follower's next tick
        await follower.tick()
        assert follower.leading
        # the old leader comes back as a follower; the new one stops ticking (killed): the lease expires
        await leader.tick()
        assert not leader.leading
        await asyncio.sleep(0.4)
        await leader.tick()
        assert leader.leading

    asyncio.run(scenario())
