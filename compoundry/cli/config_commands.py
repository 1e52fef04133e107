"""``compoundry config validate|schema``: check configs/ before anything starts.

Validation errors are printed as ``file:line: field: message`` (one per line,
never a traceback) so editors and CI logs can jump to the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from compoundry.config.base import DEFAULT_CONFIG_DIR
from compoundry.config.json_schema import write_schemas
from compoundry.config.loader import ConfigError, display_path, load_config
from compoundry.config.models import Config

config_app = typer.Typer(help="Validate configs/*.yaml and generate their JSON Schemas.", no_args_is_help=True)

_DIR_HELP = "config directory (default: $COMPOUNDRY_CONFIG_DIR or the repository's configs/)"


@config_app.command()
def validate(config_dir: Optional[Path] = typer.Option(None, "--config-dir", "-c", help=_DIR_HELP)) -> None:
    """Validate every config file and the references between them; exit 1 on any issue."""
    console = Console(soft_wrap=True)
    try:
        config = load_config(config_dir)
    except ConfigError as err:
        for issue in err.issues:
            console.print(Text(str(issue), style="red"))
        console.print(Text(f"{len(err.issues)} config issue(s)", style="bold red"))
        raise typer.Exit(1)
    _summary(console, config)


def _summary(console: Console, config: Config) -> None:
    if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
        console.width = 160
    comps = Table(title="components")
    for col in ("name", "model@alias", "engine", "mode", "latency", "replicas"):
        comps.add_column(col)
    for name, c in config.components.items():
        comps.add_row(name, f"{c.model}@{c.alias}", c.engine, c.mode, c.latency_class,
                      f"{c.scaling.min_replicas}..{c.scaling.max_replicas}")
    pipes = Table(title="pipelines")
    for col in ("name", "steps (parallel levels)", "sla_ms", "latency", "prewarm"):
        pipes.add_column(col)
    for name, p in config.pipelines.items():
        levels = " → ".join("{" + ", ".join(level) + "}" for level in p.levels())
        pipes.add_row(name, Text(levels), str(p.sla_ms), p.latency_class, str(p.prewarm))
    console.print(comps)
    console.print(pipes)
    enabled = sum(e.enabled for e in config.experiments.values())
    active = sum(s.enabled for s in config.schedules.values())
    console.print(Text(f"OK {display_path(config.config_dir)}: {len(config.components)} components, "
                       f"{len(config.pipelines)} pipelines, {len(config.experiments)} experiments ({enabled} enabled), "
                       f"{len(config.schedules)} schedules ({active} enabled)", style="green"))


@config_app.command()
def schema(out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: configs/schema/)")) -> None:
    """Write one JSON Schema per config file, for editor completion and validation."""
    console = Console(soft_wrap=True)
    for path in write_schemas(out or DEFAULT_CONFIG_DIR / "schema"):
        console.print(Text(f"wrote {display_path(path)}"))
