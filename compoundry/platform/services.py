"""What the embedded platform runs: one declarative `ServiceSpec` per process.

The supervisor knows nothing service-specific; everything it needs (command,
environment, how to tell the service is healthy, what it waits for) is here,
derived from `PlatformSettings` so tests can run a second platform on other
ports and another state folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from compoundry.config.base import REPO_ROOT
from compoundry.config.settings import PlatformSettings
from compoundry.host.processes import process_age_s

#: The venv's bin folder: `mlflow`/`prefect` must be the ones installed beside this interpreter.
BIN_DIR = Path(sys.executable).parent
#: Prefect deployment that the flow server must have registered before the platform counts as up.
DEPLOY_DEPLOYMENT = "deploy-model-version"
FLOWS_MIN_AGE_S = 3.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised process. `health` (given the pid) overrides the plain `GET health_url` check."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    health_url: str | None
    start_timeout_s: float
    depends_on: tuple[str, ...] = ()
    health: Callable[[int | None], bool] | None = field(default=None, compare=False)
    title: str = ""
    url: str | None = None  # what a person opens; shown by `compoundry up/status`
    cwd: Path = REPO_ROOT
    #: secrets resolved only when the process starts, so `status`/`down` create no files
    spawn_env: Callable[[], dict[str, str]] | None = field(default=None, compare=False)

    def start_env(self) -> dict[str, str]:
        return {**self.env, **(self.spawn_env() if self.spawn_env else {})}

    def is_healthy(self, pid: int | None) -> bool:
        if self.health is not None:
            return self.health(pid)
        return http_ok(self.health_url) if self.health_url else False


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def prefect_has_deployment(api_url: str, name: str = DEPLOY_DEPLOYMENT) -> bool:
    body = {"deployments": {"name": {"any_": [name]}}, "limit": 1}
    try:
        response = httpx.post(f"{api_url}/deployments/filter", json=body, timeout=5)
        return response.status_code == 200 and bool(response.json())
    except (httpx.HTTPError, ValueError):
        return False


def flows_healthy(settings: PlatformSettings, pid: int | None) -> bool:
    """`serve()` has no HTTP probe: alive a few seconds (imports done) and its deployment registered."""
    return process_age_s(pid) >= FLOWS_MIN_AGE_S and prefect_has_deployment(settings.prefect_api_url)


def _base_env(settings: PlatformSettings) -> dict[str, str]:
    env = settings.child_env()
    env.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")  # no network here; no stalls on telemetry
    return env


#: MLflow caches its webhook list this long: a webhook created, enabled or disabled takes effect after it.
MLFLOW_WEBHOOK_CACHE_TTL_S = 5


def mlflow_spec(settings: PlatformSettings) -> ServiceSpec:
    root = settings.mlflow_dir
    env = _base_env(settings)
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="https,http",  # the control API is plain http on localhost
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        # the GenAI job runner forks 7 huey consumers; webhooks do not need it (they use a thread pool)
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        # the server caches its webhook list (60 s by default); a webhook created or
        # re-enabled by `up` or an operator should take effect within seconds
        MLFLOW_WEBHOOK_CACHE_TTL=str(MLFLOW_WEBHOOK_CACHE_TTL_S),
    )
    argv = [
        str(BIN_DIR / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",  # webhooks need a SQL store
        "--artifacts-destination", str(root / "artifacts"),
        "--host", settings.bind_host, "--port", str(settings.mlflow_port),
        "--workers", "1",  # RAM: one worker is plenty for a registry on a laptop
    ]
    argv += _mlflow_allowed_hosts(settings)
    return ServiceSpec(
        name="mlflow", argv=tuple(argv), env=env, health_url=f"{settings.mlflow_url}/health",
        start_timeout_s=120, title="MLflow UI", url=settings.mlflow_url,
        # a stable key keeps stored webhook secrets readable after restarts; created on first start only
        spawn_env=lambda: {"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": settings.mlflow_fernet_key},
    )


def _mlflow_allowed_hosts(settings: PlatformSettings) -> list[str]:
    """MLflow's host-header check allows localhost and private IPs; add the advertised host if it is a name."""
    host = httpx.URL(settings.mlflow_url).host
    if host in _LOOPBACK:
        return []
    port = settings.mlflow_port
    hosts = [host, f"{host}:{port}", "localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}"]
    return ["--allowed-hosts", ",".join(hosts)]


def prefect_spec(settings: PlatformSettings) -> ServiceSpec:
    env = _base_env(settings)
    env.update(
        PREFECT_HOME=str(settings.prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST=settings.bind_host,
        PREFECT_SERVER_API_PORT=str(settings.prefect_port),
        PREFECT_SERVER_UI_ENABLED="true",
    )
    argv = (str(BIN_DIR / "prefect"), "server", "start", "--host", settings.bind_host,
            "--port", str(settings.prefect_port))
    return ServiceSpec(
        name="prefect", argv=argv, env=env, health_url=f"{settings.prefect_api_url}/health",
        start_timeout_s=120, title="Prefect UI", url=settings.prefect_ui_url,
    )


def flows_spec(settings: PlatformSettings) -> ServiceSpec:
    return ServiceSpec(
        name="flows", argv=(sys.executable, "-m", "compoundry.flows.serve"), env=_base_env(settings), health_url=None,
        start_timeout_s=120, depends_on=("mlflow", "prefect"),
        health=lambda pid: flows_healthy(settings, pid), title="Flow server",
        url=f"{settings.prefect_ui_url}/deployments",
    )


def gateway_spec(settings: PlatformSettings) -> ServiceSpec:
    return ServiceSpec(
        name="gateway", argv=(sys.executable, "-m", "compoundry.platform.gateway_process"), env=_base_env(settings),
        health_url=f"{settings.gateway_url}/healthz", start_timeout_s=90, depends_on=("mlflow", "prefect"),
        title="Prediction Service", url=f"{settings.gateway_url}/docs",
    )


def platform_services(settings: PlatformSettings) -> dict[str, ServiceSpec]:
    """All services by name, in the order people read them."""
    specs = (mlflow_spec(settings), prefect_spec(settings), flows_spec(settings), gateway_spec(settings))
    return {spec.name: spec for spec in specs}
