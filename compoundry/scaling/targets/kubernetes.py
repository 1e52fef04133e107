"""The ``kubernetes`` scaler target: one variant deployment as Kubernetes objects.

``dedicated`` and ``auto`` render a Deployment + Service + HorizontalPodAutoscaler
(autoscaling/v2); ``serverless`` renders a Knative Service, whose autoscaler
(KPA) can scale to zero and whose activator holds requests during a cold start.
The renderers are pure functions of a :class:`ScalingSpec`; :class:`KubernetesTarget`
applies their output with the official ``kubernetes`` client. See
docs/targets.md and docs/decisions/0015-remote-scaler-targets.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from compoundry.scaling.targets.protocol import ScalingSpec

PORT = 3000  # what `bentoml serve` and BentoML's container images listen on
NAME_MAX = 57  # a DNS label is 63; Knative names revisions "<service>-00001", which must stay one
IN_FLIGHT_METRIC = "bentoml_service_request_in_progress"  # per-pod gauge every BentoML 1.4 service exports
CPU_FALLBACK_UTILIZATION = 80
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}}
KNATIVE = ("serving.knative.dev", "v1", "services")  # group, version, plural
KPA = "autoscaling.knative.dev/"
DEPLOYMENT_ID_ANNOTATION = "compoundry.io/deployment-id"
_MANAGED_BY = {"app.kubernetes.io/managed-by": "compoundry", "app.kubernetes.io/part-of": "compoundry"}


# --- names and labels -----------------------------------------------------------------------------------------

def resource_name(deployment_id: str) -> str:
    """A DNS-1035 label for ``deployment_id`` (Services need one): lowercase, ``[a-z0-9-]``, starts with a
    letter, at most :data:`NAME_MAX`. A hash of the raw id is appended whenever anything was changed, so two
    ids that sanitize alike (``a.b``, ``a_b``) never share objects."""
    name = re.sub(r"[^a-z0-9]+", "-", deployment_id.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"d-{name}".rstrip("-")
    if name == deployment_id and len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(deployment_id.encode()).hexdigest()[:8]
    return f"{name[:NAME_MAX - 9].rstrip('-')}-{digest}"


def label_value(value: str) -> str:
    """``value`` as a valid label value (<= 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63].strip("._-")


def labels(spec: ScalingSpec) -> dict[str, str]:
    """Recommended ``app.kubernetes.io/*`` labels plus what compoundry selects on."""
    out = {
        "app.kubernetes.io/name": label_value(spec.component),
        "app.kubernetes.io/instance": resource_name(spec.deployment_id),
        "app.kubernetes.io/version": label_value(spec.model_version),
        "app.kubernetes.io/component": "model-server",
        **_MANAGED_BY,
        "compoundry.io/component": label_value(spec.component),
        "compoundry.io/engine": label_value(spec.engine),
    }
    if spec.variant:
        out["compoundry.io/variant"] = label_value(spec.variant)
    return out


def selector(deployment_id: str) -> dict[str, str]:
    """The labels that pick one deployment's pods (stable across versions: a Deployment's selector is immutable)."""
    return {"app.kubernetes.io/instance": resource_name(deployment_id), **_MANAGED_BY}


# --- pure renderers -------------------------------------------------------------------------------------------

def replica_floor(spec: ScalingSpec, replicas: int = 0) -> int:
    """The autoscaler's minimum: the spec's floor raised to ``replicas``, capped at max. Only serverless may be 0
    (an HPA cannot scale to zero, and dedicated means always on)."""
    floor = max(spec.min_replicas, replicas)
    if spec.mode != "serverless":
        floor = max(1, floor)
    return min(floor, max(1, spec.max_replicas))


def render_manifests(spec: ScalingSpec, namespace: str = "compoundry", *, resources: dict | None = None,
                     metric: str = IN_FLIGHT_METRIC, startup_timeout_s: float | None = None) -> list[dict]:
    """Every object of one deployment, in apply order (the HPA after the Deployment it scales).
    ``startup_timeout_s`` defaults to the spec's ``cold_start_s``."""
    container = _container(spec, resources, spec.cold_start_s if startup_timeout_s is None else startup_timeout_s)
    if spec.mode == "serverless":
        return [render_knative_service(spec, namespace, container)]
    return [render_deployment(spec, namespace, container), render_service(spec, namespace),
            render_hpa(spec, namespace, metric)]


def _metadata(spec: ScalingSpec, namespace: str, annotations: dict | None = None) -> dict:
    return {"name": resource_name(spec.deployment_id), "namespace": namespace, "labels": labels(spec),
            "annotations": {DEPLOYMENT_ID_ANNOTATION: spec.deployment_id, **(annotations or {})}}


def bento_env(spec: ScalingSpec) -> dict[str, str]:
    """What a compoundry Bento reads at start (docs/decisions/0003-bento-protocol.md), after the spec's env."""
    env = {**spec.env, "COMPOUNDRY_MODEL_URI": spec.model_uri}
    if spec.engine_options:
        env["COMPOUNDRY_ENGINE_OPTIONS"] = json.dumps(spec.engine_options, sort_keys=True)
    return env


def _container(spec: ScalingSpec, resources: dict | None, startup_timeout_s: float) -> dict:
    """The Bento's container: model URI in the environment, BentoML's health endpoints as probes."""
    res = json.loads(json.dumps(resources if resources is not None else DEFAULT_RESOURCES))
    if spec.gpu:
        res.setdefault("limits", {})["nvidia.com/gpu"] = str(spec.gpu)
    env = bento_env(spec)

    def probe(path: str, **extra) -> dict:
        return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": 5, **extra}

    return {
        "name": "bento", "image": spec.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": res,
        # model loading can take the whole cold start: liveness only starts counting once /livez answered
        "startupProbe": probe("/livez", failureThreshold=max(1, math.ceil(startup_timeout_s / 5))),
        "livenessProbe": probe("/livez", failureThreshold=3),
        "readinessProbe": probe("/readyz", failureThreshold=1),
    }


def render_deployment(spec: ScalingSpec, namespace: str, container: dict) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(spec, namespace),
        "spec": {
            "replicas": replica_floor(spec),  # the HPA owns it after creation; apply keeps the live count
            "selector": {"matchLabels": selector(spec.deployment_id)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(spec)},
                         "spec": {"containers": [container], "terminationGracePeriodSeconds": 30}},
        },
    }


def render_service(spec: ScalingSpec, namespace: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _metadata(spec, namespace),
        "spec": {"type": "ClusterIP", "selector": selector(spec.deployment_id),
                 "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]},
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


def render_knative_service(spec: ScalingSpec, namespace: str, container: dict) -> dict:
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
            "spec": {"containerConcurrency": spec.target_concurrency, "containers": [container],
                     "timeoutSeconds": 300},
        }},
    }


# --- the apply adapter ----------------------------------------------------------------------------------------

class KubernetesApplyError(RuntimeError):
    """The API server refused a request; the message names the verb, the object and the server's reason."""

    def __init__(self, verb: str, kind: str, namespace: str, name: str, status: int | None, message: str):
        self.verb, self.kind, self.namespace, self.name, self.status = verb, kind, namespace, name, status
        super().__init__(f"{verb} {kind} {namespace}/{name} failed: HTTP {status}: {message}")


class _Kind:
    """One kind's CRUD calls on the official client with a uniform (verb, name, body) signature, returning
    decoded JSON: raw dicts for built-in kinds and the Knative CRD alike."""

    def __init__(self, label: str, api, suffix: str | None, namespace: str):
        self.label, self.api, self.suffix, self.namespace = label, api, suffix, namespace

    def __call__(self, verb: str, name: str, body: dict | None = None, missing_ok: bool = False):
        import urllib3
        from kubernetes.client.exceptions import ApiException

        kwargs = {"_preload_content": False}
        if verb == "patch":  # the client would pick json-patch for a dict body; the API server rejects that
            kwargs["_content_type"] = "application/merge-patch+json"
        rest = (body,) if verb == "create" else (name, *(() if body is None else (body,)))
        if self.suffix is None:  # Knative: CustomObjectsApi takes (group, version, namespace, plural, ...)
            group, version, plural = KNATIVE
            method = getattr(self.api, f"{'get' if verb == 'read' else verb}_namespaced_custom_object")
            args = (group, version, self.namespace, plural, *rest)
        else:
            method = getattr(self.api, f"{verb}_namespaced_{self.suffix}")
            args = (self.namespace, body) if verb == "create" else (name, self.namespace, *rest[1:])
        try:
            return json.loads(method(*args, **kwargs).data or b"{}")
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise KubernetesApplyError(verb, self.label, self.namespace, name, exc.status, _reason(exc)) from None
        except urllib3.exceptions.HTTPError as exc:  # refused, TLS, timeout: no HTTP status at all
            raise KubernetesApplyError(verb, self.label, self.namespace, name, None, repr(exc)) from None


class KubernetesTarget:
    """Applies the rendered objects with create, or read then replace (create-or-replace; ADR 0015)."""

    name = "kubernetes"

    def __init__(self, api_client=None, namespace: str = "compoundry", **render_options: Any):
        client = _kubernetes_client()
        self.api_client = api_client if api_client is not None else _default_api_client()
        self.namespace = namespace
        self.render_options = render_options  # resources, metric, startup_timeout_s: see render_manifests
        self._core = client.CoreV1Api(self.api_client)
        self.kinds = {
            "Deployment": _Kind("Deployment", client.AppsV1Api(self.api_client), "deployment", namespace),
            "Service": _Kind("Service", self._core, "service", namespace),
            "HorizontalPodAutoscaler": _Kind("HorizontalPodAutoscaler", client.AutoscalingV2Api(self.api_client),
                                             "horizontal_pod_autoscaler", namespace),
            "KnativeService": _Kind("knative Service", client.CustomObjectsApi(self.api_client), None, namespace),
        }

    def apply(self, spec: ScalingSpec) -> None:
        """Create or replace each rendered object, after deleting the other mode's objects: a mode switch
        under the same deployment id must not leave a Deployment beside a Knative Service (whose route
        also wants a core Service of this very name)."""
        manifests = render_manifests(spec, self.namespace, **self.render_options)
        keys = [self._key(m) for m in manifests]
        for key in ("HorizontalPodAutoscaler", "Service", "Deployment", "KnativeService"):
            if key not in keys:
                self.kinds[key]("delete", manifests[0]["metadata"]["name"], missing_ok=True)
        for key, manifest in zip(keys, manifests):
            name = manifest["metadata"]["name"]
            live = self.kinds[key]("read", name, missing_ok=True)
            if live is None:
                self.kinds[key]("create", name, manifest)
            else:
                self.kinds[key]("replace", name, _carry_over(manifest, live))

    def set_replicas(self, spec: ScalingSpec, replicas: int) -> int:
        """Raise the floor to ``replicas`` (or release it back to the spec's): HPA minReplicas, plus the
        Deployment when it runs fewer; or Knative's min-scale annotation (which rolls an identical revision)."""
        floor, name = replica_floor(spec, replicas), resource_name(spec.deployment_id)
        if spec.mode == "serverless":
            template = {"metadata": {"annotations": {f"{KPA}min-scale": str(floor)}}}
            self.kinds["KnativeService"]("patch", name, {"spec": {"template": template}})
            return floor
        self.kinds["HorizontalPodAutoscaler"]("patch", name, {"spec": {"minReplicas": floor}})
        live = self.kinds["Deployment"]("read", name)
        if (live.get("spec", {}).get("replicas") or 0) < floor:
            self.kinds["Deployment"]("patch", name, {"spec": {"replicas": floor}})
        return floor

    def replicas(self, deployment_id: str) -> int:
        """Pods of the deployment that are starting or ready (not terminating, not finished); one count for
        both modes, since Knative pods carry the same labels."""
        from kubernetes.client.exceptions import ApiException

        query = ",".join(f"{k}={v}" for k, v in selector(deployment_id).items())
        try:
            pods = json.loads(self._core.list_namespaced_pod(self.namespace, label_selector=query,
                                                             _preload_content=False).data)
        except ApiException as exc:
            raise KubernetesApplyError("list", "Pod", self.namespace, query, exc.status, _reason(exc)) from None
        return sum(1 for p in pods.get("items", []) if not p["metadata"].get("deletionTimestamp")
                   and p.get("status", {}).get("phase") not in ("Succeeded", "Failed"))

    def lost(self, deployment_id: str) -> int:
        """Always 0: the platform's own controller replaces a dead replica."""
        return 0

    @staticmethod
    def _key(manifest: dict) -> str:
        return "KnativeService" if manifest["apiVersion"].startswith(KNATIVE[0]) else manifest["kind"]

    def remove(self, deployment_id: str) -> None:
        """Delete whatever either mode created (the HPA first, so it does not scale a dying Deployment); gone
        already is fine. Pods drain on SIGTERM within their grace period."""
        name = resource_name(deployment_id)
        for key in ("HorizontalPodAutoscaler", "Service", "Deployment", "KnativeService"):
            self.kinds[key]("delete", name, missing_ok=True)


def _carry_over(desired: dict, live: dict) -> dict:
    """The desired object plus what the server or another controller owns on the live one: the
    resourceVersion (optimistic concurrency), the HPA-chosen replica count, a Service's cluster IPs, and
    Knative's creator/lastModifier annotations (its webhook rejects a replace that drops them)."""
    out = json.loads(json.dumps(desired))
    live_meta, live_spec = live.get("metadata", {}), live.get("spec", {})
    out["metadata"]["resourceVersion"] = live_meta.get("resourceVersion")
    kept = {k: v for k, v in (live_meta.get("annotations") or {}).items() if k.startswith("serving.knative.dev/")}
    out["metadata"]["annotations"] = {**kept, **out["metadata"].get("annotations", {})}
    if desired["kind"] == "Deployment" and live_spec.get("replicas") is not None:
        out["spec"]["replicas"] = max(live_spec["replicas"], desired["spec"]["replicas"])
    if desired["apiVersion"] == "v1" and "clusterIP" in live_spec:
        out["spec"]["clusterIP"] = live_spec["clusterIP"]
        out["spec"]["clusterIPs"] = live_spec.get("clusterIPs", [live_spec["clusterIP"]])
    return out


def _reason(exc) -> str:
    """The Status reason and message the API server sent, or the HTTP reason when the body is not a Status."""
    try:
        body = json.loads(exc.body)
        return f"{body.get('reason') or exc.reason}: {body.get('message', '')}".rstrip(": ")
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _kubernetes_client():
    """The official client's ``kubernetes.client``: an optional extra, so a missing install says what to do."""
    try:
        from kubernetes import client
    except ImportError:
        raise ImportError("the kubernetes target needs the Kubernetes client: pip install 'compoundry[kubernetes]'") from None
    return client


def _default_api_client():
    """In a pod: its service account; elsewhere: the current kubeconfig context."""
    from kubernetes import client, config

    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config()
