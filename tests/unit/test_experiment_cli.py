"""`compoundry experiment status`: a run's per-variant numbers from metering rows, and what evaluation would do."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compoundry.cli import app
from compoundry.store import PlatformStore
from compoundry.store.experiment_runs import ExperimentStore
from compoundry.store.tables import metering_table

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def store(tmp_path, monkeypatch):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    monkeypatch.setenv("COMPOUNDRY_CONFIG_DIR", str(tmp_path / "configs"))
    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("COMPOUNDRY_DATABASE_URL", raising=False)
    (tmp_path / "state").mkdir()
    store = PlatformStore(f"sqlite:///{tmp_path / 'state' / 'platform.db'}")
    store.create_schema()
    return store


def _calls(store, variant: str, n: int, errors: int, shadow: bool = False) -> None:
    now = datetime.now(timezone.utc)
    rows = [dict(timestamp=now + timedelta(milliseconds=i), tenant="t", pipeline_id="p", request_id=f"{variant}-{i}",
                 component="embedder", variant=variant, deployment_id="d", mode="dedicated",
                 latency_class="interactive", compute_ms=10.0 + i, outcome="error:500" if i < errors else "ok",
                 shadow=shadow) for i in range(n)]
    with store.engine.begin() as conn:
        conn.execute(metering_table.insert(), rows)


def test_status_reports_the_open_runs_variants_and_the_decision_it_would_take(store):
    runner = CliRunner()
    assert "never started" in runner.invoke(app, ["experiment", "status", "embedder-ab"]).output
    ExperimentStore(store).start_run("embedder-ab")
    _calls(store, "champion", 60, errors=0)
    _calls(store, "challenger", 40, errors=10)
    _calls(store, "challenger", 50, errors=50, shadow=True)  # mirrored: no user saw it, it does not count
    result = runner.invoke(app, ["experiment", "status", "embedder-ab", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["variants"]["challenger"]["calls"] == 40 and body["variants"]["challenger"]["errors"] == 10
    assert body["action"] == "rollback" and "challenger: error rate 0.250 > 0.02" in body["reason"]
    assert ExperimentStore(store).latest("embedder-ab").running  # status never acts


def test_status_of_an_ended_run_and_of_an_unknown_experiment(store):
    run = ExperimentStore(store).start_run("embedder-ab")
    ExperimentStore(store).end_run(run.id, "promoted", "challenger better", winner="challenger")
    output = CliRunner().invoke(app, ["experiment", "status", "embedder-ab"]).output
    assert "promoted" in output and "winner challenger" in output
    unknown = CliRunner().invoke(app, ["experiment", "status", "nope"])
    assert unknown.exit_code == 1 and "unknown experiment 'nope'" in unknown.output and "embedder-ab" in unknown.output
