"""`deploy-model-version`: registry version → running, routed replica.

resolve → check signature → build Bento → [take the component's deploy lease →
is it still wanted → roll out on the component's target and wait ready → smoke
prediction → still wanted → switch route (blue/green) → set the alias] → drain
and delete the old deployment where it runs → emit an event. Every replica
action goes through a ``ReplicaTarget`` (local, kubernetes, bentocloud: chosen
per component, ``scaling/targets/target_choice.py``); this module names none.
A failure at any step
fails the flow run with a readable reason and leaves the previous route
serving: the route switch is the last thing that can fail before traffic moves.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
from mlflow.artifacts import download_artifacts
from mlflow.models import get_model_info
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.runtime import flow_run

from bentos.build import build_bento
from compoundry.core.deploy_decisions import (
    MANUAL,
    watched_components,
)
from compoundry.flows.context import component_target, platform_context, running_target
from compoundry.flows.deploy_ordering import (
    Check,
    Ordering,
    RouteMoved,
    check_intent,
    move_alias,
    read_alias,
    switch_route,
)
from compoundry.gates.evaluation import (
    EvaluationSuiteError,
    check_evaluation_dataset,
    read_dataset,
)
from compoundry.gates.prefect_artifacts import publish_gate
from compoundry.registry.demo_models import smoke_input
from compoundry.registry.model_store import ModelStore, ModelVersionInfo
from compoundry.scaling.targets.protocol import ScalingSpec
from compoundry.scaling.targets.target_choice import target_name
from compoundry.store import DeploymentStatus
from compoundry.store.leases import Leases
from compoundry.store.refresh import propagation_s

#: A deploy holds its component's lease while it runs (renewed every third of the TTL, so a killed run frees
#: it within the TTL); a second deploy of the component waits up to LEASE_WAIT_S for it.
LEASE_TTL_S = 60.0
LEASE_WAIT_S = 1800.0


class DeployError(RuntimeError):
    """A deploy step failed for a reason a person can act on."""


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2, task_run_name="resolve {model_name} v{version}")
def resolve_version(tracking_uri: str, model_name: str, version: str) -> ModelVersionInfo:
    return ModelStore(tracking_uri).get(model_name, version)


@task(cache_policy=NO_CACHE, task_run_name="check that {info.name} v{info.version} loads")
def check_model(tracking_uri: str, info: ModelVersionInfo, engine: str) -> str:
    """The version must load the way its replicas load it (``models:/<name>/<version>``), and a pyfunc model
    needs a signature: its Bento hands JSON to ``predict``. Fails here, before anything is built."""
    if "MLmodel" not in ModelStore(tracking_uri).root_files(info):
        raise DeployError(
            f"{info.name} v{info.version} cannot be loaded: {info.uri} (source {info.source}) has no MLmodel at its "
            "root. Register the logged model itself: the models:/m-... URI that log_model returned, or "
            "`compoundry register NAME runs:/<run>/<name>`, which resolves to it")
    signature = get_model_info(info.uri).signature
    if signature is None and engine == "pyfunc":
        raise DeployError(f"{info.name} v{info.version} has no model signature; log it with one (engine pyfunc)")
    return str(signature) if signature is not None else "none (allowed for engine %s)" % engine


@task(cache_policy=NO_CACHE, task_run_name="evaluation gate for {component}")
def evaluation_gate(tracking_uri: str, info: ModelVersionInfo, component: str, evaluation) -> str:
    """The version's evaluation dataset must pass the component's expectation suite before anything is built.

    A failed gate fails the run here (its artifact lists the failed expectations and rows); the route does not move.
    """
    if evaluation is None:
        return "no gate configured"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if info.run_id is None:
                raise FileNotFoundError("the version has no MLflow run")
            local = download_artifacts(run_id=info.run_id, artifact_path=evaluation.dataset, dst_path=tmp,
                                       tracking_uri=tracking_uri)
        except Exception as exc:  # MLflow says "not found" in several ways
            missing = f"no evaluation dataset {evaluation.dataset!r} for {info.name} v{info.version} ({exc})"
            if evaluation.required:
                raise DeployError(missing + "; components.yaml requires one") from None
            get_run_logger().warning("%s: deploying without the evaluation gate", missing)
            return "skipped: no dataset"
        try:
            result = check_evaluation_dataset(component, read_dataset(Path(local)), evaluation.expectations)
        except EvaluationSuiteError as exc:
            raise DeployError(str(exc)) from None
    publish_gate([result], key=f"evaluation-gate-{component}",
                 title=f"Evaluation dataset of {info.name} v{info.version} ({evaluation.dataset})")
    return f"passed: {result.rows} rows, {result.expectations} expectations"


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, task_run_name="build bento ({engine})")
def build(engine: str, labels: dict[str, str], bentoml_home: str) -> str:
    return build_bento(engine, labels, bentoml_home=Path(bentoml_home))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2,
      task_run_name="start {count} replica(s) of {deployment_id}")
def start_replicas(component: str, deployment_id: str, model_name: str, version: str, model_uri: str,
                   bento_tag: str, variant: str | None, count: int = 1) -> dict:
    """Roll the deployment out on the component's target and wait until ``count`` replicas are ready
    (blue/green: as many as blue runs); the target removes what it started when they are not."""
    comp = platform_context().config.components[component]
    spec = replace(ScalingSpec.for_component(deployment_id, component, comp, version, bento_tag, variant=variant),
                   model_name=model_name, model_uri=model_uri)
    rollout = component_target(component).deploy(spec, count)
    return {"urls": list(rollout.urls), "ready_s": rollout.ready_s, "where": rollout.where}


def replicas_to_start(store, component: str, variant: str | None, scaling) -> int:
    """As many replicas as the deployment being replaced runs now, within the component's bounds."""
    current = store.routed_deployment(component) if variant is None else next(
        (d for d in store.deployments(component) if d.variant == variant), None)
    live = running_target(current.id).replicas(current.id) if current else 0
    return min(max(1, live, scaling.min_replicas), scaling.max_replicas)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="smoke prediction on {url}")
def smoke_prediction(url: str, inputs: dict, timeout_s: float) -> dict:
    response = httpx.post(f"{url}/invoke", json={"inputs": inputs}, timeout=timeout_s)
    if response.status_code != 200:
        raise DeployError(f"smoke prediction failed with HTTP {response.status_code}: {response.text[:500]}")
    info = httpx.post(f"{url}/info", json={}, timeout=timeout_s).json()
    return {"output_preview": str(response.json())[:300], "model_load_s": info.get("model_load_s")}


@task(cache_policy=NO_CACHE, task_run_name="drain {deployment_id}")
def drain_old(deployment_id: str) -> None:
    """Give every gateway time to read the new route, then drain and delete the old deployment where it runs."""
    time.sleep(propagation_s(platform_context().settings.config.route_refresh_s))
    running_target(deployment_id).drain_and_delete(deployment_id, grace_s=30)


@flow(name="deploy-model-version", flow_run_name="deploy {model_name} v{version}", log_prints=True)
def deploy_model_version(model_name: str, version: str, component: str | None = None,
                         source: str = "manual", set_serving_alias: bool = True, variant: str | None = None,
                         intent: int | None = None, trigger: str = MANUAL) -> dict:
    """Deploy one registered model version as the serving deployment of its component, or with ``variant``
    as the route of that experiment variant (the serving route and the MLflow aliases stay as they are).

    ``intent`` is the deploy's claim sequence (runs started by hand get one here) and ``trigger`` what asked
    for it (``version``, ``alias`` or ``manual``). Deploys of one component hold its deploy lease from the
    replica start to the alias move, and switch the route only if no newer command overtook them
    (:func:`compoundry.core.deploy_decisions.superseded_by`); an overtaken deploy ends ``superseded``.
    """
    logger = get_run_logger()
    ctx = platform_context()
    settings, config, store = ctx.settings, ctx.config, ctx.store
    component = component or _component_for(config, model_name)
    comp = config.components[component]
    started = time.monotonic()
    version = str(version)
    run_id = str(flow_run.get_id() or uuid.uuid4().hex)
    if intent is None:
        intent = store.claim_deploy(model_name, version, f"run:{run_id}", source, component) or 0
    alias = _governing_alias(config, component, variant)
    order = Ordering(settings.database_url, settings.mlflow_url, component, variant, model_name, version, intent,
                     trigger, alias, read_alias(settings.mlflow_url, model_name, alias))

    info = resolve_version(settings.mlflow_url, model_name, version)
    signature = check_model(settings.mlflow_url, info, comp.engine)
    gate = evaluation_gate(settings.mlflow_url, info, component, comp.evaluation)
    labels = {"component": component, "model": model_name, "version": version}
    bento_tag = build(comp.engine, labels, str(settings.bentoml_home))

    deployment_id = f"{component}-{variant + '-' if variant else ''}v{version}-{uuid.uuid4().hex[:6]}"
    lease = Leases(store).held(f"deploy:{component}", deployment_id, ttl_s=LEASE_TTL_S, wait_s=LEASE_WAIT_S,
                               on_wait=lambda holder: logger.info("waiting for %s's deploy lease, held by %s",
                                                                  component, holder))
    with lease:
        superseded = check_intent(order).superseded
        if superseded is None:
            store.add_deployment(deployment_id, component, model_name, version, comp.engine,
                                 target=target_name(config, component), flow_run_id=run_id)
            store.update_deployment(deployment_id, bento_tag=bento_tag)
            try:
                count = replicas_to_start(store, component, variant, comp.scaling)
                rollout = start_replicas(component, deployment_id, model_name, version, info.uri, bento_tag,
                                         variant, count)
                smoke = smoke_prediction(rollout["urls"][0], smoke_input(comp.engine, model_name),
                                         comp.timeouts.request_s * 3)
                store.update_deployment(deployment_id, load_time_s=smoke["model_load_s"])
                check = check_intent(order)
                superseded, previous = _switched(order, deployment_id, check)
            except Exception as exc:
                _abandon(store, deployment_id, DeploymentStatus.FAILED, str(exc))
                logger.error("deploy of %s v%s failed; the previous route keeps serving: %s", model_name, version,
                             exc)
                raise
            if superseded is not None:
                _abandon(store, deployment_id, DeploymentStatus.SUPERSEDED, superseded)
            else:
                alias_moved = _move_alias(order, check) if set_serving_alias and not variant else "not moved"
    if superseded is not None:
        store.release_intent(intent)  # the same command, given again later, deploys again
        logger.warning("deploy of %s v%s superseded, the route stays as it is: %s", model_name, version, superseded)
        return {"component": component, "variant": variant, "deployment": None, "model": model_name,
                "version": version, "superseded": superseded, "intent": intent, "source": source}
    if previous:
        drain_old(previous)

    result = {
        "component": component, "variant": variant, "deployment": deployment_id, "model": model_name,
        "version": version, "intent": intent, "alias": alias_moved,
        "bento": bento_tag, "where": rollout["where"], "replica": rollout["urls"][0],
        "replicas": len(rollout["urls"]), "replica_ready_s": round(rollout["ready_s"], 2),
        "model_load_s": smoke["model_load_s"], "replaced": previous, "source": source,
        "total_s": round(time.monotonic() - started, 2), "signature": signature, "evaluation_gate": gate,
    }
    emit_event(
        event="compoundry.deployment.ready",
        resource={"prefect.resource.id": f"compoundry.deployment.{deployment_id}",
                  "prefect.resource.name": deployment_id},
        related=[{"prefect.resource.id": f"compoundry.component.{component}",
                  "prefect.resource.role": "component"}],
        payload=result,
    )
    create_markdown_artifact(key=f"deploy-{component}", markdown=_summary(result),
                             description=f"{component} now serves {model_name} v{version}")
    logger.info("%s%s serves %s v%s from %s", component, f" (variant {variant})" if variant else "", model_name,
                version, rollout["urls"][0])
    return result


def _switched(order: Ordering, deployment_id: str, check: Check) -> tuple[str | None, str | None]:
    """``(why not, None)`` if superseded (by the check, or by a switch since it), else ``(None, replaced)``."""
    if check.superseded is not None:
        return check.superseded, None
    try:
        return None, switch_route(order, deployment_id, check)
    except RouteMoved as exc:
        return str(exc), None


def _move_alias(order: Ordering, check: Check) -> str:
    """The route serves the new version whatever MLflow says: an alias that cannot be written is logged."""
    try:
        return move_alias(order, check)
    except Exception as exc:  # MLflow down through the retries: the poller will see the alias differ
        get_run_logger().warning("the route serves v%s but the alias could not be moved: %s", order.version, exc)
        return f"not moved: {exc}"[:300]


def _abandon(store, deployment_id: str, status: DeploymentStatus, reason: str) -> None:
    """Stop a deployment that will not be routed and say why (the previous route keeps serving)."""
    store.update_deployment(deployment_id, status=status, error=reason[:2000])
    running_target(deployment_id).drain_and_delete(deployment_id, grace_s=2)
    store.update_deployment(deployment_id, status=status)


def _governing_alias(config, component: str, variant: str | None) -> str | None:
    """The alias whose position this route follows: the component's, or its experiment variant's (if any)."""
    if variant is None:
        return config.components[component].alias
    watched = next(w for w in watched_components(config) if w.name == component)
    return dict(watched.variant_aliases).get(variant)


def _component_for(config, model_name: str) -> str:
    matches = [name for name, c in config.components.items() if c.model == model_name]
    if not matches:
        raise DeployError(f"no component in components.yaml serves model {model_name!r}")
    return matches[0]


def _summary(result: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    return f"# Deployed {result['component']}\n\n| field | value |\n|---|---|\n{rows}\n"
