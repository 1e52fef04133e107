"""Experiment flows: `start-experiment`, `evaluate-experiment` (scheduled) and `promote`.

An experiment is configured in ``configs/experiments.yaml``; its *run* lives in
the platform database (``experiment_runs``). Starting deploys every variant
that is not running yet (as its own variant route, through the deploy flow)
and opens a run; the gateway splits traffic while the run is open. Evaluating
reads the run's metering rows and feedback, tests the challengers against the
control and acts: a guardrail breach rolls back, a significant winner is
promoted, a run past its maximum duration concludes. Promoting deploys the
winner's version as the component's serving deployment through the normal
deploy flow (blue/green; the flow then moves the serving alias, ``champion``,
in MLflow). Every ended run stops the split and drains the variant routes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from compoundry.core.experiments.decide import decide
from compoundry.core.experiments.evaluation_report import (
    evaluation_markdown,
    evaluation_result,
)
from compoundry.core.experiments.plan import promotion_deploy, variant_deploys
from compoundry.flows.context import platform_context, store_for
from compoundry.flows.deploy import deploy_model_version, drain_old
from compoundry.registry.model_store import ModelStore
from compoundry.store.experiment_runs import ExperimentStore
from compoundry.store.observations import observe

POLL_S = 1.0


class ExperimentError(ValueError):
    """The experiment cannot start or act, for a reason a person can fix."""


def _experiment(config, name: str):
    experiment = config.experiments.get(name)
    if experiment is None:
        raise ExperimentError(f"unknown experiment {name!r} (known: {', '.join(sorted(config.experiments)) or 'none'})"
                              "; see configs/experiments.yaml")
    return experiment


def _serving(store, component: str):
    serving = store.routes().get(component)
    if serving is None:
        raise ExperimentError(f"component {component!r} has no serving deployment yet; deploy it before "
                              "experimenting on it")
    return serving


def _resolver(models: ModelStore):
    return lambda model, alias: models.by_alias(model, alias).version


@task(cache_policy=NO_CACHE, task_run_name="wait for {component} {variant} v{version}")
def wait_for_variant(database_url: str, component: str, variant: str | None, version: str, timeout_s: float) -> None:
    """Another path (webhook, poll) claimed this deploy first: wait until its route serves the version."""
    store = store_for(database_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        serving = store.routes().get(component)
        route = serving.variant_route(variant) if serving is not None and variant else serving
        if route is not None and route.model_version == version and route.replicas:
            return
        time.sleep(POLL_S)
    raise ExperimentError(f"{component} {variant or 'serving'} route did not serve v{version} within {timeout_s:.0f} s")


def _deploy(ctx, request, timeout_s: float) -> str:
    """Run the deploy flow for a request unless another path has claimed it (then wait for that one)."""
    intent = ctx.store.claim_deploy(request.model_name, request.version, request.reason, request.source,
                                    request.component)
    if intent:
        result = deploy_model_version(request.model_name, request.version, component=request.component,
                                      source=request.source, variant=request.variant, intent=intent,
                                      trigger=request.parameters["trigger"])
        if result.get("superseded"):
            raise ExperimentError(f"the deploy of {request.component} v{request.version} was superseded: "
                                  f"{result['superseded']}")
        return result["deployment"]
    wait_for_variant(ctx.settings.database_url, request.component, request.variant, request.version, timeout_s)
    return "deployed elsewhere"


@task(cache_policy=NO_CACHE, task_run_name="retire the variant routes of {component}")
def retire_variants(database_url: str, component: str, variants: list[str]) -> list[str]:
    """Stop the split's own deployments: clear each variant route, then drain and stop its replicas."""
    store = store_for(database_url)
    retired = []
    for variant in variants:
        deployment = store.clear_variant_route(component, variant)
        if deployment is not None:
            drain_old(deployment)
            retired.append(deployment)
    return retired


def _end(settings, store, name: str, experiment, run, status: str, reason: str, winner: str | None = None) -> None:
    ExperimentStore(store).end_run(run.id, status, reason, winner)
    retire_variants(settings.database_url, experiment.component, [v.name for v in experiment.variants])
    emit_event(event=f"compoundry.experiment.{status}",
               resource={"prefect.resource.id": f"compoundry.experiment.{name}", "prefect.resource.name": name},
               payload={"run": run.id, "reason": reason, "winner": winner})


@flow(name="start-experiment", flow_run_name="start {experiment}", log_prints=True)
def start_experiment(experiment: str) -> dict:
    """Deploy the variants that are not running, then open a run: the gateway starts splitting."""
    logger = get_run_logger()
    ctx = platform_context()
    settings, config, store = ctx.settings, ctx.config, ctx.store
    spec = _experiment(config, experiment)
    if not spec.enabled:
        raise ExperimentError(f"experiment {experiment!r} has enabled: false in configs/experiments.yaml")
    component = config.components[spec.component]
    serving = _serving(store, spec.component)
    requests = variant_deploys(spec, component, serving, _resolver(ModelStore(settings.mlflow_url)))
    deployed = {r.variant: _deploy(ctx, r, component.timeouts.cold_start_s * 3) for r in requests}
    run = ExperimentStore(store).start_run(experiment, str(flow_run.get_id() or ""))
    rows = "\n".join(f"| {v.name} | {v.alias or '–'} | {v.version or '–'} | {v.weight}% | "
                     f"{deployed.get(v.name, 'already running')} |" for v in spec.variants)
    create_markdown_artifact(key=f"experiment-{experiment}", description=f"{experiment} started", markdown=(
        f"# Experiment `{experiment}` started\n\nRun `{run.id}` on component `{spec.component}`.\n\n"
        f"| variant | alias | version | weight | deployment |\n|---|---|---|---|---|\n{rows}\n"))
    logger.info("experiment %s: run %s open, %d variant deployment(s) started", experiment, run.id, len(deployed))
    return {"experiment": experiment, "run": run.id, "deployed": deployed}


@flow(name="evaluate-experiment", flow_run_name="evaluate {experiment}", log_prints=True)
def evaluate_experiment(experiment: str, act: bool = True) -> dict:
    """Test the variants of the open run and act on the decision (``act=False``: only report)."""
    logger = get_run_logger()
    ctx = platform_context()
    settings, config, store = ctx.settings, ctx.config, ctx.store
    spec = _experiment(config, experiment)
    run = ExperimentStore(store).latest(experiment)
    if run is None or not run.running:
        logger.info("experiment %s has no open run; nothing to evaluate", experiment)
        return {"experiment": experiment, "action": "none", "reason": "no open run"}
    now = datetime.now(timezone.utc)
    running_h = run.hours_running(now)
    observed = observe(store.engine, spec, run.started_utc, now)
    decision = decide(spec, observed, running_h)
    create_markdown_artifact(key=f"experiment-{experiment}", description=f"{experiment}: {decision.action}",
                             markdown=evaluation_markdown(experiment, spec, run, observed, decision, running_h))
    logger.info("experiment %s: %s — %s", experiment, decision.action, decision.reason)
    if act and decision.action == "rollback":
        _end(settings, store, experiment, spec, run, "rolled_back", decision.reason)
    elif act and decision.action == "conclude":
        _end(settings, store, experiment, spec, run, "concluded", decision.reason)
    elif act and decision.action == "promote":
        promote(experiment, decision.winner, reason=decision.reason)
    return evaluation_result(experiment, run, observed, decision)


@flow(name="promote", flow_run_name="promote {variant} of {experiment}", log_prints=True)
def promote(experiment: str, variant: str, reason: str = "promoted by hand") -> dict:
    """Make ``variant`` the component's serving deployment (and move its serving alias), then end the run."""
    logger = get_run_logger()
    ctx = platform_context()
    settings, config, store = ctx.settings, ctx.config, ctx.store
    spec = _experiment(config, experiment)
    if variant not in {v.name for v in spec.variants}:
        raise ExperimentError(f"{experiment!r} has no variant {variant!r} "
                              f"(known: {', '.join(v.name for v in spec.variants)})")
    component = config.components[spec.component]
    models = ModelStore(settings.mlflow_url)
    version, request = promotion_deploy(spec, component, store.routes().get(spec.component), variant,
                                        _resolver(models))
    if request is not None:
        _deploy(ctx, request, component.timeouts.cold_start_s * 3)
    models.set_alias(component.model, component.alias, version)  # idempotent: the deploy flow sets it too
    run = ExperimentStore(store).latest(experiment)
    if run is not None and run.running:
        _end(settings, store, experiment, spec, run, "promoted", reason, winner=variant)
    logger.info("%s: %s v%s now serves %s (alias %s)", experiment, variant, version, spec.component, component.alias)
    return {"experiment": experiment, "winner": variant, "version": version, "component": spec.component,
            "alias": component.alias, "redeployed": request is not None}
