"""The ``kubernetes`` target's apply adapter: server-side apply of the rendered objects with the official client.

Every object is sent whole as an apply patch (``application/apply-patch+yaml``) under the field manager
``compoundry``, forced: the render is the source of truth for every field it sets, a field dropped from
the render is dropped on the cluster, and fields it never sets (the HPA's ``replicas``, cluster IPs,
Knative's creator annotations) stay with whoever owns them. docs/decisions/0038-kubernetes-manifests.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from compoundry.config.kubernetes_config import KubernetesSettings
from compoundry.scaling.targets.kubernetes_names import resource_name, selector
from compoundry.scaling.targets.kubernetes_render import (
    KNATIVE,
    KPA,
    render_manifests,
    replica_floor,
    service_url,
)
from compoundry.scaling.targets.protocol import ScalingSpec

FIELD_MANAGER = "compoundry"
APPLY_PATCH = "application/apply-patch+yaml"
#: delete order: the HPA first, so it does not scale a dying Deployment
KEYS = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment", "KnativeService")


class KubernetesApplyError(RuntimeError):
    """The API server refused a request; the message names the verb, the object and the server's reason."""

    def __init__(self, verb: str, kind: str, namespace: str, name: str, status: int | None, message: str):
        self.verb, self.kind, self.namespace, self.name, self.status = verb, kind, namespace, name, status
        super().__init__(f"{verb} {kind} {namespace}/{name} failed: HTTP {status}: {message}")


@dataclass(frozen=True)
class RolloutStatus:
    ready: bool
    message: str


class _Kind:
    """One kind's calls on the official client with a uniform (verb, name, body) signature, returning
    decoded JSON: raw dicts for built-in kinds and the Knative CRD alike."""

    def __init__(self, label: str, api, suffix: str | None, namespace: str):
        self.label, self.api, self.suffix, self.namespace = label, api, suffix, namespace

    def __call__(self, verb: str, name: str, body: dict | None = None, missing_ok: bool = False):
        import urllib3
        from kubernetes.client.exceptions import ApiException

        kwargs: dict[str, Any] = {"_preload_content": False}
        method_verb = verb
        if verb == "apply":  # server-side apply: a PATCH whose body is the whole desired object
            method_verb = "patch"
            kwargs.update(_content_type=APPLY_PATCH, field_manager=FIELD_MANAGER, force=True)
        elif verb == "patch":  # the client would pick json-patch for a dict body; the API server rejects that
            kwargs["_content_type"] = "application/merge-patch+json"
        rest = (body,) if verb == "create" else (name, *(() if body is None else (body,)))
        if self.suffix is None:  # Knative: CustomObjectsApi takes (group, version, namespace, plural, ...)
            group, version, plural = KNATIVE
            method = getattr(self.api, f"{'get' if verb == 'read' else method_verb}_namespaced_custom_object")
            args = (group, version, self.namespace, plural, *rest)
        else:
            method = getattr(self.api, f"{method_verb}_namespaced_{self.suffix}")
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
    """Applies the rendered objects with server-side apply (field manager ``compoundry``)."""

    name = "kubernetes"

    def __init__(self, api_client=None, namespace: str | None = None, settings: KubernetesSettings | None = None,
                 **render_options: Any):
        client = _kubernetes_client()
        self.settings = settings or KubernetesSettings()
        self.api_client = api_client if api_client is not None else _default_api_client()
        self.namespace = namespace or self.settings.namespace
        self.render_options = render_options  # resources, metric, startup_timeout_s: see render_manifests
        self._core = client.CoreV1Api(self.api_client)
        ns = self.namespace
        self.kinds = {
            "Deployment": _Kind("Deployment", client.AppsV1Api(self.api_client), "deployment", ns),
            "Service": _Kind("Service", self._core, "service", ns),
            "HorizontalPodAutoscaler": _Kind("HorizontalPodAutoscaler", client.AutoscalingV2Api(self.api_client),
                                             "horizontal_pod_autoscaler", ns),
            "PodDisruptionBudget": _Kind("PodDisruptionBudget", client.PolicyV1Api(self.api_client),
                                         "pod_disruption_budget", ns),
            "KnativeService": _Kind("knative Service", client.CustomObjectsApi(self.api_client), None, ns),
            "Endpoints": _Kind("Endpoints", self._core, "endpoints", ns),  # read only: the controller writes them
        }

    def render(self, spec: ScalingSpec) -> list[dict]:
        return render_manifests(spec, self.namespace, settings=self.settings, **self.render_options)

    def apply(self, spec: ScalingSpec) -> None:
        """Server-side apply each rendered object, after deleting the other mode's objects: a mode switch
        under the same deployment id must not leave a Deployment beside a Knative Service (whose route
        also wants a core Service of this very name). Idempotent: an unchanged render changes nothing."""
        manifests = self.render(spec)
        keys = [self._key(m) for m in manifests]
        for key in KEYS:
            if key not in keys:
                self.kinds[key]("delete", manifests[0]["metadata"]["name"], missing_ok=True)
        for key, manifest in zip(keys, manifests):
            self.kinds[key]("apply", manifest["metadata"]["name"], manifest)

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

    def rollout_status(self, spec: ScalingSpec) -> RolloutStatus:
        """Ready when the rollout says so, like ``kubectl rollout status``: the Deployment's newest generation
        observed, updated and available; or the Knative Service's Ready condition for its latest generation."""
        name = resource_name(spec.deployment_id)
        if spec.mode == "serverless":
            return knative_rollout(self.kinds["KnativeService"]("read", name, missing_ok=True))
        return deployment_rollout(self.kinds["Deployment"]("read", name, missing_ok=True))

    def endpoint_url(self, spec: ScalingSpec) -> str:
        """What the gateway routes to: the Service's cluster DNS name, or the URL Knative reports for the route."""
        if spec.mode == "serverless":
            live = self.kinds["KnativeService"]("read", resource_name(spec.deployment_id), missing_ok=True) or {}
            status = live.get("status", {})
            url = (status.get("address") or {}).get("url") or status.get("url")
            if url:
                return url
        return service_url(spec.deployment_id, self.namespace)

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
        for key in KEYS:
            self.kinds[key]("delete", name, missing_ok=True)


def deployment_rollout(live: dict | None) -> RolloutStatus:
    """``kubectl rollout status`` for a Deployment, from its live object."""
    if live is None:
        return RolloutStatus(False, "Deployment not found")
    meta, spec, status = live.get("metadata", {}), live.get("spec", {}), live.get("status", {})
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return RolloutStatus(False, "waiting for the rollout to be observed")
    wanted = spec.get("replicas", 1)
    updated, total = status.get("updatedReplicas", 0), status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return RolloutStatus(False, f"{updated} of {wanted} new replicas updated")
    if total > updated:
        return RolloutStatus(False, f"{total - updated} old replicas pending termination")
    if available < updated:
        return RolloutStatus(False, f"{available} of {updated} updated replicas available")
    return RolloutStatus(True, f"{available} replicas available")


def knative_rollout(live: dict | None) -> RolloutStatus:
    """Ready when Knative's ``Ready`` condition is True for the Service's latest generation."""
    if live is None:
        return RolloutStatus(False, "knative Service not found")
    status = live.get("status", {})
    if status.get("observedGeneration", 0) < live.get("metadata", {}).get("generation", 0):
        return RolloutStatus(False, "waiting for the rollout to be observed")
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        reason = (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition yet"
        return RolloutStatus(False, reason)
    return RolloutStatus(True, f"revision {status.get('latestReadyRevisionName', '?')} ready")


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
