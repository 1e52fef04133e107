"""The main journey through the ``kubernetes`` target, every server real but the cluster.

Register a version in MLflow → its webhook → the control API → Prefect's ``deploy-model-version`` on the
flow server → server-side apply to the fake API server → the node agent (tests/integration/
kube_node_agent.py, a fixture) starts the real Bento for the Deployment and reports its Pod ready and its
Endpoints → the flow routes to it → the gateway answers a pipeline mixing a ``local`` component and a
``kubernetes`` one. Then v2 rolls out blue/green under light load: no failed call, v1's objects deleted
once it has drained. A serverless component on Kubernetes (a Knative Service, its activator played by the
node agent) scales to zero when idle and back on the next call. `compoundry down` leaves the remote
deployment routed and running.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import httpx
import psutil
import pytest

from bentos.build import build_bento
from compoundry.config.settings import PlatformSettings
from compoundry.platform.supervisor import Supervisor
from compoundry.registry.model_store import ModelStore
from compoundry.registry.sleeper_model import log_sleeper
from compoundry.scaling.targets.kubernetes_names import resource_name
from compoundry.scaling.targets.target_choice import (
    deployment_target,
    remote_deployments,
)
from compoundry.store import PlatformStore
from tests.integration.fake_kube_api import FakeKubeAPI
from tests.integration.kube_node_agent import APPS, KNATIVE, NodeAgent, wait_for
from tests.integration.platform_fixture import PrefectAPI, platform_env
from tests.integration.scaling_fixture import write_configs

pytestmark = pytest.mark.integration

LOCAL_MODEL, REMOTE_MODEL, SERVERLESS_MODEL = "compoundry-sleeper", "compoundry-sleeper-k8s", "compoundry-sleeper-kn"
COMPONENTS = f"""
components:
  ranker:
    model: compoundry-sleeper
    engine: pyfunc
    mode: dedicated
    scaling: {{min_replicas: 1, max_replicas: 1, idle_window_s: 600}}
    timeouts: {{request_s: 30, cold_start_s: 120}}
  scorer:
    model: {REMOTE_MODEL}
    engine: pyfunc
    mode: dedicated
    target: kubernetes
    scaling: {{min_replicas: 1, max_replicas: 1, idle_window_s: 600}}
    timeouts: {{request_s: 30, cold_start_s: 120}}
  summarizer:
    model: {SERVERLESS_MODEL}
    engine: pyfunc
    mode: serverless
    target: kubernetes
    scaling: {{min_replicas: 0, max_replicas: 1, idle_window_s: 6}}
    timeouts: {{request_s: 90, cold_start_s: 120}}
"""
PIPELINES = """
pipelines:
  mixed:
    sla_ms: 60000
    trust: {pre: []}
    steps:
      rank: {component: ranker, inputs: {data: [{delay_ms: 0, text: "${request.text}"}]}}
      score: {component: scorer, depends_on: [rank], inputs: {data: [{delay_ms: 0, text: "${steps.rank.predictions[0].echo}"}]}}
    output: {local: "${steps.rank.predictions[0].pid}", remote: "${steps.score.predictions[0].pid}",
             echo: "${steps.score.predictions[0].echo}"}
"""
PLATFORM = """
route_refresh_s: 0.2
gateway: {auth_required: false, cold_start_hold_s: {interactive: 60}}
kubernetes: {route_to: pods, images: {registry: registry.test/compoundry, tag: "1"}}
"""
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{url}"}}}}]
users: [{{name: fake, user: {{token: test}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]
current-context: fake
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import mlflow

    api = FakeKubeAPI().start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG.format(url=api.url))
    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)  # read by the flow server's runs and the gateway's autoscaler
    try:
        with platform_env(tmp_path_factory.mktemp("kubernetes-journey")) as settings:
            write_configs(settings.config_dir, COMPONENTS, PIPELINES, PLATFORM)
            settings = PlatformSettings.load()
            supervisor = Supervisor(settings)
            try:
                supervisor.up()
                while mlflow.active_run() is not None:
                    mlflow.end_run()
                mlflow.set_tracking_uri(settings.mlflow_url)
                mlflow.set_experiment(experiment_id="0")
                tag = build_bento("pyfunc", {"component": "sleeper"}, bentoml_home=settings.bentoml_home)
                with NodeAgent(api, settings, {"pyfunc": tag}) as agent:
                    models = ModelStore(settings.mlflow_url)
                    models.register(LOCAL_MODEL, log_sleeper(0.0, "ranker"))  # each → webhook → deploy
                    models.register(REMOTE_MODEL, log_sleeper(0.0, "scorer-v1"))
                    models.register(SERVERLESS_MODEL, log_sleeper(0.0, "summarizer-v1"))
                    store = PlatformStore(settings.database_url)
                    wait_for(lambda: {"ranker", "scorer", "summarizer"} <= set(store.routes()), 180,
                             "the three routes")
                    yield supervisor, store, api, agent
            finally:
                supervisor.down()
    finally:
        os.environ.pop("KUBECONFIG") if before is None else os.environ.update(KUBECONFIG=before)
        api.stop()


def ask(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/v1/pipelines/mixed", json={"inputs": {"text": text}})


def runs_in(agent: NodeAgent, deployment: str, pid: int) -> bool:
    """Whether ``pid`` (a Bento worker) belongs to the node agent's pod of ``deployment``."""
    pod = psutil.Process(agent.pods[deployment].process.pid)
    return pid in {pod.pid, *(p.pid for p in pod.children(recursive=True))}


def test_a_registered_version_deploys_to_kubernetes_and_serves_beside_a_local_component(cluster):
    supervisor, store, api, agent = cluster
    scorer, ranker = store.routes()["scorer"], store.routes()["ranker"]
    name = resource_name(scorer.deployment_id)
    assert (deployment_target(store, scorer.deployment_id), deployment_target(store, ranker.deployment_id)) == (
        "kubernetes", "local")
    prefect = PrefectAPI(supervisor.settings.prefect_api_url)

    def completed() -> set[str]:
        runs = prefect.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["deploy-model-version"]}}})
        return {r["name"] for r in runs.json() if r["state_type"] == "COMPLETED"}

    wait_for(lambda: {"deploy compoundry-sleeper-k8s v1", "deploy compoundry-sleeper v1"} <= completed(), 60,
             "both deploy flow runs to complete on the flow server")
    applied = {c.path.rsplit("/", 2)[-2] for c in api.calls("PATCH") if c.content_type.startswith("application/apply")}
    assert {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets"} <= applied
    assert [r.url for r in scorer.replicas] == [f"http://127.0.0.1:{agent.pods[name].port}"]  # its Endpoints

    with httpx.Client(base_url=supervisor.settings.gateway_url, timeout=60) as client:
        response = ask(client, "hello")
    assert response.status_code == 200, response.text
    answer = response.json()["output"]
    assert answer["echo"] == "hello"
    assert runs_in(agent, name, answer["remote"]) and not runs_in(agent, name, answer["local"])


def test_a_new_version_rolls_out_blue_green_with_no_failed_call(cluster):
    supervisor, store, api, agent = cluster
    blue = store.routes()["scorer"].deployment_id
    counts, stop = Counter(), threading.Event()

    def load() -> None:
        with httpx.Client(base_url=supervisor.settings.gateway_url, timeout=60) as client:
            while not stop.is_set():
                try:
                    counts[ask(client, "load").status_code] += 1
                except httpx.HTTPError as exc:
                    counts[type(exc).__name__] += 1
                stop.wait(0.05)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        ModelStore(supervisor.settings.mlflow_url).register(REMOTE_MODEL, log_sleeper(0.0, "scorer-v2"))
        wait_for(lambda: resource_name(blue) not in api.names(APPS, "deployments"), 120,
                 "v2 routed, then v1 drained and deleted")
    finally:
        stop.set()
        thread.join(30)
    green = store.routes()["scorer"]
    assert green.model_version == "2" and store.deployment(blue).status == "stopped"
    assert set(counts) == {200} and counts[200] > 10, counts
    with httpx.Client(base_url=supervisor.settings.gateway_url, timeout=60) as client:
        remote = ask(client, "after").json()["output"]["remote"]
    assert runs_in(agent, resource_name(green.deployment_id), remote)


def test_a_serverless_component_scales_to_zero_and_back(cluster):
    """Knative's address is the route; the first call starts the pod, idleness stops it, the next starts it."""
    supervisor, store, api, agent = cluster
    route = store.routes()["summarizer"]
    name = resource_name(route.deployment_id)
    assert name in api.names(KNATIVE, "services") and name not in api.names(APPS, "deployments")
    activator = agent.activators[name]
    assert [r.url for r in route.replicas] == [activator.url]  # the gateway goes through the activator
    body = {"inputs": {"data": [{"delay_ms": 0, "text": "wake"}]}}
    wait_for(lambda: activator.pod is None, 90, "the service at zero (the deploy's own check woke it)")
    before = activator.starts
    with httpx.Client(base_url=supervisor.settings.gateway_url, timeout=120) as client:
        first = client.post("/v1/components/summarizer", json=body)
        assert first.status_code == 200, first.text
        assert activator.starts == before + 1  # held while its pod started from zero
        wait_for(lambda: activator.pod is None, 90, "the scale to zero after the idle window")
        second = client.post("/v1/components/summarizer", json=body)
    assert second.status_code == 200, second.text
    assert activator.starts == before + 2 and second.json()["outputs"]["predictions"][0]["echo"] == "wake"


def test_down_leaves_the_remote_deployment_running_and_routed(cluster):
    supervisor, store, api, agent = cluster
    remote = store.routes()["scorer"].deployment_id
    supervisor.down()
    assert resource_name(remote) in api.names(APPS, "deployments")
    assert store.routes()["scorer"].replicas and not store.routes()["ranker"].replicas
    assert set(remote_deployments(store)) == {remote, store.routes()["summarizer"].deployment_id}
