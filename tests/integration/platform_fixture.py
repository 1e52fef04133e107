"""One real embedded platform (MLflow, Prefect, flow server, gateway) per test session.

Started with the same `Supervisor` that `compoundry up` uses, on free ports
and a temporary state folder, so a developer's running platform is untouched.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from compoundry.config.settings import PlatformSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(size: int = 40) -> tuple[int, int]:
    """A block of ports above the ephemeral range's usual neighbours, checked free."""
    base = 20000 + (os.getpid() % 400) * 50
    for start in range(base, 60000, size):
        if all(_free(p) for p in range(start, start + size)):
            return start, start + size - 1
    raise RuntimeError("no free port block")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@contextmanager
def platform_env(state_dir: Path):
    """Environment of a test platform in ``state_dir``, with its own copy of configs/ (tests may edit it)."""
    import shutil

    start, end = free_port_range()
    config_dir = state_dir / "configs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "configs", config_dir, dirs_exist_ok=True)
    overrides = {
        "COMPOUNDRY_CONFIG_DIR": str(config_dir),
        "COMPOUNDRY_STATE_DIR": str(state_dir),
        "COMPOUNDRY_MLFLOW_PORT": str(free_port()),
        "COMPOUNDRY_PREFECT_PORT": str(free_port()),
        "COMPOUNDRY_GATEWAY_PORT": str(free_port()),
        "COMPOUNDRY_REPLICA_PORTS": f"{start}-{end}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COMPOUNDRY_API_KEY": "",  # the platform's own admin key, not a developer's
        "COMPOUNDRY_GATEWAY_WORKERS": "1",  # one process a test can signal; test_gateway_workers.py runs several
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    settings = PlatformSettings.load()
    # this process talks to the test platform, not a developer's
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        saved.setdefault(key, os.environ.get(key))
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_url
    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ["PREFECT_HOME"] = str(settings.prefect_home)
    os.environ["BENTOML_HOME"] = str(settings.bentoml_home)
    try:
        yield settings
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_until(predicate, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def gateway(settings: PlatformSettings) -> httpx.Client:
    return httpx.Client(base_url=settings.gateway_url, timeout=120, headers=settings.auth_headers())


class PrefectAPI:
    """Prefect's REST API for assertions, retrying 503 as Prefect's own client does: its SQLite database
    answers "busy" (503, retryable) while the scheduler or a flow run writes."""

    def __init__(self, api_url: str, attempts: int = 20, backoff_s: float = 0.5):
        self.api_url, self.attempts, self.backoff_s = api_url, attempts, backoff_s

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self._request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self._request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> httpx.Response:
        return self._request("DELETE", path, **kwargs)

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        kwargs.setdefault("timeout", 30)
        for _ in range(self.attempts - 1):
            response = httpx.request(method, f"{self.api_url}{path}", **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(self.backoff_s)
        return httpx.request(method, f"{self.api_url}{path}", **kwargs)
