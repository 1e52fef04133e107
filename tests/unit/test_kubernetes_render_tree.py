"""`compoundry k8s render --out DIR`: the platform and every shipped component, built with `kubectl kustomize`
and validated strictly against two Kubernetes versions' OpenAPI schemas (Knative Services' pod specs as pods);
and where runner images come from."""

import copy
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from compoundry.cli.main import app
from compoundry.config import load_config
from compoundry.config.kubernetes_config import ImageSettings
from compoundry.scaling.targets.kubernetes_images import ImageUnavailable, resolve_image

K8S_VERSIONS = ["1.30.0", "1.37.0"]
REGISTRY, TAG = "registry.example.com/compoundry", "0.1.0"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s")
    result = CliRunner().invoke(app, ["k8s", "render", "--out", str(out), "--registry", REGISTRY, "--tag", TAG])
    assert result.exit_code == 0, result.output
    return out


def build(directory) -> list[dict]:
    text = subprocess.run(["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pods(objects: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload, Knative Services included."""
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects
            if o["kind"] == "Deployment" or o["apiVersion"].startswith("serving.knative.dev")]


@pytest.fixture(scope="module", params=["base", "overlays/gpu"])
def built(request, tree):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) not installed")
    return request.param, build(tree / request.param)


@needs_kubectl
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_passes_the_kubernetes_schema(built, version):
    _, objects = built
    for obj in objects:
        if obj["apiVersion"].startswith("serving.knative.dev"):
            pod_spec = copy.deepcopy(obj["spec"]["template"]["spec"])
            for knative_only in ("containerConcurrency", "timeoutSeconds"):
                pod_spec.pop(knative_only)
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": obj["metadata"]["name"]}, "spec": pod_spec}
        kubernetes_validate.validate(obj, version, strict=True)


@needs_kubectl
def test_every_pod_reads_mlflow_by_reference_runs_pinned_images_as_non_root(built):
    _, objects = built
    for name, pod in pods(objects):
        assert pod.get("serviceAccountName"), name
        for container in pod["containers"]:
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)
            (uri,) = [e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI"]
            assert "value" not in uri and set(uri["valueFrom"]) <= {"configMapKeyRef", "secretKeyRef"}, name
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context["runAsNonRoot"] and context["allowPrivilegeEscalation"] is False, name
            secrets = [e for e in container["env"] if any(w in e["name"] for w in ("PASSWORD", "SECRET", "DATABASE"))]
            assert all("value" not in e for e in secrets), (name, secrets)


@needs_kubectl
def test_the_platform_and_every_shipped_component_are_there(built):
    overlay, objects = built
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] != "Namespace"} == {"compoundry"}
    assert {"mlflow", "prefect-server", "prefect-worker", "gateway"} <= set(by_kind["Deployment"])
    assert by_kind["Deployment"]["gateway"]["spec"]["replicas"] >= 2
    assert by_kind["HorizontalPodAutoscaler"]["gateway"]["spec"]["minReplicas"] >= 2
    assert "ClusterRole" not in by_kind and "ClusterRoleBinding" not in by_kind  # its namespace only
    deployer = {(g, r) for rule in by_kind["Role"]["compoundry-deployer"]["rules"]
                for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("apps", "deployments"), ("", "services"), ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"), ("serving.knative.dev", "services")} <= deployer
    (configs,) = [c for n, c in by_kind["ConfigMap"].items() if n.startswith("compoundry-configs-")]
    assert yaml.safe_load(configs["data"]["components.yaml"])["components"].keys() == \
        load_config().components.keys()
    workloads = dict(pods(objects))
    for name, component in load_config().components.items():
        assert name in workloads  # a Deployment (dedicated, auto) or a Knative Service (serverless)
        if component.mode != "serverless":
            assert name in by_kind["PodDisruptionBudget"] and "replicas" not in by_kind["Deployment"][name]["spec"]
    llm = workloads["dialogue-llm"]
    on_gpu = overlay == "overlays/gpu"
    assert ("nvidia.com/gpu" in llm["containers"][0]["resources"]["limits"]) == on_gpu
    assert llm["containers"][0]["image"] == f"{REGISTRY}/compoundry-llm{'-gpu' if on_gpu else ''}:{TAG}"
    assert ("nodeSelector" in llm and "tolerations" in llm) == on_gpu
    assert any(e.get("value") == "vllm" for e in llm["containers"][0]["env"]) == on_gpu
    assert "nodeSelector" not in workloads["embedder"]  # only llm runners go to the GPU pool


def test_images_come_from_the_registry_or_a_builder_or_the_error_names_both():
    configured = ImageSettings(registry="r.example.com/c/", tag="7")
    assert resolve_image("llm", True, configured) == "r.example.com/c/compoundry-llm-gpu:7"
    assert resolve_image("pyfunc", True, configured) == "r.example.com/c/compoundry-pyfunc:7"  # GPU: llm only
    built = []
    image = resolve_image("sentence-transformers", False, ImageSettings(), which=lambda b: b == "podman" or None,
                          build=lambda engine, gpu, builder: built.append(builder) or "compoundry-embedding:abc")
    assert (image, built) == ("compoundry-embedding:abc", ["podman"])
    with pytest.raises(ImageUnavailable) as missing:
        resolve_image("llm", False, ImageSettings(), which=lambda b: None)
    assert "kubernetes.images.registry" in str(missing.value) and "docker, podman, buildctl" in str(missing.value)
    assert "bentoml containerize" in str(missing.value)


def test_render_refuses_latest(tmp_path):
    result = CliRunner().invoke(app, ["k8s", "render", "--out", str(tmp_path), "--registry", REGISTRY,
                                      "--tag", "latest"])
    assert result.exit_code == 2 and "latest" in result.output
