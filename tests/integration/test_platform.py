"""`Supervisor` against the real MLflow and Prefect servers: up, status, APIs, stale pid files, down.

Uses its own state folder and free ports, so neither a developer's platform
nor the session-wide test platform is touched. About 15-25 s on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import psutil
import pytest

from compoundry.platform.supervisor import Supervisor
from tests.integration.platform_fixture import platform_env

pytestmark = pytest.mark.integration

SERVERS = ["mlflow", "prefect"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    state = tmp_path_factory.mktemp("platform-state")
    with platform_env(state) as settings:
        supervisor = Supervisor(settings)
        try:
            supervisor.up(only=SERVERS)
            print(f"\nstart-up times: {', '.join(f'{n} {s:.1f}s' for n, s in supervisor.timings.items())}")
            yield supervisor
        finally:
            supervisor.down()


def test_up_starts_mlflow_and_prefect_healthy(servers):
    status = {s.name: s for s in servers.status()}
    for name in SERVERS:
        assert status[name].alive and status[name].healthy, status[name]
        assert servers.pid_file(name).exists()
        assert os.getpgid(status[name].pid) == status[name].pid  # own process group
        assert servers.log_file(name).stat().st_size > 0
    assert not status["flows"].alive and not status["gateway"].alive  # --only kept them down
    assert status["mlflow"].url == servers.settings.mlflow_url


def test_mlflow_serves_its_api_on_the_sql_store(servers):
    from mlflow import MlflowClient

    settings = servers.settings
    assert httpx.get(f"{settings.mlflow_url}/health", timeout=5).status_code == 200
    client = MlflowClient(tracking_uri=settings.mlflow_url)
    experiment_id = client.create_experiment("platform-smoke")
    assert client.get_experiment(experiment_id).name == "platform-smoke"
    assert (settings.mlflow_dir / "mlflow.db").exists()


def test_prefect_answers_health(servers):
    response = httpx.get(f"{servers.settings.prefect_api_url}/health", timeout=5)
    assert response.status_code == 200
    assert (servers.settings.prefect_home).is_dir()


def test_up_again_keeps_the_running_servers(servers):
    before = {s.name: s.pid for s in servers.status()}
    servers.up(only=SERVERS)
    after = {s.name: s.pid for s in servers.status()}
    assert after["mlflow"] == before["mlflow"] and after["prefect"] == before["prefect"]


def test_stale_pid_file_is_cleaned_up(servers):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    pid_file = servers.pid_file("flows")
    for pid in (finished.pid, os.getpid()):  # dead, and alive but running something else
        pid_file.write_text(f"{pid}\n")
        flows = next(s for s in servers.status() if s.name == "flows")
        assert flows.pid is None and not flows.alive
        assert not pid_file.exists()


def test_down_leaves_no_process_of_the_groups(servers):
    pids = [s.pid for s in servers.status() if s.alive]
    assert len(pids) == 2
    family = [psutil.Process(pid) for pid in pids]
    family += [child for proc in list(family) for child in proc.children(recursive=True)]
    servers.down()
    survivors = [p for p in family if _alive(p)]
    assert survivors == []
    assert not any(servers.pid_file(name).exists() for name in SERVERS)
    assert all(not s.alive for s in servers.status())


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
