"""The gateway app built in-process from its parts, with a fake replica client: no server, no replica process.

What the composition root promises: every part is passed at construction
(nothing is assigned later), and the lifespan only starts and stops them.
"""

from __future__ import annotations

from starlette.testclient import TestClient

from compoundry.gateway.app import create_app


def test_a_pipeline_runs_through_the_fake_replicas(parts):
    with TestClient(create_app(parts)) as client:
        response = client.post("/v1/pipelines/both", json={"inputs": {"q": "my refund"}})
        assert response.status_code == 200, response.text
        assert response.json()["output"] == {"dim": 2, "label": "refund"}
        component = client.post("/v1/components/classify", json={"inputs": {"data": "x"}}).json()
        assert component["deployment"] == "classify-v1" and component["outputs"] == {"predictions": ["refund"]}
    urls = sorted(url.split(":")[1] for url, _ in parts.replica_client.calls)
    assert urls == ["//classify.fake", "//classify.fake", "//embed.fake"]
    assert parts.replica_client.closed  # the lifespan closed what it was given
    assert parts.metering_sink.stats().written == 3  # ... and flushed every call's metering record


def test_a_failing_model_is_a_structured_error_the_pipeline_names(parts):
    with TestClient(create_app(parts)) as client:
        response = client.post("/v1/pipelines/both", json={"inputs": {"q": "boom"}})
    error = response.json()["error"]
    assert response.status_code == 502 and error["code"] == "pipeline_step_failed" and error["step"] == "classify"
    assert error["steps"]["classify"]["error_code"] == "component_failed"


def test_the_load_board_the_app_was_given_is_the_one_it_fills(parts):
    """The autoscaler and metrics read the board the composition root built: calls must count there."""
    parts.replica_client.during_call = lambda: parts.load.load_of("embed", "embed-v1")
    with TestClient(create_app(parts)) as client:
        assert client.post("/v1/components/embed", json={"inputs": {"texts": ["a"]}}).status_code == 200
    assert parts.replica_client.seen == [(1, 0)]  # in flight on this board while the replica worked
    assert parts.load.load_of("embed", "embed-v1") == (0, 0)  # and given back


def test_one_dead_replica_is_ejected_and_the_other_carries_the_component(parts):
    """A replica answering 500 costs a few calls, not an outage: the breaker stays closed."""
    parts.replica_client.dead.add("http://classify.fake:1")
    with TestClient(create_app(parts)) as client:
        codes = [client.post("/v1/components/classify", json={"inputs": {"data": str(i)}}).status_code
                 for i in range(60)]
        metrics = client.get("/metrics").text
    assert codes.count(200) >= 57 and set(codes) <= {200, 502}, codes  # at most 3 failures before the ejection
    assert 'compoundry_breaker_state{deployment="classify-v1",state="closed"} 1.0' in metrics
    late = [url for url, _ in parts.replica_client.calls[-40:]]
    assert set(late) == {"http://classify.fake:2"}  # the ejected replica got nothing more


def test_a_step_whose_replicas_all_fail_makes_the_pipeline_a_503_with_retry_after(parts):
    parts.replica_client.dead |= {"http://classify.fake:1", "http://classify.fake:2"}
    with TestClient(create_app(parts)) as client:
        for _ in range(12):  # one replica is ejected, the last one's failures open the breaker
            client.post("/v1/components/classify", json={"inputs": {"data": "x"}})
        response = client.post("/v1/pipelines/both", json={"inputs": {"q": "my refund"}})
    error = response.json()["error"]
    assert response.status_code == 503, response.text
    assert error["code"] == "pipeline_step_unavailable" and error["step"] == "classify" and error["retry_after"] >= 1
    assert int(response.headers["retry-after"]) >= 1


def test_with_a_single_replica_its_failures_are_the_deployments_and_open_the_breaker(parts):
    """Ejection only spares the breaker while another replica is healthy: alone, a failing replica is the
    component failing."""
    parts.replica_client.dead.add("http://embed.fake:1")
    with TestClient(create_app(parts)) as client:
        codes = [client.post("/v1/components/embed", json={"inputs": {"texts": ["a"]}}).status_code
                 for _ in range(8)]
        metrics = client.get("/metrics").text
    assert codes[:5] == [502] * 5 and set(codes[5:]) == {503}, codes  # the breaker's 5 in a row, no ejection
    assert 'compoundry_breaker_state{deployment="embed-v1",state="open"} 1.0' in metrics
