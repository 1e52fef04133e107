"""A target per component: which target a component uses, the autoscaler's per-deployment dispatch, the
kubernetes adapter's rollout (ready before the route may switch, removed on failure), and a deploy flow
that names no concrete target."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from compoundry.config.kubernetes_config import KubernetesSettings
from compoundry.config.models import Component, Config, PlatformConfig
from compoundry.scaling.targets.kubernetes_apply import RolloutStatus
from compoundry.scaling.targets.kubernetes_replicas import (
    KubernetesReplicas,
    endpoint_addresses,
)
from compoundry.scaling.targets.protocol import ReplicaFailed, ScalingSpec
from compoundry.scaling.targets.target_choice import (
    TargetsByDeployment,
    deployment_target,
    remote_deployments,
    target_name,
)
from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.capacity import CapacityStore

ROOT = Path(__file__).resolve().parents[2]


def config(platform_target: str = "local", **targets: str | None) -> Config:
    components = {name: Component(model=f"m-{name}", engine="pyfunc", target=target)
                  for name, target in targets.items()}
    return Config(config_dir=ROOT / "configs", platform=PlatformConfig(target=platform_target),
                  components=components)


def test_a_component_runs_on_its_own_target_else_the_platform_default():
    mixed = config("local", embedder=None, llm="kubernetes")
    assert target_name(mixed, "embedder") == "local"
    assert target_name(mixed, "llm") == "kubernetes"
    assert target_name(config("bentocloud", embedder=None), "embedder") == "bentocloud"


def test_the_deploy_flow_names_no_concrete_target():
    tree = ast.parse((ROOT / "compoundry/flows/deploy.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    concrete = {"LocalTarget", "KubernetesTarget", "KubernetesReplicas", "BentoCloudTarget", "local_target",
                "compoundry.scaling.targets.local", "compoundry.scaling.targets.kubernetes",
                "compoundry.scaling.targets.kubernetes_replicas", "compoundry.scaling.targets.bentocloud"}
    assert not (imported | names) & concrete


class Recording:
    def __init__(self, name: str):
        self.name, self.calls = name, []

    def replicas(self, deployment_id: str) -> int:
        self.calls.append(("replicas", deployment_id))
        return 1

    def set_replicas(self, spec, replicas: int) -> int:
        self.calls.append(("set_replicas", spec.deployment_id, replicas))
        return replicas

    def lost(self, deployment_id: str) -> int:
        return 0


def spec(deployment_id: str = "scorer-v1-abc", mode: str = "dedicated", **kw) -> ScalingSpec:
    base = dict(deployment_id=deployment_id, component="scorer", model_name="m", model_version="1",
                engine="pyfunc", mode=mode, min_replicas=1, max_replicas=3, target_concurrency=8,
                idle_window_s=300, image="compoundry-pyfunc:abc", model_uri="models:/m/1", cold_start_s=5)
    return ScalingSpec(**{**base, **kw})


def test_the_autoscaler_reaches_each_deployment_through_its_own_target_built_once():
    built: dict[str, Recording] = {}
    where = {"a-v1": "local", "b-v1": "kubernetes", "b-v2": "kubernetes"}
    targets = TargetsByDeployment(lambda name: built.setdefault(name, Recording(name)), where.__getitem__)
    assert targets.replicas("a-v1") == 1 and targets.replicas("b-v1") == 1
    targets.set_replicas(spec("b-v2"), 2)
    assert set(built) == {"local", "kubernetes"}
    assert built["kubernetes"].calls == [("replicas", "b-v1"), ("set_replicas", "b-v2", 2)]


def test_a_deployment_keeps_the_target_it_started_on(store):
    store.add_deployment("a-v1", "a", "m", "1", "pyfunc")
    store.add_deployment("b-v1", "b", "m", "1", "pyfunc", target="kubernetes")
    store.add_deployment("b-v0", "b", "m", "0", "pyfunc", target="kubernetes")
    store.update_deployment("b-v0", status=DeploymentStatus.STOPPED)
    assert deployment_target(store, "a-v1") == "local" and deployment_target(store, "b-v1") == "kubernetes"
    assert deployment_target(store, "unknown") == "local"
    assert remote_deployments(store) == {"b-v1": "kubernetes"}  # what `compoundry down` leaves running


class FakeCluster:
    """The KubernetesTarget calls KubernetesReplicas makes, answered from a script of rollout states."""

    namespace = "compoundry"

    def __init__(self, rollout: list[bool], endpoints: list[str]):
        self.rollout, self.endpoints, self.calls = list(rollout), endpoints, []
        self.settings = KubernetesSettings(images={"registry": "registry.test/c", "tag": "1"}, route_to="service")

    def apply(self, spec):
        self.calls.append(("apply", spec.image))

    def set_replicas(self, spec, replicas):
        self.calls.append(("set_replicas", replicas))
        return replicas

    def rollout_status(self, spec):
        ready = self.rollout.pop(0) if self.rollout else False
        return RolloutStatus(ready, "1 of 1 updated replicas available" if ready else "0 of 1 available")

    def endpoint_url(self, spec):
        return "http://scorer.compoundry.svc.cluster.local"

    def remove(self, deployment_id):
        self.calls.append(("remove", deployment_id))


def replicas_over(cluster: FakeCluster, store, resolver=None) -> KubernetesReplicas:
    clock = iter(range(0, 1000)).__next__  # one second per look
    return KubernetesReplicas(cluster, store, cluster.settings, endpoint_resolver=resolver,
                              clock=lambda: float(clock()), sleep=lambda s: None)


@pytest.fixture
def sqlite_store(tmp_path) -> PlatformStore:
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    store.add_deployment("scorer-v1-abc", "scorer", "m", "1", "pyfunc", target="kubernetes")
    return store


def test_a_kubernetes_rollout_is_routed_only_once_complete_and_reachable(sqlite_store):
    cluster = FakeCluster([False, False, True, True], [])
    target = replicas_over(cluster, sqlite_store, resolver=lambda t, s: ["http://10.0.0.7:3000"])
    rollout = target.deploy(spec(), replicas=2)
    assert cluster.calls[:2] == [("apply", "registry.test/c/compoundry-pyfunc:1"), ("set_replicas", 2)]
    assert rollout.urls == ("http://10.0.0.7:3000",) and rollout.where == "kubernetes compoundry/scorer-v1-abc"
    (row,) = CapacityStore(sqlite_store).live_replicas(["scorer-v1-abc"])["scorer-v1-abc"]
    assert (row.url, row.status) == ("http://10.0.0.7:3000", "ready")

    target.drain_and_delete("scorer-v1-abc", grace_s=1)
    assert cluster.calls[-1] == ("remove", "scorer-v1-abc")
    assert sqlite_store.deployment("scorer-v1-abc").status == "stopped"
    assert CapacityStore(sqlite_store).live_replicas(["scorer-v1-abc"])["scorer-v1-abc"] == []


def test_a_rollout_not_ready_within_the_cold_start_is_removed_and_fails_with_its_status(sqlite_store):
    cluster = FakeCluster([], [])
    with pytest.raises(ReplicaFailed, match="not ready after 5s: 0 of 1 available"):
        replicas_over(cluster, sqlite_store).deploy(spec(), replicas=1)
    assert ("remove", "scorer-v1-abc") in cluster.calls and ("set_replicas", 1) not in cluster.calls
    assert sqlite_store.deployment("scorer-v1-abc").replicas == ()


def test_the_service_route_is_its_cluster_dns_name(sqlite_store):
    rollout = replicas_over(FakeCluster([True], []), sqlite_store).deploy(spec(), replicas=1)
    assert rollout.urls == ("http://scorer.compoundry.svc.cluster.local",)


def test_pod_routes_are_the_ready_addresses_of_the_endpoints():
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.8"}, {"ip": "10.0.0.7"}],
                              "notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"port": 3000}]}]}
    assert endpoint_addresses(endpoints) == ["http://10.0.0.7:3000", "http://10.0.0.8:3000"]
    assert endpoint_addresses(None) == [] and endpoint_addresses({"subsets": None}) == []


def test_an_unreachable_cluster_answers_its_last_count_and_never_stalls_the_tick():
    class Down(Recording):
        def replicas(self, deployment_id: str) -> int:
            raise ConnectionError("refused")

    built = {"kubernetes": Recording("kubernetes")}
    targets = TargetsByDeployment(built.__getitem__, lambda d: "kubernetes")
    assert targets.replicas("b-v1") == 1
    built["kubernetes"] = Down("kubernetes")
    targets._targets.clear()
    assert targets.replicas("b-v1") == 1 and targets.replicas("b-v2") == 0
    assert targets.lost("b-v1") == 0


def test_down_leaves_remote_deployments_unless_asked_to_delete_them(sqlite_store, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from compoundry.cli import platform_commands

    deleted = []
    monkeypatch.setattr(platform_commands, "build_target", lambda name, settings, store: SimpleNamespace(
        drain_and_delete=lambda deployment_id, grace_s: deleted.append((name, deployment_id))))
    settings = SimpleNamespace(database_url=str(sqlite_store.engine.url), ensure_state_dir=lambda: None)
    platform_commands._remote_deployments(settings, delete=False)
    assert deleted == []
    platform_commands._remote_deployments(settings, delete=True)
    assert deleted == [("kubernetes", "scorer-v1-abc")]
