"""`scheduled-warmup`: raise min replicas of pipelines' components before a busy window.

Each entry of ``configs/schedules.yaml`` with ``flow: scheduled-warmup`` is a
Prefect deployment with its cron schedule (``compoundry/flows/serve.py``). A run writes a
*capacity floor* per component (min replicas until ``now + hold_minutes``);
the gateway's autoscaler applies it at its next tick, starting replicas, and
ignores it once it ends, so the release needs no second run. The run then
waits for the replicas to be ready, so the Prefect UI shows whether the
window starts warm.
"""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import deployment, flow_run

from compoundry.flows.context import platform_context
from compoundry.store import PlatformStore
from compoundry.store.capacity import CapacityStore

POLL_S = 1.0


class WarmupError(ValueError):
    """The schedule names something the config does not define."""


def warmup_components(config, pipelines: list[str], components: list[str]) -> list[str]:
    """The components to warm: those named, and every component of the pipelines named."""
    unknown = [p for p in pipelines if p not in config.pipelines] + [c for c in components
                                                                    if c not in config.components]
    if unknown:
        raise WarmupError(f"unknown pipeline(s)/component(s) {unknown}; check configs/schedules.yaml")
    names = list(components) + [c for p in pipelines for c in config.pipelines[p].components]
    return [c for c in dict.fromkeys(names) if c in config.components]


@flow(name="scheduled-warmup", flow_run_name="warm up {pipelines}{components} to {min_replicas}", log_prints=True)
def scheduled_warmup(pipelines: list[str] | None = None, components: list[str] | None = None,
                     min_replicas: int = 1, hold_minutes: float = 60, wait_ready: bool = True) -> dict:
    """Hold ``min_replicas`` on each component for ``hold_minutes``; wait until they are ready."""
    logger = get_run_logger()
    ctx = platform_context()
    config, store = ctx.config, ctx.store
    names = warmup_components(config, pipelines or [], components or [])
    source = f"{deployment.name or 'manual'} (flow run {flow_run.get_id() or '-'})"
    floors = {c: CapacityStore(store).add_floor(c, min_replicas, timedelta(minutes=hold_minutes), source)
              for c in names}
    wanted = {c: min(min_replicas, config.components[c].scaling.max_replicas) for c in names}
    waited = _wait_ready(store, config, wanted) if wait_ready else {}
    rows = [{"component": c, "floor": wanted[c], "ready": waited.get(c, (None, None))[0],
             "ready_after_s": waited.get(c, (None, None))[1], "until": floors[c].ends_at.isoformat()}
            for c in names]
    create_table_artifact(key="scheduled-warmup", table=rows,
                          description=f"min replicas held for {hold_minutes} min by {source}")
    cold = [r["component"] for r in rows if wait_ready and (r["ready"] or 0) < r["floor"]]
    if cold:
        logger.warning("not warm in time: %s (not deployed, or replicas still starting)", cold)
    return {"components": rows, "not_ready": cold}


def _wait_ready(store: PlatformStore, config, wanted: dict[str, int]) -> dict[str, tuple[int, float | None]]:
    """``component -> (ready replicas, seconds until enough were ready or None)``, bounded by cold-start timeouts."""
    started = time.monotonic()
    timeout = max((config.components[c].timeouts.cold_start_s for c in wanted), default=0) + 10
    done: dict[str, tuple[int, float | None]] = {}
    while True:
        routes = store.routes()
        for c, want in wanted.items():
            ready = len(routes[c].replicas) if c in routes else 0
            if c not in done or done[c][1] is None:
                done[c] = (ready, round(time.monotonic() - started, 2) if ready >= want else None)
        if all(v[1] is not None for v in done.values()) or time.monotonic() - started > timeout:
            return done
        time.sleep(POLL_S)
