"""The metering gate's expectation suites: what metering rows and replica lifetimes must satisfy
before a cost report may use them (issue 5, item 3b).

Each rule says why in its ``description`` (shown in the gate's artifact). The
suites are GE expectation objects, run by :func:`compoundry.gates.validate_frame`.

The gate catches data bugs, not config changes: a component that is no longer
in ``components.yaml`` is reported as retired (docs/decisions/0031), so the
rules check a component *name's form*, never membership of today's config.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from compoundry.core.costs.records import MODES

LATENCY_CLASSES = ("interactive", "batch")
OUTCOME_PATTERN = r"^(?:ok|fallback|shed|rate_limited|error:.+)$"
TERMINAL = ("stopped", "failed")
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"  # a component name as the config allows it (compoundry.config.base.Name)


def metering_expectations(since: datetime, until: datetime) -> list:
    """Rules for ``metering_records`` rows of ``[since, until)``."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    durations = [gxe.ExpectColumnValuesToBeBetween(
        column=c, min_value=0, description=f"{c} is a duration: a negative one is a clock or metering bug")
        for c in ("queue_ms", "cold_start_ms", "compute_ms")]
    counts = [gxe.ExpectColumnValuesToBeBetween(
        column=c, min_value=0, description=f"{c} is a count or a price: never negative")
        for c in ("prompt_tokens", "completion_tokens", "cost")]
    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column="pipeline_id", description="cost is attributed per pipeline; '' marks a direct call, null is a bug"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="pipeline_id", min_value=1, row_condition=Column("step").is_not_null(),
            description="a call made for a pipeline step must carry its pipeline id"),
        *durations, *counts,
        gxe.ExpectColumnValuesToNotBeNull(column="cost", description="every call was priced when it ran; a null "
                                                                     "cost is a metering bug, not a free call"),
        *_component_name(gxe, Column("outcome") != "rate_limited"),  # a refused pipeline request ran no component
        gxe.ExpectColumnValuesToBeInSet(
            column="mode", value_set=list(MODES), description="the mode decides the tariff"),
        gxe.ExpectColumnValuesToBeInSet(column="latency_class", value_set=list(LATENCY_CLASSES),
                                        description="interactive or batch"),
        gxe.ExpectColumnValuesToMatchRegex(column="outcome", regex=OUTCOME_PATTERN,
                                           description="ok, fallback, shed, rate_limited or error:<code>"),
        gxe.ExpectColumnValuesToNotBeNull(column="timestamp", description="every call has a time"),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=pd.Timestamp(since), max_value=pd.Timestamp(until),
            description="calls inside the report window and not in the future (a skewed clock or a "
                        "timezone bug puts rows where they do not belong)"),
        gxe.ExpectColumnValuesToNotBeNull(column="deployment_id", description="replica cost is shared per deployment"),
    ]


def replica_expectations() -> list:
    """Rules for the replica lifetimes a report bills (replicas joined with their deployment's component)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    return [
        *_component_name(gxe),
        gxe.ExpectColumnValuesToNotBeNull(column="started_at", description="a lifetime needs its start"),
        gxe.ExpectColumnValuesToNotBeNull(
            column="stopped_at", row_condition=Column("status").is_in(list(TERMINAL)),
            description="a stopped replica must say when it stopped, or its cost is unknown "
                        "(rows from before the stopped_at column: see docs/cost-reports.md)"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="stopped_at", column_B="started_at", or_equal=True, ignore_row_if="either_value_is_missing",
            description="a replica cannot stop before it started"),
    ]


def _component_name(gxe, row_condition=None) -> list:
    only = {} if row_condition is None else {"row_condition": row_condition}
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="component", description="every cost belongs to a component", **only),
        gxe.ExpectColumnValuesToMatchRegex(
            column="component", regex=NAME_PATTERN, **only,
            description="a component name as components.yaml spells one; a component no longer configured is "
                        "reported as retired, not refused"),
    ]
