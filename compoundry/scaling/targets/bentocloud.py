"""The ``bentocloud`` scaler target: one variant deployment as a BentoCloud Deployment.

:func:`render_config` writes the dict that ``bentoml deploy -f config.yaml`` and
``bentoml.deployment.create(config_dict=...)`` take: name, bento, envs, labels,
and per Service ``scaling`` (min/max replicas, scale-down window) and
``config_overrides.traffic`` (concurrency; the external queue that holds
requests while a scaled-to-zero deployment starts). :func:`validate_config`
checks it offline with BentoML's own schema classes. :class:`BentoCloudTarget`
drives ``bentoml.deployment`` (get, create, update, terminate, delete); it has
never run against a BentoCloud account here (docs/targets.md).
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any

from compoundry.scaling.targets.kubernetes import (
    bento_env,
    label_value,
    replica_floor,
    resource_name,
)
from compoundry.scaling.targets.protocol import ReplicaFailed, Rollout, ScalingSpec
from compoundry.store import DeploymentStatus

#: the entry Service of each engine's Bento: ``@bentoml.service(name=...)`` in bentos/*/service.py
SERVICE_NAMES = {"sentence-transformers": "compoundry-embedding", "llm": "compoundry-llm",
                 "pyfunc": "compoundry-pyfunc"}
#: statuses in which a BentoCloud deployment runs no replicas
IDLE_STATUSES = {"terminated", "terminating", "scaled-to-zero", "non-deployed", "image-building",
                 "image-build-failed"}


class BentoCloudConfigError(ValueError):
    """The rendered config does not fit BentoML's deployment schema; the message lists every problem."""


def deployment_name(deployment_id: str) -> str:
    """BentoCloud runs deployments on Kubernetes: the same DNS-label name as the kubernetes target."""
    return resource_name(deployment_id)


def render_config(spec: ScalingSpec, *, cluster: str | None = None, service_name: str | None = None,
                  access_authorization: bool = True, instance_type: str | None = None) -> dict:
    """The deployment config for ``spec``. ``spec.image`` is the Bento tag (``compoundry-embedding:abc``).
    Serverless keeps the spec's floor (0 = scale to zero, requests queued outside the replicas meanwhile);
    dedicated and auto never go below one replica."""
    service: dict[str, Any] = {
        "scaling": {
            "min_replicas": replica_floor(spec),
            "max_replicas": max(1, spec.max_replicas),
            "policy": {"scale_down_stabilization_window": min(3600, max(0, round(spec.idle_window_s)))},
        },
        "config_overrides": {"traffic": {"concurrency": spec.target_concurrency}},
    }
    if spec.mode == "serverless":
        service["config_overrides"]["traffic"]["external_queue"] = True
    if spec.gpu:
        service["config_overrides"]["resources"] = {"gpu": spec.gpu}
    if instance_type:
        service["instance_type"] = instance_type
    config: dict[str, Any] = {
        "name": deployment_name(spec.deployment_id),
        "bento": spec.image,
        "access_authorization": access_authorization,
        "envs": [{"name": k, "value": v} for k, v in bento_env(spec).items()],
        "labels": _labels(spec),
        "services": {service_name or SERVICE_NAMES[spec.engine]: service},
    }
    if cluster:
        config["cluster"] = cluster
    return config


def _labels(spec: ScalingSpec) -> list[dict[str, str]]:
    pairs = {"managed-by": "compoundry", "compoundry-component": spec.component,
             "compoundry-deployment-id": spec.deployment_id, "compoundry-variant": spec.variant or ""}
    return [{"key": k, "value": label_value(v)} for k, v in pairs.items() if v]


def validate_config(config: dict) -> None:
    """Structure ``config`` into BentoML's ``CreateDeploymentSchema`` the way ``bentoml.deployment.create``
    does, run its bounds check, and require a lossless round trip: BentoML's attrs classes ignore unknown
    keys and coerce types, so a misspelled or mistyped field would otherwise vanish silently. Each
    Service's ``config_overrides`` must also pass the ``@bentoml.service`` config schema."""
    from bentoml._internal.cloud.deployment import DeploymentAPI
    from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    given = {k: v for k, v in config.items() if k != "cluster"}  # bentoml pops it before structuring
    try:
        structured = bentoml_cattr.structure(copy.deepcopy(given), CreateDeploymentSchema)
        problems = _differences(given, bentoml_cattr.unstructure(structured))
        DeploymentAPI._fix_and_validate_schema(structured)
    except Exception as exc:  # cattrs' ClassValidationError (a missing field), BentoMLException (bounds), ...
        problems = [f"{type(exc).__name__}: {_flatten(exc)}"]
    for name, service in given.get("services", {}).items():
        problems += [f"services.{name}.config_overrides: {p}" for p in _override_problems(service)]
    if problems:
        raise BentoCloudConfigError("invalid BentoCloud deployment config: " + "; ".join(problems))


def _flatten(exc: BaseException) -> str:
    """An exception's message with those of an exception group's members (cattrs reports fields that way)."""
    inner = getattr(exc, "exceptions", ())
    return f"{exc}" + "".join(f" [{_flatten(e)}]" for e in inner)


def _differences(given: Any, back: Any, path: str = "") -> list[str]:
    """Where the round trip through BentoML's schema changed ``given`` (omitted defaults excepted)."""
    if isinstance(given, dict) and isinstance(back, dict):
        out = []
        for key, value in given.items():
            if key not in back:
                if value not in (None, False, {}, []):
                    out.append(f"{path}{key}: not a field of BentoML's deployment schema")
                continue
            out += _differences(value, back[key], f"{path}{key}.")
        return out
    if isinstance(given, list) and isinstance(back, list) and len(given) == len(back):
        return [p for i, (g, b) in enumerate(zip(given, back)) for p in _differences(g, b, f"{path}{i}.")]
    if type(given) is not type(back) or given != back:
        return [f"{path.rstrip('.')}: {given!r} became {back!r}"]
    return []


def _override_problems(service: dict) -> list[str]:
    from _bentoml_sdk.service.config import ServiceConfig, TrafficSchema, validate
    from pydantic import ValidationError

    overrides = service.get("config_overrides") or {}
    problems = [f"{k}: not a @bentoml.service config key" for k in overrides if k not in ServiceConfig.__annotations__]
    problems += [f"traffic.{k}: not a traffic key" for k in overrides.get("traffic", {})
                 if k not in TrafficSchema.__annotations__]
    try:
        validate(overrides)
    except ValidationError as exc:
        problems.append(str(exc).replace("\n", " "))
    return problems


class BentoCloudTarget:
    """Create-or-update through ``bentoml.deployment``. ``deployments`` defaults to that module; tests pass a
    recording fake with the same functions (no account or network here)."""

    name = "bentocloud"

    def __init__(self, deployments=None, cluster: str | None = None, list_pods=None, store=None,
                 poll_s: float = 10.0, **render_options: Any):
        """``store``: the platform database, for the deploy flow's rows (the autoscaler needs none)."""
        if deployments is None:
            import bentoml

            deployments = bentoml.deployment
        self.deployments = deployments
        self.cluster = cluster
        self.list_pods = list_pods or _list_pods
        self.render_options = render_options  # service_name, access_authorization, instance_type
        self.store, self.poll_s = store, poll_s

    def apply(self, spec: ScalingSpec) -> None:
        """Create, or update (BentoML merges the update into the live config, so settings made in the
        BentoCloud console that compoundry does not render survive)."""
        config = render_config(spec, cluster=self.cluster, **self.render_options)
        validate_config(config)
        if self._get(config["name"]) is None:
            self.deployments.create(config_dict=config)
        else:
            self.deployments.update(config_dict=config)

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        """Raise the floor to ``replicas`` (or release it back to the spec's): a partial update of one
        Service's scaling, merged by BentoML into the live config."""
        full = render_config(spec, cluster=self.cluster, **self.render_options)
        (service,) = full["services"]
        scaling = {"min_replicas": replica_floor(spec, replicas), "max_replicas": max(1, spec.max_replicas)}
        patch = {"name": full["name"], "services": {service: {"scaling": scaling}}}
        if self.cluster:
            patch["cluster"] = self.cluster
        self.deployments.update(config_dict=patch)
        return scaling["min_replicas"]

    def replicas(self, deployment_id: str) -> int:
        """Pods pending or running; 0 without asking for pods when the deployment is idle or absent."""
        name = deployment_name(deployment_id)
        deployment = self._get(name)
        if deployment is None or deployment.get_status(refetch=False).status in IDLE_STATUSES:
            return 0
        return sum(1 for pod in self.list_pods(name, self.cluster)
                   if pod.status.phase in ("Pending", "Running") and pod.pod_status.status != "Terminating")

    def lost(self, deployment_id: str) -> int:
        """Always 0: the platform's own controller replaces a dead replica."""
        return 0

    def remove(self, deployment_id: str) -> None:
        """Terminate (replicas drain and stop), then delete the deployment record; absent is fine."""
        name = deployment_name(deployment_id)
        if self._get(name) is None:
            return
        self.deployments.terminate(name=name, cluster=self.cluster, wait=True)
        self.deployments.delete(name=name, cluster=self.cluster)

    # --- the deploy flow (ReplicaTarget) ----------------------------------------------------------------
    def deploy(self, spec: ScalingSpec, replicas: int) -> Rollout:
        """Create or update, raise the floor to ``replicas`` when higher, wait until BentoCloud says
        ``running``; its endpoint URLs become the deployment's READY rows."""
        started, name = time.monotonic(), deployment_name(spec.deployment_id)
        self.apply(spec)
        if replicas > replica_floor(spec):
            self.set_replicas(spec, replicas)
        while (status := self._get(name).get_status(refetch=True).status) != "running":
            if time.monotonic() - started > spec.cold_start_s:
                self.remove(spec.deployment_id)
                raise ReplicaFailed(f"bentocloud {name} not running after {spec.cold_start_s:.0f}s: {status}")
            time.sleep(self.poll_s)
        urls = tuple(self._get(name).get_endpoint_urls(refetch=True))
        for url in urls:
            row = f"{spec.deployment_id}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"
            self.store.add_replica(row, spec.deployment_id, url, pid=None, status=DeploymentStatus.READY)
        return Rollout(urls, time.monotonic() - started, self.where(spec.deployment_id))

    def drain_and_delete(self, deployment_id: str, grace_s: float) -> None:
        """Rows out of routing, then terminate and delete (BentoCloud drains its replicas)."""
        view = self.store.deployment(deployment_id) if self.store is not None else None
        for row in view.replicas if view else ():
            self.store.set_replica_status(row.id, DeploymentStatus.STOPPED)
        self.remove(deployment_id)
        if view is not None:
            self.store.update_deployment(deployment_id, status=DeploymentStatus.STOPPED)

    def where(self, deployment_id: str) -> str:
        return f"bentocloud {self.cluster or 'default'}/{deployment_name(deployment_id)}"

    def _get(self, name: str):
        from bentoml.exceptions import NotFound

        try:
            return self.deployments.get(name=name, cluster=self.cluster)
        except NotFound:
            return None


def _list_pods(name: str, cluster: str | None):
    """BentoCloud's pod list for a deployment (bentoml's REST client; ``bentoml.deployment`` has no public call)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return BentoMLContainer.bentocloud_client.get().client.v2.list_deployment_pods(name, cluster)
