"""`compoundry` command line: run the embedded platform and manage its configuration.

Exit codes follow Click: 0 success, 1 an expected failure (a service did not
start, something is down, an invalid config), 2 a usage error. Expected
failures print a message, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    name="compoundry", help="Serve compound AI systems: MLflow + Prefect + BentoML behind one Prediction Service.",
    no_args_is_help=True, rich_markup_mode="rich",
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

_EVENT_STYLE = {
    "running": "[green]already running[/]", "healthy": "[green]healthy[/]", "failed": "[red]failed[/]",
    "stale": "[yellow]stale pid file removed[/]", "hook-ok": "[green]done[/]",
    "hook-skipped": "[dim]skipped[/]", "hook-failed": "[red]failed[/]", "warning": "[yellow]warning[/]",
}


@app.callback()
def main(
    config_dir: Optional[Path] = typer.Option(
        None, "--config-dir", envvar="COMPOUNDRY_CONFIG_DIR",
        help="Directory holding platform.yaml and the other configs (default: the repository's configs/).",
    ),
) -> None:
    """Serve compound AI systems: MLflow + Prefect + BentoML behind one Prediction Service."""
    if config_dir is not None:
        # every command, sub-app and child process reads the same directory
        os.environ["COMPOUNDRY_CONFIG_DIR"] = str(config_dir.resolve())


def _load_settings():
    from compoundry.config.loader import ConfigError
    from compoundry.settings import PlatformSettings

    try:
        return PlatformSettings.load()
    except ConfigError as err:
        for issue in err.issues:
            err_console.print(f"[red]{escape(str(issue))}[/]")
        raise typer.Exit(1)


def _supervisor():
    from compoundry.platform.supervisor import Supervisor

    return Supervisor(_load_settings())


@app.command()
def up(
    only: Optional[list[str]] = typer.Option(
        None, "--only", metavar="NAME", help="Start only this service and what it depends on "
        "(repeatable or comma-separated): mlflow, prefect, flows, gateway.",
    ),
) -> None:
    """Start the platform's services (already running ones are kept) and print their URLs."""
    from compoundry.platform.supervisor import PlatformError

    supervisor = _supervisor()
    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(supervisor.specs))
    if unknown:
        raise typer.BadParameter(f"unknown service(s) {', '.join(unknown)}; choose from "
                                 f"{', '.join(supervisor.specs)}", param_hint="--only")
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=False) as bar:
            supervisor.up(only=names or None, progress=_progress_printer(bar))
    except PlatformError as err:
        err_console.print(f"\n[bold red]compoundry up failed:[/] {escape(str(err))}")
        err_console.print(f"[dim]logs: {supervisor.settings.logs_dir}; stop everything with `compoundry down`[/]")
        raise typer.Exit(1)
    console.print(_status_table(supervisor, supervisor.status(), title="compoundry is up"))


def _progress_printer(bar: Progress):
    """Map supervisor events to one spinner line per service (or hook)."""
    tasks: dict[str, int] = {}

    def show(name: str, event: str, detail: str) -> None:
        if event == "starting":
            tasks[name] = bar.add_task(f"starting [bold]{escape(name)}[/]", total=None)
            return
        label = _EVENT_STYLE.get(event, event)
        text = f"[bold]{escape(name)}[/] {label}" + (f" [dim]({escape(detail.splitlines()[0])})[/]" if detail else "")
        if name not in tasks:
            tasks[name] = bar.add_task(text, total=None)
        bar.update(tasks[name], description=text, total=1, completed=1)  # marks it finished: spinner stops

    return show


@app.command()
def down() -> None:
    """Stop every service and the model replicas the platform started."""
    supervisor = _supervisor()

    def show(name: str, event: str, detail: str) -> None:
        if event in ("stopped", "stale", "warning"):
            label = _EVENT_STYLE.get(event, "[green]stopped[/]")
            console.print(f"  {escape(name)}: {label}" + (f" [dim]{escape(detail)}[/]" if detail else ""))

    with console.status("stopping the platform..."):
        supervisor.down(progress=show)
    console.print("[green]compoundry is down[/]")


@app.command()
def status() -> None:
    """Show each service's pid, health and URL; exit 1 if any is not healthy."""
    supervisor = _supervisor()
    rows = supervisor.status()
    console.print(_status_table(supervisor, rows, title="compoundry status"))
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


def _status_table(supervisor, rows, title: str) -> Table:
    titles = {name: spec.title for name, spec in supervisor.specs.items()}
    table = Table(title=title)
    table.add_column("service", no_wrap=True)
    table.add_column("what")
    for column in ("pid", "state", "url"):
        table.add_column(column, no_wrap=True, min_width=5)
    for row in rows:
        state = "[green]healthy[/]" if row.healthy else "[yellow]unhealthy[/]" if row.alive else "[red]down[/]"
        table.add_row(row.name, titles.get(row.name, ""), str(row.pid or "-"), state, row.url or "")
    return table


def _mount_optional_commands() -> None:
    """Sub-apps written alongside this one; the CLI still works while one is missing."""
    try:
        from compoundry.config.cli import config_app
    except ImportError:
        pass
    else:
        app.add_typer(config_app, name="config")
    from compoundry.cli_keys import keys_app

    app.add_typer(keys_app, name="keys")
    from compoundry.cli_scaling import plan_app, targets_app, warmup_app

    app.add_typer(plan_app, name="plan")
    app.add_typer(warmup_app, name="warmup")
    app.add_typer(targets_app, name="targets")
    from compoundry.cli_experiments import experiment_app
    from compoundry.cli_report import report_app
    from compoundry.cli_sim import simulate_app

    app.add_typer(experiment_app, name="experiment")
    app.add_typer(report_app, name="report")
    app.add_typer(simulate_app, name="simulate")
    try:
        from compoundry.cli_registry import register_commands
    except ImportError:
        pass
    else:
        register_commands(app)


_mount_optional_commands()

if __name__ == "__main__":
    app()
