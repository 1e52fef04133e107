import pytest

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
