"""A real gateway process over real HTTP, against a temporary config dir and SQLite database, routed to stubs.

Each test module that needs a gateway starts its own (``running_gateway``) with
only the components it uses, so no module depends on what another one changed.
The stub replicas (``tests/integration/stub_backend.py``) are shared by the
session: tests that count their calls compare before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.api_key_store import ApiKeys
from tests.integration.platform_fixture import wait_until
from tests.integration.stub_backend import free_port

REFRESH_S = 0.1
READY = DeploymentStatus.READY


@dataclass
class Gateway:
    client: httpx.Client  # with the admin key
    store: PlatformStore
    state: Path
    config_dir: Path
    keys: dict[str, str] = field(default_factory=dict)  # "admin" | "invoke" -> key
    proc: subprocess.Popen | None = None  # the gateway process, for tests that signal it

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")


def wait_for(predicate, timeout_s: float = 10, interval_s: float = 0.05, what: str = "condition"):
    """``wait_until`` with the short poll a gateway on loopback deserves."""
    return wait_until(predicate, timeout_s, interval_s, what)


def route(store: PlatformStore, component: str, replica_urls: list[str], version: str = "1",
          variant: str | None = None, ready: bool = True) -> str:
    """Write a deployment of ``component`` with these replicas, routed as the deploy flow would; its id."""
    deployment = f"{component}-v{version}"
    store.add_deployment(deployment, component, f"m-{component}", version, "pyfunc")
    for i, url in enumerate(replica_urls):
        status = READY if ready else DeploymentStatus.STARTING
        store.add_replica(f"{deployment}-{i}", deployment, url, None, status)
    if variant is None:
        store.set_route(component, deployment)
    else:
        store.set_variant_route(component, variant, deployment)
    return deployment


@contextmanager
def running_gateway(state: Path, configs: dict[str, str], seed: Callable[[PlatformStore], None],
                    env: dict[str, str] | None = None, expect_exit: bool = False) -> Iterator[Gateway]:
    """Write ``configs`` (file stem -> YAML), let ``seed`` write routes, start the gateway, yield it, stop it."""
    config_dir = state / "configs"
    config_dir.mkdir(parents=True, exist_ok=True)
    configs = {"platform": f"route_refresh_s: {REFRESH_S}\n", **configs}
    for stem, text in configs.items():
        (config_dir / f"{stem}.yaml").write_text(text)
    store = PlatformStore(f"sqlite:///{state / 'platform.db'}")
    store.create_schema()
    seed(store)
    keys = ApiKeys(store)
    issued = {"admin": keys.create("acme", ["invoke", "admin"])[1], "invoke": keys.create("acme", ["invoke"])[1]}
    port = free_port()
    environment = {**os.environ, "COMPOUNDRY_GATEWAY_WORKERS": "1", **(env or {}), "COMPOUNDRY_CONFIG_DIR": str(config_dir),
                   "COMPOUNDRY_STATE_DIR": str(state), "COMPOUNDRY_GATEWAY_PORT": str(port),
                   "COMPOUNDRY_DATABASE_URL": f"sqlite:///{state / 'platform.db'}"}
    log = open(state / "gateway.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "compoundry.platform.gateway_process"], env=environment,
                            stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False,
                          headers={"Authorization": f"Bearer {issued['admin']}"})
    try:
        wait_for(lambda: proc.poll() is not None or _ready(client), timeout_s=30, what="the gateway")
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.returncode}:\n{(state / 'gateway.log').read_text()}")
        yield Gateway(client, store, state, config_dir, issued, proc)
    finally:
        client.close()
        died = proc.poll()
        if died is None:
            proc.terminate()
        proc.wait(timeout=10)
        log.close()
        store.close()
    if died is not None and not expect_exit:  # say why every later test of the module saw "connection refused"
        raise RuntimeError(f"the gateway died during the tests (exit {died}); its log ends:\n"
                           f"{(state / 'gateway.log').read_text()[-4000:]}")


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False
