"""`deploy-model-version`: registry version → running, routed replica.

resolve → check signature → build Bento → start replica → wait ready →
smoke prediction on the new replica → switch route (blue/green) → drain and
stop the old deployment → set the alias → emit an event. A failure at any step
fails the flow run with a readable reason and leaves the previous route
serving: the route switch is the last thing that can fail before traffic moves.
"""

from __future__ import annotations

import tempfile
import time
import uuid
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
from compoundry.flows.context import local_target, platform_context, store_for
from compoundry.gates.evaluation import (
    EvaluationSuiteError,
    check_evaluation_dataset,
    read_dataset,
)
from compoundry.gates.prefect_artifacts import publish_gate
from compoundry.registry.demo_models import smoke_input
from compoundry.registry.model_store import ModelStore, ModelVersionInfo
from compoundry.scaling.targets.local import Launch, ReplicaFailed, ReplicaHandle
from compoundry.store import DeploymentStatus
from compoundry.store.capacity import CapacityStore
from compoundry.store.refresh import propagation_s


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
def start_replicas(deployment_id: str, bento_tag: str, model_uri: str, engine_options: dict,
                   cold_start_s: float, count: int = 1) -> tuple[list[ReplicaHandle], float]:
    """Start ``count`` replicas in parallel and wait until all are ready (blue/green: as many as blue runs)."""
    target = local_target()
    launches = [Launch(deployment_id, bento_tag, model_uri, engine_options, cold_start_s, i) for i in range(count)]
    started = target.start_all(launches)
    failed = [s for s in started if not s.ok]
    if failed:
        for ok in (s for s in started if s.ok):
            target.stop_replica(ok.handle.id, ok.handle.pid, grace_s=2)
        raise ReplicaFailed(failed[0].error)
    return [s.handle for s in started], max(s.ready_s for s in started)


def replicas_to_start(store, component: str, variant: str | None, scaling) -> int:
    """As many replicas as the deployment being replaced runs now, within the component's bounds."""
    current = store.routed_deployment(component) if variant is None else next(
        (d for d in store.deployments(component) if d.variant == variant), None)
    live = len(CapacityStore(store).live_replicas([current.id])[current.id]) if current else 0
    return min(max(1, live, scaling.min_replicas), scaling.max_replicas)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, task_run_name="smoke prediction on {replica.id}")
def smoke_prediction(replica: ReplicaHandle, inputs: dict, timeout_s: float) -> dict:
    response = httpx.post(f"{replica.url}/invoke", json={"inputs": inputs}, timeout=timeout_s)
    if response.status_code != 200:
        raise DeployError(f"smoke prediction failed with HTTP {response.status_code}: {response.text[:500]}")
    info = httpx.post(f"{replica.url}/info", json={}, timeout=timeout_s).json()
    return {"output_preview": str(response.json())[:300], "model_load_s": info.get("model_load_s")}


@task(cache_policy=NO_CACHE, task_run_name="switch route of {component}")
def switch_route(database_url: str, component: str, deployment_id: str, variant: str | None = None) -> str | None:
    """Point the component's serving route (or, with ``variant``, that experiment variant's route) here."""
    store = store_for(database_url)
    store.update_deployment(deployment_id, status=DeploymentStatus.READY)
    if variant:
        return store.set_variant_route(component, variant, deployment_id)
    return store.set_route(component, deployment_id)


@task(cache_policy=NO_CACHE, task_run_name="drain {deployment_id}")
def drain_old(deployment_id: str) -> None:
    """Give every gateway time to read the new route, then stop the old replicas gracefully."""
    target = local_target()
    time.sleep(propagation_s(target.settings.config.route_refresh_s))
    target.stop_deployment(deployment_id, grace_s=30)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2, task_run_name="set alias {alias} → v{version}")
def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    ModelStore(tracking_uri).set_alias(model_name, alias, version)


@flow(name="deploy-model-version", flow_run_name="deploy {model_name} v{version}", log_prints=True)
def deploy_model_version(model_name: str, version: str, component: str | None = None,
                         source: str = "manual", set_serving_alias: bool = True, variant: str | None = None) -> dict:
    """Deploy one registered model version as the serving deployment of its component, or with ``variant``
    as the route of that experiment variant (the serving route and the MLflow aliases stay as they are)."""
    logger = get_run_logger()
    ctx = platform_context()
    settings, config, store = ctx.settings, ctx.config, ctx.store
    component = component or _component_for(config, model_name)
    comp = config.components[component]
    started = time.monotonic()

    info = resolve_version(settings.mlflow_url, model_name, str(version))
    signature = check_model(settings.mlflow_url, info, comp.engine)
    gate = evaluation_gate(settings.mlflow_url, info, component, comp.evaluation)
    labels = {"component": component, "model": model_name, "version": str(version)}
    bento_tag = build(comp.engine, labels, str(settings.bentoml_home))

    deployment_id = f"{component}-{variant + '-' if variant else ''}v{version}-{uuid.uuid4().hex[:6]}"
    store.add_deployment(deployment_id, component, model_name, str(version), comp.engine,
                         flow_run_id=str(flow_run.get_id() or ""))
    store.update_deployment(deployment_id, bento_tag=bento_tag)
    try:
        count = replicas_to_start(store, component, variant, comp.scaling)
        replicas, waited = start_replicas(deployment_id, bento_tag, info.uri, comp.engine_options,
                                          comp.timeouts.cold_start_s, count)
        replica = replicas[0]
        smoke = smoke_prediction(replica, smoke_input(comp.engine, model_name), comp.timeouts.request_s * 3)
        store.update_deployment(deployment_id, load_time_s=smoke["model_load_s"])
        previous = switch_route(settings.database_url, component, deployment_id, variant)
    except Exception as exc:
        store.update_deployment(deployment_id, status=DeploymentStatus.FAILED, error=str(exc)[:2000])
        local_target().stop_deployment(deployment_id, grace_s=2)
        store.update_deployment(deployment_id, status=DeploymentStatus.FAILED)
        logger.error("deploy of %s v%s failed; the previous route keeps serving: %s", model_name, version, exc)
        raise
    if previous:
        drain_old(previous)
    if set_serving_alias and not variant:
        set_alias(settings.mlflow_url, model_name, comp.alias, str(version))

    result = {
        "component": component, "variant": variant, "deployment": deployment_id, "model": model_name,
        "version": str(version),
        "bento": bento_tag, "replica": replica.url, "replicas": len(replicas), "replica_ready_s": round(waited, 2),
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
                version, replica.url)
    return result


def _component_for(config, model_name: str) -> str:
    matches = [name for name, c in config.components.items() if c.model == model_name]
    if not matches:
        raise DeployError(f"no component in components.yaml serves model {model_name!r}")
    return matches[0]


def _summary(result: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items())
    return f"# Deployed {result['component']}\n\n| field | value |\n|---|---|\n{rows}\n"
