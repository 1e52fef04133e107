"""`compoundry report cost`: the cost report from the command line, without Prefect.

It runs what the ``cost-report`` flow runs (gate, cost, write) in this
process and prints the summary; the scheduled flow adds Prefect artifacts.
Every expected failure (a bad window or format, an unreachable bucket, a
failed metering gate) is a message and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from compoundry.cli.common import console, err_console, fail, fail_config, load_settings
from compoundry.config.loader import ConfigError, load_config
from compoundry.store import PlatformStore

report_app = typer.Typer(help="Reports over the platform's metering data.", no_args_is_help=True)

SHOWN = (("Cost per pipeline", "by_pipeline"), ("Cost per component", "by_component"),
         ("What if: all-dedicated / all-serverless", "counterfactual_by_pipeline"),
         ("Critical path per pipeline", "latency_by_pipeline"))


@report_app.command("cost")
def cost(
    since: str = typer.Option(..., help="Start: 2026-11-01, 2026-11-01T08:00Z, or back from now: 90m, 24h, 7d."),
    until: Optional[str] = typer.Option(None, help="End (same forms; default now; never later than now)."),
    out: Optional[str] = typer.Option(None, help="A folder or s3://bucket/prefix (default <state_dir>/reports)."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    as_json: bool = typer.Option(False, "--json", help="Print totals and file locations as JSON."),
) -> None:
    """Gate the window's metering data, then write cost and latency tables and charts."""
    from compoundry.gates import render_markdown
    from compoundry.reports.cost import ReportError, build, check, now_utc, window
    from compoundry.reports.output import (
        FORMATS,
        default_out,
        open_target,
        write_report,
    )

    try:
        if fmt not in FORMATS:
            raise ReportError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
        start, end = window(since, until, now_utc())
        settings = load_settings()
        config = load_config(settings.config_dir)
        store = PlatformStore(settings.database_url)
        try:
            store.create_schema()
            checked = check(store.engine, config, start, end)
        finally:
            store.close()
        if not checked.passed:
            err_console.print(escape(render_markdown(checked.gates, "Metering gate")))
            raise ReportError("the metering gate failed: no report was written")
        report = build(checked, config)
        target = open_target(out or default_out(settings), report.name)
        written = write_report(report, target, fmt)
    except ConfigError as err:
        fail_config(err)
    except ReportError as err:
        fail(str(err))
    except Exception as err:  # noqa: BLE001 - the database or the output failed: say which, no traceback
        fail(f"cost report failed: {type(err).__name__}: {err}")
    if as_json:
        print(json.dumps({"name": report.name, "location": target.location, "totals": report.totals,
                          "files": written}, indent=2))
        return
    for title, name in SHOWN:
        console.print(_table(title, report.tables[name]))
    t = report.totals
    console.print(f"total [bold]{t['actual']:.4f}[/] for {int(t['calls'])} calls "
                  f"(all-dedicated {t['all_dedicated']:.4f}, all-serverless {t['all_serverless']:.4f})")
    console.print(f"{len(written)} files in {escape(target.location)}")


def _table(title: str, frame) -> Table:
    table = Table(*[str(c) for c in frame.columns], title=title)
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    return table
