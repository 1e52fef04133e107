"""docker-compose.yml cannot run here (no Docker engine), so it is cross-checked with the code.

What `compoundry up` runs embedded and what compose runs in production must
not drift apart: the same entry points, the environment the settings read,
the webhook switches MLflow needs, and a database driver that is installed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from ruamel.yaml import YAML

from compoundry.config.settings import PlatformSettings
from compoundry.gateway.security import OPEN_PATHS
from compoundry.platform.services import _mlflow_allowed_hosts, platform_services
from compoundry.scaling.targets import local as local_module
from compoundry.scaling.targets.local import Launch, LocalTarget
from compoundry.store import PlatformStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    return platform_services(PlatformSettings.load())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("service, embedded_name", [("flows", "flows"), ("gateway", "gateway")])
def test_platform_services_run_the_same_entry_point(compose, embedded, service, embedded_name):
    command = compose["services"][service]["command"].split()
    assert command[:2] == ["python", "-m"]
    assert tuple(command[1:]) == embedded[embedded_name].argv[1:]
    assert importlib.util.find_spec(command[2]) is not None


def test_every_compoundry_variable_is_one_the_code_reads(compose):
    sources = [*(ROOT / "compoundry").rglob("*.py"), *(ROOT / "bentos").rglob("*.py")]
    read = {name for path in sources for name in re.findall(r"COMPOUNDRY_[A-Z_]+", path.read_text())}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        unknown = {k for k in env if k.startswith("COMPOUNDRY_")} - read
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_mlflow_gets_the_webhook_switches_the_embedded_server_gets(compose, embedded):
    env = compose["services"]["mlflow"]["environment"]
    for key in ("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"):
        assert str(env[key]) == embedded["mlflow"].env[key]
    assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in env


def test_database_urls_name_drivers_that_are_installed(compose):
    urls = [compose["x-platform-env"]["COMPOUNDRY_DATABASE_URL"],
            compose["services"]["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]]
    urls += re.findall(r"postgresql\+\w+://\S+", compose["services"]["mlflow"]["command"])
    drivers = {"psycopg": "psycopg", "asyncpg": "asyncpg"}
    for url in urls:
        driver = re.match(r"postgresql\+(\w+)://", url).group(1)
        assert importlib.util.find_spec(drivers[driver]) is not None, f"{driver} is not installed"


def test_the_databases_compose_uses_are_created_by_the_init_script(compose):
    init = (ROOT / "configs" / "postgres-init.sql").read_text().lower()
    text = (ROOT / "docker-compose.yml").read_text()
    for url in re.findall(r"postgresql\+\w+://[^\s'\"]+", text):
        database = url.rsplit("/", 1)[1].strip("'\"")
        default = compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
        assert database == default or f"create database {database}" in init, database


# --- a compose file that would serve: pinned images, probes, start order, restarts ------------------------
ONE_SHOT = {"create-bucket"}  # run once at start; everything else runs until stopped


def _images(compose) -> dict[str, str]:
    images = {name: s["image"] for name, s in compose["services"].items() if "image" in s}
    for name, service in compose["services"].items():
        for line in (service.get("build") or {}).get("dockerfile_inline", "").splitlines():
            if line.startswith("FROM "):
                images[f"{name} (FROM)"] = line.split()[1]
    return images


def test_every_image_has_a_pinned_tag(compose):
    for where, image in _images(compose).items():
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{where}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+|RELEASE\.\d{4}", tag), f"{where}: {image} is not pinned"


def test_every_service_has_a_healthcheck_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name  # a finished one-shot must stay finished
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_dependencies_wait_for_health_or_completion(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends.items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec["condition"] == wanted, f"{name} -> {dependency}"
            assert dependency in ONE_SHOT or "healthcheck" in services[dependency]


def _probe_url(service: dict) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[4]


@pytest.mark.parametrize("service, embedded_name", [("mlflow", "mlflow"), ("prefect-server", "prefect")])
def test_servers_are_probed_where_the_embedded_platform_probes_them(compose, embedded, service, embedded_name):
    probe, health = httpx.URL(_probe_url(compose["services"][service])), httpx.URL(embedded[embedded_name].health_url)
    assert probe.path == health.path
    assert f"--port {probe.port}" in compose["services"][service]["command"]


def test_the_gateway_is_probed_on_its_open_readiness_route(compose):
    probe = httpx.URL(_probe_url(compose["services"]["gateway"]))
    assert probe.path == "/readyz" and probe.path in OPEN_PATHS  # ready = routes loaded; needs no API key
    assert str(probe.port) == compose["services"]["gateway"]["environment"]["COMPOUNDRY_GATEWAY_PORT"]


class _Answer(BaseHTTPRequestHandler):
    def _answer(self):
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.status, server.body = 200, b"[]"  # what the handler answers; a test may change them
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _exit_code(code: str, argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["-c", *argv])
        try:
            exec(code, {"__name__": "__main__"})
        except SystemExit as exc:
            return int(exc.code or 0)
        except Exception:
            return 1  # python -c prints the traceback and exits 1
    return 0


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_the_http_probe_passes_on_200_only(compose, http_server, status, healthy):
    http_server.status = status
    url = f"http://127.0.0.1:{http_server.server_port}/readyz"
    assert (_exit_code(compose["x-http-probe"], [url]) == 0) is healthy
    http_server.server_close()
    assert _exit_code(compose["x-http-probe"], ["http://127.0.0.1:1/readyz"]) != 0  # nothing listens


@pytest.mark.parametrize("body, healthy", [(b'[{"name": "deploy-model-version"}]', True), (b"[]", False)])
def test_flows_is_healthy_once_prefect_lists_its_deploy_deployment(compose, http_server, body, healthy):
    """The embedded supervisor's own check (compoundry.platform.services.prefect_has_deployment)."""
    http_server.body = body
    code = compose["services"]["flows"]["healthcheck"]["test"][3]
    api = compose["x-platform-env"]["PREFECT_API_URL"]
    assert api in code
    local = code.replace(api, f"http://127.0.0.1:{http_server.server_port}/api")
    assert (_exit_code(local, []) == 0) is healthy


def test_mlflow_artifacts_go_to_the_bucket_created_at_start(compose):
    services = compose["services"]
    bucket = re.search(r"--artifacts-destination s3://([\w.-]+)", services["mlflow"]["command"]).group(1)
    script = " ".join(services["create-bucket"]["command"])
    assert re.search(rf"mc mb --ignore-existing \w+/{re.escape(bucket)}\b", script)
    endpoint = re.search(r"mc alias set \w+ (\S+)", script).group(1)
    assert endpoint == services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"]
    assert services["mlflow"]["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_mlflow_accepts_the_host_name_the_platform_calls_it_by(compose, monkeypatch):
    """MLflow's host-header check: the same --allowed-hosts the embedded server gets for a non-loopback URL."""
    monkeypatch.setenv("COMPOUNDRY_MLFLOW_URL", compose["x-platform-env"]["COMPOUNDRY_MLFLOW_URL"])
    monkeypatch.setenv("COMPOUNDRY_MLFLOW_PORT", "5000")
    expected = _mlflow_allowed_hosts(PlatformSettings.load())
    command = compose["services"]["mlflow"]["command"].split()
    at = command.index("--allowed-hosts")
    assert command[at:at + 2] == expected


# --- replicas: bound on every interface, advertised by the compose name of the container that started them --
#: the services whose code starts local replicas: deploy flow runs (flows/context.py::component_target)
#: and the gateway's autoscaler (scaling/autoscaler_factory.py)
REPLICA_STARTERS = ("flows", "gateway")


def _service_settings(compose, name, tmp_path, monkeypatch) -> PlatformSettings:
    for key, value in compose["services"][name]["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COMPOUNDRY_DATABASE_URL", f"sqlite:///{tmp_path / 'platform.db'}")
    monkeypatch.setenv("COMPOUNDRY_CONFIG_DIR", str(ROOT / "configs"))
    return PlatformSettings.load()


class _Popen:
    argv: list[str] = []

    def __init__(self, argv, **kwargs):
        _Popen.argv, self.pid = argv, 4242


def _start_one(settings, monkeypatch):
    store = PlatformStore(settings.database_url)
    store.create_schema()
    store.add_deployment("embedder-v1-abc", "embedder", "m", "1", "sentence-transformers")
    monkeypatch.setattr(local_module.subprocess, "Popen", _Popen)
    handle = LocalTarget(settings, store).start_replica(
        Launch("embedder-v1-abc", "compoundry-embedding:x", "models:/m/1", {}, 60, 0))
    row = store.deployment("embedder-v1-abc").replicas[0]
    store.close()
    return handle, row


@pytest.mark.parametrize("service", REPLICA_STARTERS)
def test_replicas_are_registered_under_the_service_name_and_bound_on_every_interface(
        compose, service, tmp_path, monkeypatch):
    settings = _service_settings(compose, service, tmp_path, monkeypatch)
    handle, row = _start_one(settings, monkeypatch)
    url = httpx.URL(row.url)
    assert url.host == service == settings.advertise_host  # what the gateway's route table holds
    assert handle.url == row.url
    assert _Popen.argv[_Popen.argv.index("--host") + 1] == "0.0.0.0"
    assert str(url.port) == _Popen.argv[_Popen.argv.index("--port") + 1]


def test_embedded_replicas_stay_on_the_configured_host(tmp_path, monkeypatch):
    for key in ("COMPOUNDRY_ADVERTISE_HOST", "COMPOUNDRY_BIND_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COMPOUNDRY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COMPOUNDRY_DATABASE_URL", f"sqlite:///{tmp_path / 'platform.db'}")
    settings = PlatformSettings.load(ROOT / "configs")
    handle, row = _start_one(settings, monkeypatch)
    assert httpx.URL(row.url).host == settings.host == "127.0.0.1"
    assert _Popen.argv[_Popen.argv.index("--host") + 1] == settings.host


def test_replica_starters_share_processes_and_state(compose):
    """A replica one container started is checked, drained and stopped by the other (by pid), and the
    gateway's autoscaler serves the Bentos deploy flow runs built: one PID namespace, one state volume."""
    services = compose["services"]
    owner, joiner = "gateway", "flows"
    assert services[joiner]["pid"] == f"service:{owner}" and "pid" not in services[owner]
    assert services[owner].get("init") is True  # the namespace's PID 1 reaps orphaned replicas
    assert services[joiner]["depends_on"][owner].get("restart") is True
    state = compose["x-platform-env"]["COMPOUNDRY_STATE_DIR"]
    mounts = {name: {v.split(":")[0] for v in services[name]["volumes"] if v.split(":")[1] == state}
              for name in REPLICA_STARTERS}
    assert mounts["flows"] == mounts["gateway"] and len(mounts["flows"]) == 1
    assert next(iter(mounts["flows"])) in compose["volumes"]
