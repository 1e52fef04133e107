"""The bentocloud target: the rendered deployment config, validated with BentoML's own schema classes, and
the target's calls into ``bentoml.deployment``, recorded by a fake at that function boundary (there is no
BentoCloud account or network here, so nothing in this file talks to BentoCloud)."""

import copy
import dataclasses
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import bentoml
import pytest
from bentoml._internal.cloud.deployment import DeploymentAPI
from bentoml._internal.cloud.schemas.schemasv2 import (
    CreateDeploymentSchema,
    UpdateDeploymentSchema,
)
from bentoml._internal.utils import deep_merge
from bentoml._internal.utils.cattr import bentoml_cattr
from bentoml.exceptions import NotFound

from compoundry.scaling.targets.bentocloud import (
    SERVICE_NAMES,
    BentoCloudConfigError,
    BentoCloudTarget,
    render_config,
    validate_config,
)
from compoundry.scaling.targets.protocol import ScalingSpec

BASE = ScalingSpec(
    deployment_id="embedder-v3-1a2b3c", component="embedder", model_name="minilm", model_version="3",
    engine="sentence-transformers", mode="dedicated", min_replicas=1, max_replicas=5, target_concurrency=8,
    idle_window_s=300, image="compoundry-embedding:abc123", model_uri="models:/minilm/3",
)
SERVICE = "compoundry-embedding"
CASES = {
    "dedicated-min0": dict(mode="dedicated", min_replicas=0),
    "dedicated-min2": dict(mode="dedicated", min_replicas=2),
    "auto-min0": dict(mode="auto", min_replicas=0, variant="challenger"),
    "serverless-min0": dict(mode="serverless", min_replicas=0),
    "serverless-min1": dict(mode="serverless", min_replicas=1),
    "llm-gpu": dict(engine="llm", gpu=1, image="compoundry-llm:def456", mode="serverless", min_replicas=0),
    "odd-id": dict(deployment_id="Dialogue_LLM.v12", env={"HF_HUB_OFFLINE": "1"}),
    "engine-options": dict(engine="llm", image="compoundry-llm:def456", engine_options={"max_tokens": 64}),
}


def spec(**changes) -> ScalingSpec:
    return dataclasses.replace(BASE, **changes)


def service_of(config: dict) -> dict:
    (service,) = config["services"].values()
    return service


@pytest.mark.parametrize("case", CASES)
def test_rendered_configs_pass_bentomls_schema(case):
    config = render_config(spec(**CASES[case]), cluster="aws-us-1")
    validate_config(config)
    # what bentoml.deployment.create does with it once the Bento is resolved
    structured = bentoml_cattr.structure({k: v for k, v in config.items() if k != "cluster"},
                                         CreateDeploymentSchema)
    DeploymentAPI._fix_and_validate_schema(structured)
    (name,) = config["services"]
    assert structured.services[name].scaling.min_replicas == service_of(config)["scaling"]["min_replicas"]


@pytest.mark.parametrize("mode,minimum,floor", [
    ("dedicated", 0, 1), ("dedicated", 3, 3), ("auto", 0, 1), ("serverless", 0, 0), ("serverless", 2, 2),
])
def test_bounds_mapping(mode, minimum, floor):
    scaling = service_of(render_config(spec(mode=mode, min_replicas=minimum, max_replicas=6)))["scaling"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (floor, 6)
    assert scaling["policy"] == {"scale_down_stabilization_window": 300}


def test_traffic_concurrency_and_the_external_queue_for_scale_to_zero():
    dedicated = service_of(render_config(spec(target_concurrency=12)))
    assert dedicated["config_overrides"] == {"traffic": {"concurrency": 12}}
    serverless = service_of(render_config(spec(mode="serverless", min_replicas=0, target_concurrency=3)))
    assert serverless["config_overrides"]["traffic"] == {"concurrency": 3, "external_queue": True}
    gpu = service_of(render_config(spec(engine="llm", gpu=2)))
    assert gpu["config_overrides"]["resources"] == {"gpu": 2}


def test_config_fields():
    config = render_config(spec(deployment_id="Dialogue_LLM.v12", variant="b", env={"A": "1"}), cluster="c1",
                           instance_type="cpu.2", access_authorization=False)
    assert config["name"].startswith("dialogue-llm-v12-") and len(config["name"]) <= 57
    assert config["bento"] == "compoundry-embedding:abc123"
    assert config["cluster"] == "c1" and config["access_authorization"] is False
    assert config["envs"] == [{"name": "A", "value": "1"},
                              {"name": "COMPOUNDRY_MODEL_URI", "value": "models:/minilm/3"}]
    assert {"key": "compoundry-variant", "value": "b"} in config["labels"]
    assert {"key": "compoundry-deployment-id", "value": "Dialogue_LLM.v12"} in config["labels"]
    assert service_of(config)["instance_type"] == "cpu.2"
    assert list(render_config(spec(), service_name="Custom")["services"]) == ["Custom"]
    validate_config(config)


def test_service_names_match_the_bentos():
    """The ``services:`` key must be each Bento's entry Service name, i.e. ``@bentoml.service(name=...)``."""
    bentos = Path(__file__).resolve().parents[2] / "bentos"
    for engine, folder in {"sentence-transformers": "embedding", "llm": "llm", "pyfunc": "pyfunc"}.items():
        source = (bentos / folder / "service.py").read_text()
        assert re.search(r'@bentoml\.service\(name="([^"]+)"', source).group(1) == SERVICE_NAMES[engine]


@pytest.mark.parametrize("path,value,expected", [
    (("services", SERVICE, "scaling", "min_replica"), 1, "min_replica: not a field"),
    (("services", SERVICE, "scaling", "min_replicas"), "1", "'1' became 1"),
    (("services", SERVICE, "scaling", "min_replicas"), 9, "min scaling values must be less than or equal"),
    (("services", SERVICE, "scaling", "min_replicas"), -1, "min scaling values must be greater than or equal to 0"),
    (("services", SERVICE, "config_overrides", "traffic", "concurency"), 2, "traffic.concurency: not a traffic key"),
    (("services", SERVICE, "config_overrides", "traffic", "concurrency"), 0, "greater than 0"),
    (("services", SERVICE, "config_overrides", "trafic"), {}, "trafic: not a @bentoml.service config key"),
    (("acces_authorization",), True, "acces_authorization: not a field"),
    (("envs",), [{"name": "A"}], "ClassValidationError"),
])
def test_validation_catches_mistakes(path, value, expected):
    config = render_config(spec())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(BentoCloudConfigError, match=re.escape(expected)):
        validate_config(config)


# --- the target, against a recording fake of bentoml.deployment ------------------------------------------------

class FakeDeployments:
    """``bentoml.deployment``'s create/update/get/terminate/delete: each call is checked against the real
    function's signature, recorded, and applied to an in-memory config the way DeploymentAPI does (structure
    into its schema, bounds check; an update deep-merges into the live config)."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.live: dict[str, dict] = {}
        self.status = "running"

    def _record(self, fn: str, **kwargs):
        inspect.signature(getattr(bentoml.deployment, fn)).bind(**kwargs)
        self.calls.append((fn, copy.deepcopy(kwargs)))

    def get(self, name, cluster=None):
        self._record("get", name=name, cluster=cluster)
        if name not in self.live:
            raise NotFound(f"Deployment {name} is not found")
        return SimpleNamespace(name=name, get_status=lambda refetch=True: SimpleNamespace(status=self.status),
                               get_endpoint_urls=lambda refetch=True: [f"https://{name}.example.bentoml.ai"])

    def create(self, config_dict=None):
        self._record("create", config_dict=config_dict)
        config = {k: v for k, v in config_dict.items() if k != "cluster"}
        DeploymentAPI._fix_and_validate_schema(bentoml_cattr.structure(config, CreateDeploymentSchema))
        self.live[config["name"]] = config

    def update(self, config_dict=None):
        self._record("update", config_dict=config_dict)
        merged = copy.deepcopy(self.live[config_dict["name"]])
        deep_merge(merged, {k: v for k, v in config_dict.items() if k != "cluster"})
        DeploymentAPI._fix_and_validate_schema(bentoml_cattr.structure(merged, UpdateDeploymentSchema))
        self.live[config_dict["name"]] = merged

    def terminate(self, name, cluster=None, wait=False):
        self._record("terminate", name=name, cluster=cluster, wait=wait)
        self.status = "terminated"

    def delete(self, name, cluster=None):
        self._record("delete", name=name, cluster=cluster)
        del self.live[name]


def pod(phase: str, status: str = "Running"):
    return SimpleNamespace(status=SimpleNamespace(phase=phase), pod_status=SimpleNamespace(status=status))


@pytest.fixture
def fake():
    return FakeDeployments()


def test_apply_creates_then_updates(fake):
    target = BentoCloudTarget(fake, cluster="aws-us-1")
    target.apply(BASE)
    assert [fn for fn, _ in fake.calls] == ["get", "create"]
    assert fake.calls[1][1]["config_dict"] == render_config(BASE, cluster="aws-us-1")
    target.apply(dataclasses.replace(BASE, max_replicas=9))
    assert [fn for fn, _ in fake.calls] == ["get", "create", "get", "update"]
    assert service_of(fake.live["embedder-v3-1a2b3c"])["scaling"]["max_replicas"] == 9


def test_apply_refuses_an_invalid_config_before_calling_bentoml(fake):
    target = BentoCloudTarget(fake, instance_type=123)  # not a string: BentoML would coerce it silently
    with pytest.raises(BentoCloudConfigError, match="instance_type: 123 became '123'"):
        target.apply(BASE)
    assert fake.calls == []


def test_set_replicas_updates_only_the_floor(fake):
    serverless = spec(mode="serverless", min_replicas=0)
    target = BentoCloudTarget(fake)
    target.apply(serverless)
    assert target.set_replicas(serverless, 3) == 3  # the floor it set
    fn, kwargs = fake.calls[-1]
    assert fn == "update"
    assert kwargs["config_dict"] == {"name": "embedder-v3-1a2b3c",
                                     "services": {SERVICE: {"scaling": {"min_replicas": 3, "max_replicas": 5}}}}
    live = service_of(fake.live["embedder-v3-1a2b3c"])
    assert live["scaling"]["min_replicas"] == 3
    assert live["config_overrides"]["traffic"] == {"concurrency": 8, "external_queue": True}  # merged, kept
    target.set_replicas(serverless, 0)
    assert service_of(fake.live["embedder-v3-1a2b3c"])["scaling"]["min_replicas"] == 0
    target.set_replicas(spec(mode="dedicated", min_replicas=0), 0)
    assert service_of(fake.live["embedder-v3-1a2b3c"])["scaling"]["min_replicas"] == 1


def test_replicas_counts_live_pods(fake):
    listed = []

    def list_pods(name, cluster):
        listed.append((name, cluster))
        return [pod("Running"), pod("Pending"), pod("Running", "Terminating"), pod("Succeeded")]

    target = BentoCloudTarget(fake, list_pods=list_pods)
    assert target.replicas(BASE.deployment_id) == 0 and listed == []  # absent
    target.apply(BASE)
    assert target.replicas(BASE.deployment_id) == 2
    fake.status = "scaled-to-zero"
    assert target.replicas(BASE.deployment_id) == 0 and len(listed) == 1


def test_remove_terminates_then_deletes(fake):
    target = BentoCloudTarget(fake, cluster="c1")
    target.apply(BASE)
    fake.calls.clear()
    target.remove(BASE.deployment_id)
    assert fake.calls == [("get", {"name": "embedder-v3-1a2b3c", "cluster": "c1"}),
                          ("terminate", {"name": "embedder-v3-1a2b3c", "cluster": "c1", "wait": True}),
                          ("delete", {"name": "embedder-v3-1a2b3c", "cluster": "c1"})]
    fake.calls.clear()
    target.remove(BASE.deployment_id)  # already gone
    assert [fn for fn, _ in fake.calls] == ["get"]


def test_deploy_waits_for_running_routes_to_its_endpoint_and_deletes_when_drained(fake, tmp_path):
    from compoundry.store import PlatformStore
    from compoundry.store.capacity import CapacityStore

    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    store.add_deployment(BASE.deployment_id, BASE.component, BASE.model_name, "3", BASE.engine, target="bentocloud")
    statuses = iter(["image-building", "deploying", "running"])
    fake.status = next(statuses)
    target = BentoCloudTarget(fake, cluster="aws-us-1", store=store, poll_s=0)
    real_get = fake.get

    def advancing_get(name, cluster=None):  # each look at the status finds it one step further
        found = real_get(name, cluster)
        fake.status = next(statuses, fake.status)
        return found

    fake.get = advancing_get
    rollout = target.deploy(BASE, replicas=1)
    assert rollout.urls == ("https://embedder-v3-1a2b3c.example.bentoml.ai",)
    (row,) = CapacityStore(store).live_replicas([BASE.deployment_id])[BASE.deployment_id]
    assert row.status == "ready"
    target.drain_and_delete(BASE.deployment_id, grace_s=1)
    assert [fn for fn, _ in fake.calls][-2:] == ["terminate", "delete"]
    assert CapacityStore(store).live_replicas([BASE.deployment_id])[BASE.deployment_id] == []
    assert store.deployment(BASE.deployment_id).status == "stopped"
