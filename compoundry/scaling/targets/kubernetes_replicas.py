"""The ``kubernetes`` target as the deploy flow and the autoscaler use it: apply, wait for the rollout, route.

:class:`KubernetesTarget` (kubernetes_apply.py) talks to the API server; this adds the platform's side:
the replica rows gateways route to, and blue/green's rule that a rollout is ready before the route
switches. Kubernetes owns the pods: the HPA (or Knative) owns the count inside the bounds, compoundry
raises and releases floors (``set_replicas``). A deployment's rows are where its calls go
(``kubernetes.route_to``): the Service's cluster DNS name (``service``, one row: kube-proxy balances),
or each ready address of the Service's Endpoints (``pods``: the gateway balances and ejects per pod;
it must run in the pod network), re-read on every ``replicas`` call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace

from compoundry.config.kubernetes_config import KubernetesSettings
from compoundry.scaling.targets.kubernetes_apply import KubernetesTarget
from compoundry.scaling.targets.kubernetes_images import resolve_image
from compoundry.scaling.targets.kubernetes_names import resource_name
from compoundry.scaling.targets.kubernetes_render import gpu_count, replica_floor
from compoundry.scaling.targets.protocol import ReplicaFailed, Rollout, ScalingSpec
from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.capacity import CapacityStore

#: ``(target, spec) -> URLs`` the gateway routes to; empty: not reachable yet
EndpointResolver = Callable[[KubernetesTarget, ScalingSpec], list[str]]
POLL_S = 0.5


def service_endpoint(target: KubernetesTarget, spec: ScalingSpec) -> list[str]:
    """The Service's cluster DNS name (dedicated, auto), or the address Knative reports (serverless)."""
    return [target.endpoint_url(spec)]


def pod_endpoints(target: KubernetesTarget, spec: ScalingSpec) -> list[str]:
    """``http://<ip>:<port>`` of every ready address in the Service's Endpoints (what the endpoints controller,
    or a test's node agent, writes). Serverless keeps Knative's address: its activator must stay in the path."""
    if spec.mode == "serverless":
        return service_endpoint(target, spec)
    return endpoint_addresses(target.kinds["Endpoints"]("read", resource_name(spec.deployment_id), missing_ok=True))


def endpoint_addresses(endpoints: dict | None) -> list[str]:
    """Ready addresses of a core/v1 Endpoints object, as URLs (not-ready addresses are left out)."""
    urls = []
    for subset in (endpoints or {}).get("subsets") or []:
        for address in subset.get("addresses") or []:
            urls += [f"http://{address['ip']}:{port['port']}" for port in subset.get("ports") or []]
    return sorted(urls)


RESOLVERS: dict[str, EndpointResolver] = {"service": service_endpoint, "pods": pod_endpoints}


class KubernetesReplicas:
    """A :class:`~compoundry.scaling.targets.protocol.ReplicaTarget` over one namespace of one cluster."""

    name = "kubernetes"

    def __init__(self, target: KubernetesTarget, store: PlatformStore, settings: KubernetesSettings | None = None,
                 endpoint_resolver: EndpointResolver | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.target, self.store, self.capacity = target, store, CapacityStore(store)
        self.settings = settings or target.settings
        self.resolve = endpoint_resolver or RESOLVERS[self.settings.route_to]
        self.clock, self.sleep = clock, sleep

    # --- the deploy flow ---------------------------------------------------------------------------------
    def deploy(self, spec: ScalingSpec, replicas: int) -> Rollout:
        """Apply (the image from ``kubernetes.images``), raise the floor to ``replicas`` when higher, then wait
        until the rollout is complete and the deployment reachable; its rows go READY. On timeout everything
        applied is deleted and :class:`ReplicaFailed` carries the rollout's last status."""
        spec = replace(spec, image=resolve_image(spec.engine, gpu_count(spec, self.settings) > 0,
                                                 self.settings.images))
        started = self.clock()
        self.target.apply(spec)
        if replicas > replica_floor(spec):
            self.target.set_replicas(spec, replicas)
        while True:
            status = self.target.rollout_status(spec)
            urls = self.resolve(self.target, spec) if status.ready else []
            if urls:
                break
            if self.clock() - started > spec.cold_start_s:
                self.target.remove(spec.deployment_id)
                why = status.message if not status.ready else "ready, but its Endpoints list no ready address"
                raise ReplicaFailed(f"{self._where(spec.deployment_id)} not ready after {spec.cold_start_s:.0f}s: "
                                    f"{why}")
            self.sleep(POLL_S)
        waited = self.clock() - started
        for row_id in self._sync_rows(spec.deployment_id, urls):
            self.capacity.record_ready(row_id, round(waited, 3))
        return Rollout(tuple(urls), waited, self._where(spec.deployment_id))

    def drain_and_delete(self, deployment_id: str, grace_s: float) -> None:
        """Out of routing, then delete its objects: each pod gets SIGTERM and its own grace period to finish
        (BentoML answers what it holds); nothing here waits for the pods to go."""
        rows = self.capacity.live_replicas([deployment_id]).get(deployment_id, [])
        self.store.update_deployment(deployment_id, status=DeploymentStatus.DRAINING)
        for row in rows:
            self.store.set_replica_status(row.id, DeploymentStatus.DRAINING)
        self.target.remove(deployment_id)
        for row in rows:
            self.store.set_replica_status(row.id, DeploymentStatus.STOPPED)
        self.store.update_deployment(deployment_id, status=DeploymentStatus.STOPPED)

    def where(self, deployment_id: str) -> str:
        return f"{self._where(deployment_id)} ({self.target.replicas(deployment_id)} pod(s))"

    # --- the autoscaler: floors only; the HPA/Knative owns the count above them ------------------------
    def apply(self, spec: ScalingSpec) -> None:
        self.target.apply(spec)

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        return self.target.set_replicas(spec, replicas)

    def replicas(self, deployment_id: str) -> int:
        """Pods starting or ready; with ``route_to: pods`` the rows follow the Endpoints' ready addresses."""
        if self.settings.route_to == "pods":
            live = self.target.kinds["Endpoints"]("read", resource_name(deployment_id), missing_ok=True)
            if live is not None:
                self._sync_rows(deployment_id, endpoint_addresses(live))
        return self.target.replicas(deployment_id)

    def lost(self, deployment_id: str) -> int:
        return 0  # the Deployment's controller replaces a dead pod

    def remove(self, deployment_id: str) -> None:
        self.drain_and_delete(deployment_id, grace_s=30)

    # --- rows --------------------------------------------------------------------------------------------
    def _where(self, deployment_id: str) -> str:
        return f"kubernetes {self.target.namespace}/{resource_name(deployment_id)}"

    def _sync_rows(self, deployment_id: str, urls: list[str]) -> list[str]:
        """Rows READY for ``urls``, STOPPED for addresses gone; returns the ids of the rows added."""
        live = {r.url: r for r in self.capacity.live_replicas([deployment_id]).get(deployment_id, [])}
        added = []
        for url in urls:
            if url not in live:
                row_id = f"{deployment_id}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"
                self.store.add_replica(row_id, deployment_id, url, pid=None, status=DeploymentStatus.READY)
                added.append(row_id)
        for url, row in live.items():
            if url not in urls:
                self.store.set_replica_status(row.id, DeploymentStatus.STOPPED)
        return added
