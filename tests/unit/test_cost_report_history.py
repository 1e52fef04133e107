"""Cost reports that survive config changes (issue 15, item 9): retired components and pipelines are costed
as when they ran and flagged, unknown pipeline ids are ``(unregistered)``, the gate still catches bad data."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from starlette.testclient import TestClient

from compoundry.config.loader import load_config
from compoundry.config.settings import PlatformSettings
from compoundry.core.costs.cost_model import (
    cost_lines,
    rollup,
    scenarios,
    sum_scenarios,
)
from compoundry.core.costs.history import (
    UNREGISTERED,
    attributed_pipeline,
    changed,
    config_entries,
    retired,
)
from compoundry.core.routing.route_view import ReplicaView, RouteView
from compoundry.gates import validate_frame
from compoundry.gates.metering_suite import metering_expectations, replica_expectations
from compoundry.gateway.app import GatewayParts, create_app
from compoundry.metering import MeteringSink
from compoundry.reports.cost import build, check
from compoundry.reports.output import charts, table_bytes
from compoundry.reports.summary import markdown_summary
from compoundry.store import DeploymentStatus, PlatformStore, config_history
from compoundry.store.refresh import RouteTable
from tests import cost_workload as w

WITHOUT_CLF = """
components:
  llm:
    model: m-llm
    engine: llm
    mode: dedicated
    scaling: {min_replicas: 1, max_replicas: 2, target_concurrency: 4}
    prices: {replica_hour: 2.00, per_call: 0.0, per_1k_tokens: 0.002}
  emb:
    model: m-emb
    engine: sentence-transformers
    mode: serverless
    prices: {replica_hour: 0.40, per_call: 0.0001}
"""
ONLY_RAG = """
pipelines:
  rag:
    steps:
      embed: {component: emb}
      answer: {component: llm, depends_on: [embed]}
"""


def config(tmp_path, components: str, pipelines: str):
    folder = tmp_path / f"configs-{len(components)}-{len(pipelines)}"
    folder.mkdir()
    (folder / "components.yaml").write_text(components)
    (folder / "pipelines.yaml").write_text(pipelines)
    return load_config(folder)


def fill(store, extra=()) -> None:
    """The hand-computed workload in the DB, through the real sink and store (as the integration tests do)."""
    with MeteringSink(store.engine, start=False) as sink:
        for record in [*w.records(), *extra]:
            sink.record(record)
    for i in w.intervals():
        if store.deployment(i.deployment_id) is None:
            store.add_deployment(i.deployment_id, i.component, f"m-{i.component}", "1", "pyfunc")
        store.add_replica(i.replica_id, i.deployment_id, "http://127.0.0.1:9", None, DeploymentStatus.READY)
        with store.engine.begin() as conn:
            conn.execute(sa.text("update replicas set started_at = :start, stopped_at = :stop, status = :status "
                                 "where id = :id"), {"start": i.started_at, "stop": i.stopped_at, "id": i.replica_id,
                                                     "status": "ready" if i.stopped_at is None else "stopped"})


def by(report, table: str, key: str) -> dict:
    frame = report.tables[table]
    return {row[key]: (row["cost"] if "cost" in frame else row["actual"], bool(row["retired"]))
            for row in frame.to_dict("records")}


# --- pure rules ----------------------------------------------------------------------------------------
def test_a_pipeline_id_is_attributed_never_taken_as_free_text():
    known = {"support-agent"}
    assert attributed_pipeline("support-agent", known) == "support-agent"
    assert attributed_pipeline("../../etc", known) == UNREGISTERED
    assert attributed_pipeline("x" * 5000, known) == UNREGISTERED
    assert attributed_pipeline(UNREGISTERED, known) == UNREGISTERED
    assert attributed_pipeline("", known) == attributed_pipeline(None, known) == ""  # a direct call


def test_history_appends_only_what_changed_and_knows_what_retired(tmp_path):
    full = config_entries(config(tmp_path, w.COMPONENTS_YAML, "").components, {})
    assert changed(full, full) == {}
    later = config_entries(config(tmp_path, WITHOUT_CLF, "").components, {})
    assert changed(full, later) == {}  # removing a name appends nothing: the history keeps its last entry
    gone = retired(full, later)
    assert set(gone.tariffs) == {"clf"} and gone.tariffs["clf"].mode == "auto"
    assert gone.tariffs["clf"].prices.replica_hour == 1.0 and gone.tariffs["clf"].prices.per_call == 0.001


def test_a_component_without_a_tariff_costs_what_was_recorded_at_call_time():
    tariffs = {name: t for name, t in w.tariffs().items() if name != "clf"}
    lines = cost_lines(w.records(), w.intervals(), tariffs, w.SINCE, w.UNTIL)
    clf = rollup([x for x in lines if x.component == "clf"], ("component",))[0]
    assert (round(clf.usage_cost, 6), clf.replica_cost, clf.calls) == (0.002, 0.0, 2)  # auto + external, recorded
    assert not any(x.component == "clf" and x.replica_cost for x in lines)  # its replica price is unknown
    what_if = sum_scenarios(scenarios(w.records(), lines, {"llm", "emb", "clf"}, tariffs, w.SINCE, w.UNTIL),
                            "component")
    assert {s.component: (round(s.actual, 6), round(s.all_dedicated, 6), round(s.all_serverless, 6))
            for s in what_if}["clf"] == (0.002, 0.002, 0.002)


# --- the metering gate ---------------------------------------------------------------------------------
def test_the_gate_passes_a_retired_component_but_still_fails_bad_rows(store, tmp_path):
    fill(store)
    with store.engine.begin() as conn:
        conn.execute(sa.text("update metering_records set component = 'retired-model' where request_id = 't-1'"))
    cfg = config(tmp_path, w.COMPONENTS_YAML, w.PIPELINES_YAML)
    assert check(store.engine, cfg, w.SINCE, w.UNTIL).passed
    with store.engine.begin() as conn:
        conn.execute(sa.text("update metering_records set cost = -0.5 where request_id = 'r-1' and step = 'embed'"))
    checked = check(store.engine, cfg, w.SINCE, w.UNTIL)
    assert not checked.passed
    [failure] = [f for g in checked.gates for f in g.failures]
    assert (failure.column, failure.expectation, failure.unexpected_count) == (
        "cost", "expect_column_values_to_be_between", 1)


def test_the_gate_fails_a_null_cost_or_a_malformed_component():
    checked = check_frame({(0, "cost"): None, (1, "component"): "../../etc", (2, "component"): None})
    failed = {(f.column, f.expectation, tuple(r["row"] for r in f.rows)) for f in checked.failures}
    assert failed == {("cost", "expect_column_values_to_not_be_null", (100,)),
                      ("component", "expect_column_values_to_match_regex", (101,)),
                      ("component", "expect_column_values_to_not_be_null", (102,))}
    assert check_frame({(2, "component"): "ghost"}).passed  # no longer configured is not a data bug
    replicas = validate_frame("replicas", _replicas("gone"), replica_expectations())
    assert replicas.passed


# --- the report ----------------------------------------------------------------------------------------
def test_a_removed_component_without_history_is_reported_retired_at_its_recorded_cost(store, tmp_path):
    stray = w.call(w.at(95), "../../etc", "d-2", None, "emb", "serverless", cost=0.0001)
    fill(store, [stray])
    cfg = config(tmp_path, WITHOUT_CLF, ONLY_RAG)  # clf and triage removed before any history was kept
    checked = check(store.engine, cfg, w.SINCE, w.UNTIL)
    assert checked.passed, [f.description for g in checked.gates for f in g.failures]
    report = build(checked, cfg)
    components = by(report, "by_component", "component")
    assert components["clf"] == (0.002, True)  # priced as the gateway priced its calls
    assert components["llm"] == (5.0, False) and components["emb"] == (0.0003, False)
    pipelines = by(report, "by_pipeline", "pipeline")
    assert set(pipelines) == {"rag", UNREGISTERED, "(direct)"}  # triage and ../../etc: never free text; no
    # (idle): the idle replica was clf's, whose replica_hour nothing recorded
    assert pipelines[UNREGISTERED][1] is False and report.retired == {"component": {"clf"}, "pipeline": set()}
    assert set(report.tables["lines"].query("component == 'clf'")["retired"]) == {True}


def test_a_removed_component_and_pipeline_keep_their_prices_from_the_history(store, tmp_path):
    fill(store)
    before = config(tmp_path, w.COMPONENTS_YAML, w.PIPELINES_YAML)
    check(store.engine, before, w.SINCE, w.UNTIL)  # last night's report noted the config in force
    cfg = config(tmp_path, WITHOUT_CLF, ONLY_RAG)
    checked = check(store.engine, cfg, w.SINCE, w.UNTIL)
    assert checked.passed
    report = build(checked, cfg)
    assert report.totals["actual"] == 6.0012 and report.totals["all_dedicated"] == 6.8  # the hand-computed figures
    assert by(report, "by_component", "component")["clf"] == (1.001, True)
    assert by(report, "by_pipeline", "pipeline")["triage"] == (2.126, True)
    latency = report.tables["latency_by_pipeline"].set_index("pipeline")
    assert bool(latency.loc["triage", "retired"]) and latency.loc["triage", "requests"] == 2  # still decomposed
    assert report.retired == {"component": {"clf"}, "pipeline": {"triage"}}
    for table in ("by_component", "lines", "counterfactual_by_component", "critical_path_shares"):
        assert b"retired" in table_bytes(report.tables[table], "csv")
        assert "retired" in report.tables[table].columns
    assert "`clf`" in markdown_summary(report, "here") and "`triage`" in markdown_summary(report, "here")
    assert set(charts(report)) == {"cost_by_pipeline.png", "critical_path_share.png"}
    assert len(config_history.latest(store.engine)) == 5  # 3 components + 2 pipelines, nothing appended twice


# --- the gateway ---------------------------------------------------------------------------------------
class Replicas:
    """The replica client's interface, answering every call at once."""

    async def invoke(self, url: str, inputs, timeout: float, component: str):
        return {"predictions": ["refund"]}

    async def aclose(self) -> None:
        pass


def test_the_gateway_records_only_registered_pipeline_ids(tmp_path):
    (tmp_path / "components.yaml").write_text("components:\n  classify: {model: m-classify, engine: pyfunc}\n")
    (tmp_path / "pipelines.yaml").write_text(
        "pipelines:\n  both:\n    steps:\n      classify: {component: classify, inputs: {data: x}}\n")
    (tmp_path / "platform.yaml").write_text("gateway: {auth_required: false}\nautoscaler: {enabled: false}\n")
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    route = RouteView("classify", "classify-v1", "m-classify", "1", "pyfunc",
                      (ReplicaView("classify-v1-r0", "http://classify.fake:1"),))
    routes = RouteTable(lambda: {"classify": route})
    parts = GatewayParts.build(PlatformSettings.load(tmp_path), load_config(tmp_path), store, routes=routes,
                               replica_client=Replicas())
    calls = {"c-1": "../../etc", "c-2": "both", "c-3": "", "c-4": "x" * 300}
    with TestClient(create_app(parts)) as client:
        for request_id, pipeline in calls.items():
            response = client.post("/v1/components/classify", json={"inputs": {"data": "x"}},
                                   headers={"X-Request-Id": request_id, "X-Pipeline-Id": pipeline})
            assert response.status_code == 200, response.text
        assert client.post("/v1/pipelines/both", json={"inputs": {"q": "x"}},
                           headers={"X-Request-Id": "p-1", "X-Pipeline-Id": "../../etc"}).status_code == 200
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select request_id, pipeline_id from metering_records")).all()
    store.close()
    assert sorted(set(rows)) == [("c-1", UNREGISTERED), ("c-2", "both"), ("c-3", ""), ("c-4", UNREGISTERED),
                                 ("p-1", "both")]  # a pipeline the gateway runs is named by the gateway


# --- helpers -------------------------------------------------------------------------------------------
def check_frame(overrides: dict):
    rows = [{"id": 100 + i, "timestamp": pd.Timestamp(r.timestamp), **{k: getattr(r, k) for k in (
        "tenant", "pipeline_id", "request_id", "step", "component", "variant", "deployment_id", "mode",
        "latency_class", "queue_ms", "cold_start_ms", "compute_ms", "prompt_tokens", "completion_tokens",
        "outcome", "cost", "shadow")}} for i, r in enumerate(w.records())]
    for (row, column), value in overrides.items():
        rows[row][column] = value
    frame = pd.DataFrame(rows).set_index("id", drop=False)
    return validate_frame("metering", frame, metering_expectations(w.SINCE, w.UNTIL))


def _replicas(component: str):
    return pd.DataFrame([{"replica_id": "a", "component": component, "status": "stopped",
                          "started_at": pd.Timestamp(w.SINCE), "stopped_at": pd.Timestamp(w.at(5))}]
                        ).set_index("replica_id", drop=False)
