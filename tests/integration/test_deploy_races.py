"""The last operator command wins: alias races and concurrent registrations, on a real MLflow, Prefect and
real Bento replicas.

Each deploy is planned and claimed exactly as the control API and the poller do (``on_alias_set`` /
``on_version_created`` → ``claim_deploy`` → the claim's intent), then the real ``deploy-model-version``
flow runs in a thread of this process (two at a time), as two flow-server runs would. What is not
exercised here is the webhook's HTTP hop, which test_journey.py covers.
"""

from __future__ import annotations

import threading
import time

import pytest

from compoundry.core.deploy_decisions import (
    on_alias_set,
    on_version_created,
    watched_components,
)
from compoundry.registry.model_store import ModelStore
from compoundry.registry.sleeper_model import log_sleeper
from tests.integration.platform_fixture import wait_until
from tests.integration.scaling_fixture import (
    MODEL,
    prefect_pointed_at,
    scaling_platform,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = """
components:
  ranker:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {min_replicas: 1, max_replicas: 1, idle_window_s: 600}
    timeouts: {request_s: 30, cold_start_s: 120}
"""
PLATFORM = "route_refresh_s: 0.2\nregistry: {webhooks: false}\ngateway: {auth_required: false}\n"


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    with scaling_platform(tmp_path_factory.mktemp("races"), COMPONENTS, "pipelines: {}\n", PLATFORM,
                          {"ranker": 0.0}, services=("mlflow", "prefect")) as platform:
        models = ModelStore(platform.settings.mlflow_url)
        models.set_alias(MODEL, "champion", "1")
        for version in ("2", "3", "4", "5"):
            assert models.register(MODEL, log_sleeper(0.0, f"ranker-v{version}")).version == version
        platform.wait_replicas("ranker", 1, timeout_s=120)
        yield platform


class Deploys:
    """Deploy flows started the way the control API starts them, each in its own thread."""

    def __init__(self, platform):
        from compoundry.config.loader import load_config

        self.platform = platform
        self.watched = watched_components(load_config(platform.settings.config_dir))
        self.results: dict[str, dict] = {}
        self.threads: list[threading.Thread] = []

    def routed(self) -> dict[str, str]:
        return {c: r.model_version for c, r in self.platform.store.routes().items()}

    def alias_moved(self, version: str) -> int:
        ModelStore(self.platform.settings.mlflow_url).set_alias(MODEL, "champion", version)
        return self._start(on_alias_set(MODEL, "champion", version, self.watched, self.routed(), "cli"))

    def registered(self, version: str) -> int:
        return self._start(on_version_created(MODEL, version, {}, self.watched, "webhook"))

    def _start(self, requests) -> int:
        from compoundry.flows.deploy import deploy_model_version

        for request in requests:
            intent = self.platform.store.claim_deploy(request.model_name, request.version, request.reason,
                                                      request.source, request.component)
            assert intent

            def run(request=request, intent=intent):
                with prefect_pointed_at(self.platform.settings):  # a thread starts from Prefect's root settings
                    self.results[request.version] = deploy_model_version(
                        request.model_name, request.version, component=request.component, source=request.source,
                        intent=intent, trigger=request.parameters["trigger"])

            thread = threading.Thread(target=run, name=f"deploy-v{request.version}")
            thread.start()
            self.threads.append(thread)
        return len(requests)

    def finish(self, timeout_s: float = 300) -> dict[str, dict]:
        for thread in self.threads:
            thread.join(timeout_s)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        return self.results

    def final(self) -> tuple[str, str]:
        return (self.routed()["ranker"],
                ModelStore(self.platform.settings.mlflow_url).by_alias(MODEL, "champion").version)


def test_an_alias_moved_back_to_the_routed_version_stops_the_deploy_in_flight(ranker):
    """`alias champion 2`, then `alias champion 1` 0.3 s later (v1 is routed: the second asks no deploy)."""
    deploys = Deploys(ranker)
    assert deploys.final() == ("1", "1")
    assert deploys.alias_moved("2") == 1
    time.sleep(0.3)
    assert deploys.alias_moved("1") == 0
    results = deploys.finish()
    assert "alias moved on to v1" in results["2"]["superseded"]
    assert deploys.final() == ("1", "1")
    statuses = {d.model_version: d.status for d in ranker.store.deployments("ranker")}
    assert statuses.get("2") in (None, "superseded")  # stopped before (none) or after it started replicas


def test_two_alias_moves_in_a_row_end_on_the_second(ranker):
    deploys = Deploys(ranker)
    assert deploys.alias_moved("2") == 1
    time.sleep(0.3)
    assert deploys.alias_moved("3") == 1
    results = deploys.finish()
    assert results["2"].get("superseded") and not results["3"].get("superseded")
    assert deploys.final() == ("3", "3")


def test_concurrent_registrations_end_on_the_newer_version_even_when_claimed_last(ranker):
    """v5's registration is claimed first and v4's second (a late webhook): v5 is served, alias and route."""
    deploys = Deploys(ranker)
    assert deploys.registered("5") == 1
    assert deploys.registered("4") == 1
    results = deploys.finish()
    assert not results["5"].get("superseded"), results["5"]
    # v4 either found v5 routed (superseded) or routed first and was replaced by v5: never the other way
    assert results["4"].get("superseded") or results["4"]["deployment"] != deploys.platform.store.routes()[
        "ranker"].deployment_id
    assert deploys.final() == ("5", "5")
    wait_until(lambda: len(ranker.ready_urls("ranker")) == 1, 60, 0.25, "the gateway to route v5's replica")
    assert ranker.client.post("/v1/components/ranker", json={"inputs": {"data": [{"delay_ms": 1, "text": "q"}]}}
                              ).json()["model_version"] == "5"
