"""The Prediction Service over real HTTP: a gateway process, a SQLite platform DB, stub replicas.

No MLflow, Prefect or Bento here (that is test_journey.py): the gateway runs as
``python -m compoundry.gateway.server`` on a free port against a temporary
config dir and DB that this module fills with routes to in-thread stub replicas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from compoundry.store import DeploymentStatus, PlatformStore
from compoundry.store.keys import ApiKeys
from tests.integration.stub_backend import StubReplica, free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REFRESH_S = 0.1

COMPONENTS = """
components:
  echo: {model: m-echo, engine: pyfunc, timeouts: {request_s: 1}}
  slow: {model: m-slow, engine: pyfunc}
  flaky: {model: m-flaky, engine: pyfunc}
  ghost: {model: m-ghost, engine: pyfunc}
  starting: {model: m-starting, engine: pyfunc, timeouts: {cold_start_s: 1}}
  late: {model: m-late, engine: pyfunc, timeouts: {cold_start_s: 5}}
  brittle: {model: m-brittle, engine: pyfunc, breaker: {consecutive_failures: 2, cooldown_s: 1}}
  halfdead: {model: m-halfdead, engine: pyfunc}
  narrow: {model: m-narrow, engine: pyfunc, scaling: {target_concurrency: 1}, timeouts: {request_s: 0.5}}
  chat: {model: m-chat, engine: llm, trust: {pre: [mask_pii, block_terms], post: [mask_pii]}}
  cloud-only:
    model: m-cloud
    engine: llm
    mode: serverless
    serverless: {openai: {url: "STUB_A/v1", model: stub-model, api_key_env: STUB_KEY}}
  ab: {model: m-ab, engine: pyfunc}
  mirrored: {model: m-mirrored, engine: pyfunc}
  hybrid:
    model: m-hybrid
    engine: llm
    mode: auto
    scaling: {target_concurrency: 1}
    serverless: {openai: {url: "STUB_A/v1", model: stub-model}}
"""

PIPELINES = """
pipelines:
  fanout:
    sla_ms: 5000
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


EXPERIMENTS = """
experiments:
  ab-test:
    component: ab
    sticky_key: session
    variants:
      - {name: champion, alias: champion, weight: 70}
      - {name: challenger, alias: challenger, weight: 30}
  mirror-test:
    component: mirrored
    sticky_key: user
    variants:
      - {name: champion, alias: champion, weight: 100}
      - {name: candidate, version: "2", weight: 0}
    shadow: {variant: candidate, fraction: 1.0}
"""


def wait_for(predicate, timeout_s: float = 10, interval_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stubs():
    replicas = {name: StubReplica(name).start() for name in ("a", "b", "c", "d")}
    yield replicas
    for replica in replicas.values():
        replica.stop()


@pytest.fixture(scope="module")
def db(tmp_path_factory, stubs):
    state = tmp_path_factory.mktemp("gateway-state")
    url = f"sqlite:///{state / 'platform.db'}"
    store = PlatformStore(url)
    store.create_schema()
    ready = DeploymentStatus.READY
    for component in ("echo", "slow", "flaky", "starting", "late", "brittle", "halfdead", "chat", "hybrid", "narrow"):
        store.add_deployment(f"{component}-v1", component, f"m-{component}", "1", "pyfunc")
        store.set_route(component, f"{component}-v1")
    store.add_replica("echo-v1-a", "echo-v1", stubs["a"].url, None, ready)
    store.add_replica("echo-v1-b", "echo-v1", stubs["b"].url, None, ready)
    store.add_replica("slow-v1-c", "slow-v1", stubs["c"].url, None, ready)
    store.add_replica("flaky-v1-a", "flaky-v1", stubs["a"].url, None, ready)
    store.add_replica("starting-v1-a", "starting-v1", stubs["a"].url, None)  # not ready yet
    keys = ApiKeys(store)
    store.test_keys = {"admin": keys.create("acme", ["invoke", "admin"])[1],
                       "invoke": keys.create("acme", ["invoke"], name="app")[1],
                       "doomed": keys.create("acme", ["invoke"], name="revoked in a test")}
    store.add_replica("late-v1-b", "late-v1", stubs["b"].url, None)  # becomes ready during a test
    store.add_replica("chat-v1-c", "chat-v1", stubs["c"].url, None, ready)
    store.add_replica("hybrid-v1-c", "hybrid-v1", stubs["c"].url, None, ready)
    store.add_replica("narrow-v1-b", "narrow-v1", stubs["b"].url, None, ready)
    store.stub_a_url = stubs["a"].url
    store.add_replica("brittle-v1-b", "brittle-v1", stubs["b"].url, None, ready)
    store.add_replica("halfdead-v1-a", "halfdead-v1", stubs["a"].url, None, ready)
    store.add_replica("halfdead-v1-x", "halfdead-v1", f"http://127.0.0.1:{free_port()}", None, ready)  # nobody there
    for component, variant, version, stub in (("ab", None, "1", "a"), ("ab", "challenger", "2", "b"),
                                              ("mirrored", None, "1", "a"), ("mirrored", "candidate", "2", "d")):
        deployment = f"{component}-v{version}"
        store.add_deployment(deployment, component, f"m-{component}", version, "pyfunc")
        store.add_replica(f"{deployment}-{stub}", deployment, stubs[stub].url, None, ready)
        if variant is None:
            store.set_route(component, deployment)
        else:
            store.set_variant_route(component, variant, deployment)
    yield store, state
    store.close()


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gateway-config")


@pytest.fixture(scope="module")
def gateway(config_dir, db):
    _, state = db
    (config_dir / "platform.yaml").write_text(f"route_refresh_s: {REFRESH_S}\n"
                                              "gateway: {blocked_terms: {confidential: [project nightingale]}}\n")
    (config_dir / "components.yaml").write_text(COMPONENTS.replace("STUB_A", db[0].stub_a_url))
    (config_dir / "pipelines.yaml").write_text(PIPELINES)
    (config_dir / "experiments.yaml").write_text(EXPERIMENTS)
    port = free_port()
    env = {**os.environ, "STUB_KEY": "sk-stub", "COMPOUNDRY_CONFIG_DIR": str(config_dir), "COMPOUNDRY_STATE_DIR": str(state),
           "COMPOUNDRY_GATEWAY_PORT": str(port), "COMPOUNDRY_DATABASE_URL": f"sqlite:///{state / 'platform.db'}"}
    log = open(state / "gateway.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "compoundry.gateway.server"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False,
                          headers={"Authorization": f"Bearer {db[0].test_keys['admin']}"})
    try:
        wait_for(lambda: proc.poll() is not None or _ready(client), timeout_s=30, what="the gateway")
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.returncode}:\n{(state / 'gateway.log').read_text()}")
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


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


def test_routes_follow_the_database_without_a_restart(gateway, db, stubs):
    store, _ = db
    store.add_deployment("echo-v2", "echo", "m-echo", "2", "pyfunc")
    store.add_replica("echo-v2-c", "echo-v2", stubs["c"].url, None, DeploymentStatus.READY)
    store.set_route("echo", "echo-v2")
    wait_for(lambda: gateway.get("/v1/routes").json()["routes"]["echo"]["deployment"] == "echo-v2",
             timeout_s=5, what="the new echo route")
    body = gateway.post("/v1/components/echo", json={"inputs": {}}).json()
    assert body["deployment"] == "echo-v2" and body["model_version"] == "2" and body["outputs"]["replica"] == "c"
    store.add_replica("ghost-v1-a", "echo-v2", stubs["a"].url, None, DeploymentStatus.READY)
    wait_for(lambda: len(gateway.get("/v1/routes").json()["routes"]["echo"]["replicas"]) == 2,
             timeout_s=5, what="the new replica")


def test_routes_survive_an_unreadable_database(gateway, db):
    """Corrupt the DB files in place (as root, chmod would not stop reads), then restore them."""
    _, state = db
    before = gateway.get("/v1/routes").json()["routes"]
    files = [state / f"platform.db{suffix}" for suffix in ("", "-wal", "-shm")]
    saved = {f: f.read_bytes() for f in files if f.exists()}
    try:
        for f, data in saved.items():
            f.write_bytes(b"not a database!!" * (len(data) // 16 + 1))
        routes = wait_for(lambda: (r := gateway.get("/v1/routes").json())["last_refresh_error"] and r,
                          timeout_s=5, what="a failed refresh")
        assert "DatabaseError" in routes["last_refresh_error"]
        assert routes["routes"] == before
        assert gateway.get("/readyz").status_code == 200
        time.sleep(3 * REFRESH_S)
        assert gateway.post("/v1/components/echo", json={"inputs": {}}).status_code == 200
        assert gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "x"}}).status_code == 200
    finally:
        for f, data in saved.items():
            f.write_bytes(data)
    wait_for(lambda: gateway.get("/v1/routes").json()["last_refresh_error"] is None, timeout_s=5,
             what="the refresher to recover")


def test_an_unexpected_exception_is_a_json_500_without_traceback(tmp_path, caplog):
    """In process (no lifespan needed): a handler that crashes."""
    import asyncio

    from compoundry.config.loader import load_config
    from compoundry.gateway.app import create_app
    from compoundry.settings import PlatformSettings

    (tmp_path / "components.yaml").write_text(COMPONENTS.replace("STUB_A", "http://127.0.0.1:9"))
    (tmp_path / "platform.yaml").write_text("gateway: {auth_required: false}\n")
    settings = PlatformSettings.load(tmp_path)
    app = create_app(settings, load_config(tmp_path), PlatformStore(f"sqlite:///{tmp_path / 'p.db'}"))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    async def get():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/boom", headers={"X-Request-Id": "r-1"})

    response = asyncio.run(get())
    assert response.status_code == 500 and response.headers["x-request-id"] == "r-1"
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error; see the gateway log",
                                         "request_id": "r-1"}}
    assert "secret internals" in caplog.text  # logged server-side only


def test_a_request_is_held_through_a_cold_start_not_failed(gateway, db):
    """`late` has a route but no ready replica: the call waits until one is ready."""
    import threading

    store, _ = db
    threading.Timer(0.8, lambda: store.set_replica_status("late-v1-b", DeploymentStatus.READY)).start()
    started = time.monotonic()
    response = gateway.post("/v1/components/late", json={"inputs": {"x": 1}})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["replica"] == "b"
    assert time.monotonic() - started >= 0.7


def test_a_hold_ends_at_the_cold_start_limit_with_a_503(gateway):
    started = time.monotonic()
    response = gateway.post("/v1/components/starting", json={"inputs": {}})
    assert response.status_code == 503 and response.json()["error"]["code"] == "component_unavailable"
    assert 0.9 <= time.monotonic() - started < 5  # starting's cold_start_s is 1


def test_breaker_opens_answers_at_once_then_probes_and_closes(gateway, stubs):
    for _ in range(2):
        assert gateway.post("/v1/components/brittle", json={"inputs": {"fail": True}}).status_code == 502
    calls = stubs["b"].calls
    refused = gateway.post("/v1/components/brittle", json={"inputs": {}})
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "component_unavailable" and error["breaker"] == "open" and error["retry_after"] > 0
    assert int(refused.headers["retry-after"]) >= 1
    assert stubs["b"].calls == calls  # the open breaker did not call the replica
    time.sleep(1.1)  # cooldown_s
    probe = gateway.post("/v1/components/brittle", json={"inputs": {}})
    assert probe.status_code == 200, probe.text
    assert gateway.post("/v1/components/brittle", json={"inputs": {}}).status_code == 200  # closed again


def test_a_refused_connection_is_retried_on_another_replica(gateway, stubs):
    before = stubs["a"].calls
    for _ in range(8):
        response = gateway.post("/v1/components/halfdead", json={"inputs": {}})
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["replica"] == "a"
    assert stubs["a"].calls - before == 8


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


def test_keys_scopes_and_revocation(gateway, db):
    store, _ = db
    url = "/v1/components/echo"
    anonymous = httpx.post(f"{gateway.base_url}{url}", json={"inputs": {}})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    wrong = gateway.post(url, json={"inputs": {}}, headers={"Authorization": "Bearer ck_nope_nope"})
    assert wrong.status_code == 401
    app_key = {"Authorization": f"Bearer {store.test_keys['invoke']}"}
    assert gateway.post(url, json={"inputs": {}}, headers=app_key).status_code == 200
    assert gateway.post(url, json={"inputs": {}}, headers={"X-Api-Key": store.test_keys["invoke"],
                                                           "Authorization": ""}).status_code == 200
    forbidden = gateway.get("/control/deployments", headers=app_key)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert gateway.get("/control/deployments").status_code == 200  # the admin key
    assert httpx.get(f"{gateway.base_url}/healthz").status_code == 200  # probes stay open
    doomed_id, doomed = store.test_keys["doomed"]
    doomed_key = {"Authorization": f"Bearer {doomed}"}
    assert gateway.post(url, json={"inputs": {}}, headers=doomed_key).status_code == 200
    assert ApiKeys(store).revoke(doomed_id)
    wait_for(lambda: gateway.post(url, json={"inputs": {}}, headers=doomed_key).status_code == 401,
             timeout_s=5, what="the revoked key to be refused")


def test_an_oversized_body_is_a_413(gateway):
    big = {"inputs": {"text": "x" * (4 * 1024 * 1024 + 10)}}
    response = gateway.post("/v1/components/echo", json=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: refused while reading
        yield b'{"inputs": {"text": "'
        for _ in range(5):
            yield b"y" * (1024 * 1024)
        yield b'"}}'
    streamed = gateway.post("/v1/components/echo", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"


def test_every_component_call_is_metered_with_tenant_pipeline_and_outcome(gateway, db):
    import sqlalchemy as sa

    store, _ = db
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
        ("meter-1", "acme", "billing-bot", "echo", "ok"),
        ("meter-2", "acme", "billing-bot", "echo", "error:component_failed"),
        ("meter-3", "acme", "billing-bot", "chat", "ok"),
    ]
    assert found[2].completion_tokens == 1 and all(r.compute_ms > 0 for r in found)


def test_pipeline_calls_are_metered_per_step(gateway, db):
    import sqlalchemy as sa

    store, _ = db
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


def test_prometheus_metrics_show_calls_breakers_and_replicas(gateway, db):
    assert gateway.post("/v1/components/echo", json={"inputs": {}}).status_code == 200
    assert gateway.post("/v1/pipelines/fanout", json={"inputs": {"q": "m"}}).status_code == 200
    response = gateway.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'compoundry_component_calls_total{component="echo"' in text and 'outcome="ok"' in text
    assert 'compoundry_component_call_seconds_bucket{component="echo"' in text
    assert 'compoundry_pipeline_requests_total{pipeline="fanout",status="ok"}' in text
    assert 'compoundry_ready_replicas{component="slow",deployment="slow-v1"} 1.0' in text
    assert 'compoundry_breaker_state{deployment="brittle-v1",state="closed"} 1.0' in text
    assert 'compoundry_metering_records{kind="written"}' in text
    app_only = {"Authorization": f"Bearer {db[0].test_keys['invoke']}"}
    assert gateway.get("/metrics", headers=app_only).status_code == 403  # admin scope


def test_a_config_change_is_hot_reloaded_without_dropping_a_request(gateway, config_dir):
    import threading

    statuses: list[int] = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=gateway.base_url, headers=gateway.headers, timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/components/echo", json={"inputs": {"delay_ms": 5}}).status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    components = config_dir / "components.yaml"
    original = components.read_text()
    try:
        time.sleep(0.3)
        components.write_text(original + "  added-live: {model: m-added, engine: pyfunc}\n")
        wait_for(lambda: "added-live" in {m["id"] for m in gateway.get("/v1/models").json()["data"]},
                 timeout_s=10, what="the reloaded config")
        components.write_text(original + "  broken: {model: m, engine: no-such-engine}\n")  # invalid: kept out
        time.sleep(1.5)
        models = {m["id"] for m in gateway.get("/v1/models").json()["data"]}
        assert "added-live" in models and "broken" not in models  # the last good config still serves
    finally:
        components.write_text(original)
        stop.set()
        for worker in workers:
            worker.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    wait_for(lambda: "added-live" not in {m["id"] for m in gateway.get("/v1/models").json()["data"]},
             timeout_s=10, what="the restored config")


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


def test_a_request_that_cannot_meet_its_deadline_is_shed_early_with_429(gateway):
    """`narrow`: one slot, 0.5 s deadline; once a call is known to take 0.3 s, a second one cannot wait."""
    from concurrent.futures import ThreadPoolExecutor

    slow = {"inputs": {"delay_ms": 300}}
    assert gateway.post("/v1/components/narrow", json=slow).status_code == 200  # learns the service time
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: gateway.post("/v1/components/narrow", json=slow), range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(429) >= 2, codes
    shed = next(r for r in responses if r.status_code == 429)
    error = shed.json()["error"]
    assert error["code"] == "overloaded" and error["retry_after"] > 0 and int(shed.headers["retry-after"]) >= 1
    assert error["reason"] in ("deadline", "expired", "queue_full", "displaced")


# --- fuzzing the whole OpenAPI surface: no 500, no traceback, always the JSON error shape -------------
KNOWN_NAMES = ["echo", "chat", "cloud-only", "hybrid", "fanout", "fragile", "ghost", "brittle", "no-such-thing"]


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


def test_ab_split_is_sticky_by_session_and_honours_the_weights(gateway, db):
    from compoundry.gateway.split import SplitPlan

    plan = SplitPlan.build("ab-test", [("champion", 70), ("challenger", 30)])
    replica_of = {"champion": "a", "challenger": "b"}
    served = {}
    for i in range(120):
        session = f"sess-{i}"
        first, again = (gateway.post("/v1/components/ab", json={"inputs": {"n": n}},
                                     headers={"X-Session-Id": session, "X-Request-Id": f"ab-{i}-{n}"}).json()
                        for n in (1, 2))
        assert first["variant"] == again["variant"]  # sticky across requests
        assert first["variant"] == plan.variant_for(f"s:{session}")  # the same stable hash everywhere
        assert first["outputs"]["replica"] == replica_of[first["variant"]]  # and the variant's own route answered
        served[session] = first["variant"]
    share = sum(v == "challenger" for v in served.values()) / len(served)
    assert 0.15 <= share <= 0.45  # 30 % configured; a fixed hash of 120 keys

    import sqlalchemy as sa

    store, _ = db

    def variants():
        query = sa.text("select request_id, variant, deployment_id from metering_records "
                        "where component = 'ab' and request_id like 'ab-%-1'")
        with store.engine.connect() as conn:
            return {r.request_id: (r.variant, r.deployment_id) for r in conn.execute(query)}
    metered = wait_for(lambda: len(variants()) == 120 and variants(), timeout_s=10, what="metering rows")
    assert {metered[f"ab-{i}-1"][0] for i in range(120)} == {"champion", "challenger"}
    assert all(dep == ("ab-v2" if v == "challenger" else "ab-v1") for v, dep in metered.values())


def test_a_variant_without_a_ready_route_is_served_by_the_champion(gateway, db):
    store, _ = db
    store.set_replica_status("ab-v2-b", DeploymentStatus.STOPPED)
    try:
        wait_for(lambda: not gateway.get("/v1/routes").json()["routes"]["ab"]["variants"]["challenger"]["replicas"],
                 what="the challenger's replica to leave the routes")
        answers = [gateway.post("/v1/components/ab", json={"inputs": {}}, headers={"X-Session-Id": f"s{i}"}).json()
                   for i in range(30)]
        assert {a["variant"] for a in answers} == {"champion"} and {a["outputs"]["replica"] for a in answers} == {"a"}
    finally:
        store.set_replica_status("ab-v2-b", DeploymentStatus.READY)


def test_shadow_mirrors_every_request_without_touching_the_response_or_its_latency(gateway, db, stubs):
    import sqlalchemy as sa

    store, _ = db
    stubs["d"].app.state.extra_delay_ms = 1500  # the shadow variant is slow
    before = stubs["d"].calls
    try:
        for i in range(8):
            started = time.monotonic()
            response = gateway.post("/v1/components/mirrored", json={"inputs": {"i": i}},
                                    headers={"X-User-Id": f"user-{i}", "X-Request-Id": f"mirror-{i}"})
            assert response.status_code == 200
            assert response.json()["variant"] == "champion" and response.json()["outputs"]["replica"] == "a"
            assert time.monotonic() - started < 1.0  # the answer never waits for the 1.5 s shadow
        wait_for(lambda: stubs["d"].calls - before == 8, timeout_s=10, what="8 mirrored calls at the shadow")
    finally:
        stubs["d"].app.state.extra_delay_ms = 0

    def rows():
        query = sa.text("select variant, deployment_id, shadow, outcome from metering_records "
                        "where request_id like 'mirror-%' order by shadow")
        with store.engine.connect() as conn:
            return conn.execute(query).all()
    found = wait_for(lambda: len(rows()) == 16 and rows(), timeout_s=10, what="metering rows for both copies")
    assert {(r.variant, r.deployment_id, bool(r.shadow), r.outcome) for r in found} == {
        ("champion", "mirrored-v1", False, "ok"), ("candidate", "mirrored-v2", True, "ok")}
