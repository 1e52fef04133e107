"""A/B experiments end to end (issue 5): real gateway traffic → real metering rows and feedback →
the real start/evaluate/promote flows on a real Prefect server → MLflow alias and routes move.

One component (``ranker``, a sleeper model) and three versions: v1 (the champion), v2 (users like its
answers better: feedback says so) and v3 (300 ms slower: breaches a latency guardrail).
"""

from __future__ import annotations

import random
import time

import pytest

from compoundry.registry.model_store import ModelStore
from compoundry.registry.sleeper_model import log_sleeper
from compoundry.store.experiment_runs import ExperimentStore
from tests.integration.platform_fixture import PrefectAPI, wait_until
from tests.integration.scaling_fixture import MODEL, scaling_platform

pytestmark = pytest.mark.integration

COMPONENTS = """
components:
  ranker:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {min_replicas: 1, max_replicas: 1, idle_window_s: 600}
    timeouts: {request_s: 30, cold_start_s: 120}
    evaluation:
      dataset: eval/data.csv
      expectations:
        - {type: expect_column_values_to_not_be_null, column: query}
        - {type: expect_column_values_to_be_in_set, column: label, value_set: [relevant, irrelevant]}
"""
PLATFORM = "route_refresh_s: 0.2\nregistry: {webhooks: false}\ngateway: {auth_required: false}\n"

BETTER = """
experiments:
  better-ab:
    component: ranker
    sticky_key: session
    variants:
      - {name: control, alias: champion, weight: 50}
      - {name: candidate, version: "2", weight: 50}
    metric: {source: feedback, name: helpful}
    min_samples: 40
"""
SLOWER = """
experiments:
  slower-ab:
    component: ranker
    variants:
      - {name: control, alias: champion, weight: 50}
      - {name: slow, version: "3", weight: 50}
    guardrails: {max_p95_ms: 200, min_calls: 15}
    min_samples: 1000
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with scaling_platform(tmp_path_factory.mktemp("experiments"), COMPONENTS, "pipelines: {}\n", PLATFORM,
                          {"ranker": 0.0}, services=("mlflow", "prefect")) as platform:
        models = ModelStore(platform.settings.mlflow_url)
        models.set_alias(MODEL, "champion", "1")
        assert models.register(MODEL, log_sleeper(0.0, "ranker-v2")).version == "2"
        assert models.register(MODEL, log_sleeper(0.0, "ranker-v3", extra_delay_ms=300)).version == "3"
        platform.wait_replicas("ranker", 1, timeout_s=120)
        yield platform


def _use(platform, experiments: str) -> None:
    (platform.settings.config_dir / "experiments.yaml").write_text(experiments)
    time.sleep(2.5)  # the gateway polls configs/ every second


def _traffic(platform, requests: int, feedback: dict[str, float] | None = None, seed: int = 0) -> dict[str, int]:
    """``requests`` calls with distinct sessions; with ``feedback`` (variant -> P(helpful)) each gets a verdict.

    Returns calls per variant once their metering rows are in the database (metering is written in batches).
    """
    rng, seen, before = random.Random(seed), {}, _metering_rows(platform)
    for i in range(requests):
        answer = platform.client.post("/v1/components/ranker", headers={"X-Session-Id": f"s{seed}-{i}"},
                                      json={"inputs": {"data": [{"delay_ms": 5, "text": "q"}]}})
        assert answer.status_code == 200, answer.text
        variant = answer.json()["variant"]
        seen[variant] = seen.get(variant, 0) + 1
        if feedback is not None:
            verdict = 1.0 if rng.random() < feedback[variant] else 0.0
            posted = platform.client.post("/v1/feedback", json={"request_id": answer.headers["x-request-id"],
                                                                "name": "helpful", "value": verdict})
            assert posted.status_code == 202, posted.text
    wait_until(lambda: _metering_rows(platform) >= before + requests, timeout_s=30, what="metering rows")
    return seen


def _metering_rows(platform) -> int:
    from sqlalchemy import func, select

    from compoundry.store.tables import metering_table

    with platform.store.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(metering_table))


def test_feedback_is_validated_and_stored(lab):
    bad = lab.client.post("/v1/feedback", json={"request_id": "r1", "value": "very"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    ok = lab.client.post("/v1/feedback", json={"request_id": "r1", "name": "helpful", "value": True})
    assert ok.status_code == 202 and ok.json()["request_id"] == "r1"
    from compoundry.store.tables import Feedback

    with lab.store._session() as s:
        row = s.get(Feedback, ok.json()["feedback_id"])
    assert (row.request_id, row.name, row.value, row.tenant) == ("r1", "helpful", 1.0, "anonymous")


def test_a_clearly_better_challenger_is_promoted_and_the_alias_moves(lab):
    from compoundry.flows.experiment_flows import evaluate_experiment, start_experiment

    _use(lab, BETTER)
    started = start_experiment("better-ab")
    assert set(started["deployed"]) == {"candidate"}  # v2 deployed as the candidate's own route
    wait_until(lambda: lab.client.get("/v1/routes").json()["routes"]["ranker"]["variants"].get("candidate", {})
               .get("replicas"), timeout_s=30, what="the gateway to route the candidate")

    _traffic(lab, 10, {"control": 0.3, "candidate": 0.9}, seed=1)
    early = evaluate_experiment("better-ab")
    assert early["action"] == "continue" and early["reason"].startswith("no decision"), early

    seen = _traffic(lab, 140, {"control": 0.3, "candidate": 0.9}, seed=2)
    assert seen["candidate"] > 40 and seen["control"] > 40
    result = evaluate_experiment("better-ab")
    assert result["action"] == "promote" and result["winner"] == "candidate", result
    comparison = result["comparisons"][0]
    assert comparison["p_value"] < 0.01 and comparison["ci_low"] > 0

    assert ModelStore(lab.settings.mlflow_url).by_alias(MODEL, "champion").version == "2"
    assert lab.store.routes()["ranker"].model_version == "2"
    assert ExperimentStore(lab.store).latest("better-ab").status == "promoted"
    wait_until(lambda: not lab.store.routes()["ranker"].variants, timeout_s=30, what="the variant route retired")
    time.sleep(1)
    answers = {lab.client.post("/v1/components/ranker", headers={"X-Session-Id": f"after-{i}"},
                               json={"inputs": {"data": [{"delay_ms": 1, "text": "q"}]}}).json()["model_version"]
               for i in range(10)}
    assert answers == {"2"}  # the split stopped: everyone gets the new champion


def test_a_guardrail_breach_rolls_the_challenger_back(lab):
    from compoundry.flows.experiment_flows import evaluate_experiment, start_experiment

    _use(lab, SLOWER)
    start_experiment("slower-ab")
    wait_until(lambda: lab.client.get("/v1/routes").json()["routes"]["ranker"]["variants"].get("slow", {})
               .get("replicas"), timeout_s=30, what="the gateway to route the slow variant")
    seen = _traffic(lab, 50, seed=3)
    assert seen.get("slow", 0) >= 15
    result = evaluate_experiment("slower-ab")
    assert result["action"] == "rollback" and "slow: p95" in result["reason"], result
    assert ExperimentStore(lab.store).latest("slower-ab").status == "rolled_back"
    assert ModelStore(lab.settings.mlflow_url).by_alias(MODEL, "champion").version == "2"  # nothing promoted
    wait_until(lambda: not lab.store.routes()["ranker"].variants, timeout_s=30, what="the slow variant retired")
    time.sleep(1)
    answers = [lab.client.post("/v1/components/ranker", headers={"X-Session-Id": f"rb-{i}"},
                               json={"inputs": {"data": [{"delay_ms": 1, "text": "q"}]}}).json() for i in range(20)]
    assert {(a["variant"], a["model_version"]) for a in answers} == {("champion", "2")}  # all back on the champion
    runs = PrefectAPI(lab.settings.prefect_api_url).post("/flow_runs/filter",
                      json={"flows": {"name": {"any_": ["evaluate-experiment"]}}}).json()
    assert len(runs) >= 3 and all(r["state"]["type"] == "COMPLETED" for r in runs)


def test_a_version_whose_evaluation_dataset_fails_its_suite_does_not_deploy(lab):
    from compoundry.flows.deploy import deploy_model_version

    rows = [{"query": "refund", "label": "relevant"}, {"query": "", "label": "relevant"},
            {"query": "invoice", "label": "maybe"}]  # row 1: a null query (empty in CSV); row 2: an unknown label
    version = ModelStore(lab.settings.mlflow_url).register(MODEL, log_sleeper(0.0, "ranker-bad-eval",
                                                                              eval_rows=rows)).version
    before = lab.store.routes()["ranker"].deployment_id
    with pytest.raises(Exception, match="data gate failed: ranker-evaluation"):
        deploy_model_version(MODEL, version, component="ranker")
    assert lab.store.routes()["ranker"].deployment_id == before  # nothing built, nothing switched
    assert not [d for d in lab.store.deployments("ranker") if d.model_version == version]
    artifact = PrefectAPI(lab.settings.prefect_api_url).post("/artifacts/latest/filter",
                          json={"artifacts": {"key": {"any_": ["evaluation-gate-ranker"]}}}).json()[0]
    body = artifact["data"]
    assert "expect_column_values_to_be_in_set" in body and "maybe" in body
    assert "expect_column_values_to_not_be_null" in body
