"""Prefect adapter: start runs of the platform's Prefect deployments (the control plane's only Prefect call).

Every run is created on the platform's own Prefect server (``api_url``, from
the settings), whatever the calling process's environment says, so the CLI
never falls back to a temporary local server. Each :class:`DeployRequest` is
claimed in the platform database first; only the claimant creates a flow
run, so a webhook and the poller racing on the same version start one deploy
between them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from compoundry.core.deploy_decisions import DeployRequest
from compoundry.store import PlatformStore

log = logging.getLogger(__name__)

DEPLOY_DEPLOYMENT = "deploy-model-version/deploy-model-version"
POLL_DEPLOYMENT = "registry-poll/registry-poll"


@dataclass(frozen=True)
class StartedRun:
    request: DeployRequest
    flow_run_id: str | None     # None: another path had already claimed it
    flow_run_name: str | None = None


async def start_flow_run(api_url: str, deployment: str, parameters: dict, *, tags: Iterable[str] = (),
                         wait: bool = False):
    """Create a run of ``deployment`` (``flow/deployment``); with ``wait``, return it once it has finished.

    Prefect is imported on the first run, not with this module: the gateway process that hosts the
    control API would otherwise pay ~2 s and ~40 MB for it at start-up.
    """
    from prefect.deployments import arun_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return await arun_deployment(deployment, parameters=parameters, timeout=None if wait else 0,
                                     as_subflow=False, tags=list(tags))


async def start_deploy_runs(store: PlatformStore, requests: list[DeployRequest], api_url: str) -> list[StartedRun]:
    """A ``deploy-model-version`` run per request this caller claims first, carrying the claim's intent."""
    started = []
    for request in requests:
        intent = await asyncio.to_thread(
            store.claim_deploy, request.model_name, request.version, request.reason, request.source, request.component
        )
        if not intent:
            started.append(StartedRun(request, None))
            continue
        try:
            run = await start_flow_run(api_url, DEPLOY_DEPLOYMENT, request.parameters | {"intent": intent},
                                       tags=["compoundry", f"component:{request.component}",
                                             f"source:{request.source}"])
        except Exception:
            await asyncio.to_thread(store.release_claim, request.model_name, request.version, request.reason)
            raise
        await asyncio.to_thread(
            store.attach_flow_run, request.model_name, request.version, request.reason, str(run.id)
        )
        log.info("started %s for %s v%s (%s)", run.name, request.model_name, request.version, request.source)
        started.append(StartedRun(request, str(run.id), run.name))
    return started
