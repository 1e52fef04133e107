"""`compoundry logs`: the embedded platform's logs without knowing where they live.

Each service `compoundry up` starts writes `<state dir>/logs/<service>.log`; each local replica
`<state dir>/logs/replicas/<replica id>.log`. Without a name the command lists them; with one it prints
the last lines, and with `--follow` keeps printing what is appended (like `tail -f`) until Ctrl-C.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import typer

from compoundry.cli.common import console, err_console, load_settings

FOLLOW_POLL_S = 0.25


def register_commands(app: typer.Typer) -> None:
    app.command("logs")(logs)


def logs(
    name: str = typer.Argument(None, help="A service (gateway, mlflow, prefect, flows) or a replica id; "
                                          "none: list the logs there are."),
    lines: int = typer.Option(50, "--lines", "-n", min=0, help="How many of the last lines to print."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="List the logs as JSON (name, path, bytes)."),
) -> None:
    """Print a service's or a replica's log, or list the logs there are."""
    root = load_settings().logs_dir
    found = _logs(root)
    if name is None:
        _list(found, as_json)
        return
    path = found.get(name)
    if path is None:
        known = ", ".join(sorted(found)) or "none yet (is the platform up?)"
        err_console.print(f"[red]no log named {name!r} in {root}; there are: {known}[/]")
        raise typer.Exit(1)
    for line in _last_lines(path, lines):
        print(line, end="")
    if follow:
        try:
            _follow(path)
        except KeyboardInterrupt:
            pass


def _logs(root: Path) -> dict[str, Path]:
    """name -> path: services by their name, replicas by their id."""
    found = {p.stem: p for p in sorted(root.glob("*.log"))}
    found |= {p.stem: p for p in sorted((root / "replicas").glob("*.log"))}
    return found


def _list(found: dict[str, Path], as_json: bool) -> None:
    rows = [{"name": name, "path": str(path), "bytes": path.stat().st_size} for name, path in found.items()]
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        err_console.print("no logs yet: `compoundry up` starts the services that write them")
        return
    for row in rows:
        console.print(f"{row['name']:<40} {row['bytes']:>10,} B  {row['path']}")


def _last_lines(path: Path, count: int) -> list[str]:
    with path.open(errors="replace") as f:
        return list(deque(f, maxlen=count)) if count else []


def _follow(path: Path, sleep=time.sleep) -> None:
    """Print what is appended to ``path``; a rotated or truncated file is read again from its start."""
    with path.open(errors="replace") as f:
        f.seek(0, 2)
        while True:
            line = f.readline()
            if line:
                print(line, end="", flush=True)
                continue
            if path.exists() and path.stat().st_size < f.tell():
                f.seek(0)
            sleep(FOLLOW_POLL_S)
