"""`compoundry up | down | status`: the embedded platform's processes."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from compoundry.cli.common import console, err_console, load_settings, open_store
from compoundry.platform.supervisor import PlatformError, Supervisor
from compoundry.scaling.targets.target_choice import build_target, remote_deployments

_EVENT_STYLE = {
    "running": "[green]already running[/]", "healthy": "[green]healthy[/]", "failed": "[red]failed[/]",
    "stale": "[yellow]stale pid file removed[/]", "hook-ok": "[green]done[/]",
    "hook-skipped": "[dim]skipped[/]", "hook-failed": "[red]failed[/]", "warning": "[yellow]warning[/]",
}


def _supervisor() -> Supervisor:
    return Supervisor(load_settings())


def up(
    only: Optional[list[str]] = typer.Option(
        None, "--only", metavar="NAME", help="Start only this service and what it depends on "
        "(repeatable or comma-separated): mlflow, prefect, flows, gateway.",
    ),
) -> None:
    """Start the platform's services (already running ones are kept) and print their URLs."""
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


def down(
    delete_remote: bool = typer.Option(
        False, "--delete-remote", help="Also drain and delete the deployments on Kubernetes and BentoCloud "
        "(by default they keep running, and `compoundry up` finds them again)."),
) -> None:
    """Stop every service and the model replicas the platform started on this machine."""
    supervisor = _supervisor()
    _remote_deployments(supervisor.settings, delete_remote)

    def show(name: str, event: str, detail: str) -> None:
        if event in ("stopped", "stale", "warning"):
            label = _EVENT_STYLE.get(event, "[green]stopped[/]")
            console.print(f"  {escape(name)}: {label}" + (f" [dim]{escape(detail)}[/]" if detail else ""))

    with console.status("stopping the platform..."):
        supervisor.down(progress=show)
    console.print("[green]compoundry is down[/]")


def _remote_deployments(settings, delete: bool) -> None:
    """Remote deployments are not this machine's processes: say they keep running, or delete them if asked."""
    store = open_store(settings)
    remote = remote_deployments(store)
    if remote and not delete:
        console.print(f"  {len(remote)} deployment(s) keep running remotely "
                      f"({', '.join(sorted(set(remote.values())))}); `compoundry down --delete-remote` deletes them")
    for deployment_id, target in sorted(remote.items()) if delete else ():
        with console.status(f"draining and deleting {deployment_id} on {target}..."):
            build_target(target, settings, store).drain_and_delete(deployment_id, grace_s=30)
        console.print(f"  {escape(deployment_id)}: [green]deleted[/] ({target})")


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


def register_commands(app: typer.Typer) -> None:
    for command in (up, down, status):
        app.command()(command)
