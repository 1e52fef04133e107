"""The deploy gate on a model version's evaluation dataset (``components.yaml`` ``evaluation:``).

The dataset is an artifact of the MLflow run that produced the version (e.g.
``eval/intents_eval.csv``, which the demo's intent classifier logs). The suite
is the component's list of expectations, written as GE's snake_case names with
their arguments; they become GE expectation objects here, so a typo in a name
or an argument fails the gate with a message naming the expectation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from compoundry.gates.validation import GateResult, validate_frame

READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json,
           ".jsonl": lambda path: pd.read_json(path, lines=True)}


class EvaluationSuiteError(ValueError):
    """The component's expectations cannot be built, or its dataset cannot be read."""


def build_expectations(component: str, expectations) -> list:
    """GE expectation objects from the config's ``{type: expect_..., **kwargs}`` entries."""
    import great_expectations.expectations as gxe

    built = []
    for i, spec in enumerate(expectations):
        kwargs = {k: v for k, v in spec.model_dump().items() if k != "type"}
        class_name = "".join(part.capitalize() for part in spec.type.split("_"))
        cls = getattr(gxe, class_name, None)
        if cls is None:
            raise EvaluationSuiteError(f"components.yaml: {component}.evaluation.expectations[{i}]: unknown "
                                       f"expectation {spec.type!r}")
        try:
            built.append(cls(**kwargs))
        except Exception as exc:  # pydantic's message names the bad argument
            raise EvaluationSuiteError(f"components.yaml: {component}.evaluation.expectations[{i}] "
                                       f"({spec.type}): {exc}") from exc
    return built


def read_dataset(path: Path) -> pd.DataFrame:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise EvaluationSuiteError(f"evaluation dataset {path.name}: unsupported format (use "
                                   f"{', '.join(READERS)})")
    return reader(path)


def check_evaluation_dataset(component: str, frame: pd.DataFrame, expectations) -> GateResult:
    return validate_frame(f"{component}-evaluation", frame, build_expectations(component, expectations))
