"""The Prediction Service serving: component calls, pipelines, errors, OpenAI routes, modes, trust, metering, metrics.

A real gateway process over real HTTP (``tests/integration/gateway_fixture.py``),
routed to in-thread stub replicas; no MLflow, Prefect or Bento here
(test_journey.py runs those).
"""

from __future__ import annotations

import pytest

from compoundry.store import PlatformStore
from compoundry.store.api_key_store import ApiKeys
from tests.integration.gateway_fixture import route, wait_for

pytestmark = pytest.mark.integration

COMPONENTS = """
components:
  echo: {model: m-echo, engine: pyfunc, timeouts: {request_s: 1}}
  slow: {model: m-slow, engine: pyfunc}
  flaky: {model: m-flaky, engine: pyfunc}
  ghost: {model: m-ghost, engine: pyfunc}
  starting: {model: m-starting, engine: pyfunc, timeouts: {cold_start_s: 1}}
  chat: {model: m-chat, engine: llm, trust: {pre: [mask_pii, block_terms], post: [mask_pii]}}
  cloud-only:
    model: m-cloud
    engine: llm
    mode: serverless
    serverless: {openai: {url: "STUB_A/v1", model: stub-model, api_key_env: STUB_KEY}}
  hybrid:
    model: m-hybrid
    engine: llm
    mode: auto
    scaling: {target_concurrency: 1}
    serverless: {openai: {url: "STUB_A/v1", model: stub-model}}
"""

PIPELINES = """
pipelines:
  picky:
    steps:
      check: {component: echo, inputs: {reject: "${request.why}"}}
  fanout:
    sla_ms: 5000
    inputs: {q: {type: string, max_length: 200}}
    steps:
      left: {component: slow, inputs: {delay_ms: 150, text: "${request.q}"}}
      right: {component: echo, inputs: {delay_ms: 100, text: "${request.q}"}}
      maybe:
        component: flaky
        optional: true
        fallback: {output: {echo: {text: from-fallback}}}
        inputs: {fail: true}
      join:
        component: echo
        depends_on: [left, right, maybe]
        inputs: {delay_ms: 10, left: "${steps.left.echo.text}", maybe: "${steps.maybe.echo.text}"}
    output: {answer: "${steps.join.echo.left}", maybe: "${steps.join.echo.maybe}"}
  fragile:
    steps:
      first: {component: echo, inputs: {delay_ms: 10}}
      broken: {component: flaky, depends_on: [first], inputs: {fail: true}}
      after: {component: echo, depends_on: [broken]}
"""


def CONFIGS(stubs) -> dict[str, str]:  # noqa: N802 - reads like the constant it stands for
    return {"platform": "route_refresh_s: 0.1\ngateway: {blocked_terms: {confidential: [project nightingale]}}\n",
            "components": COMPONENTS.replace("STUB_A", stubs["a"].url), "pipelines": PIPELINES}


GATEWAY_ENV = {"STUB_KEY": "sk-stub"}  # the cloud-only component's API key variable


def seed(store: PlatformStore, stubs) -> None:
    route(store, "echo", [stubs["a"].url, stubs["b"].url])
    route(store, "slow", [stubs["c"].url])
    route(store, "flaky", [stubs["a"].url])
    route(store, "starting", [stubs["a"].url], ready=False)
    route(store, "chat", [stubs["c"].url])
    route(store, "hybrid", [stubs["c"].url])



def test_health_routes_and_request_id(gateway):
    assert gateway.get("/healthz").json() == {"status": "ok"}
    routes = gateway.get("/v1/routes").json()["routes"]
    assert routes["echo"]["deployment"] == "echo-v1" and len(routes["echo"]["replicas"]) == 2
    assert routes["starting"]["replicas"] == []
    response = gateway.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert len(gateway.get("/healthz").headers["x-request-id"]) >= 16
    assert "/v1/pipelines/{name}" in gateway.get("/openapi.json").json()["paths"]


def test_component_calls_spread_over_ready_replicas(gateway):
    replicas = set()
    for _ in range(24):  # ties between idle replicas are broken at random: 2 * 2**-24 to miss one
        response = gateway.post("/v1/components/echo", json={"inputs": {"texts": ["hi"]}})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["component"] == "echo" and body["deployment"] == "echo-v1" and body["model_version"] == "1"
        assert body["outputs"]["echo"] == {"texts": ["hi"]}
        assert body["timing_ms"] > 0
        replicas.add(body["outputs"]["replica"])
    assert replicas == {"a", "b"}


def test_pipeline_runs_parallel_steps_and_takes_the_fallback(gateway):
    response = gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "where?"}},
                            headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200, response.text
    body = response.json()
    steps = body["steps"]
    assert body["request_id"] == "req-42" == response.headers["x-request-id"]
    assert body["output"] == {"answer": "where?", "maybe": "from-fallback"}
    assert steps["maybe"]["status"] == "fallback" and "asked to fail" in steps["maybe"]["error"]
    assert {steps[n]["status"] for n in ("left", "right", "join")} == {"ok"}
    assert abs(steps["left"]["started_ms"] - steps["right"]["started_ms"]) < 30  # overlapping
    assert steps["right"]["ended_ms"] > steps["left"]["started_ms"]
    assert steps["join"]["started_ms"] >= steps["left"]["ended_ms"]
    assert body["critical_path"] == ["left", "join"]
    assert 160 <= body["total_ms"] < 250 + 100  # not 150 + 100 + 10 in sequence
    assert body["overhead_ms"] == pytest.approx(body["total_ms"] - body["critical_path_ms"], abs=0.01)
    assert steps["left"]["deployment"] == "slow-v1"


def test_required_step_failure_is_a_502_naming_the_step_with_partial_timings(gateway):
    response = gateway.post("/v1/pipelines/fragile", json={"inputs": {}})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "pipeline_step_failed" and error["step"] == "broken"
    assert "broken" in error["message"] and "asked to fail" in error["message"]
    assert error["steps"]["first"]["status"] == "ok" and error["steps"]["first"]["duration_ms"] >= 10
    assert error["steps"]["broken"]["status"] == "failed"
    assert error["steps"]["after"]["status"] == "skipped"


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/components/nope", {"inputs": {}}, 404, "not_found"),
    ("/v1/pipelines/nope", {"inputs": {}}, 404, "not_found"),
    ("/v1/no-such-endpoint", {}, 404, "not_found"),
    ("/v1/components/echo", {"wrong": 1}, 422, "invalid_request"),
    ("/v1/components/echo", {"inputs": [1, 2]}, 422, "invalid_request"),
    ("/v1/components/echo", {"inputs": {"reject": "texts must be strings"}}, 400, "invalid_input"),
    ("/v1/components/echo", {"inputs": {"fail": True}}, 502, "component_failed"),
    ("/v1/components/ghost", {"inputs": {}}, 503, "component_unavailable"),
    ("/v1/components/starting", {"inputs": {}}, 503, "component_unavailable"),
])
def test_errors_are_json_with_a_code(gateway, path, body, status, code):
    response = gateway.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if status == 503:
        assert error["retry_after"] > 0 and int(response.headers["retry-after"]) >= 1
    if code == "invalid_input":
        assert error["message"] == "texts must be strings"


def test_invalid_json_body_is_a_422(gateway):
    response = gateway.post("/v1/components/echo", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_a_slow_replica_times_out_with_504(gateway):
    # echo's request timeout is 1 s in the config; the step timeout path is unit-tested, here the HTTP one
    response = gateway.post("/v1/components/echo", json={"inputs": {"delay_ms": 1500}})
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_latency_class_header_is_validated(gateway):
    response = gateway.post("/v1/components/echo", json={"inputs": {}}, headers={"X-Latency-Class": "urgent"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    ok = gateway.post("/v1/components/echo", json={"inputs": {}}, headers={"X-Latency-Class": "batch"})
    assert ok.status_code == 200


def test_the_official_openai_client_works_against_the_gateway(gateway):
    import openai

    client = openai.OpenAI(base_url=str(gateway.base_url).rstrip("/") + "/v1", max_retries=0,
                           api_key=gateway.headers["authorization"].split(" ", 1)[1])
    assert {"chat", "echo"} <= {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "hello there" and reply.model == "chat"
    chunks = list(client.chat.completions.create(model="chat", stream=True,
                                                 messages=[{"role": "user", "content": "one two three"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three "
    assert {c.model for c in chunks} == {"chat"}  # relabelled from the replica's own model name
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-component", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="needs one of"):
        client.embeddings.create(model="chat", input="x")  # an llm is not an embedding model
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])


def test_every_component_call_is_metered_with_tenant_pipeline_and_outcome(gateway, gw):
    import sqlalchemy as sa

    store = gw.store
    headers = {"X-Request-Id": "meter-1", "X-Pipeline-Id": "billing-bot"}
    assert gateway.post("/v1/components/echo", json={"inputs": {}}, headers=headers).status_code == 200
    assert gateway.post("/v1/components/echo", json={"inputs": {"fail": True}},
                        headers={**headers, "X-Request-Id": "meter-2"}).status_code == 502
    chat = gateway.post("/v1/chat/completions", headers={**headers, "X-Request-Id": "meter-3"},
                        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200

    def rows():
        query = sa.text("select request_id, tenant, pipeline_id, component, deployment_id, outcome, "
                        "completion_tokens, compute_ms from metering_records where request_id like 'meter-%' "
                        "order by request_id")
        with store.engine.connect() as conn:
            return conn.execute(query).all()
    found = wait_for(lambda: len(rows()) == 3 and rows(), timeout_s=10, what="metering rows (flushed each second)")
    assert [(r.request_id, r.tenant, r.pipeline_id, r.component, r.outcome) for r in found] == [
        ("meter-1", "acme", "(unregistered)", "echo", "ok"),  # billing-bot is no pipeline of this config
        ("meter-2", "acme", "(unregistered)", "echo", "error:component_failed"),
        ("meter-3", "acme", "(unregistered)", "chat", "ok"),
    ]
    assert found[2].completion_tokens == 1 and all(r.compute_ms > 0 for r in found)


def test_pipeline_calls_are_metered_per_step(gateway, gw):
    import sqlalchemy as sa

    store = gw.store
    assert gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "x"}},
                        headers={"X-Request-Id": "steps-1"}).status_code == 200
    query = sa.text("select step, component, pipeline_id from metering_records where request_id = 'steps-1'")

    def rows():
        with store.engine.connect() as conn:
            return sorted(conn.execute(query).all())
    found = wait_for(lambda: len(rows()) == 4 and rows(), timeout_s=10, what="one metering row per called step")
    assert [(r.step, r.component) for r in found] == [("join", "echo"), ("left", "slow"), ("maybe", "flaky"),
                                                       ("right", "echo")]
    assert {r.pipeline_id for r in found} == {"fanout"}


def test_prometheus_metrics_show_calls_breakers_and_replicas(gateway, gw):
    assert gateway.post("/v1/components/echo", json={"inputs": {}}).status_code == 200
    assert gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "m"}}).status_code == 200
    response = gateway.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'compoundry_component_calls_total{component="echo"' in text and 'outcome="ok"' in text
    assert 'compoundry_component_call_seconds_bucket{component="echo"' in text
    assert 'compoundry_pipeline_requests_total{pipeline="fanout",status="ok"}' in text
    assert 'compoundry_ready_replicas{component="slow",deployment="slow-v1"} 1.0' in text
    assert 'compoundry_breaker_state{deployment="echo-v1",state="closed"} 1.0' in text
    assert "compoundry_metering_records_written_total " in text and "compoundry_metering_records_pending " in text
    assert "process_resident_memory_bytes " in text and "python_gc_collections_total" in text
    app_only = {"Authorization": f"Bearer {gw.keys['invoke']}"}
    assert gateway.get("/metrics", headers=app_only).status_code == 403  # the metrics (or admin) scope
    _, scraper = ApiKeys(gw.store).create("ops", ["metrics"])
    wait_for(lambda: gateway.get("/metrics", headers={"Authorization": f"Bearer {scraper}"}).status_code == 200,
             timeout_s=5, what="the scraper's key")
    assert gateway.get("/v1/routes", headers={"Authorization": f"Bearer {scraper}"}).status_code == 403


def test_serverless_mode_calls_the_external_openai_endpoint(gateway):
    messages = [{"role": "user", "content": "from the cloud"}]
    body = gateway.post("/v1/components/cloud-only", json={"inputs": {"messages": messages}}).json()
    assert body["deployment"] == "external:cloud-only" and body["model_version"] == "stub-model"
    assert body["outputs"]["text"] == "from the cloud" and body["outputs"]["engine"] == "openai"
    streamed = gateway.post("/v1/chat/completions", json={"model": "cloud-only", "messages": messages, "stream": True})
    assert streamed.status_code == 200 and '"model": "cloud-only"' in streamed.text and "[DONE]" in streamed.text


def test_auto_mode_spills_over_to_the_external_endpoint_when_dedicated_is_saturated(gateway):
    from concurrent.futures import ThreadPoolExecutor

    single = gateway.post("/v1/components/hybrid", json={"inputs": {"messages": [{"role": "user", "content": "x"}]}})
    assert single.json()["deployment"] == "hybrid-v1"  # idle dedicated replica first

    def call(_):
        inputs = {"messages": [{"role": "user", "content": "busy"}], "delay_ms": 400}
        return gateway.post("/v1/components/hybrid", json={"inputs": inputs}).json()["deployment"]
    with ThreadPoolExecutor(6) as pool:
        served_by = list(pool.map(call, range(6)))
    assert "hybrid-v1" in served_by and "external:hybrid" in served_by, served_by


def test_the_trust_layer_masks_pii_before_the_model_sees_it_and_blocks_terms(gateway):
    text = "Refund card 4111 1111 1111 1111 and mail jane.doe@example.com about order 1042"
    echoed = gateway.post("/v1/components/echo", json={"inputs": {"text": text}}).json()["outputs"]["echo"]["text"]
    assert echoed == "Refund card [CARD] and mail [EMAIL] about order 1042"  # what the replica received
    reply = gateway.post("/v1/chat/completions", json={"model": "chat", "messages": [
        {"role": "user", "content": "call me on +44 20 7946 0958"}]}).json()
    assert reply["choices"][0]["message"]["content"] == "call me on [PHONE]"
    blocked = gateway.post("/v1/chat/completions", json={"model": "chat", "messages": [
        {"role": "user", "content": "Tell me about PROJECT   Nightingale"}]})
    assert blocked.status_code == 400
    error = blocked.json()["error"]
    assert error["code"] == "blocked_content" and error["category"] == "confidential"
    assert "nightingale" not in error["message"].lower() and error["path"] == "messages[0].content"
    piped = gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "reach me at a@b.co"}}).json()
    assert piped["output"]["answer"] == "reach me at [EMAIL]"


# --- fuzzing the whole OpenAPI surface: no 500, no traceback, always the JSON error shape -------------
KNOWN_NAMES = ["echo", "chat", "cloud-only", "hybrid", "fanout", "fragile", "picky", "ghost", "brittle",
               "no-such-thing"]


def test_fuzzed_requests_never_crash_the_gateway(gateway):
    """schemathesis generates requests for every operation of /openapi.json (30 per operation)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base_url = str(gateway.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: list[int] = []

    for operation in operations:
        @given(case=operation.as_strategy(), known=st.sampled_from(KNOWN_NAMES))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def never_crashes(case, known):
            if "name" in (case.path_parameters or {}):  # mostly real names, so requests get past the 404
                case.path_parameters["name"] = known
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = known
            response = case.call(base_url=base_url, headers=dict(gateway.headers), timeout=15)
            statuses.append(response.status_code)
            where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            assert response.status_code != 500, where
            assert "Traceback" not in response.text and 'File "' not in response.text, where
            if response.status_code >= 400:
                content_type = response.headers.get("content-type")
                content_type = content_type[0] if isinstance(content_type, list) else content_type
                assert content_type.startswith("application/json"), where
                assert {"code", "message"} <= set(response.json()["error"]), where
        never_crashes()
    print(f"\nfuzzed {len(statuses)} requests over {len(operations)} operations: "
          f"{ {code: statuses.count(code) for code in sorted(set(statuses))} }")
    assert len(statuses) >= 5 * len(operations)


@pytest.mark.parametrize("inputs", [{}, {"q": None}, {"q": 42}, {"q": ["a"]}, {"q": {"a": 1}}, {"q": "x" * 201}])
def test_wrong_pipeline_inputs_are_the_clients_error_and_call_nothing(gateway, stubs, inputs):
    before = stubs["c"].calls
    response = gateway.post("/v1/pipelines/fanout", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "inputs" and error["problems"]
    assert "inputs.q" in error["message"] and stubs["c"].calls == before


def test_a_lone_surrogate_in_the_inputs_is_refused(gateway):
    body = b'{"inputs": {"q": "half a pair: \\ud800"}}'
    response = gateway.post("/v1/pipelines/fanout", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "surrogate" in response.json()["error"]["message"]


def test_a_model_refusing_the_requests_inputs_is_a_400_naming_the_step(gateway):
    response = gateway.post("/v1/pipelines/picky", json={"inputs": {"why": "texts must be strings"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "pipeline_step_rejected" and error["step"] == "check"
    assert "texts must be strings" in error["message"]
