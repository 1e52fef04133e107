"""`cost-report`: gate the window's metering data, then cost it per pipeline, component, variant, mode and tenant.

Scheduled from ``configs/schedules.yaml`` (``flow: cost-report``; one Prefect
deployment per entry, ``compoundry/flows/serve.py``). A run first validates the
window's metering rows and replica lifetimes with Great Expectations and
publishes the verdict as the ``metering-gate`` markdown artifact; a failed
gate fails the run there, before any file or report artifact exists. Then it
writes the tables (CSV or Parquet) and PNG charts to ``out`` (a folder or
``s3://bucket/prefix``) and publishes the summary as markdown and tables.
docs/cost-reports.md explains every figure.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from compoundry.flows.context import platform_context
from compoundry.gates.prefect_artifacts import publish_gate
from compoundry.reports.cost import ReportError, build, check, now_utc, window
from compoundry.reports.output import FORMATS, default_out, open_target, write_report
from compoundry.reports.summary import markdown_summary

ARTIFACT_TABLES = ("by_pipeline", "by_component", "by_variant", "by_mode", "by_tenant", "counterfactual_by_pipeline",
                   "latency_by_pipeline", "critical_path_shares")


@task(name="metering-gate", cache_policy=NO_CACHE)  # reads the live DB: never a cached verdict
def gate(since, until):
    ctx = platform_context()
    checked = check(ctx.store.engine, ctx.config, since, until)
    publish_gate(checked.gates, key="metering-gate", title="Metering gate")
    return checked


@flow(name="cost-report", flow_run_name="cost report {since}..{until}", log_prints=True)
def cost_report(since: str | None = None, until: str | None = None, hours: float = 24,
                out: str | None = None, format: str = "csv") -> dict:
    """Cost of ``[since, until)`` (default: the ``hours`` before now); files under ``out``
    (default ``<state dir>/reports``), ``format`` csv or parquet."""
    logger = get_run_logger()
    if format not in FORMATS:
        raise ReportError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    start, end = window(since, until, now_utc(), default_hours=hours)
    ctx = platform_context()
    checked = gate(start, end)
    report = build(checked, ctx.config)
    target = open_target(out or default_out(ctx.settings), report.name)
    written = write_report(report, target, format)
    create_markdown_artifact(key="cost-report", markdown=markdown_summary(report, target.location, written),
                             description=f"cost {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC")
    for name in ARTIFACT_TABLES:
        create_table_artifact(key=f"cost-{name.replace('_', '-')}", table=report.tables[name].to_dict("records"),
                              description=f"{name.replace('_', ' ')}, {report.name}")
    logger.info("cost report %s: total %.4f, written to %s", report.name, report.totals["actual"], target.location)
    for kind, names in sorted(report.retired.items()):
        if names:  # no longer configured: costed as when they ran, flagged in the tables (docs/cost-reports.md)
            logger.info("retired %ss in this window: %s", kind, ", ".join(sorted(names)))
    return {"name": report.name, "location": target.location, "totals": report.totals, "files": written}
