"""Pure renderers of the ``kubernetes`` target: one variant deployment as Kubernetes objects.

``dedicated`` and ``auto`` render a Deployment + Service + HorizontalPodAutoscaler
(autoscaling/v2) + PodDisruptionBudget; ``serverless`` renders a Knative Service, whose autoscaler
(KPA) can scale to zero and whose activator holds requests during a cold start. Every function
here is a function of a :class:`ScalingSpec` and the platform's ``kubernetes:`` settings; nothing
is contacted. See docs/targets.md, docs/decisions/0015 and 0038.
"""

from __future__ import annotations

import json
import math

from compoundry.config.kubernetes_config import KubernetesSettings
from compoundry.scaling.targets.kubernetes_names import (
    DEPLOYMENT_ID_ANNOTATION,
    labels,
    resource_name,
    selector,
)
from compoundry.scaling.targets.protocol import ScalingSpec

PORT = 3000  # what `bentoml serve` and BentoML's container images listen on
IN_FLIGHT_METRIC = "bentoml_service_request_in_progress"  # per-pod gauge every BentoML 1.4 service exports
CPU_FALLBACK_UTILIZATION = 80
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
KNATIVE = ("serving.knative.dev", "v1", "services")  # group, version, plural
KPA = "autoscaling.knative.dev/"
BENTO_UID = 1034  # the `bentoml` user of BentoML's container images (bentoml/_internal/container/generate.py)
LLM_ENGINE_ENV = "COMPOUNDRY_LLM_ENGINE"  # bentos/llm/engines.py: "vllm" fails loudly instead of falling back
#: read from a ConfigMap/Secret named in platform.yaml, never taken from the spec's inline env
REFERENCED_ENV = ("MLFLOW_TRACKING_URI",)


def replica_floor(spec: ScalingSpec, replicas: int = 0) -> int:
    """The autoscaler's minimum: the spec's floor raised to ``replicas``, capped at max. Only serverless may be 0
    (an HPA cannot scale to zero, and dedicated means always on)."""
    floor = max(spec.min_replicas, replicas)
    if spec.mode != "serverless":
        floor = max(1, floor)
    return min(floor, max(1, spec.max_replicas))


def gpu_count(spec: ScalingSpec, settings: KubernetesSettings | None = None) -> int:
    """GPUs per replica: the component's override in platform.yaml, else the spec's (engine_options.gpu)."""
    override = (settings or KubernetesSettings()).components.get(spec.component)
    return override.gpu if override is not None and override.gpu is not None else spec.gpu


def render_manifests(spec: ScalingSpec, namespace: str = "compoundry", *, resources: dict | None = None,
                     metric: str = IN_FLIGHT_METRIC, startup_timeout_s: float | None = None,
                     settings: KubernetesSettings | None = None) -> list[dict]:
    """Every object of one deployment, in apply order (the HPA after the Deployment it scales).
    ``startup_timeout_s`` defaults to the spec's ``cold_start_s``; ``settings`` to platform.yaml's defaults."""
    settings = settings or KubernetesSettings()
    timeout = spec.cold_start_s if startup_timeout_s is None else startup_timeout_s
    pod = render_pod_spec(spec, settings, resources, timeout)
    if spec.mode == "serverless":
        return [render_knative_service(spec, namespace, pod)]
    return [render_deployment(spec, namespace, pod), render_service(spec, namespace),
            render_hpa(spec, namespace, metric), render_pdb(spec, namespace)]


def _metadata(spec: ScalingSpec, namespace: str) -> dict:
    return {"name": resource_name(spec.deployment_id), "namespace": namespace, "labels": labels(spec),
            "annotations": {DEPLOYMENT_ID_ANNOTATION: spec.deployment_id}}


def bento_env(spec: ScalingSpec) -> dict[str, str]:
    """What a compoundry Bento reads at start (docs/decisions/0003-bento-protocol.md), after the spec's env."""
    env = {**spec.env, "COMPOUNDRY_MODEL_URI": spec.model_uri}
    if spec.engine_options:
        env["COMPOUNDRY_ENGINE_OPTIONS"] = json.dumps(spec.engine_options, sort_keys=True)
    return env


def container_security_context() -> dict:
    """Non-root, no privilege escalation, no capabilities: at container level, where Knative accepts it too."""
    return {"runAsNonRoot": True, "runAsUser": BENTO_UID, "runAsGroup": BENTO_UID,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def _resources(spec: ScalingSpec, settings: KubernetesSettings, resources: dict | None, gpus: int) -> dict:
    override = settings.components.get(spec.component)
    res = json.loads(json.dumps(resources if resources is not None else DEFAULT_RESOURCES))
    if resources is None and override is not None:
        if override.cpu:
            res["requests"]["cpu"] = override.cpu
        if override.memory:
            res["requests"]["memory"] = res["limits"]["memory"] = override.memory
    if gpus:
        res.setdefault("limits", {})["nvidia.com/gpu"] = str(gpus)
    return res


def _env(spec: ScalingSpec, settings: KubernetesSettings, gpus: int) -> list[dict]:
    """The Bento's environment: the MLflow URI by reference (never a value in the manifest), then the spec's."""
    ref = settings.mlflow_tracking_uri
    source = "configMapKeyRef" if ref.kind == "ConfigMap" else "secretKeyRef"
    env = [{"name": "MLFLOW_TRACKING_URI", "valueFrom": {source: {"name": ref.name, "key": ref.key}}}]
    values = {k: v for k, v in bento_env(spec).items() if k not in REFERENCED_ENV}
    if gpus and spec.engine == "llm":
        values[LLM_ENGINE_ENV] = "vllm"
    return env + [{"name": k, "value": v} for k, v in values.items()]


def render_container(spec: ScalingSpec, settings: KubernetesSettings, resources: dict | None,
                     startup_timeout_s: float) -> dict:
    """The Bento's container: model URI and MLflow reference in the environment, BentoML's health endpoints
    as probes, non-root."""
    gpus = gpu_count(spec, settings)

    def probe(path: str, **extra) -> dict:
        return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": 5, **extra}

    container = {
        "name": "bento", "image": spec.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "env": _env(spec, settings, gpus),
        "resources": _resources(spec, settings, resources, gpus),
        # model loading can take the whole cold start: liveness only starts counting once /livez answered
        "startupProbe": probe("/livez", failureThreshold=max(1, math.ceil(startup_timeout_s / 5))),
        "livenessProbe": probe("/livez", failureThreshold=3),
        "readinessProbe": probe("/readyz", failureThreshold=1),
        "securityContext": container_security_context(),
    }
    if settings.artifact_store is not None:
        key = "configMapRef" if settings.artifact_store.kind == "ConfigMap" else "secretRef"
        container["envFrom"] = [{key: {"name": settings.artifact_store.name}}]
    return container


def render_pod_spec(spec: ScalingSpec, settings: KubernetesSettings, resources: dict | None,
                    startup_timeout_s: float) -> dict:
    """The pod both modes share: service account, pull secrets, and, with GPUs, the GPU pool's placement
    (the component's own node selector or tolerations when platform.yaml gives them)."""
    pod: dict = {"serviceAccountName": settings.service_account,
                 "containers": [render_container(spec, settings, resources, startup_timeout_s)]}
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if gpu_count(spec, settings):
        override = settings.components.get(spec.component)
        node_selector = override.node_selector if override and override.node_selector is not None \
            else settings.gpu_node_pool.node_selector
        tolerations = override.tolerations if override and override.tolerations is not None \
            else settings.gpu_node_pool.tolerations
        if node_selector:
            pod["nodeSelector"] = dict(node_selector)
        if tolerations:
            pod["tolerations"] = [t.model_dump(exclude_none=True) for t in tolerations]
    return pod


def render_deployment(spec: ScalingSpec, namespace: str, pod: dict) -> dict:
    """No ``replicas``: the HPA owns the count (a fresh Deployment starts at 1 and the HPA raises it to its
    floor), so applying the manifest again never fights the HPA."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(spec, namespace),
        "spec": {
            "selector": {"matchLabels": selector(spec.deployment_id)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(spec)},
                         "spec": {**pod, "terminationGracePeriodSeconds": 30}},
        },
    }


def render_service(spec: ScalingSpec, namespace: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(spec, namespace),
        "spec": {"type": "ClusterIP", "selector": selector(spec.deployment_id),
                 "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]},
    }


def render_pdb(spec: ScalingSpec, namespace: str) -> dict:
    """At most one pod of a dedicated deployment evicted at a time; never ``minAvailable`` = all, which would
    block every node drain of a single-replica deployment."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(spec, namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(spec.deployment_id)}},
    }


def render_hpa(spec: ScalingSpec, namespace: str, metric: str = IN_FLIGHT_METRIC) -> dict:
    """Scale on in-flight requests per pod (a Pods metric served by a custom-metrics adapter), with CPU as the
    fallback the HPA still acts on when that adapter is missing; scale down only after the idle window."""
    name = resource_name(spec.deployment_id)
    floor = replica_floor(spec)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(spec, namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": floor, "maxReplicas": max(floor, spec.max_replicas),
            "metrics": [
                {"type": "Pods", "pods": {"metric": {"name": metric},
                                          "target": {"type": "AverageValue",
                                                     "averageValue": str(spec.target_concurrency)}}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": CPU_FALLBACK_UTILIZATION}}},
            ],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": min(3600, max(0, round(spec.idle_window_s)))},
            },
        },
    }


def knative_windows(idle_window_s: float) -> tuple[str, str]:
    """(stable ``window``, ``scale-to-zero-pod-retention-period``) that add up to the idle window: KPA only
    scales to zero after a whole stable window without traffic, and the window must lie in [6 s, 1 h]."""
    idle = max(0, round(idle_window_s))
    window = min(3600, max(6, idle))
    return f"{window}s", f"{max(0, idle - window)}s"


def render_knative_service(spec: ScalingSpec, namespace: str, pod: dict) -> dict:
    """A Knative Service scaled by KPA on concurrency. ``containerConcurrency`` = the target: a replica is never
    handed more than it is sized for; the queue-proxy (and the activator at zero) hold the rest."""
    window, retention = knative_windows(spec.idle_window_s)
    autoscaling = {
        f"{KPA}class": "kpa.autoscaling.knative.dev", f"{KPA}metric": "concurrency",
        f"{KPA}target": str(spec.target_concurrency), f"{KPA}target-utilization-percentage": "100",
        f"{KPA}min-scale": str(replica_floor(spec)), f"{KPA}max-scale": str(max(1, spec.max_replicas)),
        f"{KPA}window": window, f"{KPA}scale-to-zero-pod-retention-period": retention,
    }
    return {
        "apiVersion": f"{KNATIVE[0]}/{KNATIVE[1]}", "kind": "Service", "metadata": _metadata(spec, namespace),
        "spec": {"template": {
            "metadata": {"labels": labels(spec), "annotations": autoscaling},
            "spec": {"containerConcurrency": spec.target_concurrency, **pod, "timeoutSeconds": 300},
        }},
    }


def service_url(deployment_id: str, namespace: str) -> str:
    """Where the gateway reaches a deployment inside the cluster: the Service's DNS name (port 80). Knative
    publishes a Service of the same name for its cluster-local route, so this holds for serverless too."""
    return f"http://{resource_name(deployment_id)}.{namespace}.svc.cluster.local"
