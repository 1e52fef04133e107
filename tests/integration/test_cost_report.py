"""The cost-report flow for real: a SQLite platform DB filled through the real metering sink and store,
Prefect's test harness, files to a folder and to a local S3 (moto's server, over HTTP).

The workload is tests/cost_workload.py, whose figures are worked out by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from compoundry.gates import GateFailed
from compoundry.metering import MeteringSink
from compoundry.store import DeploymentStatus, PlatformStore
from tests import cost_workload as w
from tests.integration.stub_backend import free_port

pytestmark = pytest.mark.integration
WINDOW = {"since": w.SINCE.isoformat(), "until": w.UNTIL.isoformat()}


@pytest.fixture(scope="module")
def prefect():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def s3():
    """moto's S3 in server mode: boto3 reaches it over real HTTP through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket="reports")
    yield client
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def platform(tmp_path, monkeypatch):
    """A state dir and configs of the hand-computed workload, its DB filled through the real sink and store."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "components.yaml").write_text(w.COMPONENTS_YAML)
    (configs / "pipelines.yaml").write_text(w.PIPELINES_YAML)
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    for key, value in {"COMPOUNDRY_CONFIG_DIR": str(configs), "COMPOUNDRY_STATE_DIR": str(tmp_path),
                       "COMPOUNDRY_DATABASE_URL": url}.items():
        monkeypatch.setenv(key, value)
    store = PlatformStore(url)
    store.create_schema()
    with MeteringSink(store.engine, start=False) as sink:
        for record in w.records():
            sink.record(record)
    for i in w.intervals():
        if store.deployment(i.deployment_id) is None:
            store.add_deployment(i.deployment_id, i.component, f"m-{i.component}", "1", "pyfunc")
        store.add_replica(i.replica_id, i.deployment_id, "http://127.0.0.1:9", None, DeploymentStatus.READY)
        if i.stopped_at is not None:
            store.set_replica_status(i.replica_id, DeploymentStatus.STOPPED)
        with store.engine.begin() as conn:  # the store stamps now; the workload's lifetimes are fixed
            conn.execute(sa.text("update replicas set started_at = :start, stopped_at = :stop where id = :id"),
                         {"start": i.started_at, "stop": i.stopped_at, "id": i.replica_id})
    yield store, tmp_path
    store.close()


def artifacts(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a.data for a in found if a.key}  # keyless ones are Prefect's own (a failed run's result)


def test_the_flow_writes_hand_computed_costs_to_a_folder_with_artifacts(prefect, platform):
    from compoundry.flows.cost_report import cost_report

    _, state = platform
    state_ = cost_report(**WINDOW, out=str(state / "out"), format="csv", return_state=True)
    assert state_.is_completed(), state_
    result = state_.result()
    assert result["totals"] == {"calls": 9.0, "actual": 6.0012, "all_dedicated": 6.8, "all_serverless": 0.0035}
    folder = Path(result["location"])
    by_pipeline = pd.read_csv(folder / "by_pipeline.csv").set_index("pipeline")["cost"].to_dict()
    assert by_pipeline == {"rag": 3.3752, "triage": 2.126, "(idle)": 0.5, "(direct)": 0.0}
    by_component = pd.read_csv(folder / "by_component.csv").set_index("component")["cost"].to_dict()
    assert by_component == {"llm": 5.0, "clf": 1.001, "emb": 0.0002}
    shares = pd.read_csv(folder / "critical_path_shares.csv")
    assert shares.set_index(["pipeline", "component"])["share"].to_dict()[("rag", "llm")] == 0.8182
    assert (folder / "cost_by_pipeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "critical_path_share.png").stat().st_size > 1000
    found = artifacts(state_.state_details.flow_run_id)
    assert "passed" in found["metering-gate"] and "6.0012" in found["cost-report"]
    assert "cost-by-pipeline" in found and "cost-critical-path-shares" in found


def test_the_flow_writes_parquet_to_s3(prefect, platform, s3):
    from compoundry.flows.cost_report import cost_report

    result = cost_report(**WINDOW, out="s3://reports/nightly", format="parquet")
    assert result["location"] == "s3://reports/nightly/cost-20261101T0000-20261101T0200"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="reports")["Contents"]}
    prefix = "nightly/cost-20261101T0000-20261101T0200/"
    assert {prefix + n for n in ("by_pipeline.parquet", "by_tenant.parquet", "lines.parquet",
                                 "counterfactual_by_component.parquet", "cost_by_pipeline.png")} <= keys
    body = s3.get_object(Bucket="reports", Key=prefix + "by_tenant.parquet")["Body"].read()
    import io

    tenants = pd.read_parquet(io.BytesIO(body)).set_index("tenant")["cost"].to_dict()
    assert tenants == {"acme": 3.2511, "beta": 2.2501, "(idle)": 0.5}


@pytest.mark.parametrize("change, where, expectation, column", [
    ("compute_ms = -5", "request_id = 'r-2' and step = 'answer'", "expect_column_values_to_be_between", "compute_ms"),
    ("cost = -0.5", "request_id = 't-1' and step = 'classify'", "expect_column_values_to_be_between", "cost"),
    ("pipeline_id = ''", "request_id = 'r-1' and step = 'embed'", "expect_column_value_lengths_to_be_between",
     "pipeline_id"),
])
def test_a_planted_defect_fails_the_run_names_the_rows_and_writes_nothing(prefect, platform, change, where,
                                                                           expectation, column):
    from compoundry.flows.cost_report import cost_report

    store, state = platform
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"update metering_records set {change} where {where}"))
        bad_id = conn.execute(sa.text(f"select id from metering_records where {where}")).scalar_one()
    run = cost_report(**WINDOW, out=str(state / "out"), return_state=True)
    assert run.is_failed()
    with pytest.raises(GateFailed) as failed:
        run.result()
    failure = next(f for f in failed.value.failures if f.expectation == expectation and f.column == column)
    assert failure.unexpected_count == 1 and [r["row"] for r in failure.rows] == [bad_id]
    gate = artifacts(run.state_details.flow_run_id)
    assert set(gate) == {"metering-gate"}  # no report artifact
    assert expectation in gate["metering-gate"] and f"| {bad_id} |" in gate["metering-gate"]
    assert not (state / "out").exists()


def test_a_component_and_pipeline_removed_from_the_config_are_reported_retired(prefect, platform):
    """Issue 15, item 9: a config change never fails the report; old rows keep their call-time prices."""
    from compoundry.flows.cost_report import cost_report

    store, state = platform
    assert cost_report(**WINDOW, out=str(state / "before"))["totals"]["actual"] == 6.0012  # notes the config
    configs = Path(os.environ["COMPOUNDRY_CONFIG_DIR"])
    (configs / "components.yaml").write_text(w.COMPONENTS_YAML.split("  clf:")[0])  # clf removed ...
    (configs / "pipelines.yaml").write_text(w.PIPELINES_YAML.split("  triage:")[0])  # ... and triage with it
    with store.engine.begin() as conn:
        conn.execute(sa.text("update metering_records set pipeline_id = '../../etc' where request_id = 'd-1'"))
    run = cost_report(**WINDOW, out=str(state / "after"), format="parquet", return_state=True)
    assert run.is_completed(), run
    result = run.result()
    assert result["totals"]["actual"] == 6.0012
    folder = Path(result["location"])
    components = pd.read_parquet(folder / "by_component.parquet").set_index("component")
    assert components.loc["clf", "cost"] == 1.001 and bool(components.loc["clf", "retired"])
    assert not components.loc["llm", "retired"]
    pipelines = pd.read_parquet(folder / "by_pipeline.parquet").set_index("pipeline")
    assert bool(pipelines.loc["triage", "retired"]) and "../../etc" not in pipelines.index
    assert "(unregistered)" in pipelines.index
    assert "`clf`" in artifacts(run.state_details.flow_run_id)["cost-report"]


def test_a_stopped_replica_without_its_stop_time_fails_the_gate(prefect, platform):
    from compoundry.flows.cost_report import cost_report

    store, state = platform
    with store.engine.begin() as conn:
        conn.execute(sa.text("update replicas set stopped_at = null where id = 'r3'"))
    run = cost_report(**WINDOW, out=str(state / "out"), return_state=True)
    assert run.is_failed() and not (state / "out").exists()
    assert "stopped_at" in artifacts(run.state_details.flow_run_id)["metering-gate"]


def test_the_cli_prints_the_report_and_writes_files(platform):
    from compoundry.cli import app

    _, state = platform
    result = CliRunner().invoke(app, ["report", "cost", "--since", WINDOW["since"], "--until", WINDOW["until"],
                                      "--out", str(state / "cli"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"actual": 6.0012' in result.output
    assert (state / "cli" / "cost-20261101T0000-20261101T0200" / "lines.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--since", "last tuesday"], "expected an ISO date"),
    (["--since", "2h", "--format", "xlsx"], "choose from csv, parquet"),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "empty window"),
])
def test_the_cli_says_what_is_wrong_without_a_traceback(platform, args, message):
    from compoundry.cli import app

    result = CliRunner().invoke(app, ["report", "cost", *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_the_cli_refuses_an_unreachable_bucket_before_writing(platform, s3):
    from compoundry.cli import app

    result = CliRunner().invoke(app, ["report", "cost", "--since", WINDOW["since"], "--until", WINDOW["until"],
                                      "--out", "s3://no-such-bucket/x"])
    assert result.exit_code == 1 and "no-such-bucket" in result.output and "Traceback" not in result.output


def test_the_cli_prints_a_failed_gate_and_writes_nothing(platform):
    from compoundry.cli import app

    store, state = platform
    with store.engine.begin() as conn:
        conn.execute(sa.text("update metering_records set mode = 'spot' where request_id = 'r-1'"))
    result = CliRunner().invoke(app, ["report", "cost", "--since", WINDOW["since"], "--until", WINDOW["until"],
                                      "--out", str(state / "cli")])
    assert result.exit_code == 1 and "expect_column_values_to_be_in_set" in result.output
    assert "no report was written" in result.output and not (state / "cli").exists()
