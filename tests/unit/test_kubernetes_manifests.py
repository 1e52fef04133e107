"""The kubernetes target's pure renderers: every manifest passes the Kubernetes OpenAPI schema offline
(kubernetes-validate, strict: unknown fields are errors), and the spec's values land where they act."""

import copy
import dataclasses
import re

import kubernetes_validate
import pytest

from compoundry.config.kubernetes_config import ComponentResources, KubernetesSettings
from compoundry.scaling.targets.kubernetes import (
    DEFAULT_RESOURCES,
    IN_FLIGHT_METRIC,
    KPA,
    NAME_MAX,
    PORT,
    knative_windows,
    label_value,
    render_manifests,
    replica_floor,
    resource_name,
)
from compoundry.scaling.targets.protocol import ScalingSpec

K8S_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest release still common on managed clusters, and the newest schema
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

BASE = ScalingSpec(
    deployment_id="embedder-v3-1a2b3c", component="embedder", model_name="minilm", model_version="3",
    engine="sentence-transformers", mode="dedicated", min_replicas=1, max_replicas=5, target_concurrency=8,
    idle_window_s=300, image="registry.example.com/compoundry/embedding:3", model_uri="models:/minilm/3",
    env={"HF_HUB_OFFLINE": "1"},
)

CASES = {
    "dedicated-min1": dict(mode="dedicated", min_replicas=1),
    "dedicated-min0": dict(mode="dedicated", min_replicas=0),
    "dedicated-gpu": dict(mode="dedicated", min_replicas=2, gpu=1, engine="llm"),
    "auto-min0": dict(mode="auto", min_replicas=0, variant="challenger"),
    "serverless-min0": dict(mode="serverless", min_replicas=0),
    "serverless-min1": dict(mode="serverless", min_replicas=1, variant="champion"),
    "serverless-gpu": dict(mode="serverless", min_replicas=0, gpu=2, engine="llm", idle_window_s=7200),
    "odd-id": dict(deployment_id="Dialogue_LLM.v12+" + "x" * 80, mode="dedicated"),
}


def spec(**changes) -> ScalingSpec:
    return dataclasses.replace(BASE, **changes)


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {("Knative" if m["apiVersion"].startswith("serving.knative.dev") else "") + m["kind"]: m
            for m in manifests}


def values(container: dict) -> dict[str, str]:
    """The container's inline environment values (references such as the MLflow URI left out)."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def as_deployment(knative_service: dict) -> dict:
    """The Knative Service's revision template wrapped in an apps/v1 Deployment, so that its PodSpec is
    validated against core/v1 (kubernetes-validate has no schema for a CRD). Knative-only fields come off."""
    template = copy.deepcopy(knative_service["spec"]["template"])
    pod_spec = template["spec"]
    for knative_only in ("containerConcurrency", "timeoutSeconds"):
        pod_spec.pop(knative_only)
    labels = template["metadata"]["labels"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": knative_service["metadata"]["name"]},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                                                                       "spec": pod_spec}}}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_passes_the_kubernetes_schema(case, version):
    for manifest in render_manifests(spec(**CASES[case])):
        if manifest["apiVersion"].startswith("serving.knative.dev"):
            manifest = as_deployment(manifest)
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_validator_catches_what_it_should():
    """Guard against a validator that accepts anything: a misspelled field and a wrong type both fail."""
    deployment = render_manifests(BASE)[0]
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "3000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("mode,kinds", [
    ("dedicated", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]),
    ("auto", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]),
    ("serverless", ["Service"]),
])
def test_mode_decides_the_objects(mode, kinds):
    manifests = render_manifests(spec(mode=mode))
    assert [m["kind"] for m in manifests] == kinds
    assert {m["metadata"]["namespace"] for m in manifests} == {"compoundry"}
    assert render_manifests(spec(mode=mode), namespace="ml")[0]["metadata"]["namespace"] == "ml"


@pytest.mark.parametrize("mode,minimum,expected", [
    ("dedicated", 0, 1), ("dedicated", 1, 1), ("dedicated", 3, 3), ("auto", 0, 1),
    ("serverless", 0, 0), ("serverless", 2, 2),
])
def test_hpa_and_knative_floors(mode, minimum, expected):
    objects = by_kind(render_manifests(spec(mode=mode, min_replicas=minimum, max_replicas=6)))
    if mode == "serverless":
        annotations = objects["KnativeService"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations[f"{KPA}min-scale"] == str(expected)
        assert annotations[f"{KPA}max-scale"] == "6"
    else:
        hpa = objects["HorizontalPodAutoscaler"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (expected, 6)  # an HPA cannot go to zero
        assert "replicas" not in objects["Deployment"]["spec"]  # the HPA owns the count (ADR 0038)


def test_replica_floor_is_raised_and_capped():
    assert replica_floor(spec(mode="serverless", min_replicas=0), 3) == 3
    assert replica_floor(spec(mode="serverless", min_replicas=0), 0) == 0
    assert replica_floor(spec(mode="dedicated", min_replicas=0), 0) == 1
    assert replica_floor(spec(mode="dedicated", min_replicas=2, max_replicas=4), 9) == 4


def test_hpa_targets_concurrency_per_pod_with_cpu_fallback_and_idle_window():
    hpa = by_kind(render_manifests(spec(target_concurrency=12, idle_window_s=420.4)))["HorizontalPodAutoscaler"]
    pods, cpu = hpa["spec"]["metrics"]
    assert pods == {"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC},
                                             "target": {"type": "AverageValue", "averageValue": "12"}}}
    assert cpu["resource"]["name"] == "cpu" and cpu["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 420
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "embedder-v3-1a2b3c"}
    long_idle = by_kind(render_manifests(spec(idle_window_s=86400)))["HorizontalPodAutoscaler"]
    assert long_idle["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 3600  # the API's maximum
    custom = by_kind(render_manifests(spec(), metric="compoundry_in_flight"))["HorizontalPodAutoscaler"]
    assert custom["spec"]["metrics"][0]["pods"]["metric"]["name"] == "compoundry_in_flight"


def test_knative_autoscaling_annotations():
    knative = render_manifests(spec(mode="serverless", min_replicas=0, target_concurrency=4, idle_window_s=90))[0]
    template = knative["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations == {
        f"{KPA}class": "kpa.autoscaling.knative.dev", f"{KPA}metric": "concurrency", f"{KPA}target": "4",
        f"{KPA}target-utilization-percentage": "100", f"{KPA}min-scale": "0", f"{KPA}max-scale": "5",
        f"{KPA}window": "90s", f"{KPA}scale-to-zero-pod-retention-period": "0s",
    }
    assert all(isinstance(v, str) for v in annotations.values())  # annotations are strings or the API refuses
    assert template["spec"]["containerConcurrency"] == 4
    assert knative["apiVersion"] == "serving.knative.dev/v1"
    assert DNS_1035.match(knative["metadata"]["name"]) and len(knative["metadata"]["name"]) + len("-00001") <= 63


@pytest.mark.parametrize("idle,window,retention", [
    (1, "6s", "0s"), (6, "6s", "0s"), (300, "300s", "0s"), (3600, "3600s", "0s"), (7200, "3600s", "3600s"),
])
def test_knative_windows_add_up_to_the_idle_window(idle, window, retention):
    assert knative_windows(idle) == (window, retention)


@pytest.mark.parametrize("case", ["dedicated-min1", "serverless-gpu"])
def test_container_carries_image_model_probes_and_gpu(case):
    s = spec(**CASES[case])
    manifests = by_kind(render_manifests(s))
    pod = (manifests["Deployment"]["spec"]["template"] if "Deployment" in manifests
           else manifests["KnativeService"]["spec"]["template"])["spec"]
    (container,) = pod["containers"]
    assert container["image"] == s.image
    assert container["ports"][0]["containerPort"] == PORT
    assert values(container) == {"HF_HUB_OFFLINE": "1", "COMPOUNDRY_MODEL_URI": "models:/minilm/3",
                                 **({"COMPOUNDRY_LLM_ENGINE": "vllm"} if s.gpu else {})}
    assert container["env"][0] == {"name": "MLFLOW_TRACKING_URI", "valueFrom": {"configMapKeyRef": {
        "name": "compoundry-platform", "key": "MLFLOW_TRACKING_URI"}}}
    assert container["envFrom"] == [{"secretRef": {"name": "compoundry-artifact-store"}}]
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["runAsUser"] > 0
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": PORT}
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["resources"].get("limits", {}).get("nvidia.com/gpu") == (str(s.gpu) if s.gpu else None)


def test_resources_can_be_overridden_and_the_default_is_not_shared():
    resources = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    deployment = render_manifests(spec(gpu=1), resources=resources)[0]
    got = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert got == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}}
    assert "limits" not in resources or "nvidia.com/gpu" not in resources["limits"]  # caller's dict untouched
    plain = render_manifests(spec())[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert plain == DEFAULT_RESOURCES  # the GPU case did not leak into the module default


def test_labels_selectors_and_service_wiring():
    deployment, service, _, pdb = render_manifests(spec(variant="challenger"))
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    meta_labels = deployment["metadata"]["labels"]
    assert meta_labels["compoundry.io/component"] == "embedder"
    assert meta_labels["compoundry.io/variant"] == "challenger"
    assert meta_labels["app.kubernetes.io/instance"] == "embedder-v3-1a2b3c"
    assert meta_labels["app.kubernetes.io/managed-by"] == "compoundry"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == PORT
    assert "compoundry.io/variant" not in render_manifests(spec())[0]["metadata"]["labels"]
    assert deployment["metadata"]["annotations"]["compoundry.io/deployment-id"] == "embedder-v3-1a2b3c"


@pytest.mark.parametrize("raw", [
    "embedder-v3-1a2b3c", "Embedder_V3.1", "3-starts-with-digit", "a.b", "a_b", "---", "x" * 200,
    "dialogue-llm/champion@v12", "trailing-", "ÜnïcödÉ",
])
def test_resource_names_are_dns_labels(raw):
    name = resource_name(raw)
    assert DNS_1035.match(name) and len(name) <= NAME_MAX
    assert resource_name(raw) == name  # deterministic: remove() finds what apply() created


def test_resource_names_keep_valid_ids_and_never_collide():
    assert resource_name("embedder-v3-1a2b3c") == "embedder-v3-1a2b3c"
    assert resource_name("a.b") != resource_name("a_b") != resource_name("a-b")
    assert resource_name("x" * 100 + "1") != resource_name("x" * 100 + "2")


@pytest.mark.parametrize("raw", ["3", "v1.2+build", "-x-", "a" * 90, "", "über"])
def test_label_values_are_valid(raw):
    assert LABEL_VALUE.match(label_value(raw)) and len(label_value(raw)) <= 63


def test_knative_pod_spec_respects_knatives_own_restrictions():
    """What Knative's webhook adds on top of core/v1: one serving port named http1 or h2c, probes on that
    port, and no fields it does not support on a revision (e.g. a Deployment's selector or replicas)."""
    template = render_manifests(spec(mode="serverless"))[0]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (port,) = container["ports"]
    assert port["name"] in ("http1", "h2c")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"]
    assert set(template["spec"]) == {"containerConcurrency", "containers", "timeoutSeconds", "serviceAccountName"}
    assert set(template["metadata"]) == {"labels", "annotations"}  # no name: Knative names revisions itself


def test_engine_options_and_cold_start_reach_the_container():
    s = spec(engine="llm", engine_options={"max_tokens": 64, "gpu": True}, cold_start_s=300)
    (container,) = render_manifests(s)[0]["spec"]["template"]["spec"]["containers"]
    env = values(container)
    assert env["COMPOUNDRY_ENGINE_OPTIONS"] == '{"gpu": true, "max_tokens": 64}'
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 300
    (container,) = render_manifests(s, startup_timeout_s=12)[0]["spec"]["template"]["spec"]["containers"]
    assert container["startupProbe"]["failureThreshold"] == 3  # ceil(12 / 5)
    assert "COMPOUNDRY_ENGINE_OPTIONS" not in values(render_manifests(spec())[0]["spec"]["template"]["spec"]
                                                     ["containers"][0])


def test_gpu_runners_get_the_pool_and_vllm_and_components_can_override():
    settings = KubernetesSettings(components={
        "dialogue-llm": ComponentResources(gpu=2, memory="24Gi", node_selector={"pool": "a100"}),
        "embedder": ComponentResources(gpu=0, cpu="2")})
    llm = spec(component="dialogue-llm", engine="llm", mode="dedicated")
    pod = render_manifests(llm, settings=settings)[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "24Gi"},
                                      "limits": {"memory": "24Gi", "nvidia.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"pool": "a100"}  # the component's own; the pool's tolerations still apply
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert values(container)["COMPOUNDRY_LLM_ENGINE"] == "vllm"
    cpu_only = render_manifests(spec(gpu=1), settings=settings)[0]["spec"]["template"]["spec"]  # embedder: gpu 0
    assert "nodeSelector" not in cpu_only and "tolerations" not in cpu_only
    assert cpu_only["containers"][0]["resources"]["requests"]["cpu"] == "2"
    assert "COMPOUNDRY_LLM_ENGINE" not in values(cpu_only["containers"][0])


def test_the_mlflow_uri_is_never_inline_and_secrets_are_named():
    settings = KubernetesSettings(mlflow_tracking_uri={"kind": "Secret", "name": "mlflow", "key": "uri"},
                                  artifact_store=None, image_pull_secrets=["regcred"])
    s = spec(env={"MLFLOW_TRACKING_URI": "http://inline:5000", "X": "1"})
    pod = render_manifests(s, settings=settings)[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uri = [e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI"]
    assert uri == [{"name": "MLFLOW_TRACKING_URI", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "uri"}}}]
    assert "envFrom" not in container and pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_image_tags_must_be_pinned():
    with pytest.raises(ValueError, match="pinned"):
        KubernetesSettings(images={"registry": "r.example.com", "tag": "latest"})
    with pytest.raises(ValueError, match="go together"):
        KubernetesSettings(images={"tag": "1.0"})
