"""Benchmark: time from `register model version` to the first served request.

For each demo component, side by side in one run on this machine:
- baseline: the bare floor — build the same Bento and start `bentoml serve` by hand, until `/readyz`;
- compoundry: register the version in MLflow → webhook → Prefect `deploy-model-version` → routed,
  then the first request through the Prediction Service.
The ratio compoundry / baseline is the cost of the platform's deploy path (validation, smoke
prediction, route switch, Prefect bookkeeping) over starting the model by hand.

Writes bench/results/registration_to_serving.json and the table in docs/benchmarks.md.
Run: `make bench` (or `.venv/bin/python bench/registration_to_serving.py [--components a,b]`).
"""

from __future__ import annotations

import argparse
import json
import platform as host
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compoundry.registry.model_store import ModelStore  # noqa: E402
from compoundry.store import PlatformStore  # noqa: E402
from tests.integration.platform_fixture import free_port, platform_env, wait_until  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "registration_to_serving.json"
DOC = ROOT / "docs" / "benchmarks.md"
console = Console()


def bare_start(settings, engine: str, model_uri: str, labels: dict) -> dict:
    """The floor: build the Bento and start one replica by hand, no platform involved."""
    from bentos.build import build_bento, serve_command

    t0 = time.monotonic()
    tag = build_bento(engine, labels, bentoml_home=settings.bentoml_home)
    built = time.monotonic() - t0
    port = free_port()
    env = settings.child_env() | {"COMPOUNDRY_MODEL_URI": model_uri}
    t1 = time.monotonic()
    proc = subprocess.Popen(serve_command(tag, port, "127.0.0.1"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), 300, 0.2, "bare replica")
        ready = time.monotonic() - t1
        info = httpx.post(f"http://127.0.0.1:{port}/info", json={}, timeout=10).json()
    finally:
        from compoundry.scaling.targets.local import stop_process_group

        stop_process_group(proc.pid, 10)
    return {"build_s": built, "ready_s": ready, "total_s": built + ready, "model_load_s": info.get("model_load_s")}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def through_platform(settings, component: str, model_name: str, model_uri: str, smoke: dict) -> dict:
    store = PlatformStore(settings.database_url)
    t0 = time.monotonic()
    version = ModelStore(settings.mlflow_url).register(model_name, model_uri).version
    wait_until(lambda: (r := store.routes().get(component)) and r.model_version == version and r.replicas,
               600, 0.2, f"{component} v{version} routed")
    routed = time.monotonic() - t0
    # the gateway picks a new route up within `route_refresh_s`; until then it answers 503
    wait_until(lambda: _served(settings, component, smoke, version), 60, 0.05, f"{component} v{version} served")
    served = time.monotonic() - t0
    deployment = store.routed_deployment(component)
    return {"version": version, "routed_s": routed, "first_response_s": served,
            "model_load_s": deployment.load_time_s if deployment else None}


def _served(settings, component: str, smoke: dict, version: str) -> bool:
    response = httpx.post(f"{settings.gateway_url}/v1/components/{component}", json={"inputs": smoke},
                          headers=settings.auth_headers(), timeout=120)
    if response.status_code == 503:
        return False
    response.raise_for_status()
    return response.json()["model_version"] == version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", default="", help="comma-separated subset of the demo components")
    args = parser.parse_args()

    import mlflow

    from compoundry.cli.demo import quiet_library_output
    from compoundry.config.loader import load_config
    from compoundry.platform.supervisor import Supervisor
    from compoundry.registry.demo_models import DEMO_MODELS, smoke_input

    quiet_library_output()
    with tempfile.TemporaryDirectory(prefix="compoundry-bench-") as state, platform_env(Path(state)) as settings:
        supervisor = Supervisor(settings)
        console.print("starting the embedded platform …")
        supervisor.up()
        try:
            config = load_config(settings.config_dir)
            mlflow.set_tracking_uri(settings.mlflow_url)
            mlflow.set_experiment("bench")
            wanted = [c for c in args.components.split(",") if c] or list(DEMO_MODELS)
            rows = []
            for component in wanted:
                model_name, log_model = DEMO_MODELS[component]
                engine = config.components[component].engine
                with mlflow.start_run(run_name=f"bench-{component}"):
                    uri = log_model()
                console.print(f"[bold]{component}[/]: baseline (bare bentoml serve) …")
                bare = bare_start(settings, engine, uri, {"bench": component})
                console.print(f"[bold]{component}[/]: register → serving through compoundry …")
                plat = through_platform(settings, component, model_name, uri, smoke_input(engine, model_name))
                rows.append({"component": component, "engine": engine, "baseline": bare, "compoundry": plat,
                             "ratio": plat["first_response_s"] / bare["total_s"]})
        finally:
            supervisor.down()
    result = {"benchmark": "registration_to_serving", "machine": f"{host.machine()} {host.node()}",
              "python": sys.version.split()[0], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "make bench", "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    _print(rows)
    _write_doc(result)


def _print(rows) -> None:
    table = Table("component", "baseline build+ready s", "compoundry register→first response s", "ratio",
                  "model load s")
    for r in rows:
        table.add_row(r["component"], f"{r['baseline']['total_s']:.1f}", f"{r['compoundry']['first_response_s']:.1f}",
                      f"{r['ratio']:.2f}×", f"{(r['compoundry']['model_load_s'] or 0):.2f}")
    console.print(table)


EXPLANATION = """\
The baseline is the floor: the same Bento built and started by hand. compoundry's
extra time is its deploy path, each step visible as a task run of the
`deploy-model-version` flow in the Prefect UI: the webhook delivery and the flow
run's own process start (a fresh Python importing MLflow, Prefect and BentoML),
resolving the version and checking its signature (an artifact download), the
smoke prediction on the new replica, and the route switch. The gateway answers
the first request within its route refresh interval (0.5 s) of the switch.
"""


def _write_doc(result) -> None:
    lines = [
        "| component | engine | baseline: build + bare `bentoml serve` → ready (s) | compoundry: register → routed (s) "
        "| compoundry: register → first response (s) | ratio | model load in replica (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        b, c = r["baseline"], r["compoundry"]
        lines.append(f"| {r['component']} | {r['engine']} | {b['total_s']:.1f} | {c['routed_s']:.1f} | "
                     f"{c['first_response_s']:.1f} | {r['ratio']:.2f}× | {(c['model_load_s'] or 0):.2f} |")
    section = (f"## Registration to serving\n\n`{result['command']}` — {result['at']}, {result['machine']}, "
               f"Python {result['python']}. Raw: `bench/results/registration_to_serving.json`.\n\n"
               + "\n".join(lines) + "\n\n" + EXPLANATION)
    _replace_section(DOC, "## Registration to serving", section)


def _replace_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\nNumbers come from `bench/`; each table says the command.\n\n"
    if heading in text:
        before, rest = text.split(heading, 1)
        after = rest.split("\n## ", 1)
        text = before + section + ("\n## " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
