"""Shared unit-test fixtures."""

import pytest

from compoundry.config.loader import load_config
from compoundry.config.settings import PlatformSettings
from compoundry.core.routing.route_view import ReplicaView, RouteView
from compoundry.gateway.app import GatewayParts
from compoundry.gateway.errors import ComponentFailed
from compoundry.store import PlatformStore
from compoundry.store.refresh import RouteTable
from tests.postgres_scratch import scratch_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The platform database on a real SQLite file and on a scratch database of the local PostgreSQL
    (skipped where none answers): what docker-compose runs must behave like the embedded default."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'platform.db'}"
        s = PlatformStore(url)
        s.create_schema()
        yield s
        s.close()
        return
    with scratch_postgres_database() as url:
        s = PlatformStore(url)
        s.create_schema()
        yield s
        s.close()


# --- the gateway app built in-process, with a fake replica client (test_gateway_app.py, test_request_limits.py)
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
        self.dead: set[str] = set()  # replicas that answer 500 to everything

    async def invoke(self, url: str, inputs, timeout: float, component: str):
        self.calls.append((url, inputs))
        self.seen.append(self.during_call())
        if inputs.get("data") == "boom" or url in self.dead:
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


def _route(component: str, replicas: int = 1) -> RouteView:
    return RouteView(component, f"{component}-v1", f"m-{component}", "1", "pyfunc",
                     tuple(ReplicaView(f"{component}-v1-r{i}", f"http://{component}.fake:{i + 1}")
                           for i in range(replicas)))


@pytest.fixture
def parts(tmp_path):
    (tmp_path / "components.yaml").write_text(COMPONENTS)
    (tmp_path / "pipelines.yaml").write_text(PIPELINES)
    (tmp_path / "platform.yaml").write_text("gateway: {auth_required: false}\nautoscaler: {enabled: false}\n")
    settings = PlatformSettings.load(tmp_path)
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    routes = RouteTable(lambda: {"embed": _route("embed"), "classify": _route("classify", replicas=2)})
    yield GatewayParts.build(settings, load_config(tmp_path), store, routes=routes, replica_client=FakeReplicas())
    store.close()
