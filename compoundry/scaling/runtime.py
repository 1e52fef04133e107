"""Build the gateway's autoscaler for the configured target (the one place that knows all the parts)."""

from __future__ import annotations

import logging
import time

from compoundry.scaling.autoscaler import Autoscaler
from compoundry.store.capacity import CapacityStore

DRAIN_POLL_S = 0.05
log = logging.getLogger(__name__)


def build_autoscaler(settings, store, routes, dispatcher, config) -> Autoscaler | None:
    """The autoscaler, or None when ``autoscaler.enabled`` is false."""
    options = settings.config.autoscaler
    if not options.enabled:
        return None
    if settings.config.target != "local":
        # HPA/Knative/BentoCloud scale those replicas themselves from the bounds `compoundry targets render`
        # writes; the in-gateway loop would only fight them (docs/targets.md).
        log.info("autoscaler: target %s scales on its own; the gateway loop is off", settings.config.target)
        return None
    from compoundry.scaling.local import LocalScaler

    refresh_s = settings.config.route_refresh_s

    def drain(url: str, timeout_s: float) -> None:
        """Wait until this gateway has dropped the replica from its routes and finished its calls there."""
        time.sleep(refresh_s * 2 + 0.1)
        deadline = time.monotonic() + timeout_s
        while dispatcher.outstanding_on(url) > 0 and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)

    target = LocalScaler(settings, store, drain=drain)
    return Autoscaler(routes, dispatcher, config, target, CapacityStore(store), options)
