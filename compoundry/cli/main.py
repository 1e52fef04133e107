"""`compoundry` command line: run the embedded platform and manage its models, keys, experiments and costs.

Exit codes follow Click: 0 success, 1 an expected failure (a service did not
start, something is down, an invalid config), 2 a usage error. Expected
failures print a message on stderr, never a traceback. One module per command
group; this one only assembles them.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import typer

from compoundry.cli import logs_commands, platform_commands, registry_commands
from compoundry.cli.config_commands import config_app
from compoundry.cli.experiment_commands import experiment_app
from compoundry.cli.keys_commands import keys_app
from compoundry.cli.kubernetes_commands import k8s_app
from compoundry.cli.report_commands import report_app
from compoundry.cli.scaling_commands import plan_app, targets_app, warmup_app
from compoundry.cli.simulate_commands import simulate_app

app = typer.Typer(
    name="compoundry", help="Serve compound AI systems: MLflow + Prefect + BentoML behind one Prediction Service.",
    no_args_is_help=True, rich_markup_mode="rich",
)


def _print_version(asked: bool) -> None:
    if asked:
        try:
            print(f"compoundry {version('compoundry')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("compoundry (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    config_dir: Optional[Path] = typer.Option(
        None, "--config-dir", envvar="COMPOUNDRY_CONFIG_DIR",
        help="Directory holding platform.yaml and the other configs (default: the repository's configs/).",
    ),
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """Serve compound AI systems: MLflow + Prefect + BentoML behind one Prediction Service."""
    if config_dir is not None:
        # every command, sub-app and child process reads the same directory
        os.environ["COMPOUNDRY_CONFIG_DIR"] = str(config_dir.resolve())


platform_commands.register_commands(app)
registry_commands.register_commands(app)
logs_commands.register_commands(app)
for name, group in (("config", config_app), ("keys", keys_app), ("plan", plan_app), ("warmup", warmup_app),
                    ("targets", targets_app), ("experiment", experiment_app), ("report", report_app),
                    ("simulate", simulate_app), ("k8s", k8s_app)):
    app.add_typer(group, name=name)

if __name__ == "__main__":
    app()
