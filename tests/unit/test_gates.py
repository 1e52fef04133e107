"""The gate module on real Great Expectations, and the metering suite's rules."""

from datetime import timedelta

import great_expectations.expectations as gxe
import pandas as pd
import pytest

from compoundry.gates import GateFailed, render_markdown, require_passed, validate_frame
from compoundry.gates.metering_suite import metering_expectations, replica_expectations
from compoundry.reports.cost import ReportError, parse_moment, window
from tests import cost_workload as w


def frame(overrides: dict | None = None) -> pd.DataFrame:
    rows = [{"id": 100 + i, "timestamp": pd.Timestamp(r.timestamp), **{k: getattr(r, k) for k in (
        "tenant", "pipeline_id", "request_id", "step", "component", "variant", "deployment_id", "mode",
        "latency_class", "queue_ms", "cold_start_ms", "compute_ms", "prompt_tokens", "completion_tokens",
        "outcome", "cost", "shadow")}} for i, r in enumerate(w.records())]
    for (row, column), value in (overrides or {}).items():
        rows[row][column] = value
    return pd.DataFrame(rows).set_index("id", drop=False)


def suite():
    return metering_expectations(w.SINCE, w.UNTIL)


def test_clean_metering_rows_pass():
    result = validate_frame("metering", frame(), suite())
    assert result.passed and result.rows == 9 and result.expectations == len(suite())
    require_passed([result])
    assert "all passed" in result.markdown()


@pytest.mark.parametrize("row, column, value, expectation", [
    (1, "compute_ms", -1.0, "expect_column_values_to_be_between"),
    (2, "component", "../ghost", "expect_column_values_to_match_regex"),  # a name no config could have had
    (3, "mode", "spot", "expect_column_values_to_be_in_set"),
    (4, "pipeline_id", None, "expect_column_values_to_not_be_null"),
    (5, "pipeline_id", "", "expect_column_value_lengths_to_be_between"),  # a step without its pipeline
    (6, "timestamp", pd.Timestamp(w.UNTIL + timedelta(days=1)), "expect_column_values_to_be_between"),
    (7, "outcome", "exploded", "expect_column_values_to_match_regex"),
])
def test_each_planted_defect_is_named_with_its_row(row, column, value, expectation):
    result = validate_frame("metering", frame({(row, column): value}), suite())
    assert not result.passed
    [failure] = [f for f in result.failures if f.column == column]
    assert (failure.expectation, failure.unexpected_count) == (expectation, 1)
    assert [r["row"] for r in failure.rows] == [100 + row]
    assert failure.rows[0]["request_id"] == w.records()[row].request_id  # the whole offending row
    with pytest.raises(GateFailed, match=expectation) as raised:
        require_passed([result])
    assert raised.value.failures == list(result.failures)
    text = render_markdown([result], "Metering gate")
    assert "**failed**" in text and f"| {100 + row} |" in text and failure.description in text


def test_a_direct_call_without_a_pipeline_is_fine_but_a_step_needs_one():
    assert validate_frame("metering", frame(), suite()).passed  # row 8 is a direct call: pipeline '' and no step


def test_an_expectation_that_cannot_run_fails_the_gate():
    result = validate_frame("x", pd.DataFrame({"a": [1]}), [gxe.ExpectColumnValuesToNotBeNull(column="missing")])
    assert not result.passed and "missing" in result.failures[0].error
    assert "Could not be evaluated" in result.markdown()


def test_replica_lifetimes():
    replicas = pd.DataFrame([
        {"replica_id": "a", "component": "llm", "status": "ready", "started_at": pd.Timestamp(w.SINCE),
         "stopped_at": pd.NaT},
        {"replica_id": "b", "component": "llm", "status": "stopped", "started_at": pd.Timestamp(w.SINCE),
         "stopped_at": pd.NaT},
        {"replica_id": "c", "component": "Gone!", "status": "failed", "started_at": pd.Timestamp(w.at(10)),
         "stopped_at": pd.Timestamp(w.at(5))},
    ]).set_index("replica_id", drop=False)
    result = validate_frame("replicas", replicas, replica_expectations())
    failed = {(f.expectation, tuple(r["row"] for r in f.rows)) for f in result.failures}
    assert failed == {("expect_column_values_to_not_be_null", ("b",)),
                      ("expect_column_values_to_match_regex", ("c",)),
                      ("expect_column_pair_values_a_to_be_greater_than_b", ("c",))}


def test_report_windows():
    now = w.UNTIL
    assert parse_moment("2026-11-01", now) == w.SINCE
    assert parse_moment("2026-11-01T01:00+01:00", now) == w.SINCE
    assert parse_moment("90m", now) == now - timedelta(minutes=90)
    assert window("2h", None, now) == (w.SINCE, w.UNTIL)
    assert window(None, "2030-01-01", now, default_hours=2) == (w.SINCE, w.UNTIL)  # until capped at now
    with pytest.raises(ReportError, match="expected an ISO date"):
        parse_moment("yesterday", now)
    with pytest.raises(ReportError, match="empty window"):
        window("2026-11-02", "2026-11-01", now)
