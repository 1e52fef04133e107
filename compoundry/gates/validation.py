"""Great Expectations gates: run a suite over a DataFrame, keep what failed and on which rows.

A *gate* stands in front of something that must not run on bad data (a cost
report on broken metering rows, a deploy on a bad evaluation dataset). It is
one call, :func:`validate_frame`, that returns a plain :class:`GateResult`;
callers decide what a failure stops (:func:`require_passed` raises
:class:`GateFailed`). The result is plain data so flows can render it
(:meth:`GateResult.markdown`) and tests can assert on it without GE objects.

GE runs in an *ephemeral* context (nothing on disk, analytics and progress
bars off) with a pandas datasource; expectations are GE's own classes
(``great_expectations.expectations``), with their ``description`` used as the
human reason in the rendering. Offending rows come from GE's unexpected index
list: the frame's index labels, so give the frame a meaningful index (a row
id) when the caller wants to name rows by it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

DEFAULT_SAMPLE_ROWS = 20


@dataclass(frozen=True)
class ExpectationFailure:
    """One expectation that did not hold (or could not be evaluated)."""

    expectation: str                 # GE type, e.g. "expect_column_values_to_be_between"
    column: str | None
    description: str                 # why the rule exists (the expectation's description)
    kwargs: dict[str, Any]           # its arguments (min_value, value_set, row_condition...), JSON-safe
    unexpected_count: int
    element_count: int
    rows: tuple[dict[str, Any], ...] = ()  # up to sample_rows offending rows; "row" is the frame's index label
    error: str | None = None         # set when GE raised (a missing column...): the rule was not checked


@dataclass(frozen=True)
class GateResult:
    """A suite's verdict on one frame."""

    name: str
    passed: bool
    rows: int
    expectations: int
    failures: tuple[ExpectationFailure, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        if self.passed:
            return f"{self.name}: {self.expectations} expectations passed on {self.rows} rows"
        return (f"{self.name}: {len(self.failures)} of {self.expectations} expectations failed on "
                f"{self.rows} rows: " + "; ".join(_one_line(f) for f in self.failures))

    def markdown(self, max_rows: int = DEFAULT_SAMPLE_ROWS) -> str:
        """A section for a Prefect markdown artifact: each failed expectation and its offending rows."""
        head = f"### {'✅' if self.passed else '❌'} `{self.name}`: {self.rows} rows, {self.expectations} expectations"
        if self.passed:
            return head + ", all passed\n"
        parts = [head + f", **{len(self.failures)} failed**\n"]
        for f in self.failures:
            parts.append(f"#### `{f.expectation}`" + (f" on `{f.column}`" if f.column else ""))
            if f.description:
                parts.append(f"{f.description}\n")
            parts.append("Arguments: " + ", ".join(f"`{k}={_short(v)}`" for k, v in f.kwargs.items()) + "\n")
            if f.error:
                parts.append(f"Could not be evaluated: `{f.error}`\n")
                continue
            parts.append(f"{f.unexpected_count} of {f.element_count} rows fail"
                         + (f"; the first {min(len(f.rows), max_rows)}:" if f.rows else ".") + "\n")
            if f.rows:
                parts.append(markdown_table(list(f.rows)[:max_rows]))
        return "\n".join(parts) + "\n"


class GateFailed(RuntimeError):
    """Raised by :func:`require_passed`: the data did not pass; nothing downstream may run."""

    def __init__(self, results: Sequence[GateResult]):
        self.results = tuple(results)
        failed = [r for r in self.results if not r.passed]
        super().__init__("data gate failed: " + " | ".join(r.summary() for r in failed))

    @property
    def failures(self) -> list[ExpectationFailure]:
        return [f for r in self.results for f in r.failures]


def validate_frame(name: str, frame: pd.DataFrame, expectations: Iterable[Any], *,
                   sample_rows: int = DEFAULT_SAMPLE_ROWS) -> GateResult:
    """Run ``expectations`` (GE expectation objects) over ``frame``; never raises on bad data.

    ``name`` names the suite in results and renderings. An expectation that GE
    could not evaluate counts as failed, with ``error`` set: a gate must not
    pass a rule it did not check.
    """
    import great_expectations as gx

    expectations = list(expectations)
    asset = _context().data_sources.add_pandas(f"gate-{name}").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=name, expectations=[e.copy() for e in expectations])
    outcome = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    failures = [_failure(r, frame, sample_rows) for r in outcome.results if not r.success]
    failures.sort(key=lambda f: (f.column or "", f.expectation))
    return GateResult(name=name, passed=not failures, rows=len(frame), expectations=len(expectations),
                      failures=tuple(failures))


def require_passed(results: Iterable[GateResult]) -> None:
    """Raise :class:`GateFailed` when any result failed."""
    results = list(results)
    if not all(r.passed for r in results):
        raise GateFailed(results)


def render_markdown(results: Iterable[GateResult], title: str) -> str:
    """One markdown document for several suites (a Prefect artifact's body)."""
    results = list(results)
    verdict = "passed" if all(r.passed for r in results) else "**failed**: nothing downstream ran"
    return f"## {title}: {verdict}\n\n" + "\n".join(r.markdown() for r in results)


# --- GE plumbing -----------------------------------------------------------------
def _context():
    """A fresh ephemeral, in-memory GE context (a few ms): no state shared between gates or threads;
    analytics and progress bars off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False)))


def _failure(result, frame: pd.DataFrame, sample_rows: int) -> ExpectationFailure:
    config = result.expectation_config
    kwargs = {k: _jsonable(v) for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    info = result.exception_info or {}
    errors = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    if info.get("raised_exception"):
        errors.append(info.get("exception_message"))
    details = result.result or {}
    labels = list(details.get("unexpected_index_list") or [])[:sample_rows]
    return ExpectationFailure(
        expectation=config.type, column=config.kwargs.get("column"),
        description=getattr(config, "description", None) or "", kwargs=kwargs,
        unexpected_count=int(details.get("unexpected_count") or 0),
        element_count=int(details.get("element_count") or len(frame)),
        rows=tuple(_row(frame, label) for label in labels),
        error="; ".join(e for e in errors if e) or None,
    )


def _row(frame: pd.DataFrame, label) -> dict[str, Any]:
    if isinstance(label, dict):  # GE's shape for a named index: {index name: label, column: value}
        if frame.index.name not in label:
            return {k: _jsonable(v) for k, v in label.items()}
        label = label[frame.index.name]
    try:
        values = frame.loc[label]
    except KeyError:
        return {"row": _jsonable(label)}
    if isinstance(values, pd.DataFrame):  # a duplicated index label: the first row
        values = values.iloc[0]
    return {"row": _jsonable(label), **{k: _jsonable(v) for k, v in values.items()}}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(f: ExpectationFailure) -> str:
    where = f" on {f.column}" if f.column else ""
    if f.error:
        return f"{f.expectation}{where} not evaluated ({f.error})"
    rows = ", ".join(str(r.get("row")) for r in f.rows[:5])
    return f"{f.expectation}{where}: {f.unexpected_count} row(s)" + (f" (rows {rows})" if rows else "")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as a GitHub markdown table (columns in first-seen order; cells cut at 40 characters)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return "" if v is None else _short(v, 40).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
