"""Build the gateway's autoscaler over every target (the one place that knows all its parts).

Each deployment is scaled through the target it runs on: local replicas are counted and started here;
on Kubernetes and BentoCloud the platform's own autoscaler owns the count inside the bounds and this
loop only raises and releases floors (cold-start wake-ups, pre-warming, scheduled warm-ups).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from compoundry.scaling.autoscaler import Autoscaler
from compoundry.scaling.leadership import Leadership, gateway_id
from compoundry.scaling.peers import Peers
from compoundry.scaling.targets.target_choice import (
    TargetsByDeployment,
    build_target,
    deployment_target,
)
from compoundry.store.capacity import CapacityStore
from compoundry.store.gateway_reports import GatewayReports
from compoundry.store.leases import Leases
from compoundry.store.refresh import propagation_s

DRAIN_POLL_S = 0.05


def build_autoscaler(settings, store, routes, load, config: Callable[[], object]) -> Autoscaler | None:
    """The autoscaler over the gateway's route table and load board, or None when it should not run here.

    ``load`` is the gateway's LoadBoard (in-flight and queued calls per deployment);
    ``config()`` returns the configuration in force.
    """
    options = settings.config.autoscaler
    if not options.enabled:
        return None

    def drain(url: str, timeout_s: float) -> None:
        """Wait until this gateway has dropped the replica from its routes and finished its calls there."""
        time.sleep(propagation_s(settings.config.route_refresh_s))
        deadline = time.monotonic() + timeout_s
        while load.outstanding_on(url) > 0 and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)

    target = TargetsByDeployment(lambda name: build_target(name, settings, store, drain=drain),
                                 lambda deployment_id: deployment_target(store, deployment_id))
    leadership = Leadership(Leases(store), gateway_id(), options.leader_ttl_s)
    peers = Peers(leadership, GatewayReports(store), stale_s=max(3 * options.tick_s, options.leader_ttl_s))
    return Autoscaler(routes, load, config, target, CapacityStore(store), options, peers=peers)
