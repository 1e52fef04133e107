"""What this gateway process knows of load: balancers and outlier ejection per deployment, lanes per component.

The dispatcher takes slots from here on every call; the autoscaler reads the
same counts as each deployment's load, metrics read them at scrape time, and a
scale-down drains a replica by waiting for its count to reach zero. The state
is per process: when several gateway processes (workers, gateways) send to the
same replicas, each takes its share of every per-replica limit
(:meth:`LoadBoard.share_among`), so together they never pass it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable

from compoundry.core.routing.balancer import Balancer
from compoundry.core.routing.lanes import Lane
from compoundry.core.routing.outliers import OutlierDetector


class LoadBoard:
    def __init__(self, replica_concurrency: int | None = None, queue_capacity: int = 256,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 processes: int = 1):
        """``replica_concurrency``: in-flight calls per replica, all gateway processes together (None: unlimited);
        ``queue_capacity``: per lane; ``processes``: gateway processes known to share the replicas so far."""
        self.replica_concurrency = replica_concurrency
        self.queue_capacity = queue_capacity
        self.processes = max(1, processes)
        self.clock = clock
        self.rng = rng or random.Random()
        self._balancers: dict[str, Balancer] = {}
        self._outliers: dict[str, OutlierDetector] = {}
        self._lanes: dict[str, Lane] = {}

    def balancer(self, deployment_id: str) -> Balancer:
        """The deployment's balancer over its replicas (made on first use)."""
        balancer = self._balancers.get(deployment_id)
        if balancer is None:
            balancer = self._balancers[deployment_id] = Balancer(self.rng, self.share(self.replica_concurrency))
        return balancer

    def share_among(self, processes: int) -> None:
        """``processes`` gateway processes now send to the same replicas (the autoscaler leader counts them)."""
        processes = max(1, processes)
        if processes != self.processes:
            self.processes = processes
            for balancer in self._balancers.values():
                balancer.set_limit(self.share(self.replica_concurrency))

    def share(self, per_replica: int | None) -> int | None:
        """This process's share of a per-replica amount: rounded up (a replica may take a few more calls than
        the limit while the process count is catching up, never a process none)."""
        return None if per_replica is None else max(1, math.ceil(per_replica / self.processes))

    def outliers(self, deployment_id: str) -> OutlierDetector:
        """Which of the deployment's replicas failed recently and are ejected (made on first use)."""
        detector = self._outliers.get(deployment_id)
        if detector is None:
            detector = self._outliers[deployment_id] = OutlierDetector()
        return detector

    def lane(self, component: str, concurrency: int) -> Lane:
        """The component's priority lane, resized to ``concurrency`` calls in flight when that changed."""
        lane = self._lanes.get(component)
        if lane is None:
            lane = self._lanes[component] = Lane(concurrency=concurrency, capacity=self.queue_capacity,
                                                 clock=self.clock)
        elif lane.queue.concurrency != concurrency:
            lane.resize(concurrency)
        return lane

    # --- reads (autoscaler, metrics, drains, modes) --------------------------------------
    def in_flight(self, deployment_id: str, urls: Iterable[str] | None = None) -> int:
        """Calls in flight on the deployment (only on ``urls`` when given)."""
        balancer = self._balancers.get(deployment_id)
        if balancer is None:
            return 0
        return balancer.total_outstanding() if urls is None else sum(balancer.outstanding(u) for u in urls)

    def queued(self, component: str) -> int:
        """Calls waiting in the component's lane."""
        lane = self._lanes.get(component)
        return len(lane.queue) if lane is not None else 0

    def load_of(self, component: str, deployment_id: str) -> tuple[int, int]:
        """``(in flight, queued)``: the deployment's own load, as the autoscaler's policy takes it."""
        return self.in_flight(deployment_id), self.queued(component)

    def outstanding_on(self, url: str) -> int:
        """Calls in flight on one replica (a scale-down drains it to zero before stopping it)."""
        return sum(b.outstanding(url) for b in list(self._balancers.values()))
