"""What every target is given (one variant deployment and its scaling bounds) and what it must do.

Two protocols: :class:`ScalerTarget` is what the gateway's autoscaler calls (counts locally, floors
remotely); :class:`ReplicaTarget` adds what the deploy flow calls (roll out and wait ready, drain and
delete), so ``flows/deploy.py`` never names a concrete target (docs/decisions/0041).

The policy (``compoundry.core.autoscaling.replica_policy``) decides replica counts; a target
turns a :class:`ScalingSpec` into running capacity on its platform: local
``bentoml serve`` processes, a Kubernetes Deployment/HPA or Knative Service,
or a BentoCloud deployment. Keeping the spec a plain frozen dataclass lets the
renderers be pure functions that tests check without any cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ScalingSpec:
    deployment_id: str  # e.g. "embedder-v3-1a2b3c"; unique per variant deployment
    component: str  # the component name from components.yaml
    model_name: str
    model_version: str
    engine: str  # sentence-transformers | pyfunc | llm
    mode: str  # dedicated | serverless | auto
    min_replicas: int
    max_replicas: int
    target_concurrency: int  # in-flight requests per replica the autoscaler aims for
    idle_window_s: float  # no traffic this long -> scale to min (zero for serverless)
    image: str  # container image (remote targets) or Bento tag (local)
    model_uri: str = ""  # models:/name/version, handed to the Bento as COMPOUNDRY_MODEL_URI
    variant: str | None = None  # experiment variant this deployment serves, None for the serving route
    gpu: int = 0  # GPUs per replica (vLLM engines)
    env: dict[str, str] = field(default_factory=dict)
    engine_options: dict = field(default_factory=dict)  # handed to the Bento as COMPOUNDRY_ENGINE_OPTIONS
    cold_start_s: float = 120.0  # how long a new replica may take to become ready

    @classmethod
    def for_component(cls, deployment_id: str, component_name: str, component, model_version: str, image: str,
                      variant: str | None = None, min_replicas: int | None = None) -> "ScalingSpec":
        """The spec of one deployment of ``component`` (a ``config.models.Component``)."""
        scaling = component.scaling
        return cls(
            deployment_id=deployment_id, component=component_name, model_name=component.model,
            model_version=str(model_version), engine=component.engine, mode=component.mode,
            min_replicas=scaling.min_replicas if min_replicas is None else min_replicas,
            max_replicas=scaling.max_replicas, target_concurrency=scaling.target_concurrency,
            idle_window_s=scaling.idle_window_s, image=image,
            model_uri=f"models:/{component.model}/{model_version}", variant=variant,
            gpu=1 if component.engine == "llm" and component.engine_options.get("gpu") else 0,
            engine_options=dict(component.engine_options), cold_start_s=component.timeouts.cold_start_s,
        )


class ReplicaFailed(RuntimeError):
    """Replicas exited or never became ready; the message says why (a log tail, or the rollout's status)."""


@dataclass(frozen=True)
class Rollout:
    """A deployment whose replicas are ready: the URLs the gateway routes to (already READY in the store)."""

    urls: tuple[str, ...]
    ready_s: float  # seconds from start until the last of them was ready
    where: str  # where it runs, for people: "local", "kubernetes compoundry/embedder-v3-1a2b3c", ...


class ScalerTarget(Protocol):
    """One place capacity runs. ``local`` is the embedded default; the others render and apply manifests."""

    name: str

    def apply(self, spec: ScalingSpec) -> None:
        """Create or update the deployment with these bounds (idempotent)."""

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        """Run ``replicas`` replicas now (local), or raise the platform autoscaler's floor (remote).

        Returns what the target now runs at least: the live replicas locally (fewer than asked when a
        start failed), the floor it set remotely (the platform's own autoscaler owns the count above it).
        """

    def replicas(self, deployment_id: str) -> int:
        """Replicas starting or ready."""

    def lost(self, deployment_id: str) -> int:
        """Ready replicas found dead since the last call (taken out of routing), each reported once: the
        autoscaler replaces them at once. 0 where the platform replaces dead replicas itself."""

    def remove(self, deployment_id: str) -> None:
        """Drain and delete the deployment."""


class ReplicaTarget(ScalerTarget, Protocol):
    """A :class:`ScalerTarget` the deploy flow can roll out to. One adapter per external system."""

    def deploy(self, spec: ScalingSpec, replicas: int) -> Rollout:
        """Start ``replicas`` replicas (at least the spec's floor) and block until they are ready and
        written READY in the store, within ``spec.cold_start_s``. Raises :class:`ReplicaFailed`, having
        removed what it started."""

    def drain_and_delete(self, deployment_id: str, grace_s: float) -> None:
        """Out of routing, let in-flight calls finish within ``grace_s``, then delete what runs it."""

    def where(self, deployment_id: str) -> str:
        """Where the deployment runs, for `compoundry deployments`."""
