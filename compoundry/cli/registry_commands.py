"""CLI commands for the Model Store and deployments: register, alias, deploy, deployments, demo."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Optional

import typer

from compoundry.cli.common import console, fail, load_settings, open_store, platform
from compoundry.cli.listing import print_rows
from compoundry.core.deploy_decisions import TAG_COMPONENT, TAG_DEPLOY, DeployRequest
from compoundry.scaling.targets.target_choice import deployment_target
from compoundry.store.capacity import CapacityStore


def register(
    model_name: str = typer.Argument(..., help="Registered model name (a component's `model`)."),
    model_uri: str = typer.Argument(..., help="A logged model URI: runs:/<run>/<path>, models:/m-..., or a path."),
    component: Optional[str] = typer.Option(None, help="Component this version is for (tag compoundry.component)."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Register only (tag compoundry.deploy=false)."),
    tag: list[str] = typer.Option([], help="Extra version tags, KEY=VALUE (repeatable)."),
) -> None:
    """Register a model version in MLflow; the webhook (or the poller) deploys it."""
    from compoundry.registry.model_store import ModelStore

    tags = dict(t.split("=", 1) for t in tag if "=" in t)
    if component:
        tags[TAG_COMPONENT] = component
    if no_deploy:
        tags[TAG_DEPLOY] = "false"
    info = ModelStore(load_settings().mlflow_url).register(model_name, model_uri, tags=tags)
    console.print(f"registered [bold]{info.name}[/] v{info.version} ({info.uri})")


def alias(
    model_name: str = typer.Argument(..., help="Registered model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="champion, challenger, or any alias."),
    version: str = typer.Argument(..., help="Version the alias should point at."),
) -> None:
    """Point an alias at a version. Moving a component's serving alias (champion) redeploys it: a rollback."""
    from mlflow.exceptions import MlflowException

    from compoundry.registry.model_store import ModelStore

    try:
        ModelStore(load_settings().mlflow_url).set_alias(model_name, alias_name, version)
    except MlflowException as exc:
        fail(f"could not point {model_name}@{alias_name} at v{version}: {exc.message}")
    console.print(f"{model_name}@{alias_name} → v{version}")


def deploy(
    model_name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Version to deploy."),
    component: Optional[str] = typer.Option(None, help="Component to deploy it as (default: by model name)."),
    variant: Optional[str] = typer.Option(None, help="Deploy it as this experiment variant's route (A/B, shadow) "
                                                     "instead of the component's serving route."),
) -> None:
    """Start a deploy-model-version flow run by hand (claims the version like a webhook would)."""
    from compoundry.control.prefect_runs import start_deploy_runs

    settings, config, store = platform()
    name = component or next((n for n, c in config.components.items() if c.model == model_name), None)
    if name is None:
        fail(f"no component serves model {model_name!r}; pass --component")
    request = DeployRequest(name, model_name, version, f"manual:{variant}" if variant else "manual", "cli", variant)
    started = asyncio.run(start_deploy_runs(store, [request], settings.prefect_api_url))[0]
    if not started.flow_run_id:
        fail(f"{model_name} v{version} was already deployed by hand once; see `compoundry deployments`")
    console.print(f"started flow run [bold]{started.flow_run_name}[/]: "
                  f"{settings.prefect_ui_url}/runs/flow-run/{started.flow_run_id}")


def deployments(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List deployments, their status, where they run (target, replica URLs) and which one each component
    routes to."""
    store = open_store(load_settings())
    rows = store.deployments()
    targets = {d.id: deployment_target(store, d.id) for d in rows}
    live = CapacityStore(store).live_replicas([d.id for d in rows])  # starting or ready, where they run
    if as_json:
        console.print_json(json.dumps([{**asdict(d), "target": targets[d.id]} for d in rows]))
        return
    columns = ("deployment", "component", "model", "version", "status", "routed", "target", "replicas", "load s")
    print_rows(console, columns, [
        (d.id, d.component, d.model_name, d.model_version, d.status,
         (f"variant {d.variant}" if d.variant else "yes") if d.routed else "", targets[d.id],
         ", ".join(r.url for r in live[d.id]), f"{d.load_time_s:.1f}" if d.load_time_s else "")
        for d in rows])


def demo(timeout: float = typer.Option(900, help="Seconds to wait for the deployments.")) -> None:
    """Register the demo models, wait for their deploys, ask the support-agent pipeline."""
    from compoundry.cli.demo import (
        run_demo,  # MLflow, transformers: only when the demo runs
    )

    try:
        run_demo(load_settings(), console, timeout_s=timeout)
    except (TimeoutError, RuntimeError) as exc:
        fail(f"demo failed: {exc}")


def register_commands(app: typer.Typer) -> None:
    for command in (register, alias, deploy, deployments, demo):
        app.command()(command)
