"""Which target runs a component's replicas, and the one object per target that acts on them.

A component runs on ``components.yaml: <name>.target``, else ``platform.yaml: target``. A deployment keeps
the target it was started on (the ``deployments.target`` column), so a change of target takes effect at
the next deploy: the new version starts on the new target and the old one drains where it runs. One
pipeline may mix targets; the gateway only sees URLs. docs/targets.md, docs/decisions/0041.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from compoundry.config.models import Config
from compoundry.scaling.targets.bentocloud import BentoCloudTarget
from compoundry.scaling.targets.kubernetes_apply import KubernetesTarget
from compoundry.scaling.targets.kubernetes_replicas import KubernetesReplicas
from compoundry.scaling.targets.local import LocalTarget
from compoundry.scaling.targets.protocol import ReplicaTarget, ScalerTarget, ScalingSpec
from compoundry.store import PlatformStore
from compoundry.store.tables import Deployment

TARGETS = ("local", "kubernetes", "bentocloud")
log = logging.getLogger(__name__)


def target_name(config: Config, component: str) -> str:
    """The component's own target, else the platform's."""
    comp = config.components.get(component)
    return (comp.target if comp is not None else None) or config.platform.target


def build_target(name: str, settings, store: PlatformStore,
                 drain: Callable[[str, float], None] | None = None) -> ReplicaTarget:
    """The adapter for ``name``, configured from platform.yaml. ``drain(url, timeout_s)`` is the local
    target's wait for a replica's in-flight calls (the gateway's); remote platforms drain on SIGTERM.
    Kubernetes: in a pod its service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    if name == "local":
        return LocalTarget(settings, store, drain=drain)
    if name == "kubernetes":
        kubernetes = settings.config.kubernetes
        return KubernetesReplicas(KubernetesTarget(settings=kubernetes), store, kubernetes)
    if name == "bentocloud":
        return BentoCloudTarget(cluster=settings.config.bentocloud.cluster, store=store)
    raise ValueError(f"unknown target {name!r}; one of {', '.join(TARGETS)}")


def target_for(component: str, config: Config, settings, store: PlatformStore) -> ReplicaTarget:
    """The target a new deployment of ``component`` goes to."""
    return build_target(target_name(config, component), settings, store)


def deployment_target(store: PlatformStore, deployment_id: str) -> str:
    """The target a deployment was started on (``local`` for one the database does not know)."""
    with store.session() as s:
        row = s.get(Deployment, deployment_id)
        return row.target if row is not None and row.target else "local"


def remote_deployments(store: PlatformStore) -> dict[str, str]:
    """``deployment -> target`` of every deployment still running off this machine (not stopped or failed):
    what ``compoundry down`` leaves running unless asked, and ``compoundry up`` finds running."""
    with store.session() as s:
        rows = s.query(Deployment).filter(Deployment.target != "local",
                                          Deployment.status.notin_(("stopped", "failed", "superseded")))
        return {row.id: row.target for row in rows}


class TargetsByDeployment:
    """The autoscaler's one :class:`ScalerTarget` over all targets: each call goes to the target its
    deployment runs on. Adapters are built on first use and kept (one API client per process). A remote
    platform that cannot be reached answers its last known count, so it never stalls the local replicas'
    tick (the local target's errors, a database down, still skip the tick)."""

    name = "per-deployment"

    def __init__(self, build: Callable[[str], ScalerTarget], target_of: Callable[[str], str]):
        self._build, self._target_of = build, target_of
        self._targets: dict[str, ScalerTarget] = {}
        self._names: dict[str, str] = {}  # deployment -> target name (a deployment never moves)
        self._last: dict[str, int] = {}  # deployment -> last count a remote target answered
        self._lock = threading.Lock()

    def target(self, deployment_id: str) -> ScalerTarget:
        return self._adapter(self._name(deployment_id))

    def apply(self, spec: ScalingSpec) -> None:
        self.target(spec.deployment_id).apply(spec)

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        return self.target(spec.deployment_id).set_replicas(spec, replicas)

    def replicas(self, deployment_id: str) -> int:
        name = self._name(deployment_id)
        if name == "local":
            return self._adapter(name).replicas(deployment_id)
        try:
            self._last[deployment_id] = self._adapter(name).replicas(deployment_id)
        except Exception as exc:  # noqa: BLE001 - an unreachable cluster or account: keep what we knew
            log.warning("autoscaler: %s on %s unreachable (%s); assuming %d replica(s)", deployment_id, name, exc,
                        self._last.get(deployment_id, 0))
        return self._last.get(deployment_id, 0)

    def lost(self, deployment_id: str) -> int:
        name = self._name(deployment_id)  # remote platforms replace dead pods themselves: never ask them
        return self._adapter(name).lost(deployment_id) if name == "local" else 0

    def remove(self, deployment_id: str) -> None:
        self.target(deployment_id).remove(deployment_id)

    def _name(self, deployment_id: str) -> str:
        name = self._names.get(deployment_id)
        if name is None:
            name = self._names[deployment_id] = self._target_of(deployment_id)
        return name

    def _adapter(self, name: str) -> ScalerTarget:
        with self._lock:
            if name not in self._targets:
                self._targets[name] = self._build(name)
            return self._targets[name]
