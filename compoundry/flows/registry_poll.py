"""`registry-poll`: the fallback for setups where MLflow's webhooks cannot reach us.

It asks MLflow what the webhook would have said (newest version, alias
position) for every configured component and starts the same deploy runs;
claims in the platform database make a version deploy once whichever path
sees it first.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from compoundry.control.prefect_runs import start_deploy_runs
from compoundry.core.deploy_decisions import (
    WatchedComponent,
    on_poll,
    variant_versions,
    watched_components,
)
from compoundry.flows.context import platform_context
from compoundry.registry.model_store import ModelNotFound, ModelStore
from compoundry.store import PlatformStore


def observe(models: ModelStore, store: PlatformStore, watched: list[WatchedComponent]):
    """Deploy requests for everything MLflow has that the platform does not serve."""
    routes = store.routes()
    routed = {c: r.model_version for c, r in routes.items()}
    requests = []
    for model_name in sorted({t.model for t in watched}):
        latest = models.latest(model_name)
        mine = [t for t in watched if t.model == model_name]
        for alias in sorted({t.alias for t in mine} | {a for t in mine for _, a in t.variant_aliases}):
            try:
                alias_version = models.by_alias(model_name, alias).version
            except ModelNotFound:
                alias_version = None
            requests += on_poll(
                model_name, latest.version if latest else None, latest.tags if latest else {},
                alias_version, alias, mine, routed, variant_versions(routes),
            )
    return requests


@flow(name="registry-poll", log_prints=True)
async def registry_poll() -> list[dict]:
    logger = get_run_logger()
    ctx = platform_context()
    settings, store = ctx.settings, ctx.store
    watched = watched_components(ctx.config)
    requests = observe(ModelStore(settings.mlflow_url), store, watched)
    started = await start_deploy_runs(store, requests, settings.prefect_api_url)
    fresh = [s for s in started if s.flow_run_id]
    logger.info("registry-poll: %d candidate(s), %d deploy run(s) started", len(requests), len(fresh))
    return [{"component": s.request.component, "model": s.request.model_name, "version": s.request.version,
             "flow_run_id": s.flow_run_id} for s in fresh]
