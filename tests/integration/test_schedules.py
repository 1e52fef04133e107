"""Schedules fire through Prefect's own scheduler: nothing here starts a run by hand.

Prefect's scheduler service inserts the runs of a cron deployment; a runner
(`serve()`, as the platform's flow server) executes them when due. This broke
silently once (SQLAlchemy 2.1 made every scheduler tick fail; docs/decisions/
0001-dependency-pins.md), and the other tests start scheduled deployments by
hand, so only this module would notice.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from compoundry.platform.supervisor import stop_process_group
from compoundry.store import PlatformStore
from compoundry.store.capacity import CapacityStore
from tests.integration.platform_fixture import PrefectAPI, wait_until

pytestmark = pytest.mark.integration

ENTRY = "fires-every-3s"
SERVE_ONE_SCHEDULE = """
import sys

from prefect import serve

from compoundry.config.loader import load_config
from compoundry.flows.serve import scheduled_deployments

if __name__ == "__main__":
    serve(*scheduled_deployments(load_config(sys.argv[1]), "scheduled-warmup"))
"""


def _runs(api: PrefectAPI, deployment: str, state: str | None = None) -> list[dict]:
    flt = {"deployments": {"name": {"any_": [deployment]}}, "limit": 200}
    if state:
        flt["flow_runs"] = {"state": {"type": {"any_": [state]}}}
    return api.post("/flow_runs/filter", json=flt).json()


def test_the_shipped_registry_poll_schedule_has_runs_scheduled(platform):
    """configs/schedules.yaml's registry-poll (*/2 minutes): the scheduler inserts its next runs by itself."""
    runs = wait_until(lambda: _runs(PrefectAPI(platform.prefect_api_url), "registry-poll", "SCHEDULED"), 60, 1,
                      "the scheduler to insert registry-poll runs")
    assert all(r["auto_scheduled"] for r in runs)


def test_a_cron_warmup_entry_fires_and_does_its_work(platform, tmp_path):
    """A schedules.yaml entry served the way compoundry/flows/serve.py serves it runs on its cron and writes its floor."""
    config_dir = tmp_path / "configs"
    shutil.copytree(platform.config_dir, config_dir)
    (config_dir / "schedules.yaml").write_text(textwrap.dedent(f"""
        schedules:
          {ENTRY}:
            flow: scheduled-warmup
            cron: "* * * * * */3"
            parameters: {{components: [embedder], min_replicas: 0, hold_minutes: 0.1, wait_ready: false}}
        """))
    (tmp_path / "serve_one.py").write_text(SERVE_ONE_SCHEDULE)
    env = platform.child_env() | {"COMPOUNDRY_CONFIG_DIR": str(config_dir)}
    log = open(tmp_path / "runner.log", "wb")
    runner = subprocess.Popen([sys.executable, str(tmp_path / "serve_one.py"), str(config_dir)], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = PrefectAPI(platform.prefect_api_url)
    try:
        done = wait_until(lambda: _runs(api, ENTRY, "COMPLETED"), 90, 1, f"a completed run of {ENTRY}")
        assert done[0]["auto_scheduled"], "the run was not inserted by the scheduler"
        store = PlatformStore(platform.database_url)
        floors = [f for f in CapacityStore(store).floors(include_ended=True) if f.source.startswith(ENTRY)]
        store.close()
        assert floors and floors[0].component == "embedder" and floors[0].min_replicas == 0
    finally:
        stop_process_group(runner.pid, grace_s=15)  # serve() and the flow-run processes it started
        log.close()
        _delete_deployment(api, ENTRY)


def _delete_deployment(api: PrefectAPI, name: str) -> None:
    """Leave the session's Prefect server as it was: no orphan schedule keeps inserting runs."""
    for deployment in api.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}).json():
        api.delete(f"/deployments/{deployment['id']}")
