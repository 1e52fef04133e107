"""Trace files, metering replay and the `compoundry simulate` command's errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from compoundry.cli import app
from compoundry.core.costs.records import MeteringRecord
from compoundry.sim.trace_io import TraceError, read_trace, replay_metering
from compoundry.sim.traffic import amplify


def test_a_trace_file_becomes_counts_per_tick(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time,pipeline,count\n0,agent,3\n9.5,agent,1\n10,agent,2\n25,code-analysis,1\n")
    trace = read_trace(path, 10.0, {"agent", "code-analysis"})
    assert trace.counts["agent"].tolist() == [4, 2, 0]
    assert trace.counts["code-analysis"].tolist() == [0, 0, 1]


@pytest.mark.parametrize("body, message", [
    ("when,pipeline\n0,agent\n", ":1: the header"),
    ("time,pipeline\n0,agent\nsoon,agent\n", ":3: "),
    ("time,pipeline\n0,agent\n-4,agent\n", ":3: time and count must be >= 0"),
    ("time,pipeline\n0,nope\n", ":2: unknown pipeline 'nope'"),
])
def test_a_bad_trace_file_names_its_line(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceError, match=str(path) + message):
        read_trace(path, 10.0, {"agent"})


def test_replay_counts_one_request_per_request_id(tmp_path):
    from compoundry.metering.sink import MeteringSink
    from compoundry.store import PlatformStore

    url = f"sqlite:///{tmp_path / 'p.db'}"
    PlatformStore(url).create_schema()
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    records = [MeteringRecord(timestamp=start + timedelta(seconds=s), tenant="t", pipeline_id="agent",
                              request_id=rid, component=c, variant="v", deployment_id="d", mode="serverless",
                              latency_class="interactive")
               for rid, s in (("a", 0), ("b", 12), ("c", 13)) for c in ("embedder", "dialogue-llm")]
    with MeteringSink(url) as sink:
        for r in records:
            sink.record(r)
    trace = replay_metering(url, 10.0)
    assert trace.counts["agent"].tolist() == [1, 2]
    louder = amplify(trace, 2.0, 300.0, seed=1)
    assert louder.cv == 2.0 and louder.counts["agent"].shape == (2,)


def test_the_cli_rejects_an_unknown_policy_and_a_bad_trace(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "run", "--policy", "magic"])
    assert result.exit_code == 2 and "valid: static" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("time,pipeline\nx,agent\n")
    result = runner.invoke(app, ["simulate", "run", "--trace", str(bad)])
    assert result.exit_code == 1 and f"{bad}:2" in result.output


def test_the_cli_runs_policies_on_a_trace_file(tmp_path):
    path = tmp_path / "t.csv"
    rows = "\n".join(f"{t},agent,20" for t in range(0, 3600, 10))
    path.write_text("time,pipeline,count\n" + rows + "\n")
    result = CliRunner().invoke(app, ["simulate", "run", "--trace", str(path), "-p", "static,hybrid",
                                      "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert '"policy": "hybrid"' in result.output
