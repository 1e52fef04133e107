"""Prefect adapter: start platform flow runs (the control plane's only Prefect call).

Each `DeployRequest` is claimed in the platform database first; only the
claimant creates a flow run, so a webhook and the poller racing on the same
version start one deploy between them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from compoundry.deploy_policy import DeployRequest
from compoundry.store import PlatformStore

log = logging.getLogger(__name__)

DEPLOY_DEPLOYMENT = "deploy-model-version/deploy-model-version"
POLL_DEPLOYMENT = "registry-poll/registry-poll"


@dataclass(frozen=True)
class StartedRun:
    request: DeployRequest
    flow_run_id: str | None     # None: another path had already claimed it
    flow_run_name: str | None = None


async def start_deploy_runs(store: PlatformStore, requests: list[DeployRequest]) -> list[StartedRun]:
    from prefect.deployments import arun_deployment

    started = []
    for request in requests:
        claimed = await asyncio.to_thread(
            store.claim_deploy, request.model_name, request.version, request.reason, request.source
        )
        if not claimed:
            started.append(StartedRun(request, None))
            continue
        try:
            run = await arun_deployment(
                DEPLOY_DEPLOYMENT, parameters=request.parameters, timeout=0, as_subflow=False,
                tags=["compoundry", f"component:{request.component}", f"source:{request.source}"],
            )
        except Exception:
            await asyncio.to_thread(store.release_claim, request.model_name, request.version, request.reason)
            raise
        await asyncio.to_thread(
            store.attach_flow_run, request.model_name, request.version, request.reason, str(run.id)
        )
        log.info("started %s for %s v%s (%s)", run.name, request.model_name, request.version, request.source)
        started.append(StartedRun(request, str(run.id), run.name))
    return started
