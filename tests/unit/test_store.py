"""The platform database on a real SQLite file and a real PostgreSQL server: claims, deliveries, routes.

PostgreSQL is what docker-compose runs; its test uses a fresh database on the
local server (127.0.0.1:5432) and is skipped where none answers.
"""

import pytest

from compoundry.core.deploy_decisions import DeployIntent, RouteIntent
from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.leases import Leases, LeaseTimeout
from compoundry.store.platform_store import RouteMoved


def test_a_claim_is_won_once(store):
    assert store.claim_deploy("m", "1", "version", "webhook")
    assert not store.claim_deploy("m", "1", "version", "poll")
    assert store.claim_deploy("m", "1", "alias:champion:from:2", "poll")
    store.release_claim("m", "1", "version")
    assert store.claim_deploy("m", "1", "version", "poll")


def test_a_delivery_id_is_accepted_once(store):
    assert store.record_delivery("d-1", "model_version.created")
    assert not store.record_delivery("d-1", "model_version.created")


def test_routes_list_only_ready_replicas_and_switch_blue_green(store):
    store.add_deployment("blue", "emb", "m", "1", "sentence-transformers")
    store.add_replica("blue-r0", "blue", "http://127.0.0.1:9100", 11, DeploymentStatus.READY)
    assert store.set_route("emb", "blue") is None
    store.add_deployment("green", "emb", "m", "2", "sentence-transformers")
    store.add_replica("green-r0", "green", "http://127.0.0.1:9101", 12)
    assert store.routes()["emb"].deployment_id == "blue"
    store.set_replica_status("green-r0", DeploymentStatus.READY)
    assert store.set_route("emb", "green") == "blue"
    route = store.routes()["emb"]
    assert (route.model_version, [r.url for r in route.replicas]) == ("2", ["http://127.0.0.1:9101"])
    assert [d.id for d in store.deployments() if d.routed] == ["green"]


def test_variant_routes_ride_on_the_serving_route_and_leave_it_alone(store):
    store.add_deployment("emb-v1", "emb", "m", "1", "pyfunc")
    store.add_replica("emb-v1-r0", "emb-v1", "http://127.0.0.1:9100", None, DeploymentStatus.READY)
    store.set_route("emb", "emb-v1")
    store.add_deployment("emb-challenger-v2", "emb", "m", "2", "pyfunc")
    store.add_replica("emb-challenger-v2-r0", "emb-challenger-v2", "http://127.0.0.1:9101", None,
                      DeploymentStatus.READY)
    assert store.set_variant_route("emb", "challenger", "emb-challenger-v2") is None
    route = store.routes()["emb"]
    assert route.deployment_id == "emb-v1" and route.variant is None
    challenger = route.variant_route("challenger")
    assert (challenger.deployment_id, challenger.model_version, challenger.variant) == ("emb-challenger-v2", "2",
                                                                                      "challenger")
    assert [r.url for r in challenger.replicas] == ["http://127.0.0.1:9101"]
    assert store.routed_deployment("emb").id == "emb-v1"  # the serving route, never the variant's
    assert {(d.id, d.variant) for d in store.deployments() if d.routed} == {("emb-v1", None),
                                                                           ("emb-challenger-v2", "challenger")}
    assert store.clear_variant_route("emb", "challenger") == "emb-challenger-v2"
    assert store.routes()["emb"].variants == () and store.clear_variant_route("emb", "challenger") is None


def test_create_schema_adds_columns_an_older_database_lacks(tmp_path):
    import sqlalchemy as sa

    from compoundry.store import PlatformStore

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = PlatformStore(url)
    old.create_schema()
    with old.engine.begin() as conn:  # metering_records as it was before the shadow column, with a row
        conn.execute(sa.text("alter table metering_records drop column shadow"))
        conn.execute(sa.text("insert into metering_records (timestamp, tenant, pipeline_id, request_id, component, "
                             "variant, deployment_id, mode, latency_class, outcome, queue_ms, cold_start_ms, compute_ms, "
                             "prompt_tokens, completion_tokens, cost) values ('2026-11-25 10:00:00', 'acme', '', "
                             "'r1', 'emb', 'champion', 'emb-v1', 'dedicated', 'interactive', 'ok', 0, 0, 0, 0, 0, 0)"))
    old.close()
    store = PlatformStore(url)
    store.create_schema()
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("select tenant, shadow from metering_records")).one() == ("acme", False)
    store.close()


def test_only_live_replicas_hold_their_port(store):
    """An autoscaled deployment churns replicas: stopped and failed ones must give their ports back."""
    store.add_deployment("auto", "emb", "m", "1", "sentence-transformers")
    for i, status in enumerate([DeploymentStatus.STOPPED, DeploymentStatus.FAILED, DeploymentStatus.READY,
                                DeploymentStatus.STARTING, DeploymentStatus.DRAINING]):
        store.add_replica(f"auto-r{i}", "auto", f"http://127.0.0.1:{9200 + i}", 10 + i, status)
    assert store.replica_urls_in_use() == {"http://127.0.0.1:9202", "http://127.0.0.1:9203", "http://127.0.0.1:9204"}


def test_a_stopped_or_failed_replica_keeps_when_it_stopped_for_cost_reports(store):
    import sqlalchemy as sa

    store.add_deployment("emb-v1", "emb", "m", "1", "pyfunc")
    for rid in ("r0", "r1", "r2"):
        store.add_replica(rid, "emb-v1", f"http://127.0.0.1:91{rid[-1]}", None, DeploymentStatus.READY)
    store.set_replica_status("r0", DeploymentStatus.STOPPED)
    store.set_replica_status("r1", DeploymentStatus.FAILED)

    def stopped():
        with store.engine.connect() as conn:
            return dict(conn.execute(sa.text("select id, stopped_at from replicas")).all())

    first = stopped()
    assert first["r0"] is not None and first["r1"] is not None and first["r2"] is None
    store.set_replica_status("r0", DeploymentStatus.FAILED)  # a later status does not move the end
    assert stopped()["r0"] == first["r0"]
    store.set_replica_status("r1", DeploymentStatus.READY)  # back to live: running again, no end
    assert stopped()["r1"] is None


def test_an_embedded_database_file_is_readable_by_its_owner_only(tmp_path):
    store = PlatformStore(f"sqlite:///{tmp_path / 'platform.db'}")
    store.create_schema()
    store.add_deployment("d", "c", "m", "1", "pyfunc")  # writes the -wal file too
    store.close()
    for path in tmp_path.glob("platform.db*"):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path


def test_claims_carry_increasing_intents(store):
    first = store.claim_deploy("m", "4", "alias:champion:from:1", "cli")
    second = store.claim_deploy("m", "1", "alias:champion:from:1", "cli")
    assert first and second and second > first
    assert store.claim_deploy("m", "4", "alias:champion:from:1", "poll") is None


def test_a_route_remembers_the_intent_that_set_it(store):
    assert store.route_intent("emb").version is None
    store.add_deployment("d4", "emb", "m", "4", "pyfunc")
    store.set_route("emb", "d4", intent=7)
    assert store.route_intent("emb") == (RouteIntent("4", 7))
    store.add_deployment("d5", "emb", "m", "5", "pyfunc")
    store.set_variant_route("emb", "b", "d5", intent=9)
    assert store.route_intent("emb", "b") == RouteIntent("5", 9)


def test_a_lease_has_one_holder_until_released_or_expired(store):
    now = [1000.0]
    leases = Leases(store, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert leases.try_acquire("deploy:emb", "a", ttl_s=60)
    assert not leases.try_acquire("deploy:emb", "b", ttl_s=60)
    assert leases.try_acquire("deploy:emb", "a", ttl_s=60)  # renewal by its holder
    now[0] += 61
    assert leases.try_acquire("deploy:emb", "b", ttl_s=60)  # a dead holder's lease expires
    leases.release("deploy:emb", "a")  # not a's any more: nothing happens
    assert leases.holder("deploy:emb") == "b"
    with pytest.raises(LeaseTimeout):
        with leases.held("deploy:emb", "c", ttl_s=60, wait_s=5, renew=False):
            pass
    leases.release("deploy:emb", "b")
    with leases.held("deploy:emb", "c", ttl_s=60, wait_s=5, renew=False):
        assert leases.holder("deploy:emb") == "c"
    assert leases.holder("deploy:emb") is None


def test_a_superseded_intent_is_released_so_the_same_command_deploys_again(store):
    intent = store.claim_deploy("m", "2", "alias:champion:from:1", "cli")
    store.release_intent(intent)
    assert store.claim_deploy("m", "2", "alias:champion:from:1", "cli")


def test_pending_intents_are_the_newer_unfinished_claims_of_the_component(store):
    first = store.claim_deploy("m", "4", "version", "webhook", "emb")
    second = store.claim_deploy("m", "2", "alias:champion:from:3", "cli", "emb")
    store.claim_deploy("other", "9", "version", "webhook", "llm")
    assert store.pending_intents("emb", after=first) == [DeployIntent("2", second, "alias")]
    store.release_intent(second)
    assert store.pending_intents("emb", after=first) == []
    assert store.claim_deploy("m", "5", "version", "webhook", "emb") > second  # ids are never reused


def test_a_route_switch_expecting_an_intent_fails_if_another_deploy_switched_it(store):
    store.add_deployment("d4", "emb", "m", "4", "pyfunc")
    store.add_deployment("d5", "emb", "m", "5", "pyfunc")
    store.set_route("emb", "d4", intent=7, expect_intent=0)
    with pytest.raises(RouteMoved):
        store.set_route("emb", "d5", intent=6, expect_intent=0)
    assert store.set_route("emb", "d5", intent=8, expect_intent=7) == "d4"
