"""Build the gateway's autoscaler for the configured target (the one place that knows all its parts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from compoundry.scaling.autoscaler import Autoscaler
from compoundry.scaling.leadership import Leadership, gateway_id
from compoundry.scaling.peers import Peers
from compoundry.scaling.targets.local import LocalTarget
from compoundry.store.capacity import CapacityStore
from compoundry.store.gateway_reports import GatewayReports
from compoundry.store.leases import Leases
from compoundry.store.refresh import propagation_s

DRAIN_POLL_S = 0.05
log = logging.getLogger(__name__)


def build_autoscaler(settings, store, routes, load, config: Callable[[], object]) -> Autoscaler | None:
    """The autoscaler over the gateway's route table and load board, or None when it should not run here.

    ``load`` is the gateway's LoadBoard (in-flight and queued calls per deployment);
    ``config()`` returns the configuration in force.
    """
    options = settings.config.autoscaler
    if not options.enabled:
        return None
    if settings.config.target != "local":
        # HPA/Knative/BentoCloud scale those replicas themselves from the bounds `compoundry targets render`
        # writes; the in-gateway loop would only fight them (docs/targets.md).
        log.info("autoscaler: target %s scales on its own; the gateway loop is off", settings.config.target)
        return None

    def drain(url: str, timeout_s: float) -> None:
        """Wait until this gateway has dropped the replica from its routes and finished its calls there."""
        time.sleep(propagation_s(settings.config.route_refresh_s))
        deadline = time.monotonic() + timeout_s
        while load.outstanding_on(url) > 0 and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)

    target = LocalTarget(settings, store, drain=drain)
    leadership = Leadership(Leases(store), gateway_id(), options.leader_ttl_s)
    peers = Peers(leadership, GatewayReports(store), stale_s=max(3 * options.tick_s, options.leader_ttl_s))
    return Autoscaler(routes, load, config, target, CapacityStore(store), options, peers=peers)
