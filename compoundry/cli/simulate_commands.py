"""`compoundry simulate ...`: run the scaling policies on a virtual clock before paying for GPUs.

``simulate run`` takes a scenario (default: the study's), a trace (generated,
a CSV file, or the platform's metering records) and a set of policies, and
prints cost, SLO and cold starts per policy; ``--report DIR`` also writes the
markdown report with charts. ``simulate report`` regenerates
``docs/simulation/`` from the built-in study scenario. See docs/simulation.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from compoundry.cli.common import console, err_console, fail, load_settings
from compoundry.config.loader import ConfigError

simulate_app = typer.Typer(help="Simulate traffic against the scaling policies (docs/simulation.md).",
                           no_args_is_help=True)


def _scenario(path: Optional[Path], days: Optional[float], variance: Optional[float], seed: Optional[int]):
    from compoundry.sim.scenario import SCENARIOS_DIR, Traffic, load_scenario

    try:
        scenario = load_scenario(path or SCENARIOS_DIR / "study.yaml")
    except ConfigError as err:
        fail(str(err))
    updates = {k: v for k, v in (("days", days), ("variance_amplification", variance), ("seed", seed)) if v is not None}
    traffic = Traffic.model_validate({**scenario.traffic.model_dump(), **updates})
    return scenario.model_copy(update={"traffic": traffic})


def _trace(scenario, trace_file: Optional[Path], replay: bool, variance: Optional[float]):
    from compoundry.sim.trace_io import TraceError, read_trace, replay_metering
    from compoundry.sim.traffic import amplify, generate

    try:
        if trace_file is not None:
            trace = read_trace(trace_file, scenario.tick_s, set(scenario.pipelines))
        elif replay:
            trace = replay_metering(load_settings().database_url, scenario.tick_s)
        else:
            return generate(scenario.traffic, scenario.tick_s)
    except TraceError as err:
        fail(str(err))
    return amplify(trace, variance, scenario.interval_s, scenario.traffic.seed) if variance else trace


@simulate_app.command("run")
def simulate_run(
    scenario_file: Optional[Path] = typer.Option(None, "--scenario", help="Scenario YAML (default: the study's)."),
    trace_file: Optional[Path] = typer.Option(None, "--trace", help="CSV of requests: time,pipeline[,count]."),
    replay: bool = typer.Option(False, "--replay", help="Replay the platform database's metering records."),
    policy: Optional[list[str]] = typer.Option(None, "--policy", "-p", help="Repeatable; default: all."),
    days: Optional[float] = typer.Option(None, help="Generated trace length (overrides the scenario)."),
    variance: Optional[float] = typer.Option(None, help="Multiply the inter-arrival CV (the study: 2)."),
    seed: Optional[int] = typer.Option(None, help="Generator seed."),
    workers: int = typer.Option(2, min=1, help="Worker processes (policies run in parallel)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write report.md and charts into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Run policies side by side on one trace: cost, P95 within SLO, cold starts."""
    from compoundry.sim.policies import POLICIES, check_policies
    from compoundry.sim.run import run_policies

    names = [n.strip() for item in policy or [] for n in item.split(",") if n.strip()] or list(POLICIES)
    try:
        check_policies(names)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--policy")
    scenario = _scenario(scenario_file, days, None if (trace_file or replay) else variance, seed)
    trace = _trace(scenario, trace_file, replay, variance)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(f"{len(names)} policies over {trace.n_ticks * trace.tick_s / 86400:.1f} days "
                            f"({trace.total:,} requests)", total=len(names))
        outcomes = run_policies(scenario, trace, names, workers=workers,
                                on_done=lambda o: bar.update(task, advance=1, description=f"{o.policy} done"))
    if as_json:
        print(json.dumps([_brief(o) for o in outcomes], indent=2))
    else:
        console.print(_table(outcomes))
    if report is not None:
        _write_report(report, scenario, trace, outcomes, "compoundry simulate run --report")


@simulate_app.command("report")
def simulate_report(out: Path = typer.Option(Path("docs/simulation"), help="Folder for report.md and charts."),
                    workers: int = typer.Option(2, min=1)) -> None:
    """Regenerate the study report (30 days, all policies) into docs/simulation/."""
    simulate_run(None, None, False, None, None, None, None, workers, out, False)


def _write_report(out: Path, scenario, trace, outcomes, command: str) -> None:
    from compoundry.sim.analyses import evaluate
    from compoundry.sim.report import write_report

    with console.status("analyses and charts..."):
        meta = {"command": command, "days": trace.n_ticks * trace.tick_s / 86400, "tick_s": scenario.tick_s,
                "requests": trace.total, "cv": trace.cv, "seed": scenario.traffic.seed,
                "interval_s": scenario.interval_s}
        path = write_report(out, outcomes, evaluate(scenario, trace, outcomes), meta)
    console.print(f"report: {path}")


def _brief(outcome) -> dict:
    return {"policy": outcome.policy, "cost": round(outcome.cost, 2),
            "pipelines": {p: {"within_slo": x.within_slo, "median_p95_s": x.median_p95_s,
                              "worst_p95_s": x.worst_p95_s} for p, x in outcome.pipelines.items()},
            "held_calls": {c: x.held_calls for c, x in outcome.components.items()}}


def _table(outcomes) -> Table:
    table = Table(title="Policies on the same trace")
    for column in ("policy", "cost $", "vs first"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for p in outcomes[0].pipelines:
        table.add_column(f"{p}: within SLO", justify="right")
        table.add_column(f"{p}: worst P95 s", justify="right")
    table.add_column("held for a cold start", justify="right")
    base = outcomes[0].cost
    for o in outcomes:
        cells = [o.policy, f"{o.cost:,.0f}", f"{100 * (1 - o.cost / base):.1f}%" if base else "-"]
        for x in o.pipelines.values():
            cells += [f"{100 * x.within_slo:.2f}%", f"{x.worst_p95_s:,.1f}"]
        cells.append(f"{sum(c.held_calls for c in o.components.values()):,}")
        table.add_row(*cells)
    return table
