"""Journeys 1 and 2 on the real platform: register → webhook → Prefect deploy → serve.

Every server here is real: MLflow tracking server, Prefect server, the
`compoundry.flows.serve` process, the gateway, and `bentoml serve` replicas.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest

from compoundry.core.dag import critical_path
from compoundry.platform.services import MLFLOW_WEBHOOK_CACHE_TTL_S
from compoundry.registry.model_store import ModelStore
from compoundry.registry.webhooks import sign
from compoundry.store import PlatformStore
from tests.integration.platform_fixture import PrefectAPI, gateway, wait_until

pytestmark = pytest.mark.integration

PIPELINE_COMPONENTS = ["dialogue-llm", "embedder", "intent-classifier", "kb-retriever", "sql-executor"]


def prefect_flow_runs(settings, flow_name: str) -> list[dict]:
    body = {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 50}
    response = PrefectAPI(settings.prefect_api_url).post("/flow_runs/filter", json=body)
    response.raise_for_status()
    return response.json()


def routes(settings) -> dict:
    return PlatformStore(settings.database_url).routes()


@contextmanager
def steady_load(settings, component: str, inputs: dict, clients: int = 2):
    """Call ``component`` in a loop from ``clients`` threads; yields a Counter of status codes (and errors)."""
    counts, stop = Counter(), threading.Event()

    def loop() -> None:
        with gateway(settings) as gw:
            while not stop.is_set():
                try:
                    counts[gw.post(f"/v1/components/{component}", json={"inputs": inputs}).status_code] += 1
                except httpx.HTTPError as exc:
                    counts[type(exc).__name__] += 1
                time.sleep(0.02)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(60)


@pytest.fixture(scope="module")
def demo_pipeline(platform):
    """All support-agent components registered once; each deploys through the webhook."""
    from compoundry.cli.demo import register_demo_models, wait_for_routes

    registered = register_demo_models(platform)
    wait_for_routes(platform, PIPELINE_COMPONENTS, timeout_s=600)
    return registered


def test_registered_version_is_deployed_through_webhook_and_prefect(platform, demo_pipeline):
    table = routes(platform)
    runs = prefect_flow_runs(platform, "deploy-model-version")
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(completed) >= len(PIPELINE_COMPONENTS)
    assert all("webhook" in " ".join(r["tags"]) for r in completed[: len(PIPELINE_COMPONENTS)])
    models = ModelStore(platform.mlflow_url)
    for component in PIPELINE_COMPONENTS:
        route = table[component]
        assert models.by_alias(route.model_name, "champion").version == route.model_version
    with gateway(platform) as client:
        response = client.post("/v1/components/embedder", json={"inputs": {"texts": ["hello", "world"]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["outputs"]["embeddings"]) == 2 and body["outputs"]["dim"] == 384


def test_pipeline_runs_parallel_steps_and_reports_the_critical_path(platform, demo_pipeline):
    from compoundry.config.loader import load_config

    pipeline = load_config(platform.config_dir).pipelines["support-agent"]
    deps = {name: step.depends_on for name, step in pipeline.steps.items()}
    with gateway(platform) as client:
        response = client.post("/v1/pipelines/support-agent",
                               json={"inputs": {"question": "Where is my order 1042?"}})
    assert response.status_code == 200, response.text
    body = response.json()
    steps = body["steps"]
    assert {s["status"] for s in steps.values()} == {"ok"}
    assert body["output"]["answer"]
    # embed and classify have no dependencies: they started together
    assert abs(steps["embed"]["started_ms"] - steps["classify"]["started_ms"]) < 50
    started = {n: s["started_ms"] for n, s in steps.items()}
    ended = {n: s["ended_ms"] for n, s in steps.items()}
    assert body["critical_path"] == critical_path(deps, started, ended)
    assert body["critical_path"][-1] == "answer"
    for upstream, downstream in zip(body["critical_path"], body["critical_path"][1:]):
        assert upstream in deps[downstream]
    for name, step in steps.items():
        for dep in deps[name]:
            assert step["started_ms"] >= steps[dep]["ended_ms"]


def test_failing_optional_step_takes_its_fallback(platform, demo_pipeline):
    with gateway(platform) as client:
        response = client.post("/v1/pipelines/support-agent",
                               json={"inputs": {"question": "FAIL_SQL where is order 1042?"}})
    assert response.status_code == 200, response.text
    steps = response.json()["steps"]
    assert steps["lookup"]["status"] == "fallback"
    assert steps["answer"]["status"] == "ok"


def _signed_delivery(secret: str, body: dict, timestamp: int | None = None, delivery_id: str | None = None):
    payload = json.dumps(body)
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": ts, "X-MLflow-Signature": sign(secret, delivery_id, ts, payload)}
    return payload, headers


def test_bad_missing_stale_or_replayed_signature_gets_401_and_starts_nothing(platform, demo_pipeline):
    event = {"entity": "model_version", "action": "created",
             "data": {"name": "compoundry-embedder", "version": "999", "tags": {}}}
    before = len(prefect_flow_runs(platform, "deploy-model-version"))
    url = f"{platform.gateway_url}/control/webhooks/mlflow"
    payload, headers = _signed_delivery("wrong-secret", event)
    assert httpx.post(url, content=payload, headers=headers).status_code == 401
    assert httpx.post(url, content=payload, headers={"Content-Type": "application/json"}).status_code == 401
    payload, headers = _signed_delivery(platform.webhook_secret, event, timestamp=int(time.time()) - 3600)
    assert httpx.post(url, content=payload, headers=headers).status_code == 401
    # a valid delivery for a model no component serves is accepted, and starts nothing
    unrelated = {"entity": "model_version", "action": "created", "data": {"name": "nobody-serves-me", "version": "1"}}
    payload, headers = _signed_delivery(platform.webhook_secret, unrelated)
    first = httpx.post(url, content=payload, headers=headers)
    assert first.status_code == 200 and first.json()["started"] == []
    replay = httpx.post(url, content=payload, headers=headers)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed_delivery"
    time.sleep(1)
    assert len(prefect_flow_runs(platform, "deploy-model-version")) == before


def test_poller_deploys_what_no_webhook_announced_and_old_replica_drains(platform, demo_pipeline):
    """Disable the webhook, register a new classifier version, run registry-poll: blue/green redeploy."""
    import mlflow
    from mlflow import MlflowClient

    from compoundry.registry.demo_models import log_intent_classifier
    from compoundry.registry.webhooks import WEBHOOK_NAME

    client = MlflowClient(platform.mlflow_url)
    hook = next(w for w in client.list_webhooks() if w.name == WEBHOOK_NAME)
    client.update_webhook(hook.webhook_id, status="DISABLED")
    time.sleep(MLFLOW_WEBHOOK_CACHE_TTL_S + 1)  # MLflow's cached webhook list must see it disabled
    try:
        old = routes(platform)["intent-classifier"]
        with steady_load(platform, "intent-classifier", {"data": ["where is my parcel"]}) as counts:
            mlflow.set_tracking_uri(platform.mlflow_url)
            with mlflow.start_run(run_name="classifier-v-next"):
                uri = log_intent_classifier()
            new_version = ModelStore(platform.mlflow_url).register("compoundry-intent-classifier", uri).version
            time.sleep(2)
            assert routes(platform)["intent-classifier"].model_version == old.model_version  # nothing heard
            prefect = PrefectAPI(platform.prefect_api_url)
            poll_id = prefect.get("/deployments/name/registry-poll/registry-poll").json()["id"]
            prefect.post(f"/deployments/{poll_id}/create_flow_run", json={}).raise_for_status()
            wait_until(lambda: routes(platform)["intent-classifier"].model_version == new_version, timeout_s=300,
                       interval_s=1, what="the poller's deploy of the new classifier version")
            with gateway(platform) as gw:
                response = gw.post("/v1/components/intent-classifier", json={"inputs": {"data": ["refund my invoice"]}})
            assert response.status_code == 200, response.text
            store = PlatformStore(platform.database_url)
            wait_until(lambda: store.deployment(old.deployment_id).status == "stopped", timeout_s=60,
                       what="the old classifier deployment to drain and stop")
        assert set(counts) == {200} and counts[200] > 20, counts  # blue/green under load: nothing dropped
        # the version is routed: a second poll asks for nothing (a late webhook's deploy would end "already routed")
        from compoundry.config.loader import load_config
        from compoundry.core.deploy_decisions import watched_components
        from compoundry.flows.registry_poll import observe

        again = observe(ModelStore(platform.mlflow_url), store, watched_components(load_config(platform.config_dir)))
        assert not [r for r in again if r.component == "intent-classifier"], again
    finally:
        client.update_webhook(hook.webhook_id, status="ACTIVE")
        time.sleep(MLFLOW_WEBHOOK_CACHE_TTL_S + 1)  # until MLflow's cached webhook list sees it active again


def test_scheduled_warmup_is_a_prefect_deployment_whose_run_raises_replicas(platform, demo_pipeline):
    """schedules.yaml's warm-up entry is a deployment (paused: enabled false); a run of it holds a floor."""
    from compoundry.store.capacity import CapacityStore

    api = PrefectAPI(platform.prefect_api_url)
    deployment = api.get("/deployments/name/scheduled-warmup/weekday-morning-warmup").json()
    schedule = deployment["schedules"][0]
    assert schedule["schedule"]["cron"] == "0 7 * * 1-5" and schedule["active"] is False
    assert deployment["parameters"]["pipelines"] == ["support-agent"]
    store = PlatformStore(platform.database_url)
    assert len(routes(platform)["kb-retriever"].replicas) == 1
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run", json={
        "parameters": {"pipelines": [], "components": ["kb-retriever"], "min_replicas": 2, "hold_minutes": 5}})
    run.raise_for_status()
    try:
        state = wait_until(lambda: _final_state(api, run.json()["id"]), timeout_s=240, interval_s=1,
                           what="the scheduled-warmup run to finish")
        assert state == "COMPLETED", state
        assert len(routes(platform)["kb-retriever"].replicas) == 2
        floors = CapacityStore(store).floors()
        assert [(f.component, f.min_replicas) for f in floors] == [("kb-retriever", 2)]
        assert "weekday-morning-warmup" in floors[0].source
    finally:
        for floor in CapacityStore(store).floors():
            CapacityStore(store).release(floor.id)


def _final_state(api: PrefectAPI, flow_run_id: str) -> str | None:
    state = api.get(f"/flow_runs/{flow_run_id}").json()["state"]["type"]
    return state if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def test_openai_client_talks_to_the_real_llm_and_embedder_bentos(platform, demo_pipeline):
    import openai

    client = openai.OpenAI(base_url=f"{platform.gateway_url}/v1", api_key=platform.admin_api_key, max_retries=0)
    reply = client.chat.completions.create(model="dialogue-llm", max_tokens=8,
                                           messages=[{"role": "user", "content": "Where is my order?"}])
    assert reply.model == "dialogue-llm" and isinstance(reply.choices[0].message.content, str)
    assert reply.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model="dialogue-llm", max_tokens=8, stream=True,
                                                 messages=[{"role": "user", "content": "Hello"}]))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    vectors = client.embeddings.create(model="embedder", input=["refund", "order"]).data
    assert [len(v.embedding) for v in vectors] == [384, 384]


def test_moving_the_champion_alias_back_rolls_back_through_the_alias_webhook(platform, demo_pipeline):
    """`model_version_alias.created` → control API → deploy-model-version: champion → an older version."""
    from typer.testing import CliRunner

    from compoundry.cli import app

    current = routes(platform)["intent-classifier"]
    previous = str(int(current.model_version) - 1)
    result = CliRunner().invoke(app, ["alias", "compoundry-intent-classifier", "champion", previous])
    assert result.exit_code == 0, result.output
    wait_until(lambda: routes(platform)["intent-classifier"].model_version == previous, timeout_s=300,
               interval_s=1, what="the rollback deploy of the older classifier version")
    def rollback_run_completed():
        latest = next(r for r in prefect_flow_runs(platform, "deploy-model-version")
                      if "component:intent-classifier" in r["tags"])
        return latest["state_type"] == "COMPLETED" and latest["parameters"]["version"] == previous and latest

    run = wait_until(rollback_run_completed, timeout_s=60, what="the rollback flow run to complete")
    assert "source:webhook" in run["tags"]
    assert ModelStore(platform.mlflow_url).by_alias("compoundry-intent-classifier", "champion").version == previous


def test_moving_the_challenger_alias_deploys_a_variant_that_gets_its_sticky_share(platform, demo_pipeline):
    """An enabled experiment + `compoundry alias ... challenger N` → webhook → deploy as a variant route → split."""
    from typer.testing import CliRunner

    from compoundry.cli import app
    from compoundry.registry.demo_models import log_intent_classifier

    model, experiments = "compoundry-intent-classifier", platform.config_dir / "experiments.yaml"
    shipped = experiments.read_text()  # schedules.yaml names its experiment: keep it, add ours
    experiments.write_text(shipped + "  classifier-ab:\n    component: intent-classifier\n    variants:\n"
                           "      - {name: champion, alias: champion, weight: 50}\n"
                           "      - {name: challenger, alias: challenger, weight: 50}\n")
    try:
        time.sleep(2.5)  # the gateway polls configs/ each second: let it see the experiment before the webhook
        champion = routes(platform)["intent-classifier"].model_version
        store = ModelStore(platform.mlflow_url)
        other = next((v.version for v in store.versions(model) if v.version != champion), None)
        if other is None:
            import mlflow

            mlflow.set_tracking_uri(platform.mlflow_url)
            with mlflow.start_run(run_name="classifier-challenger"):
                other = store.register(model, log_intent_classifier(), tags={"compoundry.deploy": "false"}).version
        result = CliRunner().invoke(app, ["alias", model, "challenger", other])
        assert result.exit_code == 0, result.output

        def challenger_ready():
            variant = routes(platform)["intent-classifier"].variant_route("challenger")
            return variant is not None and variant.replicas and variant
        variant = wait_until(challenger_ready, timeout_s=300, interval_s=1, what="the challenger's variant route")
        assert variant.model_version == other
        assert routes(platform)["intent-classifier"].model_version == champion  # the serving route did not move
        assert store.by_alias(model, "champion").version == champion
        with gateway(platform) as gw:
            wait_until(lambda: gw.get("/v1/routes").json()["routes"]["intent-classifier"]["variants"]
                       .get("challenger", {}).get("replicas"), timeout_s=10, what="the gateway to see the variant")
            answers = [gw.post("/v1/components/intent-classifier", headers={"X-Session-Id": f"journey-{i}"},
                               json={"inputs": {"data": ["refund my invoice"]}}).json() for i in range(30)]
        by_variant = {a["variant"]: (a["deployment"], a["model_version"]) for a in answers}
        assert by_variant == {"champion": (routes(platform)["intent-classifier"].deployment_id, champion),
                              "challenger": (variant.deployment_id, other)}
    finally:
        experiments.write_text(shipped)


def test_restart_keeps_models_deployments_and_routes(platform, demo_pipeline):
    """`compoundry down` + `up`: the database keeps routes, `up` starts their replicas again."""
    from compoundry.platform.supervisor import Supervisor
    from compoundry.scaling.targets.local import pid_alive

    before = routes(platform)
    old_pids = [r.pid for route in before.values() for r in route.replicas]
    supervisor = Supervisor(platform)
    supervisor.down()
    assert not any(pid_alive(pid) for pid in old_pids)
    supervisor.up()
    after = routes(platform)
    assert {c: (r.deployment_id, r.model_version) for c, r in after.items()} == \
        {c: (r.deployment_id, r.model_version) for c, r in before.items()}
    assert all(route.replicas for route in after.values())
    assert ModelStore(platform.mlflow_url).by_alias("compoundry-embedder", "champion").version == \
        before["embedder"].model_version
    with gateway(platform) as client:
        wait_until(lambda: all(r["replicas"] for r in client.get("/v1/routes").json()["routes"].values()),
                   timeout_s=10, interval_s=0.2, what="the gateway's route table to pick up the restored replicas")
        response = client.post("/v1/pipelines/support-agent", json={"inputs": {"question": "Where is order 7?"}})
    assert response.status_code == 200, response.text
