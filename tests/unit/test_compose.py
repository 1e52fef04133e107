"""docker-compose.yml cannot run here (no Docker engine), so it is cross-checked with the code.

What `compoundry up` runs embedded and what compose runs in production must
not drift apart: the same entry points, the environment the settings read,
the webhook switches MLflow needs, and a database driver that is installed.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from compoundry.config.settings import PlatformSettings
from compoundry.platform.services import platform_services

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
