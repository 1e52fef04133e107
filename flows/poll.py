"""`registry-poll`: the fallback for setups where MLflow's webhooks cannot reach us.

It asks MLflow what the webhook would have said (newest version, alias
position) for every configured component and starts the same deploy runs;
claims in the platform database make a version deploy once whichever path
sees it first.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from compoundry.config.loader import load_config
from compoundry.deploy_policy import ComponentTarget, on_poll, targets_from_config, variant_versions
from compoundry.orchestration import start_deploy_runs
from compoundry.settings import PlatformSettings
from compoundry.store import PlatformStore
from registry.store import ModelNotFound, ModelStore


def observe(models: ModelStore, store: PlatformStore, targets: list[ComponentTarget]):
    """Deploy requests for everything MLflow has that the platform does not serve."""
    routes = store.routes()
    routed = {c: r.model_version for c, r in routes.items()}
    requests = []
    for model_name in sorted({t.model for t in targets}):
        latest = models.latest(model_name)
        mine = [t for t in targets if t.model == model_name]
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
    settings = PlatformSettings.load()
    config = load_config(settings.config_dir)
    store = PlatformStore(settings.database_url)
    store.create_schema()
    targets = targets_from_config(config)
    requests = observe(ModelStore(settings.mlflow_url), store, targets)
    started = await start_deploy_runs(store, requests)
    fresh = [s for s in started if s.flow_run_id]
    logger.info("registry-poll: %d candidate(s), %d deploy run(s) started", len(requests), len(fresh))
    return [{"component": s.request.component, "model": s.request.model_name, "version": s.request.version,
             "flow_run_id": s.flow_run_id} for s in fresh]
