"""A small real platform for scaling: MLflow, a gateway with its autoscaler, `bentoml serve` replicas.

No Prefect here (scheduled warm-ups run on the full platform in test_journey.py):
deployments are written to the platform database the way the deploy flow
writes them, with *no* replica, so every replica in these tests is started
by the autoscaler itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx

from compoundry.config.settings import PlatformSettings
from compoundry.store import PlatformStore
from compoundry.store.capacity import CapacityStore
from tests.integration.platform_fixture import platform_env, wait_until

MODEL = "compoundry-sleeper"


@dataclass
class ScalingPlatform:
    settings: PlatformSettings
    store: PlatformStore
    client: httpx.Client
    deployments: dict[str, str]  # component -> deployment id

    @property
    def capacity(self) -> CapacityStore:
        return CapacityStore(self.store)

    def scaling(self) -> dict:
        return self.client.get("/v1/scaling").json()

    def replicas(self, component: str) -> int:
        return self.scaling()["deployments"][self.deployments[component]]["replicas"]

    def ready_urls(self, component: str) -> list[str]:
        return self.client.get("/v1/routes").json()["routes"][component]["replicas"]

    def wait_replicas(self, component: str, count: int, timeout_s: float = 90) -> None:
        wait_until(lambda: self.replicas(component) == count and len(self.ready_urls(component)) == count,
                   timeout_s, 0.25, f"{component} at {count} ready replica(s)")


def write_configs(config_dir: Path, components: str, pipelines: str = "pipelines: {}\n",
                  platform: str = "") -> None:
    (config_dir / "components.yaml").write_text(textwrap.dedent(components))
    (config_dir / "pipelines.yaml").write_text(textwrap.dedent(pipelines))
    (config_dir / "experiments.yaml").write_text("experiments: {}\n")
    (config_dir / "schedules.yaml").write_text("schedules: {}\n")
    (config_dir / "platform.yaml").write_text(textwrap.dedent(platform))


@contextmanager
def scaling_platform(state: Path, components: str, pipelines: str, platform: str, load_s: dict[str, float],
                     services: tuple[str, ...] = ("mlflow",)):
    """Yield a running ScalingPlatform; ``load_s``: component -> model load seconds (one version each).

    ``services``: what the supervisor starts besides the gateway (add ``prefect`` for tests that run flows).
    """
    from bentos.build import build_bento
    from compoundry.platform.supervisor import Supervisor
    from compoundry.registry.model_store import ModelStore
    from compoundry.registry.sleeper_model import log_sleeper

    with platform_env(state) as settings:
        write_configs(settings.config_dir, components, pipelines, platform)
        settings = PlatformSettings.load()
        supervisor = Supervisor(settings)
        gateway = None
        store = PlatformStore(settings.database_url)
        try:
            supervisor.up(only=list(services))
            import mlflow

            while mlflow.active_run() is not None:  # an earlier test may have left this process pointing elsewhere
                mlflow.end_run()
            mlflow.set_tracking_uri(settings.mlflow_url)
            mlflow.set_experiment(experiment_id="0")  # the default experiment every new server has
            store.create_schema()
            tag = build_bento("pyfunc", {"component": "sleeper"}, bentoml_home=settings.bentoml_home)
            deployments = {}
            for component, seconds in load_s.items():
                version = ModelStore(settings.mlflow_url).register(MODEL, log_sleeper(seconds, component)).version
                deployment = f"{component}-v{version}"
                store.add_deployment(deployment, component, MODEL, str(version), "pyfunc")
                store.update_deployment(deployment, bento_tag=tag, status="ready")
                store.set_route(component, deployment)
                deployments[component] = deployment
            gateway = _start_gateway(settings)
            client = httpx.Client(base_url=settings.gateway_url, timeout=120)
            with prefect_pointed_at(settings if "prefect" in services else None):
                yield ScalingPlatform(settings, store, client, deployments)
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(30)
            from compoundry.scaling.targets.local import LocalTarget

            for view in store.deployments():
                LocalTarget(settings, store).stop_deployment(view.id, grace_s=5)
            supervisor.down()


def prefect_pointed_at(settings: PlatformSettings | None):
    """Flows run in this process (and thread) use this platform's Prefect server: Prefect reads its settings
    once per process, so a module that ran flows earlier against another platform would leave them stale."""
    if settings is None:
        return nullcontext()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url})


def _start_gateway(settings: PlatformSettings) -> subprocess.Popen:
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.logs_dir / "gateway-test.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "compoundry.platform.gateway_process"], env=settings.child_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{(settings.logs_dir / 'gateway-test.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{settings.gateway_url}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("gateway not ready after 60 s")
