"""The main journey, end to end, for `make demo`.

Register the demo models in MLflow (which fires the webhook that makes Prefect
deploy each one), watch the deployments come up, then send support-agent
requests through the Prediction Service and print answers with step timings.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from compoundry.config.settings import PlatformSettings
from compoundry.registry.model_store import ModelStore
from compoundry.store import PlatformStore

DEMO_QUESTIONS = [
    "Where is my order 1042? It has not arrived yet.",
    "I was charged twice on my last invoice, can I get a refund?",
    "The app crashes when I try to log in on my phone.",
]


def register_demo_models(settings: PlatformSettings, components: list[str] | None = None,
                         skip_routed: bool = True) -> dict[str, str]:
    """Log and register each demo model not yet served; returns component → version."""
    import mlflow

    from compoundry.registry.demo_models import DEMO_MODELS

    mlflow.set_tracking_uri(settings.mlflow_url)
    mlflow.set_experiment("compoundry-demo-models")
    routed = PlatformStore(settings.database_url).routes() if skip_routed else {}
    models = ModelStore(settings.mlflow_url)
    registered = {}
    for component, (model_name, log_model) in DEMO_MODELS.items():
        if components and component not in components or component in routed:
            continue
        with mlflow.start_run(run_name=f"demo-{component}"):
            uri = log_model()
        info = models.register(model_name, uri, tags={"compoundry.component": component, "compoundry.cli.demo": "true"})
        registered[component] = info.version
    return registered


class DeployFailed(RuntimeError):
    """A demo component's deploy flow failed; waiting longer would not help."""


def _failed_without_retry(deployments, pending: set[str]) -> list:
    """Failed deployments of pending components that have no newer deploy in progress."""
    latest = {}
    for d in deployments:
        if d.component in pending:
            latest[d.component] = d  # deployments() lists oldest first
    return [d for d in latest.values() if d.status == "failed"]


def wait_for_routes(settings: PlatformSettings, components: list[str], timeout_s: float,
                    console: Console | None = None) -> dict[str, str]:
    """Poll the platform database until every component has a ready route."""
    store = PlatformStore(settings.database_url)
    store.create_schema()
    deadline = time.monotonic() + timeout_s
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        tasks = {c: progress.add_task(f"deploying {c}", total=1) for c in components}
        done: dict[str, str] = {}
        while time.monotonic() < deadline and len(done) < len(components):
            routes = store.routes()
            for c in components:
                if c not in done and c in routes and routes[c].replicas:
                    done[c] = routes[c].model_version
                    progress.update(tasks[c], completed=1, description=f"{c} v{done[c]} serving")
            failed = _failed_without_retry(store.deployments(), set(components) - set(done))
            if failed:
                raise DeployFailed("; ".join(f"{d.component} v{d.model_version}: {(d.error or '')[:300]}"
                                             for d in failed) + " (see the flow run in the Prefect UI)")
            time.sleep(1)
    missing = sorted(set(components) - set(done))
    if missing:
        raise TimeoutError(f"not serving after {timeout_s:.0f}s: {', '.join(missing)} "
                           f"(see the deploy-model-version runs in the Prefect UI)")
    return done


def ask(settings: PlatformSettings, question: str, session: str = "demo") -> dict:
    response = httpx.post(f"{settings.gateway_url}/v1/pipelines/support-agent",
                          json={"inputs": {"question": question}},
                          headers={"X-Session-Id": session, **settings.auth_headers()}, timeout=120)
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"support-agent answered {response.status_code}: {body}")
    return body


def print_answer(console: Console, question: str, body: dict) -> None:
    console.rule(f"[bold]{question}")
    console.print(f"[bold green]intent:[/] {body['output'].get('intent')}")
    console.print(f"[bold green]answer:[/] {body['output'].get('answer')!r}")
    table = Table("step", "component", "status", "start ms", "duration ms", "critical")
    for name, step in sorted(body["steps"].items(), key=lambda kv: kv[1].get("started_ms") or 0):
        table.add_row(name, step.get("component", ""), step["status"], _ms(step.get("started_ms")),
                      _ms(step.get("duration_ms")), "●" if name in body["critical_path"] else "")
    console.print(table)
    console.print(f"total {body['total_ms']:.1f} ms · critical path {' → '.join(body['critical_path'])} "
                  f"= {body['critical_path_ms']:.1f} ms · overhead {body['overhead_ms']:.2f} ms")


def _ms(value) -> str:
    return "" if value is None else f"{value:.1f}"


def quiet_library_output() -> None:
    """Keep the demo's screen to its own progress: no MLflow/transformers logs, bars or run URLs."""
    os.environ.update(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    # after the imports above, which install warning filters of their own
    warnings.filterwarnings("ignore", message=r".*MLflow doesn.t validate")  # pyfunc type-hint notice


def run_demo(settings: PlatformSettings, console: Console, timeout_s: float = 900) -> None:
    from compoundry.config.loader import load_config

    quiet_library_output()

    config = load_config(settings.config_dir)
    components = sorted({s.component for s in config.pipelines["support-agent"].steps.values()})
    console.print("[bold]1. Registering the demo models in MLflow[/] (each registration fires a webhook)")
    with console.status("logging and registering the models..."):
        registered = register_demo_models(settings)
    for component, version in registered.items():
        console.print(f"   registered {component} v{version}")
    console.print("[bold]2. Waiting for Prefect's deploy-model-version runs[/]")
    started = time.monotonic()
    wait_for_routes(settings, components, timeout_s, console)
    console.print(f"   all components serving after {time.monotonic() - started:.0f}s")
    console.print("[bold]3. Asking the support-agent pipeline[/]")
    for i, question in enumerate(DEMO_QUESTIONS):
        print_answer(console, question, ask(settings, question, session=f"demo-{i}"))
    console.print("\n[dim]The tiny CPU LLM's answers are not meaningful; see the README to register a real model.[/]")
    console.print(f"MLflow UI:   {settings.mlflow_url}\nPrefect UI:  {settings.prefect_ui_url}\n"
                  f"Prediction Service docs: {settings.gateway_url}/docs\n"
                  f"Your admin API key is in {settings.admin_key_file} (send it as `Authorization: Bearer <key>`;\n"
                  "  `compoundry keys create --tenant NAME` makes keys for applications).\n"
                  "The platform stays up; `make down` (or `compoundry down`) stops it.")
