"""`compoundry experiment ...`: start, evaluate, promote and inspect component-level A/B experiments.

``start``, ``evaluate`` and ``promote`` create runs of the platform's Prefect
deployments (``compoundry up`` serves them), so every action shows in the
Prefect UI with its artifact; ``--wait`` waits for the run and prints its
outcome. ``status`` reads the database directly and runs the same evaluation
without acting, so it works while Prefect is down.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import typer
from rich.table import Table

from compoundry.cli.common import config_and_store, console, fail, load_settings

experiment_app = typer.Typer(help="Component-level A/B experiments (configs/experiments.yaml).",
                             no_args_is_help=True)

WAIT = typer.Option(False, "--wait", help="Wait for the flow run to finish and print its result.")


def _known(config, name: str):
    experiment = config.experiments.get(name)
    if experiment is None:
        fail(f"unknown experiment {name!r} (known: {', '.join(sorted(config.experiments)) or 'none'})")
    return experiment


def _run_flow(deployment: str, parameters: dict, wait: bool) -> None:
    from compoundry.control.prefect_runs import (
        start_flow_run,  # Prefect: only for the commands that start runs
    )

    settings = load_settings()
    try:
        run = asyncio.run(start_flow_run(settings.prefect_api_url, deployment, parameters, wait=wait))
    except Exception as exc:  # noqa: BLE001 - Prefect down or the deployment missing: say what to do
        fail(f"could not start {deployment}: {exc}\nIs the platform up (`compoundry up`)?")
    console.print(f"flow run [bold]{run.name}[/]: {settings.prefect_ui_url}/runs/flow-run/{run.id}")
    if wait:
        state = run.state
        if state is None:
            fail("the flow run reported no state")
        console.print(f"finished: [bold]{state.type.value}[/] {state.message or ''}")
        if not state.is_completed():
            raise typer.Exit(1)


@experiment_app.command("start")
def start(name: str = typer.Argument(..., help="An experiment from experiments.yaml."), wait: bool = WAIT) -> None:
    """Deploy the variants that are not running and open a run: traffic starts splitting."""
    config, _ = config_and_store()
    _known(config, name)
    _run_flow("start-experiment/start-experiment", {"experiment": name}, wait)


@experiment_app.command("evaluate")
def evaluate(name: str = typer.Argument(..., help="An experiment with an open run."),
             dry_run: bool = typer.Option(False, "--dry-run", help="Report only: no rollback, no promotion."),
             wait: bool = WAIT) -> None:
    """Test the variants and act: roll back on a guardrail breach, promote a significant winner."""
    config, _ = config_and_store()
    _known(config, name)
    _run_flow("evaluate-experiment/evaluate-experiment", {"experiment": name, "act": not dry_run}, wait)


@experiment_app.command("promote")
def promote(name: str = typer.Argument(..., help="The experiment."),
            variant: str = typer.Argument(..., help="The variant to make the component's serving deployment."),
            wait: bool = WAIT) -> None:
    """Promote a variant by hand: deploy it as the serving route, move the serving alias, end the run."""
    config, _ = config_and_store()
    experiment = _known(config, name)
    if variant not in {v.name for v in experiment.variants}:
        fail(f"{name!r} has no variant {variant!r} (known: {', '.join(v.name for v in experiment.variants)})")
    _run_flow("promote/promote", {"experiment": name, "variant": variant}, wait)


@experiment_app.command("status")
def status(name: str = typer.Argument(..., help="The experiment."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The open run's per-variant numbers and what an evaluation would decide now (nothing is changed)."""
    from compoundry.core.experiments.decide import decide
    from compoundry.core.experiments.evaluation_report import (
        evaluation_result,
        variants_table,
    )
    from compoundry.store.experiment_runs import ExperimentStore
    from compoundry.store.observations import observe

    config, store = config_and_store()
    experiment = _known(config, name)
    run = ExperimentStore(store).latest(name)
    if run is None:
        console.print(f"{name}: never started (`compoundry experiment start {name}`)")
        return
    if not run.running:
        console.print(f"{name}: run {run.id} {run.status} at {run.ended_at:%Y-%m-%d %H:%M} UTC"
                      f"{f' (winner {run.winner})' if run.winner else ''}: {run.reason}")
        return
    now = datetime.now(timezone.utc)
    observed = observe(store.engine, experiment, run.started_utc, now)
    decision = decide(experiment, observed, run.hours_running(now))
    if as_json:
        console.print_json(json.dumps(evaluation_result(name, run, observed, decision), default=str))
        return
    table = Table("variant", "calls", "errors", "error rate", "p95 ms", "samples", "metric mean",
                  title=f"{name}: run {run.id}, started {run.started_utc:%Y-%m-%d %H:%M} UTC")
    for line in variants_table(observed).splitlines()[2:]:
        table.add_row(*[cell.strip() for cell in line.strip("|").split("|")])
    console.print(table)
    console.print(f"would [bold]{decision.action}[/]: {decision.reason}")
