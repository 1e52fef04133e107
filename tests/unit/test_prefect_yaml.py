"""prefect.yaml (the Kubernetes work pool deployments) is read the way `prefect deploy` reads it.

The file is loaded with Prefect's own deploy loader (the pydantic model, default merging, schedule
construction and entrypoint loading of `prefect.cli.deploy`), and must declare exactly the
deployments `compoundry up` serves embedded (`compoundry/flows/serve.py`): same names, flows,
entrypoints, tags, parameters and schedules. Job variables are checked against the variables schema
of Prefect's Kubernetes worker, as the Prefect server checks them when the deployment is created.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import prefect
import prefect.server.api
import pytest
import yaml
from prefect.cli.deploy._config import (
    _handle_deprecated_schedule_fields,
    _load_deploy_configs_and_actions,
    _merge_with_default_deploy_config,
)
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.utilities.importtools import import_object
from prefect.utilities.schema_tools import validate
from rich.console import Console

from compoundry.config.settings import PlatformSettings
from compoundry.flows.serve import deployments

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"
WORKER_METADATA = Path(prefect.server.api.__file__).parent / "collections_data/views/aggregate-worker-metadata.json"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def configs(raw) -> list[dict]:
    """Each deployment as `prefect deploy --all` sees it before it talks to the server."""
    PrefectYamlModel.model_validate(raw)  # raises where the loader below would skip the file with a warning
    out = io.StringIO()
    loaded, actions = _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(file=out))
    assert not out.getvalue(), out.getvalue()
    assert len(loaded) == len(raw["deployments"])
    return [_handle_deprecated_schedule_fields(_merge_with_default_deploy_config(c)) for c in loaded]


@pytest.fixture(scope="module")
def flows(configs):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # `prefect deploy` runs from the directory of prefect.yaml; entrypoints are relative to it
        return {c["name"]: load_flow_from_entrypoint(c["entrypoint"]) for c in configs}


@pytest.fixture(scope="module")
def served():
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # serve() records entrypoints relative to the working directory
        return deployments(PlatformSettings.load(ROOT / "configs"))


def _schedules(items) -> list[tuple[str, str, bool]]:
    return [(s["schedule"].cron, s["schedule"].timezone or "UTC", s.get("active", True)) for s in items]


def test_declares_what_the_embedded_flow_server_serves(configs, flows, served):
    from_yaml = {c["name"]: {
        "flow": flows[c["name"]].name, "entrypoint": c["entrypoint"], "tags": sorted(c["tags"]),
        "parameters": c["parameters"], "description": c["description"],
        "schedules": _schedules(_schedule_config_to_deployment_schedule(s) for s in c.get("schedules") or []),
    } for c in configs}
    from_serve = {d.name: {
        "flow": d.flow_name, "entrypoint": d.entrypoint, "tags": sorted(d.tags),
        "parameters": d.parameters, "description": d.description,
        "schedules": _schedules({"schedule": s.schedule, "active": s.active} for s in d.schedules),
    } for d in served}
    assert len(from_yaml) == len(configs), "deployment names repeat"
    assert sorted(from_yaml) == sorted(from_serve)
    for name in from_serve:
        assert from_yaml[name] == from_serve[name], name


def test_parameters_fit_the_flows_signatures(configs, flows):
    """What Prefect checks when a run is created; a scheduled run gets nothing else, so it needs every one."""
    for c in configs:
        schema = parameter_schema(flows[c["name"]]).model_dump_for_openapi()
        validate(c["parameters"], schema, raise_on_error=True, ignore_required=not c.get("schedules"))


def test_every_deployment_targets_one_kubernetes_pool(configs):
    pools = {c["work_pool"]["name"] for c in configs}
    assert len(pools) == 1 and None not in pools
    assert "--type kubernetes" in PREFECT_YAML.read_text()  # the `prefect work-pool create` it documents


def test_job_variables_fit_the_kubernetes_worker(configs):
    template = json.loads(WORKER_METADATA.read_text())["prefect-kubernetes"]["kubernetes"]
    assert template["type"] == "kubernetes"
    variables = template["default_base_job_configuration"]["variables"]
    for c in configs:
        job_variables = c["work_pool"]["job_variables"]
        assert set(job_variables) <= set(variables["properties"]), c["name"]  # the schema would let typos pass
        validate(job_variables, variables, raise_on_error=True, preprocess=True, ignore_required=True,
                 allow_none_with_default=True)


def test_jobs_run_the_compose_platform_image_with_variables_the_code_reads(configs):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    sources = [*(ROOT / "compoundry").rglob("*.py"), *(ROOT / "bentos").rglob("*.py")]
    read = {name for path in sources for name in re.findall(r"COMPOUNDRY_[A-Z_]+", path.read_text())}
    for c in configs:
        job = c["work_pool"]["job_variables"]
        assert job["image"] == compose["x-platform-image"]["image"]
        env = job["env"]
        assert {k for k in env if k.startswith("COMPOUNDRY_")} <= read
        for key in ("COMPOUNDRY_CONFIG_DIR", "COMPOUNDRY_STATE_DIR"):
            assert env[key] == compose["x-platform-env"][key]
        assert "COMPOUNDRY_DATABASE_URL" not in env  # a secret: from the pool's base job template


def test_pull_steps_exist_and_enter_the_image_code(raw):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    workdir = re.search(r"^WORKDIR (\S+)", compose["x-platform-image"]["build"]["dockerfile_inline"], re.M).group(1)
    steps = raw["pull"]
    for step in steps:
        (function, _), = step.items()
        assert callable(import_object(function)), function
    assert steps == [{"prefect.deployments.steps.set_working_directory": {"directory": workdir}}]


def test_written_for_the_installed_prefect(raw):
    assert raw["prefect-version"].split(".")[:2] == prefect.__version__.split(".")[:2]
