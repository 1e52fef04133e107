"""What a flow run needs of its platform: settings, config and database.

A flow run gets its platform from the environment the flow server passes on
(``PlatformSettings.load()``). Flows call :func:`platform_context` once; tasks
take plain values (ids, versions, URLs) and reopen what they need here, so the
Prefect UI shows readable parameters and a task never holds a live object.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from compoundry.config.loader import load_config
from compoundry.config.models import Config
from compoundry.config.settings import PlatformSettings
from compoundry.scaling.targets.local import LocalTarget
from compoundry.store import PlatformStore


@dataclass(frozen=True)
class PlatformContext:
    settings: PlatformSettings
    config: Config
    store: PlatformStore


def platform_context() -> PlatformContext:
    """Settings, the config in force, and the platform database."""
    settings = PlatformSettings.load()
    return PlatformContext(settings, load_config(settings.config_dir), store_for(settings.database_url))


@functools.cache
def store_for(database_url: str) -> PlatformStore:
    """One store (one connection pool) per database per process: a flow and its tasks share it."""
    store = PlatformStore(database_url)
    store.create_schema()
    return store


def local_target() -> LocalTarget:
    """The local replica target of this flow run's platform."""
    settings = PlatformSettings.load()
    return LocalTarget(settings, store_for(settings.database_url))
