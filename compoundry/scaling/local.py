"""The `local` scaler target: adds and removes `bentoml serve` replicas of a deployment.

A new replica enters routing only when its `/readyz` answers (the store marks
it READY; gateways route READY replicas only). A replica to remove is first
marked DRAINING, so gateways stop sending it requests at their next route
refresh; ``drain(url, timeout_s)`` then waits for its in-flight requests, and
only then is it stopped (SIGTERM, which BentoML's server also answers by
finishing what it has). A replica whose process died is marked FAILED so the
autoscaler replaces it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from compoundry.scaling.spec import ScalingSpec
from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.capacity import CapacityStore, ReplicaRow
from compoundry.targets.local import LocalTarget, ReplicaFailed, pid_alive

log = logging.getLogger(__name__)
STOP_GRACE_S = 30.0


def choose_to_stop(replicas: list[ReplicaRow], count: int) -> list[ReplicaRow]:
    """Which replicas to remove: those still starting first (they serve nobody), then the newest ready."""
    starting = [r for r in replicas if r.status == DeploymentStatus.STARTING.value]
    ready = sorted((r for r in replicas if r.status != DeploymentStatus.STARTING.value),
                   key=lambda r: r.id, reverse=True)  # the deploy flow's first replica (-r0) goes last
    return (starting + ready)[:max(0, count)]


class LocalScaler:
    name = "local"

    def __init__(self, settings, store: PlatformStore, drain: Callable[[str, float], None] | None = None):
        self.target = LocalTarget(settings, store)
        self.store = store
        self.capacity = CapacityStore(store)
        self.drain = drain or (lambda url, timeout_s: None)

    # --- ScalerTarget ------------------------------------------------------------------
    def apply(self, spec: ScalingSpec) -> None:
        """Nothing to render locally: the deploy flow built the Bento; replicas come from set_replicas."""

    def replicas(self, deployment_id: str) -> int:
        return len(self.live(deployment_id))

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        """Converge to ``replicas`` live replicas; blocks until new ones are ready or removed ones stopped.

        Returns the live count afterwards (lower than asked when a replica failed to start).
        """
        live = self.live(spec.deployment_id)
        if replicas > len(live):
            self._add(spec, replicas - len(live))
        elif replicas < len(live):
            self._remove(choose_to_stop(live, len(live) - replicas), spec.cold_start_s)
        return len(self.live(spec.deployment_id))

    def remove(self, deployment_id: str) -> None:
        self.target.stop_deployment(deployment_id, grace_s=STOP_GRACE_S)

    # --- details ---------------------------------------------------------------------------
    def live(self, deployment_id: str) -> list[ReplicaRow]:
        """Starting and ready replicas whose process is alive; dead ones are marked FAILED on the way."""
        rows = self.capacity.live_replicas([deployment_id]).get(deployment_id, [])
        alive = []
        for row in rows:
            if row.pid is not None and not pid_alive(row.pid):
                log.warning("replica %s (pid %s) died; marking it failed", row.id, row.pid)
                self.store.set_replica_status(row.id, DeploymentStatus.FAILED)
                continue
            alive.append(row)
        return alive

    def _add(self, spec: ScalingSpec, count: int) -> None:
        handles = [self.target.start_replica(spec.deployment_id, spec.image, spec.model_uri, spec.engine_options,
                                             index=uuid.uuid4().hex[:6]) for _ in range(count)]
        with ThreadPoolExecutor(max_workers=max(1, len(handles))) as pool:  # all load in parallel
            list(pool.map(lambda h: self._await_ready(h, spec.cold_start_s), handles))

    def _await_ready(self, handle, timeout_s: float) -> None:
        try:
            self.target.wait_ready(handle, timeout_s)
        except ReplicaFailed as exc:
            log.error("replica %s failed to start: %s", handle.id, str(exc).splitlines()[0])
            self.target.stop_replica(handle.id, handle.pid, grace_s=2)
            self.store.set_replica_status(handle.id, DeploymentStatus.FAILED)

    def _remove(self, rows: list[ReplicaRow], drain_timeout_s: float) -> None:
        for row in rows:  # out of routing first, all of them, then drain each
            self.store.set_replica_status(row.id, DeploymentStatus.DRAINING)
        for row in rows:
            if row.status == DeploymentStatus.READY.value:
                self.drain(row.url, drain_timeout_s)
            # drained: the process may take its time to exit, but the deployment can scale again now
            threading.Thread(target=self.target.stop_replica, args=(row.id, row.pid, STOP_GRACE_S),
                             name=f"stop-{row.id}", daemon=True).start()
