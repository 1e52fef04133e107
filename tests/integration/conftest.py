import pytest

from tests.integration.gateway_fixture import running_gateway
from tests.integration.platform_fixture import platform_env
from tests.integration.stub_backend import StubReplica


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    """A real embedded platform: MLflow + Prefect + flow server + gateway, torn down at the end."""
    from compoundry.platform.supervisor import Supervisor

    state = tmp_path_factory.mktemp("compoundry-state")
    with platform_env(state) as settings:
        supervisor = Supervisor(settings)
        try:
            supervisor.up()
            yield settings
        finally:
            supervisor.down()


@pytest.fixture(scope="session")
def stubs():
    """Four stub replicas (a-d) shared by the gateway tests; tests that count calls compare before and after."""
    replicas = {name: StubReplica(name).start() for name in ("a", "b", "c", "d")}
    yield replicas
    for replica in replicas.values():
        replica.stop()


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, stubs):
    """A gateway process for the requesting module, from its ``CONFIGS(stubs)`` and ``seed(store, stubs)``
    (and ``GATEWAY_ENV``, when it has one): each module gets its own, so none depends on another's changes."""
    module = request.module
    with running_gateway(tmp_path_factory.mktemp("gateway"), module.CONFIGS(stubs),
                         lambda store: module.seed(store, stubs), env=getattr(module, "GATEWAY_ENV", None)) as gateway:
        yield gateway


@pytest.fixture
def gateway(gw):
    """The gateway's client, with an admin key."""
    return gw.client
