"""Control API: MLflow webhooks in, deploy flow runs out; platform state for people.

Lives in the gateway process but off the request path of predictions. A
delivery with a bad, missing, stale or replayed signature gets 401 and
triggers nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from compoundry.control.prefect_runs import start_deploy_runs
from compoundry.core.deploy_decisions import (
    on_alias_set,
    on_version_created,
    variant_versions,
    watched_components,
)
from compoundry.registry.webhooks import WebhookRejected, verify_delivery

log = logging.getLogger(__name__)
router = APIRouter(prefix="/control", tags=["control"])


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


@router.post("/webhooks/mlflow", summary="Receive an MLflow registry webhook delivery")
async def mlflow_webhook(request: Request):
    state = request.app.state
    body = await request.body()
    try:
        event = verify_delivery(
            state.settings.webhook_secret, request.headers, body, now=time.time(),
            tolerance_s=state.settings.config.registry.webhook_tolerance_s,
        )
    except WebhookRejected as exc:
        log.warning("rejected MLflow webhook: %s", exc)
        return _error(401, "invalid_signature", str(exc))
    if not await asyncio.to_thread(state.store.record_delivery, event.delivery_id, event.event):
        return _error(401, "replayed_delivery", "this delivery id was already received")

    requests = await asyncio.to_thread(_plan, event, state)
    try:
        started = await start_deploy_runs(state.store, requests, state.settings.prefect_api_url)
    except Exception as exc:  # Prefect down: MLflow retries the delivery, the poller covers the rest
        log.exception("could not start deploy flow runs")
        return _error(503, "orchestrator_unavailable", f"could not start the deploy flow: {type(exc).__name__}")
    return {
        "event": event.event,
        "started": [
            {**asdict(s.request), "flow_run_id": s.flow_run_id, "flow_run_name": s.flow_run_name}
            for s in started if s.flow_run_id
        ],
        "already_claimed": [asdict(s.request) for s in started if not s.flow_run_id],
    }


def _plan(event, state):
    watched = watched_components(state.live.current)
    if event.event == "model_version.created" and event.model_name and event.version:
        return on_version_created(event.model_name, event.version, event.data.get("tags") or {}, watched, "webhook")
    if event.event == "model_version_alias.created" and event.model_name and event.version and event.alias:
        routes = state.store.routes()
        routed = {c: r.model_version for c, r in routes.items()}
        return on_alias_set(event.model_name, event.alias, event.version, watched, routed, "webhook",
                            variant_versions(routes))
    return []


@router.get("/deployments", summary="Deployments, their status and replicas")
async def list_deployments(request: Request):
    deployments = await asyncio.to_thread(request.app.state.store.deployments)
    return {"deployments": [asdict(d) for d in deployments]}
