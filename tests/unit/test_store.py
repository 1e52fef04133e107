"""The platform database on a real SQLite file and a real PostgreSQL server: claims, deliveries, routes.

PostgreSQL is what docker-compose runs; its test uses a fresh database on the
local server (127.0.0.1:5432) and is skipped where none answers.
"""

from compoundry.store import DeploymentStatus


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
