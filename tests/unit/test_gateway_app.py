"""The gateway app built in-process from its parts, with a fake replica client: no server, no replica process.

What the composition root promises: every part is passed at construction
(nothing is assigned later), and the lifespan only starts and stops them.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from compoundry.config.loader import load_config
from compoundry.config.settings import PlatformSettings
from compoundry.core.routing.route_view import ReplicaView, RouteView
from compoundry.gateway.app import GatewayParts, create_app
from compoundry.gateway.errors import ComponentFailed
from compoundry.store import PlatformStore
from compoundry.store.refresh import RouteTable

COMPONENTS = """
components:
  embed: {model: m-embed, engine: sentence-transformers}
  classify: {model: m-classify, engine: pyfunc}
"""
PIPELINES = """
pipelines:
  both:
    steps:
      embed: {component: embed, inputs: {texts: ["${request.q}"]}}
      classify: {component: classify, inputs: {data: "${request.q}"}}
    output: {dim: "${steps.embed.dim}", label: "${steps.classify.predictions[0]}"}
"""


class FakeReplicas:
    """The replica client's interface, answering from memory and remembering every call."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []
        self.closed = False
        self.during_call = lambda: None  # what a test wants to look at while a call is in flight
        self.seen: list[object] = []

    async def invoke(self, url: str, inputs, timeout: float, component: str):
        self.calls.append((url, inputs))
        self.seen.append(self.during_call())
        if inputs.get("data") == "boom":
            raise ComponentFailed("the model crashed", {"component": component})
        if component == "embed":
            return {"embeddings": [[0.1, 0.2]], "dim": 2}
        return {"predictions": ["refund"]}

    async def post(self, url, path, body, timeout, component):
        raise AssertionError("not used here")

    def stream(self, url, path, body, timeout, component):
        raise AssertionError("not used here")

    async def aclose(self) -> None:
        self.closed = True


def _route(component: str) -> RouteView:
    return RouteView(component, f"{component}-v1", f"m-{component}", "1", "pyfunc",
                     (ReplicaView(f"{component}-v1-r0", f"http://{component}.fake:1"),))


@pytest.fixture
def parts(tmp_path):
    (tmp_path / "components.yaml").write_text(COMPONENTS)
    (tmp_path / "pipelines.yaml").write_text(PIPELINES)
    (tmp_path / "platform.yaml").write_text("gateway: {auth_required: false}\nautoscaler: {enabled: false}\n")
    settings = PlatformSettings.load(tmp_path)
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    routes = RouteTable(lambda: {name: _route(name) for name in ("embed", "classify")})
    yield GatewayParts.build(settings, load_config(tmp_path), store, routes=routes, replica_client=FakeReplicas())
    store.close()


def test_a_pipeline_runs_through_the_fake_replicas(parts):
    with TestClient(create_app(parts)) as client:
        response = client.post("/v1/pipelines/both", json={"inputs": {"q": "my refund"}})
        assert response.status_code == 200, response.text
        assert response.json()["output"] == {"dim": 2, "label": "refund"}
        component = client.post("/v1/components/classify", json={"inputs": {"data": "x"}}).json()
        assert component["deployment"] == "classify-v1" and component["outputs"] == {"predictions": ["refund"]}
    urls = sorted(url for url, _ in parts.replica_client.calls)
    assert urls == ["http://classify.fake:1", "http://classify.fake:1", "http://embed.fake:1"]
    assert parts.replica_client.closed  # the lifespan closed what it was given
    assert parts.metering_sink.stats().written == 3  # ... and flushed every call's metering record


def test_a_failing_model_is_a_structured_error_the_pipeline_names(parts):
    with TestClient(create_app(parts)) as client:
        response = client.post("/v1/pipelines/both", json={"inputs": {"q": "boom"}})
    error = response.json()["error"]
    assert response.status_code == 502 and error["code"] == "pipeline_step_failed" and error["step"] == "classify"
    assert error["steps"]["classify"]["error_code"] == "component_failed"


def test_the_load_board_the_app_was_given_is_the_one_it_fills(parts):
    """The autoscaler and metrics read the board the composition root built: calls must count there."""
    parts.replica_client.during_call = lambda: parts.load.load_of("embed", "embed-v1")
    with TestClient(create_app(parts)) as client:
        assert client.post("/v1/components/embed", json={"inputs": {"texts": ["a"]}}).status_code == 200
    assert parts.replica_client.seen == [(1, 0)]  # in flight on this board while the replica worked
    assert parts.load.load_of("embed", "embed-v1") == (0, 0)  # and given back
