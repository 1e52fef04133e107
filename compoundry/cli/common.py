"""What every command group shares: the consoles, and the platform's settings, config and database.

Expected failures (an invalid config, an unreachable database) print one
clear message on stderr and exit with status 1; never a traceback. Heavy
libraries (MLflow, Prefect, numpy) are imported inside the commands that need
them, so `compoundry --help` and `compoundry status` start fast.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from compoundry.config.loader import ConfigError, load_config
from compoundry.config.models import Config
from compoundry.config.settings import PlatformSettings
from compoundry.store import PlatformStore

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code`` (1: an expected failure, 2: a usage error)."""
    err_console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(code)


def fail_config(err: ConfigError) -> NoReturn:
    """Print every ``file:line: field: message`` of an invalid config on stderr and exit 1."""
    for issue in err.issues:
        err_console.print(f"[red]{escape(str(issue))}[/]")
    raise typer.Exit(1)


def load_settings() -> PlatformSettings:
    try:
        return PlatformSettings.load()
    except ConfigError as err:
        fail_config(err)


def load_platform_config(settings: PlatformSettings) -> Config:
    try:
        return load_config(settings.config_dir)
    except ConfigError as err:
        fail_config(err)


def open_store(settings: PlatformSettings) -> PlatformStore:
    """The platform database, its tables created when missing."""
    settings.ensure_state_dir()
    store = PlatformStore(settings.database_url)
    try:
        store.create_schema()
    except Exception as exc:  # noqa: BLE001 - a database that cannot be reached: say so, no traceback
        store.close()
        fail(f"cannot open the platform database ({settings.database_url}): {exc}")
    return store


def platform() -> tuple[PlatformSettings, Config, PlatformStore]:
    """Settings, config and database, for commands that need all three."""
    settings = load_settings()
    config = load_platform_config(settings)
    return settings, config, open_store(settings)


def config_and_store() -> tuple[Config, PlatformStore]:
    _, config, store = platform()
    return config, store
