"""The deploy gate on evaluation datasets: the shipped classifier's suite on its real held-out set (GE, in memory)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from compoundry.config.loader import load_config
from compoundry.config.models import Expectation
from compoundry.gates.evaluation import (
    EvaluationSuiteError,
    build_expectations,
    check_evaluation_dataset,
    read_dataset,
)
from compoundry.registry.demo_models import load_intents

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def suite():
    return load_config(CONFIGS).components["intent-classifier"].evaluation.expectations


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    _, _, texts, labels = load_intents()
    return pd.DataFrame({"text": texts, "label": labels})


def test_the_demo_classifiers_held_out_set_passes(suite, held_out):
    result = check_evaluation_dataset("intent-classifier", held_out, suite)
    assert result.passed and result.rows == len(held_out) and result.expectations == 4


def test_planted_defects_fail_and_name_their_rows(suite, held_out):
    bad = held_out.copy()
    bad.loc[3, "label"] = "refunds"
    bad.loc[5, "text"] = None
    result = check_evaluation_dataset("intent-classifier", bad, suite)
    failed = {(f.expectation, f.column): [r["row"] for r in f.rows] for f in result.failures}
    assert failed == {("expect_column_values_to_be_in_set", "label"): [3],
                      ("expect_column_values_to_not_be_null", "text"): [5]}


def test_unknown_expectations_and_bad_arguments_are_named():
    with pytest.raises(EvaluationSuiteError, match=r"classifier.evaluation.expectations\[0\]: unknown expectation"):
        build_expectations("classifier", [Expectation(type="expect_column_to_be_awesome", column="x")])
    with pytest.raises(EvaluationSuiteError, match=r"expectations\[0\] \(expect_column_values_to_be_in_set\)"):
        build_expectations("classifier", [Expectation(type="expect_column_values_to_be_in_set", colum="x")])


def test_datasets_are_read_by_extension(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "hi", "label": "other"}\n')
    assert read_dataset(tmp_path / "d.jsonl").to_dict("records") == [{"text": "hi", "label": "other"}]
    with pytest.raises(EvaluationSuiteError, match="unsupported format"):
        read_dataset(tmp_path / "d.xlsx")
