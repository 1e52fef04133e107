"""The kubernetes target's apply path: the official client against a fake API server over real HTTP.

What this proves: the calls the target makes (paths, verbs, bodies, content types) and how it reacts to
the server's answers. What it cannot: admission webhooks, controllers, a real scheduler (docs/targets.md).
"""

import copy
import dataclasses

import pytest
from kubernetes import client

from compoundry.scaling.targets.kubernetes import (
    KPA,
    KubernetesApplyError,
    KubernetesTarget,
    RolloutStatus,
    render_manifests,
)
from compoundry.scaling.targets.protocol import ScalingSpec
from tests.integration.fake_kube_api import FakeKubeAPI

pytestmark = pytest.mark.integration

APPS, CORE, HPA, KNATIVE = "apis/apps/v1", "api/v1", "apis/autoscaling/v2", "apis/serving.knative.dev/v1"
POLICY = "apis/policy/v1"
NS = "compoundry"

DEDICATED = ScalingSpec(
    deployment_id="embedder-v3-1a2b3c", component="embedder", model_name="minilm", model_version="3",
    engine="sentence-transformers", mode="dedicated", min_replicas=1, max_replicas=5, target_concurrency=8,
    idle_window_s=300, image="registry.example.com/compoundry/embedding:3", model_uri="models:/minilm/3",
)
SERVERLESS = dataclasses.replace(DEDICATED, deployment_id="Intent_Classifier.v2", component="intent",
                                 mode="serverless", min_replicas=0, max_replicas=3)
SERVERLESS_NAME = "intent-classifier-v2-" + render_manifests(SERVERLESS)[0]["metadata"]["name"].rsplit("-", 1)[1]


@pytest.fixture(scope="module")
def server():
    fake = FakeKubeAPI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server):
    server.objects.clear()
    server.requests.clear()
    server.faults.clear()
    return server


@pytest.fixture
def target(fake):
    api_client = client.ApiClient(client.Configuration(host=fake.url))
    yield KubernetesTarget(api_client, namespace=NS)
    api_client.close()


def pod(name: str, instance: str, phase: str = "Running", terminating: bool = False) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/instance": instance, "app.kubernetes.io/managed-by":
                                     "compoundry", "app.kubernetes.io/part-of": "compoundry"}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": phase}}


def test_apply_is_server_side_apply_and_leaves_replicas_to_the_hpa(fake, target):
    target.apply(DEDICATED)
    name = "embedder-v3-1a2b3c"
    assert fake.names(APPS, "deployments") == [name]
    assert fake.names(CORE, "services") == [name]
    assert fake.names(HPA, "horizontalpodautoscalers") == [name]
    assert fake.names(POLICY, "poddisruptionbudgets") == [name]
    (apply,) = fake.calls(plural="deployments")
    assert (apply.method, apply.content_type) == ("PATCH", "application/apply-patch+yaml")
    assert "fieldManager=compoundry" in apply.query and "force=true" in apply.query.lower()
    assert "replicas" not in apply.body["spec"]  # the HPA owns the count
    assert [r.method for r in fake.requests if r.path.startswith(f"/{KNATIVE}")] == ["DELETE"]  # none to delete
    created = fake.get(APPS, NS, "deployments", name)
    assert created["spec"]["template"]["spec"]["containers"][0]["image"] == DEDICATED.image
    cluster_ip = fake.get(CORE, NS, "services", name)["spec"]["clusterIP"]

    fake.controller_patch(APPS, NS, "deployments", name, {"spec": {"replicas": 4}})  # what the HPA chose
    fake.requests.clear()
    target.apply(dataclasses.replace(DEDICATED, image="registry.example.com/compoundry/embedding:4",
                                     max_replicas=7))
    assert [r.method for r in fake.requests] == ["DELETE"] + ["PATCH"] * 4  # no reads, never a create
    deployment = fake.get(APPS, NS, "deployments", name)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":4")
    assert deployment["spec"]["replicas"] == 4  # the HPA's field, untouched by the apply
    assert deployment["metadata"]["generation"] == 3  # created, scaled by the HPA, new image
    assert fake.get(HPA, NS, "horizontalpodautoscalers", name)["spec"]["maxReplicas"] == 7
    assert fake.get(CORE, NS, "services", name)["spec"]["clusterIP"] == cluster_ip


def test_apply_is_idempotent(fake, target):
    target.apply(DEDICATED)
    before = copy.deepcopy(fake.objects)
    target.apply(DEDICATED)
    assert fake.objects == before  # not even a new resourceVersion
    assert all(r.method in ("PATCH", "DELETE") for r in fake.requests)


def test_apply_takes_back_its_fields_and_drops_what_the_render_dropped(fake, target):
    """force=true: a field someone else changed (kubectl edit) returns to the render's value; a field the
    render no longer sets (the GPU pool's placement) is removed, not left behind as a merge patch would."""
    on_gpu = dataclasses.replace(DEDICATED, gpu=1, engine="llm")
    target.apply(on_gpu)
    name = DEDICATED.deployment_id
    assert fake.get(APPS, NS, "deployments", name)["spec"]["template"]["spec"]["nodeSelector"]
    fake.controller_patch(APPS, NS, "deployments", name, {"spec": {"strategy": {"type": "Recreate"}}}, "kubectl-edit")
    target.apply(dataclasses.replace(on_gpu, gpu=0))
    pod = fake.get(APPS, NS, "deployments", name)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert fake.get(APPS, NS, "deployments", name)["spec"]["strategy"]["type"] == "RollingUpdate"


def test_the_fake_refuses_an_unforced_conflict_and_an_apply_without_manager(fake, target):
    """Guard for the fake itself: the two rules of the real server the target relies on."""
    target.apply(DEDICATED)
    name = DEDICATED.deployment_id
    fake.controller_patch(APPS, NS, "deployments", name, {"spec": {"minReadySeconds": 5}}, "someone")
    body = copy.deepcopy(fake.calls("PATCH", "deployments")[0].body)
    body["spec"]["minReadySeconds"] = 9
    api = client.AppsV1Api(target.api_client)
    with pytest.raises(client.exceptions.ApiException) as conflict:
        api.patch_namespaced_deployment(name, NS, body, field_manager="compoundry",
                                        _content_type="application/apply-patch+yaml")
    assert conflict.value.status == 409 and "someone" in conflict.value.body
    with pytest.raises(client.exceptions.ApiException) as unmanaged:
        api.patch_namespaced_deployment(name, NS, body, _content_type="application/apply-patch+yaml")
    assert unmanaged.value.status == 400


def test_serverless_apply_creates_a_knative_service(fake, target):
    target.apply(SERVERLESS)
    assert fake.names(KNATIVE, "services") == [SERVERLESS_NAME]
    assert fake.names(APPS, "deployments") == [] and fake.names(CORE, "services") == []
    assert [r.method for r in fake.requests][:4] == ["DELETE"] * 4  # no dedicated objects to clear
    (apply,) = fake.calls("PATCH")
    assert apply.path == f"/{KNATIVE}/namespaces/{NS}/services/{SERVERLESS_NAME}"
    # Knative's webhook stamps these; an apply keeps them since another manager owns them
    fake.get(KNATIVE, NS, "services", SERVERLESS_NAME)["metadata"]["annotations"].update(
        {"serving.knative.dev/creator": "ci", "serving.knative.dev/lastModifier": "ci"})
    target.apply(dataclasses.replace(SERVERLESS, target_concurrency=2))
    knative = fake.get(KNATIVE, NS, "services", SERVERLESS_NAME)
    assert knative["spec"]["template"]["metadata"]["annotations"][f"{KPA}target"] == "2"
    assert knative["spec"]["template"]["spec"]["containerConcurrency"] == 2
    assert knative["metadata"]["annotations"]["serving.knative.dev/creator"] == "ci"
    assert knative["metadata"]["annotations"]["compoundry.io/deployment-id"] == "Intent_Classifier.v2"


def test_switching_modes_replaces_the_other_modes_objects(fake, target):
    target.apply(DEDICATED)
    as_serverless = dataclasses.replace(DEDICATED, mode="serverless", min_replicas=0)
    target.apply(as_serverless)
    assert set(fake.objects) == {(KNATIVE, NS, "services", "embedder-v3-1a2b3c")}
    target.apply(DEDICATED)
    assert {key[2] for key in fake.objects} == {"deployments", "services", "horizontalpodautoscalers",
                                                "poddisruptionbudgets"}
    assert fake.names(KNATIVE, "services") == []


def test_set_replicas_raises_the_hpa_floor_and_the_deployment(fake, target):
    target.apply(DEDICATED)
    name = DEDICATED.deployment_id
    fake.requests.clear()
    assert target.set_replicas(DEDICATED, 3) == 3  # the floor it set
    assert fake.get(HPA, NS, "horizontalpodautoscalers", name)["spec"]["minReplicas"] == 3
    assert fake.get(APPS, NS, "deployments", name)["spec"]["replicas"] == 3
    assert {r.content_type for r in fake.calls("PATCH")} == {"application/merge-patch+json"}

    target.set_replicas(DEDICATED, 0)  # released: back to the spec's floor; running pods are the HPA's call
    assert fake.get(HPA, NS, "horizontalpodautoscalers", name)["spec"]["minReplicas"] == 1
    assert fake.get(APPS, NS, "deployments", name)["spec"]["replicas"] == 3
    assert target.set_replicas(DEDICATED, 50) == 5  # capped at max
    assert fake.get(HPA, NS, "horizontalpodautoscalers", name)["spec"]["minReplicas"] == 5


def test_set_replicas_moves_knative_min_scale(fake, target):
    target.apply(SERVERLESS)
    target.set_replicas(SERVERLESS, 2)
    annotations = fake.get(KNATIVE, NS, "services", SERVERLESS_NAME)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[f"{KPA}min-scale"] == "2"
    assert annotations[f"{KPA}max-scale"] == "3"  # the merge patch left the rest alone
    target.set_replicas(SERVERLESS, 0)
    annotations = fake.get(KNATIVE, NS, "services", SERVERLESS_NAME)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[f"{KPA}min-scale"] == "0"


def test_replicas_counts_starting_and_ready_pods(fake, target):
    target.apply(DEDICATED)
    for p in (pod("a", "embedder-v3-1a2b3c"), pod("b", "embedder-v3-1a2b3c", "Pending"),
              pod("c", "embedder-v3-1a2b3c", terminating=True), pod("d", "embedder-v3-1a2b3c", "Failed"),
              pod("e", "someone-else")):
        fake.seed(CORE, NS, "pods", p)
    assert target.replicas(DEDICATED.deployment_id) == 2
    assert target.replicas("nothing-here") == 0


def test_remove_deletes_everything_and_tolerates_missing(fake, target):
    target.apply(DEDICATED)
    target.apply(SERVERLESS)
    target.remove(DEDICATED.deployment_id)
    target.remove(SERVERLESS.deployment_id)
    assert fake.objects == {}
    target.remove(DEDICATED.deployment_id)  # a second remove finds nothing and is fine


@pytest.mark.parametrize("method,plural,code,reason,verb,kind", [
    ("PATCH", "horizontalpodautoscalers", 422, "Invalid", "apply", "HorizontalPodAutoscaler"),
    ("PATCH", "deployments", 403, "Forbidden", "apply", "Deployment"),
    ("DELETE", "services", 403, "Forbidden", "delete", "knative Service"),
])
def test_api_errors_name_the_object(fake, target, method, plural, code, reason, verb, kind):
    message = f'{plural} "embedder-v3-1a2b3c" is {reason.lower()}: made up by the test'
    fake.fail_next(method, plural, code, reason, message)
    with pytest.raises(KubernetesApplyError) as failed:
        target.apply(DEDICATED)
    error = failed.value
    assert (error.verb, error.kind, error.status, error.name) == (verb, kind, code, "embedder-v3-1a2b3c")
    assert str(error).startswith(f"{verb} {kind} {NS}/embedder-v3-1a2b3c failed: HTTP {code}: {reason}")
    assert "made up by the test" in str(error)


def test_knative_errors_say_knative(fake, target):
    target.apply(SERVERLESS)
    fake.fail_next("PATCH", "services", 403, "Forbidden", "no patch for you")
    with pytest.raises(KubernetesApplyError, match=f"patch knative Service {NS}/{SERVERLESS_NAME} failed: HTTP 403"):
        target.set_replicas(SERVERLESS, 1)


def test_rollout_status_and_endpoint(fake, target):
    """Readiness is the rollout's status (what kubectl rollout status reads); the gateway's URL is the
    Service's cluster DNS name, or the address Knative reports."""
    target.apply(DEDICATED)
    name = DEDICATED.deployment_id
    assert not target.rollout_status(DEDICATED).ready  # no controller has observed it
    fake.get(APPS, NS, "deployments", name)["status"] = {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}
    assert target.rollout_status(DEDICATED) == RolloutStatus(False, "0 of 1 updated replicas available")
    fake.get(APPS, NS, "deployments", name)["status"]["availableReplicas"] = 1
    assert target.rollout_status(DEDICATED).ready
    assert target.endpoint_url(DEDICATED) == f"http://{name}.{NS}.svc.cluster.local"

    target.apply(SERVERLESS)
    assert target.rollout_status(SERVERLESS).message == "waiting for the rollout to be observed"
    fake.get(KNATIVE, NS, "services", SERVERLESS_NAME)["status"] = {
        "observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}],
        "address": {"url": f"http://{SERVERLESS_NAME}.{NS}.svc.cluster.local"}}
    assert target.rollout_status(SERVERLESS).ready
    assert target.endpoint_url(SERVERLESS) == f"http://{SERVERLESS_NAME}.{NS}.svc.cluster.local"


def test_an_unreachable_server_is_a_clear_error():
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = False
    api_client = client.ApiClient(configuration)
    try:
        with pytest.raises(KubernetesApplyError, match=f"knative Service {NS}/embedder-v3-1a2b3c failed: "
                                                       "HTTP None: .*Connection refused"):
            KubernetesTarget(api_client).apply(DEDICATED)
    finally:
        api_client.close()
