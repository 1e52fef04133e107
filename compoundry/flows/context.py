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
from compoundry.scaling.targets.protocol import ReplicaTarget
from compoundry.scaling.targets.target_choice import (
    build_target,
    deployment_target,
    target_for,
)
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


def component_target(component: str) -> ReplicaTarget:
    """The target a new deployment of ``component`` goes to (its own ``target``, else the platform's)."""
    ctx = platform_context()
    return target_for(component, ctx.config, ctx.settings, ctx.store)


def running_target(deployment_id: str) -> ReplicaTarget:
    """The target ``deployment_id`` was started on: it is drained and deleted there, whatever the config says now."""
    settings = PlatformSettings.load()
    store = store_for(settings.database_url)
    return build_target(deployment_target(store, deployment_id), settings, store)
